"""APA real-batch transform: mixing ratio, edge cases, gradients, reported statistic, files."""

import io
import math

import pytest
import torch

from torch_utils import netfile, training_stats
from training.augment.apa import PseudoAugment


@pytest.fixture(autouse=True)
def _fresh_stats():
    training_stats._reset()
    yield
    training_stats._reset()


def test_replaced_fraction_matches_p_and_is_reported():
    collector = training_stats.Collector(regex='Augment/apa/.*')
    n = 20000
    reals = torch.zeros(n, 1, 2, 2)
    pseudo = torch.ones(n, 1, 2, 2)
    for p in (0.1, 0.37, 0.8):
        apa = PseudoAugment(p)
        out = apa(reals, pseudo)
        per_sample = out.flatten(1)
        assert torch.equal(per_sample.amin(dim=1), per_sample.amax(dim=1))  # whole images swap
        frac = float(per_sample[:, 0].mean())
        assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n)
        collector.update()
        assert collector.num('Augment/apa/replaced') == n
        assert collector.mean('Augment/apa/replaced') == pytest.approx(frac)


def test_edge_cases():
    reals = torch.randn(8, 3, 4, 4)
    pseudo = torch.randn(8, 3, 4, 4)
    assert torch.equal(PseudoAugment(0.0)(reals, pseudo), reals)
    assert torch.equal(PseudoAugment(1.0)(reals, pseudo), pseudo)
    assert PseudoAugment(0.5)(reals, None) is reals
    apa = PseudoAugment(0.5)
    assert apa.name == 'apa' and apa.p.dtype == torch.float32 and apa.p.shape == ()
    with pytest.raises(ValueError, match='shape of the real batch'):
        apa(reals, pseudo[:4])
    with pytest.raises(ValueError, match=r'p must be a number in \[0, 1\]'):
        PseudoAugment(1.5)


def test_p_buffer_changes_take_effect_and_draws_use_global_rng():
    reals, pseudo = torch.zeros(1000, 1, 1, 1), torch.ones(1000, 1, 1, 1)
    apa = PseudoAugment(0.0)
    apa.p.fill_(0.5)
    torch.manual_seed(7)
    a = apa(reals, pseudo)
    torch.manual_seed(7)
    assert torch.equal(apa(reals, pseudo), a) and 0.4 < float(a.mean()) < 0.6


def test_gradients_reach_kept_reals_only_and_pseudo_is_detached():
    reals = torch.randn(64, 1, 2, 2, requires_grad=True)
    pseudo = torch.randn(64, 1, 2, 2, requires_grad=True)
    torch.manual_seed(8)
    out = PseudoAugment(0.5)(reals, pseudo)
    out.sum().backward()
    kept = (out == reals).flatten(1).all(dim=1)
    assert pseudo.grad is None
    assert torch.equal(reals.grad.flatten(1).amax(dim=1) > 0, kept)
    # R1 on the mixed batch: detach, require grad, differentiate D's output.
    mixed = out.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad((mixed * 3).sum(), [mixed], create_graph=True)
    assert torch.allclose(grad, torch.full_like(grad, 3.0))


def test_dtype_follows_the_reals_and_network_file_round_trip():
    reals = torch.randn(4, 3, 4, 4, dtype=torch.float64)
    out = PseudoAugment(1.0)(reals, torch.randn(4, 3, 4, 4))
    assert out.dtype == torch.float64
    buf = io.BytesIO()
    netfile.save_network_pickle(buf, dict(real_transform=PseudoAugment(0.3125)))
    buf.seek(0)
    loaded = netfile.load_network_pickle(buf)['real_transform']
    assert type(loaded) is PseudoAugment and float(loaded.p) == 0.3125


def test_apa_keeps_the_latest_fakes_per_slot_and_restores_them_by_slot():
    from training import plugins
    apa = PseudoAugment(1.0)
    for slot in range(4):
        apa.observe_fakes(slot, torch.full([2, 1, 4, 4], float(slot)))
    # p = 1: every real of a slot is replaced by that slot's latest fake.
    assert torch.equal(apa.transform_reals(torch.zeros(2, 1, 4, 4), 3), torch.full([2, 1, 4, 4], 3.0))
    state = apa.get_state(plugins.StateContext(4, range(4), 2, 'cpu'))
    assert state['fakes'].shape == (8, 1, 4, 4) and float(state['p']) == 1.0
    for slot in range(4):
        assert torch.equal(state['fakes'][2 * slot:2 * slot + 2], apa._fakes[slot])
    other = PseudoAugment(0.0)
    other.set_state(state, plugins.StateContext(4, [1, 3], 2, 'cpu'))      # rank 1 of 2
    assert float(other.p) == 1.0 and sorted(other._fakes) == [1, 3]
    assert torch.equal(other._fakes[3], apa._fakes[3])
    # A different micro-batch size cannot be split: fakes are dropped, not misassigned.
    other.set_state(state, plugins.StateContext(2, [0], 3, 'cpu'))
    assert other._fakes == {}
    # Before the first G main pass there is nothing to keep; reals pass unchanged.
    empty = PseudoAugment(1.0)
    assert empty.get_state(plugins.StateContext(4, range(4), 2, 'cpu'))['fakes'] is None
    reals = torch.rand(2, 1, 4, 4)
    assert torch.equal(empty.transform_reals(reals, 0), reals)
