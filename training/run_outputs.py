"""What a run writes besides checkpoints: log.txt, stats.jsonl, TensorBoard events, the
sample grids (reals.png, fakes_init.png, fakes<kimg>.png) and metric-<name>.jsonl.
"""

import io
import json
import os
import sys
from typing import Any, Dict, Tuple

import numpy as np
import PIL.Image
import torch

import dnnlib
from torch_utils import training_stats
from training import training_state

try:
    import psutil
except ImportError:  # Memory is then read from resource.getrusage.
    psutil = None


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


def grid_setup(training_set, random_seed: int, max_side: int = 16) -> Tuple[Tuple[int, int], np.ndarray, np.ndarray]:
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


class Outputs:
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


@torch.no_grad()
def generate_grid(G_ema: torch.nn.Module, grid_z: torch.Tensor, grid_c: torch.Tensor, batch_gpu: int,
                   dev: torch.device) -> torch.Tensor:
    """G_ema images of the fixed grid latents (constant noise, so grids are comparable)."""
    images = [G_ema(z.to(dev), c.to(dev), noise_mode='const').cpu()
              for z, c in zip(grid_z.split(batch_gpu), grid_c.split(batch_gpu))]
    return torch.cat(images)


def take_tag(taken: set, cur_nimg: int) -> str:
    """The <kimg> of a snapshot name, unique among `taken` (which it joins)."""
    tag = training_state.snapshot_tag(cur_nimg, taken)
    taken.add(tag)
    return tag


def report_tick(log, dev: torch.device, *, cur_tick: int, cur_nimg: int, tick_start_nimg: int,
                tick_start_time: float, tick_end_time: float, start_time: float, maintenance_time: float,
                p_values) -> None:
    """The progress line of a tick (log.txt and the console) and its statistics."""
    for label, value in p_values:
        training_stats.report0(f'Augment/{label}/p', value)
    cpu_mem = (psutil.Process(os.getpid()).memory_info().rss if psutil is not None else maxrss()) / 2 ** 30
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


def maxrss() -> float:
    import resource  # pylint: disable=import-outside-toplevel
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def run_metrics(c, G_ema: torch.nn.Module, snapshot_pkl: str, rank: int, dev: torch.device) -> None:
    """Computes each configured metric of G_ema and appends it to metric-<name>.jsonl."""
    from metrics import metric_main  # pylint: disable=import-outside-toplevel
    dataset_kwargs = c.metric_set_kwargs
    if dataset_kwargs is None:
        dataset_kwargs = dict(c.training_set_kwargs, max_size=None)
    for metric in c.metrics:
        result = metric_main.calc_metric(metric=metric, G=G_ema, dataset_kwargs=dataset_kwargs,
                                         num_gpus=c.num_gpus, rank=rank, device=dev,
                                         detector=c.get('metric_detector'),
                                         detector_dir=c.get('metric_detector_dir'))
        if rank == 0:
            metric_main.report_metric(result, run_dir=c.run_dir, snapshot_pkl=snapshot_pkl)
        for name, value in result['results'].items():
            training_stats.report0(f'Metrics/{name}', value)
