"""The built-in demo dataset: real handwritten digits that need no download.

scikit-learn ships the UCI handwritten digits (1,797 labelled 8x8 images with 17 grey
levels) inside its package. Upscaled to 16x16 with a Lanczos filter they make a small,
labelled, single-channel dataset on which the quick-start training command runs anywhere
(16x16 holds everything the 8x8 source has; 32x32 would cost four times as much per image
and show nothing more).
"""

import os
from typing import Iterator, Tuple

import numpy as np
import PIL.Image

import dnnlib

DEMO_RESOLUTION = 16
DEMO_VERSION = 2  # Bump when the images change, so stale cached zips are not reused (1: 32x32).


def load_digits_raw() -> Tuple[np.ndarray, np.ndarray]:
    """The digits as shipped: float [N, 8, 8] in 0..16 and int labels [N]."""
    try:
        from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise RuntimeError('The demo dataset needs scikit-learn (pip install scikit-learn), which ships '
                           'the digit images it is made from.') from e
    digits = load_digits()
    return np.asarray(digits.images, dtype=np.float64), np.asarray(digits.target, dtype=np.int64)


def upscale(image: np.ndarray, resolution: int) -> np.ndarray:
    """Upscales one 8x8 digit (values 0..16) to a uint8 [resolution, resolution] image.

    The filter works on floats, so Lanczos overshoot is clipped once at the end rather
    than at every step; white strokes on black, like MNIST.
    """
    img = PIL.Image.fromarray((image * (255.0 / 16.0)).astype(np.float32))  # mode 'F'
    img = img.resize((resolution, resolution), PIL.Image.Resampling.LANCZOS)
    return np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8)


def iter_demo_images(resolution: int = DEMO_RESOLUTION) -> Iterator[Tuple[np.ndarray, int]]:
    """Yields (uint8 [H, W] image, class label) for all 1,797 digits in their shipped order."""
    images, labels = load_digits_raw()
    for image, label in zip(images, labels):
        yield upscale(image, resolution), int(label)


def num_demo_images() -> int:
    return int(load_digits_raw()[1].shape[0])


def write_demo_dataset(dest: str, overwrite: bool = False, resolution: int = DEMO_RESOLUTION) -> str:
    """Writes the demo dataset (with labels) as a dataset zip or folder, atomically.

    Args:
        dest: A '.zip' path or a folder path.
        overwrite: Replace an existing `dest`.
        resolution: Side of the upscaled images (a power of two, at least 8).

    Returns:
        The destination path.
    """
    from training.dataset import DatasetWriter  # pylint: disable=import-outside-toplevel
    with DatasetWriter(dest, overwrite=overwrite) as writer:
        for image, label in iter_demo_images(resolution):
            writer.add(image, label)
    return writer.dest


def demo_zip_path(resolution: int = DEMO_RESOLUTION) -> str:
    """Where the demo zip of a resolution lives in the cache directory."""
    name = 'demo.zip' if resolution == DEMO_RESOLUTION else f'demo-{resolution}x{resolution}.zip'
    return dnnlib.make_cache_dir_path('datasets', f'demo-v{DEMO_VERSION}', name)


def ensure_demo_zip(resolution: int = DEMO_RESOLUTION) -> str:
    """Returns the cached demo zip, building it first if it is not there yet.

    Concurrent callers (several ranks) each build to their own temporary file and rename it
    into place; the results are identical, so whichever lands last is fine.

    Args:
        resolution: Side of the images (16, the demo's, unless asked otherwise).

    Returns:
        The path of the demo zip.
    """
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f'Demo dataset: resolution must be a power of two >= 8, got {resolution}')
    path = demo_zip_path(resolution)
    if not os.path.isfile(path):
        write_demo_dataset(path, overwrite=True, resolution=resolution)
    return path
