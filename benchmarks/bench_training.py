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
from training import presets, run_outputs  # noqa: E402
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
        cbase=args.cbase, cmax=args.cmax, pl_weight=args.pl_weight, style_mixing=args.style_mixing,
        **METHODS[method])
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


# ---------------------------------------------------------------------------------------
# Per-phase breakdown (--breakdown): the real loop, timed from outside.

# Named configurations of the breakdown. 'issue' is the side-by-side config of
# docs/performance.md (32x32 one channel, G skip / D resnet, cbase 4096, cmax 128, z and w 512,
# mapping 2, batch 32, path length and style mixing on, ADA bgc from p=0, fp32: G 2,283,275
# and D 1,346,049 parameters, as benchmarks/speed_vs_established.py and the established code);
# 'demo' is `train.py --data demo --cfg cpu` (16x16 grayscale, APA, batch 8); 'paper256' the
# preset of that name (256x256 RGB, ADA, float16 in the top resolutions) for GPU figures.
BREAKDOWN_CONFIGS: Dict[str, Dict[str, Any]] = {
    'issue': dict(cfg='cpu', res=32, channels=1, batch=32, cbase=4096, cmax=128, method=dict(aug='ada'),
                  set=[('G_kwargs.z_dim', '512'), ('G_kwargs.w_dim', '512'), ('loss_kwargs.pl_weight', '2'),
                       ('loss_kwargs.style_mixing_prob', '0.9'), ('G_reg_interval', '4')]),
    'demo': dict(cfg='cpu', res=16, channels=1, batch=8, cbase=None, cmax=None, method=dict(aug='apa')),
    # The paper256 preset at 256x256 RGB with ADA, mixed precision as the preset has it: for a GPU.
    'paper256': dict(cfg='paper256', res=256, channels=3, batch=64, cbase=None, cmax=None, method=dict(aug='ada'),
                     fp32=False),
}
PHASE_KEYS = ('Gmain', 'Greg', 'Dmain', 'Dreg', 'Gboth', 'Dboth')


class _Clock:
    """Wall-clock timestamps that wait for the device first (so GPU work is attributed)."""

    def __init__(self, device: str):
        self.cuda = device == 'cuda'

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


class PhaseTimer:
    """Hooks into the training loop from outside and records where each step's time goes.

    Wraps `training_loop._step_phase` (phase total), the loss's `accumulate_gradients`
    (forward + backward of the phase), the augment stage's forward (forward hooks), every
    optimizer's `step` (global optimizer hooks) and the loss's `end_phase`; the rest of a phase
    is gradient reduction (flatten, average, finite check, copy back). Per step, the time
    outside the phases is EMA + bookkeeping (data, controllers, heads, tick work); the EMA
    update alone is timed by `ema_seconds`.
    """

    def __init__(self, device: str, warmup: int, flop_steps: bool = True, profile_phase: str = None,
                 profile_rows: int = 30):
        self.clock = _Clock(device)
        self.warmup = warmup
        self.flop_steps = flop_steps
        self.profile_phase = profile_phase
        self.profile_rows = profile_rows
        self.profile_table = None
        self.steps: List[Dict[str, float]] = []   # one dict of seconds per step
        self.flops: Dict[str, float] = {}         # phase -> FLOPs of one call (whole batch)
        self._cur: Dict[str, float] = {}
        self._step_start = None
        self._aug_t0 = None
        self._in_acc = False
        self._phase_calls = 0
        self._handles = []
        self._restores = []                       # undo the patches of install()
        self.loss = None
        self.G = None

    # Bookkeeping of one step: a step starts with its first phase.
    def _begin_step(self, now: float) -> None:
        if self._step_start is not None:
            self._cur['step'] = now - self._step_start
            self.steps.append(self._cur)
        self._cur = {}
        self._step_start = now

    def finish(self) -> None:
        if self._step_start is not None and self._cur:
            self._cur['step'] = self.clock() - self._step_start
            self.steps.append(self._cur)
            self._step_start = None

    def _add(self, key: str, seconds: float) -> None:
        self._cur[key] = self._cur.get(key, 0.0) + seconds

    def _timed(self, fn, part: str):
        """`fn` with its time added to `part` of the phase running."""
        def timed(*args, **kwargs):
            t0 = self.clock()
            out = fn(*args, **kwargs)
            self._add(f'{self._current_phase}/{part}', self.clock() - t0)
            return out
        return timed

    def install(self, training_loop_module) -> None:
        timer = self
        original_step_phase = training_loop_module._step_phase
        self._restores.append(lambda: setattr(training_loop_module, '_step_phase', original_step_phase))

        def step_phase(phase, phase_idx, loss, rounds, **kwargs):
            if timer.loss is None:
                timer._wrap_loss(loss)
            t0 = timer.clock()
            # A step begins with the first phase it runs: the phase index goes back.
            if timer._last_idx is None or phase_idx <= timer._last_idx:
                timer._begin_step(t0)
            timer._last_idx = phase_idx
            timer._current_phase = phase.name
            original_step_phase(phase, phase_idx, loss, rounds, **kwargs)
            timer._add(f'{phase.name}/total', timer.clock() - t0)

        training_loop_module._step_phase = step_phase
        self._last_idx = None
        # The loss's backward passes (its one call site for them), as part of fwd+bwd.
        from training import loss as loss_module  # pylint: disable=import-outside-toplevel
        original_backward = loss_module._backward
        loss_module._backward = self._timed(original_backward, 'backward')
        self._restores.append(lambda: setattr(loss_module, '_backward', original_backward))
        # Optimizer steps, wherever they are called from.
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
        self._handles.append(register_optimizer_step_pre_hook(lambda opt, a, k: setattr(timer, '_opt_t0', timer.clock())))
        self._handles.append(register_optimizer_step_post_hook(
            lambda opt, a, k: timer._add(f'{timer._current_phase}/optimizer', timer.clock() - timer._opt_t0)))

    def uninstall(self) -> None:
        for restore in self._restores:
            restore()
        for h in self._handles:
            h.remove()

    def _wrap_loss(self, loss) -> None:
        timer = self
        self.loss = loss
        self.G = loss.G
        acc = loss.accumulate_gradients
        end_phase = getattr(loss, 'end_phase', None)

        def accumulate_gradients(phase, **kwargs):
            step = len(timer.steps)
            if (timer.profile_phase == phase and timer.profile_table is None and step >= timer.warmup):
                return timer._profiled(acc, phase, kwargs)
            if timer.flop_steps and phase not in timer.flops and step >= timer.warmup:
                return timer._counted(acc, phase, kwargs)
            t0 = timer.clock()
            timer._in_acc = True
            try:
                return acc(phase=phase, **kwargs)
            finally:
                timer._in_acc = False
                timer._add(f'{phase}/loss', timer.clock() - t0)

        loss.accumulate_gradients = accumulate_gradients
        if end_phase is not None:
            loss.end_phase = self._timed(end_phase, 'end_phase')
        loss.run_G = self._timed(loss.run_G, 'G fwd')
        self._handles.append(loss.D.register_forward_pre_hook(lambda m, a: setattr(timer, '_D_t0', timer.clock())))
        self._handles.append(loss.D.register_forward_hook(
            lambda m, a, o: timer._add(f'{timer._current_phase}/D fwd', timer.clock() - timer._D_t0)))
        pipe = loss.augment_pipe
        if isinstance(pipe, torch.nn.Module):
            self._handles.append(pipe.register_forward_pre_hook(lambda m, a: setattr(timer, '_aug_t0', timer.clock())))
            self._handles.append(pipe.register_forward_hook(
                lambda m, a, o: timer._add(f'{timer._current_phase}/augment', timer.clock() - timer._aug_t0)))

    def _counted(self, acc, phase, kwargs):
        """Runs one call under FlopCounterMode; the step it is in is not timed."""
        from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=import-outside-toplevel
        counter = FlopCounterMode(display=False)
        self._cur['untimed'] = 1.0
        try:
            with counter:
                out = acc(phase=phase, **kwargs)
        except RuntimeError as e:
            # The counter's module tracker cannot follow some second-order graphs (R1 through
            # autograd.grad on some torch versions); nothing was back-propagated yet, so the
            # phase is simply run again uncounted (this step is not timed anyway).
            self.flops[phase] = float('nan')
            print(f'FLOP count of {phase} failed ({str(e).splitlines()[0][:80]}...); not counted', file=sys.stderr)
            return acc(phase=phase, **kwargs)
        self.flops[phase] = float(counter.get_total_flops())
        return out

    def _profiled(self, acc, phase, kwargs):
        """Runs one call under torch.profiler and keeps its table; the step is not timed."""
        from torch import profiler  # pylint: disable=import-outside-toplevel
        activities = [profiler.ProfilerActivity.CPU]
        if self.clock.cuda:
            activities.append(profiler.ProfilerActivity.CUDA)
        with profiler.profile(activities=activities, record_shapes=True) as prof:
            out = acc(phase=phase, **kwargs)
            self.clock()
        sort = 'self_cuda_time_total' if self.clock.cuda else 'self_cpu_time_total'
        self.profile_table = prof.key_averages().table(sort_by=sort, row_limit=self.profile_rows)
        self._cur['untimed'] = 1.0
        return out


def ema_seconds(G: torch.nn.Module, repeats: int = 20, device: str = 'cpu') -> float:
    """Seconds of the loop's G_ema update (lerp of every parameter, copy of every buffer) on G."""
    import copy as copy_module  # pylint: disable=import-outside-toplevel
    from training import training_loop  # pylint: disable=import-outside-toplevel
    G_ema = copy_module.deepcopy(G).eval().requires_grad_(False)
    update = getattr(training_loop, 'update_ema', None)
    clock = _Clock(device)
    times = []
    for _ in range(repeats + 2):
        t0 = clock()
        with torch.no_grad():
            if update is not None:
                update(G_ema, G, 0.999)
            else:
                for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                    p_ema.copy_(p.lerp(p_ema, 0.999))
                for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                    b_ema.copy_(b)
        times.append(clock() - t0)
    return float(np.median(times[2:]))


def step_kind(step: Dict[str, float]) -> str:
    if any(k.startswith('Dreg/') for k in step):
        return 'R1'
    if any(k.startswith('Greg/') for k in step):
        return 'path length'
    return 'plain'


def run_breakdown(args: argparse.Namespace, device: str) -> Dict[str, Any]:
    """Trains `--steps` steps of a breakdown config and returns the per-phase figures."""
    from training import training_loop  # pylint: disable=import-outside-toplevel
    conf = dict(BREAKDOWN_CONFIGS[args.breakdown])
    batch = args.batch or conf['batch']
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(os.path.join(tmp, 'bench.zip'), conf['res'], conf['channels'])
        c, _desc = presets.build(
            data_path=data, data_name='bench', resolution=conf['res'], num_images=64, has_labels=False,
            cfg=conf['cfg'], gpus=1, batch=batch, batch_gpu=args.batch_gpu, kimg=batch * args.steps / 1000,
            tick=10 ** 6, snap=10 ** 6, metrics=[], workers=0, device=device, fp32=conf.get('fp32', True),
            cbase=conf['cbase'], cmax=conf['cmax'], **conf['method'])
        c.run_dir = os.path.join(tmp, 'run')
        c.image_snapshot_ticks = None
        c.network_snapshot_ticks = None
        for key, value in conf.get('set', []) + (args.set or []):
            _set_path(c, key, value)
        timer = PhaseTimer(device, warmup=args.warmup, flop_steps=not args.no_flops, profile_phase=args.profile,
                           profile_rows=args.profile_rows)
        timer.install(training_loop)
        t0 = time.time()
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                training_loop.training_loop(rank=0, **presets.to_plain(c))
        finally:
            timer.finish()
            timer.uninstall()
        wall = time.time() - t0
        G = timer.loss.G
        D = timer.loss.D
        ema = ema_seconds(G, device=device)
    steps = [s for s in timer.steps[args.warmup:] if 'untimed' not in s]
    return dict(steps=steps, flops=timer.flops, ema=ema, wall=wall, batch=batch, conf=args.breakdown,
                params=(sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters())),
                profile=timer.profile_table)


def _set_path(c, key: str, value: str) -> None:
    """--set a.b.c=value: sets a nested config entry (value parsed as JSON when it can be)."""
    try:
        value = json.loads(value)
    except ValueError:
        pass
    node = c
    parts = key.split('.')
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def print_breakdown(r: Dict[str, Any]) -> None:
    steps = r['steps']
    n = len(steps)
    print(f'config={r["conf"]} batch={r["batch"]} G params={r["params"][0]:,} D params={r["params"][1]:,} '
          f'timed steps={n} wall={r["wall"]:.1f}s peak RSS={run_outputs.maxrss() / 2 ** 30:.2f} GB')
    if not n:
        print('no timed steps: raise --steps or lower --warmup')
        return
    # Mean seconds per step of each phase component (averaged over all timed steps, so a lazy
    # phase counts with its frequency), and per call of the phase.
    keys = sorted({k for s in steps for k in s if '/' in k})
    print(f'{"phase":<8} {"part":<10} {"s/call":>8} {"calls":>6} {"s/step":>8}')
    for phase in PHASE_KEYS:
        pkeys = [k for k in keys if k.startswith(phase + '/')]
        if not pkeys:
            continue
        calls = sum(1 for s in steps if f'{phase}/total' in s)
        total = [s[f'{phase}/total'] for s in steps if f'{phase}/total' in s]
        parts = {}
        for k in pkeys:
            parts[k.split('/')[1]] = float(np.sum([s.get(k, 0.0) for s in steps]))
        parts['reduce'] = parts['total'] - sum(v for p, v in parts.items() if p in ('loss', 'optimizer', 'end_phase'))
        for part in ('total', 'loss', 'G fwd', 'augment', 'D fwd', 'backward', 'optimizer', 'end_phase', 'reduce'):
            if part in parts:
                label = {'loss': 'fwd+bwd', 'G fwd': ' G fwd', 'augment': ' aug fwd', 'D fwd': ' D fwd',
                         'backward': ' backward', 'reduce': 'grad red.'}.get(part, part)
                print(f'{phase:<8} {label:<10} {parts[part] / max(calls, 1):>8.4f} {calls:>6d} {parts[part] / n:>8.4f}')
        del total
    step_total = np.array([s['step'] for s in steps])
    in_phases = np.array([sum(v for k, v in s.items() if k.endswith('/total')) for s in steps])
    other = step_total - in_phases
    print(f'{"EMA":<19} {r["ema"]:>8.4f} {"":>6} {r["ema"]:>8.4f}')
    print(f'{"bookkeeping":<19} {"":>8} {"":>6} {max(float(other.mean()) - r["ema"], 0.0):>8.4f}   (outside the phases, less EMA)')
    print(f'{"step":<19} {"":>8} {"":>6} {step_total.mean():>8.4f}   sec/kimg {step_total.mean() / r["batch"] * 1000:.2f}')
    # Medians per step kind, as in the side-by-side comparison.
    kinds = {}
    for s in steps:
        kinds.setdefault(step_kind(s), []).append(s['step'])
    print('median s/step by kind: ' + ', '.join(f'{k} {np.median(v):.4f} (n={len(v)})' for k, v in sorted(kinds.items())))
    if r['flops']:
        # FLOPs per step: each phase's FLOPs weighted by how often it ran in the timed steps.
        per_step = 0.0
        for phase, flops in r['flops'].items():
            calls = sum(1 for s in steps if f'{phase}/total' in s)
            if np.isfinite(flops):
                per_step += flops * calls / n
        if not all(np.isfinite(list(r['flops'].values()))):
            print('(phases whose count failed are left out of the FLOPs per image)')
        print('FLOPs per call (torch FlopCounterMode): ' + ', '.join(f'{p} {f / 1e9:.2f} G' for p, f in r['flops'].items()))
        print(f'FLOPs per image {per_step / r["batch"] / 1e9:.3f} G; achieved {per_step / step_total.mean() / 1e9:.2f} GFLOP/s')
    if r['profile'] is not None:
        print(r['profile'])


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cfg', default='cpu', choices=presets.CFG_NAMES, help='preset (default: cpu)')
    parser.add_argument('--res', type=int, default=32, help='resolution of the synthetic data (default: 32)')
    parser.add_argument('--channels', type=int, default=3, choices=[1, 3], help='image channels (default: 3)')
    parser.add_argument('--batch', type=int, default=None, help='total batch (default: preset)')
    parser.add_argument('--batch-gpu', type=int, default=None, help='micro-batch (default: batch)')
    parser.add_argument('--cbase', type=int, default=None, help='channel base (default: preset)')
    parser.add_argument('--cmax', type=int, default=None, help='maximum channels (default: preset)')
    parser.add_argument('--pl-weight', type=float, default=None, help='path length weight (default: preset)')
    parser.add_argument('--style-mixing', type=float, default=None, help='style mixing probability (default: preset)')
    parser.add_argument('--methods', default=','.join(METHODS), help=f'comma-separated from {", ".join(METHODS)}')
    parser.add_argument('--ticks', type=int, default=3, help='ticks per case (default: 3; the first is not timed)')
    parser.add_argument('--tick', type=float, default=0.064, help='kimg per tick (default: 0.064)')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    parser.add_argument('--fp32', action='store_true', help='disable mixed precision')
    parser.add_argument('--workers', type=int, default=0, help='DataLoader workers (default: 0)')
    parser.add_argument('--breakdown', default=None, choices=sorted(BREAKDOWN_CONFIGS),
                        help='per-phase timing of one config instead of the method table')
    parser.add_argument('--steps', type=int, default=20, help='breakdown: training steps (default: 20)')
    parser.add_argument('--warmup', type=int, default=2, help='breakdown: untimed first steps (default: 2)')
    parser.add_argument('--profile', default=None, choices=PHASE_KEYS,
                        help='breakdown: print a torch.profiler table of one call of this phase')
    parser.add_argument('--profile-rows', type=int, default=30, help='breakdown: rows of the profile table')
    parser.add_argument('--no-flops', action='store_true', help='breakdown: skip the FLOP count')
    parser.add_argument('--set', type=lambda s: s.split('=', 1), action='append', metavar='PATH=VALUE',
                        help='breakdown: override a config entry, e.g. G_kwargs.synthesis_kwargs.num_fp16_res=0')
    args = parser.parse_args(argv)
    if args.breakdown:
        device = distributed.resolve_device_type(args.device)
        name = torch.cuda.get_device_name() if device == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
        print(f'device={name} torch={torch.__version__}')
        print_breakdown(run_breakdown(args, device))
        return
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
