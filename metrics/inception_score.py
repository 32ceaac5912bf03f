"""Inception Score (Salimans et al. 2016, "Improved techniques for training GANs"):
exp(E_x KL(p(y|x) || p(y))) over 10 splits, with the Inception softmax computed without
its output bias, as the original TensorFlow implementation and the established code do."""

from typing import Tuple

import numpy as np
import scipy.special

from . import metric_utils


def inception_score(probs: np.ndarray, num_splits: int = 10) -> Tuple[float, float]:
    """Mean and standard deviation of the Inception Score over equal splits.

    Args:
        probs: class probabilities p(y|x) [N, classes].
        num_splits: number of consecutive splits.

    Returns:
        (mean, std) over the splits.
    """
    probs = np.asarray(probs, np.float64)
    n = probs.shape[0]
    if n < num_splits:
        raise ValueError(f'IS needs at least {num_splits} samples for {num_splits} splits, got {n}.')
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        # KL(p(y|x) || p(y)) per sample; xlogy keeps 0 log 0 = 0.
        kl = (scipy.special.xlogy(part, part) - scipy.special.xlogy(part, marginal)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts: metric_utils.MetricOptions, num_gen: int, num_splits: int = 10) -> Tuple[float, float]:
    """IS of `num_gen` generated images.

    Returns:
        (mean, std) on rank 0, (NaN, NaN) on other ranks.
    """
    detector_kwargs = dict(no_output_bias=True)
    probs = metric_utils.compute_feature_stats_for_generator(
        opts, 'inception', detector_kwargs, max_items=num_gen, capture_all=True).get_all()
    if opts.rank != 0:
        return float('nan'), float('nan')
    return inception_score(probs, num_splits)
