"""The training loop: builds what the config tree names and runs the phases.

One step takes `batch_size` consecutive images of the data stream, split into micro-batches
("slots") of `batch_gpu`; slot m is run by rank m % num_gpus. Each phase (G main, G reg,
D main, D reg, or the combined ones) runs every slot, averages the gradients over all slots
and ranks, and steps its optimizer. Before each slot of each phase the global RNG is
reseeded from (random_seed, step, phase, slot), so latents, noise, augmentations and APA
mixing depend only on those counters: a run gives the same result on any number of
processes (up to reduction order) and after a resume (exactly).

The loop knows no method by name: augment stages, real-batch transforms, extra heads and
adaptive controllers are built from the tree and used through their protocols.

Run directory outputs: log.txt, stats.jsonl, TensorBoard events, reals.png,
fakes_init.png, fakes<kimg>.png, network-snapshot-<kimg>.pkl, training-state-<kimg>.pt
(see training_state.py), metric-<name>.jsonl.
"""

import copy
import io
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import PIL.Image
import torch

import dnnlib
from torch_utils import misc, netfile, training_stats
from training import training_state
from training.dataset import InfiniteSampler

try:
    import psutil
except ImportError:  # Memory is then read from resource.getrusage.
    psutil = None


class NonFiniteError(FloatingPointError):
    """A loss, gradient or weight became NaN or infinite during training."""


# ---------------------------------------------------------------------------------------
# Small pieces with their own tests.

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


def step_seed(random_seed: int, step: int, phase_idx: int, slot: int) -> int:
    """The RNG seed of one slot of one phase of one step (independent of ranks and resume)."""
    seq = np.random.SeedSequence([int(random_seed) % (1 << 32), int(step), int(phase_idx), int(slot)])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


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
    `head_trainables`).

    Returns:
        List of Phase.
    """
    phases: List[Phase] = []
    # Optimizer settings: the trainable part's `opt_kwargs`, else its head's, else D's.
    head_modules = [(name, part, getattr(part, 'opt_kwargs', None) or getattr(h, 'opt_kwargs', None))
                    for i, h in enumerate(heads) for name, part in head_trainables(h, i)]
    for prefix, net, opt_kwargs, interval in [('G', G, G_opt_kwargs, G_reg_interval),
                                              ('D', D, D_opt_kwargs, D_reg_interval)]:
        extra, extra_opts, extra_names = [], [], []
        if prefix == 'D':
            for name, head, head_opt_kwargs in head_modules:
                head_kwargs = dict(head_opt_kwargs or opt_kwargs)
                if 'betas' in head_kwargs:  # JSON may give [0, 0.99]; Adam wants two floats.
                    head_kwargs['betas'] = [float(b) for b in head_kwargs['betas']]
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


def head_trainables(head: Any, index: int) -> List[Tuple[str, torch.nn.Module]]:
    """The parts of an extra head that its optimizers train, as (name, module) pairs.

    A head may name them with `trainable_modules() -> {key: module}` (each gets its own
    optimizer, named 'head_<head name>.<key>' in the training state); that keeps frozen parts
    (a momentum encoder, a pretrained backbone) out of the optimizer and out of the
    requires_grad switching of the phases. Otherwise a head that is a module is trained as a
    whole. Parts without parameters are left out.
    """
    name = getattr(head, 'name', f'head{index}')
    if hasattr(head, 'trainable_modules'):
        parts = [(f'{name}.{key}', module) for key, module in head.trainable_modules().items()]
    elif isinstance(head, torch.nn.Module):
        parts = [(name, head)]
    else:
        parts = []
    return [(n, m) for n, m in parts if any(True for _ in m.parameters())]


def head_network_modules(head: Any, name: str) -> Dict[str, torch.nn.Module]:
    """The modules a head adds to network pickles: `head.network_modules()` when it defines
    it (e.g. InsGen's D_ema and contrastive heads), else the head itself if it is a module."""
    if hasattr(head, 'network_modules'):
        return dict(head.network_modules())
    return {name: head} if isinstance(head, torch.nn.Module) else {}


def resolve_module_path(path: str, roots: Dict[str, Any]) -> Any:
    """Finds a module by a dotted path such as 'real_transform' or 'augment.ada'.

    The first part names a root ('real_transform', 'augment', 'G', 'D', a head name); the
    rest is a submodule path inside it (an augment stage names its children 'ada',
    'diffaug', ...).
    """
    head, _, rest = path.partition('.')
    if roots.get(head) is None:
        available = sorted(k for k, v in roots.items() if v is not None)
        raise ValueError(f'controllers: module path {path!r} names {head!r}, which this run does not '
                         f'have (available: {", ".join(available)})')
    obj = roots[head]
    if rest:
        try:
            obj = obj.get_submodule(rest) if isinstance(obj, torch.nn.Module) else getattr(obj, rest)
        except AttributeError:
            raise ValueError(f'controllers: module path {path!r}: {type(obj).__name__} has no {rest!r}') from None
    return obj


def p_modules(roots: Dict[str, Optional[torch.nn.Module]]) -> List[Tuple[str, torch.nn.Module]]:
    """Every (label, module) with a tensor `p` among the roots' submodules (augment p values)."""
    found, seen = [], set()
    for root_name, root in roots.items():
        if not isinstance(root, torch.nn.Module):
            continue
        for sub_name, sub in root.named_modules():
            if id(sub) in seen or not isinstance(getattr(sub, 'p', None), torch.Tensor):
                continue
            seen.add(id(sub))
            label = getattr(sub, 'name', None) or (f'{root_name}.{sub_name}' if sub_name else root_name)
            found.append((str(label), sub))
    return found


# ---------------------------------------------------------------------------------------
# Run files.

class _Tee:
    """Writes everything printed to the console and to log.txt."""

    def __init__(self, stream, file):
        self.stream = stream
        self.file = file

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.file.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.file.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def save_image_grid(images: torch.Tensor, path: str, grid_size: Tuple[int, int]) -> None:
    """Saves [N, C, H, W] images in [-1, 1] as a PNG grid of grid_size = (columns, rows)."""
    gw, gh = grid_size
    img = images.detach().float().cpu().numpy()
    img = np.rint((img + 1) * 127.5).clip(0, 255).astype(np.uint8)
    n, c, h, w = img.shape
    if n != gw * gh:
        raise ValueError(f'save_image_grid: {n} images do not fill a {gw}x{gh} grid')
    img = img.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)
    pil = PIL.Image.fromarray(img[:, :, 0], 'L') if c == 1 else PIL.Image.fromarray(img, 'RGB')
    buf = io.BytesIO()
    pil.save(buf, format='png')
    with dnnlib.atomic_write(path, 'wb') as f:
        f.write(buf.getvalue())


def _grid_setup(training_set, random_seed: int, max_side: int = 16) -> Tuple[Tuple[int, int], np.ndarray, np.ndarray]:
    """Picks the sample-grid images: a fixed random selection, grouped by label if any.

    About 1280x720 pixels, 4 to `max_side` images per side.
    """
    res = training_set.resolution
    gw = int(np.clip(1280 // res, 4, max_side))
    gh = int(np.clip(720 // res, 4, max_side))
    count = gw * gh
    rnd = np.random.RandomState(random_seed)
    order = rnd.permutation(len(training_set))
    indices = np.resize(order, count)
    if training_set.has_labels:
        labels = [tuple(training_set.get_label(int(i)).tolist()) for i in indices]
        indices = indices[sorted(range(count), key=lambda k: labels[k])]
    items = [training_set[int(i)] for i in indices]
    images = np.stack([x[0] for x in items])
    labels = np.stack([x[1] for x in items])
    return (gw, gh), images, labels


class _Outputs:
    """log.txt, stats.jsonl and TensorBoard of rank 0 (everything is a no-op elsewhere)."""

    def __init__(self, run_dir: str, enabled: bool):
        self.run_dir = run_dir
        self.enabled = enabled
        self._log = None
        self._stdout = self._stderr = None
        self._stats = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        self._log = open(os.path.join(run_dir, 'log.txt'), 'a', encoding='utf-8')
        self._stdout, self._stderr = sys.stdout, sys.stderr
        sys.stdout = _Tee(sys.stdout, self._log)
        sys.stderr = _Tee(sys.stderr, self._log)
        self._stats = open(os.path.join(run_dir, 'stats.jsonl'), 'a', encoding='utf-8')
        try:
            import torch.utils.tensorboard as tensorboard  # pylint: disable=import-outside-toplevel
            self._tb = tensorboard.SummaryWriter(run_dir)
        except ImportError:
            print('Skipping TensorBoard events: the tensorboard package is not installed.')

    def write_stats(self, stats: Dict[str, Any], timestamp: float, global_step: int) -> None:
        if not self.enabled:
            return
        row = {name: {'num': v.num, 'mean': v.mean, 'std': v.std} for name, v in stats.items()}
        row['timestamp'] = timestamp
        self._stats.write(json.dumps(row) + '\n')
        self._stats.flush()
        if self._tb is not None:
            for name, v in stats.items():
                self._tb.add_scalar(name, v.mean, global_step=global_step, walltime=timestamp)
            self._tb.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.close()
        self._stats.close()
        if isinstance(sys.stdout, _Tee) and sys.stdout.file is self._log:
            sys.stdout = self._stdout
        if isinstance(sys.stderr, _Tee) and sys.stderr.file is self._log:
            sys.stderr = self._stderr
        self._log.close()
        self.enabled = False


# ---------------------------------------------------------------------------------------
# Distributed helpers.

def _world(num_gpus: int) -> bool:
    """True when gradients and statistics must be reduced over ranks."""
    if num_gpus <= 1:
        return False
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError(f'training_loop: num_gpus={num_gpus}, but torch.distributed is not initialised; '
                           f'launch through train.py --gpus or torchrun.')
    if torch.distributed.get_world_size() != num_gpus:
        raise RuntimeError(f'training_loop: num_gpus={num_gpus}, but the process group has '
                           f'{torch.distributed.get_world_size()} ranks.')
    return True


# ---------------------------------------------------------------------------------------
# The loop.

def _non_finite(what: str, phase: str, step: int, cur_nimg: int) -> NonFiniteError:
    return NonFiniteError(f'Non-finite value in phase {phase} at step {step} (kimg {cur_nimg / 1000:.3f}): '
                          f'{what}. Training stopped instead of continuing on garbage; lower the learning '
                          f'rate or gamma, or resume from an earlier snapshot.')


def _check_params_finite(named_modules: Dict[str, Optional[torch.nn.Module]], step: int, cur_nimg: int) -> None:
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


def _step_phase(phase: Phase, phase_idx: int, loss, rounds: List[Tuple[torch.Tensor, torch.Tensor]],
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
        torch.manual_seed(step_seed(random_seed, batch_idx, phase_idx, slot))
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
        if hasattr(loss, 'end_phase'):
            loss.end_phase(phase.name, num_slots)
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
    if hasattr(loss, 'end_phase'):
        loss.end_phase(phase.name, num_slots)


def training_loop(
    run_dir: str = '.',                       # Output directory.
    random_seed: int = 0,                     # Seed of everything random.
    num_gpus: int = 1,                        # Number of processes.
    rank: int = 0,                            # This process (0 .. num_gpus - 1).
    batch_size: int = 4,                      # Images per step over all processes.
    batch_gpu: int = 4,                       # Images per micro-batch.
    training_set_kwargs: Optional[Dict[str, Any]] = None,
    metric_set_kwargs: Optional[Dict[str, Any]] = None,   # None: the training set without max_size.
    data_loader_kwargs: Optional[Dict[str, Any]] = None,
    G_kwargs: Optional[Dict[str, Any]] = None,
    D_kwargs: Optional[Dict[str, Any]] = None,
    G_opt_kwargs: Optional[Dict[str, Any]] = None,
    D_opt_kwargs: Optional[Dict[str, Any]] = None,
    loss_kwargs: Optional[Dict[str, Any]] = None,
    augment_kwargs: Optional[Dict[str, Any]] = None,      # Augment stage, or None.
    real_transform_kwargs: Optional[Dict[str, Any]] = None,  # Real-batch transform (APA), or None.
    controllers: Sequence[Dict[str, Any]] = (),          # Adaptive controllers with module paths.
    heads_kwargs: Sequence[Dict[str, Any]] = (),         # Extra discriminator heads.
    ema_kimg: float = 10,                     # G_ema half-life.
    ema_rampup: Optional[float] = 0.05,       # G_ema ramp-up ratio, None = none.
    G_reg_interval: Optional[int] = 4,        # Path-length regularisation interval, None = every step.
    D_reg_interval: Optional[int] = 16,       # R1 interval, None = every step.
    total_kimg: float = 25000,                # Length of training.
    kimg_per_tick: float = 4,                 # Progress interval.
    image_snapshot_ticks: Optional[int] = 50,  # Sample grids every this many ticks, None = never.
    network_snapshot_ticks: Optional[int] = 50,  # Network pickle + state every this many ticks.
    metrics: Sequence[str] = (),              # Metrics at each network snapshot.
    metric_detector: Any = None,              # Replacement detector(s) for the metrics (see metrics.detectors).
    resume_pkl: Optional[str] = None,         # Network pickle to start from (weights and p).
    resume_kimg: float = 0,                   # Image count to assume with resume_pkl.
    resume_state: Optional[str] = None,       # Training state (file or run dir) to continue exactly.
    cudnn_benchmark: bool = True,
    allow_tf32: bool = False,
    device: str = 'cpu',                      # 'cpu' or 'cuda'.
    fp32: bool = False,                       # Recorded; the network kwargs carry the precision.
    nhwc: bool = False,                       # Recorded; the network kwargs carry the layout.
    local_rank: Optional[int] = None,         # CUDA device index; default LOCAL_RANK or rank.
    state_keep: Optional[int] = 2,            # Training-state files to keep, None = all.
) -> Dict[str, Any]:
    """Trains a GAN as the config tree describes (one call per process).

    The keywords are the config tree of train.py (see the comments above). With
    num_gpus > 1, torch.distributed must be initialised and `rank` set; with one process no
    process group is needed. Extra heads are built as
    `construct_class_by_name(**head_kwargs, device=..., G=G, D=D, training_set=...)`; a head
    that is a module with parameters trains in D's main phase with its own optimizer
    (`head.opt_kwargs`, default D's), and may define `end_step(cur_nimg)` (every rank calls
    it once per step, after the EMA update; collectives are allowed),
    `state_dict()`/`load_state_dict()` (kept in the training state) and the loss terms of
    training.loss. A head that is not a plain module, or has frozen parts, may define
    `trainable_modules()` (what its optimizers train), `network_modules()` (what goes into
    network pickles) and `resume_from_network(data, log)` (called with the loaded pickle
    after G, D and G_ema took their weights).

    Returns:
        Summary dict: cur_nimg, cur_tick, batch_idx, last snapshot paths.
    """
    # The config as given (fp32 and nhwc are recorded only: the presets put precision and
    # layout into G_kwargs / D_kwargs).
    config = {k: v for k, v in locals().items() if k != 'rank'}
    start_time = time.time()
    if training_set_kwargs is None or G_kwargs is None or D_kwargs is None:
        raise ValueError('training_loop needs training_set_kwargs, G_kwargs and D_kwargs')
    if G_opt_kwargs is None or D_opt_kwargs is None:
        raise ValueError('training_loop needs G_opt_kwargs and D_opt_kwargs')
    if batch_gpu < 1 or batch_size % (batch_gpu * num_gpus) != 0:
        raise ValueError(f'batch_size ({batch_size}) must be a multiple of batch_gpu ({batch_gpu}) x '
                         f'num_gpus ({num_gpus})')
    if resume_pkl is not None and resume_state is not None:
        raise ValueError('Give either resume_pkl (weights) or resume_state (exact continuation), not both')
    distributed = _world(num_gpus)
    num_slots = batch_size // batch_gpu
    my_slots = list(range(rank, num_slots, num_gpus))

    # Device and backend flags.
    if device == 'cuda':
        index = local_rank if local_rank is not None else int(os.environ.get('LOCAL_RANK', rank))
        dev = torch.device('cuda', index % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    training_stats.init_multiprocessing(rank=rank, sync_device=dev if distributed else None)

    outputs = _Outputs(run_dir, enabled=(rank == 0))
    try:
        return _train(config, rank=rank, dev=dev, distributed=distributed, num_slots=num_slots,
                      my_slots=my_slots, outputs=outputs, start_time=start_time)
    finally:
        outputs.close()


def _train(c: Dict[str, Any], *, rank: int, dev: torch.device, distributed: bool, num_slots: int,
           my_slots: List[int], outputs: _Outputs, start_time: float) -> Dict[str, Any]:
    c = dnnlib.EasyDict(c)
    num_gpus, batch_gpu, batch_size = c.num_gpus, c.batch_gpu, c.batch_size
    rounds_per_step = num_slots // num_gpus
    log = print if rank == 0 else (lambda *_a, **_k: None)

    # Resume state first: it decides the image count, and with it the data position.
    state = None
    cur_nimg, cur_tick, batch_idx = 0, 0, 0
    if c.resume_state is not None:
        state = training_state.load_training_state(c.resume_state)
        cur_nimg = int(state['progress']['cur_nimg'])
        cur_tick = int(state['progress']['cur_tick'])
        batch_idx = int(state['progress']['batch_idx'])
        log(f'Resuming exactly from {state["path"]} (kimg {cur_nimg / 1000:.3f}, tick {cur_tick}).')
        old = state.get('config', {})
        for key in ('batch_size', 'batch_gpu', 'random_seed'):
            if key in old and old[key] != c[key]:
                log(f'Warning: {key} changed from {old[key]} to {c[key]}; the continuation is not exact.')
    elif c.resume_pkl is not None:
        cur_nimg = int(round(c.resume_kimg * 1000))

    # Data: slot m of a step is the m-th chunk of batch_gpu images of the stream.
    training_set = dnnlib.construct_class_by_name(**c.training_set_kwargs)
    sampler = InfiniteSampler(training_set, rank=rank, num_replicas=num_gpus, seed=c.random_seed,
                              start_index=cur_nimg, chunk_size=batch_gpu)
    loader_kwargs = dict(c.data_loader_kwargs or {})
    if not loader_kwargs.get('num_workers'):
        loader_kwargs.pop('prefetch_factor', None)
    if dev.type != 'cuda':
        loader_kwargs['pin_memory'] = False
    data_iter = iter(torch.utils.data.DataLoader(training_set, sampler=sampler, batch_size=batch_gpu,
                                                 **loader_kwargs))
    log(f'Dataset {training_set.name}: {len(training_set)} images, shape {training_set.image_shape}, '
        f'label_dim {training_set.label_dim}.')

    # Networks: the same seed on every rank gives the same initial weights.
    torch.manual_seed(c.random_seed)
    common = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                  img_channels=training_set.num_channels)
    G = dnnlib.construct_class_by_name(**c.G_kwargs, **common).train().requires_grad_(False).to(dev)
    D = dnnlib.construct_class_by_name(**c.D_kwargs, **common).train().requires_grad_(False).to(dev)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = None
    if c.augment_kwargs is not None:
        augment_pipe = dnnlib.construct_class_by_name(**c.augment_kwargs).train().requires_grad_(False).to(dev)
    real_transform = None
    if c.real_transform_kwargs is not None:
        real_transform = dnnlib.construct_class_by_name(**c.real_transform_kwargs)
        if isinstance(real_transform, torch.nn.Module):
            real_transform = real_transform.train().requires_grad_(False).to(dev)
    heads = []
    for kwargs in c.heads_kwargs or []:
        head = dnnlib.construct_class_by_name(**kwargs, device=dev, G=G, D=D, training_set=training_set)
        heads.append(head.to(dev) if isinstance(head, torch.nn.Module) else head)
    head_map = {getattr(h, 'name', f'head{i}'): h for i, h in enumerate(heads)}

    # Resume from a network pickle: weights and augmentation p; kimg from resume_kimg.
    if c.resume_pkl is not None:
        log(f'Resuming weights from {c.resume_pkl}.')
        data = netfile.load_network_pickle(c.resume_pkl)
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
            if data.get(name) is not None:
                misc.copy_params_and_buffers(data[name], module, require_all=False)
        _copy_p_values(data.get('augment_pipe'), augment_pipe, log)
        _copy_p_values(data.get('real_transform'), real_transform, log)
        # Heads take their parts from the pickle, or start from the resumed D where it has
        # none (a pickle trained without the head).
        for head in heads:
            if hasattr(head, 'resume_from_network'):
                head.resume_from_network(data, log)

    loss = dnnlib.construct_class_by_name(device=dev, G=G, D=D, augment_pipe=augment_pipe,
                                          real_transform=real_transform, heads=heads, **(c.loss_kwargs or {}))
    phases = build_phases(G, D, c.G_opt_kwargs, c.D_opt_kwargs, c.G_reg_interval, c.D_reg_interval, heads)
    opts_by_name = {}
    for phase in phases:
        for name, opt in zip(phase.opt_names, phase.opts):
            opts_by_name[name] = opt

    # Adaptive controllers: built by name, pointed at modules by path.
    roots = dict(G=G, D=D, real_transform=real_transform, augment=augment_pipe, augment_pipe=augment_pipe,
                 **head_map)
    ctrls = []
    for kwargs in c.controllers or []:
        kwargs = dict(kwargs)
        paths = kwargs.pop('modules', [])
        ctrl = dnnlib.construct_class_by_name(**kwargs)
        ctrls.append((ctrl, [resolve_module_path(p, roots) for p in paths]))

    # Exact resume: everything else.
    if state is not None:
        mods = state['modules']
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe),
                             ('real_transform', real_transform)]:
            if isinstance(module, torch.nn.Module):
                if mods.get(name) is None:
                    raise training_state.TrainingStateError(f'{state["path"]} has no {name}, which this run has.')
                module.load_state_dict(mods[name])
        for name, head in head_map.items():
            if hasattr(head, 'load_state_dict') and name in mods.get('heads', {}):
                head.load_state_dict(mods['heads'][name])
        for name, opt in opts_by_name.items():
            if name not in state['optimizers']:
                raise training_state.TrainingStateError(f'{state["path"]} has no optimizer {name!r}.')
            opt.load_state_dict(state['optimizers'][name])
        stored_ctrls = state.get('controllers', [])
        if len(stored_ctrls) != len(ctrls):
            raise training_state.TrainingStateError(
                f'{state["path"]} holds {len(stored_ctrls)} adaptive controllers, this run has {len(ctrls)}.')
        for (ctrl, _mods), ctrl_state in zip(ctrls, stored_ctrls):
            ctrl.load_state_dict(ctrl_state)
        loss.load_state_dict(state['loss'], slots=my_slots, batch_gpu=batch_gpu)
        training_state.restore_rng_state(state['rng'])

    # Statistics and run files.
    stats_collector = training_stats.Collector(regex='.*')
    named_nets = dict(G=G, D=D, G_ema=G_ema)
    for name, head in head_map.items():
        for key, module in head_network_modules(head, name).items():
            named_nets.setdefault(key, module)
    grid_size = grid_z = grid_c = None
    if rank == 0:
        # On a CPU a grid costs G_ema passes that matter at demo scale: at most 8x8 there.
        grid_size, grid_images, grid_labels = _grid_setup(training_set, c.random_seed,
                                                          max_side=16 if dev.type == 'cuda' else 8)
        save_image_grid(torch.from_numpy(grid_images).float() / 127.5 - 1, os.path.join(c.run_dir, 'reals.png'),
                        grid_size)
        gen = torch.Generator().manual_seed(c.random_seed)
        grid_z = torch.randn([grid_images.shape[0], G.z_dim], generator=gen)
        grid_c = torch.from_numpy(grid_labels).float()
        save_image_grid(_generate_grid(G_ema, grid_z, grid_c, batch_gpu, dev),
                        os.path.join(c.run_dir, 'fakes_init.png'), grid_size)

    def label_sampler(n: int) -> torch.Tensor:
        # Labels of random training images (draws from the reseeded global RNG).
        idx = torch.randint(len(training_set), [n]).tolist()
        return torch.from_numpy(np.stack([training_set.get_label(i) for i in idx])).float()

    total_nimg = int(round(c.total_kimg * 1000))
    tick_nimg = max(int(round(c.kimg_per_tick * 1000)), 1)
    log(f'Training for {c.total_kimg} kimg ({batch_size} images per step, {num_slots} micro-batches of '
        f'{batch_gpu} on {num_gpus} process(es), device {dev}).')
    tick_start_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    snapshot_pkl = state_path = None
    snapshot_tags, grid_tags = set(), set()  # Snapshot names used by this run (see _take_tag).
    done = cur_nimg >= total_nimg
    if done:
        log(f'Nothing to do: kimg {cur_nimg / 1000:.3f} already reaches total_kimg {c.total_kimg}.')

    while not done:
        # This rank's micro-batches of the step. Copies to the device are non-blocking: a
        # blocking one waits for every kernel already queued (the previous step's updates).
        rounds = []
        for _ in range(rounds_per_step):
            img, lab = next(data_iter)
            rounds.append((img.to(dev, non_blocking=True).to(torch.float32) / 127.5 - 1,
                           lab.to(dev, non_blocking=True).float()))

        for phase_idx, phase in enumerate(phases):
            if batch_idx % phase.interval != 0:
                continue
            _step_phase(phase, phase_idx, loss, rounds, rank=rank, num_gpus=num_gpus, num_slots=num_slots,
                        random_seed=c.random_seed, batch_idx=batch_idx, cur_nimg=cur_nimg, batch_gpu=batch_gpu,
                        z_dim=G.z_dim, label_sampler=label_sampler, device=dev, distributed=distributed)

        # G_ema follows G with a half-life of ema_kimg; buffers are copied.
        update_ema(G_ema, G, ema_beta(cur_nimg, batch_size, c.ema_kimg, c.ema_rampup))

        cur_nimg += batch_size
        batch_idx += 1
        for ctrl, mods in ctrls:
            ctrl.step(batch_size, mods)
        for head in heads:
            if hasattr(head, 'end_step'):
                head.end_step(cur_nimg)

        done = cur_nimg >= total_nimg
        if not done and cur_nimg < tick_start_nimg + tick_nimg:
            continue

        # Tick: progress line, statistics, snapshots.
        tick_end_time = time.time()
        cur_tick += 1
        _check_params_finite(named_nets, batch_idx, cur_nimg)
        p_values = [(label, float(m.p)) for label, m in p_modules(dict(augment=augment_pipe,
                                                                       real_transform=real_transform))]
        for label, value in p_values:
            training_stats.report0(f'Augment/{label}/p', value)
        cpu_mem = (psutil.Process(os.getpid()).memory_info().rss if psutil is not None else _maxrss()) / 2 ** 30
        gpu_mem = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == 'cuda' else 0.0
        sec_per_tick = tick_end_time - tick_start_time
        sec_per_kimg = sec_per_tick / max(cur_nimg - tick_start_nimg, 1) * 1000
        fields = [
            f"tick {training_stats.report0('Progress/tick', cur_tick):<5d}",
            f"kimg {training_stats.report0('Progress/kimg', cur_nimg / 1000):<8.3f}",
            f"time {dnnlib.format_time(training_stats.report0('Timing/total_sec', tick_end_time - start_time)):<12s}",
            f"sec/tick {training_stats.report0('Timing/sec_per_tick', sec_per_tick):<7.1f}",
            f"sec/kimg {training_stats.report0('Timing/sec_per_kimg', sec_per_kimg):<7.2f}",
            f"maintenance {training_stats.report0('Timing/maintenance_sec', maintenance_time):<6.1f}",
            f"cpumem {training_stats.report0('Resources/cpu_mem_gb', cpu_mem):<6.2f}",
            f"gpumem {training_stats.report0('Resources/peak_gpu_mem_gb', gpu_mem):<6.2f}",
        ] + [f'{label}_p {value:.4f}' for label, value in p_values]
        log('  '.join(fields).rstrip())
        if dev.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(dev)

        # Sample grid with the fixed latents.
        if rank == 0 and c.image_snapshot_ticks is not None and (done or cur_tick % c.image_snapshot_ticks == 0):
            save_image_grid(_generate_grid(G_ema, grid_z, grid_c, batch_gpu, dev),
                            os.path.join(c.run_dir, f'fakes{_take_tag(grid_tags, cur_nimg)}.png'), grid_size)

        # Network snapshot and training state (state last: a crash in between leaves the
        # previous state as the newest complete one).
        snapshot_now = c.network_snapshot_ticks is not None and (done or cur_tick % c.network_snapshot_ticks == 0)
        if snapshot_now:
            # Every update is rank-invariant by construction; verify it where it is cheap.
            if distributed:
                for module in [G, D, G_ema, augment_pipe, real_transform]:
                    if isinstance(module, torch.nn.Module):
                        misc.check_ddp_consistency(module)
            tag = _take_tag(snapshot_tags, cur_nimg)  # Unique in this run: nothing is overwritten.
            snapshot_pkl = os.path.join(c.run_dir, f'network-snapshot-{tag}.pkl')
            if rank == 0:
                data = dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe,
                            real_transform=real_transform if isinstance(real_transform, torch.nn.Module) else None,
                            training_set_kwargs=dict(c.training_set_kwargs))
                for name, head in head_map.items():
                    for key, module in head_network_modules(head, name).items():
                        data.setdefault(key, module)
                netfile.save_network_pickle(snapshot_pkl, _cpu_copies(data))
            state_dict = _collect_state(c, G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe,
                                        real_transform=real_transform, head_map=head_map,
                                        opts_by_name=opts_by_name, ctrls=ctrls, loss=loss, num_slots=num_slots,
                                        cur_nimg=cur_nimg, cur_tick=cur_tick, batch_idx=batch_idx)
            if rank == 0:
                state_path = training_state.save_training_state(c.run_dir, state_dict, cur_nimg, keep=c.state_keep,
                                                                tag=tag)

            # Metrics of G_ema at this snapshot (all ranks take part).
            if c.metrics:
                _run_metrics(c, G_ema, snapshot_pkl, rank, dev)

        # Statistics of the tick.
        stats_collector.update()
        timestamp = time.time()
        outputs.write_stats(stats_collector.as_dict(), timestamp, global_step=int(cur_nimg / 1e3))
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_time = tick_start_time - tick_end_time

    log('Exiting...')
    return dict(cur_nimg=cur_nimg, cur_tick=cur_tick, batch_idx=batch_idx, snapshot_pkl=snapshot_pkl,
                state_path=state_path)


def _maxrss() -> float:
    import resource  # pylint: disable=import-outside-toplevel
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


@torch.no_grad()
def _generate_grid(G_ema: torch.nn.Module, grid_z: torch.Tensor, grid_c: torch.Tensor, batch_gpu: int,
                   dev: torch.device) -> torch.Tensor:
    """G_ema images of the fixed grid latents (constant noise, so grids are comparable)."""
    images = [G_ema(z.to(dev), c.to(dev), noise_mode='const').cpu()
              for z, c in zip(grid_z.split(batch_gpu), grid_c.split(batch_gpu))]
    return torch.cat(images)


def _take_tag(taken: set, cur_nimg: int) -> str:
    """The <kimg> of a snapshot name, unique among `taken` (which it joins)."""
    tag = training_state.snapshot_tag(cur_nimg, taken)
    taken.add(tag)
    return tag


def _cpu_copies(data: Dict[str, Any]) -> Dict[str, Any]:
    """Snapshot copies of the modules (CPU, eval mode, no grad); other values as they are."""
    out = {}
    for key, value in data.items():
        if isinstance(value, torch.nn.Module):
            value = copy.deepcopy(value).eval().requires_grad_(False).cpu()
        out[key] = value
    return out


def _copy_p_values(src: Optional[torch.nn.Module], dst: Optional[torch.nn.Module], log) -> None:
    """Copies augmentation state (p values) from a network pickle's module into ours.

    The module's own `copy_state_from` decides when it has one (an augment stage matches
    children by name, or takes a bare legacy pipe's p); the same class copies every tensor
    by name; otherwise each of our submodules with a `p` takes the p of the source
    submodule of the same class.
    """
    if src is None or not isinstance(dst, torch.nn.Module) or not isinstance(src, torch.nn.Module):
        return
    if hasattr(dst, 'copy_state_from'):
        dst.copy_state_from(src)
    elif type(src) is type(dst):
        misc.copy_params_and_buffers(src, dst, require_all=False)
    else:
        sources = {type(m): m for m in src.modules() if isinstance(getattr(m, 'p', None), torch.Tensor)}
        for _name, sub in dst.named_modules():
            match = sources.get(type(sub))
            if match is not None and isinstance(getattr(sub, 'p', None), torch.Tensor):
                misc.copy_params_and_buffers(match, sub, require_all=False)
    for label, module in p_modules({'resumed': dst}):
        log(f'Resumed {label} p = {float(module.p):.4f}.')


def _collect_state(c, *, G, D, G_ema, augment_pipe, real_transform, head_map, opts_by_name, ctrls, loss,
                   num_slots, cur_nimg, cur_tick, batch_idx) -> Dict[str, Any]:
    """Everything exact continuation needs (collective: the loss gathers every rank's slots)."""
    def cpu_state(module):
        if not isinstance(module, torch.nn.Module):
            return None
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def cpu_tree(value):
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().clone()
        if isinstance(value, dict):
            return {k: cpu_tree(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(cpu_tree(v) for v in value)
        return value

    config = {k: v for k, v in c.items()}
    return {
        'config': json.loads(json.dumps(config, default=str)),
        'progress': {'cur_nimg': int(cur_nimg), 'cur_tick': int(cur_tick), 'batch_idx': int(batch_idx)},
        'modules': {
            'G': cpu_state(G), 'D': cpu_state(D), 'G_ema': cpu_state(G_ema),
            'augment_pipe': cpu_state(augment_pipe), 'real_transform': cpu_state(real_transform),
            'heads': {name: cpu_tree(h.state_dict()) for name, h in head_map.items() if hasattr(h, 'state_dict')},
        },
        'optimizers': {name: cpu_tree(opt.state_dict()) for name, opt in opts_by_name.items()},
        'controllers': [cpu_tree(ctrl.state_dict()) for ctrl, _mods in ctrls],
        'loss': loss.state_dict(num_slots=num_slots),
        'rng': training_state.capture_rng_state(),
    }


def _run_metrics(c, G_ema: torch.nn.Module, snapshot_pkl: str, rank: int, dev: torch.device) -> None:
    """Computes each configured metric of G_ema and appends it to metric-<name>.jsonl."""
    from metrics import metric_main  # pylint: disable=import-outside-toplevel
    dataset_kwargs = c.metric_set_kwargs
    if dataset_kwargs is None:
        dataset_kwargs = dict(c.training_set_kwargs, max_size=None)
    for metric in c.metrics:
        result = metric_main.calc_metric(metric=metric, G=G_ema, dataset_kwargs=dataset_kwargs,
                                         num_gpus=c.num_gpus, rank=rank, device=dev,
                                         detector=c.get('metric_detector'))
        if rank == 0:
            metric_main.report_metric(result, run_dir=c.run_dir, snapshot_pkl=snapshot_pkl)
        for name, value in result['results'].items():
            training_stats.report0(f'Metrics/{name}', value)
