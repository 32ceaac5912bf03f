#!/usr/bin/env python
"""Rank vision-aided backbones for a generator: which one tells its fakes from the reals best?

The model selection of vision-aided GAN training (Kumari et al. 2022, sec. 3.2): for each
candidate backbone, extract its (single-level) features of N real and N generated images,
fit a logistic-regression probe on part of them and measure its accuracy on the rest. The
backbone whose probe is most accurate is the most useful next discriminator (`--cv`).

Examples:

\b
  # Rank all four backbones for a snapshot (weights downloaded once into the cache):
  python select_backbone.py --network=runs/00000-cats/network-snapshot-000400.pkl \\
      --data=datasets/cats.zip --num=1000

\b
  # Two candidates, CLIP from a local file:
  python select_backbone.py --network=net.pkl --data=cats.zip --cv=clip+swin \\
      --cv-weights clip=weights/open_clip_model.safetensors

The ranking is printed as a table; --json writes it as JSON.
"""

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import click
import numpy as np
import torch

import dnnlib
from torch_utils import cli
from training.heads import backbones as backbones_lib

DEFAULT_CANDIDATES = 'clip+dino+swin+vgg16'


# ---------------------------------------------------------------------------------------
# Images and features.

@torch.no_grad()
def generate_images(G: torch.nn.Module, num: int, batch: int, seed: int, device: torch.device) -> torch.Tensor:
    """`num` images of G in [-1, 1] (latents and labels from `seed`), on the CPU.

    Labels of a conditional G are drawn uniformly among its classes (one-hot).
    """
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn([num, G.z_dim], generator=gen)
    c = torch.zeros([num, G.c_dim])
    if G.c_dim > 0:
        c[torch.arange(num), torch.randint(G.c_dim, [num], generator=gen)] = 1
    out = [G(zb.to(device), cb.to(device)).clamp(-1, 1).cpu() for zb, cb in zip(z.split(batch), c.split(batch))]
    return torch.cat(out)


def load_real_images(dataset: Any, num: int, seed: int) -> torch.Tensor:
    """`num` distinct random images of a dataset (all of them if it has fewer) in [-1, 1]."""
    order = np.random.RandomState(seed).permutation(len(dataset))[:num]
    images = np.stack([dataset[int(i)][0] for i in order])
    return torch.from_numpy(images).to(torch.float32) / 127.5 - 1


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, images: torch.Tensor, batch: int,
                     device: torch.device) -> np.ndarray:
    """The backbone's single-level (last) feature of each image, spatial maps averaged over
    positions: [N, C] float64."""
    feats = []
    for chunk in images.split(batch):
        last = backbone(chunk.to(device))[-1]
        feats.append((last.flatten(2).mean(2) if last.ndim == 4 else last.flatten(1)).double().cpu())
    return torch.cat(feats).numpy()


# ---------------------------------------------------------------------------------------
# The probe.

def probe_accuracy(real: np.ndarray, fake: np.ndarray, train_frac: float = 0.5, seed: int = 0) -> Dict[str, float]:
    """Held-out accuracy of a logistic-regression probe telling `fake` from `real` features.

    Each class is split in the same proportion (stratified); features are standardised on
    the training part.

    Args:
        real, fake: [N, D] features.
        train_frac: Fraction of the samples the probe is fitted on.
        seed: Split and solver seed.

    Returns:
        {'accuracy': held-out accuracy, 'train_accuracy': ..., 'num_test': test samples}.
    """
    from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
    from sklearn.model_selection import train_test_split  # pylint: disable=import-outside-toplevel
    from sklearn.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel
    from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f'the probe needs at least 2 real and 2 fake samples, got {len(real)} and {len(fake)}')
    x = np.concatenate([real, fake])
    y = np.concatenate([np.ones(len(real)), np.zeros(len(fake))])
    x_train, x_test, y_train, y_test = train_test_split(x, y, train_size=train_frac, stratify=y, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(x_train, y_train)
    return dict(accuracy=float(probe.score(x_test, y_test)), train_accuracy=float(probe.score(x_train, y_train)),
                num_test=int(len(y_test)))


def rank_backbones(backbones: Mapping[str, torch.nn.Module], reals: torch.Tensor, fakes: torch.Tensor, *,
                   batch: int = 16, device: torch.device = torch.device('cpu'), train_frac: float = 0.5,
                   seed: int = 0) -> List[Dict[str, Any]]:
    """Probe accuracy of every backbone, best first.

    Args:
        backbones: {name: Backbone} (images in [-1, 1] -> feature levels).
        reals, fakes: [N, C, H, W] images in [-1, 1].
        batch: Images per backbone pass.
        device: Where the backbones run.
        train_frac: Fraction of the samples the probe is fitted on.
        seed: Split seed.

    Returns:
        [{'backbone', 'accuracy', 'train_accuracy', 'num_test'}] sorted by accuracy, descending.
    """
    rows = []
    for name, backbone in backbones.items():
        real_f = extract_features(backbone, reals, batch, device)
        fake_f = extract_features(backbone, fakes, batch, device)
        rows.append(dict(backbone=name, **probe_accuracy(real_f, fake_f, train_frac=train_frac, seed=seed)))
    return sorted(rows, key=lambda r: -r['accuracy'])


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The ranking as a text table."""
    lines = [f'{"rank":<6}{"backbone":<14}{"held-out acc":>13}{"train acc":>11}{"test n":>8}']
    for i, r in enumerate(rows):
        lines.append(f'{i + 1:<6}{r["backbone"]:<14}{r["accuracy"]:>13.4f}{r["train_accuracy"]:>11.4f}'
                     f'{r["num_test"]:>8d}')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------
# Command line.

@click.command(context_settings=dict(max_content_width=120))
@click.option('--network', 'network_path', metavar='PKL', required=True, help='Network pickle (its G_ema is used)')
@click.option('--data', metavar='ZIP|DIR', required=True, help='Dataset with the real images')
@click.option('--cv', 'candidates', metavar='LIST', default=DEFAULT_CANDIDATES, show_default=True,
              help='Candidate backbones, joined with "+"')
@click.option('--cv-weights', metavar='NAME=PATH', multiple=True,
              help='Local weights file of a backbone (repeatable); NAME=random keeps random weights')
@click.option('--num', type=click.IntRange(min=4), default=1000, show_default=True,
              help='Real and fake images each')
@click.option('--train-frac', type=click.FloatRange(min=0, max=1, min_open=True, max_open=True), default=0.5,
              show_default=True, help='Fraction of the images the probe is fitted on')
@click.option('--batch', type=click.IntRange(min=1), default=16, show_default=True, help='Images per pass')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Seed of latents and split')
@cli.device_option()
@click.option('--json', 'json_path', metavar='FILE', default=None, help='Also write the ranking as JSON')
def main(network_path: str, data: str, candidates: str, cv_weights: Sequence[str], num: int, train_frac: float,
         batch: int, seed: int, device: str, json_path: Optional[str]) -> None:
    """Rank vision-aided backbones by a linear probe's accuracy on a snapshot's fakes vs. reals."""
    from torch_utils import netfile  # pylint: disable=import-outside-toplevel
    from training.dataset import ImageFolderDataset  # pylint: disable=import-outside-toplevel
    try:
        names = backbones_lib.parse_backbones(candidates)
    except (KeyError, ValueError) as e:
        raise click.BadParameter(str(e.args[0] if e.args else e), param_hint='--cv') from e
    try:
        weights = backbones_lib.parse_weights(cv_weights)
    except (KeyError, ValueError) as e:
        raise click.BadParameter(str(e.args[0] if e.args else e), param_hint='--cv-weights') from e
    dev = cli.resolve_device(device)
    if not os.path.exists(network_path):
        raise click.BadParameter(f'{network_path}: no such file', param_hint='--network')
    if not os.path.exists(data):
        raise click.BadParameter(f'{data}: no such file or folder', param_hint='--data')

    try:
        net = netfile.load_network_pickle(network_path, keys=('G_ema',))
    except (OSError, netfile.NetworkFileError) as e:
        raise click.BadParameter(netfile.error_line(e), param_hint='--network') from None
    G = net.get('G_ema') if isinstance(net, dict) else None
    problem = netfile.generator_problem(G)
    if problem is not None:
        raise click.BadParameter(f'{network_path} {problem}', param_hint='--network')
    G = G.to(dev).eval().requires_grad_(False)
    try:
        dataset = ImageFolderDataset(path=data)
    except (OSError, ValueError) as e:
        raise click.BadParameter(netfile.error_line(e), param_hint='--data') from None
    if dataset.resolution != G.img_resolution or dataset.num_channels != G.img_channels:
        raise click.BadParameter(f'{data} holds {dataset.num_channels}x{dataset.resolution}x{dataset.resolution} '
                                 f'images, the generator makes {G.img_channels}x{G.img_resolution}x'
                                 f'{G.img_resolution}', param_hint='--data')
    reals = load_real_images(dataset, num, seed)
    fakes = generate_images(G, len(reals), batch, seed, dev)
    click.echo(f'{len(reals)} real and {len(fakes)} generated images; probe fitted on {train_frac:g} of them.')
    try:
        models = backbones_lib.build_backbones(names, weights, dev)
    except backbones_lib.BackboneError as e:
        raise click.ClickException(str(e)) from e
    rows = rank_backbones(models, reals, fakes, batch=batch, device=dev, train_frac=train_frac, seed=seed)
    click.echo(format_table(rows))
    click.echo(f'Best: {rows[0]["backbone"]} (train with --cv={rows[0]["backbone"]}).')
    if json_path is not None:
        try:
            with dnnlib.atomic_write(json_path, 'w') as f:
                json.dump(dict(network=network_path, data=data, num=len(reals), ranking=rows), f, indent=2)
        except OSError as e:
            raise click.BadParameter(netfile.error_line(e), param_hint='--json') from None


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
