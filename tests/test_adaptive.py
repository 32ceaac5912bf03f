"""AdaptiveP controller: exact step sizes, clamping, shared modules, exact resume of its
pending state, path resolution, and small experiments with a real discriminator."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils import training_stats
from training import networks
from training.augment import adaptive
from training.augment.adaptive import AdaptiveP
from training.augment.apa import PseudoAugment
from training.augment.stage import AugmentStage
from training.augment.presets import ada_kwargs

STAT = 'Loss/signs/real'


@pytest.fixture(autouse=True)
def _fresh_stats():
    training_stats._reset()
    yield
    training_stats._reset()


def drive(controller, modules, stat_values, batch_size=8):
    """One D step per value: report it (as a batch of signs) and step the controller."""
    history = []
    for value in stat_values:
        training_stats.report(STAT, torch.full([batch_size], float(value)))
        controller.step(batch_size, modules)
        history.append(float(modules[0].p))
    return history


def test_rises_and_falls_by_the_exact_step():
    module = PseudoAugment(0.5)
    ctl = AdaptiveP(target=0.6, interval=4, speed_kimg=2)
    step = 8 * 4 / 2000
    # Above target: unchanged for three steps, then up by batch * interval / (speed_kimg * 1000).
    history = drive(ctl, [module], [1.0] * 8)
    assert history[:3] == [0.5] * 3
    assert history[3] == pytest.approx(0.5 + step, abs=1e-7) and history[7] == pytest.approx(0.5 + 2 * step, abs=1e-7)
    # r_t is the mean over the interval: 0.7 > 0.6 -> up; 0.5 < 0.6 -> down; = target -> stays.
    history = drive(ctl, [module], [1.0, 0.4, 0.4, 1.0])
    assert history[-1] == pytest.approx(0.5 + 3 * step, abs=1e-7)
    history = drive(ctl, [module], [0.2, 0.8, 0.2, 0.8])
    assert history[-1] == pytest.approx(0.5 + 2 * step, abs=1e-7)
    # Exactly at the target (0.5 is exact in binary; 0.6 is not): p stays.
    history = drive(AdaptiveP(target=0.5, interval=4, speed_kimg=2), [module], [0.75, 0.25, 0.25, 0.75])
    assert history[-1] == pytest.approx(0.5 + 2 * step, abs=1e-7)


def test_clamps_at_zero_and_p_max():
    module = PseudoAugment(0.0)
    ctl = AdaptiveP(target=0.6, interval=1, speed_kimg=0.01, p_max=0.7)
    assert drive(ctl, [module], [-1.0])[-1] == 0.0
    assert drive(ctl, [module], [1.0] * 3) == pytest.approx([0.7] * 3)   # 0.8 per step, clamped


def test_shared_modules_move_together_and_progress_is_reported():
    stage = AugmentStage([ada_kwargs('bgc')])
    apa = PseudoAugment(0.0)
    ctl = AdaptiveP(target=0.6, interval=2, speed_kimg=1, name='apa')
    collector = training_stats.Collector(regex='Progress/.*')
    mods = adaptive.controlled_modules({'augment': stage, 'real_transform': apa},
                                       ['real_transform', 'augment.ada'])
    assert mods == [apa, stage.get('ada')]
    drive(ctl, mods, [1.0] * 4, batch_size=16)
    assert float(apa.p) == float(stage.get('ada').p) == pytest.approx(2 * 32 / 1000)
    collector.update()
    assert collector.names() == ['Progress/apa_p'] and collector.num('Progress/apa_p') == 4
    assert collector.mean('Progress/apa_p') == pytest.approx((0 + 0.032 + 0.032 + 0.064) / 4)


def test_no_reports_means_no_move():
    module = PseudoAugment(0.25)
    ctl = AdaptiveP(interval=2)
    for _ in range(4):
        ctl.step(8, [module])
    assert float(module.p) == 0.25


def test_state_dict_round_trip_gives_the_same_future():
    values = [1.0, 0.9, 0.2, 1.0, 0.1, 0.3, 1.0, 1.0, 0.7, 0.65, 0.0, 1.0, 1.0]
    ref_module = PseudoAugment(0.1)
    ref = drive(AdaptiveP(interval=4, speed_kimg=0.5), [ref_module], values)

    # Stop after 6 steps (mid-interval), save everything, rebuild, continue.
    module = PseudoAugment(0.1)
    ctl = AdaptiveP(interval=4, speed_kimg=0.5)
    first = drive(ctl, [module], values[:6])
    state = ctl.state_dict()
    assert state == dict(stat_sum=pytest.approx(8 * (0.1 + 0.3)), stat_num=16.0, steps=2, nimg=16)
    assert all(type(v) in (int, float) for v in state.values())  # plain data for weights_only loads
    p_saved = module.p.clone()
    training_stats._reset()
    module = PseudoAugment(0.0)
    module.p.copy_(p_saved)
    ctl = AdaptiveP(interval=4, speed_kimg=0.5)
    ctl.load_state_dict(state)
    second = drive(ctl, [module], values[6:])
    assert first + second == ref
    with pytest.raises(KeyError, match='lacks'):
        ctl.load_state_dict({})


def test_bad_arguments_and_paths():
    with pytest.raises(ValueError, match='interval must be an int >= 1'):
        AdaptiveP(interval=0)
    with pytest.raises(ValueError, match=r'p_max must be in \[0, 1\]'):
        AdaptiveP(p_max=2)
    with pytest.raises(TypeError, match='has no p buffer'):
        AdaptiveP().step(8, [torch.nn.Linear(1, 1)])
    stage = AugmentStage([dict(class_name='training.augment.diffaugment.DiffAugment')])
    with pytest.raises(KeyError, match="no 'real_transform'"):
        adaptive.controlled_modules({'augment': stage, 'real_transform': None}, ['real_transform'])
    with pytest.raises(KeyError, match="has no submodule 'ada'"):
        adaptive.controlled_modules({'augment': stage}, ['augment.ada'])
    with pytest.raises(KeyError, match='DiffAugment has no p buffer'):
        adaptive.controlled_modules({'augment': stage}, ['augment.diffaug'])


# ---------------------------------------------------------------------------------------
# Experiments: a tiny StyleGAN2 discriminator, the loss's sign statistic, the controller.

def _experiment(same_distribution, steps, p0=0.0, feedback=False, seed=0):
    """Trains D on a batch of 8 reals vs. 8 uniform-noise fakes per step.

    Reals are 8 fixed smooth images (D can memorise them), or fresh noise from the fakes'
    distribution. With `feedback`, the reals pass through APA with the controlled p (pseudo
    images = this step's fakes). Returns the p and the batch sign mean after every step.
    """
    torch.manual_seed(seed)
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=1, channel_base=256, channel_max=16)
    opt = torch.optim.Adam(D.parameters(), lr=0.002, betas=(0.0, 0.99))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing='ij')
    freq = torch.rand(8, 2) * 4 + 1
    fixed_reals = torch.sin(freq[:, 0, None, None] * xx + freq[:, 1, None, None] * yy)[:, None]
    apa = PseudoAugment(p0)
    # One adjustment (4 steps of 8 images) moves p by 0.1.
    ctl = AdaptiveP(target=0.6, interval=4, speed_kimg=0.32, name='apa')
    ps, signs = [], []
    for _ in range(steps):
        fakes = torch.rand(8, 1, 16, 16) * 2 - 1
        reals = torch.rand(8, 1, 16, 16) * 2 - 1 if same_distribution else fixed_reals
        if feedback:
            reals = apa(reals, fakes)
        real_logits, fake_logits = D(reals, None), D(fakes, None)
        training_stats.report(STAT, real_logits.detach().sign())
        signs.append(float(real_logits.detach().sign().mean()))
        loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctl.step(8, [apa])
        ps.append(float(apa.p))
    return ps, signs


def test_p_rises_when_d_overfits_a_tiny_set():
    ps, signs = _experiment(same_distribution=False, steps=24)
    assert sum(signs[-8:]) / 8 > 0.9           # D separates the 8 reals from noise
    assert ps[-1] >= 0.4 and ps == sorted(ps)  # p only rises


def test_p_falls_when_reals_and_fakes_match():
    ps, signs = _experiment(same_distribution=True, steps=24, p0=0.5)
    assert abs(sum(signs[8:]) / len(signs[8:])) < 0.4
    assert ps[-1] <= 0.2 and ps[-1] < ps[3]


@pytest.mark.slow
def test_apa_feedback_holds_the_sign_statistic_near_target():
    """With APA in the loop, an overfitting D sees a fraction p of noise labelled real, so
    r_t = 1 - 2p on the mixed batch and p settles near (1 - 0.6) / 2 = 0.2."""
    ps, signs = _experiment(same_distribution=False, steps=120, feedback=True)
    late_p = ps[60:]
    assert 0.05 <= sum(late_p) / len(late_p) <= 0.4
    assert abs(sum(signs[60:]) / len(signs[60:]) - 0.6) < 0.2
