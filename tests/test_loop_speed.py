"""The fast paths of the loop give the same bits as the formulas they replace."""

import copy

import torch

from training import training_loop as tl


def test_update_ema_is_the_established_lerp_bit_for_bit():
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    G_ema = copy.deepcopy(G)
    want = copy.deepcopy(G)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p))
        G[1].running_mean.add_(1)
        for p_ema, p in zip(want.parameters(), G.parameters()):
            p_ema.copy_(p.lerp(p_ema, 0.987))
        for b_ema, b in zip(want.buffers(), G.buffers()):
            b_ema.copy_(b)
    tl.update_ema(G_ema, G, 0.987)
    for a, b in zip(list(G_ema.parameters()) + list(G_ema.buffers()), list(want.parameters()) + list(want.buffers())):
        assert torch.equal(a, b)
