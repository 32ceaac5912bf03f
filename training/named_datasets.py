"""Datasets by name or URL: `--data=100-shot-obama`, `--data=https://.../images.zip`.

The few-shot sets of the DiffAugment paper (100-shot Obama, Grumpy Cat, Panda, and the
other 100-shot landmarks; AnimalFace cat and dog) are zips of images that
`ImageFolderDataset` reads as they are. `resolve_data_source(value, flag)` turns a `--data`
(or `dataset_tool.py --source`) value into a local path:

- a registry name is fetched once into `<cache>/datasets/<name>.zip`;
- an http(s) URL is fetched once into `<cache>/datasets/<hash>_<basename>`;
- a file:// URL is its local path; anything else is returned unchanged (a path, 'demo').

`<cache>` is the cache directory of `dnnlib.make_cache_dir_path` (`$DNNLIB_CACHE_DIR`,
else `$XDG_CACHE_HOME/dnnlib`, else `~/.cache/dnnlib`), the same as for the metric
detectors. Downloads stream into a temporary file beside the destination with a progress
bar and replace it only when complete and, where the table knows a SHA-256, when it
matches. Where the table has no checksum (None: the published files carry none we could
verify), the first download records the SHA-256 of what it fetched in `<file>.sha256` and
every later use checks the cached file against that record. Without network access the
error says exactly where to put the file.
"""

import dataclasses
import hashlib
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, Optional

import dnnlib

DIFFAUGMENT_BASE_URL = 'https://hanlab.mit.edu/projects/data-efficient-gans/datasets/'
CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class NamedDataset:
    """One entry of the registry.

    Attributes:
        name: The `--data` value.
        url: Where the zip is published.
        sha256: Its SHA-256, or None where unknown (the first download records it).
        description: One line for listings and docs.
    """
    name: str
    url: str
    sha256: Optional[str]
    description: str


def _diffaugment(name: str, description: str) -> NamedDataset:
    return NamedDataset(name, f'{DIFFAUGMENT_BASE_URL}{name}.zip', None, description)


REGISTRY: Dict[str, NamedDataset] = {d.name: d for d in [
    _diffaugment('100-shot-obama', '100 photos of Barack Obama, 256x256 (DiffAugment)'),
    _diffaugment('100-shot-grumpy_cat', '100 photos of Grumpy Cat, 256x256 (DiffAugment)'),
    _diffaugment('100-shot-panda', '100 photos of pandas, 256x256 (DiffAugment)'),
    _diffaugment('100-shot-bridge_of_sighs', '100 photos of the Bridge of Sighs, 256x256 (DiffAugment)'),
    _diffaugment('100-shot-medici_fountain', '100 photos of the Medici Fountain, 256x256 (DiffAugment)'),
    _diffaugment('100-shot-temple_of_heaven', '100 photos of the Temple of Heaven, 256x256 (DiffAugment)'),
    _diffaugment('100-shot-wuzhen', '100 photos of Wuzhen, 256x256 (DiffAugment)'),
    _diffaugment('AnimalFace-cat', '160 cat faces of AnimalFace, 256x256 (DiffAugment)'),
    _diffaugment('AnimalFace-dog', '389 dog faces of AnimalFace, 256x256 (DiffAugment)'),
]}


class DatasetFetchError(ValueError):
    """A named or URL dataset could not be fetched or failed its checksum."""


def list_names() -> str:
    return ', '.join(sorted(REGISTRY))


def lookup(value: str) -> Optional[NamedDataset]:
    """The registry entry for a name (case-insensitive), or None."""
    entry = REGISTRY.get(value)
    if entry is None:
        folded = {k.lower(): v for k, v in REGISTRY.items()}
        entry = folded.get(value.lower())
    return entry


def dataset_cache_dir() -> str:
    """`<cache>/datasets`: where fetched datasets live (and may be placed by hand)."""
    return dnnlib.make_cache_dir_path('datasets')


def cache_path_for(value: str) -> str:
    """Where a registry name or an http(s) URL is (or will be) stored in the cache."""
    entry = lookup(value)
    if entry is not None:
        return os.path.join(dataset_cache_dir(), f'{entry.name}.zip')
    digest = hashlib.sha256(value.encode('utf-8')).hexdigest()[:16]
    base = os.path.basename(urllib.parse.urlparse(value).path.rstrip('/'))
    base = re.sub(r'[^0-9A-Za-z._-]+', '_', urllib.parse.unquote(base)).strip('._')[:100] or 'dataset.zip'
    return os.path.join(dataset_cache_dir(), f'{digest}_{base}')


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            h.update(chunk)
    return h.hexdigest()


def _recorded_sha256(path: str) -> Optional[str]:
    try:
        with open(path + '.sha256') as f:
            text = f.read(200).split()
    except FileNotFoundError:
        return None
    return text[0].lower() if text and re.fullmatch(r'[0-9a-fA-F]{64}', text[0]) else None


def _progress(total: Optional[int], desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit='B', unit_scale=True, unit_divisor=1024, file=sys.stderr,
                dynamic_ncols=True, leave=False)


def fetch(url: str, dest: str, sha256: Optional[str] = None, what: Optional[str] = None,
          progress: bool = True, timeout: float = 60.0) -> str:
    """Downloads `url` (http, https or file) to `dest` once, atomically, with a progress bar.

    Args:
        url: The source.
        dest: The cache file; if it exists (and matches `sha256`, or the recorded checksum)
            nothing is downloaded.
        sha256: Expected SHA-256; None = unknown (record it on the first download).
        what: How to name the dataset in messages (default: the URL).
        progress: Show a progress bar on stderr.
        timeout: Seconds to wait for the server.

    Returns:
        `dest`.

    Raises:
        DatasetFetchError: the download failed (the message says where to put the file by
            hand) or the file does not match its checksum (nothing is kept).
    """
    what = what or url
    expected = sha256.lower() if sha256 else None
    if os.path.isfile(dest):
        want = expected or _recorded_sha256(dest)
        if want is None:
            return dest
        have = _sha256_file(dest)
        if have == want:
            return dest
        raise DatasetFetchError(
            f'{what}: the file at {dest} has SHA-256 {have}, but {want} was '
            f'{"expected" if expected else "recorded at its first download"}; delete it to fetch it again')
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as res:  # noqa: S310 (http, https and file only)
            length = res.headers.get('Content-Length') if res.headers is not None else None
            total = int(length) if length and str(length).isdigit() else None
            bar = _progress(total, os.path.basename(dest), progress)
            try:
                with dnnlib.atomic_write(dest, 'wb') as f:
                    for chunk in iter(lambda: res.read(CHUNK), b''):
                        f.write(chunk)
                        h.update(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                    digest = h.hexdigest()
                    if expected is not None and digest != expected:
                        raise DatasetFetchError(f'{what}: the download from {url} has SHA-256 {digest}, expected '
                                                f'{expected}; the file was discarded (a changed or damaged '
                                                f'download)')
            finally:
                if bar is not None:
                    bar.close()
    except DatasetFetchError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = str(e) if isinstance(e, urllib.error.HTTPError) \
            else f'{type(e).__name__}: {getattr(e, "reason", None) or e}'
        raise DatasetFetchError(
            f'{what}: could not download {url} ({reason}). Without network access, fetch '
            f'the file by other means and place it at {dest}') from None
    if expected is None:
        with dnnlib.atomic_write(dest + '.sha256', 'w') as f:
            f.write(f'{digest}  {os.path.basename(dest)}\n')
    if progress:
        print(f'Fetched {what} into {dest} (SHA-256 {digest}{"" if expected else ", recorded"}).',
              file=sys.stderr, flush=True)
    return dest


def is_remote(value: str) -> bool:
    return value.startswith(('http://', 'https://'))


def resolve_data_source(value: str, flag: str = '--data', progress: bool = True) -> str:
    """A `--data` / `--source` value as a local path, downloading a named or URL dataset once.

    Args:
        value: A registry name (e.g. '100-shot-obama'), an http(s) URL of a zip, a file://
            URL, or anything else (a path, 'demo'), which is returned unchanged.
        flag: The option named in error messages.
        progress: Show a download progress bar.

    Returns:
        The local path to use.

    Raises:
        DatasetFetchError (a ValueError): the download failed or a checksum differs; the
            message names the flag and, for downloads, the path to place the file at.
    """
    if not isinstance(value, str) or not value:
        return value
    entry = None if os.path.exists(value) else lookup(value)   # A local file or folder of that name wins.
    try:
        if entry is not None:
            return fetch(entry.url, cache_path_for(entry.name), entry.sha256, what=entry.name, progress=progress)
        if value.startswith('file://'):
            path = urllib.request.url2pathname(urllib.parse.urlparse(value).path)
            if not os.path.exists(path):
                raise DatasetFetchError(f'{value}: no such file ({path})')
            return path
        if is_remote(value):
            return fetch(value, cache_path_for(value), None, progress=progress)
    except DatasetFetchError as e:
        raise DatasetFetchError(f'{flag} {e}') from None
    return value
