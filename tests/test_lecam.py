"""LeCam regularisation: the penalty against the paper's formula, the anchors against an
independent EMA, exact resume, and runs alone and combined with the augmentations."""

import json
import os

import numpy as np
import pytest
import torch

from train_helpers import TINY, newest_run_dir, run_ok, write_blobs
from torch_utils import training_stats
from training import plugins, presets, training_state
from training.heads.lecam import LeCam

CTX = plugins.StateContext(2, [0, 1], 4, 'cpu')


def _step(head, real, fake):
    """One step of two micro-batches: D's outputs on reals and fakes, then end_step."""
    out = {}
    for slot in range(2):
        out[('real', slot)] = head.d_loss(kind='real', logits=real[slot], slot=slot)
        out[('fake', slot)] = head.d_loss(kind='fake', logits=fake[slot], slot=slot)
    head.end_step(0)
    return out


def test_penalty_and_anchors_follow_the_paper():
    torch.manual_seed(0)
    decay, weight = 0.9, 0.5
    head = LeCam(weight=weight, decay=decay)
    steps = [([torch.randn(4, 1) + 2 for _ in range(2)], [torch.randn(4, 1) - 1 for _ in range(2)])
             for _ in range(4)]
    ema_r = ema_f = 0.0
    for t, (real, fake) in enumerate(steps):
        out = _step(head, real, fake)
        if t == 0:
            assert all(v is None for v in out.values())   # no anchors before the first update
        else:
            # Bias-corrected EMAs of the previous steps' mean outputs (written out here).
            a_r, a_f = ema_r / (1 - decay ** t), ema_f / (1 - decay ** t)
            for slot in range(2):
                expected_real = weight * (real[slot].numpy()[:, 0] - a_f) ** 2
                expected_fake = weight * (fake[slot].numpy()[:, 0] - a_r) ** 2
                np.testing.assert_allclose(out[('real', slot)].numpy(), expected_real, rtol=1e-5)
                np.testing.assert_allclose(out[('fake', slot)].numpy(), expected_fake, rtol=1e-5)
        ema_r = decay * ema_r + (1 - decay) * float(torch.cat(real).mean())
        ema_f = decay * ema_f + (1 - decay) * float(torch.cat(fake).mean())
    assert float(head.anchor('real')) == pytest.approx(ema_r / (1 - decay ** 4), rel=1e-6)
    assert float(head.anchor('fake')) == pytest.approx(ema_f / (1 - decay ** 4), rel=1e-6)


def test_hinge_form_penalises_only_beyond_the_opposite_anchor():
    head = LeCam(weight=1.0, decay=0.5, hinge=True)
    _step(head, [torch.zeros(2, 1)] * 2, [torch.zeros(2, 1)] * 2)      # anchors 0 and 0
    real = torch.tensor([[-1.0], [2.0]])
    fake = torch.tensor([[1.0], [-3.0]])
    assert head.d_loss(kind='real', logits=real, slot=0).tolist() == [0.0, 4.0]   # relu(D(x) - a_F)^2
    assert head.d_loss(kind='fake', logits=fake, slot=0).tolist() == [0.0, 9.0]   # relu(a_R - D(G(z)))^2


def test_gradient_reaches_d_outputs():
    head = LeCam(weight=2.0)
    _step(head, [torch.ones(2, 1)] * 2, [-torch.ones(2, 1)] * 2)
    logits = torch.tensor([[3.0], [0.0]], requires_grad=True)
    head.d_loss(kind='real', logits=logits, slot=0).mean().backward()
    # d/dD mean(w (D - a_F)^2) = w * 2 (D - a_F) / N with a_F = -1.
    assert logits.grad.flatten().tolist() == pytest.approx([2.0 * 2 * 4 / 2, 2.0 * 2 * 1 / 2])


def test_state_round_trip_and_bad_values():
    head = LeCam(weight=1.0)
    for _ in range(3):
        _step(head, [torch.randn(4, 1)] * 2, [torch.randn(4, 1)] * 2)
    other = LeCam(weight=1.0)
    other.set_state(head.get_state(CTX), CTX)
    assert other.updates == 3 and torch.equal(other.anchor('real'), head.anchor('real'))
    head.d_loss(kind='real', logits=torch.zeros(2, 1), slot=0)
    with pytest.raises(RuntimeError, match='pending'):
        head.get_state(CTX)
    for kw in [dict(weight=0), dict(weight=1, decay=1.0), dict(weight=1, decay=0)]:
        with pytest.raises(ValueError):
            LeCam(**kw)


def test_options_and_config_tree():
    data = dict(data_path='d.zip', data_name='d', resolution=16, num_images=100, has_labels=False)
    c, desc = presets.build(**data, cfg='cpu', lecam=0.01, aug='ada', diffaugment='color')
    term, = c.heads_kwargs
    assert term == dict(class_name='training.heads.lecam.LeCam', weight=0.01, decay=0.99, hinge=False)
    assert desc == 'd-cpu-ada-diffaug-color-lecam0.01'
    for kw, flag in [(dict(lecam=0), '--lecam'), (dict(lecam_decay=0.9), '--lecam-decay'),
                     (dict(lecam=1, lecam_decay=1.5), '--lecam-decay'), (dict(lecam_hinge=True), '--lecam-hinge')]:
        with pytest.raises(presets.ConfigError) as e:
            presets.build(**data, cfg='cpu', **kw)
        assert e.value.flag == flag


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return write_blobs(str(tmp_path_factory.mktemp('data') / 'blobs.zip'))


def _stats_rows(run_dir):
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize('extra', [['--aug=noaug'], ['--aug=apa', '--with-dataaug=1', '--diffaugment=color,cutout'],
                                   ['--aug=ada', '--lecam-hinge=1']])
def test_two_tick_runs_alone_and_combined(tmp_path, dataset, extra):
    training_stats._reset()
    run_ok(['--outdir', tmp_path, '--data', dataset, '--lecam=0.1'] + TINY + extra)
    run_dir = newest_run_dir(tmp_path)
    assert '-lecam0.1' in os.path.basename(run_dir)
    rows = _stats_rows(run_dir)
    assert 'LeCam/anchor_real' in rows[-1] and 'Loss/lecam/penalty_real' in rows[-1]
    state = training_state.load_training_state(run_dir)
    assert state['components']['loss_term/lecam']['updates'] == 4     # one per step


def test_resume_continues_the_anchors_exactly(tmp_path, dataset):
    args = ['--data', dataset, '--lecam=0.1', '--aug=apa'] + TINY
    training_stats._reset()
    run_ok(['--outdir', tmp_path / 'full'] + args + ['--kimg=0.032'])
    training_stats._reset()
    run_ok(['--outdir', tmp_path / 'first'] + args)
    training_stats._reset()
    run_ok(['--outdir', tmp_path / 'second'] + args + ['--kimg=0.032', '--resume', newest_run_dir(tmp_path / 'first')])
    full = training_state.load_training_state(newest_run_dir(tmp_path / 'full'))
    resumed = training_state.load_training_state(newest_run_dir(tmp_path / 'second'))
    for key in ('ema_real', 'ema_fake'):
        assert torch.equal(full['components']['loss_term/lecam'][key], resumed['components']['loss_term/lecam'][key])
    assert full['components']['loss_term/lecam']['updates'] == 8
    for name, value in full['modules']['D'].items():
        assert torch.equal(value, resumed['modules']['D'][name]), name


def test_two_parts_of_one_kind_with_one_name_are_refused():
    from training import components  # pylint: disable=import-outside-toplevel
    import dnnlib  # pylint: disable=import-outside-toplevel
    c = dnnlib.EasyDict(heads_kwargs=[dict(class_name='training.heads.lecam.LeCam', weight=1.0)] * 2)
    with pytest.raises(ValueError, match="two loss_term parts are named 'lecam'"):
        components.build_parts(c, torch.device('cpu'), None, None, None)
