#!/usr/bin/env python
"""Rank generated samples by their Mahalanobis distance to the real data's features, and
save the worst and the best.

Examples:

\b
  # 10,000 samples against the training set recorded in the network file, Inception features:
  python rank_samples.py --network=net.pkl --seeds=0-9999 --outdir=ranking

\b
  # The demo network with the shipped digits detector, 16 worst and best:
  python rank_samples.py --network=runs/00000-demo-cpu-apa/network-snapshot-000060.pkl \\
      --metricdata=demo --detector=digits --seeds=0-1999 --k=16 --outdir=ranking --device=cpu

A Gaussian is fitted to the detector features of the real images (the mean and covariance
that FID uses, read from FID's statistics cache when present) and every sample's distance
d = sqrt((x - mu)^T (Sigma + r I)^-1 (x - mu)) is computed. Writes worst.png and best.png
(the K farthest and nearest samples, row by row, worst or best first), ranking.csv (seed
and distance of every sample, worst first) and ranking.json (the options, the K worst and
best). Seeds are generate.py's: `generate.py --seeds=S` makes sample S again.
"""

import csv
import io
import itertools
import json
import math
import os

import click
import numpy as np
import torch

import dnnlib
import generate
from metrics import detectors, metric_utils, sample_ranking
from torch_utils import cli


def dataset_kwargs_for(metricdata, network, G, mirror):
    """The metric dataset's options, built as calc_metrics.py builds them (so the statistics
    share its cache entry)."""
    import calc_metrics  # pylint: disable=import-outside-toplevel
    return calc_metrics.dataset_kwargs_for(metricdata, network, G, mirror)


def iter_sample_batches(G, seeds, c, psi, noise_mode, device, batch):
    """(seeds, uint8 NCHW images) per batch, images as generate.py makes them."""
    it = iter(seeds)
    for ws in generate.iter_seed_ws(G, seeds, c, psi, None, device, batch):
        chunk = list(itertools.islice(it, ws.shape[0]))
        with torch.no_grad():
            yield chunk, metric_utils.to_uint8(G.synthesis(ws, noise_mode=noise_mode))


def write_outputs(outdir: str, ranking: sample_ranking.Ranking, cols: int, meta: dict) -> None:
    order = ranking.order()
    generate.save_png(sample_ranking.tile([img for _, _, img in ranking.worst], cols), os.path.join(outdir, 'worst.png'))
    generate.save_png(sample_ranking.tile([img for _, _, img in ranking.best], cols), os.path.join(outdir, 'best.png'))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator='\n')
    writer.writerow(['rank', 'seed', 'distance'])
    for r, i in enumerate(order):
        writer.writerow([r, int(ranking.seeds[i]), f'{ranking.distances[i]:.6g}'])
    with dnnlib.atomic_write(os.path.join(outdir, 'ranking.csv'), 'w') as f:
        f.write(text.getvalue())
    summary = dict(meta, num_samples=int(len(order)),
                   mean_distance=float(ranking.distances.mean()), median_distance=float(np.median(ranking.distances)),
                   worst=[dict(seed=s, distance=d) for d, s, _ in ranking.worst],
                   best=[dict(seed=s, distance=d) for d, s, _ in ranking.best])
    with dnnlib.atomic_write(os.path.join(outdir, 'ranking.json'), 'w') as f:
        json.dump(summary, f, indent=2)
        f.write('\n')


@click.command(help=__doc__)
@click.option('--network', metavar='PATH|URL', required=True, help='Network pickle (local file or URL)')
@click.option('--seeds', type=generate._SeedsType(), default='0-999', show_default=True, help='Seeds of the samples to rank')
@click.option('--k', 'k', type=click.IntRange(min=1, max=1024), default=16, show_default=True, help='How many worst and best samples to save')
@click.option('--cols', type=click.IntRange(min=1), default=None, help='Columns of worst.png and best.png  [default: about sqrt(K)]')
@click.option('--metricdata', metavar='ZIP|DIR|demo', help='The real data  [default: the training set in the network file]')
@click.option('--mirror', **{**cli.BOOL, 'default': None, 'show_default': False}, help='Add x-flipped real images  [default: as in training]')
@click.option('--detector', metavar='PATH|digits', default=None, help='Feature network: TorchScript or network file, or "digits" for the shipped digits detector  [default: Inception]')
@click.option('--detector-dir', metavar='DIR', type=click.Path(file_okay=False), help=f'Folder holding the official detector files (also ${detectors.DETECTOR_DIR_ENV})')
@click.option('--ridge', type=cli.FiniteFloatRange(min=0), default=1e-6, show_default=True, help='Added to the covariance, relative to its mean variance')
@click.option('--trunc', 'psi', type=generate.FiniteFloat(), default=1, show_default=True, help='Truncation psi of the samples')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), default=None, help='Class label (required for conditional networks)')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True, help='Noise inputs of the samples')
@click.option('--cache', **{**cli.BOOL, 'default': True}, help='Reuse the real statistics cached on disk (shared with FID)')
@click.option('--batch', type=click.IntRange(min=1), default=32, show_default=True, help='Images per forward pass')
@click.option('--outdir', metavar='DIR', required=True, help='Where to save worst.png, best.png, ranking.csv, ranking.json')
@cli.device_option()
def main(network, seeds, k, cols, metricdata, mirror, detector, detector_dir, ridge, psi, class_idx, noise_mode, cache,
         batch, outdir, device):
    device = cli.resolve_device(device)
    data, G = generate.load_checked_network(network, keys=['G_ema', 'training_set_kwargs'])
    G = G.eval().requires_grad_(False).to(device)
    c = generate.class_label(G, class_idx)
    dataset_kwargs = dataset_kwargs_for(metricdata, data, G, mirror)
    spec = detectors.parse_detector_option([detector] if detector else [])
    try:
        det = detectors.get_detector('inception', spec, device, detector_dir)
    except (detectors.DetectorNotFoundError, OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    generate.make_outdir(outdir)

    opts = metric_utils.MetricOptions(dataset_kwargs=dataset_kwargs, device=device, progress=True, cache=cache,
                                      detector=spec, detector_dir=detector_dir, batch_size=batch)
    try:
        mu, sigma, num_real = sample_ranking.real_statistics(opts)
    except (OSError, ValueError) as e:
        raise click.ClickException(f'cannot read the real data: {generate.one_line(e)}') from None
    distance = sample_ranking.Mahalanobis(mu, sigma, ridge)
    click.echo(f'Real features: {num_real} images, {len(mu)} dimensions, covariance rank {distance.rank}')
    if distance.rank < len(mu):
        click.echo(f'Note: the covariance is singular (rank {distance.rank} < {len(mu)} dimensions); distances '
                   f'are dominated by the directions the real features never vary in (--ridge={ridge:g}).')

    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    with tqdm(total=len(seeds), desc='samples', unit='img', dynamic_ncols=True) as bar:
        ranking = sample_ranking.rank_samples(iter_sample_batches(G, seeds, c, psi, noise_mode, device, batch), det,
                                              distance, k, progress=lambda n: bar.update(n - bar.n))
    cols = cols or max(1, math.ceil(math.sqrt(min(k, len(seeds)))))
    meta = dict(network=network, detector=det.name, metric_data=dataset_kwargs.get('path'),
                num_real=int(num_real), feature_dims=int(len(mu)), covariance_rank=distance.rank, ridge=ridge,
                trunc=psi, noise_mode=noise_mode, class_idx=class_idx)
    try:
        write_outputs(outdir, ranking, cols, meta)
    except OSError as e:
        raise click.ClickException(f'cannot write to {outdir}: {generate.one_line(e)}') from None
    click.echo(f'Distances {ranking.distances.min():.4g} (best) to {ranking.distances.max():.4g} (worst), median '
               f'{np.median(ranking.distances):.4g}; saved worst.png, best.png, ranking.csv, ranking.json to {outdir}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
