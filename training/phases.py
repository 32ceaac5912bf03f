"""The phases of a training step: what each trains, its optimizers, and running one.

One step takes `batch_size` consecutive images of the data stream, split into micro-batches
("slots") of `batch_gpu`; slot m is run by rank m % num_gpus. Each phase (G main, G reg,
D main, D reg, or the combined ones) runs every slot, averages the gradients over all slots
and ranks, and steps its optimizer. Before each slot of each phase the global RNG is
reseeded from (random_seed, step, phase, slot), so latents, noise, augmentations and APA
mixing depend only on those counters: a run gives the same result on any number of
processes (up to reduction order) and after a resume (exactly).
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import dnnlib
from torch_utils import misc
from training import plugins


class NonFiniteError(FloatingPointError):
    """A loss, gradient or weight became NaN or infinite during training."""


def ema_beta(cur_nimg: int, batch_size: int, ema_kimg: float, ema_rampup: Optional[float]) -> float:
    """Per-step decay of G_ema: a half-life of `ema_kimg` thousand images.

    With ramp-up the half-life is at most `ema_rampup * cur_nimg`, so early on G_ema
    follows G closely (beta = 0.5 ** (batch / min(ema_kimg * 1000, cur_nimg * rampup))).

    Args:
        cur_nimg: Images shown so far (before this step).
        batch_size: Images per step.
        ema_kimg: Half-life in thousands of images.
        ema_rampup: Ramp-up ratio, or None for none.

    Returns:
        The beta for p_ema <- p + beta * (p_ema - p).
    """
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


def step_seed(random_seed: int, step: int, phase_idx: int, slot: int) -> int:
    """The RNG seed of one slot of one phase of one step (independent of ranks and resume)."""
    seq = np.random.SeedSequence([int(random_seed) % (1 << 32), int(step), int(phase_idx), int(slot)])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seed_device_rng(seed: int, device: torch.device) -> None:
    """Seeds the generators a step draws from: the CPU's and, on CUDA, this process's device.

    What `torch.manual_seed` does for them, without seeding every other backend: on a
    machine without CUDA, `torch.manual_seed` queues a lazy CUDA (and XPU, MTIA) seeding call
    that records a Python stack trace each time, about 2 ms per call, which is several
    percent of a small network's step when it runs once per phase and slot.
    """
    torch.random.default_generator.manual_seed(seed)
    if device.type == 'cuda':
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def lazy_regularization_opt_kwargs(opt_kwargs: Dict[str, Any], reg_interval: int) -> Dict[str, Any]:
    """Optimizer settings for a network whose regulariser runs every `reg_interval` steps.

    The main and regularisation steps share one optimizer; scaling lr and betas by
    mb_ratio = interval / (interval + 1) keeps the effective step size and momentum
    horizon what they would be without the extra steps (StyleGAN2 paper, appendix B).
    """
    mb_ratio = reg_interval / (reg_interval + 1)
    out = dict(opt_kwargs)
    if 'lr' in out:
        out['lr'] = out['lr'] * mb_ratio
    if 'betas' in out:
        out['betas'] = [beta ** mb_ratio for beta in out['betas']]
    return out


class Phase:
    """One phase of a step: a loss phase name, the modules it trains, their optimizers."""

    def __init__(self, name: str, modules: List[Tuple[str, torch.nn.Module]], opts: List[torch.optim.Optimizer],
                 interval: int, opt_names: List[str]):
        self.name = name
        self.modules = modules        # (name, module) pairs whose parameters get gradients
        self.opts = opts
        self.opt_names = opt_names    # keys of the optimizers in the training state
        self.interval = interval

    def __repr__(self) -> str:
        return f'Phase({self.name}, interval={self.interval})'


def build_phases(G: torch.nn.Module, D: torch.nn.Module, G_opt_kwargs: Dict[str, Any],
                 D_opt_kwargs: Dict[str, Any], G_reg_interval: Optional[int],
                 D_reg_interval: Optional[int], heads: Sequence[Any] = ()) -> List[Phase]:
    """The phases of a step, G's before D's.

    Without a regularisation interval a network has one 'both' phase; with one, a 'main'
    phase every step and a 'reg' phase every `interval` steps sharing one optimizer with
    rescaled lr and betas. Heads with parameters train in D's main phases with their own
    optimizer (`head.opt_kwargs`, default D's settings), one per trainable part (see
    `plugins.trainable_modules`). `heads` holds parts or (name, part) pairs.

    Returns:
        List of Phase.
    """
    phases: List[Phase] = []
    G_opt_kwargs, D_opt_kwargs = _float_betas(G_opt_kwargs), _float_betas(D_opt_kwargs)
    # Optimizer settings: the trainable part's `opt_kwargs`, else its head's, else D's.
    head_modules = [(name, part, getattr(part, 'opt_kwargs', None) or getattr(h, 'opt_kwargs', None))
                    for head_name, h in _named(heads) for name, part in plugins.trainable_modules(h, head_name)]
    for prefix, net, opt_kwargs, interval in [('G', G, G_opt_kwargs, G_reg_interval),
                                              ('D', D, D_opt_kwargs, D_reg_interval)]:
        extra, extra_opts, extra_names = [], [], []
        if prefix == 'D':
            for name, head, head_opt_kwargs in head_modules:
                head_kwargs = _float_betas(head_opt_kwargs or opt_kwargs)
                extra.append((name, head))
                extra_opts.append(dnnlib.construct_class_by_name(params=head.parameters(), **head_kwargs))
                extra_names.append(f'head_{name}')
        if interval is None:
            opt = dnnlib.construct_class_by_name(params=net.parameters(), **opt_kwargs)
            phases.append(Phase(f'{prefix}both', [(prefix, net)] + extra, [opt] + extra_opts, 1,
                                [prefix] + extra_names))
        else:
            opt = dnnlib.construct_class_by_name(params=net.parameters(),
                                                 **lazy_regularization_opt_kwargs(opt_kwargs, interval))
            phases.append(Phase(f'{prefix}main', [(prefix, net)] + extra, [opt] + extra_opts, 1,
                                [prefix] + extra_names))
            phases.append(Phase(f'{prefix}reg', [(prefix, net)], [opt], int(interval), [prefix]))
    return phases


def _float_betas(opt_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of `opt_kwargs` with float betas: JSON gives [0, 0.99], and Adam refuses an int
    beta beside a float one."""
    out = dict(opt_kwargs)
    if 'betas' in out:
        out['betas'] = [float(b) for b in out['betas']]
    return out


def _named(heads: Sequence[Any]) -> List[Tuple[str, Any]]:
    out = []
    for i, h in enumerate(heads):
        if isinstance(h, tuple) and len(h) == 2 and isinstance(h[0], str):
            out.append(h)
        else:
            out.append((getattr(h, 'name', None) or f'head{i}', h))
    return out


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """p_ema <- p.lerp(p_ema, beta) for every parameter (the established formula, bit for bit),
    buffers copied; multi-tensor (foreach) ops, a few kernel launches instead of two per tensor."""
    params_ema, params = list(G_ema.parameters()), list(G.parameters())
    if params:
        torch._foreach_copy_(params_ema, torch._foreach_lerp(params, params_ema, beta))
    buffers_ema, buffers = list(G_ema.buffers()), list(G.buffers())
    if buffers:
        torch._foreach_copy_(buffers_ema, buffers)


def _non_finite(what: str, phase: str, step: int, cur_nimg: int) -> NonFiniteError:
    return NonFiniteError(f'Non-finite value in phase {phase} at step {step} (kimg {cur_nimg / 1000:.3f}): '
                          f'{what}. Training stopped instead of continuing on garbage; lower the learning '
                          f'rate or gamma, or resume from an earlier snapshot.')


def check_params_finite(named_modules: Dict[str, Optional[torch.nn.Module]], step: int, cur_nimg: int) -> None:
    """Raises NonFiniteError naming the first parameter or buffer that is not finite."""
    for mod_name, module in named_modules.items():
        if not isinstance(module, torch.nn.Module):
            continue
        tensors = [(n, t) for n, t in misc.named_params_and_buffers(module) if t.is_floating_point()]
        if not tensors:
            continue
        ok = torch.stack([torch.isfinite(t).all() for _, t in tensors]).cpu()
        if not bool(ok.all()):
            name = tensors[int((~ok).nonzero()[0])][0]
            raise _non_finite(f'weight {mod_name}.{name}', 'tick check', step, cur_nimg)


def step_phase(phase: Phase, phase_idx: int, loss, rounds: List[Tuple[torch.Tensor, torch.Tensor]],
                *, rank: int, num_gpus: int, num_slots: int, random_seed: int, batch_idx: int,
                cur_nimg: int, batch_gpu: int, z_dim: int, label_sampler, device: torch.device,
                distributed: bool) -> None:
    """Runs one phase on every slot of this rank, reduces the gradients, steps the optimizers."""
    for _name, module in phase.modules:
        module.requires_grad_(True)
    for opt in phase.opts:
        opt.zero_grad(set_to_none=True)

    term_flags: Dict[str, torch.Tensor] = {}
    for round_idx, (real_img, real_c) in enumerate(rounds):
        slot = round_idx * num_gpus + rank
        seed_device_rng(step_seed(random_seed, batch_idx, phase_idx, slot), device)
        gen_z = torch.randn([batch_gpu, z_dim], device=device)
        gen_c = label_sampler(batch_gpu).to(device, non_blocking=True)  # Blocking would sync per slot.
        terms = loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z,
                                          gen_c=gen_c, gain=phase.interval, cur_nimg=cur_nimg, slot=slot)
        for key, value in terms.items():
            bad = (~torch.isfinite(value)).float().sum()
            term_flags[key] = term_flags[key] + bad if key in term_flags else bad
    for _name, module in phase.modules:
        module.requires_grad_(False)

    # Mean over all slots: sum over rounds and ranks, divided by the slot count, so the
    # update does not depend on how the batch is split. Loss-term flags travel in the same
    # reduction, so every rank sees (and reports) the same failure.
    params = [(f'{mname}.{pname}', p) for mname, module in phase.modules
              for pname, p in module.named_parameters() if p.grad is not None]
    keys = sorted(term_flags)
    if not distributed:
        # One process: nothing to reduce, so no flatten and copy back; dividing each gradient
        # in place gives the same bits as dividing the flat copy.
        grad_list = [p.grad for _, p in params]
        if num_slots != 1 and grad_list:
            torch._foreach_div_(grad_list, float(num_slots))
        finite = [torch.isfinite(g).all() for g in grad_list]
        flags = torch.stack([term_flags[k] for k in keys]) if keys else torch.zeros([0], device=device)
        verdict = torch.cat([flags, torch.stack(finite).float() if finite else torch.zeros([0], device=device)]).cpu()
        if verdict[:len(keys)].sum() > 0:
            bad = [k for k, v in zip(keys, verdict[:len(keys)].tolist()) if v > 0]
            raise _non_finite(f'loss term {", ".join(bad)}', phase.name, batch_idx, cur_nimg)
        for (name, _), ok in zip(params, verdict[len(keys):].tolist()):
            if not ok:
                raise _non_finite(f'gradient of {name}', phase.name, batch_idx, cur_nimg)
        if params:
            for opt in phase.opts:
                opt.step()
        _end_phase(loss, phase.name, num_slots)
        return
    flags = torch.stack([term_flags[k] for k in keys]) if keys else torch.zeros([0], device=device)
    flat = torch.cat([p.grad.flatten() for _, p in params] + [flags.to(device)])
    if distributed:
        torch.distributed.all_reduce(flat)
    grads, flags = flat[:flat.numel() - len(keys)], flat[flat.numel() - len(keys):]
    grads = grads / num_slots
    verdict = torch.cat([flags, (~torch.isfinite(grads).all()).float().view(1)]).cpu()
    if verdict[:-1].sum() > 0:
        bad = [k for k, v in zip(keys, verdict[:-1].tolist()) if v > 0]
        raise _non_finite(f'loss term {", ".join(bad)}', phase.name, batch_idx, cur_nimg)
    if verdict[-1] > 0:
        offset = 0
        for name, p in params:
            if not torch.isfinite(grads[offset:offset + p.numel()]).all():
                raise _non_finite(f'gradient of {name}', phase.name, batch_idx, cur_nimg)
            offset += p.numel()
    offset = 0
    for _, p in params:
        p.grad.copy_(grads[offset:offset + p.numel()].view_as(p))
        offset += p.numel()
    if params:
        for opt in phase.opts:
            opt.step()
    _end_phase(loss, phase.name, num_slots)


def _end_phase(loss, phase_name: str, num_slots: int) -> None:
    end_phase = getattr(loss, 'end_phase', None)   # StyleGAN2Loss moves its running means here.
    if end_phase is not None:
        end_phase(phase_name, num_slots)
