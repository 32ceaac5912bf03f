"""benchmarks/bench_training.py --breakdown: the parts of a phase add up and nothing stays patched."""

import argparse
import io
import os
import sys
from contextlib import redirect_stdout

import pytest
from torch.optim import optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import bench_training  # noqa: E402  benchmarks/bench_training.py
from training import loss as loss_module  # noqa: E402
from training import training_loop  # noqa: E402

# Slack for the timestamps taken around the timed calls (seconds per phase call).
SLACK = 2e-3


@pytest.fixture(scope='module')
def breakdown():
    originals = (training_loop._step_phase, loss_module._backward)
    out = io.StringIO()
    with redirect_stdout(out):
        bench_training.main(['--breakdown', 'demo', '--steps', '5', '--warmup', '1', '--no-flops', '--device', 'cpu'])
    return dict(text=out.getvalue(), originals=originals)


@pytest.fixture(scope='module')
def result():
    args = argparse.Namespace(breakdown='demo', batch=None, batch_gpu=None, steps=5, warmup=1, no_flops=True,
                              profile=None, profile_rows=30, set=None)
    with redirect_stdout(io.StringIO()):
        return bench_training.run_breakdown(args, 'cpu')


def test_parts_of_each_phase_fit_inside_it(result):
    steps = result['steps']
    assert len(steps) == 4                                  # 5 steps, the first untimed
    phases = {k.split('/')[0] for s in steps for k in s if '/' in k}
    # The demo config has no path length, so G's loss runs in one phase; R1 runs every 16 steps
    # (the first, untimed step).
    assert phases == {'Gboth', 'Dmain'}
    for s in steps:
        in_phases = 0.0
        for phase in phases:
            if f'{phase}/total' not in s:
                continue
            total, loss = s[f'{phase}/total'], s[f'{phase}/loss']
            inner = sum(s.get(f'{phase}/{p}', 0.0) for p in ('G fwd', 'augment', 'D fwd', 'backward'))
            assert 0.0 < loss <= total + SLACK
            assert s[f'{phase}/backward'] > 0.0 and s[f'{phase}/D fwd'] > 0.0
            # G fwd, the augment stage, D fwd and the backward calls are disjoint parts of fwd+bwd.
            assert inner <= loss + SLACK, (phase, s)
            assert loss + s.get(f'{phase}/optimizer', 0.0) <= total + SLACK
            in_phases += total
        assert in_phases <= s['step'] + SLACK
    # Both phases generate images.
    assert all(s['Gboth/G fwd'] > 0.0 and s['Dmain/G fwd'] > 0.0 for s in steps)


def test_printed_table_and_patches_removed(breakdown):
    text = breakdown['text']
    for row in ('Gboth    total', 'Gboth     G fwd', 'Gboth     D fwd', 'Gboth     backward', 'Dmain    fwd+bwd',
                'Dmain    optimizer', 'EMA', 'bookkeeping', 'step', 'median s/step by kind'):
        assert row in text, row
    assert 'timed steps=4' in text
    # The loop and the loss are as they were: the timer patched them from outside only.
    assert training_loop._step_phase is breakdown['originals'][0]
    assert loss_module._backward is breakdown['originals'][1]
    assert not optimizer._global_optimizer_pre_hooks and not optimizer._global_optimizer_post_hooks
