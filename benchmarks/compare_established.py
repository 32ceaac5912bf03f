"""Side-by-side numerics of our StyleGAN2 training step and NVIDIA's stylegan2-ada-pytorch.

    python benchmarks/compare_established.py --established path/to/stylegan2-ada-pytorch
    python benchmarks/compare_established.py --established path/to/stylegan2-ada-pytorch --json out.json

Our networks and loss are meant to reproduce the established ones exactly when a phase runs
as one micro-batch, although ours moves w_avg and the path-length mean in `end_phase` rather
than inside every loss call (so that a step does not depend on how its batch is split over
processes). This checks that on the CPU with tiny fp32 networks (16x16, batch 4): both sides
get the same weights, inputs and RNG seed before every loss call; results are compared per tensor.

Checks, each for style_mixing_prob 0.9 and 0: the gradients of one Gmain, Greg, Dmain and Dreg
phase; w_avg and the path-length mean after a Gmain, Greg, Dmain, Dreg sequence; all parameters,
w_avg and the path-length mean after 4 full steps with Adam (ours through
training.training_loop.build_phases/_step_phase, theirs through their loss with their training
loop's optimizer settings and step written out here); the torch RNG state after every phase, so
that both sides draw random numbers in the same order. Then, with style mixing, one Greg phase
accumulated over 2 micro-batches (slots), whose gradients are expected to differ: ours takes each
slot's penalty against the phase-start running mean; theirs chains the slots. The running means
after that phase must still match.

Prints a table and exits with status 1 if any check other than the documented 2-slot one is
not bit-identical. The established code is only imported at run time from --established.

Our modulated convolution takes its demodulation coefficients from one small matmul, and the
reference upsampling of G's skip images is one strided transposed convolution (both equal up
to float rounding, much faster); the checks run with `training.networks.established_numerics`,
which sums both in the established order, so that everything else can be checked bit for bit.
`--fast-demod` runs them with our default numerics instead: then only float-tolerance
agreement is expected (gradients within ~1e-6 relative; Adam amplifies that in near-zero
gradients over 4 steps).
"""

import argparse
import contextlib
import importlib
import json
import os
import sys
import time
from types import SimpleNamespace

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('training', 'torch_utils', 'dnnlib')  # top-level names both projects use
CPU = torch.device('cpu')
G_KWARGS = dict(z_dim=32, w_dim=32, c_dim=0, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
                synthesis_kwargs=dict(channel_base=512, channel_max=32, num_fp16_res=0))
D_KWARGS = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=512, channel_max=32, num_fp16_res=0)
LOSS_KWARGS = dict(r1_gamma=1.0, pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.01)
BATCH, Z_DIM, G_REG, D_REG = 4, 32, 4, 16
SEQUENCE = [('Gmain', 1), ('Greg', G_REG), ('Dmain', 1), ('Dreg', D_REG)]  # (phase, gain)
PL_MEAN = 0.3  # a mid-training running mean: a penalty taken against the wrong mean shows
# Only a label: every check must be bit-identical to pass. Rounding (fp32 sums in another order)
# stays well below it; moving the Greg path-length mean by 1e-4 already gives 1.7e-4.
FLOAT_TOL = 1e-4
EXPECTED = ("expected difference: ours takes each slot's penalty against the phase-start running mean; "
            "theirs chains the slots")


def _pop_packages():
    return {k: sys.modules.pop(k) for k in list(sys.modules) if k.split('.')[0] in PACKAGES}


def load_sides(established):
    """Both implementations' modules, imported under the same package names but kept apart."""
    sys.path.insert(0, established)
    try:
        theirs = SimpleNamespace(net=importlib.import_module('training.networks'),
                                 loss=importlib.import_module('training.loss'),
                                 misc=importlib.import_module('torch_utils.misc'))
        # Their custom-gradient convolutions are for CUDA; the plain ops are what runs on the CPU.
        for name in ('conv2d_gradfix', 'grid_sample_gradfix'):
            importlib.import_module(f'torch_utils.ops.{name}').enabled = False
    finally:
        sys.path.remove(established)
    theirs.modules = _pop_packages()
    sys.path.insert(0, ROOT)
    ours = SimpleNamespace(net=importlib.import_module('training.networks'),
                           loss=importlib.import_module('training.loss'),
                           loop=importlib.import_module('training.training_loop'))
    for side, where in ((theirs, established), (ours, ROOT)):  # a mix-up would compare a side with itself
        if not os.path.realpath(side.net.__file__).startswith(os.path.realpath(where) + os.sep):
            raise RuntimeError(f'{side.net.__file__} was imported, expected a module under {where}')
    return ours, theirs


@contextlib.contextmanager
def their_packages(theirs):
    # Their persistence decorator inspects its own package when a network is constructed.
    ours_saved = _pop_packages()
    sys.modules.update(theirs.modules)
    try:
        yield
    finally:
        _pop_packages()
        sys.modules.update(ours_saved)


def build(ours, theirs, smp, pl_mean=0.0):
    """(ours, theirs) as SimpleNamespace(G, D, loss, is_ours) with the same weights."""
    torch.manual_seed(1234)
    with their_packages(theirs):
        tG = theirs.net.Generator(**G_KWARGS).train().requires_grad_(False)
        tD = theirs.net.Discriminator(**D_KWARGS).train().requires_grad_(False)
    with torch.no_grad():
        # Fresh biases and noise strengths are zero: nudge them so that their gradients are tested.
        for name, p in list(tG.named_parameters()) + list(tD.named_parameters()):
            if name.endswith(('bias', 'noise_strength')):
                p.add_(torch.randn_like(p) * 0.1)
    oG = ours.net.Generator(**G_KWARGS).train().requires_grad_(False)
    oD = ours.net.Discriminator(**D_KWARGS).train().requires_grad_(False)
    oG.load_state_dict(tG.state_dict())  # strict: the two must have the same parameters and buffers
    oD.load_state_dict(tD.state_dict())
    o = SimpleNamespace(G=oG, D=oD, is_ours=True,
                        loss=ours.loss.StyleGAN2Loss(CPU, oG, oD, style_mixing_prob=smp, **LOSS_KWARGS))
    t = SimpleNamespace(G=tG, D=tD, is_ours=False,
                        loss=theirs.loss.StyleGAN2Loss(CPU, tG.mapping, tG.synthesis, tD, style_mixing_prob=smp,
                                                       **LOSS_KWARGS))
    for side in (o, t):
        side.loss.pl_mean.fill_(pl_mean)
    return o, t


def inputs(k):
    g = torch.Generator().manual_seed(1000 + k)
    return torch.randn([BATCH, 3, 16, 16], generator=g), torch.zeros([BATCH, 0]), torch.randn([BATCH, Z_DIM], generator=g)


def run_phase(side, phase, gain, seed, k, slots=1):
    """One phase as the training loops run it; returns ({name: grad}, RNG state after)."""
    net = side.G if phase.startswith('G') else side.D
    net.requires_grad_(True)  # both loops let only the phase's network collect gradients
    for p in net.parameters():
        p.grad = None
    for slot in range(slots):
        real_img, real_c, gen_z = inputs(k + slot)
        args = dict(phase=phase, real_img=real_img, real_c=real_c, gen_z=gen_z, gen_c=torch.zeros([BATCH, 0]), gain=gain)
        torch.manual_seed(seed + slot)
        if side.is_ours:
            side.loss.accumulate_gradients(**args, cur_nimg=0, slot=slot)
        else:
            side.loss.accumulate_gradients(**args, sync=(slot == slots - 1))
    rng = torch.get_rng_state()
    net.requires_grad_(False)
    if side.is_ours:
        side.loss.end_phase(phase, slots)
    return {n: None if p.grad is None else p.grad.clone() for n, p in net.named_parameters()}, rng


def compare(check, ours, theirs, expected_difference=False):
    """A table row for two {name: tensor or None} dicts; rel is per tensor, relative to theirs' max."""
    max_abs = max_rel = 0.0
    equal, presence_differs = 0, ours.keys() != theirs.keys()
    for name in theirs.keys() & ours.keys():
        o, t = ours[name], theirs[name]
        if o is None or t is None:
            equal += o is None and t is None
            presence_differs |= (o is None) != (t is None)
            continue
        d = (o.double() - t.double()).abs().max().item() if o.numel() else 0.0
        max_abs = max(max_abs, d)
        max_rel = max(max_rel, d / max(t.double().abs().max().item(), 1e-30) if d else 0.0)
        equal += int(o.dtype == t.dtype and torch.equal(o, t))
    total = len(theirs.keys() | ours.keys())
    verdict = ('different' if presence_differs else 'bit-identical' if equal == total else
               'within float tolerance' if max_rel < FLOAT_TOL else 'different')
    return dict(check=check, max_abs=max_abs, max_rel=max_rel, equal=equal, total=total, verdict=verdict,
                expected_difference=expected_difference)


def state(side, what):
    if what in ('G', 'D'):
        return {n: p.detach() for n, p in getattr(side, what).named_parameters()}
    return {what: side.G.mapping.w_avg.clone() if what == 'w_avg' else side.loss.pl_mean.clone()}


def their_optimizers(G, D, lr, g_reg, d_reg):
    """{'G': Adam, 'D': Adam} as their loop makes them: one per network, shared by its main and
    reg phases, with lr and betas scaled by r = interval / (interval + 1) (lazy
    regularisation, StyleGAN2 paper appendix B)."""
    return {key: torch.optim.Adam(net.parameters(), lr=lr * r, betas=(0.0 ** r, 0.99 ** r), eps=1e-8)
            for key, net, r in (('G', G, g_reg / (g_reg + 1)), ('D', D, d_reg / (d_reg + 1)))}


def four_steps(ours, theirs, smp, rngs):
    o, t = build(ours, theirs, smp)
    opt_kwargs = dict(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8)
    phases = ours.loop.build_phases(o.G, o.D, dict(opt_kwargs), dict(opt_kwargs), G_REG, D_REG)
    if [(p.name, p.interval) for p in phases] != SEQUENCE:
        raise RuntimeError(f'build_phases gave {phases}, expected {SEQUENCE}')
    t_opts = their_optimizers(t.G, t.D, 0.0025, G_REG, D_REG)
    # Every phase runs every step (not the interval schedule) so that the regularisers, with
    # their gains, take part in all 4 updates.
    for step in range(4):
        real_img, real_c, _ = inputs(200 + step)
        for phase_idx, phase in enumerate(phases):
            ours.loop._step_phase(phase, phase_idx, o.loss, [(real_img, real_c)], rank=0, num_gpus=1, num_slots=1,
                                  random_seed=0, batch_idx=step, cur_nimg=step * BATCH, batch_gpu=BATCH,
                                  z_dim=Z_DIM, label_sampler=lambda n: torch.zeros([n, 0]), device=CPU,
                                  distributed=False)
            rngs[0].append(torch.get_rng_state())
            net, opt = (t.G, t_opts['G']) if phase.name.startswith('G') else (t.D, t_opts['D'])
            opt.zero_grad(set_to_none=True)
            net.requires_grad_(True)
            # Their loop draws all latents of a step up front; feed them ours' per-phase draw instead.
            torch.manual_seed(ours.loop.step_seed(0, step, phase_idx, 0))
            gen_z = torch.randn([BATCH, Z_DIM])
            t.loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z,
                                        gen_c=torch.zeros([BATCH, 0]), sync=True, gain=phase.interval)
            rngs[1].append(torch.get_rng_state())
            net.requires_grad_(False)
            for p in net.parameters():
                if p.grad is not None:
                    theirs.misc.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
            opt.step()
    return [compare(f'{what} after 4 Adam steps', state(o, what), state(t, what)) for what in ('G', 'D', 'w_avg', 'pl_mean')]


def run_checks(ours, theirs):
    rows = []
    for smp in (0.9, 0.0):
        rngs = ([], [])  # (ours, theirs) RNG state after every phase
        tag = f' (smp {smp:g})'
        for i, (phase, gain) in enumerate(SEQUENCE):
            sides = build(ours, theirs, smp, pl_mean=PL_MEAN)
            (go, ro), (gt, rt) = [run_phase(s, phase, gain, seed=10 + i, k=i) for s in sides]
            rows.append(compare(f'{phase} grads, gain {gain}' + tag, go, gt))
            rngs[0].append(ro)
            rngs[1].append(rt)
        sides = build(ours, theirs, smp, pl_mean=PL_MEAN)
        for i, (phase, gain) in enumerate(SEQUENCE):
            for s, r in zip(sides, rngs):
                r.append(run_phase(s, phase, gain, seed=20 + i, k=10 + i)[1])
        rows += [compare(f'{what} after Gmain,Greg,Dmain,Dreg' + tag, state(sides[0], what), state(sides[1], what))
                 for what in ('w_avg', 'pl_mean')]
        rows += [dict(r, check=r['check'] + tag) for r in four_steps(ours, theirs, smp, rngs)]
        rows.append(compare('RNG state after every phase' + tag, dict(enumerate(rngs[0])), dict(enumerate(rngs[1]))))
    o, t = build(ours, theirs, 0.9, pl_mean=PL_MEAN)
    (go, _), (gt, _) = [run_phase(s, 'Greg', G_REG, seed=30, k=30, slots=2) for s in (o, t)]
    rows.append(compare('Greg grads, 2 slots (smp 0.9)', go, gt, expected_difference=True))
    rows += [compare(f'{what} after 2-slot Greg (smp 0.9)', state(o, what), state(t, what)) for what in ('w_avg', 'pl_mean')]
    return rows


def print_table(rows):
    cells = [('check', 'max abs diff', 'max rel diff', 'tensors equal', 'verdict')]
    for r in rows:
        verdict = r['verdict']
        if r['expected_difference']:
            verdict += f'; {EXPECTED}' if verdict != 'bit-identical' else '; the documented difference did not appear'
        cells.append((r['check'], f"{r['max_abs']:.3e}", f"{r['max_rel']:.3e}", f"{r['equal']}/{r['total']}", verdict))
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    for n, c in enumerate(cells):
        print(' | '.join([c[0].ljust(widths[0])] + [x.rjust(w) for x, w in zip(c[1:4], widths[1:])] + [c[4]]))
        if n == 0:
            print('-+-'.join('-' * w for w in widths + [len('verdict')]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--established', required=True, metavar='DIR', help='a checkout of stylegan2-ada-pytorch')
    parser.add_argument('--json', metavar='PATH', help='also write the rows as JSON')
    parser.add_argument('--fast-demod', action='store_true',
                        help='use our default (matmul) demodulation coefficients: float tolerance, not bits')
    args = parser.parse_args()
    established = os.path.abspath(args.established)
    missing = [f for f in ('training/networks.py', 'training/loss.py') if not os.path.isfile(os.path.join(established, f))]
    if missing:
        parser.error(f'--established {args.established}: no {" or ".join(missing)}; expected a stylegan2-ada-pytorch checkout')

    torch.set_num_threads(1)  # tiny networks: more threads only compete with whatever else runs
    start = time.perf_counter()
    ours, theirs = load_sides(established)
    if args.fast_demod:
        rows = run_checks(ours, theirs)
    else:
        with ours.net.established_numerics():
            rows = run_checks(ours, theirs)
    seconds = time.perf_counter() - start
    print_table(rows)
    failed = [r['check'] for r in rows if not r['expected_difference'] and r['verdict'] != 'bit-identical']
    print(f'\n{len(rows) - len(failed)}/{len(rows)} checks as expected in {seconds:.1f} s (torch {torch.__version__}, CPU)')
    if failed:
        print('not bit-identical: ' + ', '.join(failed))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(established=established, torch=torch.__version__, seconds=seconds, passed=not failed,
                           rows=rows), f, indent=1)
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
