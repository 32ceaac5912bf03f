"""benchmarks/bench_ops.py --canvas: the 'canvas' column really is the canvas upsampling."""

import io
import os
import sys
from contextlib import redirect_stdout

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import bench_ops  # noqa: E402  benchmarks/bench_ops.py
from torch_utils.ops import upfirdn2d  # noqa: E402

CPU = torch.device('cpu')


@pytest.fixture
def small_upsample_case(monkeypatch):
    """bench_ops' cases replaced by one small upsampling (G's skip-image pads)."""
    x, f = torch.randn(1, 3, 8, 8), upfirdn2d.setup_filter([1, 3, 3, 1])

    def up(x, f, impl):
        return upfirdn2d.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl=impl)
    monkeypatch.setattr(bench_ops, '_cases', lambda batch: [('upsample2d x2 [B,3,8,8]', lambda d, t: (x, f), up)])


def test_canvas_column_times_the_canvas_path_and_ref_the_transposed_one(small_upsample_case, monkeypatch):
    used = {'canvas': 0, 'transposed': 0}
    original = upfirdn2d._upsample_transposed  # pylint: disable=protected-access

    def spy(*args):
        y = original(*args)
        used['canvas' if y is None else 'transposed'] += 1
        return y
    monkeypatch.setattr(upfirdn2d, '_upsample_transposed', spy)
    canvas = bench_ops.bench(CPU, torch.float32, batch=1, repeats=1, impls=['canvas'])
    # Forward 3 warm-up + 1 timed, the output for randn_like, forward + backward 3 + 1.
    assert used == {'canvas': 9, 'transposed': 0}
    ref = bench_ops.bench(CPU, torch.float32, batch=1, repeats=1, impls=['ref'])
    assert used == {'canvas': 9, 'transposed': 9}
    assert canvas[0]['canvas_fwd'] > 0 and ref[0]['ref_fwdbwd'] > 0


def test_canvas_flag_prints_the_ratio_of_the_two(small_upsample_case):
    out = io.StringIO()
    with redirect_stdout(out):
        bench_ops.main(['--device', 'cpu', '--batch', '1', '--repeats', '1', '--canvas'])
    lines = out.getvalue().splitlines()
    assert 'canvas' in lines[1] and 'ref' in lines[1], out.getvalue()
    row = lines[-1].split()
    assert row[0] == 'upsample2d' and row[-1].endswith('x') and float(row[-1][:-1]) > 0, out.getvalue()
