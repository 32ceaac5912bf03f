"""Training datasets: the dataset archive format, its loader, and the infinite sampler.

The format (shared with the established StyleGAN2-ADA tools, so existing datasets work
unchanged): a zip or a folder holding uncompressed PNGs at `NNNNN/imgNNNNNNNN.png` (the
5-digit folder is `index // 1000`), and an optional `dataset.json` with
`{"labels": [["00000/img00000000.png", 6], ...]}` or `{"labels": null}`. Images have 1 or 3
channels and one square power-of-two resolution.

- `DatasetWriter` writes that format atomically (used by dataset_tool.py and the demo data).
- `ImageFolderDataset` reads it (zip or folder) for the training loop and the metrics.
- `InfiniteSampler` hands out an endless, deterministic, resumable index stream per rank.
- `resolve_data_path` turns a `--data` value (zip, folder, or 'demo') into a path.
"""

import io
import json
import os
import shutil
import struct
import uuid
import zipfile
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch

import dnnlib

try:
    import pyspng  # Optional: decodes PNGs several times faster than Pillow.
except ImportError:
    pyspng = None

# Extensions the loader accepts inside a dataset folder or zip (dataset_tool writes PNG).
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp')
LABELS_FILE = 'dataset.json'

# Bounds that keep a hostile dataset from exhausting memory before any check can run.
MAX_RESOLUTION = 8192                 # Largest image side the loader and dataset_tool accept.
MAX_MEMBER_BYTES = 512 << 20          # Largest image file (uncompressed) inside a dataset.
MAX_LABELS_BYTES = 1 << 30            # Largest dataset.json.


MAX_CLASSES = 1 << 16                 # Class labels are 0 .. MAX_CLASSES-1.
MAX_LABEL_DIM = 1 << 12               # Length of a vector label.


class DatasetError(ValueError):
    """A dataset cannot be used: names the dataset and the image or file at fault."""


def validate_label(label: Any) -> Union[int, List[float]]:
    """A label as stored: a class index (int in [0, MAX_CLASSES)) or a vector of finite floats.

    Raises:
        ValueError: saying what is wrong (a string, a bool, NaN, an absurd class index, ...).
    """
    if isinstance(label, (bool, np.bool_)):
        raise ValueError(f'{label!r} is a boolean; a label is a class index or a list of numbers')
    if isinstance(label, (int, np.integer)):
        if not 0 <= int(label) < MAX_CLASSES:
            raise ValueError(f'class index {int(label)} is outside 0..{MAX_CLASSES - 1}')
        return int(label)
    if isinstance(label, (float, np.floating)):
        label = [label]
    if isinstance(label, np.ndarray):
        label = label.reshape(-1).tolist()
    if not isinstance(label, (list, tuple)):
        shown = repr(label) if isinstance(label, str) and len(label) < 40 else type(label).__name__
        raise ValueError(f'{shown} is not a class index or a list of numbers')
    if not 1 <= len(label) <= MAX_LABEL_DIM:
        raise ValueError(f'a vector label needs 1..{MAX_LABEL_DIM} numbers, got {len(label)}')
    out = []
    for x in label:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
            raise ValueError(f'a vector label holds {type(x).__name__} values; only numbers are allowed')
        if not np.isfinite(float(x)):
            raise ValueError(f'a vector label holds {float(x)}; only finite numbers are allowed')
        out.append(float(x))
    return out

# ---------------------------------------------------------------------------------------
# Format helpers.


def archive_image_name(index: int) -> str:
    """The path of image `index` inside a dataset archive, e.g. '00001/img00001234.png'."""
    return f'{index // 1000:05d}/img{index:08d}.png'


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def subset_indices(num_items: int, size: Optional[int], seed: int = 0) -> np.ndarray:
    """Picks a reproducible random subset of `size` indices out of `num_items`, in order.

    The rule (shuffle all indices with NumPy's legacy RandomState(seed), keep the first
    `size`, sort them) is the one the established tools use for `max_size`, so a subset
    picked here equals the subset a `--subset`/`max_size` run picks elsewhere.

    Args:
        num_items: Number of items to choose from.
        size: How many to keep; None or >= num_items keeps all.
        seed: Seed of the shuffle.

    Returns:
        Sorted int64 array of the chosen indices.
    """
    indices = np.arange(num_items, dtype=np.int64)
    if size is None or size >= num_items:
        return indices
    if size < 0:
        raise ValueError(f'subset size must be non-negative, got {size}')
    np.random.RandomState(seed % (1 << 31)).shuffle(indices)
    return np.sort(indices[:size])


def encode_png(image: np.ndarray) -> bytes:
    """Encodes an HWC (or HW) uint8 image as an uncompressed PNG.

    Uncompressed PNGs keep decoding cheap in the training loop; the format is still PNG so
    any viewer opens them.
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buf = io.BytesIO()
    # fromarray picks 'L' for HW and 'RGB' for HW3 uint8 arrays.
    PIL.Image.fromarray(np.ascontiguousarray(image)).save(buf, format='png', compress_level=0, optimize=False)
    return buf.getvalue()


def _check_dataset_shape(shape: Sequence[int], where: str) -> None:
    """Raises ValueError unless `shape` ([C, H, W]) is a valid training shape."""
    c, h, w = shape
    if c not in (1, 3):
        raise ValueError(f'{where}: images have {c} channels; datasets need 1 (grayscale) or 3 (RGB). '
                         f'Re-create the dataset with dataset_tool.py --channels 1 or --channels 3.')
    if h != w:
        raise ValueError(f'{where}: images are {w}x{h} (WxH), not square. Re-create the dataset with '
                         f'dataset_tool.py --transform center-crop --resolution NxN.')
    if not is_power_of_two(h) or h < 4:
        raise ValueError(f'{where}: resolution {h} is not a power of two (>= 4). Re-create the dataset '
                         f'with dataset_tool.py --resolution, e.g. --resolution 64x64.')


# ---------------------------------------------------------------------------------------
# Writing.


class DatasetWriter:
    """Writes a dataset zip or folder atomically, one image at a time.

    Everything goes to a temporary file (or folder) beside `dest`; `close()` renames it into
    place, so a failed or interrupted conversion never leaves a half-written dataset.

    Use as a context manager: leaving the block normally commits, an exception discards.

    Args:
        dest: Destination; a path ending in '.zip' gives a zip, anything else a folder.
        overwrite: Replace an existing `dest` instead of refusing.
    """

    def __init__(self, dest: str, overwrite: bool = False):
        self.dest = os.path.abspath(dest)
        self.overwrite = overwrite
        self.is_zip = dest.lower().endswith('.zip')
        self._check_dest()
        parent = os.path.dirname(self.dest)
        os.makedirs(parent, exist_ok=True)
        # A unique name beside dest (same filesystem, so the final rename is atomic), created
        # with the usual permissions rather than mkstemp's owner-only ones.
        self._tmp = os.path.join(parent, f'.{os.path.basename(self.dest)}.tmp-{uuid.uuid4().hex[:12]}')
        if self.is_zip:
            self._zip = zipfile.ZipFile(self._tmp, 'x', compression=zipfile.ZIP_STORED)
        else:
            os.mkdir(self._tmp)
            self._zip = None
        self._labels: List[Any] = []
        self._shape = None
        self._closed = False

    def _check_dest(self) -> None:
        if not os.path.exists(self.dest):
            return
        if not self.overwrite:
            raise FileExistsError(f'Destination {self.dest} already exists; remove it, choose another '
                                  f'--dest, or pass --overwrite.')
        if os.path.isdir(self.dest) == self.is_zip:
            kind = 'folder' if self.is_zip else 'file'
            raise FileExistsError(f'Destination {self.dest} exists and is a {kind}; --overwrite replaces '
                                  f'only a dataset of the same kind. Remove it first.')

    @property
    def num_images(self) -> int:
        return len(self._labels)

    def add(self, image: np.ndarray, label: Union[int, Sequence[float], None] = None) -> str:
        """Appends one image.

        Args:
            image: uint8 array, HW (grayscale) or HWC with C in (1, 3).
            label: An int class, a list of floats, or None (unlabelled).

        Returns:
            The archive name the image was stored under.
        """
        if self._closed:
            raise RuntimeError('DatasetWriter is closed')
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise TypeError(f'images must be uint8, got {image.dtype}')
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f'images must be HW or HWC, got shape {image.shape}')
        if self._shape is None:
            _check_dataset_shape([image.shape[2], image.shape[0], image.shape[1]], 'dataset')
            self._shape = image.shape
        elif image.shape != self._shape:
            raise ValueError(f'image {self.num_images} has shape {image.shape}, the dataset has {self._shape} (HWC)')
        if (label is None) != (not self._labels or self._labels[0] is None) and self._labels:
            raise ValueError(f'image {self.num_images}: either every image has a label or none does')
        if label is not None:
            label = validate_label(label)
        name = archive_image_name(self.num_images)
        self._write(name, encode_png(image))
        self._labels.append(label)
        return name

    def _write(self, name: str, data: bytes) -> None:
        if self._zip is not None:
            self._zip.writestr(name, data)
        else:
            path = os.path.join(self._tmp, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'wb') as f:
                f.write(data)

    def close(self) -> str:
        """Writes dataset.json and renames the result into place.

        Returns:
            The destination path.
        """
        if self._closed:
            return self.dest
        if self.num_images == 0:
            self.discard()
            raise ValueError(f'No images were written to {self.dest}; nothing was created.')
        has_labels = self._labels[0] is not None
        labels = [[archive_image_name(i), lab] for i, lab in enumerate(self._labels)] if has_labels else None
        try:
            self._write(LABELS_FILE, json.dumps({'labels': labels}, allow_nan=False).encode('utf-8'))
            if self._zip is not None:
                self._zip.close()
        except BaseException:
            self.discard()  # A full disk here must not leave the temporary output behind.
            raise
        self._closed = True
        # The destination may have appeared while converting; check again before renaming.
        try:
            self._check_dest()
        except FileExistsError:
            self._remove_tmp()
            raise
        if self.is_zip:
            try:
                os.replace(self._tmp, self.dest)
            except OSError:
                self._remove_tmp()
                raise
        else:
            # A folder cannot replace a non-empty folder atomically: move the old one aside first.
            old = None
            if os.path.exists(self.dest):
                old = os.path.join(os.path.dirname(self.dest),
                                   f'.{os.path.basename(self.dest)}.old-{uuid.uuid4().hex[:12]}')
                os.replace(self.dest, old)
            os.replace(self._tmp, self.dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return self.dest

    def discard(self) -> None:
        """Drops everything written so far; `dest` is left untouched."""
        if self._zip is not None and not self._closed:
            self._zip.close()
        self._closed = True
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if os.path.isdir(self._tmp):
            shutil.rmtree(self._tmp, ignore_errors=True)
        elif os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self) -> 'DatasetWriter':
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


# ---------------------------------------------------------------------------------------
# Reading.


class Dataset(torch.utils.data.Dataset):
    """Base of the training datasets: subsets, x-flips and labels over raw images.

    Subclasses provide `_load_raw_image(raw_idx)` (uint8 CHW) and `_load_raw_labels()`
    (None, int64 [N] class indices, or float32 [N, D]).

    Args:
        name: Short name of the dataset (used in run directory names).
        raw_shape: [N, C, H, W] of the whole raw dataset.
        max_size: Keep a reproducible random subset of at most this many images.
        use_labels: Return labels (one-hot for class labels); False gives zeros(0).
        xflip: Double the dataset with horizontally mirrored copies.
        random_seed: Seed of the `max_size` subset.
    """

    def __init__(self, name: str, raw_shape: Sequence[int], max_size: Optional[int] = None,
                 use_labels: bool = False, xflip: bool = False, random_seed: int = 0):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._raw_labels = None
        self._labels_loaded = False
        self._label_shape = None

        # The subset keeps raw order, so the same seed and size always pick the same images.
        self._raw_idx = subset_indices(self._raw_shape[0], max_size, random_seed)
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

        # Asking for labels that do not exist is a configuration error, not a silent zero.
        if use_labels and self._get_raw_labels() is None:
            raise ValueError(f'Dataset "{self._name}" has no labels (its {LABELS_FILE} is missing or '
                             f'has "labels": null), but use_labels=True (--cond). Drop --cond or '
                             f'create the dataset with labels.')

    def _get_raw_labels(self) -> Optional[np.ndarray]:
        """All raw labels (None when the dataset has none), loaded once and validated."""
        if not self._labels_loaded:
            labels = self._load_raw_labels()
            if labels is not None:
                labels = np.asarray(labels)
                if labels.shape[0] != self._raw_shape[0]:
                    raise ValueError(f'Dataset "{self._name}": {labels.shape[0]} labels for '
                                     f'{self._raw_shape[0]} images')
                if labels.dtype.kind in 'iu':
                    labels = labels.astype(np.int64).reshape(-1)
                    if labels.min() < 0:
                        raise ValueError(f'Dataset "{self._name}": negative class label {labels.min()}')
                else:
                    labels = labels.astype(np.float32).reshape(labels.shape[0], -1)
            self._raw_labels = labels
            self._labels_loaded = True
        return self._raw_labels

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        raise NotImplementedError

    def _load_raw_labels(self) -> Optional[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Releases open files (they reopen on demand)."""

    def __getstate__(self):
        return dict(self.__dict__)

    def __del__(self):
        try:
            self.close()
        except Exception:  # pylint: disable=broad-except
            pass

    def __len__(self) -> int:
        return self._raw_idx.size

    def __getitem__(self, idx: int):
        raw_idx = int(self._raw_idx[idx])
        image = self._load_raw_image(raw_idx)
        if list(image.shape) != self.image_shape or image.dtype != np.uint8:
            raise ValueError(f'Dataset "{self._name}": image {raw_idx} is {list(image.shape)} {image.dtype}, '
                             f'expected {self.image_shape} uint8')
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self.get_label(idx)

    def get_label(self, idx: int) -> np.ndarray:
        """The label of item `idx`: one-hot float32 for classes, zeros(0) when unused."""
        if not self._use_labels:
            return np.zeros([0], dtype=np.float32)
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if self.has_onehot_labels:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        return label.copy()

    def get_details(self, idx: int) -> dnnlib.EasyDict:
        """Where item `idx` comes from: raw_idx, xflip and raw_label."""
        d = dnnlib.EasyDict()
        d.raw_idx = int(self._raw_idx[idx])
        d.xflip = int(self._xflip[idx]) != 0
        labels = self._get_raw_labels() if self._use_labels else None
        d.raw_label = labels[d.raw_idx].copy() if labels is not None else np.zeros([0], np.float32)
        return d

    @property
    def name(self) -> str:
        return self._name

    @property
    def image_shape(self) -> List[int]:
        return list(self._raw_shape[1:])

    @property
    def num_channels(self) -> int:
        return self.image_shape[0]

    @property
    def resolution(self) -> int:
        return self.image_shape[1]

    @property
    def label_shape(self) -> List[int]:
        if self._label_shape is None:
            labels = self._get_raw_labels() if self._use_labels else None
            if labels is None:
                self._label_shape = [0]
            elif labels.dtype == np.int64:
                self._label_shape = [int(labels.max()) + 1]
            else:
                self._label_shape = list(labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self) -> int:
        return int(np.prod(self.label_shape))

    @property
    def has_labels(self) -> bool:
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self) -> bool:
        return self.has_labels and self._get_raw_labels().dtype == np.int64


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> channels of the decoded array.
_PIL_CHANNELS = {'L': 1, 'P': 1, 'RGB': 3, 'RGBA': 4, 'LA': 2, 'CMYK': 4, 'YCbCr': 3}


def image_header(f, fname: str) -> Tuple[int, int, int]:
    """(width, height, channels) of an image file from its header alone, without decoding.

    Raises:
        ValueError: the header is not that of a readable 8-bit image.
    """
    head = f.read(33)
    if fname.lower().endswith('.png'):
        if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b'IHDR':
            raise ValueError('not a PNG file (bad signature or header)')
        width, height, depth, color = struct.unpack('>IIBB', head[16:26])
        if depth != 8 or color not in _PNG_CHANNELS:
            raise ValueError(f'a {depth}-bit PNG of colour type {color}; datasets hold 8-bit grayscale or RGB')
        return width, height, _PNG_CHANNELS[color]
    try:
        f.seek(0)
        with PIL.Image.open(f) as img:
            mode, (width, height) = img.mode, img.size
    except Exception as e:  # PIL raises many kinds on foreign bytes.
        raise ValueError(f'not a readable image ({type(e).__name__}: {e})') from None
    if mode not in _PIL_CHANNELS:
        raise ValueError(f'image mode {mode}; datasets hold 8-bit grayscale or RGB')
    return width, height, _PIL_CHANNELS[mode]


class ImageFolderDataset(Dataset):
    """A dataset zip or folder in the archive format (any image names are accepted).

    Args:
        path: A .zip file or a folder (searched recursively).
        resolution: Expected resolution; an error names the mismatch if it differs.
        use_labels, max_size, xflip, random_seed: See `Dataset`.
        **super_kwargs: Passed to `Dataset`.
    """

    def __init__(self, path: str, resolution: Optional[int] = None, use_labels: bool = False,
                 max_size: Optional[int] = None, xflip: bool = False, random_seed: int = 0,
                 **super_kwargs):
        self._path = path
        self._zipfile = None
        if os.path.isdir(path):
            self._type = 'dir'
            # Regular files only: a FIFO would block the header check, /dev/zero never ends.
            names = [os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/')
                     for root, _dirs, files in os.walk(path) for f in files if os.path.isfile(os.path.join(root, f))]
        elif os.path.isfile(path) and zipfile.is_zipfile(path):
            self._type = 'zip'
            try:
                infos = [i for i in self._get_zipfile().infolist() if not i.filename.endswith('/')]
            except (zipfile.BadZipFile, OSError, ValueError) as e:
                raise DatasetError(f'Dataset {path} is a damaged zip file: {e}') from None
            names = [i.filename for i in infos]
            # Declared sizes first: a small zip can declare members of many gigabytes.
            for info in infos:
                limit = MAX_LABELS_BYTES if info.filename == LABELS_FILE else MAX_MEMBER_BYTES
                if (info.filename == LABELS_FILE or info.filename.lower().endswith(IMAGE_EXTENSIONS)) \
                        and info.file_size > limit:
                    raise DatasetError(f'Dataset {path}: {info.filename} declares {info.file_size} bytes '
                                       f'uncompressed (over the limit of {limit}); refusing to unpack it')
        elif os.path.isfile(path):
            raise ValueError(f'Dataset {path} is not a zip file; give a dataset zip or a folder of images.')
        else:
            raise FileNotFoundError(f'Dataset path {path} does not exist.')
        self._image_fnames = sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
        if not self._image_fnames:
            raise ValueError(f'Dataset {path} contains no images ({", ".join(IMAGE_EXTENSIONS)}).')

        name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        self._check_headers()
        first = self._load_raw_image(0)
        _check_dataset_shape(first.shape, f'Dataset {path}')
        if resolution is not None and first.shape[2] != resolution:
            raise ValueError(f'Dataset {path} has resolution {first.shape[2]}, but resolution={resolution} '
                             f'was requested.')
        raw_shape = [len(self._image_fnames)] + list(first.shape)
        super().__init__(name=name, raw_shape=raw_shape, use_labels=use_labels, max_size=max_size,
                         xflip=xflip, random_seed=random_seed, **super_kwargs)

    def _check_headers(self) -> None:
        """Reads every image's header (not its pixels): all must be readable 8-bit images of
        one size and channel count, within MAX_RESOLUTION, so a bad image is reported here,
        naming it, instead of stopping a run at the step that first draws it."""
        bad, shapes = [], {}
        for fname in self._image_fnames:
            try:
                with self._open_file(fname) as f:
                    w, h, ch = image_header(f, fname)
                if max(w, h) > MAX_RESOLUTION:
                    raise ValueError(f'{w}x{h} pixels, over the limit of {MAX_RESOLUTION}')
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
                bad.append(f'{fname}: {e}')
                continue
            shapes.setdefault((w, h, ch), fname)
            if len(shapes) > 1 and not bad:
                (s0, f0), (s1, f1) = list(shapes.items())[:2]
                bad.append(f'{f1} is {s1[0]}x{s1[1]} with {s1[2]} channels, but {f0} is {s0[0]}x{s0[1]} with '
                           f'{s0[2]} channels (all images must match)')
        if bad:
            raise DatasetError(f'Dataset {self._path}: {len(bad)} of {len(self._image_fnames)} images are unusable; '
                               f'first: {bad[0]}. Re-create the dataset with dataset_tool.py.')

    @property
    def path(self) -> str:
        return self._path

    def _get_zipfile(self) -> zipfile.ZipFile:
        # Opened lazily so each DataLoader worker opens its own handle after unpickling.
        if self._zipfile is None:
            self._zipfile = zipfile.ZipFile(self._path)
        return self._zipfile

    def _open_file(self, fname: str):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    def close(self) -> None:
        if getattr(self, '_zipfile', None) is not None:
            self._zipfile.close()
        self._zipfile = None

    def __getstate__(self):
        return dict(super().__getstate__(), _zipfile=None)

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                data = f.read(MAX_MEMBER_BYTES + 1)
            if len(data) > MAX_MEMBER_BYTES:
                raise ValueError(f'over {MAX_MEMBER_BYTES} bytes')
            if pyspng is not None and fname.lower().endswith('.png'):
                image = pyspng.load(data)
            else:
                with PIL.Image.open(io.BytesIO(data)) as img:
                    image = np.array(img)
        except Exception as e:
            raise DatasetError(f'Dataset {self._path}: cannot decode image {fname}: {type(e).__name__}: {e}') from None
        if image.ndim == 2:
            image = image[:, :, None]
        if image.dtype != np.uint8:
            raise ValueError(f'Dataset {self._path}: image {fname} is {image.dtype}, expected 8-bit; '
                             f're-create the dataset with dataset_tool.py.')
        image = image.transpose(2, 0, 1)  # HWC => CHW
        shape = getattr(self, '_raw_shape', None)
        if shape is not None and list(image.shape) != shape[1:]:
            raise ValueError(f'Dataset {self._path}: image {fname} has shape {list(image.shape)} (CHW), '
                             f'the first image has {shape[1:]}; all images must match.')
        return image

    def _load_raw_labels(self) -> Optional[np.ndarray]:
        if self._type == 'dir':
            fpath = os.path.join(self._path, LABELS_FILE)
            if not os.path.isfile(fpath):
                return None
        elif LABELS_FILE not in self._get_zipfile().namelist():
            return None
        with self._open_file(LABELS_FILE) as f:
            try:
                labels = json.loads(f.read(MAX_LABELS_BYTES + 1)).get('labels')
            except (ValueError, AttributeError, RecursionError):
                raise DatasetError(f'Dataset {self._path}: {LABELS_FILE} is not a JSON object with "labels"') from None
        if labels is None:
            return None
        try:
            labels = dict(labels)
        except (TypeError, ValueError):
            raise DatasetError(f'Dataset {self._path}: {LABELS_FILE}: "labels" must be a list of [name, label] '
                               f'pairs or null') from None
        missing = [n for n in self._image_fnames if n not in labels]
        if missing:
            raise ValueError(f'Dataset {self._path}: {LABELS_FILE} has no label for {missing[0]} '
                             f'({len(missing)} images unlabelled)')
        values = []
        for n in self._image_fnames:
            try:
                values.append(validate_label(labels[n]))
            except ValueError as e:
                raise DatasetError(f'Dataset {self._path}: {LABELS_FILE}: the label of {n}: {e}') from None
        if all(isinstance(v, int) for v in values):
            return np.array(values, dtype=np.int64)
        if any(isinstance(v, int) for v in values) or len({len(v) for v in values}) > 1:
            raise DatasetError(f'Dataset {self._path}: {LABELS_FILE} mixes class indices and vectors, or vectors '
                               f'of different lengths')
        return np.array(values, dtype=np.float32).reshape(len(values), -1)


# ---------------------------------------------------------------------------------------
# Sampling.


class InfiniteSampler(torch.utils.data.Sampler):
    """An endless stream of dataset indices, split across ranks, resumable by position.

    One global stream is generated the same way on every rank: the indices are shuffled
    once, then walked cyclically; after each step the item just visited is swapped with a
    random item up to `window_size * len(dataset)` places behind it, so the order keeps
    changing from pass to pass without epoch boundaries. The stream is dealt to the ranks in
    chunks of `chunk_size` consecutive steps: global step g goes to rank
    (g // chunk_size) % num_replicas, so ranks get disjoint, interleaved shares. With
    chunk_size equal to the per-rank batch, the global batch is the same run of the stream
    whatever the number of ranks (chunk m of a step is micro-batch m).

    Args:
        dataset: The dataset (only its length is used).
        rank: This process's rank.
        num_replicas: Number of ranks.
        shuffle: Shuffle (False gives 0, 1, 2, ... cyclically).
        seed: Seed of the stream.
        window_size: Reshuffle window as a fraction of the dataset size (< 2 items: none).
        start_index: Global steps already taken (samples handed out over all ranks), e.g.
            the image count of a resumed run; the stream continues from there.
        chunk_size: Consecutive global steps dealt to one rank at a time (1 = round robin).
    """

    _CHUNK = 4096  # Random offsets are drawn in chunks of this many steps.

    def __init__(self, dataset, rank: int = 0, num_replicas: int = 1, shuffle: bool = True,
                 seed: int = 0, window_size: float = 0.5, start_index: int = 0, chunk_size: int = 1):
        if len(dataset) <= 0:
            raise ValueError('InfiniteSampler: the dataset is empty')
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f'InfiniteSampler: rank {rank} is not in [0, {num_replicas})')
        if not 0 <= window_size <= 1:
            raise ValueError(f'InfiniteSampler: window_size must be in [0, 1], got {window_size}')
        if start_index < 0:
            raise ValueError(f'InfiniteSampler: start_index must be >= 0, got {start_index}')
        if chunk_size < 1:
            raise ValueError(f'InfiniteSampler: chunk_size must be >= 1, got {chunk_size}')
        super().__init__()
        self.dataset_size = len(dataset)
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size
        self.start_index = start_index
        self.chunk_size = chunk_size

    def _window(self) -> int:
        return int(np.rint(self.dataset_size * self.window_size)) if self.shuffle else 0

    def _global_stream(self) -> Iterator[int]:
        """Yields the global index stream from global step start_index on."""
        n = self.dataset_size
        rng = np.random.Generator(np.random.PCG64(self.seed))
        order = rng.permutation(n).tolist() if self.shuffle else list(range(n))
        window = self._window()
        if window < 2:
            # The order never changes: start directly at the resume position.
            step = self.start_index
            while True:
                yield order[step % n]
                step += 1

        # Offsets are drawn in fixed chunks, so the stream does not depend on where a run
        # resumed. Fast-forward: replay the swaps of the steps already taken.
        step = 0
        offsets: List[int] = []
        while step < self.start_index:
            offsets = rng.integers(0, window, size=self._CHUNK).tolist()
            for off in offsets[:min(self._CHUNK, self.start_index - step)]:
                i = step % n
                j = (i - off) % n
                order[i], order[j] = order[j], order[i]
                step += 1
        while True:
            if step % self._CHUNK == 0:
                offsets = rng.integers(0, window, size=self._CHUNK).tolist()
            i = step % n
            yield order[i]
            j = (i - offsets[step % self._CHUNK]) % n
            order[i], order[j] = order[j], order[i]
            step += 1

    def __iter__(self) -> Iterator[int]:
        # Global step g belongs to rank (g // chunk_size) % num_replicas.
        chunk, ranks = self.chunk_size, self.num_replicas
        for g, idx in enumerate(self._global_stream(), start=self.start_index):
            if (g // chunk) % ranks == self.rank:
                yield int(idx)


# ---------------------------------------------------------------------------------------
# --data values.

DEMO_NAME = 'demo'


def resolve_data_path(data: str) -> str:
    """Turns a `--data` value into a dataset path.

    Args:
        data: A dataset zip, a folder of images, or the short name 'demo' (the built-in
            demo dataset, built once into the cache directory and reused).

    Returns:
        The path of the zip or folder.
    """
    if data == DEMO_NAME and not os.path.exists(data):
        from training import demo_dataset  # pylint: disable=import-outside-toplevel
        return demo_dataset.ensure_demo_zip()
    if os.path.isdir(data):
        return data
    if os.path.isfile(data):
        if not zipfile.is_zipfile(data):
            raise ValueError(f'--data {data!r}: the file is not a zip archive; give a dataset zip made '
                             f'by dataset_tool.py, a folder of images, or "{DEMO_NAME}".')
        return data
    raise ValueError(f'--data {data!r}: no such file or folder, and not a built-in dataset name; give a '
                     f'dataset zip, a folder of images, or "{DEMO_NAME}".')


resolve_dataset_path = resolve_data_path  # Alternative name.
