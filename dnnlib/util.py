"""Small utilities shared by every part of the framework.

- `EasyDict`: a dict whose keys are also attributes (config trees use it).
- `construct_class_by_name` / `call_func_by_name` / `get_obj_by_name`: build objects from
  the `class_name` strings of a config tree.
- `make_cache_dir_path`: where downloaded files and compiled ops are cached.
- `open_url`: opens http(s) URLs through an on-disk cache, file:// URLs and local paths.
- `format_time`: short human-readable durations for logs.
"""

import contextlib
import errno
import hashlib
import importlib
import io
import os
import re
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from typing import IO, Any, BinaryIO, Dict, Iterator, Optional, Union


class EasyDict(dict):
    """A dict whose items can also be read and written as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


# ---------------------------------------------------------------------------------------
# Cache directory.

_cache_dir = None  # Set by set_cache_dir(); otherwise environment variables decide.


def set_cache_dir(path: str) -> None:
    """Overrides the cache directory for this process."""
    global _cache_dir
    _cache_dir = path


def make_cache_dir_path(*paths: str) -> str:
    """Returns a path inside the cache directory.

    The directory is, in order of precedence: `set_cache_dir()`, `$DNNLIB_CACHE_DIR`,
    `$XDG_CACHE_HOME/dnnlib`, `~/.cache/dnnlib`. Nothing is created here.
    """
    if _cache_dir is not None:
        return os.path.join(_cache_dir, *paths)
    if os.environ.get('DNNLIB_CACHE_DIR'):
        return os.path.join(os.environ['DNNLIB_CACHE_DIR'], *paths)
    if os.environ.get('XDG_CACHE_HOME'):
        return os.path.join(os.environ['XDG_CACHE_HOME'], 'dnnlib', *paths)
    return os.path.join(os.path.expanduser('~'), '.cache', 'dnnlib', *paths)


# ---------------------------------------------------------------------------------------
# Atomic file writes.

@contextlib.contextmanager
def atomic_write(path: Union[str, os.PathLike], mode: str = 'wb', encoding: Optional[str] = None) -> Iterator[IO]:
    """Opens a temporary file beside `path`; on success it replaces `path` in one step.

    The file is flushed and synced before the rename, so a crash or kill at any moment leaves
    either the old file or the complete new one, never a partial write. On an exception the
    temporary file is removed and `path` is untouched.

    Args:
        path: The destination file.
        mode: 'wb' or 'w'.
        encoding: Text encoding for mode 'w' (default utf-8).

    Yields:
        The open temporary file.
    """
    if mode not in ('wb', 'w'):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    except OSError as e:
        # Name the file asked for, not the temporary name; say why the folder is unusable.
        reason = e.strerror or str(e)
        if isinstance(e, FileNotFoundError):
            reason = f'its folder {directory} does not exist'
        elif isinstance(e, NotADirectoryError):
            reason = f'a part of its folder {directory} is not a folder'
        raise type(e)(e.errno, f'cannot write here: {reason}', path) from None
    counter = None
    try:
        with os.fdopen(fd, mode, **({} if mode == 'wb' else dict(encoding=encoding or 'utf-8'))) as f:
            counter = _WriteCounter(f)
            yield counter
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the result should be readable like any output.
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        full = _disk_full_error(e, counter, path, directory)
        if full is not None:
            raise full from None
        raise


class DiskFullError(OSError):
    """Writing a file failed because its device is full; the previous file is intact."""

    def __str__(self) -> str:
        return f'{self.filename}: {self.strerror}'


class _WriteCounter:
    """The open file of atomic_write: counts what was written and remembers the first OSError
    (libraries such as torch.save turn it into a RuntimeError without the errno)."""

    def __init__(self, f: IO):
        self._f = f
        self.written = 0
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        try:
            n = self._f.write(data)
        except OSError as e:
            if self.error is None:
                self.error = e
            raise
        self.written += n if isinstance(n, int) else len(data)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _free_bytes(directory: str) -> Optional[int]:
    try:
        st = os.statvfs(directory)
        return st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        return None


def _disk_full_error(e: BaseException, counter: Optional[_WriteCounter], path: str,
                     directory: str) -> Optional[DiskFullError]:
    """A DiskFullError naming the path and the space when `e` came from a full disk, else None."""
    causes = [e, getattr(counter, 'error', None), e.__cause__, e.__context__]
    if not any(isinstance(c, OSError) and c.errno in (errno.ENOSPC, errno.EDQUOT) for c in causes):
        return None
    written = counter.written if counter is not None else 0
    free = _free_bytes(directory)
    free_text = f', {free} bytes are free there' if free is not None else ''
    return DiskFullError(errno.ENOSPC, f'no space left on the device: the file needs more than {written} bytes '
                         f'(written before the device filled up){free_text}; the previous file is intact', path)


# ---------------------------------------------------------------------------------------
# Objects by name.

def get_obj_by_name(name: str) -> Any:
    """Finds a module-level object by its dotted name, e.g. 'training.networks.Generator'."""
    if not isinstance(name, str) or not name:
        raise ValueError(f'Expected a dotted name, got {name!r}')
    parts = name.split('.')
    # Import the longest prefix that is a module, then walk attributes.
    for i in range(len(parts) - 1, 0, -1):
        module_name = '.'.join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and not module_name.startswith(e.name):
                raise  # The module exists but one of its own imports is missing.
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
            return obj
        except AttributeError:
            raise AttributeError(f'Cannot find "{".".join(parts[i:])}" in module "{module_name}"')
    # A bare name: a builtin.
    import builtins
    if len(parts) == 1 and hasattr(builtins, name):
        return getattr(builtins, name)
    raise ImportError(f'Cannot find an importable module for "{name}"')


def call_func_by_name(*args, func_name: str = None, **kwargs) -> Any:
    """Calls a function given by dotted name with the given arguments."""
    func = get_obj_by_name(func_name)
    if not callable(func):
        raise TypeError(f'"{func_name}" is not callable')
    return func(*args, **kwargs)


def construct_class_by_name(*args, class_name: str = None, **kwargs) -> Any:
    """Constructs an object of the class given by dotted name with the given arguments."""
    return call_func_by_name(*args, func_name=class_name, **kwargs)


# ---------------------------------------------------------------------------------------
# Formatting.

def format_time(seconds: Union[int, float]) -> str:
    """Formats a duration with its two largest units: '41s', '3m 07s', '12h 05m', '2d 03h'.

    Args:
        seconds: The duration; rounded to whole seconds, negatives count as zero.

    Returns:
        The formatted string.
    """
    s = max(int(round(float(seconds))), 0)
    if s < 60:
        return f'{s}s'
    if s < 60 * 60:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 24 * 60 * 60:
        return f'{s // (60 * 60)}h {(s // 60) % 60:02d}m'
    return f'{s // (24 * 60 * 60)}d {(s // (60 * 60)) % 24:02d}h'


# ---------------------------------------------------------------------------------------
# URLs and the download cache.

class OpenURLError(OSError):
    """Base class of the errors raised by `open_url`."""


class DownloadError(OpenURLError):
    """A URL could not be downloaded.

    Attributes:
        url: The URL.
        cache_path: Where `open_url` looks for the file; placing it there by hand makes the
            next call succeed without the network (None when caching was off).
        cause: The underlying exception.
    """

    def __init__(self, url: str, cache_path: Optional[str], cause: BaseException, note: str = ''):
        self.url = url
        self.cache_path = cache_path
        self.cause = cause
        msg = f'Could not download {url}: {type(cause).__name__}: {cause}'
        if note:
            msg += f'\n{note}'
        if cache_path is not None:
            msg += ('\nTo use it without network access, fetch the file by other means and '
                    f'place it at:\n    {cache_path}')
        super().__init__(msg)


class ChecksumError(OpenURLError):
    """A file's checksum differs from the expected one (the cached copy has been removed)."""

    def __init__(self, source: str, path: Optional[str], algorithm: str, expected: str, actual: str,
                 note: str = ''):
        self.source = source
        self.path = path
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        where = f' ({path})' if path is not None and path != source else ''
        msg = f'Checksum mismatch for {source}{where}: expected {algorithm} {expected}, got {actual}'
        super().__init__(msg + (f'; {note}' if note else ''))


def is_url(obj: Any, allow_file_urls: bool = False) -> bool:
    """Tells whether `obj` is an http(s) URL string (or a file:// URL if allowed).

    Args:
        obj: Anything.
        allow_file_urls: Also accept 'file://...'.

    Returns:
        True for strings like 'https://host/path'.
    """
    if not isinstance(obj, str) or '://' not in obj:
        return False
    parsed = urllib.parse.urlparse(obj)
    if parsed.scheme == 'file':
        return allow_file_urls and bool(parsed.path)
    return parsed.scheme in ('http', 'https') and bool(parsed.netloc)


def _url_cache_name(url: str) -> str:
    """Cache file name for a URL: a hash of the whole URL plus its sanitised basename."""
    digest = hashlib.md5(url.encode('utf-8')).hexdigest()
    base = os.path.basename(urllib.parse.urlparse(url).path.rstrip('/'))
    base = re.sub(r'[^0-9A-Za-z._-]+', '_', urllib.parse.unquote(base)).strip('._')[:100]
    return f'{digest}_{base}' if base else digest


def _file_url_to_path(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ('', 'localhost'):
        raise ValueError(f'file:// URL with a remote host is not supported: {url}')
    return urllib.request.url2pathname(parsed.path)


def _expected_digests(md5: Optional[str], sha256: Optional[str]) -> Dict[str, str]:
    expected = {}
    if md5 is not None:
        expected['md5'] = md5.lower()
    if sha256 is not None:
        expected['sha256'] = sha256.lower()
    return expected


def _hash_file(path: str, algorithms) -> Dict[str, str]:
    hashers = {alg: hashlib.new(alg) for alg in algorithms}
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            for h in hashers.values():
                h.update(chunk)
    return {alg: h.hexdigest() for alg, h in hashers.items()}


def _first_mismatch(actual: Dict[str, str], expected: Dict[str, str]):
    for alg, want in expected.items():
        if actual[alg] != want:
            return alg, want, actual[alg]
    return None


class _HTTPStatusError(IOError):
    """An HTTP error status; `retry` says whether another attempt may help."""

    def __init__(self, status: int, reason: str):
        super().__init__(f'HTTP {status} {reason}'.strip())
        self.retry = status >= 500 or status in (408, 429)


def _download(url: str, dst: Optional[BinaryIO], expected: Dict[str, str], timeout: float):
    """Streams `url` into `dst` (or memory when None); returns (data or None, digests)."""
    import requests  # Imported lazily: only downloads need it.
    hashers = {alg: hashlib.new(alg) for alg in expected}
    buffer = io.BytesIO() if dst is None else dst
    with requests.get(url, stream=True, timeout=timeout) as res:
        if res.status_code != 200:
            raise _HTTPStatusError(res.status_code, res.reason or '')
        for chunk in res.iter_content(chunk_size=1 << 20):
            buffer.write(chunk)
            for h in hashers.values():
                h.update(chunk)
    digests = {alg: h.hexdigest() for alg, h in hashers.items()}
    return (buffer.getvalue() if dst is None else None), digests


def open_url(url: str, cache_dir: Optional[str] = None, num_attempts: int = 10, verbose: bool = True,
             return_filename: bool = False, cache: bool = True, md5: Optional[str] = None,
             sha256: Optional[str] = None, timeout: float = 60.0) -> Union[BinaryIO, str]:
    """Opens a URL or a local file for binary reading.

    http(s) URLs are downloaded once into the cache directory (written to a temporary
    file, then renamed into place, so an interrupted download never leaves a file) and
    read from there afterwards without touching the network. file:// URLs and plain paths
    are used directly.

    Args:
        url: 'http(s)://...', 'file://...' or a local path.
        cache_dir: Download cache; default `make_cache_dir_path('downloads')`.
        num_attempts: Download attempts before giving up (client errors such as 404 are
            not retried).
        verbose: Print download progress to stderr.
        return_filename: Return the local path instead of an open file.
        cache: Use the on-disk cache for http(s); if False the download is kept in memory.
        md5: Expected MD5 hex digest of the file, if known.
        sha256: Expected SHA-256 hex digest of the file, if known.
        timeout: Seconds to wait for the server per connection and read.

    Returns:
        A binary file object positioned at the start, or its path if `return_filename`.

    Raises:
        FileNotFoundError: a local path or file:// URL does not exist.
        DownloadError: the download failed; the message names the URL, the cache path
            where the file can be placed by hand and the original error.
        ChecksumError: the file does not match `md5`/`sha256` (a cached or downloaded copy
            is deleted).
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f'open_url: expected a URL or path string, got {url!r}')
    if num_attempts < 1:
        raise ValueError(f'open_url: num_attempts must be at least 1, got {num_attempts}')
    expected = _expected_digests(md5, sha256)

    # Local files: file:// URLs and plain paths.
    if '://' not in url or url.startswith('file://'):
        path = _file_url_to_path(url) if url.startswith('file://') else os.path.expanduser(url)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'open_url: no such file: {path}' + (f' (from {url})' if path != url else ''))
        if expected:
            mismatch = _first_mismatch(_hash_file(path, expected), expected)
            if mismatch:
                raise ChecksumError(url, path, *mismatch)
        return path if return_filename else open(path, 'rb')

    if not is_url(url):
        raise ValueError(f'open_url: unsupported URL scheme (expected http, https or file): {url}')
    if return_filename and not cache:
        raise ValueError('open_url: return_filename=True needs cache=True (the file must exist on disk)')

    cache_path = None
    note = ''
    if cache:
        if cache_dir is None:
            cache_dir = make_cache_dir_path('downloads')
        cache_path = os.path.join(cache_dir, _url_cache_name(url))
        # A cache hit never touches the network.
        if os.path.isfile(cache_path):
            mismatch = _first_mismatch(_hash_file(cache_path, expected), expected) if expected else None
            if mismatch is None:
                return cache_path if return_filename else open(cache_path, 'rb')
            # A corrupt or wrong cached copy: remove it and download again.
            os.remove(cache_path)
            note = (f'The cached copy had {mismatch[0]} {mismatch[2]} instead of {mismatch[1]} '
                    'and was removed.')
            if verbose:
                print(f'{note} Downloading again.', file=sys.stderr, flush=True)

    last_error = None
    for attempt in range(num_attempts):
        if verbose:
            print(f'Downloading {url} ...', end='', file=sys.stderr, flush=True)
        tmp_path = None
        try:
            if cache:
                os.makedirs(cache_dir, exist_ok=True)
                fd, tmp_path = tempfile.mkstemp(dir=cache_dir, prefix='.tmp-', suffix='.part')
                with os.fdopen(fd, 'wb') as f:
                    data, digests = _download(url, f, expected, timeout)
            else:
                data, digests = _download(url, None, expected, timeout)
            mismatch = _first_mismatch(digests, expected)
            if mismatch:
                if verbose:
                    print(' checksum mismatch', file=sys.stderr, flush=True)
                raise ChecksumError(url, None, *mismatch, note='the downloaded file was discarded')
            if cache:
                os.replace(tmp_path, cache_path)
                tmp_path = None
            if verbose:
                print(' done', file=sys.stderr, flush=True)
            if cache:
                return cache_path if return_filename else open(cache_path, 'rb')
            return io.BytesIO(data)
        except ChecksumError:
            raise
        except KeyboardInterrupt:
            raise
        except Exception as e:  # Network and HTTP errors: retry where it may help.
            last_error = e
            if verbose:
                print(f' failed ({type(e).__name__}: {e})', file=sys.stderr, flush=True)
            if isinstance(e, _HTTPStatusError) and not e.retry:
                break
            if attempt + 1 < num_attempts:
                time.sleep(1.0)
        finally:
            # A partial or rejected download never stays in the cache.
            if tmp_path is not None and os.path.exists(tmp_path):
                os.remove(tmp_path)
    raise DownloadError(url, cache_path, last_error, note) from last_error
