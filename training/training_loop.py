"""The training loop: builds what the config tree names and runs the steps.

A step runs the phases of training/phases.py (G main, G reg, D main, D reg) over every
micro-batch, then the EMA update, the controllers and the parts' `end_step`. The loop knows
no method by name: the parts are built into one table (training/components.py) and used
through the contract of training/plugins.py; checkpoints are training/checkpoint.py, the
other run files training/run_outputs.py.

Run directory outputs: log.txt, stats.jsonl, TensorBoard events, reals.png,
fakes_init.png, fakes<kimg>.png, network-snapshot-<kimg>.pkl, training-state-<kimg>.pt
(see training_state.py), metric-<name>.jsonl.
"""

import copy
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

import dnnlib
from torch_utils import host_memory, misc, training_stats
from training import checkpoint, compiled_nets, components, plugins, run_outputs, training_state
from training.dataset import InfiniteSampler
# The pieces that moved out of this file, under their old names.
from training.components import p_modules, resolve_module_path  # noqa: F401
from training.phases import (NonFiniteError, Phase, build_phases, ema_beta,  # noqa: F401
                             lazy_regularization_opt_kwargs, step_seed, update_ema)
from training.phases import check_params_finite as _check_params_finite  # noqa: F401
from training.phases import step_phase as _step_phase  # noqa: F401
from training.run_outputs import save_image_grid  # noqa: F401

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
    metric_detector_dir: Optional[str] = None,  # Folder with the official detector files.
    resume_pkl: Optional[str] = None,         # Network pickle to start from (weights and p).
    resume_kimg: float = 0,                   # Image count to assume with resume_pkl.
    resume_state: Optional[str] = None,       # Training state (file or run dir) to continue exactly.
    cudnn_benchmark: bool = True,
    allow_tf32: bool = False,
    compile: bool = False,  # pylint: disable=redefined-builtin  # torch.compile for the main phases (compiled_nets.py).
    device: str = 'cpu',                      # 'cpu' or 'cuda'.
    fp32: bool = False,                       # Recorded; the network kwargs carry the precision.
    nhwc: bool = False,                       # Recorded; the network kwargs carry the layout.
    local_rank: Optional[int] = None,         # CUDA device index; default LOCAL_RANK or rank.
    state_keep: Optional[int] = 2,            # Training-state files to keep, None = all.
    resume_allow_new: bool = False,           # Parts missing from resume_state start fresh.
) -> Dict[str, Any]:
    """Trains a GAN as the config tree describes (one call per process).

    The keywords are the config tree of train.py (see the comments above). With
    num_gpus > 1, torch.distributed must be initialised and `rank` set; with one process no
    process group is needed. The method parts (augment stage, real-batch transforms, loss
    terms, controllers) follow the contract of training/plugins.py and are built by
    training.components.build_parts.

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
    if dev.type == 'cpu':
        host_memory.keep_freed_host_memory()  # Same bits, no page faults for each step's activations.
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    training_stats.init_multiprocessing(rank=rank, sync_device=dev if distributed else None)

    outputs = run_outputs.Outputs(run_dir, enabled=(rank == 0))
    try:
        return _train(config, rank=rank, dev=dev, distributed=distributed, num_slots=num_slots,
                      my_slots=my_slots, outputs=outputs, start_time=start_time)
    finally:
        outputs.close()


def _train(c: Dict[str, Any], *, rank: int, dev: torch.device, distributed: bool, num_slots: int,
           my_slots: List[int], outputs: run_outputs.Outputs, start_time: float) -> Dict[str, Any]:
    c = dnnlib.EasyDict(c)
    num_gpus, batch_gpu, batch_size = c.num_gpus, c.batch_gpu, c.batch_size
    rounds_per_step = num_slots // num_gpus
    log = print if rank == 0 else (lambda *_a, **_k: None)
    ctx = plugins.StateContext(num_slots, my_slots, batch_gpu, dev)

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
    parts = components.build_parts(c, dev, G, D, training_set)
    nets = dict(G=G, D=D, G_ema=G_ema)

    # Resume from a network pickle: weights and augmentation p; kimg from resume_kimg.
    if c.resume_pkl is not None:
        checkpoint.resume_from_pickle(c.resume_pkl, parts=parts, log=log, **nets)

    loss = dnnlib.construct_class_by_name(device=dev, G=G, D=D, augment_pipe=parts.augment_pipe,
                                          real_transforms=parts.real_transforms, heads=parts.heads,
                                          **(c.loss_kwargs or {}))
    phases = build_phases(G, D, c.G_opt_kwargs, c.D_opt_kwargs, c.G_reg_interval, c.D_reg_interval,
                          parts.table.of('loss_term'))
    if c.compile:
        names = compiled_nets.compile_networks(G, D)
        log(f'Compiling {", ".join(names)} on first use; the regularisation phases run eagerly.')
    opts_by_name = {}
    for phase in phases:
        for name, opt in zip(phase.opt_names, phase.opts):
            opts_by_name[name] = opt

    # Exact resume: everything else.
    if state is not None:
        checkpoint.restore_state(state, parts=parts, opts_by_name=opts_by_name, loss=loss, ctx=ctx,
                                 allow_new=bool(c.get('resume_allow_new')), log=log, **nets)

    # Statistics and run files.
    stats_collector = training_stats.Collector(regex='.*')
    named_nets = dict(nets)
    for _key, name, obj in parts.table:
        for key, module in plugins.network_modules(obj, name).items():
            named_nets.setdefault(key, module)
    grid_size = grid_z = grid_c = None
    if rank == 0:
        # On a CPU a grid costs G_ema passes that matter at demo scale: at most 8x8 there.
        grid_size, grid_images, grid_labels = run_outputs.grid_setup(training_set, c.random_seed,
                                                                     max_side=16 if dev.type == 'cuda' else 8)
        save_image_grid(torch.from_numpy(grid_images).float() / 127.5 - 1, os.path.join(c.run_dir, 'reals.png'),
                        grid_size)
        gen = torch.Generator().manual_seed(c.random_seed)
        grid_z = torch.randn([grid_images.shape[0], G.z_dim], generator=gen)
        grid_c = torch.from_numpy(grid_labels).float()
        save_image_grid(run_outputs.generate_grid(G_ema, grid_z, grid_c, batch_gpu, dev),
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
    snapshot_tags, grid_tags = set(), set()  # Snapshot names used by this run (see run_outputs.take_tag).
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
            with compiled_nets.phase_context(phase.name, enabled=c.compile):
                _step_phase(phase, phase_idx, loss, rounds, rank=rank, num_gpus=num_gpus, num_slots=num_slots,
                            random_seed=c.random_seed, batch_idx=batch_idx, cur_nimg=cur_nimg,
                            batch_gpu=batch_gpu, z_dim=G.z_dim, label_sampler=label_sampler, device=dev,
                            distributed=distributed)

        # G_ema follows G with a half-life of ema_kimg; buffers are copied.
        update_ema(G_ema, G, ema_beta(cur_nimg, batch_size, c.ema_kimg, c.ema_rampup))

        cur_nimg += batch_size
        batch_idx += 1
        for ctrl, mods in parts.controllers:
            ctrl.step(batch_size, mods, cur_nimg=cur_nimg)
        for obj in parts.table.parts('loss_term') + parts.real_transforms:
            fn = plugins.hook(obj, 'end_step')
            if fn is not None:
                fn(cur_nimg)

        done = cur_nimg >= total_nimg
        if not done and cur_nimg < tick_start_nimg + tick_nimg:
            continue

        # Tick: progress line, statistics, snapshots.
        tick_end_time = time.time()
        cur_tick += 1
        _check_params_finite(named_nets, batch_idx, cur_nimg)
        run_outputs.report_tick(log, dev, cur_tick=cur_tick, cur_nimg=cur_nimg, tick_start_nimg=tick_start_nimg,
                                tick_start_time=tick_start_time, tick_end_time=tick_end_time, start_time=start_time,
                                maintenance_time=maintenance_time,
                                p_values=[(label, float(m.p)) for label, m in p_modules(dict(
                                    augment=parts.augment_pipe, real_transform=parts.real_transform))])

        # Sample grid with the fixed latents.
        if rank == 0 and c.image_snapshot_ticks is not None and (done or cur_tick % c.image_snapshot_ticks == 0):
            save_image_grid(run_outputs.generate_grid(G_ema, grid_z, grid_c, batch_gpu, dev),
                            os.path.join(c.run_dir, f'fakes{run_outputs.take_tag(grid_tags, cur_nimg)}.png'),
                            grid_size)

        # Network snapshot and training state (state last: a crash in between leaves the
        # previous state as the newest complete one).
        snapshot_now = c.network_snapshot_ticks is not None and (done or cur_tick % c.network_snapshot_ticks == 0)
        if snapshot_now:
            # Every update is rank-invariant by construction; verify it where it is cheap.
            if distributed:
                for module in checkpoint.consistency_modules(parts=parts, **nets):
                    misc.check_ddp_consistency(module)
            tag = run_outputs.take_tag(snapshot_tags, cur_nimg)  # Unique in this run: nothing is overwritten.
            snapshot_pkl = os.path.join(c.run_dir, f'network-snapshot-{tag}.pkl')
            if rank == 0:
                checkpoint.save_network_snapshot(snapshot_pkl, checkpoint.network_data(
                    parts=parts, training_set_kwargs=c.training_set_kwargs, **nets))
            state_dict = checkpoint.collect_state(c, parts=parts, opts_by_name=opts_by_name, loss=loss, ctx=ctx,
                                                  cur_nimg=cur_nimg, cur_tick=cur_tick, batch_idx=batch_idx, **nets)
            if rank == 0:
                state_path = training_state.save_training_state(c.run_dir, state_dict, cur_nimg, keep=c.state_keep,
                                                                tag=tag)

            # Metrics of G_ema at this snapshot (all ranks take part).
            if c.metrics:
                run_outputs.run_metrics(c, G_ema, snapshot_pkl, rank, dev)

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
