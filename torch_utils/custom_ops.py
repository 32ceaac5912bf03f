"""Build, cache and load the C++/CUDA extensions behind the custom ops.

An op's sources are compiled on first use with ninja (through
`torch.utils.cpp_extension.load`) into a cache directory keyed by a hash of everything that
affects the binary: the sources and headers, the PyTorch and CUDA versions, the compiler, the
Python version, the target GPU architectures and the build arguments. A finished build is
reused by every later process without recompiling.

Builds happen in a private temporary directory that is renamed into place only when complete,
under a file lock, so concurrent processes (one per GPU) and interrupted builds never leave a
half-built extension behind.

A build that cannot succeed (CPU-only PyTorch, no nvcc, a compiler error) is reported by
`try_get_plugin` as one warning per op per process, naming the op and the reason, and the
caller falls back to the plain PyTorch reference.
"""

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from types import ModuleType
from typing import Dict, List, Optional, Sequence

import torch

import dnnlib

# ----------------------------------------------------------------------------
# Settings.

#: How much a build prints: 'none' (nothing), 'brief' (one line per op), 'full' (compiler output).
verbosity = os.environ.get('TORCH_UTILS_OPS_VERBOSITY', 'brief')
_VERBOSITY_LEVELS = ('none', 'brief', 'full')

#: Architectures compiled for when TORCH_CUDA_ARCH_LIST is unset and no GPU is visible
#: (compile-only builds, e.g. on CI). With a GPU visible, PyTorch targets that GPU.
COMPILE_ONLY_ARCH_LIST = '8.0;9.0'


class CustomOpBuildWarning(UserWarning):
    """Warned once per op and process when an op cannot be built and the reference is used."""


class PluginBuildError(RuntimeError):
    """An extension could not be built or loaded; the message says why."""


def set_verbosity(level: str) -> None:
    """Sets how much builds print.

    Args:
        level: 'none', 'brief' or 'full'.
    """
    global verbosity
    if level not in _VERBOSITY_LEVELS:
        raise ValueError(f'custom_ops: verbosity must be one of {_VERBOSITY_LEVELS}, got {level!r}')
    verbosity = level


# Per-process state: loaded modules by cache key, failures by cache key, ops already warned about.
_loaded: Dict[str, ModuleType] = {}
_failed: Dict[str, str] = {}
_warned: set = set()

# ----------------------------------------------------------------------------
# Toolchain discovery.


def find_cuda_home() -> Optional[str]:
    """Returns the CUDA toolkit directory whose `bin/nvcc` exists, or None.

    Looks at $CUDA_HOME, then $CUDA_PATH, then `nvcc` on $PATH, then /usr/local/cuda. When
    $CUDA_HOME or $CUDA_PATH is set it is authoritative: a wrong value is reported rather
    than silently replaced by another toolkit. Otherwise a candidate counts only when it
    also holds the CUDA runtime headers.
    """
    nvcc_name = 'nvcc.exe' if os.name == 'nt' else 'nvcc'
    for var in ('CUDA_HOME', 'CUDA_PATH'):
        home = os.environ.get(var)
        if home:
            return home if os.path.isfile(os.path.join(home, 'bin', nvcc_name)) else None
    # Without a variable, take the first candidate that is a whole toolkit (nvcc and the
    # runtime headers): an `nvcc` on $PATH may be a wrapper script outside its toolkit.
    candidates = []
    on_path = shutil.which(nvcc_name)
    if on_path:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(on_path))))
    candidates.append('/usr/local/cuda')
    for home in candidates:
        if (os.path.isfile(os.path.join(home, 'bin', nvcc_name))
                and os.path.isfile(os.path.join(home, 'include', 'cuda_runtime.h'))):
            return home
    return None


def _run_version(cmd: List[str]) -> str:
    """Returns the output of a `--version` command, or a marker when it cannot run."""
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        return out.stdout.decode(errors='replace').strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f'<{cmd[0]} unavailable: {e}>'


_version_cache: Dict[str, str] = {}


def _toolchain_description(cuda_home: Optional[str]) -> str:
    """Versions of the host and CUDA compilers; cached per process since they cost a subprocess."""
    key = str(cuda_home)
    if key not in _version_cache:
        cxx = os.environ.get('CXX', 'c++')
        parts = [f'cxx: {_run_version([cxx, "--version"])}']
        if cuda_home is not None:
            parts.append(f'cuda_home: {cuda_home}')
            parts.append(f'nvcc: {_run_version([os.path.join(cuda_home, "bin", "nvcc"), "--version"])}')
        _version_cache[key] = '\n'.join(parts)
    return _version_cache[key]


def _effective_arch_list() -> str:
    """The architectures the build will target, as they enter the cache key."""
    env = os.environ.get('TORCH_CUDA_ARCH_LIST')
    if env:
        return f'env:{env}'
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return 'visible:' + ';'.join(f'{a}.{b}' for a, b in caps)
    return f'compile-only:{COMPILE_ONLY_ARCH_LIST}'


@contextlib.contextmanager
def _arch_list_for_build():
    """Sets TORCH_CUDA_ARCH_LIST for a compile-only build (no GPU visible, variable unset)."""
    if os.environ.get('TORCH_CUDA_ARCH_LIST') or (torch.cuda.is_available() and torch.cuda.device_count() > 0):
        yield
        return
    os.environ['TORCH_CUDA_ARCH_LIST'] = COMPILE_ONLY_ARCH_LIST
    try:
        yield
    finally:
        os.environ.pop('TORCH_CUDA_ARCH_LIST', None)


@contextlib.contextmanager
def _torch_cuda_home(cuda_home: str):
    """Points PyTorch's extension builder at the toolkit found here.

    `torch.utils.cpp_extension.CUDA_HOME` is computed once at import; the environment may
    have changed since (e.g. CUDA_HOME set later in the process), and the build must use the
    same toolkit that entered the cache key.
    """
    import torch.utils.cpp_extension as cpp_ext
    old = cpp_ext.CUDA_HOME
    cpp_ext.CUDA_HOME = cuda_home
    try:
        yield
    finally:
        cpp_ext.CUDA_HOME = old


# ----------------------------------------------------------------------------
# Cache key.


def _resolve_paths(files: Optional[Sequence[str]], source_dir: Optional[str]) -> List[str]:
    paths = []
    for f in files or []:
        p = os.path.join(source_dir, f) if source_dir is not None else f
        paths.append(os.path.abspath(p))
    return paths


def compute_build_key(module_name: str, sources: Sequence[str], headers: Optional[Sequence[str]] = None,
                      source_dir: Optional[str] = None, **build_kwargs) -> str:
    """Returns the hex digest that names an extension's build in the cache.

    Args:
        module_name: name of the extension module.
        sources: .cpp/.cu files, relative to `source_dir` when it is given.
        headers: files the sources include; they enter the key but are not compiled.
        source_dir: directory that `sources` and `headers` are relative to.
        **build_kwargs: extra arguments for `torch.utils.cpp_extension.load`.

    Returns:
        A 64-character SHA-256 hex digest.

    Raises:
        PluginBuildError: if a source or header cannot be read.
    """
    h = hashlib.sha256()

    def add(tag: str, data) -> None:
        if isinstance(data, str):
            data = data.encode()
        h.update(f'{tag}:{len(data)}:'.encode())
        h.update(data)

    add('module', module_name)
    for kind, files in (('source', sources), ('header', headers)):
        for path in _resolve_paths(files, source_dir):
            try:
                with open(path, 'rb') as fp:
                    content = fp.read()
            except OSError as e:
                raise PluginBuildError(f'cannot read {kind} file {path}: {e.strerror}') from e
            add(kind + '-name', os.path.basename(path))
            add(kind, content)
    cuda_home = find_cuda_home()
    add('torch', torch.__version__)
    add('torch-cuda', str(torch.version.cuda))
    add('toolchain', _toolchain_description(cuda_home))
    add('python', sys.version)
    add('platform', sys.platform)
    add('arch', _effective_arch_list())
    add('kwargs', json.dumps(build_kwargs, sort_keys=True, default=repr))
    return h.hexdigest()


# ----------------------------------------------------------------------------
# File lock (POSIX flock; elsewhere the atomic rename alone keeps builds consistent).


@contextlib.contextmanager
def _file_lock(path: str):
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, 'a+') as fp:
        fcntl.flock(fp.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fp.fileno(), fcntl.LOCK_UN)


# ----------------------------------------------------------------------------
# Build and load.

_MANIFEST = 'build.json'


def _read_manifest(build_dir: str) -> Optional[dict]:
    """The manifest of a finished build, or None when the directory holds no finished build."""
    try:
        with open(os.path.join(build_dir, _MANIFEST)) as fp:
            manifest = json.load(fp)
    except (OSError, ValueError):
        return None
    if not os.path.isfile(os.path.join(build_dir, manifest.get('library', ''))):
        return None
    return manifest


def _import_library(build_dir: str, manifest: dict) -> ModuleType:
    """Imports a built extension from its file (it is not on sys.path)."""
    path = os.path.join(build_dir, manifest['library'])
    spec = importlib.util.spec_from_file_location(manifest['module_name'], path)
    if spec is None or spec.loader is None:
        raise PluginBuildError(f'cannot import the extension library {path}')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_json_atomic(path: str, data: dict) -> None:
    with dnnlib.atomic_write(path, 'w') as fp:
        json.dump(data, fp, indent=2)


def _print(msg: str, end: str = '\n') -> None:
    if verbosity in ('brief', 'full'):
        print(msg, end=end, flush=True)


def _check_toolchain() -> str:
    """Returns the CUDA toolkit directory, or raises with the reason no CUDA build is possible."""
    if torch.version.cuda is None:
        raise PluginBuildError(f'this PyTorch build ({torch.__version__}) has no CUDA support')
    cuda_home = find_cuda_home()
    if cuda_home is None:
        where = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
        if where:
            raise PluginBuildError(f'nvcc not found in {where}/bin; set CUDA_HOME to a CUDA toolkit')
        raise PluginBuildError('nvcc not found; set CUDA_HOME')
    return cuda_home


def get_plugin(module_name: str, sources: Sequence[str], headers: Optional[Sequence[str]] = None,
               source_dir: Optional[str] = None, **build_kwargs) -> ModuleType:
    """Builds (or reuses a cached build of) a C++/CUDA extension and returns the loaded module.

    Args:
        module_name: name of the extension module, e.g. 'bias_act_plugin'.
        sources: .cpp/.cu files to compile, relative to `source_dir` when it is given.
        headers: files the sources include (copied beside them and hashed, not compiled).
        source_dir: directory that `sources` and `headers` are relative to.
        **build_kwargs: passed to `torch.utils.cpp_extension.load`, e.g. `extra_cuda_cflags`.

    Returns:
        The extension module.

    Raises:
        PluginBuildError: when no build is possible (CPU-only PyTorch, no nvcc) or the
            compiler fails; the message holds the compiler output.
    """
    if verbosity not in _VERBOSITY_LEVELS:
        raise ValueError(f'custom_ops: verbosity must be one of {_VERBOSITY_LEVELS}, got {verbosity!r}')
    cuda_home = _check_toolchain()
    key = compute_build_key(module_name, sources, headers, source_dir, **build_kwargs)
    if key in _loaded:
        return _loaded[key]
    if key in _failed:
        raise PluginBuildError(_failed[key])

    root = dnnlib.make_cache_dir_path('torch_extensions')
    build_dir = os.path.join(root, f'{module_name}-{key[:16]}')

    # Fast path: a finished build from an earlier process.
    manifest = _read_manifest(build_dir)
    if manifest is not None:
        module = _import_library(build_dir, manifest)
        _loaded[key] = module
        return module

    os.makedirs(root, exist_ok=True)
    _print(f'Setting up custom op "{module_name}"... ', end='')
    try:
        with _file_lock(build_dir + '.lock'):
            # Another process may have finished the build while we waited for the lock.
            manifest = _read_manifest(build_dir)
            if manifest is not None:
                module = _import_library(build_dir, manifest)
            else:
                module = _build(module_name, sources, headers, source_dir, build_dir, cuda_home, key, build_kwargs)
    except Exception as e:
        _print('Failed!')
        if isinstance(e, PluginBuildError):
            err = e
        else:
            detail = str(e)
            if verbosity == 'full' and len(detail.strip().splitlines()) <= 1:
                detail += ' (the compiler output is printed above)'  # 'full' streams it instead of capturing it.
            err = PluginBuildError(f'{type(e).__name__}: {detail}')
        _failed[key] = str(err)
        raise err from e
    _print('Done.')
    _loaded[key] = module
    return module


def _build(module_name, sources, headers, source_dir, build_dir, cuda_home, key, build_kwargs) -> ModuleType:
    """Compiles into a fresh temporary directory, then renames it to `build_dir`."""
    import torch.utils.cpp_extension as cpp_ext

    src_paths = _resolve_paths(sources, source_dir)
    hdr_paths = _resolve_paths(headers, source_dir)
    names = [os.path.basename(p) for p in src_paths + hdr_paths]
    if len(set(names)) != len(names):
        raise PluginBuildError(f'{module_name}: source and header file names must be distinct, got {names}')

    tmp_dir = tempfile.mkdtemp(prefix=f'.{os.path.basename(build_dir)}-', dir=os.path.dirname(build_dir))
    try:
        # mkdtemp makes the directory private; a shared cache should follow the umask instead.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_dir, 0o777 & ~umask)
        # Copies keep the build self-contained: the sources include their headers by relative
        # name, and the finished directory documents what it was built from.
        for p in src_paths + hdr_paths:
            shutil.copyfile(p, os.path.join(tmp_dir, os.path.basename(p)))
        tmp_sources = [os.path.join(tmp_dir, os.path.basename(p)) for p in src_paths]

        with _arch_list_for_build(), _torch_cuda_home(cuda_home):
            module = cpp_ext.load(name=module_name, sources=tmp_sources, build_directory=tmp_dir,
                                  verbose=(verbosity == 'full'), **build_kwargs)
        _write_json_atomic(os.path.join(tmp_dir, _MANIFEST), dict(
            module_name=module.__name__, library=os.path.basename(module.__file__), key=key,
            torch=torch.__version__, cuda=torch.version.cuda, arch=_effective_arch_list()))
        try:
            os.rename(tmp_dir, build_dir)
        except OSError:
            # Without a working lock another process can win the race; its build is as good.
            if _read_manifest(build_dir) is None:
                raise
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return module
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------
# Fallback helper.

_ERROR_LINE = re.compile(r'(\berror\b|\bfatal\b|undefined reference|No such file)', re.IGNORECASE)
_NOISE_LINE = re.compile(r'(Error building extension|^FAILED:|^ninja: build stopped)')


def summarize_build_error(message: str, max_lines: int = 8) -> str:
    """Extracts the lines that matter from a compiler log.

    Args:
        message: the text of a build exception (it holds the compiler output).
        max_lines: most lines to keep.

    Returns:
        The lines naming errors, or the last lines when none does.
    """
    lines = [ln.rstrip() for ln in message.splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else 'unknown error'
    keep = []
    for ln in lines:
        # PyTorch's own "Error building extension '...': <command line>" header says nothing new.
        if _ERROR_LINE.search(ln) and not _NOISE_LINE.search(ln) and ln[:400] not in keep:
            keep.append(ln[:400])
    if not keep:
        keep = [ln[:400] for ln in lines[-max_lines:]]
    return '\n'.join(keep[:max_lines])


def try_get_plugin(module_name: str, sources: Sequence[str], headers: Optional[Sequence[str]] = None,
                   source_dir: Optional[str] = None, **build_kwargs) -> Optional[ModuleType]:
    """Like `get_plugin`, but returns None instead of raising when the op cannot be built.

    The first failure for `module_name` in a process emits one `CustomOpBuildWarning` that
    names the op and the reason and says that the reference implementation is used instead.
    No exception reaches the caller.

    Args:
        module_name, sources, headers, source_dir, **build_kwargs: as for `get_plugin`.

    Returns:
        The extension module, or None.
    """
    try:
        return get_plugin(module_name, sources, headers=headers, source_dir=source_dir, **build_kwargs)
    except Exception as e:  # Any failure means "use the reference"; the warning carries the reason.
        if module_name not in _warned:
            _warned.add(module_name)
            reason = summarize_build_error(str(e))
            warnings.warn(
                f'Custom op "{module_name}" could not be built: {reason}\n'
                f'The reference implementation (plain PyTorch) is used instead: same results, '
                f'slower and more memory. See docs/custom_ops.md.',
                CustomOpBuildWarning, stacklevel=2)
        return None


def reset_state() -> None:
    """Forgets loaded modules, failures, warnings and self-check verdicts of this process (for tests)."""
    _loaded.clear()
    _failed.clear()
    _warned.clear()
    _version_cache.clear()
    for check in list(_self_checks):
        check.reset()


class CustomOpMismatchWarning(UserWarning):
    """A compiled kernel disagreed with the reference implementation in its self-check."""


_self_checks: List['KernelSelfCheck'] = []


class KernelSelfCheck:
    """Compares a compiled kernel with the reference once per process, before it is trusted.

    `check(device)` runs the kernel and the reference on a small random input and returns the
    largest relative error of each compared quantity (forward, gradients, second-order
    gradients) as {name: error}. The first call of `passed` runs it; if any error exceeds
    `tol` (or the check raises), one `CustomOpMismatchWarning` names the op, the quantity and
    the error, and `passed` returns False for the rest of the process, so callers use the
    reference. The verdict is kept per device.

    Args:
        op_name: Name of the op in the warning.
        check: Callable(device) -> {quantity: relative error}.
        tol: Largest acceptable relative error.
    """

    def __init__(self, op_name: str, check, tol: float = 1e-3):
        self.op_name = op_name
        self.check = check
        self.tol = float(tol)
        self._verdicts: Dict[str, bool] = {}
        self._running = False
        self._lock = threading.RLock()
        _self_checks.append(self)

    def reset(self) -> None:
        with self._lock:
            self._verdicts.clear()

    def passed(self, device: torch.device) -> bool:
        """True when the kernel agreed with the reference on `device` (checked on first use)."""
        key = str(device)
        verdict = self._verdicts.get(key)
        if verdict is not None:
            return verdict
        with self._lock:
            if key in self._verdicts:
                return self._verdicts[key]
            if self._running:  # The check itself calls the kernel: let it through.
                return True
            self._running = True
            try:
                errors = {k: float(v) for k, v in self.check(device).items()}
                bad = {k: v for k, v in errors.items() if not v <= self.tol}  # NaN counts as bad
                reason = ', '.join(f'{k} relative error {v:.3g}' for k, v in bad.items())
            except Exception as e:  # A crashing kernel is a failed check, not a failed run.
                bad, reason = {'run': float('nan')}, f'{type(e).__name__}: {e}'
            finally:
                self._running = False
            self._verdicts[key] = not bad
            if bad:
                warnings.warn(
                    f'Custom op "{self.op_name}" disagrees with its reference implementation on {key} '
                    f'({reason}; tolerance {self.tol:g}). The reference implementation is used for the '
                    f'rest of this run. See docs/custom_ops.md.', CustomOpMismatchWarning, stacklevel=3)
            return self._verdicts[key]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max(max |want|, tiny), in float64 (NaN anywhere gives NaN)."""
    got, want = got.detach().double(), want.detach().double()
    if got.shape != want.shape:
        return float('inf')
    scale = max(float(want.abs().max()) if want.numel() else 0.0, 1e-30)
    return float((got - want).abs().max()) / scale if want.numel() else 0.0


class LazyPlugin:
    """One op's extension, built or loaded on first use, once per process.

    Args:
        **spec: The arguments of `try_get_plugin` (module_name, sources, headers, source_dir).
    """

    def __init__(self, **spec):
        self.spec = spec
        self._module = None
        self._tried = False
        self._lock = threading.Lock()

    def get(self):
        """The compiled module, or None when it cannot be built (after one warning naming the
        op and the reason; callers then use the reference implementation)."""
        with self._lock:
            if not self._tried:
                self._tried = True
                self._module = try_get_plugin(**self.spec)
        return self._module


def cuda_kernels_enabled() -> bool:
    """False when no CUDA device is present or $TORCH_UTILS_OPS_IMPL=ref forces the reference."""
    if os.environ.get('TORCH_UTILS_OPS_IMPL', '').lower() == 'ref':
        return False
    return torch.cuda.is_available()
