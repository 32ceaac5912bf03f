"""Machinery shared by the metrics: options, feature statistics, the dataset statistics cache,
image generation, feature extraction, and sharding of both across ranks.

Sharding is deterministic. Work is cut into units of `batch_size` items (dataset images, or
generated samples); unit j goes to rank j % num_gpus, and after every round the ranks'
results are gathered and concatenated in unit order. Sample i's latent and label derive from
(seed, i) alone, and each unit's noise from (seed, j), so the features, and hence every
metric, do not depend on the number of ranks.
"""

import contextlib
import copy
import hashlib
import inspect
import json
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

import dnnlib
from . import detectors

STATS_CACHE_VERSION = 1  # Bump when the feature pipeline changes what cached statistics mean.


# ---------------------------------------------------------------------------------------
# Options.

class MetricOptions:
    """Everything a metric needs: the generator, the data, the ranks and the detectors.

    Args:
        G: generator (anything with z_dim, c_dim, img_resolution, img_channels and the
            G(z, c, **G_kwargs) call); None for dataset-only work.
        G_kwargs: extra keyword arguments of the generator call (e.g. truncation_psi).
        dataset_kwargs: kwargs of the dataset class, with `class_name`.
        num_gpus: number of ranks taking part (torch.distributed must be set up when > 1).
        rank: this process's rank.
        device: where generation and detectors run; default cuda when available, else cpu.
        progress: None (quiet), True (progress bars on rank 0), or a callable
            `progress(stage: str, done: int, total: int)`.
        cache: read and write the dataset statistics cache.
        detector: replacement detector(s), see `detectors.get_detector`.
        detector_dir: folder searched first for the official detector files.
        seed: seed of latents, labels, noise and subset choices.
        batch_size: items per unit of work (per detector call).
        gen_batch: images per generator call.
        num_workers: data-loader workers for dataset images (default 3 on CUDA, 0 on CPU).
    """

    def __init__(self, G=None, G_kwargs: Optional[dict] = None, dataset_kwargs: Optional[dict] = None,
                 num_gpus: int = 1, rank: int = 0, device: Any = None, progress: Any = None,
                 cache: bool = True, detector: detectors.DetectorSpec = None,
                 detector_dir: Optional[str] = None, seed: int = 0, batch_size: int = 64,
                 gen_batch: int = 4, num_workers: Optional[int] = None):
        if not 0 <= rank < num_gpus:
            raise ValueError(f'rank {rank} is outside [0, num_gpus={num_gpus}).')
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.G = G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs or {})
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs or {})
        self.num_gpus = num_gpus
        self.rank = rank
        self.device = torch.device(device)
        self.progress = progress
        self.cache = cache
        self.detector = detector
        self.detector_dir = detector_dir
        self.seed = seed
        self.batch_size = batch_size
        self.gen_batch = max(1, min(gen_batch, batch_size))
        self.num_workers = num_workers if num_workers is not None else (3 if self.device.type == 'cuda' else 0)
        self.timings: Dict[str, float] = {}  # Seconds per phase ('generate', 'detect', 'load'), this rank.

    def get_detector(self, role: str) -> detectors.Detector:
        """The detector of a role ('inception' or 'vgg16') on this rank's device."""
        return detectors.get_detector(role, self.detector, self.device, self.detector_dir)

    def add_time(self, phase: str, seconds: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds


# ---------------------------------------------------------------------------------------
# Progress reporting.

class Progress:
    """Progress of one stage: a tqdm bar on rank 0, a user callback, or nothing."""

    def __init__(self, opts: MetricOptions, stage: str, total: int):
        self.stage, self.total, self.done = stage, total, 0
        self._callback = opts.progress if callable(opts.progress) else None
        self._bar = None
        if opts.progress is True and opts.rank == 0:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=stage, unit='img', dynamic_ncols=True, leave=True)

    def update(self, n: int) -> None:
        n = min(n, self.total - self.done)
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self._callback is not None:
            self._callback(self.stage, self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------------------------------
# Collectives. With one rank they do nothing, so no process group is needed.

def _comm_device(opts: MetricOptions) -> torch.device:
    # NCCL moves CUDA tensors only; gloo moves CPU tensors.
    if opts.num_gpus > 1 and torch.distributed.get_backend() == 'nccl':
        return opts.device
    return torch.device('cpu')


def gather_units(x: torch.Tensor, opts: MetricOptions) -> torch.Tensor:
    """Concatenates one equally shaped unit result per rank, in rank order.

    Args:
        x: this rank's result for the current round, [n, ...] (same shape on every rank).
        opts: metric options (num_gpus, device).

    Returns:
        [num_gpus * n, ...] on this rank's device.
    """
    if opts.num_gpus == 1:
        return x
    y = x.to(_comm_device(opts)).contiguous()
    parts = [torch.empty_like(y) for _ in range(opts.num_gpus)]
    torch.distributed.all_gather(parts, y)
    return torch.cat(parts).to(x.device)


def append_units(stats: 'FeatureStats', features: torch.Tensor, opts: MetricOptions) -> None:
    """Adds gathered features unit by unit, so float64 sums accumulate in the same order for
    any number of ranks."""
    for part in features.cpu().numpy().reshape(opts.num_gpus, -1, features.shape[-1]):
        stats.append(part)


def broadcast_flag(flag: bool, opts: MetricOptions) -> bool:
    """Rank 0's value of a boolean, on every rank."""
    if opts.num_gpus == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_comm_device(opts))
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


def barrier(opts: MetricOptions) -> None:
    if opts.num_gpus > 1:
        torch.distributed.barrier()


def rank_rounds(num_items: int, opts: MetricOptions, batch_size: Optional[int] = None) -> List[int]:
    """Unit indices this rank handles, one per round, covering at least num_items items.

    Every rank gets the same number of rounds (so collectives line up); units past the end
    produce items that are dropped after gathering.

    Args:
        num_items: items needed in total.
        opts: metric options (num_gpus, rank, batch_size).
        batch_size: items per unit; default opts.batch_size.

    Returns:
        Unit indices j (unit j covers items j*batch_size .. (j+1)*batch_size-1).
    """
    num_units = max(1, -(-num_items // (batch_size or opts.batch_size)))
    num_rounds = -(-num_units // opts.num_gpus)
    return [r * opts.num_gpus + opts.rank for r in range(num_rounds)]


# ---------------------------------------------------------------------------------------
# Feature statistics.

class FeatureStats:
    """Accumulates features: all rows, and/or the float64 sums for mean and covariance.

    Args:
        capture_all: keep every row (KID, PR, IS, PPL).
        capture_mean_cov: accumulate sum(x) and sum(x^T x) in float64 (FID).
        max_items: stop accepting rows after this many (None: unlimited).
    """

    def __init__(self, capture_all: bool = False, capture_mean_cov: bool = False,
                 max_items: Optional[int] = None):
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.max_items = max_items
        self.num_items = 0
        self.num_features: Optional[int] = None
        self.all_features: List[np.ndarray] = []
        self.raw_mean: Optional[np.ndarray] = None
        self.raw_cov: Optional[np.ndarray] = None

    def set_num_features(self, num_features: int) -> None:
        if self.num_features is not None and self.num_features != num_features:
            raise ValueError(f'Feature size changed from {self.num_features} to {num_features}.')
        if self.num_features is None:
            self.num_features = num_features
            if self.capture_mean_cov:
                self.raw_mean = np.zeros([num_features], dtype=np.float64)
                self.raw_cov = np.zeros([num_features, num_features], dtype=np.float64)

    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def append(self, x: np.ndarray) -> None:
        """Adds rows [n, num_features]; rows past max_items are ignored."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f'Features must be [N, C], got shape {x.shape}.')
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        self.set_num_features(x.shape[1])
        if x.shape[0] == 0:
            return
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_mean += x64.sum(axis=0)
            self.raw_cov += x64.T @ x64

    def get_all(self) -> np.ndarray:
        if not self.capture_all:
            raise RuntimeError('FeatureStats was created without capture_all.')
        if not self.all_features:
            return np.zeros([0, self.num_features or 0], dtype=np.float32)
        return np.concatenate(self.all_features, axis=0)

    def get_all_torch(self) -> torch.Tensor:
        return torch.from_numpy(self.get_all())

    def get_mean_cov(self) -> Tuple[np.ndarray, np.ndarray]:
        """Mean and (biased, 1/N) covariance, as in the established FID code."""
        if not self.capture_mean_cov:
            raise RuntimeError('FeatureStats was created without capture_mean_cov.')
        if self.num_items == 0:
            raise RuntimeError('No features were accumulated.')
        mean = self.raw_mean / self.num_items
        cov = self.raw_cov / self.num_items - np.outer(mean, mean)
        return mean, cov

    def save(self, path: str) -> None:
        """Writes the statistics to an .npz file atomically (no pickled objects)."""
        arrays = dict(capture_all=np.array(self.capture_all), capture_mean_cov=np.array(self.capture_mean_cov),
                      max_items=np.array(-1 if self.max_items is None else self.max_items),
                      num_items=np.array(self.num_items), num_features=np.array(self.num_features or 0))
        if self.capture_all:
            arrays['all_features'] = self.get_all()
        if self.capture_mean_cov:
            arrays['raw_mean'] = self.raw_mean
            arrays['raw_cov'] = self.raw_cov
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with dnnlib.atomic_write(path, 'wb') as f:
            np.savez(f, **arrays)

    @staticmethod
    def load(path: str) -> 'FeatureStats':
        """Reads statistics written by `save`."""
        with np.load(path, allow_pickle=False) as data:
            max_items = int(data['max_items'])
            stats = FeatureStats(capture_all=bool(data['capture_all']),
                                 capture_mean_cov=bool(data['capture_mean_cov']),
                                 max_items=None if max_items < 0 else max_items)
            stats.num_items = int(data['num_items'])
            stats.num_features = int(data['num_features']) or None
            if stats.capture_all:
                stats.all_features = [data['all_features']]
            if stats.capture_mean_cov:
                stats.raw_mean = data['raw_mean']
                stats.raw_cov = data['raw_cov']
        return stats


# ---------------------------------------------------------------------------------------
# Images in the detectors' format.

def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] to uint8 exactly as the established code does it."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Repeats grayscale images to 3 channels; the detectors take RGB only."""
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    return images


# ---------------------------------------------------------------------------------------
# Datasets.

def construct_dataset(opts: MetricOptions):
    """Builds the dataset of `opts.dataset_kwargs` (class given by `class_name`)."""
    if not opts.dataset_kwargs.get('class_name'):
        raise ValueError('The metrics need a dataset: dataset_kwargs has no class_name '
                         '(give --metricdata to calc_metrics.py).')
    return dnnlib.construct_class_by_name(**opts.dataset_kwargs)


def get_label(dataset, idx: int) -> np.ndarray:
    """The label of dataset item idx, without decoding its image where the dataset allows."""
    if hasattr(dataset, 'get_label'):
        return np.asarray(dataset.get_label(idx), dtype=np.float32)
    return np.asarray(dataset[idx][1], dtype=np.float32)


def dataset_fingerprint(dataset_kwargs: dict) -> Any:
    """What identifies the data on disk: size and mtime of the file, or of every file in a folder."""
    path = dataset_kwargs.get('path')
    if not isinstance(path, str) or not os.path.exists(path):
        return None  # E.g. the built-in demo data: its kwargs identify it.
    path = os.path.abspath(path)
    if os.path.isfile(path):
        st = os.stat(path)
        return [path, st.st_size, st.st_mtime_ns]
    md5 = hashlib.md5()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for fname in sorted(files):
            st = os.stat(os.path.join(root, fname))
            md5.update(f'{os.path.relpath(os.path.join(root, fname), path)}|{st.st_size}|{st.st_mtime_ns}\n'.encode())
    return [path, md5.hexdigest()]


def stats_cache_path(opts: MetricOptions, dataset, detector: detectors.Detector,
                     detector_kwargs: dict, stats_kwargs: dict) -> str:
    """Cache file of a dataset's statistics: keyed by an MD5 of everything they depend on."""
    key = dict(version=STATS_CACHE_VERSION, dataset_kwargs=dict(opts.dataset_kwargs),
               fingerprint=dataset_fingerprint(opts.dataset_kwargs), num_items=len(dataset),
               detector=detector.identity, detector_kwargs=detector_kwargs, stats_kwargs=stats_kwargs)
    digest = hashlib.md5(json.dumps(key, sort_keys=True, default=repr).encode()).hexdigest()
    name = str(getattr(dataset, 'name', 'dataset')).replace(os.sep, '_')
    return dnnlib.make_cache_dir_path('gan-metrics', f'{name}-{detector.name}-{digest}.npz')


def _dataset_units(dataset, units: Sequence[int], num_items: int, opts: MetricOptions) -> Iterator[torch.Tensor]:
    """Yields the uint8 image batch of each unit; unit j holds items j*B .. j*B+B-1 (wrapping)."""
    B = opts.batch_size
    batches = [[(j * B + k) % num_items for k in range(B)] for j in units]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=opts.num_workers,
                                         pin_memory=(opts.device.type == 'cuda'))
    for images, _labels in loader:
        yield torch.as_tensor(images)


def compute_feature_stats_for_dataset(opts: MetricOptions, detector_role: str, detector_kwargs: dict,
                                      max_items: Optional[int] = None, **stats_kwargs) -> FeatureStats:
    """Features of the first `max_items` dataset images (all when None), cached on disk.

    Args:
        opts: metric options (dataset_kwargs, ranks, device, cache).
        detector_role: 'inception' or 'vgg16'.
        detector_kwargs: keyword arguments of the detector call, e.g. return_features=True.
        max_items: cap on the number of dataset images.
        **stats_kwargs: FeatureStats options (capture_all, capture_mean_cov).

    Returns:
        FeatureStats on every rank.
    """
    dataset = construct_dataset(opts)
    num_items = len(dataset) if max_items is None else min(len(dataset), max_items)
    if num_items == 0:
        raise ValueError(f'The metric dataset {opts.dataset_kwargs.get("path", "")!r} has no images.')
    detector = opts.get_detector(detector_role)

    # Reuse statistics computed before: rank 0 decides, so every rank takes the same path.
    cache_file = None
    if opts.cache:
        cache_file = stats_cache_path(opts, dataset, detector, detector_kwargs,
                                      dict(stats_kwargs, max_items=num_items))
        if broadcast_flag(opts.rank == 0 and os.path.isfile(cache_file), opts):
            return FeatureStats.load(cache_file)

    stats = FeatureStats(max_items=num_items, **stats_kwargs)
    progress = Progress(opts, f'{dataset.name if hasattr(dataset, "name") else "dataset"} features', num_items)
    units = rank_rounds(num_items, opts)
    t_load = time.time()
    for images in _dataset_units(dataset, units, num_items, opts):
        opts.add_time('load', time.time() - t_load)
        t0 = time.time()
        features = detector(to_rgb(images.to(opts.device)), **detector_kwargs)
        features = gather_units(features.reshape(features.shape[0], -1).to(torch.float32), opts)
        append_units(stats, features, opts)
        opts.add_time('detect', time.time() - t0)
        progress.update(features.shape[0])
        t_load = time.time()
    progress.close()

    if cache_file is not None and opts.rank == 0:
        stats.save(cache_file)
    barrier(opts)
    return stats


# ---------------------------------------------------------------------------------------
# Generated images.

def derive_seed(*values: int) -> int:
    """A 63-bit seed that depends on all `values` (e.g. (seed, stream, index))."""
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_latents(seed: int, indices: Sequence[int], z_dim: int,
                   num_labels: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Latents and dataset label indices of samples, each from its own (seed, i) generator.

    Args:
        seed: metric seed.
        indices: global sample indices.
        z_dim: latent size.
        num_labels: dataset size to draw label indices from (0: no labels).

    Returns:
        z [len(indices), z_dim] float32 and label indices [len(indices)] int64.
    """
    z = np.empty([len(indices), z_dim], dtype=np.float32)
    label_idx = np.zeros([len(indices)], dtype=np.int64)
    for row, i in enumerate(indices):
        rng = np.random.default_rng([seed, int(i)])
        z[row] = rng.standard_normal(z_dim)
        if num_labels > 0:
            label_idx[row] = rng.integers(num_labels)
    return z, label_idx


class LabelSampler:
    """Labels for a conditional generator, drawn from the dataset (as the established code does)."""

    def __init__(self, opts: MetricOptions, c_dim: int):
        self.c_dim = c_dim
        self.dataset = construct_dataset(opts) if c_dim > 0 else None
        self.num_labels = len(self.dataset) if self.dataset is not None else 0
        self._cache: Dict[int, np.ndarray] = {}

    def labels(self, label_idx: np.ndarray) -> np.ndarray:
        if self.c_dim == 0:
            return np.zeros([len(label_idx), 0], dtype=np.float32)
        rows = []
        for idx in label_idx:
            idx = int(idx)
            if idx not in self._cache:
                self._cache[idx] = get_label(self.dataset, idx)
            rows.append(self._cache[idx])
        c = np.stack(rows).astype(np.float32).reshape(len(label_idx), -1)
        if c.shape[1] != self.c_dim:
            raise ValueError(f'Dataset labels have {c.shape[1]} values, the generator expects c_dim={self.c_dim}.')
        return c


def prepare_generator(opts: MetricOptions) -> torch.nn.Module:
    """A private evaluation copy of G on the metric device (the caller's G is never touched)."""
    if opts.G is None:
        raise ValueError('This metric needs a generator, but none was given.')
    return copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)


def call_accepts(fn: Callable, name: str) -> bool:
    """Whether `fn` takes the keyword argument `name` (directly or through **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind == inspect.Parameter.VAR_KEYWORD for p in params)


@contextlib.contextmanager
def seeded_rng(device: torch.device, seed: int):
    """Reseeds the CPU generator (and `device`'s CUDA generator) for a block, then restores them."""
    fork_devices = [device] if device.type == 'cuda' else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.default_generator.manual_seed(seed)
        if device.type == 'cuda':
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def generate_unit(G: torch.nn.Module, unit: int, labels: LabelSampler, opts: MetricOptions) -> torch.Tensor:
    """uint8 RGB images of samples unit*B .. unit*B+B-1; identical on any rank.

    Latents and labels come from (seed, sample index); the generator's random noise is drawn
    from the global generator reseeded with (seed, unit) inside a forked RNG, so the caller's
    random state is left as it was.
    """
    B = opts.batch_size
    indices = range(unit * B, unit * B + B)
    z, label_idx = sample_latents(opts.seed, indices, G.z_dim, labels.num_labels)
    z = torch.from_numpy(z).to(opts.device)
    c = torch.from_numpy(labels.labels(label_idx)).to(opts.device)
    images = []
    with seeded_rng(opts.device, derive_seed(opts.seed, 1, unit)):
        with torch.no_grad():
            for k in range(0, B, opts.gen_batch):
                img = G(z[k:k + opts.gen_batch], c[k:k + opts.gen_batch], **opts.G_kwargs)
                images.append(to_rgb(to_uint8(img)))
    return torch.cat(images)


def compute_feature_stats_for_generator(opts: MetricOptions, detector_role: str, detector_kwargs: dict,
                                        max_items: int, **stats_kwargs) -> FeatureStats:
    """Features of `max_items` generated images (sample i from (seed, i)).

    Args:
        opts: metric options (G, G_kwargs, dataset_kwargs for labels, ranks, device).
        detector_role: 'inception' or 'vgg16'.
        detector_kwargs: keyword arguments of the detector call.
        max_items: number of generated images.
        **stats_kwargs: FeatureStats options (capture_all, capture_mean_cov).

    Returns:
        FeatureStats on every rank.
    """
    G = prepare_generator(opts)
    labels = LabelSampler(opts, G.c_dim)
    detector = opts.get_detector(detector_role)
    stats = FeatureStats(max_items=max_items, **stats_kwargs)
    progress = Progress(opts, 'generator features', max_items)
    for unit in rank_rounds(max_items, opts):
        t0 = time.time()
        images = generate_unit(G, unit, labels, opts)
        if opts.device.type == 'cuda':
            torch.cuda.synchronize(opts.device)
        t1 = time.time()
        features = detector(images, **detector_kwargs)
        features = features.reshape(features.shape[0], -1).to(torch.float32)
        if opts.device.type == 'cuda':
            torch.cuda.synchronize(opts.device)
        t2 = time.time()
        features = gather_units(features, opts)
        append_units(stats, features, opts)
        opts.add_time('generate', t1 - t0)
        opts.add_time('detect', t2 - t1)
        progress.update(features.shape[0])
    progress.close()
    return stats
