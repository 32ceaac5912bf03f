"""Training speed of our phases against NVIDIA's stylegan2-ada-pytorch, side by side.

    python benchmarks/speed_vs_established.py --established path/to/stylegan2-ada-pytorch
    python benchmarks/speed_vs_established.py --established ... --steps 32 --threads 1 --json out.json

Each side runs in its own worker process (as each would in its own training run), on the
same machine, with the same config, the same weights and the same inputs: the config of the
training-speed comparison (32x32 one channel, G skip / D resnet, channel_base 4096,
channel_max 128, z and w 512, mapping 2, batch 32, minibatch-std group 4, R1 gamma 1 every
16 steps, path length weight 2 every 4 steps, style mixing 0.9, ADA bgc at p = 0, fp32). A step is what both training loops do per batch: G main, G reg
(every 4th step), D main, D reg (every 16th step), each phase being zero_grad, the loss's
forward and backward, and the Adam step. Ours runs through our loop's phase function (with
its gradient checks) in a process set up as our training loop sets up its own on the CPU
(`torch_utils.host_memory`; `--no-keep-host-memory` leaves it out), theirs as their loop
writes it (nan_to_num on every gradient, then Adam). The parent process tells the workers
which phase to run, alternating phase by phase (ours, theirs, theirs, ours, ...), so that a
busy spell of a shared machine hits both; one worker waits while the other runs.
`--one-process` runs both sides in the benchmark's own process instead.

Prints, per phase, the median seconds of each side and their ratio, and the mean step over
the lazy-regularisation schedule (G main + D main + G reg / 4 + D reg / 16) with the ratio
theirs / ours: the whole-training speed-up. The established code is imported at run time
from --established and only needs the CPU fallbacks it already has (its custom CUDA
kernels are never built on the CPU). With `--device cuda` both sides run on the GPU, each
with its custom kernels where they build (theirs fall back to their reference ops with a
warning where they do not); the timings then wait for the device.
"""

import argparse
import importlib
import json
import multiprocessing
import os
import statistics
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_established import CPU, _pop_packages, load_sides, their_optimizers, their_packages  # noqa: E402

RES, CHANNELS, BATCH, WDIM = 32, 1, 32, 512
G_KWARGS = dict(z_dim=WDIM, w_dim=WDIM, c_dim=0, img_resolution=RES, img_channels=CHANNELS,
                mapping_kwargs=dict(num_layers=2),
                synthesis_kwargs=dict(channel_base=4096, channel_max=128, num_fp16_res=0, conv_clamp=None))
D_KWARGS = dict(c_dim=0, img_resolution=RES, img_channels=CHANNELS, architecture='resnet', channel_base=4096,
                channel_max=128, num_fp16_res=0, conv_clamp=None, epilogue_kwargs=dict(mbstd_group_size=4))
LOSS_KWARGS = dict(r1_gamma=1.0, style_mixing_prob=0.9, pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.01)
BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1,
           lumaflip=1, hue=1, saturation=1)
G_REG, D_REG, LR = 4, 16, 0.0025
PHASES = (('Gmain', 1, 1), ('Greg', G_REG, G_REG), ('Dmain', 1, 1), ('Dreg', D_REG, D_REG))  # name, gain, interval


def build_sides(ours, theirs, established, device=CPU):
    """(ours, theirs) as SimpleNamespace(name, run(phase_idx, name, step, real_img), params)."""
    torch.manual_seed(0)
    with their_packages(theirs):
        tG = theirs.net.Generator(**G_KWARGS).train().requires_grad_(False)
        tD = theirs.net.Discriminator(**D_KWARGS).train().requires_grad_(False)
        sys.path.insert(0, established)
        try:
            their_augment = importlib.import_module('training.augment')
        finally:
            sys.path.remove(established)
        t_aug = their_augment.AugmentPipe(**BGC).train().requires_grad_(False)
    oG = ours.net.Generator(**G_KWARGS).train().requires_grad_(False)
    oD = ours.net.Discriminator(**D_KWARGS).train().requires_grad_(False)
    oG.load_state_dict(tG.state_dict())
    oD.load_state_dict(tD.state_dict())
    from training.augment.ada import AugmentPipe  # pylint: disable=import-outside-toplevel
    o_aug = AugmentPipe(**BGC).train().requires_grad_(False)
    for aug in (t_aug, o_aug):
        aug.p.zero_()
    for module in (tG, tD, t_aug, oG, oD, o_aug):
        module.to(device)
    opt_kwargs = dict(class_name='torch.optim.Adam', lr=LR, betas=[0, 0.99], eps=1e-8)
    o_phases = {p.name: p for p in ours.loop.build_phases(oG, oD, dict(opt_kwargs), dict(opt_kwargs), G_REG, D_REG)}
    o_loss = ours.loss.StyleGAN2Loss(device, oG, oD, augment_pipe=o_aug, **LOSS_KWARGS)
    t_loss = theirs.loss.StyleGAN2Loss(device, tG.mapping, tG.synthesis, tD, augment_pipe=t_aug, **LOSS_KWARGS)
    no_labels = torch.zeros([BATCH, 0], device=device)
    t_opts = their_optimizers(tG, tD, LR, G_REG, D_REG)

    def run_ours(phase_idx, name, step, real_img):
        ours.loop._step_phase(o_phases[name], phase_idx, o_loss, [(real_img, no_labels)], rank=0,
                              num_gpus=1, num_slots=1, random_seed=0, batch_idx=step, cur_nimg=step * BATCH,
                              batch_gpu=BATCH, z_dim=WDIM, label_sampler=lambda n: torch.zeros([n, 0]),
                              device=device, distributed=False)

    def run_theirs(phase_idx, name, step, real_img):
        # Their loop, one phase (training/training_loop.py): zero_grad, forward and backward,
        # nan_to_num of every gradient, Adam.
        net, opt = (tG, t_opts['G']) if name.startswith('G') else (tD, t_opts['D'])
        gain = dict((p[0], p[1]) for p in PHASES)[name]
        torch.manual_seed(step * 8 + phase_idx)
        gen_z = torch.randn([BATCH, WDIM], device=device)
        opt.zero_grad(set_to_none=True)
        net.requires_grad_(True)
        t_loss.accumulate_gradients(phase=name, real_img=real_img, real_c=no_labels, gen_z=gen_z,
                                    gen_c=no_labels, sync=True, gain=gain)
        net.requires_grad_(False)
        for p in net.parameters():
            if p.grad is not None:
                theirs.misc.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
        opt.step()

    return (SimpleNamespace(name='ours', run=run_ours, params=(_count(oG), _count(oD))),
            SimpleNamespace(name='theirs', run=run_theirs, params=(_count(tG), _count(tD))))


def _count(net):
    return sum(p.numel() for p in net.parameters())


def real_batch(step, device=CPU):
    g = torch.Generator().manual_seed(step)
    return (torch.rand([BATCH, CHANNELS, RES, RES], generator=g) * 2 - 1).to(device)


def measure(sides, steps, warmup):
    """{side: {phase: [seconds]}} over `steps` steps of the lazy-regularisation schedule.

    A side is SimpleNamespace(name, time(phase_idx, name, step) -> seconds).
    """
    times = {s.name: {p[0]: [] for p in PHASES} for s in sides}
    for step in range(steps + warmup):
        # Warm-up runs every phase once; then each phase runs on its schedule.
        for phase_idx, (name, _gain, interval) in enumerate(PHASES):
            if step >= warmup and (step - warmup) % interval != 0:
                continue
            order = sides if step % 2 == 0 else sides[::-1]
            for side in order:
                dt = side.time(phase_idx, name, step)
                if step >= warmup:
                    times[side.name][name].append(dt)
    return times


def _timed(run, device=CPU):
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

    def time_phase(phase_idx, name, step):
        real_img = real_batch(step, device)
        sync()
        t0 = time.perf_counter()
        run(phase_idx, name, step, real_img)
        sync()  # the phase's kernels, not just their launches
        return time.perf_counter() - t0
    return time_phase


def _worker(side_name, established, threads, keep_host_memory, device, conn):
    """One side in its own process: builds both sides (same weights), keeps its own, runs phases on request."""
    device = torch.device(device)
    if side_name == 'ours' and keep_host_memory and device.type == 'cpu':
        from torch_utils import host_memory  # pylint: disable=import-outside-toplevel
        host_memory.keep_freed_host_memory()
        _pop_packages()  # load_sides imports each side's packages afresh
    if threads:
        torch.set_num_threads(threads)
    ours, theirs = load_sides(established)
    sides = {s.name: s for s in build_sides(ours, theirs, established, device)}
    side = sides[side_name]
    del sides
    time_phase = _timed(side.run, device)
    conn.send(dict(params=side.params, threads=torch.get_num_threads()))
    while True:
        msg = conn.recv()
        if msg is None:
            break
        conn.send(time_phase(*msg))
    conn.close()


class _WorkerSide:
    def __init__(self, ctx, name, established, threads, keep_host_memory, device):
        self.name = name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(name, established, threads, keep_host_memory, device, child),
                                daemon=True)
        self.proc.start()
        child.close()
        info = self.conn.recv()
        self.params, self.threads = info['params'], info['threads']

    def time(self, phase_idx, name, step):
        self.conn.send((phase_idx, name, step))
        return self.conn.recv()

    def close(self):
        self.conn.send(None)
        self.proc.join(timeout=60)


def summarise(times):
    rows = {}
    for side, phases in times.items():
        med = {name: statistics.median(v) for name, v in phases.items() if v}
        mean_step = sum(med[name] / interval for name, _gain, interval in PHASES if name in med)
        rows[side] = dict(median=med, count={n: len(v) for n, v in phases.items()}, mean_step=mean_step)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--established', required=True, help='stylegan2-ada-pytorch checkout')
    parser.add_argument('--steps', type=int, default=32, help='timed steps (multiple of 16 for whole schedules)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps running every phase')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch\'s)')
    parser.add_argument('--json', default=None, help='also write the figures here')
    parser.add_argument('--one-process', action='store_true', help='run both sides in this process')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'],
                        help='cpu (default) or cuda (both sides build their CUDA kernels, or fall back to their '
                             'reference ops where that fails)')
    parser.add_argument('--no-keep-host-memory', dest='keep_host_memory', action='store_false',
                        help='run ours without keeping freed host memory (as TORCH_UTILS_KEEP_HOST_MEMORY=0)')
    args = parser.parse_args(argv)
    established = os.path.abspath(args.established)
    if args.one_process:
        if args.threads:
            torch.set_num_threads(args.threads)
        ours, theirs = load_sides(established)
        device = torch.device(args.device)
        sides = [SimpleNamespace(name=s.name, time=_timed(s.run, device), params=s.params)
                 for s in build_sides(ours, theirs, established, device)]
        threads = torch.get_num_threads()
        how = 'one process'
    else:
        ctx = multiprocessing.get_context('spawn')
        sides = [_WorkerSide(ctx, name, established, args.threads, args.keep_host_memory, args.device)
                 for name in ('ours', 'theirs')]
        threads = sides[0].threads
        how = 'one process per side' + ('' if args.keep_host_memory else ', ours without keep_freed_host_memory')
    print(f'params G/D: ours {sides[0].params}, theirs {sides[1].params}; device {args.device}; threads {threads}; '
          f'{how}')
    try:
        rows = summarise(measure(sides, args.steps, args.warmup))
    finally:
        for side in sides:
            if isinstance(side, _WorkerSide):
                side.close()
    o, t = rows['ours'], rows['theirs']
    print(f'{"phase":8s} {"n":>3s} {"ours s":>9s} {"theirs s":>9s} {"theirs/ours":>12s}')
    for name, _gain, _interval in PHASES:
        if name in o['median']:
            print(f'{name:8s} {o["count"][name]:3d} {o["median"][name]:9.3f} {t["median"][name]:9.3f} '
                  f'{t["median"][name] / o["median"][name]:12.2f}')
    print(f'{"step":8s} {"":3s} {o["mean_step"]:9.3f} {t["mean_step"]:9.3f} {t["mean_step"] / o["mean_step"]:12.2f}'
          f'   (mean over the schedule: Gmain + Dmain + Greg/{G_REG} + Dreg/{D_REG})')
    print(f'sec/kimg: ours {o["mean_step"] * 1000 / BATCH:.1f}, theirs {t["mean_step"] * 1000 / BATCH:.1f}')
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(dict(rows=rows, threads=threads, steps=args.steps, mode=how, device=args.device), f, indent=1)


if __name__ == '__main__':
    main()
