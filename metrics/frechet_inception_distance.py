"""Frechet Inception Distance (Heusel et al. 2017, "GANs trained by a two time-scale update
rule converge to a local Nash equilibrium"), with the established protocol: Inception-v3
pool features of uint8 images, float64 mean and 1/N covariance."""

import warnings
from typing import Optional

import numpy as np
import scipy.linalg

from . import metric_utils


def _trace_sqrt_product_sym(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrt(sigma1 @ sigma2)) through symmetric eigenproblems only.

    sigma1 @ sigma2 is similar to S @ sigma2 @ S with S = sqrt(sigma1), which is symmetric
    positive semi-definite, so the trace of the root is the sum of the roots of its
    eigenvalues; rounding noise below zero is clipped. Never complex, never NaN.
    """
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, imag_tol: float = 1e-3,
                       residual_tol: float = 1e-3) -> float:
    """tr(sqrtm(sigma1 @ sigma2)) for covariance matrices.

    The general matrix square root (scipy, as the established FID code uses) is tried first.
    When it fails, returns non-finite values, has an imaginary part above `imag_tol` times
    its magnitude, or does not square back to the product, the symmetric formulation
    (`_trace_sqrt_product_sym`) is used instead, with a warning.

    Args:
        sigma1, sigma2: [D, D] symmetric positive semi-definite matrices.
        imag_tol: largest accepted |imag| relative to the largest |entry| of the root.
        residual_tol: largest accepted ||X X - A||_F / ||A||_F.

    Returns:
        The trace, a float.
    """
    product = sigma1 @ sigma2
    reason = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            root = scipy.linalg.sqrtm(product)
    except (np.linalg.LinAlgError, ValueError) as e:
        root, reason = None, f'sqrtm failed ({e})'
    if root is not None:
        scale = max(float(np.abs(root).max()), np.finfo(np.float64).tiny)
        norm = max(float(np.linalg.norm(product)), np.finfo(np.float64).tiny)
        if not np.all(np.isfinite(root)):
            reason = 'sqrtm returned non-finite values'
        elif np.iscomplexobj(root) and np.abs(root.imag).max() > imag_tol * scale:
            reason = f'sqrtm has an imaginary part of {np.abs(root.imag).max():.3g}'
        elif np.linalg.norm(root @ root - product) / norm > residual_tol:
            reason = 'sqrtm is inaccurate'
        else:
            return float(np.real(np.trace(root)))
    warnings.warn(f'FID: {reason}; using the symmetric eigenvalue formulation instead.', RuntimeWarning)
    return _trace_sqrt_product_sym(sigma1, sigma2)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))   (Dowson & Landau 1982)

    Args:
        mu1, mu2: [D] means.
        sigma1, sigma2: [D, D] covariances.

    Returns:
        The distance as a float.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f'Mismatched statistics: means {mu1.shape}, {mu2.shape}; '
                         f'covariances {sigma1.shape}, {sigma2.shape}.')
    mean_term = float(np.square(mu1 - mu2).sum())
    cov_term = float(np.trace(sigma1) + np.trace(sigma2)) - 2 * trace_sqrt_product(sigma1, sigma2)
    return mean_term + cov_term


def compute_fid(opts: metric_utils.MetricOptions, max_real: Optional[int], num_gen: int) -> float:
    """FID between `max_real` dataset images (all when None) and `num_gen` generated images.

    Returns:
        The FID on rank 0, NaN on other ranks.
    """
    detector_kwargs = dict(return_features=True)
    mu_real, sigma_real = metric_utils.compute_feature_stats_for_dataset(
        opts, 'inception', detector_kwargs, max_items=max_real, capture_mean_cov=True).get_mean_cov()
    mu_gen, sigma_gen = metric_utils.compute_feature_stats_for_generator(
        opts, 'inception', detector_kwargs, max_items=num_gen, capture_mean_cov=True).get_mean_cov()
    if opts.rank != 0:
        return float('nan')
    return frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)
