"""StyleGAN2Loss: loss values, R1 (also on the APA-mixed batch), path length and its running
mean, w_avg tracking, style mixing, the augment stage on every D input, heads, state."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils import training_stats
from training import plugins
from training.loss import StyleGAN2Loss


@pytest.fixture(autouse=True)
def _fresh_stats():
    training_stats._reset()
    yield
    training_stats._reset()


class StubMapping(torch.nn.Module):
    def __init__(self, z_dim=3, w_dim=2, num_ws=4, w_avg_beta=0.9):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        self.weight = torch.nn.Parameter(torch.randn(w_dim, z_dim))
        self.register_buffer('w_avg', torch.zeros(w_dim))

    def forward(self, z, c, update_emas=False):
        assert not update_emas  # the loss tracks w_avg itself
        return (z @ self.weight.t())[:, None].repeat(1, self.num_ws, 1)


class StubSynthesis(torch.nn.Module):
    """img = per-layer weighted ws, so every layer's w shows up in the image."""

    def __init__(self, w_dim=2, num_ws=4):
        super().__init__()
        self.proj = torch.nn.Parameter(torch.randn(num_ws * w_dim, 16))

    def forward(self, ws):
        return torch.tanh(ws.flatten(1) @ self.proj).view(-1, 1, 4, 4)


class StubG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.z_dim = 3
        self.mapping = StubMapping()
        self.synthesis = StubSynthesis()


class QuadD(torch.nn.Module):
    """D(x) = sum(w * x^2): grad_x D = 2 w x, so R1 has a closed form."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.rand(1, 1, 4, 4) + 0.5)
        self.seen = []

    def forward(self, img, c, return_features=False):
        self.seen.append(img.detach().clone())
        logits = (self.w * img.square()).sum([1, 2, 3])[:, None]
        if return_features:
            return logits, img.flatten(1)
        return logits


def make_loss(**kwargs):
    G, D = StubG(), QuadD()
    G.requires_grad_(False)
    D.requires_grad_(False)
    return StubLoss(G, D, **kwargs)


def StubLoss(G, D, **kwargs):
    kwargs.setdefault('style_mixing_prob', 0.0)
    return StyleGAN2Loss(torch.device('cpu'), G, D, **kwargs)


def call(loss, phase, n=4, slot=0, gain=1.0, reals=None):
    reals = torch.rand(n, 1, 4, 4) * 2 - 1 if reals is None else reals
    return loss.accumulate_gradients(phase=phase, real_img=reals, real_c=torch.zeros(n, 0),
                                     gen_z=torch.randn(n, 3), gen_c=torch.zeros(n, 0), gain=gain,
                                     cur_nimg=0, slot=slot)


def test_gmain_nonsaturating_loss_trains_only_g():
    loss = make_loss()
    loss.G.requires_grad_(True)
    reals = torch.rand(4, 1, 4, 4)
    torch.manual_seed(1)
    z = torch.randn(4, 3)
    terms = loss.accumulate_gradients('Gmain', reals, torch.zeros(4, 0), z, torch.zeros(4, 0), 1.0, 0)
    with torch.no_grad():
        img = loss.G.synthesis(loss.G.mapping(z, None))
    expected = F.softplus(-(loss.D.w * img.square()).sum([1, 2, 3])).mean()
    assert float(terms['Loss/G/loss']) == pytest.approx(float(expected), rel=1e-6)
    assert loss.G.mapping.weight.grad is not None and loss.G.synthesis.proj.grad.abs().sum() > 0
    assert loss.D.w.grad is None


def test_dmain_loss_terms_and_no_g_gradient():
    loss = make_loss()
    loss.D.requires_grad_(True)
    reals = torch.rand(4, 1, 4, 4)
    terms = call(loss, 'Dmain', reals=reals)
    fake_seen, real_seen = loss.D.seen
    d = lambda x: (loss.D.w.detach() * x.square()).sum([1, 2, 3])
    assert float(terms['Loss/D/fake']) == pytest.approx(float(F.softplus(d(fake_seen)).mean()), rel=1e-6)
    assert float(terms['Loss/D/real']) == pytest.approx(float(F.softplus(-d(reals)).mean()), rel=1e-6)
    assert 'Loss/D/reg' not in terms  # R1 only in the reg phase
    assert loss.G.mapping.weight.grad is None and loss.D.w.grad is not None


@pytest.mark.parametrize('gamma,gain', [(1.0, 1.0), (10.0, 16.0)])
def test_r1_value_and_gradient(gamma, gain):
    loss = make_loss(r1_gamma=gamma)
    loss.D.requires_grad_(True)
    reals = torch.rand(4, 1, 4, 4) * 2 - 1
    terms = call(loss, 'Dreg', reals=reals, gain=gain)
    w = loss.D.w.detach()
    penalty = (2 * w * reals).square().sum([1, 2, 3])           # |grad_x D(x)|^2
    assert float(terms['Loss/D/reg']) == pytest.approx(float(penalty.mean() * gamma / 2), rel=1e-5)
    # d/dw of gamma/2 * sum(4 w^2 x^2), averaged over the batch, times the gain.
    expected_grad = gain * gamma / 2 * (8 * w * reals.square()).mean(0, keepdim=True)
    torch.testing.assert_close(loss.D.w.grad, expected_grad, rtol=1e-5, atol=1e-6)
    assert 'Loss/D/real' not in terms


class ReplaceAll(plugins.RealTransform):
    """A real-batch transform that shows D the latest fakes of the slot instead of the reals."""

    def __init__(self):
        self.fakes = {}

    def observe_fakes(self, slot, images):
        self.fakes[slot] = images

    def transform_reals(self, reals, slot):
        return self.fakes.get(slot, reals)


def test_real_transforms_see_each_g_main_batch_and_chain_in_order():
    first, order = ReplaceAll(), []

    class Scale(plugins.RealTransform):
        def transform_reals(self, reals, slot):
            order.append(slot)
            return reals * 2
    loss = make_loss(r1_gamma=2.0, real_transforms=[first, Scale()])
    call(loss, 'Gmain', slot=0)
    img = first.fakes[0]
    assert img.shape == (4, 1, 4, 4) and not img.requires_grad
    call(loss, 'Dmain', slot=0)
    assert torch.equal(loss.D.seen[-1], first.fakes[0] * 2) and order == [0]
    with pytest.raises(TypeError, match='transform_reals'):
        make_loss(real_transforms=[lambda reals, fakes: reals])


def test_r1_is_taken_on_the_mixed_real_batch():
    transform = ReplaceAll()
    loss = make_loss(r1_gamma=2.0, real_transform=transform)
    call(loss, 'Gmain', slot=1)
    fakes = transform.fakes[1]
    terms = call(loss, 'Dreg', slot=1)
    assert torch.equal(loss.D.seen[-1], fakes)   # D saw the pseudo batch ...
    penalty = (2 * loss.D.w * fakes).square().sum([1, 2, 3])
    assert float(terms['Loss/D/reg']) == pytest.approx(float(penalty.mean()), rel=1e-5)  # ... and R1 used it
    # Another slot has no fakes yet: the transform gets None and the reals pass through.
    reals = torch.rand(4, 1, 4, 4)
    call(loss, 'Dreg', slot=0, reals=reals)
    assert torch.equal(loss.D.seen[-1], reals)


def test_augment_pipe_sees_every_d_input():
    calls = []

    class Flip(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x.flip(3)

    loss = make_loss(augment_pipe=Flip(), r1_gamma=1.0)
    reals = torch.rand(4, 1, 4, 4)
    call(loss, 'Gmain')
    call(loss, 'Dboth', reals=reals)
    assert calls == [4, 4, 4]                       # G main fakes, D fakes, D reals
    assert torch.equal(loss.D.seen[-1], reals.flip(3))


def test_path_length_running_mean_and_penalty():
    loss = make_loss(pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.1)
    loss.G.requires_grad_(True)
    loss.pl_mean.fill_(0.5)
    terms0 = call(loss, 'Greg', n=8, slot=0)
    terms1 = call(loss, 'Greg', n=8, slot=1)
    m0, m1 = float(loss._pending_pl[0]), float(loss._pending_pl[1])
    # Each slot's penalty is against the mean moved by its own batch (pl_mean untouched so far).
    assert float(loss.pl_mean) == 0.5
    assert float(terms0['Loss/G/reg']) > 0 and float(terms1['Loss/G/reg']) > 0
    loss.end_phase('Greg', num_slots=2)
    expected = 0.5 + 0.1 * (m0 - 0.5)
    expected = expected + 0.1 * (m1 - expected)
    assert float(loss.pl_mean) == pytest.approx(expected, rel=1e-6)
    assert loss._pending_pl == {}


def test_path_length_value_for_a_linear_generator():
    # img = ws_flat @ P (no tanh): J^T y is linear in y, E|J^T y|^2 has a closed form, and
    # with a fixed y the path length is exact.
    loss = make_loss(pl_weight=1.0, pl_batch_shrink=1, pl_decay=0.0)
    loss.G.requires_grad_(True)
    loss.G.synthesis.forward = lambda ws: (ws.flatten(1) @ loss.G.synthesis.proj).view(-1, 1, 4, 4)
    torch.manual_seed(5)
    z = torch.randn(2, 3)
    torch.manual_seed(5)
    _ = torch.randn(2, 3)
    noise = torch.randn(2, 1, 4, 4) / 4                  # what the loss draws after z
    torch.manual_seed(5)
    terms = loss.accumulate_gradients('Greg', torch.zeros(2, 1, 4, 4), torch.zeros(2, 0), torch.randn(2, 3),
                                      torch.zeros(2, 0), 1.0, 0)
    g = (noise.flatten(1) @ loss.G.synthesis.proj.t()).view(2, 4, 2)   # d(img . y)/d ws
    lengths = g.detach().square().sum(2).mean(1).sqrt()
    assert float(loss._pending_pl[0]) == pytest.approx(float(lengths.mean()), rel=1e-5)
    assert float(terms['Loss/G/reg']) == pytest.approx(float(lengths.square().mean()), rel=1e-5)
    del z


def test_w_avg_follows_slot_means_in_slot_order():
    loss = make_loss()
    beta = loss.G.mapping.w_avg_beta
    zs = [torch.randn(4, 3) for _ in range(3)]
    for slot, z in enumerate(zs):
        loss.accumulate_gradients('Gmain', torch.zeros(4, 1, 4, 4), torch.zeros(4, 0), z, torch.zeros(4, 0), 1, 0,
                                  slot=slot)
    assert torch.equal(loss.G.mapping.w_avg, torch.zeros(2))  # moved only at the end of the phase
    loss.end_phase('Gmain', num_slots=3)
    expected = torch.zeros(2)
    for z in zs:
        expected = (z @ loss.G.mapping.weight.t()).mean(0).lerp(expected, beta)
    torch.testing.assert_close(loss.G.mapping.w_avg, expected, rtol=0, atol=0)


def test_style_mixing_takes_a_suffix_of_layers_from_a_second_latent():
    loss = make_loss(style_mixing_prob=1.0)
    z = torch.randn(3, 3)
    plain = loss.G.mapping(z, None)
    cutoffs = set()
    for seed in range(30):
        torch.manual_seed(seed)
        _img, ws = loss.run_G(z, None)
        same = (ws == plain).all(dim=2).all(dim=0)            # per layer
        cutoff = int(same.long().sum())
        assert same[:cutoff].all() and not same[cutoff:].any()
        cutoffs.add(cutoff)
    assert cutoffs == {1, 2, 3}                                # cutoff in [1, num_ws)
    loss0 = make_loss(style_mixing_prob=0.0)
    assert torch.equal(loss0.run_G(z, None)[1], loss0.G.mapping(z, None))


def test_heads_add_their_terms():
    class Head(torch.nn.Module):
        name = 'probe'

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(2.0))
            self.kinds = []

        def d_loss(self, kind, img, raw, c, z, logits, features, cur_nimg, **kwargs):
            self.kinds.append(kind)
            assert features.shape == (img.shape[0], 16)
            assert raw.shape == img.shape
            assert (z is None) == (kind == 'real')
            return self.scale * logits.mean()

        def g_loss(self, img, raw, c, z, logits, features, cur_nimg, **kwargs):
            self.kinds.append('g')
            assert z is not None
            return -logits.mean()

    head = Head()
    loss = make_loss(heads=[head])
    terms = call(loss, 'Gmain')
    terms.update(call(loss, 'Dmain'))
    assert head.kinds == ['g', 'fake', 'real']
    assert {'Loss/probe/g_loss', 'Loss/probe/d_loss_fake', 'Loss/probe/d_loss_real'} <= set(terms)
    assert head.scale.grad is not None  # the head's term was back-propagated


def test_disabled_regularisers_do_nothing():
    loss = make_loss(r1_gamma=0, pl_weight=0)
    loss.G.requires_grad_(True)
    loss.D.requires_grad_(True)
    assert call(loss, 'Greg') == {}
    assert call(loss, 'Dreg') == {}
    assert loss.G.mapping.weight.grad is None and loss.D.w.grad is None
    with pytest.raises(ValueError, match="Unknown phase 'Dfoo'"):
        call(loss, 'Dfoo')


def test_state_dict_round_trip():
    loss = make_loss()
    loss.pl_mean.fill_(1.25)
    state = loss.state_dict(num_slots=4)
    assert set(state) == {'pl_mean'}
    other = make_loss()
    other.load_state_dict(dict(state, latest_fakes=torch.zeros(8, 1, 4, 4)))   # an older state
    assert float(other.pl_mean) == 1.25


def test_real_networks_all_phases_finite():
    from training.networks import Discriminator, Generator
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=1,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=1, channel_base=64, channel_max=8)
    G.requires_grad_(False)
    D.requires_grad_(False)
    loss = StyleGAN2Loss(torch.device('cpu'), G, D, r1_gamma=1.0, style_mixing_prob=0.9)
    for phase in ['Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth']:
        (G if phase.startswith('G') else D).requires_grad_(True)   # as the loop does
        terms = loss.accumulate_gradients(phase, torch.rand(4, 1, 8, 8) * 2 - 1, torch.zeros(4, 0),
                                          torch.randn(4, 8), torch.zeros(4, 0), 1.0, 0)
        assert terms and all(np.isfinite(float(v)) for v in terms.values()), phase
        loss.end_phase(phase, 1)
        G.requires_grad_(False)
        D.requires_grad_(False)
    assert float(loss.pl_mean) > 0 and G.mapping.w_avg.abs().sum() > 0
