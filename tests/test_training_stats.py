"""training_stats: moments against NumPy, regex filtering, keep_previous, and a two-process
gloo run whose all_reduce must equal one process seeing every value."""

import json
import os

import numpy as np
import pytest
import torch

from dist_helpers import spawn_with_deadline
from torch_utils import distributed, training_stats


@pytest.fixture(autouse=True)
def _fresh_channel():
    training_stats._reset()
    yield
    training_stats._reset()


def _expect(collector, name, values, std_rel=1e-9):
    values = np.asarray(values, dtype=np.float64).ravel()
    assert collector.num(name) == values.size
    assert collector.mean(name) == pytest.approx(values.mean(), rel=1e-12, abs=1e-12)
    assert collector.std(name) == pytest.approx(values.std(), rel=std_rel, abs=1e-12)
    assert collector[name] == collector.mean(name)


def test_moments_match_numpy():
    stats = training_stats.Collector()
    rng = np.random.default_rng(1)
    a = rng.normal(3.0, 2.0, size=[5, 7]).astype(np.float32)
    b = rng.normal(-1.0, 0.5, size=[13])
    out = training_stats.report('Loss/a', torch.from_numpy(a))
    assert out is not None and torch.equal(out, torch.from_numpy(a))  # value passes through
    training_stats.report('Loss/a', 1.5)                 # Python scalar
    training_stats.report('Loss/b', b)                   # NumPy array
    training_stats.report('Loss/b', list(b[:3]))         # list
    training_stats.report('Loss/c', [])                  # name only, no values
    stats.update()
    _expect(stats, 'Loss/a', np.concatenate([a.ravel().astype(np.float64), [1.5]]))
    _expect(stats, 'Loss/b', np.concatenate([b, b[:3]]))
    assert stats.names() == ['Loss/a', 'Loss/b']  # nothing reported under Loss/c
    assert stats.num('Loss/c') == 0 and np.isnan(stats.mean('Loss/c')) and np.isnan(stats.std('Loss/c'))
    d = stats.as_dict()
    assert set(d) == {'Loss/a', 'Loss/b'}
    assert d['Loss/a'].num == 36 and d['Loss/b'].mean == pytest.approx(np.concatenate([b, b[:3]]).mean())


def test_tensor_with_grad_and_large_offsets():
    # float64 accumulation keeps the std of values with a large common offset (E[x^2] is
    # about 1e8 here; float32 moments would get the std (about 2.9) wrong by whole units).
    stats = training_stats.Collector()
    x = torch.full([1000], 1e4, requires_grad=True) + torch.arange(1000.0) * 1e-2
    training_stats.report('x', x)
    stats.update()
    _expect(stats, 'x', x.detach().numpy(), std_rel=1e-6)


def test_update_only_counts_new_reports():
    stats = training_stats.Collector()
    training_stats.report('v', [1.0, 2.0, 3.0])
    stats.update()
    _expect(stats, 'v', [1, 2, 3])
    training_stats.report('v', [10.0])
    stats.update()
    _expect(stats, 'v', [10])


def test_regex_filtering_and_unwatched_names_cost_nothing():
    losses = training_stats.Collector(regex='Loss/.*')
    training_stats.report('Loss/G', 2.0)
    training_stats.report('Progress/tick', 7.0)  # no Collector asked for it
    assert 'Progress/tick' not in training_stats._pending
    losses.update()
    assert losses.names() == ['Loss/G']

    # A second Collector enables more names; each sees only its own.
    progress = training_stats.Collector(regex='Progress/.*')
    training_stats.report('Progress/tick', 8.0)
    training_stats.report('Loss/G', 4.0)
    progress.update()
    losses.update()
    assert progress.names() == ['Progress/tick'] and progress['Progress/tick'] == 8.0
    assert losses.names() == ['Loss/G'] and losses['Loss/G'] == 4.0


def test_two_collectors_on_same_names_are_independent():
    fast = training_stats.Collector()
    slow = training_stats.Collector()
    training_stats.report('v', 1.0)
    fast.update()
    training_stats.report('v', 3.0)
    fast.update()
    slow.update()
    assert fast.num('v') == 1 and fast['v'] == 3.0
    assert slow.num('v') == 2 and slow['v'] == 2.0


def test_values_reported_before_a_collector_exists_are_not_its_own():
    early = training_stats.Collector(regex='Loss/x')  # enables the name; never updated before
    training_stats.report('Loss/x', [100.0, 200.0])   # pending, reported before `late` existed
    late = training_stats.Collector(regex='Loss/x')
    training_stats.report('Loss/x', 1.0)
    late.update()
    assert late.num('Loss/x') == 1 and late.mean('Loss/x') == 1.0
    early.update()
    assert early.num('Loss/x') == 3


def test_keep_previous():
    keep = training_stats.Collector(keep_previous=True)
    drop = training_stats.Collector(keep_previous=False)
    training_stats.report('a', [1.0, 3.0])
    training_stats.report('b', 5.0)
    keep.update()
    drop.update()
    training_stats.report('b', 6.0)
    keep.update()
    drop.update()
    assert keep.names() == ['a', 'b'] and keep['a'] == 2.0 and keep.num('a') == 2 and keep['b'] == 6.0
    assert drop.names() == ['b'] and np.isnan(drop['a']) and drop.num('a') == 0


def test_report0_single_process():
    stats = training_stats.Collector()
    training_stats.init_multiprocessing(rank=0, sync_device=None)
    assert training_stats.report0('r0', 2.0) == 2.0
    training_stats.init_multiprocessing(rank=1, sync_device=None)
    assert training_stats.report0('r0', 100.0) == 100.0  # returned, not counted
    stats.update()
    assert stats.num('r0') == 1 and stats['r0'] == 2.0


# ---------------------------------------------------------------------------------------
# Two processes over gloo.

RANK_VALUES = {0: [1.0, 2.0, 3.0, 4.0], 1: [10.0, -2.0]}


def _worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)  # two workers share a small machine
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                                         world_size=world_size)
    training_stats.init_multiprocessing(rank=rank, sync_device=torch.device('cpu'))
    stats = training_stats.Collector(regex='Loss/.*')
    training_stats.report('Loss/shared', torch.tensor(RANK_VALUES[rank]))
    training_stats.report0('Loss/rank0', rank + 5.0)
    if rank == 1:
        training_stats.report('Loss/only_rank1', [7.0, 9.0])  # a name one rank never saw
    training_stats.report('Other/ignored', 1.0)
    stats.update()
    first = stats.as_dict()
    training_stats.report('Loss/shared', float(rank))
    stats.update()
    second = stats.as_dict()
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump({'first': first, 'second': second}, f)
    distributed.leave_and_exit()


def _spawn(fn, tmp_path, nprocs=2, timeout=120):
    spawn_with_deadline(fn, (nprocs, str(tmp_path / 'rendezvous'), str(tmp_path)), nprocs=nprocs,
                        timeout=timeout, what=fn.__name__)
    return [json.load(open(tmp_path / f'rank{r}.json')) for r in range(nprocs)]


def test_two_process_all_reduce_matches_single_process(tmp_path):
    results = _spawn(_worker, tmp_path)
    everything = RANK_VALUES[0] + RANK_VALUES[1]
    for res in results:
        first = res['first']
        assert set(first) == {'Loss/shared', 'Loss/rank0', 'Loss/only_rank1'}
        assert first['Loss/shared']['num'] == len(everything)
        assert first['Loss/shared']['mean'] == pytest.approx(np.mean(everything), rel=1e-12)
        assert first['Loss/shared']['std'] == pytest.approx(np.std(everything), rel=1e-12)
        assert first['Loss/rank0'] == {'num': 1, 'mean': 5.0, 'std': 0.0}
        assert first['Loss/only_rank1']['num'] == 2 and first['Loss/only_rank1']['mean'] == 8.0
        second = res['second']
        assert second['Loss/shared']['num'] == 2 and second['Loss/shared']['mean'] == 0.5
        assert second['Loss/shared']['std'] == pytest.approx(0.5)
        assert second['Loss/rank0']['mean'] == 5.0  # kept from the previous update
    assert results[0] == results[1]


@pytest.mark.gpu
def test_cuda_values_accumulate_on_device():
    stats = training_stats.Collector()
    x = torch.arange(6.0, device='cuda')
    training_stats.report('gpu', x)
    training_stats.report('gpu', 10.0)  # a CPU value under the same name
    assert training_stats._pending['gpu'][x.device].device == x.device
    stats.update()
    _expect(stats, 'gpu', [0, 1, 2, 3, 4, 5, 10])
