"""The metric registry and the entry points used by the training loop and calc_metrics.py.

Names follow the established ones: fid50k_full, kid50k_full, pr50k3_full, ppl2_wend,
ppl_zfull, ppl_wfull, ppl_zend, ppl_wend, is50k, fid50k, kid50k, pr50k3. The same families
accept other sample counts for small datasets and quick checks, e.g. fid10k_full, fid2k,
kid5k_full, pr10k3_full, is10k, ppl2_wend10k, or plain numbers (fid500_full).

`_full` compares against every image of the metric dataset (for KID at most 1M, for PR at
most 200k, as established); without it, against as many dataset images as are generated.
Functions registered with `@register_metric` take MetricOptions and return a dict of results.
"""

import json
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional

import dnnlib
from . import (frechet_inception_distance, inception_score, kernel_inception_distance,
               metric_utils, perceptual_path_length, precision_recall)

MetricFn = Callable[[metric_utils.MetricOptions], Dict[str, float]]

_metric_dict: Dict[str, MetricFn] = {}

ESTABLISHED_METRICS = ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'ppl2_wend', 'ppl_zfull', 'ppl_wfull',
                       'ppl_zend', 'ppl_wend', 'is50k', 'fid50k', 'kid50k', 'pr50k3']
SHORT_METRICS = ['fid10k_full', 'fid5k_full', 'fid2k_full', 'fid10k', 'kid10k_full', 'kid10k',
                 'pr10k3_full', 'pr10k3', 'is10k', 'ppl2_wend10k']


def register_metric(fn: MetricFn) -> MetricFn:
    """Decorator: adds a metric under the function's name; it gets MetricOptions, returns a dict."""
    if not callable(fn):
        raise TypeError('register_metric expects a function.')
    _metric_dict[fn.__name__] = fn
    return fn


# ---------------------------------------------------------------------------------------
# Families of built-in metrics, parsed from the name.

def _count(digits: Optional[str], k: Optional[str], default: int) -> int:
    if digits is None:
        return default
    return int(digits) * (1000 if k else 1)


def _fid(name: str, m: 're.Match') -> MetricFn:
    num_gen = _count(m[1], m[2], 50000)
    max_real = None if m[3] else num_gen
    return lambda opts: {name: frechet_inception_distance.compute_fid(opts, max_real=max_real, num_gen=num_gen)}


def _kid(name: str, m: 're.Match') -> MetricFn:
    num_gen = _count(m[1], m[2], 50000)
    max_real = 1000000 if m[3] else num_gen
    return lambda opts: {name: kernel_inception_distance.compute_kid(opts, max_real=max_real, num_gen=num_gen,
                                                                     num_subsets=100, max_subset_size=1000)}


def _pr(name: str, m: 're.Match') -> MetricFn:
    num_gen = _count(m[1], m[2], 50000)
    max_real = 200000 if m[4] else num_gen
    nhood = int(m[3])

    def fn(opts):
        r = precision_recall.compute_pr(opts, max_real=max_real, num_gen=num_gen, nhood_size=nhood)
        return {f'{name}_precision': r['precision'], f'{name}_recall': r['recall']}
    return fn


def _is(name: str, m: 're.Match') -> MetricFn:
    num_gen = _count(m[1], m[2], 50000)

    def fn(opts):
        mean, std = inception_score.compute_is(opts, num_gen=num_gen, num_splits=10)
        return {f'{name}_mean': mean, f'{name}_std': std}
    return fn


def _ppl(name: str, m: 're.Match') -> MetricFn:
    crop = m[1] == 'ppl'  # 'ppl2_*' is the uncropped variant of StyleGAN2.
    num_samples = _count(m[4], m[5], 50000)
    return lambda opts: {name: perceptual_path_length.compute_ppl(
        opts, num_samples=num_samples, epsilon=1e-4, space=m[2], sampling=m[3], crop=crop, batch_size=2)}


_FAMILIES = [
    (re.compile(r'fid(\d+)(k?)(_full)?'), _fid),
    (re.compile(r'kid(\d+)(k?)(_full)?'), _kid),
    (re.compile(r'pr(\d+)(k?)(\d)(_full)?'), _pr),
    (re.compile(r'is(\d+)(k?)'), _is),
    (re.compile(r'(ppl2?)_([zw])(full|end)(?:(\d+)(k?))?'), _ppl),
]


def get_metric_fn(name: str) -> MetricFn:
    """The function of a metric name (registered, or a built-in family).

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    if name in _metric_dict:
        return _metric_dict[name]
    for pattern, build in _FAMILIES:
        m = pattern.fullmatch(name)
        if m and all(int(d) > 0 for d in m.groups() if d and d.isdigit()):
            return build(name, m)
    raise ValueError(f'Unknown metric "{name}". Valid metrics: {", ".join(list_valid_metrics())} '
                     f'(other sample counts work too, e.g. fid2k_full, fid500_full).')


def detector_roles(name: str) -> List[str]:
    """Detector roles a built-in metric uses ('inception' and/or 'vgg16'); [] for custom ones."""
    if name in _metric_dict:
        return []
    for pattern, build in _FAMILIES:
        if pattern.fullmatch(name):
            return ['vgg16'] if build in (_pr, _ppl) else ['inception']
    return []


def is_valid_metric(name: str) -> bool:
    """Whether `name` is a registered metric or a built-in family member."""
    try:
        get_metric_fn(name)
        return True
    except ValueError:
        return False


def list_valid_metrics() -> List[str]:
    """The established metric names, the short variants, and user-registered metrics."""
    return ESTABLISHED_METRICS + SHORT_METRICS + [n for n in _metric_dict if n not in ESTABLISHED_METRICS + SHORT_METRICS]


# ---------------------------------------------------------------------------------------
# Running and reporting.

def run_metric(metric: str, opts: metric_utils.MetricOptions) -> dnnlib.EasyDict:
    """Computes one metric with prepared options.

    Returns:
        EasyDict(results, metric, total_time, total_time_str, num_gpus); the numbers are
        valid on rank 0 (other ranks may hold NaN).
    """
    fn = get_metric_fn(metric)
    start = time.time()
    results = fn(opts)
    total_time = time.time() - start
    return dnnlib.EasyDict(results=dnnlib.EasyDict(results), metric=metric, total_time=total_time,
                           total_time_str=dnnlib.format_time(total_time), num_gpus=opts.num_gpus)


def calc_metric(metric: str, G=None, dataset_kwargs: Optional[dict] = None, num_gpus: int = 1, rank: int = 0,
                device: Any = None, progress: Any = None, cache: bool = True,
                detector: Any = None, **opts_kwargs) -> dnnlib.EasyDict:
    """Computes a metric of a generator against a dataset; the training loop calls this per snapshot.

    Every rank of a process group must call it with the same arguments (except rank).

    Args:
        metric: metric name, see `list_valid_metrics()`.
        G: generator (e.g. G_ema); it is copied, never modified.
        dataset_kwargs: metric dataset kwargs with `class_name` (the full dataset for `_full`).
        num_gpus: number of ranks.
        rank: this rank.
        device: torch device; default cuda when available.
        progress: None, True (progress bars on rank 0) or callable(stage, done, total).
        cache: use the dataset statistics cache.
        detector: replacement detector(s) (path, module, or {role: ...}); None: the official ones.
        **opts_kwargs: further MetricOptions (G_kwargs, detector_dir, seed, batch_size, ...).

    Returns:
        EasyDict(results, metric, total_time, total_time_str, num_gpus).
    """
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=dataset_kwargs, num_gpus=num_gpus, rank=rank,
                                      device=device, progress=progress, cache=cache, detector=detector,
                                      **opts_kwargs)
    return run_metric(metric, opts)


def _append_atomic(path: str, text: str) -> None:
    """Appends text to a file by writing old contents plus text to a temp file and renaming it."""
    old = b''
    if os.path.exists(path):
        with open(path, 'rb') as f:
            old = f.read()
    with dnnlib.atomic_write(path, 'wb') as f:
        f.write(old + text.encode('utf-8'))


def report_metric(result_dict: Dict[str, Any], run_dir: Optional[str] = None,
                  snapshot_pkl: Optional[str] = None) -> str:
    """Prints a result row and appends it to `<run_dir>/metric-<name>.jsonl`.

    Args:
        result_dict: what calc_metric returned.
        run_dir: folder of the jsonl file; None: print only.
        snapshot_pkl: network file the result belongs to (stored relative to run_dir).

    Returns:
        The JSON line.
    """
    metric = result_dict['metric']
    if not is_valid_metric(metric):
        raise ValueError(f'Cannot report unknown metric "{metric}".')
    if snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir) if run_dir is not None else os.path.basename(snapshot_pkl)
    row = dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time())
    line = json.dumps(row)
    print(line)
    if run_dir is not None:
        if not os.path.isdir(run_dir):
            raise FileNotFoundError(f'Run directory "{run_dir}" for metric-{metric}.jsonl does not exist.')
        _append_atomic(os.path.join(run_dir, f'metric-{metric}.jsonl'), line + '\n')
    return line
