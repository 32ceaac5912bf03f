"""InsGen's linear p schedule: the rule, its place in the config tree, and runs."""

import json
import os

import pytest
import torch

from train_helpers import TINY, newest_run_dir, run_ok, write_blobs
from torch_utils import training_stats
from training import presets, training_state
from training.augment.apa import PseudoAugment
from training.augment.linear_p import LinearP


def test_p_rises_linearly_to_the_target_every_interval():
    ctrl = LinearP(target=0.6, total_kimg=0.1, interval=2)
    apa = PseudoAugment()
    seen = []
    for step in range(1, 15):
        ctrl.step(10, [apa], cur_nimg=10 * step)
        seen.append(float(apa.p))
    # Updated on even steps to 0.6 * nimg / 100, held in between, capped at the target.
    expected = []
    for step in range(1, 15):
        expected.append(min(0.6 * 10 * (step - step % 2) / 100, 0.6))
    assert seen == pytest.approx(expected)
    state = ctrl.state_dict()
    other = LinearP(target=0.6, total_kimg=0.1, interval=2)
    other.load_state_dict(state)
    assert other.steps == ctrl.steps
    with pytest.raises(ValueError):
        ctrl.step(10, [apa])           # needs the image count


DATA = dict(data_path='d.zip', data_name='d', resolution=16, num_images=100, has_labels=False)


def test_replaces_the_adaptive_rule_of_the_run():
    c, desc = presets.build(**DATA, cfg='cpu', ada_linear=True, aug='apa', with_dataaug=True, target=0.5, kimg=10)
    ctrl, = c.controllers
    assert ctrl == dict(class_name='training.augment.linear_p.LinearP', target=0.5, interval=4, total_kimg=10.0,
                        name='apa', modules=['real_transform', 'augment.ada'])
    assert desc.endswith('-apa-target0.5-dataaug-adalinear')
    # The vision-aided branch's own adaptive p is not the augmentation p: it keeps its rule.
    c = presets.build(**DATA, cfg='cpu', ada_linear=True, aug='ada', cv='clip', cv_weights=['clip=random'])[0]
    assert [k.class_name.rsplit('.', 1)[-1] for k in c.controllers] == ['LinearP', 'AdaptiveP']
    for kw in [dict(aug='noaug'), dict(aug='fixed', p=0.2)]:
        with pytest.raises(presets.ConfigError) as e:
            presets.build(**DATA, cfg='cpu', ada_linear=True, **kw)
        assert e.value.flag == '--ada-linear'


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return write_blobs(str(tmp_path_factory.mktemp('data') / 'blobs.zip'))


@pytest.mark.parametrize('extra', [['--aug=apa'], ['--aug=ada', '--insgen=1', '--lecam=0.1']])
def test_two_tick_runs_follow_the_schedule(tmp_path, dataset, extra):
    training_stats._reset()
    run_ok(['--outdir', tmp_path, '--data', dataset, '--ada-linear=1', '--target=0.8'] + TINY + extra)
    run_dir = newest_run_dir(tmp_path)
    name = extra[0].split('=')[1]
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    assert f'Progress/{name}_p' in rows[-1]
    state = training_state.load_training_state(run_dir)
    # 16 of 16 images after 4 steps of 4 (interval 4): p = 0.8 * 16 / 16.
    key = 'real_transform/apa' if name == 'apa' else 'augment/augment_pipe'
    p = state['components'][key]['p' if name == 'apa' else 'ada.p']
    assert float(p) == pytest.approx(0.8)
    assert state['components'][f'controller/{name}'] == {'steps': 0}
