"""Shared pieces of the end-to-end train.py tests: a tiny schedule, a tiny dataset, a runner."""

import glob
import os
from typing import List, Optional, Sequence

import numpy as np
from click.testing import CliRunner

import train
from training.dataset import DatasetWriter

# Tiny network and schedule: 2 ticks of 2 steps of 4 images, one snapshot at the end. Path
# length regularisation and style mixing on (the cpu preset has them off), so that every
# phase and running mean of the StyleGAN2 loss takes part; lr 0.002 (the preset's is 0.01),
# the setting the tolerances of the 1-vs-2-process comparisons were set for: Adam turns the
# rounding of a different summation order in near-zero gradients into steps of up to lr.
TINY = ['--cfg=cpu', '--cbase=256', '--cmax=16', '--map=1', '--batch=4', '--kimg=0.016', '--tick=0.008',
        '--snap=2', '--workers=0', '--metrics=none', '--device=cpu', '--pl-weight=2', '--style-mixing=0.9',
        '--glr=0.002', '--dlr=0.002']


def write_blobs(path: str, num: int = 32, seed: int = 0, num_classes: Optional[int] = None) -> str:
    """Writes a 16x16 grayscale dataset zip of soft blobs (labels i % num_classes if given)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:16, 0:16]
    with DatasetWriter(path) as w:
        for i in range(num):
            cy, cx = rng.uniform(4, 12, size=2)
            img = (255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)).astype(np.uint8)
            w.add(img, label=None if num_classes is None else i % num_classes)
    return path


def invoke(args: Sequence):
    """Runs train.py in this process; returns the click result."""
    return CliRunner().invoke(train.main, [str(a) for a in args], catch_exceptions=True)


def run_ok(args: Sequence):
    """Runs train.py and fails the test with its output unless it succeeds."""
    res = invoke(args)
    if res.exit_code != 0:
        raise AssertionError(f'train.py failed ({res.exit_code}):\n{res.output}\n{res.exception!r}') from res.exception
    return res


def newest_run_dir(outdir) -> str:
    dirs: List[str] = sorted(d for d in glob.glob(os.path.join(str(outdir), '*')) if os.path.isdir(d))
    return dirs[-1]
