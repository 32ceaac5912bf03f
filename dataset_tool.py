#!/usr/bin/env python
"""Make training datasets: a zip (or folder) of uncompressed PNGs plus dataset.json.

Sources: a folder of images (recursive), a zip of images, the CIFAR-10 python archive,
MNIST idx files, an LSUN LMDB folder, or the built-in demo dataset ('demo'). Output is
written to a temporary name and renamed into place, so a failed conversion never leaves a
half-written dataset. Run `python dataset_tool.py --help` for every option.
"""

import codecs
import collections
import dataclasses
import gzip
import io
import json
import math
import numbers
import os
import pickle
import tarfile
import time
import zipfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import click
import numpy as np
import PIL.Image
from tqdm import tqdm

from torch_utils import cli
from training.dataset import (DatasetWriter, IMAGE_EXTENSIONS, LABELS_FILE, MAX_LABELS_BYTES, MAX_MEMBER_BYTES,
                              MAX_RESOLUTION, is_power_of_two, subset_indices, validate_label)

TRANSFORMS = ('none', 'center-crop', 'center-crop-wide', 'resize-long')
MAX_SOURCE_PIXELS = 1 << 27  # Largest source image decoded (134 Mpx, ~400 MB as RGB).


class DatasetToolError(Exception):
    """A problem with the source or the options; the message says what to do."""


class BadImageError(DatasetToolError):
    """One image that cannot go into the dataset (skippable with --skip-bad)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f'{name}: {reason}')
        self.name = name
        self.reason = reason


# One source item: its name (for messages), a function that returns the decoded image
# (PIL image or uint8 array), and its label (int, list of floats, or None).
Item = Tuple[str, Callable[[], Any], Any]

# ---------------------------------------------------------------------------------------
# Sources. Each one knows its length up front, so a random subset can be chosen before any
# image is decoded, and yields only the items it is asked for.


def _open_image_bytes(data: bytes) -> PIL.Image.Image:
    saved, PIL.Image.MAX_IMAGE_PIXELS = PIL.Image.MAX_IMAGE_PIXELS, None  # Our own, clearer check below.
    try:
        img = PIL.Image.open(io.BytesIO(data))
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = saved
    w, h = img.size  # From the header: refuse a decompression bomb before decoding it.
    if w * h > MAX_SOURCE_PIXELS:
        raise ValueError(f'{w}x{h} pixels, over the limit of {MAX_SOURCE_PIXELS} for a source image')
    img.load()  # Decode now, so a truncated file fails here and not later.
    return img


def _parse_labels_json(text: bytes, where: str) -> Optional[Dict[str, Any]]:
    """Reads dataset.json ({"labels": [[name, label], ...]} or null) into {name: label}."""
    try:
        labels = json.loads(text).get('labels')
    except RecursionError:
        raise DatasetToolError(f'{where}: JSON nested too deeply to read') from None
    except (ValueError, AttributeError) as e:
        raise DatasetToolError(f'{where}: not valid JSON of the form {{"labels": [[name, label], ...]}}: {e}')
    if labels is None:
        return None
    try:
        pairs = {str(name).replace('\\', '/'): label
                 for name, label in (labels.items() if isinstance(labels, dict) else labels)}
    except (TypeError, ValueError):
        raise DatasetToolError(f'{where}: "labels" must be a list of [name, label] pairs or null')
    kinds = set()
    for name, label in pairs.items():
        try:
            label = validate_label(label)
        except ValueError as e:
            raise DatasetToolError(f'{where}: the label of {name}: {e}') from None
        kinds.add('class' if isinstance(label, int) else f'vector of {len(label)}')
        pairs[name] = label
        if len(kinds) > 1:
            raise DatasetToolError(f'{where}: labels mix {" and ".join(sorted(kinds))} (at {name}); every label '
                                   f'must be a class index, or every label a vector of one length')
    return pairs


class Source:
    """Base: a sequence of images with optional labels."""

    description = 'images'

    def __len__(self) -> int:
        raise NotImplementedError

    def items(self, indices: Sequence[int]) -> Iterator[Item]:
        """Yields the items at the given (increasing) indices."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _NamedFilesSource(Source):
    """Images under names, with labels looked up by name in a dataset.json."""

    def __init__(self, names: List[str], labels: Optional[Dict[str, Any]]):
        self.names = sorted(names)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.names)

    def _read(self, name: str) -> bytes:
        raise NotImplementedError

    def items(self, indices):
        for i in indices:
            name = self.names[i]
            label = None
            if self.labels is not None:
                if name not in self.labels:
                    # A partly labelled dataset cannot be trained conditionally; say which file.
                    yield name, _raise(BadImageError(name, f'has no label in {LABELS_FILE}; add one, or '
                                                           f'pass --skip-bad to leave it out')), None
                    continue
                label = self.labels[name]
            yield name, (lambda n=name: _open_image_bytes(self._read(n))), label


def _raise(error: Exception) -> Callable[[], Any]:
    def load():
        raise error
    return load


class FolderSource(_NamedFilesSource):
    """A folder of images, searched recursively; labels from its dataset.json."""

    description = 'image folder'

    def __init__(self, path: str):
        self.path = path
        names = []
        for root, _dirs, files in os.walk(path):
            for f in files:
                # Regular files only: a FIFO would block, /dev/zero never ends.
                if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(root, f)):
                    names.append(os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/'))
        labels = None
        json_path = os.path.join(path, LABELS_FILE)
        if os.path.isfile(json_path):
            if os.path.getsize(json_path) > MAX_LABELS_BYTES:
                raise DatasetToolError(f'{json_path} is over {MAX_LABELS_BYTES} bytes; refusing to read it')
            with open(json_path, 'rb') as f:
                labels = _parse_labels_json(f.read(), json_path)
        super().__init__(names, labels)

    def _read(self, name):
        path = os.path.join(self.path, name)
        if os.path.getsize(path) > MAX_MEMBER_BYTES:
            raise BadImageError(name, f'is {os.path.getsize(path)} bytes, over the limit of {MAX_MEMBER_BYTES}')
        with open(path, 'rb') as f:
            data = f.read(MAX_MEMBER_BYTES + 1)
        if len(data) > MAX_MEMBER_BYTES:
            raise BadImageError(name, f'is over the limit of {MAX_MEMBER_BYTES} bytes')
        return data


class ZipSource(_NamedFilesSource):
    """A zip of images; labels from a dataset.json at its root."""

    description = 'image zip'

    def __init__(self, path: str):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
            self.infos = {i.filename: i for i in self.zip.infolist()}
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise DatasetToolError(f'--source {path}: a damaged zip file ({e})') from None
        all_names = list(self.infos)
        names = [n for n in all_names if n.lower().endswith(IMAGE_EXTENSIONS) and not n.endswith('/')]
        labels = None
        if LABELS_FILE in all_names:
            if self.infos[LABELS_FILE].file_size > MAX_LABELS_BYTES:
                raise DatasetToolError(f'{path}:{LABELS_FILE} declares {self.infos[LABELS_FILE].file_size} bytes '
                                       f'uncompressed (over {MAX_LABELS_BYTES}); refusing to unpack it')
            labels = _parse_labels_json(self._read_bounded(LABELS_FILE, MAX_LABELS_BYTES), f'{path}:{LABELS_FILE}')
        super().__init__(names, labels)

    def _read_bounded(self, name: str, limit: int) -> bytes:
        """A member's bytes, refusing what declares (or turns out to hold) more than `limit`:
        a zip of a few megabytes can declare members of many gigabytes."""
        declared = self.infos[name].file_size
        if declared > limit:
            raise BadImageError(name, f'declares {declared} bytes uncompressed, over the limit of {limit}; '
                                      f'not unpacked (a zip bomb?)')
        with self.zip.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise BadImageError(name, f'unpacks to more than {limit} bytes; not unpacked further')
        return data

    def _read(self, name):
        return self._read_bounded(name, MAX_MEMBER_BYTES)

    def close(self):
        self.zip.close()


class ArraySource(Source):
    """Images already decoded into a uint8 array [N, H, W] or [N, H, W, C], with labels."""

    def __init__(self, images: np.ndarray, labels: Optional[np.ndarray], prefix: str, description: str):
        self.images = images
        self.labels = labels
        self.prefix = prefix
        self.description = description

    def __len__(self):
        return self.images.shape[0]

    def items(self, indices):
        for i in indices:
            label = int(self.labels[i]) if self.labels is not None else None
            yield f'{self.prefix}[{i}]', (lambda i=i: self.images[i]), label


class _CifarUnpickler(pickle.Unpickler):
    """Reads the CIFAR-10 batches without running arbitrary code: only NumPy arrays are allowed."""

    def find_class(self, module, name):
        try:
            from numpy._core import multiarray  # pylint: disable=import-outside-toplevel
        except ImportError:  # NumPy < 2
            from numpy.core import multiarray  # pylint: disable=import-outside-toplevel
        allowed = {
            ('numpy.core.multiarray', '_reconstruct'): multiarray._reconstruct,  # pylint: disable=protected-access
            ('numpy._core.multiarray', '_reconstruct'): multiarray._reconstruct,  # pylint: disable=protected-access
            ('numpy.core.multiarray', 'scalar'): multiarray.scalar,
            ('numpy._core.multiarray', 'scalar'): multiarray.scalar,
            ('numpy', 'ndarray'): np.ndarray,
            ('numpy', 'dtype'): np.dtype,
            # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, 'latin1').
            ('_codecs', 'encode'): codecs.encode,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays')
        return allowed[(module, name)]


def load_cifar10(path: str) -> ArraySource:
    """The 50,000 training images of the CIFAR-10 python archive (cifar-10-python.tar.gz)."""
    images, labels = [], []
    try:
        with tarfile.open(path, 'r:*') as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile()
                              and os.path.basename(m.name) in [f'data_batch_{b}' for b in range(1, 6)]),
                             key=lambda m: os.path.basename(m.name))
            if not members:
                raise DatasetToolError(f'{path}: no data_batch_1..5 inside; expected the CIFAR-10 python '
                                       f'archive cifar-10-python.tar.gz')
            for m in members:
                batch = _CifarUnpickler(tar.extractfile(m), encoding='latin1').load()
                batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
                data = np.asarray(batch['data'], dtype=np.uint8)
                images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # NCHW => NHWC
                labels.append(np.asarray(batch['labels'], dtype=np.int64))
    except (tarfile.TarError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
        raise DatasetToolError(f'{path}: cannot read as the CIFAR-10 python archive: {e}')
    images, labels = np.concatenate(images), np.concatenate(labels)
    if images.shape[0] != labels.shape[0] or labels.min() < 0 or labels.max() > 9:
        raise DatasetToolError(f'{path}: CIFAR-10 batches have inconsistent images and labels')
    return ArraySource(images, labels, os.path.basename(path), 'CIFAR-10 archive')


def _read_idx(path: str, expect_ndim: int) -> np.ndarray:
    """Reads an MNIST idx file (optionally gzipped) of unsigned bytes."""
    opener = gzip.open if path.endswith('.gz') else open
    try:
        with opener(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise DatasetToolError(f'{path}: cannot read idx file: {e}')
    # Header: two zero bytes, type code 0x08 (unsigned byte), number of dimensions, then
    # one big-endian int32 per dimension.
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != expect_ndim:
        raise DatasetToolError(f'{path}: not an idx file of unsigned bytes with {expect_ndim} dimension(s)')
    dims = np.frombuffer(data, dtype='>i4', count=expect_ndim, offset=4).astype(np.int64)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * expect_ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetToolError(f'{path}: header says {list(dims)} but holds {body.size} values (truncated?)')
    return body.reshape(dims)


def _mnist_files(path: str) -> Tuple[str, str]:
    if os.path.isdir(path):
        for suffix in ('.gz', ''):
            images = os.path.join(path, 'train-images-idx3-ubyte' + suffix)
            if os.path.isfile(images):
                return images, os.path.join(path, 'train-labels-idx1-ubyte' + suffix)
        raise DatasetToolError(f'{path}: no train-images-idx3-ubyte[.gz] inside')
    return path, path.replace('images-idx3', 'labels-idx1')


def load_mnist(path: str) -> ArraySource:
    """MNIST-style idx files: a folder with train-images-idx3-ubyte[.gz] and
    train-labels-idx1-ubyte[.gz], or the images file itself (labels found beside it).

    The 28x28 digits are padded with 2 black pixels per side to 32x32, as the established
    tools do, so the result is a power of two without resampling.
    """
    images_path, labels_path = _mnist_files(path)
    images = _read_idx(images_path, 3)
    labels = _read_idx(labels_path, 1) if os.path.isfile(labels_path) else None
    if labels is not None and labels.shape[0] != images.shape[0]:
        raise DatasetToolError(f'{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in {images_path}')
    if images.shape[1:] == (28, 28):
        images = np.pad(images, [(0, 0), (2, 2), (2, 2)])
    return ArraySource(images, labels, os.path.basename(images_path), 'MNIST idx files')


class LmdbSource(Source):
    """An LSUN LMDB folder (data.mdb): values are encoded images, keys their names."""

    description = 'LSUN LMDB'

    def __init__(self, path: str):
        try:
            import lmdb  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise DatasetToolError(f'{path} is an LMDB database; reading it needs the optional "lmdb" package: '
                                   f'pip install lmdb') from None
        self.path = path
        self.env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=1)
        self.count = int(self.env.stat()['entries'])

    def __len__(self):
        return self.count

    def items(self, indices):
        wanted = iter(indices)
        target = next(wanted, None)
        with self.env.begin(write=False) as txn:
            for i, (key, value) in enumerate(txn.cursor()):
                if target is None:
                    return
                if i == target:
                    name = key.decode('utf-8', 'replace')
                    yield name, (lambda v=bytes(value): _open_image_bytes(v)), None
                    target = next(wanted, None)

    def close(self):
        self.env.close()


class DemoSource(ArraySource):
    """The built-in demo dataset (handwritten digits shipped with scikit-learn)."""

    def __init__(self):
        from training import demo_dataset  # pylint: disable=import-outside-toplevel
        pairs = list(demo_dataset.iter_demo_images())
        images = np.stack([p[0] for p in pairs])
        labels = np.array([p[1] for p in pairs], dtype=np.int64)
        super().__init__(images, labels, 'demo', 'built-in demo dataset')


def open_source(source: str) -> Source:
    """Picks the reader for a --source value.

    Args:
        source: A folder, a zip, cifar-10-python.tar.gz, MNIST idx files (folder or
            images file), an LMDB folder, 'demo', a named dataset of
            training.named_datasets (e.g. '100-shot-obama') or the URL of a zip.

    Returns:
        The opened source.
    """
    if source == 'demo' and not os.path.exists(source):
        return DemoSource()
    # Named datasets (e.g. 100-shot-obama) and URLs: fetched once into the cache.
    from training import named_datasets  # pylint: disable=import-outside-toplevel
    try:
        source = named_datasets.resolve_data_source(source, '--source')
    except named_datasets.DatasetFetchError as e:
        raise DatasetToolError(str(e)) from None
    if not os.path.exists(source):
        raise DatasetToolError(f'--source {source}: no such file or folder (or give "demo" for the built-in dataset)')
    if os.path.isdir(source):
        if os.path.isfile(os.path.join(source, 'data.mdb')):
            return LmdbSource(source)
        if any(os.path.isfile(os.path.join(source, 'train-images-idx3-ubyte' + s)) for s in ('', '.gz')):
            return load_mnist(source)
        return FolderSource(source)
    if 'idx3-ubyte' in os.path.basename(source):
        return load_mnist(source)
    if zipfile.is_zipfile(source):
        return ZipSource(source)
    if tarfile.is_tarfile(source):
        return load_cifar10(source)
    raise DatasetToolError(f'--source {source}: unknown format; expected a folder, a .zip of images, '
                           f'cifar-10-python.tar.gz, MNIST idx files, an LMDB folder or "demo"')


# ---------------------------------------------------------------------------------------
# Per-image processing.

# Pillow modes that carry alpha, and the colour spaces that convert to RGB without loss of meaning.
_ALPHA_MODES = ('RGBA', 'LA', 'PA', 'RGBa', 'La')
_COLOR_MODES = ('CMYK', 'YCbCr', 'LAB', 'HSV')


def to_channels(img: PIL.Image.Image, channels: str, name: str, counts: collections.Counter) -> PIL.Image.Image:
    """Brings one image to mode 'L' or 'RGB' under the --channels policy.

    'auto' keeps grayscale as 1 channel and colour as 3; it drops an alpha channel only when
    it is fully opaque (no information lost) and otherwise rejects the image. '1' and '3'
    convert every image, compositing any alpha over black. Conversions are counted in
    `counts` for the final report.
    """
    mode = img.mode
    if mode == 'P':
        img = img.convert('RGBA' if 'transparency' in img.info else 'RGB')
    elif mode == '1':
        img = img.convert('L')
    elif mode in ('I;16', 'I;16B', 'I;16L', 'I;16N'):
        counts['16-bit reduced to 8-bit'] += 1
        arr = np.asarray(img, dtype=np.uint16)
        img = PIL.Image.fromarray(((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8))
    elif mode in _COLOR_MODES:
        counts[f'{mode} converted to RGB'] += 1
        img = img.convert('RGB')
    elif mode not in ('L', 'RGB') + _ALPHA_MODES:
        raise BadImageError(name, f'unsupported pixel format "{mode}"; convert it to 8-bit grayscale or RGB first')

    if img.mode in _ALPHA_MODES:
        base = 'L' if img.mode.startswith('L') else 'RGB'
        img = img.convert('LA' if base == 'L' else 'RGBA')
        alpha = np.asarray(img.getchannel('A'))
        if alpha.min() == 255:
            counts['opaque alpha channel dropped'] += 1
            img = img.convert(base)
        elif channels == 'auto':
            raise BadImageError(name, 'has a transparent alpha channel; pass --channels 3 (or 1) to composite '
                                      'it over black, or --skip-bad to leave it out')
        else:
            counts['alpha composited over black'] += 1
            black = PIL.Image.new(img.mode, img.size, 0)
            img = PIL.Image.alpha_composite(black.convert('RGBA'), img.convert('RGBA')).convert(base)

    if channels == '1' and img.mode != 'L':
        counts['RGB converted to grayscale'] += 1
        img = img.convert('L')
    elif channels == '3' and img.mode != 'RGB':
        counts['grayscale converted to RGB'] += 1
        img = img.convert('RGB')
    return img


def _center_crop_box(w: int, h: int, aspect: float) -> Tuple[int, int, int, int]:
    """The largest centred box of width/height = aspect inside a w x h image."""
    if w / h > aspect:
        cw, ch = max(1, int(round(h * aspect))), h
    else:
        cw, ch = w, max(1, int(round(w / aspect)))
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def _resize(img: PIL.Image.Image, size: Tuple[int, int]) -> PIL.Image.Image:
    # Lanczos: sharp and alias-free in both directions (Pillow widens it when shrinking).
    return img if img.size == size else img.resize(size, PIL.Image.Resampling.LANCZOS)


def apply_transform(img: PIL.Image.Image, transform: str, size: Optional[Tuple[int, int]]) -> PIL.Image.Image:
    """Applies --transform with the requested output size (W, H).

    - none: resize to (W, H) when a size is given, otherwise keep the image as is.
    - center-crop: crop the largest centred W:H box, resize to (W, H).
    - center-crop-wide: crop a centred W:H box (W >= H), resize to (W, H), and place it in
      the middle of a black W x W square (letterbox), for wide scenes.
    - resize-long: scale the whole image so its longer side fits (W, H), keeping the aspect
      ratio, and pad with black to W x H.
    """
    if transform == 'none':
        return _resize(img, size) if size is not None else img
    w, h = size
    if transform == 'center-crop':
        return _resize(img.crop(_center_crop_box(img.width, img.height, w / h)), (w, h))
    if transform == 'center-crop-wide':
        wide = _resize(img.crop(_center_crop_box(img.width, img.height, w / h)), (w, h))
        canvas = PIL.Image.new(img.mode, (w, w), 0)
        canvas.paste(wide, (0, (w - h) // 2))
        return canvas
    if transform == 'resize-long':
        scale = min(w / img.width, h / img.height)
        fit = (max(1, int(round(img.width * scale))), max(1, int(round(img.height * scale))))
        canvas = PIL.Image.new(img.mode, (w, h), 0)
        canvas.paste(_resize(img, fit), ((w - fit[0]) // 2, (h - fit[1]) // 2))
        return canvas
    raise DatasetToolError(f'--transform {transform}: unknown; choose one of {", ".join(TRANSFORMS)}')


def output_size(transform: str, width: Optional[int], height: Optional[int]) -> Optional[Tuple[int, int]]:
    """Checks the size options; returns the requested (W, H), or None when the images decide."""
    if (width is None) != (height is None):
        raise DatasetToolError('--width and --height go together (or use --resolution WxH)')
    if width is None:
        if transform != 'none':
            raise DatasetToolError(f'--transform {transform} needs an output size: pass --resolution WxH')
        return None
    final = (width, height)
    if transform == 'center-crop-wide':
        # The W x H crop is letterboxed into a W x W square.
        if width < height:
            raise DatasetToolError(f'--transform center-crop-wide needs width >= height, got {width}x{height}')
        final = (width, width)
    _check_final_size(final, f'--resolution {width}x{height} with --transform {transform}')
    return width, height


def _check_final_size(size: Tuple[int, int], where: str) -> None:
    w, h = size
    if w != h:
        raise DatasetToolError(f'{where} gives {w}x{h} images; training needs square images. Use a square '
                               f'--resolution, --transform center-crop, or --transform center-crop-wide.')
    if not is_power_of_two(w) or w < 4:
        raise DatasetToolError(f'{where} gives {w}x{h} images; training needs a power-of-two resolution '
                               f'(4, 8, ..., 1024). Pass e.g. --resolution {max(4, 1 << (w - 1).bit_length())}'
                               f'x{max(4, 1 << (w - 1).bit_length())}.')


# ---------------------------------------------------------------------------------------
# Conversion.


@dataclasses.dataclass
class Report:
    """What a conversion did."""
    dest: str
    num_images: int
    shape: Tuple[int, int, int]  # H, W, C
    has_labels: bool
    num_selected: int
    skipped: List[Tuple[str, str]]
    conversions: Dict[str, int]
    seconds: float


def convert_dataset(source: str, dest: str, *, max_images: Optional[int] = None, subset: Optional[int] = None,
                    seed: int = 0, transform: str = 'none', width: Optional[int] = None,
                    height: Optional[int] = None, channels: str = 'auto', skip_bad: bool = False,
                    overwrite: bool = False, progress: Optional[bool] = None) -> Report:
    """Converts a source into a dataset zip or folder.

    Args:
        source: See `open_source`.
        dest: '.zip' path or folder path.
        max_images: Keep at most this many (after --subset).
        subset: Pick this many at random (reproducible with `seed`) before max_images.
        seed: Seed of the subset.
        transform: One of TRANSFORMS.
        width, height: Output size before the transform's padding (both or neither).
        channels: 'auto', '1' or '3'.
        skip_bad: Skip unusable images (reported) instead of stopping.
        overwrite: Replace an existing dest.
        progress: Show a progress bar (None: only on a terminal).

    Returns:
        A `Report`.
    """
    start = time.time()
    if transform not in TRANSFORMS:
        raise DatasetToolError(f'--transform {transform}: unknown; choose one of {", ".join(TRANSFORMS)}')
    if channels not in ('auto', '1', '3'):
        raise DatasetToolError(f'--channels {channels}: choose auto, 1 or 3')
    size = output_size(transform, width, height)
    if os.path.exists(dest) and not overwrite:
        raise DatasetToolError(f'--dest {dest} already exists; remove it, choose another --dest, or pass --overwrite')

    src = open_source(source)
    try:
        if len(src) == 0:
            raise DatasetToolError(f'--source {source}: the {src.description} holds no images '
                                   f'({", ".join(IMAGE_EXTENSIONS)})')
        if subset is not None and subset > len(src):
            raise DatasetToolError(f'--subset {subset}: the source has only {len(src)} images')
        indices = subset_indices(len(src), subset, seed)
        if max_images is not None:
            indices = indices[:max_images]

        skipped: List[Tuple[str, str]] = []
        counts: collections.Counter = collections.Counter()
        first_name, shape = None, None
        has_labels = None
        try:
            writer = DatasetWriter(dest, overwrite=overwrite)
        except FileExistsError as e:
            if e.filename and os.path.abspath(e.filename) != os.path.abspath(dest):
                raise DatasetToolError(f'--dest {dest}: cannot write there ({e.filename} is a file, not a '
                                       f'folder)') from None
            raise
        except OSError as e:
            raise DatasetToolError(f'--dest {dest}: cannot write there ({e.strerror or e})') from None
        with writer, tqdm(total=len(indices), unit='img', disable=(None if progress is None else not progress),
                          desc='Converting') as bar:
            for name, load, label in src.items(indices.tolist()):
                bar.update(1)
                try:
                    try:
                        img = load()
                    except BadImageError:
                        raise
                    except Exception as e:  # pylint: disable=broad-except
                        raise BadImageError(name, f'cannot be read as an image ({type(e).__name__}: {e})')
                    if isinstance(img, np.ndarray):
                        img = PIL.Image.fromarray(img if img.ndim == 2 or img.shape[2] != 1 else img[:, :, 0])
                    img = to_channels(img, channels, name, counts)
                    if transform == 'none' and size is None and shape is not None and img.size != shape[1::-1]:
                        raise BadImageError(name, f'is {img.width}x{img.height} but {first_name} is '
                                                  f'{shape[1]}x{shape[0]}; pass --transform center-crop '
                                                  f'--resolution NxN (or --resolution NxN) to make them '
                                                  f'equal, or --skip-bad')
                    img = apply_transform(img, transform, size)
                    arr = np.asarray(img)
                    if arr.ndim == 2:
                        arr = arr[:, :, None]
                    if shape is None:
                        _check_final_size((arr.shape[1], arr.shape[0]), f'The source images (first: {name})')
                    elif arr.shape != shape:
                        raise BadImageError(name, f'has {arr.shape[2]} channel(s) but {first_name} has '
                                                  f'{shape[2]}; pass --channels 1 or --channels 3 to convert '
                                                  f'all images, or --skip-bad')
                    if has_labels is not None and has_labels != (label is not None):
                        raise BadImageError(name, 'labelled and unlabelled images are mixed')
                except BadImageError as e:
                    if not skip_bad:
                        raise DatasetToolError(f'{e}. Nothing was written to {dest}.') from None
                    skipped.append((e.name, e.reason))
                    bar.write(f'skipped {e.name}: {e.reason}')
                    continue
                if shape is None:
                    first_name, shape, has_labels = name, arr.shape, label is not None
                writer.add(arr, label)
            if writer.num_images == 0:
                raise DatasetToolError(f'--source {source}: all {len(indices)} selected images were skipped; '
                                       f'nothing was written')
    except FileExistsError as e:
        # The writer found dest (again) at the start or just before the final rename.
        raise DatasetToolError(str(e)) from None
    except OSError as e:
        # A full or read-only disk while writing: the writer removed its temporary output.
        raise DatasetToolError(f'--dest {dest}: writing failed ({e.strerror or e}); nothing was written') from None
    finally:
        src.close()
    return Report(dest=writer.dest, num_images=writer.num_images, shape=tuple(shape), has_labels=bool(has_labels),
                  num_selected=len(indices), skipped=skipped, conversions=dict(counts), seconds=time.time() - start)


# ---------------------------------------------------------------------------------------
# Command line.


def _parse_resolution(ctx, param, value):  # pylint: disable=unused-argument
    if value is None:
        return None
    parts = value.lower().split('x')
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f'"{value}" is not WxH (e.g. 256x256) or N')
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise click.BadParameter(f'"{value}" is not WxH (e.g. 256x256) or N')
    if max(dims) > MAX_RESOLUTION:
        raise click.BadParameter(f'{value} is over the largest supported resolution, {MAX_RESOLUTION}')
    return tuple(dims)


@click.command(context_settings=dict(help_option_names=['-h', '--help'], max_content_width=100))
@click.option('--source', required=True, metavar='PATH',
              help='Input: a folder of images (recursive; png, jpg, jpeg, webp, bmp; labels from its '
                   'dataset.json), a .zip of images, cifar-10-python.tar.gz, an MNIST folder or '
                   'train-images-idx3-ubyte[.gz] file, an LSUN LMDB folder (needs lmdb), "demo", a named '
                   'dataset (100-shot-obama, 100-shot-grumpy_cat, 100-shot-panda, AnimalFace-cat, ...) or '
                   'the http(s) URL of a zip; named and URL datasets are fetched once into the cache.')
@click.option('--dest', required=True, metavar='PATH',
              help='Output: a .zip path (uncompressed PNGs + dataset.json) or a folder path.')
@click.option('--max-images', type=click.IntRange(min=1), metavar='N',
              help='Keep at most N images (the first N, after --subset).')
@click.option('--subset', type=click.IntRange(min=1), metavar='N',
              help='Pick N images at random before --max-images, e.g. 1000 for a limited-data '
                   'experiment; the same --seed picks the same images.')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, metavar='INT',
              help='Seed of the --subset choice.')
@click.option('--transform', type=click.Choice(TRANSFORMS), default='none', show_default=True,
              help='center-crop: crop to the output aspect, then resize; center-crop-wide: crop to '
                   'WxH and letterbox into WxW; resize-long: fit the whole image, pad with black; '
                   'none: resize to --resolution if given. Resampling is Lanczos.')
@click.option('--resolution', callback=_parse_resolution, metavar='WxH',
              help='Output size, e.g. 256x256 (or 256); the result must be square and a power of two.')
@click.option('--width', type=click.IntRange(min=1, max=MAX_RESOLUTION), metavar='PX', help='Output width (with --height).')
@click.option('--height', type=click.IntRange(min=1, max=MAX_RESOLUTION), metavar='PX', help='Output height (with --width).')
@click.option('--channels', type=click.Choice(['auto', '1', '3']), default='auto', show_default=True,
              help='auto: keep grayscale/colour as found, all images must agree, a transparent alpha '
                   'channel is an error; 1 or 3: convert every image (alpha composited over black).')
@click.option('--skip-bad', **cli.BOOL,
              help='Skip unreadable images and images that do not match the first one (listed as '
                   'they are skipped and in the summary) instead of stopping with an error.')
@click.option('--overwrite', **cli.BOOL, help='Replace --dest if it exists (atomically).')
@click.option('--progress', **dict(cli.BOOL, default=None, show_default=False),
              help='Show a progress bar  [default: only on a terminal]')
@click.option('--no-progress', 'no_progress', is_flag=True, hidden=True, help='Older spelling of --progress=0.')
def main(source, dest, max_images, subset, seed, transform, resolution, width, height, channels,
         skip_bad, overwrite, progress, no_progress):
    """Make a training dataset: a zip (or folder) of uncompressed PNGs with dataset.json labels.

    \b
    Examples:
      python dataset_tool.py --source demo --dest ~/datasets/demo.zip
      python dataset_tool.py --source cifar-10-python.tar.gz --dest cifar10.zip
      python dataset_tool.py --source mnist/ --dest mnist32.zip
      python dataset_tool.py --source photos/ --dest faces256-1k.zip --transform center-crop \\
          --resolution 256x256 --subset 1000 --seed 0
    """
    if no_progress:
        progress = False
    if resolution is not None:
        if (width is not None and width != resolution[0]) or (height is not None and height != resolution[1]):
            raise click.ClickException('--resolution disagrees with --width/--height; give one of them')
        width, height = resolution
    try:
        report = convert_dataset(source, dest, max_images=max_images, subset=subset, seed=seed,
                                 transform=transform, width=width, height=height, channels=channels,
                                 skip_bad=skip_bad, overwrite=overwrite, progress=progress)
    except DatasetToolError as e:
        raise click.ClickException(str(e))
    h, w, c = report.shape
    click.echo(f'Wrote {report.num_images} images ({w}x{h}, {c} channel{"s" if c > 1 else ""}, '
               f'{"labelled" if report.has_labels else "no labels"}) to {report.dest} in {report.seconds:.1f} s.')
    for what, n in sorted(report.conversions.items()):
        click.echo(f'  {what}: {n} image(s)')
    if report.skipped:
        click.echo(f'  skipped (--skip-bad): {len(report.skipped)} of {report.num_selected} selected image(s):')
        for name, reason in report.skipped[:20]:
            click.echo(f'    {name}: {reason}')
        if len(report.skipped) > 20:
            click.echo(f'    ... and {len(report.skipped) - 20} more')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
