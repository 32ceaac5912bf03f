"""benchmarks/bench_convs.py: the convolutions it records and the FLOPs it divides by."""

import os
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import bench_convs  # noqa: E402  benchmarks/bench_convs.py
from training.networks import Discriminator, Generator  # noqa: E402


def _counted(c: dict) -> float:
    """torch's own FLOP count of the recorded convolution's forward pass."""
    x, w = torch.zeros(c['x']), torch.zeros(c['w'])
    counter = FlopCounterMode(display=False)
    with counter:
        torch.ops.aten.convolution(x, w, None, list(c['stride']), list(c['padding']), [1, 1], c['transposed'],
                                   list(c['output_padding']), 1)
    return float(counter.get_total_flops())


@pytest.fixture(scope='module')
def recorded():
    torch.manual_seed(0)
    G = Generator(16, 0, 16, 16, 1, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=128, channel_max=16, architecture='skip')).train()
    D = Discriminator(0, 16, 1, architecture='resnet', channel_base=128, channel_max=16,
                      epilogue_kwargs=dict(mbstd_group_size=2))
    with torch.no_grad():
        return dict(G=bench_convs.record_convs(lambda: G(torch.randn(2, 16), None)),
                    D=bench_convs.record_convs(lambda: D(torch.randn(2, 1, 16, 16), None)))


def test_records_every_dense_convolution_of_both_networks(recorded):
    g, d = recorded['G'], recorded['D']
    # G (skip, 4 -> 16): b4 conv1 + torgb; b8 and b16 each conv0 (transposed), conv1, torgb,
    # and the upsampling of the one-channel skip image (a transposed 4x4 with one channel).
    assert sum(c['transposed'] and c['w'][2:] == (3, 3) for c in g) == 2
    assert sum(not c['transposed'] and c['w'][2:] == (3, 3) for c in g) == 3
    assert sum(c['w'][2:] == (1, 1) for c in g) == 3
    # D (resnet, 16 -> 4): fromrgb, b16 and b8 each conv0, strided conv1 and 1x1 skip; the
    # epilogue's 3x3. No depthwise filter is recorded.
    assert sum(c['stride'] == (2, 2) for c in d) == 2
    assert sum(c['w'][2:] == (3, 3) for c in d) == 5
    assert sum(c['w'][2:] == (1, 1) for c in d) == 3
    assert all(c['x'][1] == c['w'][1] or c['transposed'] for c in g + d)


def test_flops_match_torch_flop_counter(recorded):
    cases = recorded['G'] + recorded['D']
    assert {c['transposed'] for c in cases} == {True, False}
    for c in cases:
        assert bench_convs.flops(c) == pytest.approx(_counted(c), rel=1e-12), c


def test_times_every_pass(recorded):
    c = next(c for c in recorded['D'] if c['stride'] == (2, 2))
    t = bench_convs.time_conv(c, repeats=1, winograd=False)
    assert set(t) == {'fwd', 'dgrad', 'wgrad', 'winograd'} and t['winograd'] is None
    assert all(t[p] > 0 for p in ('fwd', 'dgrad', 'wgrad'))


@pytest.mark.parametrize('argv, flag', [(['--res', '24'], '--res'), (['--batch', '6'], '--batch'),
                                        (['--channels', '0'], '--channels'), (['--repeats', '0'], '--repeats')])
def test_bad_values_name_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as info:
        bench_convs.main(argv)
    assert info.value.code == 2
    assert flag in capsys.readouterr().err


def test_small_run_prints_every_layer_and_the_totals(capsys):
    bench_convs.main(['--res', '8', '--cbase', '64', '--cmax', '8', '--batch', '4', '--repeats', '1'])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(('G ', 'D ')) and ' total:' not in line]
    # G at 8x8: b4 conv1 + torgb, b8 conv0 (transposed), conv1, torgb, skip upsampling;
    # D: fromrgb, b8 conv0, strided conv1, skip, epilogue conv.
    assert sum(r.startswith('G ') for r in rows) == 6 and sum(r.startswith('D ') for r in rows) == 5
    assert 'G total:' in out and 'D total:' in out
