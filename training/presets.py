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

# ---------------------------------------------------------------------------------------
# Presets.

# Keys: ref_gpus (GPUs the per-GPU batch was tuned for; None = the GPUs in use), kimg,
# mb (total batch), mbstd (minibatch-std group), fmaps (channel_base = fmaps * 32768),
# lrate, gamma (R1 weight), ema (G_ema half-life, kimg), ramp (EMA ramp-up; None = off),
# map (mapping layers). Optional extras: cbase/cmax (explicit channel counts), tick, snap,
# metrics, workers, fp32, wdim (z and w width) and the cifar-style loss/D overrides.
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
    # on the 16x16 digits (benchmarks/limited_data.py): R1 gamma 0.05 or less collapsed to
    # one shape; gamma 1 with a batch of 16 at lr 0.002 gives varied digits within the run.
    'cpu':       dict(ref_gpus=None, kimg=60, mb=16, mbstd=4, fmaps=None, cbase=2048, cmax=32,
                      lrate=0.002, gamma=1, ema=2, ramp=0.05, map=2, wdim=128,
                      tick=2, snap=10, metrics=[], workers=0, fp32=True),
}

CFG_NAMES: Tuple[str, ...] = tuple(PRESETS)
AUG_MODES: Tuple[str, ...] = ('apa', 'ada', 'fixed', 'noaug')
DEFAULT_METRICS: List[str] = ['fid50k_full']
DEFAULT_TARGET = 0.6
DEFAULT_AUGPIPE = 'bgc'
DEFAULT_SPEED_KIMG = 500          # p can traverse [0, 1] in this many kimg ...
RESUME_SPEED_KIMG = 100           # ... faster when fine-tuning from a network pickle.
ADAPT_INTERVAL = 4                # D steps between p updates.
DEFAULT_TICK_KIMG = 4
DEFAULT_SNAP_TICKS = 50
DEFAULT_WORKERS = 3

# Class names of the pieces the tree refers to.
G_CLASS = 'training.networks.Generator'
D_CLASS = 'training.networks.Discriminator'
LOSS_CLASS = 'training.loss.StyleGAN2Loss'
OPT_CLASS = 'torch.optim.Adam'
DATASET_CLASS = 'training.dataset.ImageFolderDataset'
STAGE_CLASS = 'training.augment.stage.AugmentStage'
ADA_CLASS = 'training.augment.ada.AugmentPipe'
DIFFAUG_CLASS = 'training.augment.diffaugment.DiffAugment'
APA_CLASS = 'training.augment.apa.PseudoAugment'
CONTROLLER_CLASS = 'training.augment.adaptive.AdaptiveP'
INSGEN_CLASS = 'training.heads.insgen.InsGen'
CV_CLASS = 'training.heads.vision_aided.VisionAidedHead'
CV_MODULE = 'cv.aug.ada'                  # The vision-aided branch's own ADA pipe (controller path).
CV_DEFAULT_LOSS = 'multilevel_sigmoid_s'
CV_DEFAULT_WARMUP = 500_000               # Images before the vision-aided loss switches on.
CV_DEFAULT_AUG = 'ada'
INSGEN_DEFAULT_WEIGHTS = (1.0, 1.0, 0.1)  # real-instance, fake-instance (D step), diversity (G step).
INSGEN_QUEUE_FRACTION = 0.05               # Default queue sizes: 5% of the training images.
INSGEN_AUG_P = 0.5                          # p of InsGen's positive view without an adaptive ADA p.
INSGEN_MODULE = 'insgen.augment_pipe'       # Its pipeline, as a controller module path.

# Module paths the loop resolves for the adaptive controllers.
APA_MODULE = 'real_transform'
ADA_MODULE = 'augment.ada'


class ConfigError(ValueError):
    """A bad option value or combination; `flag` names the option(s) at fault."""

    def __init__(self, flag: str, message: str):
        super().__init__(f'{flag}: {message}')
        self.flag = flag
        self.message = message


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
          aug: str = 'apa',
          p: Optional[float] = None,
          target: Optional[float] = None,
          with_dataaug: bool = False,
          ada_own_p: bool = False,
          ada_target: Optional[float] = None,
          ada_kimg: Optional[float] = None,
          augpipe: Optional[str] = None,
          diffaugment: Optional[str] = None,
          resume_pkl: Optional[str] = None,
          resume_kimg: float = 0,
          resume_state: Optional[str] = None,
          freezed: int = 0,
          fp32: bool = False,
          nhwc: bool = False,
          allow_tf32: bool = False,
          nobench: bool = False,
          workers: Optional[int] = None,
          device: str = 'cpu',
          cbase: Optional[int] = None,
          cmax: Optional[int] = None,
          map_layers: Optional[int] = None,
          mbstd_group: Optional[int] = None,
          glr: Optional[float] = None,
          dlr: Optional[float] = None,
          insgen: bool = False,
          rqs: Optional[int] = None,
          fqs: Optional[int] = None,
          insgen_temp: Optional[float] = None,
          insgen_weights: Any = None,
          no_cl_on_g: bool = False,
          cv: Optional[str] = None,
          cv_loss: Optional[str] = None,
          cv_warmup: Optional[int] = None,
          cv_aug: Optional[str] = None,
          cv_weights: Sequence[str] = (),
          check_metrics: bool = True,
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
            metricdata_path, aug, p, target, with_dataaug, ada_own_p, ada_target, ada_kimg,
            augpipe, diffaugment, freezed, fp32, nhwc, allow_tf32, nobench, workers, cbase,
            cmax, map_layers, mbstd_group, glr, dlr: The train.py options of the same names
            (None = the preset's value).
        resume_pkl: Network pickle to start from (weights and augment p).
        resume_kimg: Image count (kimg) a network-pickle resume starts from.
        resume_state: Training-state file to continue from exactly.
        device: 'cpu' or 'cuda'.
        insgen, rqs, fqs, insgen_temp, insgen_weights, no_cl_on_g: InsGen's options (see
            `_insgen_config`).
        cv, cv_loss, cv_warmup, cv_aug, cv_weights: The vision-aided options (see `_cv_config`).
        check_metrics: Validate metric names against the metrics registry.

    Returns:
        (config tree as an EasyDict, run-directory description).

    Raises:
        ConfigError: A bad value or combination, naming the option(s).
    """
    if cfg not in PRESETS:
        raise ConfigError('--cfg', f'unknown preset {cfg!r}; choose one of {", ".join(CFG_NAMES)}')
    if gpus < 1:
        raise ConfigError('--gpus', f'must be at least 1, got {gpus}')
    if aug not in AUG_MODES:
        raise ConfigError('--aug', f'unknown mode {aug!r}; choose one of {", ".join(AUG_MODES)}')

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
    c.loss_kwargs = dnnlib.EasyDict(class_name=LOSS_CLASS, r1_gamma=float(spec.gamma),
                                    style_mixing_prob=float(spec.get('style_mixing', 0.9)),
                                    pl_weight=float(spec.get('pl_weight', 2)), pl_batch_shrink=2, pl_decay=0.01)
    c.G_reg_interval = 4
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

    # ---- Methods: aug, p, target, with-dataaug, ada-own-p, augpipe, diffaugment.
    _method_config(c, aug=aug, p=p, target=target, with_dataaug=with_dataaug, ada_own_p=ada_own_p,
                   ada_target=ada_target, ada_kimg=ada_kimg, augpipe=augpipe, diffaugment=diffaugment,
                   from_pickle=(resume_pkl is not None))
    desc += _method_desc(aug=aug, p=p, target=target, with_dataaug=with_dataaug, ada_own_p=ada_own_p,
                         ada_target=ada_target, augpipe=augpipe, diffaugment=diffaugment)
    c.heads_kwargs = []
    insgen_head = _insgen_config(c, insgen=insgen, rqs=rqs, fqs=fqs, temp=insgen_temp, weights=insgen_weights,
                                 no_cl_on_g=no_cl_on_g, num_images=num_images, subset=subset, mirror=mirror,
                                 aug=aug, p=p, with_dataaug=with_dataaug, augpipe=augpipe)
    if insgen_head is not None:
        c.heads_kwargs.append(insgen_head)
        desc += '-insgen'
    cv_head = _cv_config(c, cv=cv, loss=cv_loss, warmup=cv_warmup, aug=cv_aug, weights=cv_weights, lr=lr_d,
                         from_pickle=(resume_pkl is not None))
    if cv_head is not None:
        c.heads_kwargs.append(cv_head)
        desc += '-cv-' + '-'.join(cv_head.backbones)

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
    return c, desc


def _controller(name: str, target: float, speed_kimg: float, modules: List[str]) -> dnnlib.EasyDict:
    return dnnlib.EasyDict(class_name=CONTROLLER_CLASS, target=float(target), interval=ADAPT_INTERVAL,
                           speed_kimg=float(speed_kimg), name=name, modules=list(modules))


def _method_config(c: dnnlib.EasyDict, *, aug: str, p: Optional[float], target: Optional[float],
                   with_dataaug: bool, ada_own_p: bool, ada_target: Optional[float], ada_kimg: Optional[float],
                   augpipe: Optional[str], diffaugment: Optional[str], from_pickle: bool) -> None:
    """Fills augment_kwargs, real_transform_kwargs and controllers from the method flags.

    - apa:   APA real-batch transform with an adaptive p; --with-dataaug adds the ADA pipe
             that shares APA's p (or adapts its own with --ada-own-p).
    - ada:   the ADA pipe with an adaptive p (established ADA), no APA.
    - fixed: APA with p fixed to --p; --with-dataaug adds ADA at the same fixed p (or an
             adaptive one of its own with --ada-own-p).
    - noaug: neither APA nor ADA.
    --diffaugment adds DiffAugment to the augment stage in every mode.
    """
    # Cross-option checks first, each naming the flags involved.
    if aug == 'fixed' and p is None:
        raise ConfigError('--p', '--aug=fixed needs --p (the fixed probability)')
    if p is not None and aug != 'fixed':
        raise ConfigError('--p', f'only applies with --aug=fixed (got --aug={aug}); adaptive modes start at p=0')
    if p is not None and not 0 <= p <= 1:
        raise ConfigError('--p', f'must be in [0, 1], got {p}')
    if target is not None and aug not in ('apa', 'ada'):
        raise ConfigError('--target', f'only applies with --aug=apa or --aug=ada (got --aug={aug})')
    if target is not None and not 0 < target <= 1:
        raise ConfigError('--target', f'must be in (0, 1], got {target}')
    if with_dataaug and aug not in ('apa', 'fixed'):
        raise ConfigError('--with-dataaug', f'adds ADA next to APA, so it needs --aug=apa or --aug=fixed '
                                            f'(got --aug={aug}; --aug=ada already is ADA)')
    if ada_own_p and not with_dataaug:
        raise ConfigError('--ada-own-p', 'only applies with --with-dataaug (it gives the added ADA pipe its own p)')
    if ada_target is not None and not ada_own_p:
        raise ConfigError('--ada-target', 'only applies with --with-dataaug --ada-own-p (use --target for --aug=ada)')
    if ada_target is not None and not 0 < ada_target <= 1:
        raise ConfigError('--ada-target', f'must be in (0, 1], got {ada_target}')
    uses_ada = aug == 'ada' or with_dataaug
    if augpipe is not None and not uses_ada:
        raise ConfigError('--augpipe', 'selects the ADA pipeline, so it needs --aug=ada or --with-dataaug')
    if ada_kimg is not None and not ada_kimg > 0:
        raise ConfigError('--ada-kimg', f'must be positive, got {ada_kimg}')
    adaptive = aug in ('apa', 'ada') or ada_own_p
    if ada_kimg is not None and not adaptive:
        raise ConfigError('--ada-kimg', 'sets the speed of an adaptive p; --aug=fixed/noaug have none')
    augpipe = augpipe or DEFAULT_AUGPIPE
    target = DEFAULT_TARGET if target is None else target
    speed = ada_kimg if ada_kimg is not None else (RESUME_SPEED_KIMG if from_pickle else DEFAULT_SPEED_KIMG)

    augments: List[Dict[str, Any]] = []
    c.real_transform_kwargs = None
    c.controllers = []
    if uses_ada:
        from training.augment import presets as ada_presets  # pylint: disable=import-outside-toplevel
        if augpipe not in ada_presets.ADA_PRESETS:
            raise ConfigError('--augpipe', f'unknown pipeline {augpipe!r}; choose one of '
                                           f'{", ".join(ada_presets.ADA_PRESETS)}')
        augments.append(dnnlib.EasyDict(class_name=ADA_CLASS, **copy.deepcopy(ada_presets.ADA_PRESETS[augpipe])))
        # Adaptive pipes start at p=0 (the buffer's initial value); a fixed shared p is
        # given to the pipe as its starting p and, with no controller, stays there.
        if aug == 'fixed' and not ada_own_p:
            augments[-1]['p'] = float(p)
    if diffaugment:
        augments.append(dnnlib.EasyDict(class_name=DIFFAUG_CLASS, policy=diffaugment))
    c.augment_kwargs = dnnlib.EasyDict(class_name=STAGE_CLASS, augments=augments) if augments else None

    if aug in ('apa', 'fixed'):
        c.real_transform_kwargs = dnnlib.EasyDict(class_name=APA_CLASS, p=float(p) if aug == 'fixed' else 0.0)
    if aug == 'apa':
        shared = [APA_MODULE] + ([ADA_MODULE] if with_dataaug and not ada_own_p else [])
        c.controllers.append(_controller('apa', target, speed, shared))
    if aug == 'ada':
        c.controllers.append(_controller('ada', target, speed, [ADA_MODULE]))
    if ada_own_p:
        c.controllers.append(_controller('ada', DEFAULT_TARGET if ada_target is None else ada_target, speed,
                                         [ADA_MODULE]))


def parse_insgen_weights(value: Any) -> Optional[Tuple[float, float, float]]:
    """`--insgen-weights`: 'REAL,FAKE,G' (or a sequence of 3 numbers) -> a tuple; None stays None."""
    if value is None:
        return None
    parts = value.split(',') if isinstance(value, str) else list(value)
    try:
        weights = tuple(float(x) for x in parts)
    except (TypeError, ValueError):
        weights = ()
    if len(weights) != 3 or not all(w >= 0 for w in weights):
        raise ConfigError('--insgen-weights', f'expected three non-negative numbers REAL,FAKE,G (e.g. 1,1,0.1), '
                                              f'got {value!r}')
    return weights


def _insgen_config(c: dnnlib.EasyDict, *, insgen: bool, rqs: Optional[int], fqs: Optional[int],
                   temp: Optional[float], weights: Any, no_cl_on_g: bool, num_images: int, subset: Optional[int],
                   mirror: bool, aug: str, p: Optional[float], with_dataaug: bool,
                   augpipe: Optional[str]) -> Optional[dnnlib.EasyDict]:
    """The InsGen head entry of `heads_kwargs`, or None without --insgen.

    Queues default to 5% of the training images (after --subset, doubled by --mirror). The
    positive view's ADA pipeline (the run's --augpipe, default bgc) joins the controller of
    the run's ADA p when there is one, takes --p with --aug=fixed --with-dataaug, and is held
    at 0.5 otherwise.
    """
    given = [flag for flag, v in [('--rqs', rqs), ('--fqs', fqs), ('--insgen-temp', temp),
                                  ('--insgen-weights', weights), ('--no-cl-on-g', no_cl_on_g or None)]
             if v is not None]
    if not insgen:
        if given:
            raise ConfigError(given[0], 'only applies with --insgen=1')
        return None
    for flag, value in [('--rqs', rqs), ('--fqs', fqs)]:
        if value is not None and value < 1:
            raise ConfigError(flag, f'must be at least 1, got {value}')
    if temp is not None and not temp > 0:
        raise ConfigError('--insgen-temp', f'must be positive, got {temp}')
    real_w, fake_w, g_w = parse_insgen_weights(weights) or INSGEN_DEFAULT_WEIGHTS
    if no_cl_on_g:
        g_w = 0.0
    images = min(num_images, subset or num_images) * (2 if mirror else 1)
    default_size = max(1, int(round(INSGEN_QUEUE_FRACTION * images)))

    # Positive view's p: share the run's adaptive ADA p when a controller drives one.
    aug_p = INSGEN_AUG_P
    shared = False
    for ctrl in c.controllers:
        if ADA_MODULE in ctrl.modules:
            ctrl.modules.append(INSGEN_MODULE)
            shared = True
    if not shared and aug == 'fixed' and with_dataaug:
        aug_p = float(p)
    return dnnlib.EasyDict(
        class_name=INSGEN_CLASS, real_queue_size=int(rqs if rqs is not None else default_size),
        fake_queue_size=int(fqs if fqs is not None else default_size),
        temperature=float(temp if temp is not None else 0.2),
        real_weight=real_w, fake_weight=fake_w, g_weight=g_w, augpipe=augpipe or DEFAULT_AUGPIPE,
        aug_p=aug_p)


def _cv_config(c: dnnlib.EasyDict, *, cv: Optional[str], loss: Optional[str], warmup: Optional[int],
               aug: Optional[str], weights: Sequence[str], lr: float, from_pickle: bool) -> Optional[dnnlib.EasyDict]:
    """The vision-aided head entry of `heads_kwargs`, or None without --cv.

    --cv-aug=ada adds the branch's own adaptive controller (target 0.3, on the sign of the
    heads' real logits) driving the head's own ADA pipe ('cv.aug.ada').
    """
    given = [flag for flag, v in [('--cv-loss', loss), ('--cv-warmup', warmup), ('--cv-aug', aug),
                                  ('--cv-weights', tuple(weights or ()) or None)] if v is not None]
    if cv is None:
        if given:
            raise ConfigError(given[0], 'only applies with --cv (the backbone list)')
        return None
    from training.heads import backbones, vision_aided  # pylint: disable=import-outside-toplevel
    try:
        names = backbones.parse_backbones(cv)
    except (KeyError, ValueError) as e:
        raise ConfigError('--cv', str(e.args[0] if e.args else e)) from e
    loss = CV_DEFAULT_LOSS if loss is None else loss
    if loss not in vision_aided.LOSS_NAMES:
        raise ConfigError('--cv-loss', f'unknown loss {loss!r}; choose one of {", ".join(vision_aided.LOSS_NAMES)}')
    warmup = CV_DEFAULT_WARMUP if warmup is None else warmup
    if warmup < 0:
        raise ConfigError('--cv-warmup', f'must be a non-negative number of images, got {warmup}')
    aug = CV_DEFAULT_AUG if aug is None else aug
    try:
        vision_aided.augment_specs(aug)
    except ValueError as e:
        raise ConfigError('--cv-aug', str(e)) from e
    try:
        weight_files = backbones.parse_weights(weights)
    except (KeyError, ValueError) as e:
        raise ConfigError('--cv-weights', str(e.args[0] if e.args else e)) from e
    extra = sorted(set(weight_files) - set(names))
    if extra:
        raise ConfigError('--cv-weights', f'names {", ".join(extra)}, which --cv={cv} does not list')
    if aug == 'ada':
        speed = RESUME_SPEED_KIMG if from_pickle else DEFAULT_SPEED_KIMG
        ctrl = _controller('cv', vision_aided.ADA_TARGET, speed, [CV_MODULE])
        ctrl.stat = vision_aided.SIGN_STAT
        c.controllers.append(ctrl)
    return dnnlib.EasyDict(class_name=CV_CLASS, backbones=names, loss=loss, warmup_nimg=int(warmup), aug=aug,
                           weights=weight_files, lr=float(lr))


def _method_desc(*, aug: str, p: Optional[float], target: Optional[float], with_dataaug: bool, ada_own_p: bool,
                 ada_target: Optional[float], augpipe: Optional[str], diffaugment: Optional[str]) -> str:
    desc = f'-{aug}'
    if p is not None:
        desc += f'-p{_g(p)}'
    if target is not None:
        desc += f'-target{_g(target)}'
    if with_dataaug:
        desc += '-dataaug'
    if augpipe is not None:
        desc += f'-{augpipe}'
    if ada_own_p:
        desc += '-adaownp'
    if ada_target is not None:
        desc += f'-adatarget{_g(ada_target)}'
    if diffaugment:
        desc += '-diffaug-' + '-'.join(x.strip() for x in diffaugment.split(',') if x.strip())
    return desc


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
