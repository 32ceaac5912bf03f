"""torch_utils.misc: constants, shape contracts, parameter copying, DDP helpers, summaries."""

import json
import os
import re
import warnings

import numpy as np
import pytest
import torch

from dist_helpers import spawn_with_deadline
from torch_utils import distributed, misc


# ---------------------------------------------------------------------------------------
# constant

def test_constant_is_cached_per_key():
    a = misc.constant([1.0, 2.0, 3.0])
    assert misc.constant([1.0, 2.0, 3.0]) is a
    assert misc.constant(np.array([1.0, 2.0, 3.0])) is a  # same value, other container
    assert a.dtype == torch.get_default_dtype() and a.device.type == 'cpu'
    assert not a.requires_grad
    assert torch.equal(a, torch.tensor([1.0, 2.0, 3.0]))
    # Any differing key part gives another tensor.
    assert misc.constant([1.0, 2.0, 4.0]) is not a
    assert misc.constant([1.0, 2.0, 3.0], dtype=torch.float64) is not a
    assert misc.constant([[1.0], [2.0], [3.0]]) is not a  # same bytes, other shape
    assert misc.constant([1, 2, 3]) is not a              # same numbers, other source dtype


def test_constant_shape_dtype_memory_format():
    c = misc.constant(0.5, shape=[2, 3, 4, 5], dtype=torch.float64, memory_format=torch.channels_last)
    assert c.shape == (2, 3, 4, 5) and c.dtype == torch.float64
    assert c.is_contiguous(memory_format=torch.channels_last) and not c.is_contiguous()
    assert torch.all(c == 0.5)
    row = misc.constant([1, 2, 3], shape=[2, 3], dtype=torch.int64)
    assert row.tolist() == [[1, 2, 3], [1, 2, 3]]
    with pytest.raises(RuntimeError):
        misc.constant([1.0, 2.0], shape=[3])  # not broadcastable


def test_constant_from_inference_mode_works_in_autograd():
    with torch.inference_mode():
        k = misc.constant([2.0, 3.0, 7.0])
    w = torch.ones(3, requires_grad=True)
    (w * k).sum().backward()
    assert w.grad.tolist() == [2.0, 3.0, 7.0]


# ---------------------------------------------------------------------------------------
# assert_shape / suppress_tracer_warnings

def test_assert_shape_accepts_and_wildcards():
    x = torch.zeros(2, 3, 8, 8)
    misc.assert_shape(x, [2, 3, 8, 8])
    misc.assert_shape(x, [None, 3, None, 8])
    misc.assert_shape(x, (None, None, None, None))


def test_assert_shape_messages():
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(AssertionError, match=re.escape('dimension 2: got [2, 3, 8, 8], expected [*, 3, 16, *]')):
        misc.assert_shape(x, [None, 3, 16, None])
    with pytest.raises(AssertionError, match=re.escape('got 4 with shape [2, 3, 8, 8], expected 3')):
        misc.assert_shape(x, [2, 3, 8])


def test_assert_shape_traced_and_compiled():
    def f(x):
        misc.assert_shape(x, [None, 3])
        return x * 2

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        traced = torch.jit.trace(f, torch.zeros(2, 3))
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert traced(torch.ones(5, 3)).sum().item() == 30.0

    compiled = torch.compile(f, backend='eager', dynamic=True)
    assert compiled(torch.ones(4, 3)).shape == (4, 3)
    with pytest.raises(AssertionError, match='dimension 1'):
        compiled(torch.ones(4, 4))


def test_assert_shape_with_tensor_sizes():
    x = torch.zeros(4, 3)
    misc.assert_shape(x, [torch.tensor(4), 3])
    with pytest.raises((AssertionError, RuntimeError), match='dimension 0'):
        misc.assert_shape(x, [torch.tensor(5), 3])


def test_suppress_tracer_warnings_only_tracer_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with misc.suppress_tracer_warnings():
            warnings.warn('traced branch', torch.jit.TracerWarning)
            warnings.warn('something else', UserWarning)
    assert [str(w.message) for w in caught] == ['something else']


# ---------------------------------------------------------------------------------------
# Parameters and buffers

def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))


def test_params_and_buffers():
    net = _net(0)
    tensors = misc.params_and_buffers(net)
    names = [n for n, _ in misc.named_params_and_buffers(net)]
    assert names == ['0.weight', '0.bias', '1.weight', '1.bias', '2.weight', '2.bias',
                     '1.running_mean', '1.running_var', '1.num_batches_tracked']
    assert sum(t.numel() for t in tensors) == 4 * 3 + 3 + 3 + 3 + 3 * 2 + 2 + 3 + 3 + 1
    with pytest.raises(TypeError, match='nn.Module'):
        misc.params_and_buffers(torch.zeros(1))


def test_copy_params_and_buffers():
    src, dst = _net(1), _net(2)
    src[1].running_mean.fill_(0.25)
    dst[0].weight.requires_grad_(False)
    weight_obj = dst[2].weight
    misc.copy_params_and_buffers(src, dst, require_all=True)
    for (n, a), (_, b) in zip(misc.named_params_and_buffers(src), misc.named_params_and_buffers(dst)):
        assert torch.equal(a, b), n
    assert dst[2].weight is weight_obj and weight_obj.grad_fn is None  # copied in place, no graph
    assert dst[2].weight.requires_grad and not dst[0].weight.requires_grad


def test_copy_params_and_buffers_partial_and_errors():
    src = torch.nn.Sequential(torch.nn.Linear(4, 3))
    dst = _net(3)
    before = dst[2].weight.clone()
    misc.copy_params_and_buffers(src, dst)  # only '0.*' exists in the source
    assert torch.equal(dst[0].weight, src[0].weight) and torch.equal(dst[2].weight, before)
    with pytest.raises(KeyError, match='1.weight'):
        misc.copy_params_and_buffers(src, dst, require_all=True)
    with pytest.raises(ValueError, match=re.escape('"0.weight": source [3, 4], destination [5, 4]')):
        misc.copy_params_and_buffers(src, torch.nn.Sequential(torch.nn.Linear(4, 5)))


def test_ddp_helpers_single_process_are_no_ops():
    net = _net(0)
    with misc.ddp_sync(net, sync=False):
        net(torch.randn(2, 4)).sum().backward()
    assert net[0].weight.grad is not None
    misc.check_ddp_consistency(net)  # torch.distributed not initialised: nothing to do


# ---------------------------------------------------------------------------------------
# print_module_summary

class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.act = torch.nn.Identity()
        self.register_buffer('gain', torch.ones(4))

    def forward(self, x):
        return self.act(self.conv(x)) * self.gain.view(1, -1, 1, 1)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.b0 = _Block()
        self.fc = torch.nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        y = self.b0(x)
        return self.fc(y.flatten(1)), y


def test_print_module_summary(capsys):
    net = _Net()
    x = torch.randn(2, 2, 4, 4)
    out = misc.print_module_summary(net, [x])
    assert out[0].shape == (2, 3) and out[1].shape == (2, 4, 4, 4)
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {line.split()[0]: line for line in lines}
    assert lines[0].split() == ['Module', 'Parameters', 'Buffers', 'Output', 'shape', 'Datatype']
    assert rows['b0.conv'].split()[1:] == ['76', '-', '[2,', '4,', '4,', '4]', 'float32']
    assert rows['b0'].split()[1:3] == ['-', '4']  # owns only the gain buffer
    assert rows['fc'].split()[1:3] == ['195', '-']
    assert 'b0.act' not in rows  # Identity returns a tensor already listed
    assert rows['Total'].split()[1:] == ['271', '4']
    # The top level returns nothing new and owns nothing: skipped as redundant.
    assert not any(line.startswith('<top-level>') for line in lines)


def test_print_module_summary_nesting(capsys):
    net = _Net()
    misc.print_module_summary(net, torch.randn(1, 2, 4, 4), max_nesting=1, skip_redundant=False)
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line[:len('<top-level>')].strip() for line in lines[2:-2]]
    assert names == ['b0', 'fc', '<top-level>', '']  # the top level lists two outputs
    assert lines[-3].split() == ['[1,', '4,', '4,', '4]', 'float32']
    rows = {line.split()[0]: line for line in lines}
    assert rows['b0'].split()[1:3] == ['76', '4']  # conv folded into its parent
    assert rows['Total'].split()[1:] == ['271', '4']


# ---------------------------------------------------------------------------------------
# Two processes over gloo: check_ddp_consistency and ddp_sync.

def _worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)  # two workers share a small machine
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                                         world_size=world_size)
    result = {}
    net = _net(0)
    net[1].running_var[0] = float('nan')  # NaN on every rank compares equal
    misc.check_ddp_consistency(net)
    result['equal'] = 'ok'

    # One rank's bias differs: every rank must raise, naming the tensor and the rank.
    if rank == 1:
        with torch.no_grad():
            net[2].bias[1] += 1e-6
    try:
        misc.check_ddp_consistency(net)
        result['differ'] = 'no error'
    except RuntimeError as e:
        result['differ'] = str(e)
    misc.check_ddp_consistency(net, ignore_regex=r'.*\.bias')
    result['ignored'] = 'ok'

    # ddp_sync: gradients are averaged across ranks only when sync is True.
    ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 1, bias=False))
    x = torch.full([1, 2], float(rank + 1))
    for sync in [False, True]:
        ddp.zero_grad()
        with misc.ddp_sync(ddp, sync):
            ddp(x).sum().backward()
        result[f'grad_sync_{sync}'] = ddp.module.weight.grad.tolist()

    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(result, f)
    distributed.leave_and_exit()


def test_two_process_consistency_and_ddp_sync(tmp_path):
    nprocs = 2
    spawn_with_deadline(_worker, (nprocs, str(tmp_path / 'rendezvous'), str(tmp_path)), nprocs=nprocs)
    results = [json.load(open(tmp_path / f'rank{r}.json')) for r in range(nprocs)]
    for rank, res in enumerate(results):
        assert res['equal'] == 'ok' and res['ignored'] == 'ok'
        assert '"Sequential.2.bias" differs from rank 0 on rank(s) [1]' in res['differ']
        assert res['grad_sync_False'] == [[rank + 1.0, rank + 1.0]]  # local gradient only
        assert res['grad_sync_True'] == [[1.5, 1.5]]                 # mean over ranks


@pytest.mark.gpu
def test_constant_per_device():
    cpu = misc.constant([1.0, 2.0])
    gpu = misc.constant([1.0, 2.0], device='cuda')
    assert gpu is not cpu and gpu.device.type == 'cuda'
    assert misc.constant([1.0, 2.0], device=torch.device('cuda', torch.cuda.current_device())) is gpu
    assert torch.equal(gpu.cpu(), cpu)
