"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased
estimate of squared MMD with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 on
Inception features, averaged over random subsets, as in the established protocol."""

from typing import Optional

import numpy as np

from . import metric_utils


def polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between samples x [m, d] and y [m, d] under (a.b / d + 1)^3.

    MMD^2_u = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)
    (Gretton et al. 2012, eq. 3 with equal sample sizes).
    """
    m, d = x.shape
    k_xx = (np.asarray(x @ x.T, np.float64) / d + 1) ** 3
    k_yy = (np.asarray(y @ y.T, np.float64) / d + 1) ** 3
    k_xy = (np.asarray(x @ y.T, np.float64) / d + 1) ** 3
    off_diag = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))
    return float(off_diag(k_xx) + off_diag(k_yy) - 2 * k_xy.mean())


def kernel_inception_distance(real: np.ndarray, gen: np.ndarray, num_subsets: int = 100,
                              max_subset_size: int = 1000, seed: int = 0) -> float:
    """KID: mean unbiased MMD^2 over `num_subsets` random subset pairs.

    Args:
        real, gen: features [N_real, d] and [N_gen, d].
        num_subsets: number of subset pairs.
        max_subset_size: subset size cap; the size is min(N_real, N_gen, max_subset_size).
        seed: seed of the subset choice.

    Returns:
        KID as a float.
    """
    m = min(real.shape[0], gen.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f'KID needs at least 2 real and 2 generated samples, got {real.shape[0]} and {gen.shape[0]}.')
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(gen.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        total += polynomial_mmd2_unbiased(x, y)
    return total / num_subsets


def compute_kid(opts: metric_utils.MetricOptions, max_real: Optional[int], num_gen: int,
                num_subsets: int = 100, max_subset_size: int = 1000) -> float:
    """KID between up to `max_real` dataset images and `num_gen` generated images.

    Returns:
        KID on rank 0, NaN on other ranks.
    """
    detector_kwargs = dict(return_features=True)
    real = metric_utils.compute_feature_stats_for_dataset(
        opts, 'inception', detector_kwargs, max_items=max_real, capture_all=True).get_all()
    gen = metric_utils.compute_feature_stats_for_generator(
        opts, 'inception', detector_kwargs, max_items=num_gen, capture_all=True).get_all()
    if opts.rank != 0:
        return float('nan')
    return kernel_inception_distance(real, gen, num_subsets, max_subset_size, seed=opts.seed)
