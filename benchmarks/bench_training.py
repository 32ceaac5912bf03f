"""Training speed and memory per preset, resolution, batch and method combination.

    python benchmarks/bench_training.py --cfg cpu --res 32 --batch 16          # all methods
    python benchmarks/bench_training.py --cfg paper256 --res 256 --batch 32 --methods noaug,apa
    python benchmarks/bench_training.py --cfg cpu --res 32 --batch 16 --ticks 4 --tick 0.128

Each case runs the real training loop (one process) on a synthetic dataset of random images
at the given resolution, for `--ticks` ticks of `--tick` kimg, and prints one row: seconds
per kimg (the mean of the loop's own `Timing/sec_per_kimg` over all ticks but the first,
which includes start-up) and peak memory (peak allocated GPU memory on CUDA; on the CPU the
largest resident size of the process the loop saw at a tick).
Snapshots are written only at the end, so they do not count.

Method combinations live in METHODS (name -> train.py method options as keyword
arguments of training.presets.build); new methods add an entry.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_utils import distributed  # noqa: E402
from training import presets  # noqa: E402
from training.dataset import DatasetWriter  # noqa: E402

DIFFAUG_POLICY = 'color,translation,cutout'
METHODS: Dict[str, Dict[str, Any]] = {
    'noaug': dict(aug='noaug'),
    'apa': dict(aug='apa'),
    'ada': dict(aug='ada'),
    'diffaug': dict(aug='noaug', diffaugment=DIFFAUG_POLICY),
    'apa+ada': dict(aug='apa', with_dataaug=True),
    'apa+ada+diffaug': dict(aug='apa', with_dataaug=True, diffaugment=DIFFAUG_POLICY),
    'insgen': dict(aug='noaug', insgen=True),
    'ada+insgen': dict(aug='ada', insgen=True),
    # Vision-aided heads, one backbone each (random weights: the cost is the same).
    **{f'cv-{name}': dict(aug='noaug', cv=name, cv_weights=[f'{name}=random'], cv_warmup=0)
       for name in ('vgg16', 'clip', 'dino', 'swin')},
    'full': dict(aug='apa', with_dataaug=True, diffaugment=DIFFAUG_POLICY, insgen=True, cv='clip',
                 cv_weights=['clip=random'], cv_warmup=0),
}


def make_dataset(path: str, resolution: int, channels: int, count: int = 64) -> str:
    """A dataset zip of `count` random images (content does not matter for timing)."""
    rng = np.random.RandomState(0)
    with DatasetWriter(path) as writer:
        for _ in range(count):
            writer.add(rng.randint(0, 256, size=[resolution, resolution, channels], dtype=np.uint8))
    return path


def run_case(data_path: str, args: argparse.Namespace, method: str, device: str, tmp: str) -> Dict[str, Any]:
    """Trains one case and returns its timing and memory figures."""
    from training import training_loop  # pylint: disable=import-outside-toplevel
    c, _desc = presets.build(
        data_path=data_path, data_name='bench', resolution=args.res, num_images=64, has_labels=False,
        cfg=args.cfg, gpus=1, batch=args.batch, batch_gpu=args.batch_gpu, kimg=args.tick * args.ticks,
        tick=args.tick, snap=10 ** 6, metrics=[], workers=args.workers, device=device, fp32=args.fp32,
        cbase=args.cbase, cmax=args.cmax, **METHODS[method])
    c.run_dir = tempfile.mkdtemp(prefix=f'{method}-', dir=tmp)
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        training_loop.training_loop(rank=0, **presets.to_plain(c))
    wall = time.time() - t0
    with open(os.path.join(c.run_dir, 'stats.jsonl')) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    speeds = [r['Timing/sec_per_kimg']['mean'] for r in rows if 'Timing/sec_per_kimg' in r]
    steady = speeds[1:] or speeds
    if device == 'cuda':
        peak_gb = torch.cuda.max_memory_allocated() / 2 ** 30
    else:
        # The loop's resident-memory reading at each tick (of the whole process).
        mems = [r['Resources/cpu_mem_gb']['mean'] for r in rows if 'Resources/cpu_mem_gb' in r]
        peak_gb = max(mems) if mems else float('nan')
    return dict(method=method, sec_per_kimg=float(np.mean(steady)) if steady else float('nan'),
                peak_gb=peak_gb, wall_sec=wall, ticks=len(speeds))


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cfg', default='cpu', choices=presets.CFG_NAMES, help='preset (default: cpu)')
    parser.add_argument('--res', type=int, default=32, help='resolution of the synthetic data (default: 32)')
    parser.add_argument('--channels', type=int, default=3, choices=[1, 3], help='image channels (default: 3)')
    parser.add_argument('--batch', type=int, default=None, help='total batch (default: preset)')
    parser.add_argument('--batch-gpu', type=int, default=None, help='micro-batch (default: batch)')
    parser.add_argument('--cbase', type=int, default=None, help='channel base (default: preset)')
    parser.add_argument('--cmax', type=int, default=None, help='maximum channels (default: preset)')
    parser.add_argument('--methods', default=','.join(METHODS), help=f'comma-separated from {", ".join(METHODS)}')
    parser.add_argument('--ticks', type=int, default=3, help='ticks per case (default: 3; the first is not timed)')
    parser.add_argument('--tick', type=float, default=0.064, help='kimg per tick (default: 0.064)')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    parser.add_argument('--fp32', action='store_true', help='disable mixed precision')
    parser.add_argument('--workers', type=int, default=0, help='DataLoader workers (default: 0)')
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(',') if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f'--methods: unknown {unknown[0]!r}; choose from {", ".join(METHODS)}')
    if args.ticks < 2:
        parser.error('--ticks: at least 2 (the first tick includes start-up and is not timed)')
    try:
        device = distributed.resolve_device_type(args.device)
    except distributed.DistributedError as e:
        parser.error(f'--device: {e}')
    name = torch.cuda.get_device_name() if device == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    print(f'cfg={args.cfg} res={args.res} batch={args.batch or "preset"} cbase={args.cbase or "preset"} '
          f'cmax={args.cmax or "preset"} device={name} torch={torch.__version__}')
    print(f'{"method":<18} {"sec/kimg":>10} {"peak GB":>9} {"wall s":>8}')
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(os.path.join(tmp, 'bench.zip'), args.res, args.channels)
        for method in methods:
            r = run_case(data, args, method, device, tmp)
            print(f'{r["method"]:<18} {r["sec_per_kimg"]:>10.2f} {r["peak_gb"]:>9.2f} {r["wall_sec"]:>8.1f}',
                  flush=True)


if __name__ == '__main__':
    main()
