"""Achieved FLOP/s of the dense convolutions of G and D, per layer and per pass.

    python benchmarks/bench_convs.py                       # the side-by-side config, CPU
    python benchmarks/bench_convs.py --winograd            # plus NNPACK's Winograd forward (3x3, stride 1)
    python benchmarks/bench_convs.py --res 256 --channels 3 --cbase 16384 --cmax 512 --batch 8

Runs one G forward (training mode, as in G main) and one D forward of the given config,
records every dense convolution they make (shapes, stride, padding, transposed or not) and
times each distinct one alone: forward, gradient w.r.t. the input and gradient w.r.t. the
weights (torch's convolution_backward with one output each), median of --repeats calls. It
prints milliseconds and GFLOP/s per pass (2 x multiply-adds / time), and the totals of one
G pass and one D pass. The highest rates show what the machine's convolution library reaches
at these shapes; the totals, set against the step times of bench_training.py, show how much
of a step is convolution and at what rate. Depthwise filters (the FIR resampling) are not
dense convolutions and are left out.

`--winograd` adds NNPACK's Winograd forward (torch._nnpack_spatial_convolution, F(6x6, 3x3))
for the 3x3 stride-1 layers where this torch has NNPACK: it does fewer multiplications for
the same result up to rounding.
"""

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_ops import time_ms as _time_ms  # noqa: E402  benchmarks/bench_ops.py
from torch_utils.host_memory import keep_freed_host_memory  # noqa: E402
from training.networks import Discriminator, Generator  # noqa: E402


CPU = torch.device('cpu')


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def record_convs(fn: Callable[[], None]) -> List[dict]:
    """The dense (one-group) convolutions `fn` makes through torch.nn.functional, in call
    order (the networks' layers, and the FIR filters of one-channel images)."""
    calls = []
    conv2d, conv_transpose2d = F.conv2d, F.conv_transpose2d

    def spy(transposed):
        def call(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
            if groups == 1:
                calls.append(dict(x=tuple(x.shape), w=tuple(w.shape), stride=_pair(stride), padding=_pair(padding),
                                  output_padding=_pair(output_padding) if transposed else (0, 0),
                                  transposed=transposed))
            if transposed:
                return conv_transpose2d(x, w, bias, stride, padding, output_padding, groups, dilation)
            return conv2d(x, w, bias, stride, padding, dilation, groups)
        return call

    F.conv2d, F.conv_transpose2d = spy(False), spy(True)
    try:
        fn()
    finally:
        F.conv2d, F.conv_transpose2d = conv2d, conv_transpose2d
    return calls


def flops(c: dict) -> float:
    """2 x multiply-adds of the forward pass (the same for each gradient)."""
    n, cin, h, w = c['x']
    if c['transposed']:
        _, cout, kh, kw = c['w']
        return 2.0 * n * h * w * cin * cout * kh * kw  # every input pixel meets the whole kernel
    cout, _, kh, kw = c['w']
    oh = (h + 2 * c['padding'][0] - kh) // c['stride'][0] + 1
    ow = (w + 2 * c['padding'][1] - kw) // c['stride'][1] + 1
    return 2.0 * n * oh * ow * cin * cout * kh * kw


def time_conv(c: dict, repeats: int, winograd: bool) -> Dict[str, Optional[float]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(c['x'], generator=gen)
    w = torch.randn(c['w'], generator=gen) * 0.05
    args = (list(c['stride']), list(c['padding']), [1, 1], c['transposed'], list(c['output_padding']), 1)
    y = torch.ops.aten.convolution(x, w, None, *args)
    gy = torch.randn(y.shape, generator=gen)

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(gy, x, w, None, *args, mask)

    out = dict(fwd=_time_ms(lambda: torch.ops.aten.convolution(x, w, None, *args), CPU, repeats),
               dgrad=_time_ms(backward([True, False, False]), CPU, repeats),
               wgrad=_time_ms(backward([False, True, False]), CPU, repeats), winograd=None)
    if (winograd and not c['transposed'] and c['stride'] == (1, 1) and c['w'][2:] == (3, 3)
            and c['padding'][0] == c['padding'][1]):
        out['winograd'] = _time_ms(lambda: torch._nnpack_spatial_convolution(  # pylint: disable=protected-access
            x, w, None, list(c['padding'])), CPU, repeats)
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--res', type=int, default=32, help='resolution (default: 32)')
    parser.add_argument('--channels', type=int, default=1, help='image channels (default: 1)')
    parser.add_argument('--cbase', type=int, default=4096, help='channel base (default: 4096)')
    parser.add_argument('--cmax', type=int, default=128, help='maximum channels (default: 128)')
    parser.add_argument('--batch', type=int, default=32, help='batch (default: 32)')
    parser.add_argument('--repeats', type=int, default=9, help='timed calls per pass (default: 9)')
    parser.add_argument('--winograd', action='store_true', help="also time NNPACK's Winograd forward")
    args = parser.parse_args(argv)
    for name in ('channels', 'cbase', 'cmax', 'batch', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name}: must be at least 1, got {getattr(args, name)}')
    if args.res < 8 or args.res & (args.res - 1):
        parser.error(f'--res: must be a power of two >= 8, got {args.res}')
    if args.batch % 4:
        parser.error(f'--batch: must be a multiple of 4 (the minibatch-std group), got {args.batch}')
    keep_freed_host_memory()  # as the training loop runs on the CPU
    winograd = args.winograd and torch.backends.nnpack.is_available()  # (this call also initialises NNPACK)
    if args.winograd and not winograd:
        print('NNPACK is not available in this torch: --winograd ignored')

    torch.manual_seed(0)
    G = Generator(512, 0, 512, args.res, args.channels, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=args.cbase, channel_max=args.cmax, architecture='skip')).train()
    D = Discriminator(0, args.res, args.channels, architecture='resnet', channel_base=args.cbase,
                      channel_max=args.cmax, epilogue_kwargs=dict(mbstd_group_size=4))
    z = torch.randn(args.batch, 512)
    with torch.no_grad():
        nets = dict(G=record_convs(lambda: G(z, None)),
                    D=record_convs(lambda: D(torch.randn(args.batch, args.channels, args.res, args.res), None)))

    print(f'CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; batch {args.batch}, '
          f'{args.res}x{args.res}x{args.channels}, cbase {args.cbase}, cmax {args.cmax}')
    head = f'{"net":<4}{"input":<20}{"weight":<20}{"kind":<11}{"GFLOP":>7}' + ''.join(
        f'{p + " ms":>11}{"GFLOP/s":>9}' for p in ('fwd', 'dgrad', 'wgrad'))
    print(head + (f'{"winograd ms":>13}{"x fwd":>7}' if winograd else ''))
    cache: Dict[str, Dict[str, Optional[float]]] = {}
    for net, calls in nets.items():
        total = dict(fwd=0.0, dgrad=0.0, wgrad=0.0, flop=0.0)
        for c in calls:
            key = repr(sorted(c.items()))
            if key not in cache:
                cache[key] = time_conv(c, args.repeats, winograd)
            t, gf = cache[key], flops(c) / 1e9
            kind = ('transp' if c['transposed'] else 'conv') + f' {c["w"][2]}x{c["w"][3]}/{c["stride"][0]}'
            row = f'{net:<4}{str(list(c["x"])):<20}{str(list(c["w"])):<20}{kind:<11}{gf:>7.2f}'
            row += ''.join(f'{t[p]:>11.2f}{gf / t[p] * 1e3:>9.0f}' for p in ('fwd', 'dgrad', 'wgrad'))
            if t['winograd'] is not None:
                row += f'{t["winograd"]:>13.2f}{t["fwd"] / t["winograd"]:>7.2f}'
            print(row)
            for p in ('fwd', 'dgrad', 'wgrad'):
                total[p] += t[p]
            total['flop'] += gf
        rates = ', '.join(f'{p} {total[p]:.1f} ms ({total["flop"] / total[p] * 1e3:.0f} GFLOP/s)'
                          for p in ('fwd', 'dgrad', 'wgrad'))
        print(f'{net} total: {total["flop"]:.2f} GFLOP per pass; {rates}')


if __name__ == '__main__':
    main()
