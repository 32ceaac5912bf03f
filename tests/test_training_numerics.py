"""The training numerics that the established StyleGAN2(-ADA) loss and loop define, each
pinned against a formulation written out here, not against our own code:

- the path-length penalty keeps the batch mean of the moved running mean in the graph;
- w_avg moves on every mapping call of a training pass (G main, G reg, the D phase's fakes;
  not style mixing's second latent), in call order;
- parameters off a lazy regulariser's path get a zero gradient, so Adam's step count and
  moments advance for every parameter of the phase.
"""

import math

import pytest
import torch

from torch_utils import training_stats
from training.loss import StyleGAN2Loss, path_length_penalty
from training.networks import Discriminator, Generator
from training.training_loop import _step_phase, build_phases


@pytest.fixture(autouse=True)
def _fresh_stats():
    training_stats._reset()
    yield
    training_stats._reset()


def tiny_nets(seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=1,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=1, channel_base=64, channel_max=8)
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


# ---------------------------------------------------------------------------------------
# Path length.

def test_path_length_penalty_gradient_has_the_batch_mean_term():
    torch.manual_seed(0)
    n, decay, mu = 6, 0.3, torch.tensor(0.7)
    lengths = (torch.rand(n) + 0.5).requires_grad_(True)
    penalty, batch_mean = path_length_penalty(lengths, mu, decay)
    penalty.mean().backward()
    l = lengths.detach()
    a = mu + decay * (l.mean() - mu)                        # the moved mean
    # d/dl_j (1/n) sum_i (l_i - a)^2 with da/dl_j = decay / n:
    expected = 2 / n * ((l - a) - decay * (l - a).mean())
    torch.testing.assert_close(lengths.grad, expected, rtol=1e-6, atol=1e-7)
    assert float(batch_mean) == pytest.approx(float(l.mean()))
    # The detached form (2/n (l_j - a)) differs by a visible amount: the test can fail.
    assert (lengths.grad - 2 / n * (l - a)).abs().max() > 1e-3


def test_greg_gradients_match_the_established_formulation():
    G, D = tiny_nets()
    loss = StyleGAN2Loss(torch.device('cpu'), G, D, style_mixing_prob=0.0, pl_weight=2.0, pl_batch_shrink=2,
                         pl_decay=0.01)
    loss.pl_mean.fill_(0.05)
    z = torch.randn(8, 8)
    G.requires_grad_(True)
    torch.manual_seed(11)
    loss.accumulate_gradients('Greg', torch.zeros(8, 1, 8, 8), torch.zeros(8, 0), z, torch.zeros(8, 0),
                              gain=4.0, cur_nimg=0, slot=0)
    ours = {name: p.grad.clone() for name, p in G.named_parameters()}
    G.zero_grad(set_to_none=True)

    # The established form, written out: same draws (mapping, synthesis noise, pl noise).
    torch.manual_seed(11)
    ws = G.mapping(z[:4], None)
    img = G.synthesis(ws)
    pl_noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    pl_grads, = torch.autograd.grad([(img * pl_noise).sum()], [ws], create_graph=True)
    pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
    pl_mean = torch.tensor(0.05).lerp(pl_lengths.mean(), 0.01)
    loss_Gpl = (pl_lengths - pl_mean).square() * 2.0
    (img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(4.0).backward()

    for name, p in G.named_parameters():
        assert name in ours, f'{name} got no gradient in Greg'
        torch.testing.assert_close(ours[name], p.grad, rtol=1e-6, atol=1e-9, msg=name)
    # Off the penalty's path: present and exactly zero.
    for name in ('synthesis.b4.torgb.bias', 'synthesis.b8.torgb.bias'):
        assert torch.count_nonzero(ours[name]) == 0


def test_dreg_gives_the_output_bias_a_zero_gradient():
    G, D = tiny_nets()
    loss = StyleGAN2Loss(torch.device('cpu'), G, D, r1_gamma=1.0)
    D.requires_grad_(True)
    loss.accumulate_gradients('Dreg', torch.rand(4, 1, 8, 8) * 2 - 1, torch.zeros(4, 0), torch.randn(4, 8),
                              torch.zeros(4, 0), gain=16.0, cur_nimg=0)
    grads = {name: p.grad for name, p in D.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert torch.count_nonzero(grads['b4.out.bias']) == 0
    assert grads['b4.out.weight'].abs().sum() > 0


# ---------------------------------------------------------------------------------------
# w_avg.

def test_w_avg_moves_on_every_training_mapping_call_in_order():
    G, D = tiny_nets()
    loss = StyleGAN2Loss(torch.device('cpu'), G, D, style_mixing_prob=1.0, r1_gamma=1.0, pl_weight=2.0)
    beta = G.mapping.w_avg_beta
    G.mapping.w_avg.normal_()
    expected = G.mapping.w_avg.clone()
    calls = []   # (z, w) of every mapping call, as the established per-call update sees it
    hook = G.mapping.register_forward_hook(lambda mod, args, out: calls.append((args[0], out[:, 0].detach())))
    current = {}

    def tracked(z):
        # The established update: every training call on the slot's own latents (gen_z or its
        # path-length prefix), not style mixing's second latent drawn inside run_G.
        return any(z.shape[0] <= zz.shape[0] and torch.equal(z, zz[:z.shape[0]]) for zz in current.values())

    for phase in ('Gmain', 'Greg', 'Dmain', 'Dreg'):
        (G if phase[0] == 'G' else D).requires_grad_(True)
        for slot in range(2):
            z = torch.randn(4, 8)
            current.clear()
            current[slot] = z
            calls.clear()
            loss.accumulate_gradients(phase, torch.rand(4, 1, 8, 8) * 2 - 1, torch.zeros(4, 0), z,
                                      torch.zeros(4, 0), gain=1.0, cur_nimg=0, slot=slot)
            for zz, w in calls:
                if tracked(zz):
                    expected = w.mean(dim=0).lerp(expected, beta)
            if phase != 'Dreg':
                assert len(calls) == 2 and sum(tracked(zz) for zz, _ in calls) == 1, phase
        loss.end_phase(phase, num_slots=2)
        G.requires_grad_(False)
        D.requires_grad_(False)
        torch.testing.assert_close(G.mapping.w_avg, expected, rtol=0, atol=0, msg=phase)
    hook.remove()


# ---------------------------------------------------------------------------------------
# Adam sees every parameter of the phase.

def _adam_phases(G, D):
    opt = dict(class_name='torch.optim.Adam', lr=0.01, betas=[0.5, 0.99], eps=1e-8)
    return build_phases(G, D, opt, opt, G_reg_interval=4, D_reg_interval=16)


def test_adam_steps_every_parameter_in_the_reg_phases():
    G, D = tiny_nets()
    loss = StyleGAN2Loss(torch.device('cpu'), G, D, style_mixing_prob=0.9, r1_gamma=1.0, pl_weight=2.0)
    phases = _adam_phases(G, D)
    assert [p.name for p in phases] == ['Gmain', 'Greg', 'Dmain', 'Dreg']
    rounds = [(torch.rand(4, 1, 8, 8) * 2 - 1, torch.zeros(4, 0))]
    common = dict(rank=0, num_gpus=1, num_slots=1, random_seed=0, cur_nimg=0, batch_gpu=4, z_dim=8,
                  label_sampler=lambda n: torch.zeros(n, 0), device=torch.device('cpu'), distributed=False)

    # A main step gives the biases momentum; then the reg step with zero gradient for them.
    for idx in (0, 2):
        _step_phase(phases[idx], idx, loss, rounds, batch_idx=0, **common)
    snap = {}
    for opt, net, bias in ((phases[1].opts[0], G, 'synthesis.b8.torgb.bias'),
                           (phases[3].opts[0], D, 'b4.out.bias')):
        p = dict(net.named_parameters())[bias]
        st = opt.state[p]
        snap[bias] = (p.detach().clone(), st['exp_avg'].clone(), st['exp_avg_sq'].clone(), opt.param_groups[0])
    for idx in (1, 3):
        _step_phase(phases[idx], idx, loss, rounds, batch_idx=0, **common)

    for opt, net in ((phases[1].opts[0], G), (phases[3].opts[0], D)):
        steps = {name: float(opt.state[p]['step']) for name, p in net.named_parameters()}
        assert set(steps.values()) == {2.0}, steps
    # Adam's update with g = 0 at step 2, written out.
    for net, bias in ((G, 'synthesis.b8.torgb.bias'), (D, 'b4.out.bias')):
        p0, m, v, group = snap[bias]
        (b1, b2), lr, eps = group['betas'], group['lr'], group['eps']
        m2, v2 = b1 * m, b2 * v
        expected = p0 - lr / (1 - b1 ** 2) * m2 / ((v2 / (1 - b2 ** 2)).sqrt() + eps)
        torch.testing.assert_close(dict(net.named_parameters())[bias].detach(), expected, rtol=1e-6, atol=1e-8)
        assert float(m.abs().sum()) > 0 and not torch.equal(expected, p0)   # the step did move it
