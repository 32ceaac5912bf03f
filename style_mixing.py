#!/usr/bin/env python
"""Style-mixing grid: row seeds take some of their styles (ws) from column seeds.

Examples:

\b
  # Rows 85,100,75 take layers 0-6 (coarse styles: pose, shape) from columns 55,821,1789:
  python style_mixing.py --network=net.pkl --rows=85,100,75 --cols=55,821,1789 --outdir=out

\b
  # Fine styles only (colours, texture), truncation 0.7:
  python style_mixing.py --network=net.pkl --rows=0-3 --cols=10-13 --styles=8-13 --trunc=0.7 --outdir=out

Writes one PNG per cell, ROW-COL.png (the row seed's ws with the --styles layers taken from
the column seed), each seed's own image as SEED-SEED.png, and grid.png: the column seeds'
images along the top, the row seeds' down the left, the mixes in between.
"""

import os
from typing import Dict, List, Sequence

import click
import numpy as np
import torch

import generate
from torch_utils import cli


def mix_ws(row_ws: torch.Tensor, col_ws: torch.Tensor, styles: Sequence[int]) -> torch.Tensor:
    """ws of every (row, column) cell: the row's ws with the layers `styles` from the column.

    Args:
        row_ws: [R, num_ws, w_dim].
        col_ws: [C, num_ws, w_dim].
        styles: layer indices in [0, num_ws).

    Returns:
        [R * C, num_ws, w_dim], row by row.
    """
    R, C = row_ws.shape[0], col_ws.shape[0]
    ws = row_ws[:, None].repeat(1, C, 1, 1)                 # [R, C, num_ws, w_dim]
    idx = torch.as_tensor(list(styles), dtype=torch.long, device=row_ws.device)
    ws[:, :, idx] = col_ws[None, :, idx].expand(R, -1, -1, -1)
    return ws.reshape(R * C, *row_ws.shape[1:])


def style_mix_images(G, row_seeds: Sequence[int], col_seeds: Sequence[int], styles: Sequence[int], psi: float,
                     noise_mode: str, device: torch.device, c: torch.Tensor, batch: int = 8) -> Dict:
    """Images of the style-mixing grid, uint8 HWC.

    Returns:
        {(row, col): mixed image} for every cell and {(seed, seed): image} for every row and
        column seed (the seed's own image, as generate.py makes it for the same truncation).
    """
    seeds = list(dict.fromkeys(list(row_seeds) + list(col_seeds)))  # Unique, in order.
    all_ws = generate.seeds_to_ws(G, seeds, c, psi, None, device, batch)
    w_of = {s: all_ws[i] for i, s in enumerate(seeds)}
    images = {(s, s): img for s, img in zip(seeds, generate.synthesize_ws(G, all_ws, noise_mode, batch))}
    ws = mix_ws(torch.stack([w_of[s] for s in row_seeds]), torch.stack([w_of[s] for s in col_seeds]), styles)
    mixed = generate.synthesize_ws(G, ws, noise_mode, batch)
    for k, img in enumerate(mixed):
        images[(row_seeds[k // len(col_seeds)], col_seeds[k % len(col_seeds)])] = img
    return images


def style_mix_grid(images: Dict, row_seeds: Sequence[int], col_seeds: Sequence[int]) -> np.ndarray:
    """The (rows + 1) x (cols + 1) canvas: black corner, column images on top, row images left."""
    h, w, ch = next(iter(images.values())).shape
    canvas = np.zeros([(len(row_seeds) + 1) * h, (len(col_seeds) + 1) * w, ch], np.uint8)
    for j, cs in enumerate(col_seeds):
        canvas[:h, (j + 1) * w:(j + 2) * w] = images[(cs, cs)]
    for i, rs in enumerate(row_seeds):
        canvas[(i + 1) * h:(i + 2) * h, :w] = images[(rs, rs)]
        for j, cs in enumerate(col_seeds):
            canvas[(i + 1) * h:(i + 2) * h, (j + 1) * w:(j + 2) * w] = images[(rs, cs)]
    return canvas


MAX_SEEDS = 256  # Per axis: the grid is one image in memory.


def _seed_list(value: Sequence[int], flag: str) -> List[int]:
    if len(value) > MAX_SEEDS:
        raise click.BadParameter(f'at most {MAX_SEEDS} seeds, got {len(value)}', param_hint=flag)
    return list(value)


@click.command(help=__doc__)
@click.option('--network', metavar='PATH|URL', required=True, help='Network pickle (local file or URL)')
@click.option('--rows', 'row_seeds', type=generate._SeedsType(), required=True, help='Seeds of the rows, e.g. 85,100,75 or 0-4')
@click.option('--cols', 'col_seeds', type=generate._SeedsType(), required=True, help='Seeds of the columns, e.g. 55,821,1789')
@click.option('--styles', type=generate._SeedsType(), default=None,
              help='Layers (ws) taken from the column seed: a range and/or list, e.g. 0-3,8  [default: 0-6, '
              'or all layers of a network with fewer]')
@click.option('--trunc', 'psi', type=generate.FiniteFloat(), default=1, show_default=True, help='Truncation psi (1 = none)')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), default=None, help='Class label (required for conditional networks)')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True, help='Noise inputs: const is deterministic')
@click.option('--outdir', metavar='DIR', required=True, help='Where to save the images and grid.png')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Images per forward pass')
@cli.device_option()
def main(network, row_seeds, col_seeds, styles, psi, class_idx, noise_mode, outdir, batch, device):
    row_seeds, col_seeds = _seed_list(row_seeds, '--rows'), _seed_list(col_seeds, '--cols')
    device = cli.resolve_device(device)
    G = generate.load_generator(network, device)
    styles = list(range(min(7, G.num_ws))) if styles is None else list(styles)
    bad = [s for s in styles if s >= G.num_ws]
    if bad:
        raise click.BadParameter(f'layer {bad[0]} does not exist: this network has {G.num_ws} ws (0-{G.num_ws - 1})',
                                 param_hint='--styles')
    c = generate.class_label(G, class_idx)
    generate.make_outdir(outdir)

    images = style_mix_images(G, row_seeds, col_seeds, styles, psi, noise_mode, device, c, batch)
    items = [(os.path.join(outdir, f'{r}-{c_}.png'), img) for (r, c_), img in images.items()]
    items.append((os.path.join(outdir, 'grid.png'), style_mix_grid(images, row_seeds, col_seeds)))
    n = generate.save_all(items, 'images')
    click.echo(f'Saved {n - 1} images and grid.png ({len(col_seeds) + 1} columns, {len(row_seeds) + 1} rows) to {outdir}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
