"""Training presets and the pure function that turns command-line options into a config tree.

`make_config(**options)` is what train.py calls after parsing: it takes the options (plus a
few facts about the dataset that train.py reads once) and returns the JSON-serialisable
config tree that `training.training_loop.training_loop(**tree)` consumes. It touches no
files, so tests can check every preset and override without a dataset on disk.

The named presets follow the established StyleGAN2-ADA values so runs carry over; `auto`
derives its values from the resolution and the GPU count with the established heuristics;
`low_shot` is DiffAugment's few-shot setting; `cpu` is a tiny network for the demo and for
smoke tests on a laptop.
"""

import copy
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import dnnlib
from training import compiled_nets, methods

# ---------------------------------------------------------------------------------------
# Presets.

# Keys: ref_gpus (GPUs the per-GPU batch was tuned for; None = the GPUs in use), kimg,
# mb (total batch), mbstd (minibatch-std group), fmaps (channel_base = fmaps * 32768),
# lrate, gamma (R1 weight), ema (G_ema half-life, kimg), ramp (EMA ramp-up; None = off),
# map (mapping layers). Optional extras: cbase/cmax (explicit channel counts), tick, snap,
# metrics, workers, fp32, wdim (z and w width), the cifar-style loss/D overrides
# (pl_weight, style_mixing, d_architecture) and g_reg (G's lazy-regularisation interval,
# default 4; None for a G phase without path length).
# None marks values that `auto` computes from the resolution and the GPU count.
PRESETS: Dict[str, Dict[str, Any]] = {
    'auto':      dict(ref_gpus=None, kimg=25000, mb=None, mbstd=None, fmaps=None, lrate=None, gamma=None,
                      ema=None, ramp=0.05, map=2),
    'stylegan2': dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=10, ema=10,
                      ramp=None, map=8),
    'paper256':  dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=0.5, lrate=0.0025, gamma=1, ema=20,
                      ramp=None, map=8),
    'paper512':  dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=1, lrate=0.0025, gamma=0.5, ema=20,
                      ramp=None, map=8),
    'paper1024': dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=2, ema=10,
                      ramp=None, map=8),
    # CIFAR-10 at 32x32: no path length regularisation, no style mixing, plain D.
    'cifar':     dict(ref_gpus=2, kimg=100000, mb=64, mbstd=32, fmaps=1, lrate=0.0025, gamma=0.01, ema=500,
                      ramp=0.05, map=2, pl_weight=0, style_mixing=0, d_architecture='orig'),
    # DiffAugment's few-shot setting (100-shot, AnimalFace): short and with frequent snapshots.
    'low_shot':  dict(ref_gpus=None, kimg=300, mb=8, mbstd=4, fmaps=1, lrate=0.002, gamma=10, ema=10,
                      ramp=None, map=2, snap=10),
    # A tiny network that trains on two CPU cores in minutes (the demo and smoke tests).
    # Narrow channels and a short mapping network keep a step cheap; fp32 because float16
    # is much slower on CPUs; no metrics because the detectors are large downloads. Tuned
    # on the 16x16 digits (docs/training.md, "The demo"): much of a step of this network is
    # per-operation overhead, so what counts in minutes is the number of steps: a batch of
    # 8 at lr 0.01 without path length regularisation and style mixing
    # (as the established cifar config) reached a domain FID of about 100 in 24 kimg, where
    # the former setting (batch 16, lr 0.002, both on) was near 800; R1 gamma 0.25 or less
    # diverged.
    'cpu':       dict(ref_gpus=None, kimg=32, mb=8, mbstd=4, fmaps=None, cbase=2048, cmax=32,
                      lrate=0.01, gamma=1, ema=2, ramp=0.05, map=2, wdim=128, pl_weight=0, style_mixing=0,
                      g_reg=None, tick=2, snap=6, metrics=[], workers=0, fp32=True),
}

CFG_NAMES: Tuple[str, ...] = tuple(PRESETS)
DEFAULT_METRICS: List[str] = ['fid50k_full']
DEFAULT_TICK_KIMG = 4
DEFAULT_SNAP_TICKS = 50
DEFAULT_WORKERS = 3

# Class names of the pieces the tree refers to.
G_CLASS = 'training.networks.Generator'
D_CLASS = 'training.networks.Discriminator'
LOSS_CLASS = 'training.loss.StyleGAN2Loss'
OPT_CLASS = 'torch.optim.Adam'
DATASET_CLASS = 'training.dataset.ImageFolderDataset'

# The methods' own names, for callers that used them from here.
from training.augment.modes import (ADA_CLASS, ADA_MODULE, ADAPT_INTERVAL, APA_CLASS,  # noqa: E402
                                    APA_MODULE, AUG_MODES, CONTROLLER_CLASS, DEFAULT_AUGPIPE,
                                    DEFAULT_SPEED_KIMG, DEFAULT_TARGET, RESUME_SPEED_KIMG, STAGE_CLASS)
from training.augment.diffaugment import DIFFAUG_CLASS  # noqa: E402
from training.heads.insgen import (DEFAULT_AUG_P as INSGEN_AUG_P, INSGEN_CLASS, INSGEN_MODULE,  # noqa: E402
                                   DEFAULT_WEIGHTS as INSGEN_DEFAULT_WEIGHTS)
from training.heads.vision_aided import CV_CLASS, CV_MODULE  # noqa: E402
from training.methods import ConfigError  # noqa: E402,F401

# ---------------------------------------------------------------------------------------
# Helpers.


def auto_spec(resolution: int, gpus: int) -> Dict[str, Any]:
    """The values of the `auto` preset for a resolution and a GPU count.

    The heuristics of the established tools: a batch that keeps GPU memory in check, a
    fixed minibatch-std group, narrower networks below 512 px, and R1 gamma scaled with the
    number of pixels per batch item.

    Args:
        resolution: Training resolution in pixels.
        gpus: Number of GPUs (processes).

    Returns:
        Dict with ref_gpus, mb, mbstd, fmaps, lrate, gamma, ema.
    """
    mb = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    return dict(
        ref_gpus=gpus,
        mb=mb,
        mbstd=min(mb // gpus, 4),
        fmaps=1 if resolution >= 512 else 0.5,
        lrate=0.002 if resolution >= 1024 else 0.0025,
        gamma=0.0002 * (resolution ** 2) / mb,
        ema=mb * 10 / 32,
    )


def parse_metrics(value: Optional[str]) -> Optional[List[str]]:
    """Splits a `--metrics` value: 'a,b' -> ['a', 'b'], 'none' -> [], None -> None (preset)."""
    if value is None:
        return None
    names = [m.strip() for m in value.split(',') if m.strip()]
    if names == ['none'] or not names:
        return []
    if 'none' in names:
        raise ConfigError('--metrics', '"none" cannot be combined with metric names')
    return names


def _check_metrics(names: Sequence[str]) -> None:
    # Validate against the registry so a typo fails before training starts, not at the
    # first snapshot hours later.
    from metrics import metric_main  # pylint: disable=import-outside-toplevel
    bad = [m for m in names if not metric_main.is_valid_metric(m)]
    if bad:
        raise ConfigError('--metrics', f'unknown metric {bad[0]!r}; valid names: '
                          + ', '.join(metric_main.list_valid_metrics()) + ', or none')


def _g(x: float) -> str:
    return f'{x:g}'


# ---------------------------------------------------------------------------------------
# The config tree.


def build(*,
          data_path: str,
          data_name: str,
          resolution: int,
          num_images: int,
          has_labels: bool,
          cfg: str = 'auto',
          gpus: int = 1,
          batch: Optional[int] = None,
          batch_gpu: Optional[int] = None,
          gamma: Optional[float] = None,
          kimg: Optional[float] = None,
          tick: Optional[float] = None,
          snap: Optional[int] = None,
          seed: int = 0,
          cond: bool = False,
          subset: Optional[int] = None,
          mirror: bool = False,
          metrics: Optional[Sequence[str]] = None,
          metricdata_path: Optional[str] = None,
          resume_pkl: Optional[str] = None,
          resume_kimg: float = 0,
          resume_state: Optional[str] = None,
          freezed: int = 0,
          fp32: bool = False,
          nhwc: bool = False,
          allow_tf32: bool = False,
          nobench: bool = False,
          compile_nets: bool = False,
          workers: Optional[int] = None,
          device: str = 'cpu',
          cbase: Optional[int] = None,
          cmax: Optional[int] = None,
          map_layers: Optional[int] = None,
          mbstd_group: Optional[int] = None,
          glr: Optional[float] = None,
          dlr: Optional[float] = None,
          pl_weight: Optional[float] = None,
          style_mixing: Optional[float] = None,
          check_metrics: bool = True,
          resume_new_methods: bool = False,
          **method_options: Any,
          ) -> Tuple[dnnlib.EasyDict, str]:
    """Builds the config tree and the run-directory description from options.

    Pure: reads no files. `data_*`, `resolution`, `num_images` and `has_labels` describe
    the training set (train.py reads them once from the dataset).

    Args:
        data_path: Dataset zip or folder.
        data_name: Short dataset name (first part of the run-directory name).
        resolution: Image resolution of the dataset.
        num_images: Number of images in the dataset (before --subset and --mirror).
        has_labels: Whether the dataset has labels.
        cfg: Preset name (see PRESETS).
        gpus: Number of processes (GPUs, or CPU processes without GPUs).
        batch, batch_gpu, gamma, kimg, tick, snap, seed, cond, subset, mirror, metrics,
            metricdata_path, freezed, fp32, nhwc, allow_tf32, nobench, workers, cbase,
            cmax, map_layers, mbstd_group, glr, dlr, pl_weight, style_mixing: The train.py
            options of the same names; compile_nets: --compile
            (None = the preset's value).
        resume_pkl: Network pickle to start from (weights and augment p).
        resume_kimg: Image count (kimg) a network-pickle resume starts from.
        resume_state: Training-state file to continue from exactly.
        device: 'cpu' or 'cuda'.
        check_metrics: Validate metric names against the metrics registry.
        resume_new_methods: With resume_state, let parts the state lacks start fresh.
        **method_options: The options the methods declare (training/methods.py), by their
            Python names (aug, target, diffaugment, insgen, cv, lecam, ...).

    Returns:
        (config tree as an EasyDict, run-directory description).

    Raises:
        ConfigError: A bad value or combination, naming the option(s).
    """
    if cfg not in PRESETS:
        raise ConfigError('--cfg', f'unknown preset {cfg!r}; choose one of {", ".join(CFG_NAMES)}')
    if gpus < 1:
        raise ConfigError('--gpus', f'must be at least 1, got {gpus}')
    if compile_nets and not compiled_nets.available():
        raise ConfigError('--compile', compiled_nets.UNAVAILABLE)
    o = methods.parse_options(method_options)

    spec = dnnlib.EasyDict(copy.deepcopy(PRESETS[cfg]))
    desc = data_name
    if cfg == 'auto':
        spec.update(auto_spec(resolution, gpus))
    if spec.ref_gpus is None:
        spec.ref_gpus = gpus

    c = dnnlib.EasyDict()
    c.random_seed = int(seed)
    c.num_gpus = int(gpus)
    c.device = device

    # ---- Dataset: data, cond, subset, mirror.
    if cond and not has_labels:
        raise ConfigError('--cond', f'the dataset {data_path} has no labels (its dataset.json is missing or '
                                    f'has "labels": null)')
    if subset is not None and not 1 <= subset <= num_images:
        raise ConfigError('--subset', f'must be between 1 and the dataset size {num_images}, got {subset}')
    c.training_set_kwargs = dnnlib.EasyDict(
        class_name=DATASET_CLASS, path=data_path, use_labels=bool(cond),
        max_size=(subset if subset is not None and subset < num_images else None),
        xflip=bool(mirror), resolution=int(resolution), random_seed=int(seed))
    if cond:
        desc += '-cond'
    if subset is not None:
        desc += f'-subset{subset}'
    if mirror:
        desc += '-mirror'
    # Metrics compare against the full dataset (the established protocol), or --metricdata.
    c.metric_set_kwargs = None
    if metricdata_path is not None:
        c.metric_set_kwargs = dnnlib.EasyDict(
            class_name=DATASET_CLASS, path=metricdata_path, use_labels=bool(cond), max_size=None,
            xflip=bool(mirror), resolution=int(resolution), random_seed=int(seed))

    if workers is None:
        workers = spec.get('workers', DEFAULT_WORKERS)
    if workers < 0:
        raise ConfigError('--workers', f'must be at least 0, got {workers}')
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=(device == 'cuda'), num_workers=int(workers),
                                           prefetch_factor=(2 if workers > 0 else None))

    # ---- Base config: cfg, gamma, kimg, batch.
    desc += f'-{cfg}' + (f'{gpus}' if cfg == 'auto' else '')
    if fp32 is False and spec.get('fp32'):
        fp32 = True
    wdim = spec.get('wdim', 512)
    channel_base = int(cbase if cbase is not None else spec.get('cbase') or spec.fmaps * 32768)
    channel_max = int(cmax if cmax is not None else spec.get('cmax', 512))
    if channel_base < 1:
        raise ConfigError('--cbase', f'must be at least 1, got {channel_base}')
    if channel_max < 1:
        raise ConfigError('--cmax', f'must be at least 1, got {channel_max}')
    num_map = int(map_layers if map_layers is not None else spec.map)
    mbstd = int(mbstd_group if mbstd_group is not None else spec.mbstd)

    c.G_kwargs = dnnlib.EasyDict(class_name=G_CLASS, z_dim=wdim, w_dim=wdim,
                                 mapping_kwargs=dnnlib.EasyDict(num_layers=num_map),
                                 synthesis_kwargs=dnnlib.EasyDict(channel_base=channel_base, channel_max=channel_max,
                                                                  num_fp16_res=4, conv_clamp=256))
    c.D_kwargs = dnnlib.EasyDict(class_name=D_CLASS, architecture=spec.get('d_architecture', 'resnet'),
                                 channel_base=channel_base, channel_max=channel_max, num_fp16_res=4,
                                 conv_clamp=256, block_kwargs=dnnlib.EasyDict(),
                                 mapping_kwargs=dnnlib.EasyDict(),
                                 epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=mbstd))
    lr_g = float(glr if glr is not None else spec.lrate)
    lr_d = float(dlr if dlr is not None else spec.lrate)
    c.G_opt_kwargs = dnnlib.EasyDict(class_name=OPT_CLASS, lr=lr_g, betas=[0, 0.99], eps=1e-8)
    c.D_opt_kwargs = dnnlib.EasyDict(class_name=OPT_CLASS, lr=lr_d, betas=[0, 0.99], eps=1e-8)
    pl = float(pl_weight if pl_weight is not None else spec.get('pl_weight', 2))
    mixing = float(style_mixing if style_mixing is not None else spec.get('style_mixing', 0.9))
    if not pl >= 0:
        raise ConfigError('--pl-weight', f'must be non-negative, got {pl_weight}')
    if not 0 <= mixing <= 1:
        raise ConfigError('--style-mixing', f'must be between 0 and 1, got {style_mixing}')
    c.loss_kwargs = dnnlib.EasyDict(class_name=LOSS_CLASS, r1_gamma=float(spec.gamma), style_mixing_prob=mixing,
                                    pl_weight=pl, pl_batch_shrink=2, pl_decay=0.01)
    # Lazy regularisation: path length every 4 G steps, R1 every 16 D steps. A preset without
    # path length may drop the empty G reg phase (`g_reg: None`), so that G's Adam keeps its
    # plain lr and betas (the established cifar config keeps the interval, hence the key);
    # path length switched back on with --pl-weight runs every 4 steps again.
    c.G_reg_interval = spec.get('g_reg', 4) if pl == 0 else 4
    c.D_reg_interval = 16

    c.total_kimg = spec.kimg
    c.batch_size = int(spec.mb)
    c.batch_gpu = int(spec.mb // spec.ref_gpus)
    c.ema_kimg = spec.ema
    c.ema_rampup = spec.ramp

    if gamma is not None:
        if not gamma >= 0:
            raise ConfigError('--gamma', f'must be non-negative, got {gamma}')
        c.loss_kwargs.r1_gamma = float(gamma)
        desc += f'-gamma{_g(gamma)}'
    if kimg is not None:
        if not kimg > 0:
            raise ConfigError('--kimg', f'must be positive, got {kimg}')
        c.total_kimg = kimg
        desc += f'-kimg{_g(kimg)}'
    if batch is not None:
        if batch < 1 or batch % gpus != 0:
            raise ConfigError('--batch', f'must be at least 1 and divisible by --gpus={gpus}, got {batch}')
        c.batch_size = int(batch)
        c.batch_gpu = int(batch // gpus)
        desc += f'-batch{batch}'
    if pl_weight is not None:
        desc += f'-pl{_g(pl)}'
    if style_mixing is not None:
        desc += f'-mix{_g(mixing)}'
    if batch_gpu is not None:
        if batch_gpu < 1:
            raise ConfigError('--batch-gpu', f'must be at least 1, got {batch_gpu}')
        c.batch_gpu = int(batch_gpu)
    if c.batch_gpu < 1 or c.batch_size % (c.batch_gpu * gpus) != 0:
        raise ConfigError('--batch/--batch-gpu/--gpus',
                          f'the batch ({c.batch_size}) must be a multiple of --batch-gpu ({c.batch_gpu}) times '
                          f'--gpus ({gpus}); each step is split into per-process micro-batches of --batch-gpu images')

    tick_kimg = tick if tick is not None else spec.get('tick', DEFAULT_TICK_KIMG)
    if not tick_kimg > 0:
        raise ConfigError('--tick', f'must be positive, got {tick_kimg}')
    c.kimg_per_tick = tick_kimg
    snap_ticks = snap if snap is not None else spec.get('snap', DEFAULT_SNAP_TICKS)
    if snap_ticks < 1:
        raise ConfigError('--snap', f'must be at least 1, got {snap_ticks}')
    c.image_snapshot_ticks = c.network_snapshot_ticks = int(snap_ticks)

    c.metrics = list(metrics) if metrics is not None else list(spec.get('metrics', DEFAULT_METRICS))
    if check_metrics and c.metrics:
        _check_metrics(c.metrics)

    # ---- Methods: each registered method adds its parts (training/methods.py).
    images = min(num_images, subset or num_images) * (2 if mirror else 1)
    builder = methods.ConfigBuilder(c, dict(num_images=images, from_pickle=resume_pkl is not None,
                                            total_kimg=float(c.total_kimg), lr_d=lr_d))
    methods.configure_all(builder, o)
    builder.finish(STAGE_CLASS)
    desc += methods.describe(o)

    # ---- Resume and transfer learning.
    if resume_pkl is not None and resume_state is not None:
        raise ConfigError('--resume', 'give either a network pickle or a run directory / state file, not both')
    if resume_kimg and resume_pkl is None:
        raise ConfigError('--resume-kimg', 'only applies when --resume is a network pickle')
    if resume_kimg < 0:
        raise ConfigError('--resume-kimg', f'must be non-negative, got {resume_kimg}')
    c.resume_pkl = resume_pkl
    c.resume_kimg = resume_kimg
    c.resume_state = resume_state
    if resume_pkl is not None:
        # Fine-tuning from a trained network: no EMA ramp-up (G_ema is already good).
        c.ema_rampup = None
        desc += '-resumecustom'
    if resume_state is not None:
        desc += '-resume'
    if resume_new_methods and resume_state is None:
        raise ConfigError('--resume-new-methods', 'only applies when --resume continues a run (a run directory '
                                                  'or a training state)')
    c.resume_allow_new = bool(resume_new_methods)
    if freezed < 0:
        raise ConfigError('--freezed', f'must be non-negative, got {freezed}')
    if freezed > 0:
        c.D_kwargs.block_kwargs.freeze_layers = int(freezed)
        desc += f'-freezed{freezed}'

    # ---- Performance options.
    if fp32:
        c.G_kwargs.synthesis_kwargs.num_fp16_res = c.D_kwargs.num_fp16_res = 0
        c.G_kwargs.synthesis_kwargs.conv_clamp = c.D_kwargs.conv_clamp = None
    if nhwc:
        c.G_kwargs.synthesis_kwargs.fp16_channels_last = c.D_kwargs.block_kwargs.fp16_channels_last = True
    if fp32 and not spec.get('fp32'):
        desc += '-fp32'
    if nhwc:
        desc += '-nhwc'
    c.fp32 = bool(fp32)
    c.nhwc = bool(nhwc)
    c.cudnn_benchmark = not nobench
    c.allow_tf32 = bool(allow_tf32)
    c.compile = bool(compile_nets)
    return c, desc


def make_config(**options: Any) -> dnnlib.EasyDict:
    """The config tree for `options` (see `build` for the names). Pure; raises ConfigError."""
    return build(**options)[0]


def make_run_desc(**options: Any) -> str:
    """The run-directory description for `options`, e.g. 'demo-cpu-apa'."""
    return build(**options)[1]


def to_plain(obj: Any) -> Any:
    """A copy of a config tree made of plain dicts/lists (for JSON and torch.save)."""
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
