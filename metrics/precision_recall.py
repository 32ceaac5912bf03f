"""Improved precision and recall (Kynkaanniemi et al. 2019, "Improved precision and recall
metric for assessing generative models"): each feature set spans a manifold made of balls
around its points with radius the distance to the k-th nearest neighbour; precision is the
share of generated points inside the real manifold, recall the share of real points inside
the generated one. VGG16 features, k = 3, as in the established protocol."""

from typing import Callable, Dict, Optional

import torch

from . import metric_utils


def _pairwise_distances(rows: torch.Tensor, cols: torch.Tensor, col_batch_size: int) -> torch.Tensor:
    """Euclidean distances [len(rows), len(cols)], computed in column chunks to bound memory."""
    chunks = [torch.cdist(rows.unsqueeze(0), cols[i:i + col_batch_size].unsqueeze(0))[0]
              for i in range(0, cols.shape[0], col_batch_size)]
    return torch.cat(chunks, dim=1)


def _map_row_batches(fn: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, row_batch_size: int,
                     opts: metric_utils.MetricOptions) -> torch.Tensor:
    """fn applied to consecutive row batches, batch j on rank j % num_gpus; all results on every rank.

    Batches keep the same composition for any number of ranks (the last one is zero-padded),
    so the result does not depend on it.
    """
    n = rows.shape[0]
    out = []
    for j in metric_utils.rank_rounds(n, opts, row_batch_size):
        batch = rows[j * row_batch_size:(j + 1) * row_batch_size]
        pad = row_batch_size - batch.shape[0]
        if pad:
            batch = torch.cat([batch, batch.new_zeros([pad, rows.shape[1]])])
        out.append(metric_utils.gather_units(fn(batch), opts))
    return torch.cat(out)[:n]


def manifold_radii(manifold: torch.Tensor, nhood_size: int, opts: metric_utils.MetricOptions,
                   row_batch_size: int, col_batch_size: int) -> torch.Tensor:
    """Distance from every manifold point to its nhood_size-th nearest other point."""
    if manifold.shape[0] <= nhood_size:
        raise ValueError(f'Precision/recall with k={nhood_size} needs more than {nhood_size} samples per set, '
                         f'got {manifold.shape[0]}.')
    # The k+1-th smallest distance skips the point itself (distance 0).
    radius = lambda b: _pairwise_distances(b, manifold, col_batch_size).to(torch.float32).kthvalue(nhood_size + 1, dim=1).values
    return _map_row_batches(radius, manifold, row_batch_size, opts).to(manifold.dtype)


def inside_manifold(probes: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor,
                    opts: metric_utils.MetricOptions, row_batch_size: int, col_batch_size: int) -> torch.Tensor:
    """For each probe, whether it lies within radius of at least one manifold point."""
    inside = lambda b: (_pairwise_distances(b, manifold, col_batch_size) <= radii.unsqueeze(0)).any(dim=1).to(torch.uint8)
    return _map_row_batches(inside, probes, row_batch_size, opts).bool()


def precision_recall(real: torch.Tensor, gen: torch.Tensor, nhood_size: int = 3,
                     opts: Optional[metric_utils.MetricOptions] = None, row_batch_size: int = 10000,
                     col_batch_size: int = 10000) -> Dict[str, float]:
    """Precision and recall of generated features against real features.

    Args:
        real, gen: features [N_real, d], [N_gen, d] (any float dtype; float16 halves memory).
        nhood_size: k of the k-NN radius.
        opts: metric options for sharding across ranks (None: this process alone).
        row_batch_size, col_batch_size: distance-matrix tile sizes.

    Returns:
        {'precision': float, 'recall': float}.
    """
    opts = opts or metric_utils.MetricOptions(device=real.device)
    results = {}
    for name, manifold, probes in [('precision', real, gen), ('recall', gen, real)]:
        radii = manifold_radii(manifold, nhood_size, opts, row_batch_size, col_batch_size)
        results[name] = float(inside_manifold(probes, manifold, radii, opts, row_batch_size, col_batch_size)
                              .to(torch.float64).mean())
    return results


def compute_pr(opts: metric_utils.MetricOptions, max_real: Optional[int], num_gen: int, nhood_size: int = 3,
               row_batch_size: Optional[int] = None, col_batch_size: int = 10000) -> Dict[str, float]:
    """Precision and recall of `num_gen` generated images against up to `max_real` dataset images.

    The k-NN work is shared by all ranks; every rank returns the same numbers. On CUDA the
    features are held in float16 as in the established code; on CPU in float32.

    Returns:
        {'precision': float, 'recall': float}.
    """
    detector_kwargs = dict(return_features=True)
    dtype = torch.float16 if opts.device.type == 'cuda' else torch.float32
    if row_batch_size is None:
        row_batch_size = 10000 if opts.device.type == 'cuda' else 1000
    real = metric_utils.compute_feature_stats_for_dataset(
        opts, 'vgg16', detector_kwargs, max_items=max_real, capture_all=True).get_all_torch()
    gen = metric_utils.compute_feature_stats_for_generator(
        opts, 'vgg16', detector_kwargs, max_items=num_gen, capture_all=True).get_all_torch()
    return precision_recall(real.to(opts.device, dtype), gen.to(opts.device, dtype), nhood_size, opts,
                            row_batch_size, col_batch_size)
