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


def test_seed_device_rng_draws_as_torch_manual_seed():
    # The loop reseeds before every phase and slot; seeding only the CPU generator (and the
    # device's on CUDA) must give the draws torch.manual_seed gives.
    from training import phases
    want, got = [], []
    for seed in (0, 12345, 2 ** 62 + 7):
        torch.manual_seed(seed)
        want.append((torch.randn([5]), torch.randint(100, [3]), torch.rand([2])))
        torch.manual_seed(seed + 1)  # something else in between
        torch.randn([4])
        phases.seed_device_rng(seed, torch.device('cpu'))
        got.append((torch.randn([5]), torch.randint(100, [3]), torch.rand([2])))
    for w, g in zip(want, got):
        for a, b in zip(w, g):
            assert torch.equal(a, b)
    if torch.cuda.is_available():
        phases.seed_device_rng(7, torch.device('cuda'))
        a = torch.randn([5], device='cuda')
        torch.manual_seed(7)
        assert torch.equal(a, torch.randn([5], device='cuda'))
