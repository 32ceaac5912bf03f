"""Times the reference and CUDA implementations of bias_act and upfirdn2d on StyleGAN2 shapes.

    python benchmarks/bench_ops.py                 # GPU if present, else CPU (reference only)
    python benchmarks/bench_ops.py --batch 8 --repeats 50
    python benchmarks/bench_ops.py --device cpu --batch 32 --canvas   # reference: canvas vs no canvas

Prints one row per case: milliseconds per call for the forward pass and for forward plus
backward, for each implementation, and the speed-up of the CUDA kernels over the reference.
On a machine without CUDA only the reference is timed. `--canvas` adds the reference as the
established code computes upsampling (through a zero-filled canvas, `upfirdn2d.canvas_upsampling`)
and compares the reference with it instead of with the kernels.
"""

import argparse
import os
import sys
import time
from typing import Callable, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_utils.ops import bias_act, bias_act_cuda, upfirdn2d, upfirdn2d_cuda  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], None], device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median wall time of `fn` in milliseconds (the device is synchronised around each call)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def _cases(batch: int):
    """(name, make_inputs, op(x, b_or_f, impl)) for typical layers of a 256x256 StyleGAN2."""
    f = lambda device: upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    return [
        ('bias_act lrelu  fc  [B,512]', lambda d, t: (torch.randn(batch, 512, device=d, dtype=t), torch.randn(512, device=d, dtype=t)),
         lambda x, b, impl: bias_act.bias_act(x, b, act='lrelu', impl=impl)),
        ('bias_act lrelu  [B,512,16,16]', lambda d, t: (torch.randn(batch, 512, 16, 16, device=d, dtype=t), torch.randn(512, device=d, dtype=t)),
         lambda x, b, impl: bias_act.bias_act(x, b, act='lrelu', clamp=256, impl=impl)),
        ('bias_act lrelu  [B,128,128,128]', lambda d, t: (torch.randn(batch, 128, 128, 128, device=d, dtype=t), torch.randn(128, device=d, dtype=t)),
         lambda x, b, impl: bias_act.bias_act(x, b, act='lrelu', clamp=256, impl=impl)),
        ('bias_act swish  [B,256,32,32]', lambda d, t: (torch.randn(batch, 256, 32, 32, device=d, dtype=t), torch.randn(256, device=d, dtype=t)),
         lambda x, b, impl: bias_act.bias_act(x, b, act='swish', impl=impl)),
        ('upsample2d x2   [B,256,32,32]', lambda d, t: (torch.randn(batch, 256, 32, 32, device=d, dtype=t), f(d)),
         lambda x, f, impl: upfirdn2d.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl=impl)),
        ('upsample2d x2   [B,3,128,128]', lambda d, t: (torch.randn(batch, 3, 128, 128, device=d, dtype=t), f(d)),
         lambda x, f, impl: upfirdn2d.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl=impl)),
        ('downsample2d /2 [B,128,128,128]', lambda d, t: (torch.randn(batch, 128, 128, 128, device=d, dtype=t), f(d)),
         lambda x, f, impl: upfirdn2d.upfirdn2d(x, f, down=2, padding=1, impl=impl)),
        ('filter2d 4x4    [B,256,66,66]', lambda d, t: (torch.randn(batch, 256, 66, 66, device=d, dtype=t), f(d)),
         lambda x, f, impl: upfirdn2d.upfirdn2d(x, f, padding=[1, 1, 1, 1], gain=4, impl=impl)),
    ]


def _with_impl(op: Callable, impl: str) -> Callable:
    """op(x, aux) for an implementation name: 'ref', 'cuda', or 'canvas' (the reference with
    the established code's canvas upsampling)."""
    if impl != 'canvas':
        return lambda x, aux: op(x, aux, impl)

    def canvas(x, aux):
        with upfirdn2d.canvas_upsampling():
            return op(x, aux, 'ref')
    return canvas


def bench(device: torch.device, dtype: torch.dtype, batch: int, repeats: int, impls: List[str]) -> List[dict]:
    """Times every case for each implementation; returns one dict per case."""
    rows = []
    for name, make, raw_op in _cases(batch):
        x, aux = make(device, dtype)
        row = dict(name=name, dtype=str(dtype).replace('torch.', ''))
        for impl in impls:
            op = _with_impl(raw_op, impl)
            row[f'{impl}_fwd'] = time_ms(lambda: op(x, aux), device, repeats)
            xg = x.clone().requires_grad_(True)
            ag = aux.clone().requires_grad_(True) if name.startswith('bias_act') else aux
            dy = torch.randn_like(op(x, aux))

            def fwd_bwd():
                y = op(xg, ag)
                y.backward(dy)

            row[f'{impl}_fwdbwd'] = time_ms(fwd_bwd, device, repeats)
        rows.append(row)
    return rows


def print_table(rows: List[dict], impls: List[str]) -> None:
    cols = ['case', 'dtype']
    for phase in ('fwd', 'fwdbwd'):
        cols += [f'{impl} {phase} ms' for impl in impls]
        if len(impls) == 2:
            cols.append(f'{phase} speed-up')
    lines = [cols]
    for r in rows:
        line = [r['name'], r['dtype']]
        for phase in ('fwd', 'fwdbwd'):
            line += [f'{r[f"{impl}_{phase}"]:.3f}' for impl in impls]
            if len(impls) == 2:
                line.append(f'{r[f"{impls[0]}_{phase}"] / r[f"{impls[1]}_{phase}"]:.2f}x')
        lines.append(line)
    widths = [max(len(str(l[i])) for l in lines) for i in range(len(cols))]
    for i, l in enumerate(lines):
        print('  '.join(str(v).ljust(w) for v, w in zip(l, widths)))
        if i == 0:
            print('  '.join('-' * w for w in widths))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default=None, help="'cuda' or 'cpu' (default: cuda when available)")
    parser.add_argument('--batch', type=int, default=None, help='batch size (default: 32 on GPU, 2 on CPU)')
    parser.add_argument('--repeats', type=int, default=None, help='timed calls per case (default: 30 on GPU, 3 on CPU)')
    parser.add_argument('--canvas', action='store_true',
                        help='time the reference against its canvas upsampling instead of the kernels')
    parser.add_argument('--dtypes', default=None, help="comma-separated, e.g. 'float32,float16' (default: both on GPU, float32 on CPU)")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    on_gpu = device.type == 'cuda'
    batch = args.batch or (32 if on_gpu else 2)
    repeats = args.repeats or (30 if on_gpu else 3)
    dtypes = [getattr(torch, d) for d in (args.dtypes or ('float32,float16' if on_gpu else 'float32')).split(',')]

    impls = ['ref']
    if args.canvas:
        impls = ['canvas', 'ref']
    elif not on_gpu:
        print('CUDA is unavailable on this machine: timing the reference implementation only.')
    elif bias_act_cuda.available() and upfirdn2d_cuda.available():
        impls.append('cuda')
    else:
        print('The CUDA extensions did not build (see the warning above): timing the reference only.')
    print(f'device={device} ({torch.cuda.get_device_name(device) if on_gpu else "cpu"}), batch={batch}, '
          f'repeats={repeats}, torch {torch.__version__}')
    rows = []
    for dtype in dtypes:
        rows += bench(device, dtype, batch, repeats, impls)
    print_table(rows, impls)


if __name__ == '__main__':
    main()
