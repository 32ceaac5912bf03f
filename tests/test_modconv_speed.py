"""The fast demodulation of modulated_conv2d against the per-sample-weight definition."""

import pytest
import torch
import torch.nn.functional as F

from training.networks import modulated_conv2d


def _definition(x, weight, styles, demodulate):
    """Per-sample weights w'_nois = s_ni w_ois, normalised per output channel, one conv each."""
    out = []
    for n in range(x.shape[0]):
        w = weight * styles[n].view(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        out.append(F.conv2d(x[n:n + 1], w, padding=weight.shape[-1] // 2))
    return torch.cat(out)


@pytest.mark.parametrize('fused', [False, True])
@pytest.mark.parametrize('demodulate', [False, True])
@pytest.mark.parametrize('k', [1, 3])
def test_modulated_conv2d_matches_definition(fused, demodulate, k):
    gen = torch.Generator().manual_seed(k + 2 * fused + 4 * demodulate)
    x = torch.randn([3, 5, 6, 6], generator=gen, dtype=torch.float64)
    weight = torch.randn([7, 5, k, k], generator=gen, dtype=torch.float64)
    styles = torch.randn([3, 5], generator=gen, dtype=torch.float64) + 1
    got = modulated_conv2d(x, weight, styles, padding=k // 2, demodulate=demodulate, fused_modconv=fused)
    want = _definition(x, weight, styles, demodulate)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), (got - want).abs().max()


def test_modulated_conv2d_float32_close_and_second_order():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([4, 16, 8, 8], generator=gen, requires_grad=True)
    weight = torch.randn([16, 16, 3, 3], generator=gen, requires_grad=True)
    styles = torch.randn([4, 16], generator=gen) + 1
    y = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
    ref = _definition(x.double(), weight.double(), styles.double(), True)
    assert (y.double() - ref).abs().max() < 1e-4
    # Both fused and unfused forms agree, and the graph is twice differentiable (R1 needs it).
    yf = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=True)
    assert (y - yf).abs().max() < 1e-4
    g, = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
    gw, = torch.autograd.grad(g.square().sum(), [weight])
    assert torch.isfinite(gw).all() and gw.abs().sum() > 0


def test_established_numerics_context_restores_and_differs_only_by_rounding():
    from training import networks
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([4, 32, 8, 8], generator=gen)
    weight = torch.randn([32, 32, 3, 3], generator=gen)
    styles = torch.randn([4, 32], generator=gen) + 1
    fast = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
    with networks.established_numerics():
        slow = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
        # The established order: coefficients of the explicitly built per-sample weights.
        w = weight.unsqueeze(0) * styles.reshape(4, 1, -1, 1, 1)
        d = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        want = F.conv2d(x * styles.reshape(4, -1, 1, 1), weight, padding=1) * d.reshape(4, -1, 1, 1)
        assert torch.equal(slow, want)
    assert not networks._demod_per_sample
    assert torch.equal(fast, modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False))
    assert (fast - slow).abs().max() < 1e-5
