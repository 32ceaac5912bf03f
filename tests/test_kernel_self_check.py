"""The first-use self-check of the CUDA kernels, with stubbed plugins on the CPU.

The stubs are the float64 emulations of the kernels from test_custom_ops (right answers) and
deliberately wrong variants of them; the decision logic (check once, warn once naming the op
and the error, then use the reference) is the same code that runs on a GPU.
"""

import types
import warnings

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act, bias_act_cuda, upfirdn2d, upfirdn2d_cuda
from tests.test_custom_ops import _emu_bias_act, _emu_upfirdn2d

CPU = torch.device('cpu')


@pytest.fixture(autouse=True)
def fresh_checks():
    bias_act.self_check.reset()
    upfirdn2d.self_check.reset()
    yield
    bias_act.self_check.reset()
    upfirdn2d.self_check.reset()


def _stub(monkeypatch, bias_fn=_emu_bias_act, fir_fn=_emu_upfirdn2d):
    calls = {'bias_act': 0, 'upfirdn2d': 0}

    def counted(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper
    monkeypatch.setattr(bias_act_cuda, '_get_plugin', lambda: types.SimpleNamespace(bias_act=counted('bias_act', bias_fn)))
    monkeypatch.setattr(upfirdn2d_cuda, '_get_plugin', lambda: types.SimpleNamespace(upfirdn2d=counted('upfirdn2d', fir_fn)))
    return calls


def test_correct_kernels_pass_silently_and_once(monkeypatch):
    calls = _stub(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert bias_act.self_check.passed(CPU)
        assert upfirdn2d.self_check.passed(CPU)
    n = dict(calls)
    assert n['bias_act'] > 0 and n['upfirdn2d'] > 0
    assert bias_act.self_check.passed(CPU) and upfirdn2d.self_check.passed(CPU)
    assert calls == n  # the verdict is kept: no second check


def test_check_errors_are_small_for_correct_kernels(monkeypatch):
    _stub(monkeypatch)
    errors = bias_act._check_kernel(CPU)
    assert {'lrelu forward', 'tanh 2nd-order grad x', 'linear grad b'} <= set(errors)
    assert max(errors.values()) < 1e-5
    errors = upfirdn2d._check_kernel(CPU)
    assert {'up2 forward', 'down2 grad x', 'filter forward'} <= set(errors)
    assert max(errors.values()) < 1e-5


def _wrong_forward(*args):
    out = _emu_bias_act(*args)
    return out * 1.01 if args[4] == 0 else out  # grad == 0: forward only, 1% off


def _wrong_gradient(x, f, *rest):
    out = _emu_upfirdn2d(x, f, *rest)
    out[..., 0, 0] += 0.5  # one output pixel wrong
    return out


def test_wrong_bias_act_warns_once_names_op_and_error_and_falls_back(monkeypatch):
    _stub(monkeypatch, bias_fn=_wrong_forward)
    with pytest.warns(custom_ops.CustomOpMismatchWarning, match=r'"bias_act".*forward relative error 0\.01'):
        assert not bias_act.self_check.passed(CPU)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert not bias_act.self_check.passed(CPU)  # no second warning, same verdict


def test_wrong_upfirdn2d_is_caught(monkeypatch):
    _stub(monkeypatch, fir_fn=_wrong_gradient)
    with pytest.warns(custom_ops.CustomOpMismatchWarning, match=r'"upfirdn2d".*relative error'):
        assert not upfirdn2d.self_check.passed(CPU)


def test_crashing_kernel_is_a_failed_check(monkeypatch):
    def boom(*args):
        raise RuntimeError('illegal memory access')
    _stub(monkeypatch, bias_fn=boom)
    with pytest.warns(custom_ops.CustomOpMismatchWarning, match='illegal memory access'):
        assert not bias_act.self_check.passed(CPU)


def test_nan_is_a_failure():
    check = custom_ops.KernelSelfCheck('nan_op', lambda device: {'forward': float('nan')})
    with pytest.warns(custom_ops.CustomOpMismatchWarning, match='nan_op'):
        assert not check.passed(CPU)
    custom_ops.reset_state()
    assert check._verdicts == {}


def test_routing_uses_reference_after_failure(monkeypatch):
    """bias_act() on a (pretend) CUDA device: the kernel is used when it passed, not when it failed."""
    used = []
    monkeypatch.setattr(bias_act_cuda, 'available', lambda: True)
    monkeypatch.setattr(bias_act_cuda, 'bias_act_cuda', lambda x, b, **kw: used.append('kernel') or x)
    cuda = torch.device('cuda')
    bias_act.self_check._verdicts[str(cuda)] = False
    assert not bias_act._use_kernel(cuda)
    bias_act.self_check._verdicts[str(cuda)] = True
    assert bias_act._use_kernel(cuda)
    assert not bias_act._use_kernel(CPU)  # never on the CPU
