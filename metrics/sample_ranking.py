"""Ranking generated samples by how far they lie from the real data in feature space.

The visualisation of the vision-aided GAN paper (Kumari et al. 2022, "Ensembling
off-the-shelf models for GAN training"): fit a Gaussian to the detector features of the real
images, the same mean and covariance that FID uses, and sort generated samples by their
Mahalanobis distance to it,

    d(x) = sqrt((x - mu)^T (Sigma + r I)^-1 (x - mu)),   r = ridge * tr(Sigma) / D,

so that the worst (largest d) and best (smallest d) samples can be looked at. The real
statistics come from `metric_utils.compute_feature_stats_for_dataset` with exactly FID's
arguments, so they share FID's cache entry (computed once, by either).

The ridge keeps the inverse finite when Sigma is singular, which it is whenever there are
no more real images than feature dimensions (e.g. 100 images and 2048 Inception features):
then directions the real data never varies in dominate d, and the ranking is mostly by
distance from the span of the real features.
"""

import dataclasses
import heapq
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import metric_utils


def real_statistics(opts: metric_utils.MetricOptions) -> Tuple[np.ndarray, np.ndarray, int]:
    """Mean, covariance (1/N) and image count of the detector features of the whole metric
    dataset: the statistics of FID `_full` (and its cache entry)."""
    stats = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', dict(return_features=True),
                                                           max_items=None, capture_mean_cov=True)
    mean, cov = stats.get_mean_cov()
    return mean, cov, stats.num_items


class Mahalanobis:
    """d(x) for a Gaussian (mu, Sigma), Sigma regularised by `ridge` times its mean variance.

    Args:
        mu: [D] mean.
        sigma: [D, D] covariance.
        ridge: relative regularisation (>= 0).
    """

    def __init__(self, mu: np.ndarray, sigma: np.ndarray, ridge: float = 1e-6):
        self.mu = np.asarray(mu, np.float64)
        sigma = np.asarray(sigma, np.float64)
        sigma = (sigma + sigma.T) / 2
        self.reg = ridge * float(np.trace(sigma)) / sigma.shape[0]
        eigval, self.eigvec = np.linalg.eigh(sigma)
        eigval = np.clip(eigval, 0, None)
        # Numerical rank: eigenvalues above rounding noise.
        self.rank = int((eigval > 1e-10 * max(float(eigval.max()), np.finfo(np.float64).tiny)).sum())
        eigval = eigval + self.reg
        if not (eigval > 0).all():
            raise ValueError('the covariance is singular; give a ridge above 0')
        self.inv_sqrt_eig = 1 / np.sqrt(eigval)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Distances of the rows of x [N, D] -> [N]."""
        if x.ndim != 2 or x.shape[1] != self.mu.shape[0]:
            raise ValueError(f'features of shape {list(x.shape)}; the real statistics have {self.mu.shape[0]} dimensions')
        y = (np.asarray(x, np.float64) - self.mu) @ self.eigvec * self.inv_sqrt_eig
        return np.sqrt(np.square(y).sum(axis=1))


@dataclasses.dataclass
class Ranking:
    """Every sample's distance, and the images of the extremes.

    Attributes:
        seeds: [N] seeds in generation order.
        distances: [N] Mahalanobis distances, same order.
        worst: [(distance, seed, HWC uint8 image)], largest distance first.
        best: [(distance, seed, image)], smallest distance first.
    """
    seeds: np.ndarray
    distances: np.ndarray
    worst: List[Tuple[float, int, np.ndarray]]
    best: List[Tuple[float, int, np.ndarray]]

    def order(self) -> np.ndarray:
        """Indices from the worst sample to the best (ties by generation order)."""
        return np.argsort(-self.distances, kind='stable')


def rank_samples(image_batches: Iterator[Tuple[Sequence[int], torch.Tensor]], detector, distance: Mahalanobis,
                 k: int, progress: Optional[Callable[[int], None]] = None) -> Ranking:
    """Embeds generated images and keeps the `k` farthest and `k` nearest.

    Args:
        image_batches: (seeds, uint8-valued NCHW images) pairs; images with 1 or 3 channels.
        detector: called as detector(rgb_images, return_features=True) -> [n, D].
        distance: the Mahalanobis distance to the real features.
        k: how many extremes to keep (their images stay in memory, nothing else does).
        progress: called with the number of images after each batch.
    """
    seeds, dists = [], []
    worst: list = []   # Min-heap of (d, order, seed, image): the k largest so far.
    best: list = []    # Min-heap of (-d, -order, seed, image): the k smallest so far.
    n = 0
    for batch_seeds, images in image_batches:
        feats = detector(metric_utils.to_rgb(images), return_features=True)
        d = distance(feats.reshape(feats.shape[0], -1).to(torch.float32).cpu().numpy())
        hwc = images.permute(0, 2, 3, 1).cpu().numpy()
        for seed, di, img in zip(batch_seeds, d, hwc):
            item = (float(di), -n, int(seed), img)   # Ties: the earlier sample ranks first.
            (heapq.heappush if len(worst) < k else heapq.heappushpop)(worst, item)
            (heapq.heappush if len(best) < k else heapq.heappushpop)(best, (-float(di), -n, int(seed), img))
            seeds.append(int(seed))
            dists.append(float(di))
            n += 1
        if progress is not None:
            progress(n)
    worst_sorted = [(d, s, img) for d, _, s, img in sorted(worst, key=lambda t: (-t[0], -t[1]))]
    best_sorted = [(-nd, s, img) for nd, _, s, img in sorted(best, key=lambda t: (-t[0], -t[1]))]
    return Ranking(seeds=np.asarray(seeds, np.int64), distances=np.asarray(dists, np.float64),
                   worst=worst_sorted, best=best_sorted)


def tile(images: Sequence[np.ndarray], cols: int) -> np.ndarray:
    """HWC images row by row into one image; empty cells at the end stay black."""
    h, w, ch = images[0].shape
    rows = -(-len(images) // cols)
    canvas = np.zeros([rows * h, cols * w, ch], np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return canvas
