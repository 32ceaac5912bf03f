#!/usr/bin/env python
"""Benchmark of fid50k_full: time for generation plus feature extraction, and the share of
it spent in the feature detector.

The reference configuration is a 256x256 StyleGAN2 generator (paper256-like widths) on one
GPU with the official Inception detector and 50k generated and 50k real images:

    python benchmarks/bench_metrics.py --device=cuda --res=256 --num-gen=50000

Without the official detector file (no network), `--detector=random-inception` uses an
Inception-v3 of the same architecture with random weights (torchvision): the numbers are
meaningless as FID, but the time is representative. A small CPU run that proves the
script works:

    python benchmarks/bench_metrics.py --device=cpu --res=32 --num-gen=64 \\
        --channel-base=1024 --channel-max=64 --detector=random-inception

Real images come from `--data` (a dataset zip) or, by default, from random in-memory images
of the same shape, so that only decoding differs from a real run.
"""

import json
import os
import sys
import time

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dnnlib  # noqa: E402
from metrics import frechet_inception_distance, metric_utils  # noqa: E402


class RandomImageDataset(torch.utils.data.Dataset):
    """In-memory stand-in for a dataset zip: deterministic random uint8 images."""

    def __init__(self, size: int, resolution: int, channels: int = 3, seed: int = 0):
        self.size, self.resolution, self.channels, self.seed = size, resolution, channels, seed
        self.name = f'random{resolution}'

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx: int):
        rng = np.random.default_rng([self.seed, idx])
        img = rng.integers(0, 256, size=[self.channels, self.resolution, self.resolution], dtype=np.uint8)
        return img, np.zeros([0], dtype=np.float32)


class RandomInception(torch.nn.Module):
    """Inception-v3 with random weights and the official detector's call signature (timing only)."""

    def __init__(self):
        super().__init__()
        import torchvision  # pylint: disable=import-outside-toplevel
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                              transform_input=False)
        self.body = torch.nn.Sequential(*[m for name, m in net.named_children() if name not in ('dropout', 'fc')])
        self.fc = net.fc

    def forward(self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False):
        x = torch.nn.functional.interpolate(img.to(torch.float32), size=(299, 299), mode='bilinear',
                                            align_corners=False)
        features = self.body((x - 128) / 128).flatten(1)
        if return_features:
            return features
        return torch.softmax(self.fc(features), dim=1)


def build_generator(res: int, channel_base: int, channel_max: int, z_dim: int, map_layers: int,
                    num_fp16_res: int) -> torch.nn.Module:
    from training import networks  # pylint: disable=import-outside-toplevel
    torch.manual_seed(0)
    return networks.Generator(z_dim=z_dim, c_dim=0, w_dim=z_dim, img_resolution=res, img_channels=3,
                              mapping_kwargs=dict(num_layers=map_layers),
                              synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max,
                                                    num_fp16_res=num_fp16_res, conv_clamp=256 if num_fp16_res else None))


@click.command()
@click.option('--device', type=click.Choice(['cuda', 'cpu']), default=None, help='[default: cuda when available]')
@click.option('--res', type=int, default=256, show_default=True, help='Image resolution.')
@click.option('--num-gen', type=click.IntRange(min=2), default=50000, show_default=True, help='Generated images.')
@click.option('--num-real', type=click.IntRange(min=2), default=None, help='Real images  [default: --num-gen]')
@click.option('--data', metavar='ZIP', default=None, help='Dataset zip for the real images  [default: random images]')
@click.option('--detector', default=None, metavar='PATH|random-inception',
              help='Detector file, or random-inception  [default: the official Inception]')
@click.option('--batch', type=click.IntRange(min=1), default=64, show_default=True, help='Images per detector call.')
@click.option('--gen-batch', type=click.IntRange(min=1), default=4, show_default=True, help='Images per G call.')
@click.option('--channel-base', type=int, default=16384, show_default=True, help='G width (paper256: 16384).')
@click.option('--channel-max', type=int, default=512, show_default=True)
@click.option('--z-dim', type=int, default=512, show_default=True)
@click.option('--map-layers', type=int, default=8, show_default=True)
@click.option('--fp16-res', type=int, default=None, help='G layers in fp16  [default: 4 on cuda, 0 on cpu]')
@click.option('--workers', type=int, default=None, help='Data-loader workers  [default: 3 on cuda, 0 on cpu]')
def main(device, res, num_gen, num_real, data, detector, batch, gen_batch, channel_base, channel_max, z_dim,
         map_layers, fp16_res, workers):
    """Time fid50k_full-style evaluation: real features, generation, generated features."""
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    num_real = num_real or num_gen
    fp16_res = (4 if device == 'cuda' else 0) if fp16_res is None else fp16_res
    if data is not None:
        dataset_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, resolution=res)
    else:
        dataset_kwargs = dnnlib.EasyDict(class_name='__main__.RandomImageDataset', size=num_real, resolution=res)
    det = RandomInception() if detector == 'random-inception' else detector
    G = build_generator(res, channel_base, channel_max, z_dim, map_layers, fp16_res)
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=dataset_kwargs, device=device, cache=False,
                                      detector=det, batch_size=batch, gen_batch=gen_batch, num_workers=workers,
                                      progress=True)
    opts.get_detector('inception')  # Load once, outside the timings.

    def timed_mean_cov(compute_fn, max_items):
        """Inception mean/cov from `compute_fn`, its wall time (device synced) and per-phase timings."""
        if opts.device.type == 'cuda':
            torch.cuda.synchronize(opts.device)
        opts.timings.clear()
        t0 = time.time()
        mu, sig = compute_fn(opts, 'inception', dict(return_features=True), max_items=max_items,
                             capture_mean_cov=True).get_mean_cov()
        if opts.device.type == 'cuda':
            torch.cuda.synchronize(opts.device)
        return mu, sig, time.time() - t0, dict(opts.timings)

    # Real side: what a cold statistics cache costs (once per dataset).
    mu_r, sig_r, t_real, real_timings = timed_mean_cov(metric_utils.compute_feature_stats_for_dataset, num_real)
    # Generated side: paid at every evaluation.
    mu_g, sig_g, t_gen, gen_timings = timed_mean_cov(metric_utils.compute_feature_stats_for_generator, num_gen)

    t0 = time.time()
    fid = frechet_inception_distance.frechet_distance(mu_g, sig_g, mu_r, sig_r)
    t_fid = time.time() - t0

    detect = real_timings.get('detect', 0) + gen_timings.get('detect', 0)
    total = t_real + t_gen + t_fid
    report = dict(
        device=torch.cuda.get_device_name(opts.device) if opts.device.type == 'cuda' else 'cpu',
        threads=torch.get_num_threads(), res=res, num_gen=num_gen, num_real=num_real, batch=batch,
        gen_batch=gen_batch, detector=('random-inception' if detector == 'random-inception'
                                       else opts.get_detector('inception').name),
        total_s=round(total, 3), real_features_s=round(t_real, 3), generated_s=round(t_gen, 3),
        generation_s=round(gen_timings.get('generate', 0), 3), detector_s=round(detect, 3),
        frechet_s=round(t_fid, 3), detector_fraction=round(detect / total, 4),
        detector_fraction_warm_cache=round(gen_timings.get('detect', 0) / (t_gen + t_fid), 4),
        gen_img_per_s=round(num_gen / t_gen, 2), fid=round(fid, 4))
    print(json.dumps(report))


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
