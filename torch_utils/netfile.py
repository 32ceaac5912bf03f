"""Network files: saving and safe loading of network pickles.

Classes that can appear in a network file are registered with `@register`; the decorator
records the constructor arguments of every instance so that a saved object is described as
(class name, constructor arguments, state) and rebuilt from that alone on load.

A network file is a pickle of a dict such as {'G': ..., 'D': ..., 'G_ema': ...,
'augment_pipe': ..., 'training_set_kwargs': {...}}. In our own format every registered
module is stored as a record {'format', 'class_name', 'args', 'kwargs', 'state'} and every
tensor as (dtype name, shape, raw little-endian bytes); no code is stored.

Loading goes through one restricted unpickler (`_RestrictedUnpickler`). It resolves only the
globals of an explicit allowlist, most of them to checking wrappers, and refuses everything
else with `UnsafeNetworkFileError` before the global can be called. Unpickling only produces
inert data (module records, legacy object descriptions, tensors, containers); modules are
built afterwards from our own registered classes.

Pickles written by stylegan2-ada-pytorch and its forks (objects stored through
`torch_utils.persistence._reconstruct_persistent_obj` with their module source embedded) are
read as data too: the embedded source is never executed, the object is rebuilt as the class
of this framework that `register_legacy_class` maps its class name to.

TensorFlow pickles of StyleGAN2, StyleGAN2-ADA (TF) and DiffAugment-stylegan2 hold
`dnnlib.tflib.network.Network` objects; the unpickler records their state as data
(`_TFNetwork`) and `torch_utils.tf_pickle` maps their variables onto our networks. Their
embedded TensorFlow source is never executed either.
"""

import collections
import contextlib
import contextvars
import copy
import dataclasses
import functools
import importlib
import io
import math
import os
import pickle
import re
import sys
import types
import warnings
from typing import Any, BinaryIO, Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

from dnnlib.util import EasyDict, atomic_write

FORMAT_VERSION = 1          # Version of the module records written by save_network_pickle.
PICKLE_PROTOCOL = 4         # Readable by every Python 3 release the framework supports.

_registry = {}  # 'module.ClassName' -> class

PathOrFile = Union[str, os.PathLike, BinaryIO]


def register(cls):
    """Class decorator: allows `cls` in network files and records its constructor arguments."""
    name = f'{cls.__module__}.{cls.__qualname__}'
    orig_init = cls.__init__

    @functools.wraps(orig_init)
    def __init__(self, *args, **kwargs):
        # Record the arguments of the most derived registered class only, before running
        # __init__ so that nn.Module's __setattr__ is not involved.
        if type(self) is cls:
            object.__setattr__(self, '_init_args', copy.deepcopy(args))
            object.__setattr__(self, '_init_kwargs', copy.deepcopy(kwargs))
        orig_init(self, *args, **kwargs)

    cls.__init__ = __init__
    _registry[name] = cls
    return cls


def registered_classes():
    """Returns a copy of the registry: {'module.ClassName': class}."""
    return dict(_registry)


# ---------------------------------------------------------------------------------------
# Errors and results.

class NetworkFileError(Exception):
    """A network file cannot be written or read (wrong content, class mismatch, ...)."""


class UnsafeNetworkFileError(NetworkFileError):
    """A network file asks for something the safe loader does not allow."""


class UnsupportedObjectError(NetworkFileError, TypeError):
    """An object handed to save_network_pickle cannot be stored as data."""


class NetworkData(dict):
    """The dict a network file holds, as returned by load_network_pickle.

    Attributes:
        notes: Human-readable remarks about the load (skipped keys, ignored legacy buffers).
        format: 'netfile' (our records), 'legacy' (stylegan2-ada-style objects), or 'plain'.
    """

    def __init__(self, *args, notes: Optional[List[str]] = None, format: str = 'plain', **kwargs):
        super().__init__(*args, **kwargs)
        self.notes = notes if notes is not None else []
        self.format = format


def _qualname(obj_or_type: Any) -> str:
    t = obj_or_type if isinstance(obj_or_type, type) else type(obj_or_type)
    return f'{t.__module__}.{t.__qualname__}'


def _short_list(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    shown = ', '.join(_show(n) for n in names[:limit])
    return shown + (f', ... ({len(names) - limit} more)' if len(names) > limit else '')


@dataclasses.dataclass(frozen=True)
class LoadLimits:
    """Bounds on what loading one network file may build; exceeding one is a NetworkFileError.

    Attributes:
        max_file_bytes: Bytes read from the file (the pickle stream itself).
        max_tensor_bytes: Total bytes of all tensors and numpy arrays the file describes,
            counted per tensor (views of one storage each count in full).
        max_objects: Values (containers, numbers, strings, tensors, ...) visited while
            building the result; a shared value counts once.
        max_depth: Nesting depth of containers and modules.
        max_tensor_dims: Dimensions of one tensor or array.
    """
    max_file_bytes: int = 8 << 30
    max_tensor_bytes: int = 8 << 30
    max_objects: int = 1_000_000
    max_depth: int = 100
    max_tensor_dims: int = 16


DEFAULT_LIMITS = LoadLimits()


class _Budget:
    """What one load has used so far, checked against its LoadLimits."""

    def __init__(self, limits: LoadLimits):
        self.limits = limits
        self.tensor_bytes = 0
        self.construct_bytes = 0  # What constructors allocated (every module of the file together).

    def take_tensor(self, shape: Tuple[int, ...], itemsize: int, what: str) -> None:
        if len(shape) > self.limits.max_tensor_dims:
            raise UnsafeNetworkFileError(f'{what} has {len(shape)} dimensions; at most '
                                         f'{self.limits.max_tensor_dims} are allowed (max_tensor_dims)')
        nbytes = math.prod(shape) * itemsize
        self.tensor_bytes += nbytes
        if self.tensor_bytes > self.limits.max_tensor_bytes:
            raise UnsafeNetworkFileError(
                f'{what} of shape {tuple(shape)} brings the tensors of the file to {self.tensor_bytes} bytes, '
                f'over the limit of {self.limits.max_tensor_bytes} (max_tensor_bytes)')


_budget_var: contextvars.ContextVar = contextvars.ContextVar('netfile_budget', default=None)


def _take_tensor(shape: Tuple[int, ...], itemsize: int, what: str) -> None:
    budget = _budget_var.get()
    if budget is not None:
        budget.take_tensor(shape, itemsize, what)
    elif len(shape) > DEFAULT_LIMITS.max_tensor_dims:
        raise UnsafeNetworkFileError(f'{what} has {len(shape)} dimensions (max_tensor_dims)')


def _show(value: Any, limit: int = 80) -> str:
    """A repr for error messages that never calls repr() on anything but plain values."""
    if value is None or type(value) in (bool, int, float, str, bytes):
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + '...'
    if type(value) in (tuple, list) and len(value) <= 8 and all(
            v is None or type(v) in (bool, int, float, str) for v in value):
        text = repr(tuple(value))
        return text if len(text) <= limit else text[:limit] + '...'
    return f'<{type(value).__name__}>'


class _Inert:
    """Base of the stand-ins the unpickler hands out: a pickle BUILD opcode cannot change them."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise UnsafeNetworkFileError(f'Network file tries to set the state of a {self._kind()} after it '
                                     f'was built (pickle BUILD); not allowed')

    def _kind(self) -> str:
        return type(self).__name__.lstrip('_')


# ---------------------------------------------------------------------------------------
# Tensors as data: (dtype name, shape, raw bytes).

_TENSOR_DTYPES = {name: getattr(torch, name) for name in (
    'float64', 'float32', 'float16', 'bfloat16', 'complex64', 'complex128',
    'int64', 'int32', 'int16', 'int8', 'uint8', 'bool')}
_TORCH_DTYPES_BY_NAME = {n: v for n, v in vars(torch).items() if isinstance(v, torch.dtype)}


def _tensor_to_data(tensor: torch.Tensor, with_bytes: bool = True) -> Tuple[str, Tuple[int, ...], bytes]:
    """Describes a dense tensor as (dtype name, shape, raw bytes in row-major order)."""
    dtype_name = str(tensor.dtype).replace('torch.', '')
    if dtype_name not in _TENSOR_DTYPES or tensor.layout != torch.strided or tensor.is_quantized:
        raise UnsupportedObjectError(f'Cannot store a tensor of dtype {tensor.dtype} and layout '
                                     f'{tensor.layout} in a network file')
    if tensor.device.type == 'meta':
        raise UnsupportedObjectError('Cannot store a tensor on the meta device: it holds no data')
    shape = tuple(int(s) for s in tensor.shape)
    if not with_bytes:
        return dtype_name, shape, b''
    flat = tensor.detach().to('cpu').contiguous().reshape(-1)
    # Viewing as bytes works for every element size, bfloat16 included (numpy lacks it).
    data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b''
    if sys.byteorder != 'little':
        raise UnsupportedObjectError('Network files store little-endian tensor bytes; '
                                     'saving on a big-endian machine is not supported')
    return dtype_name, shape, data


class _FileTensor(torch.Tensor):
    """A tensor as the unpickler hands it out. A pickle BUILD on a plain tensor would reach
    torch's Tensor.__setstate__, which re-points the tensor at any storage, offset and strides
    without bounds checks; this subclass refuses that. The loader turns it into a plain tensor."""

    def __setstate__(self, state: Any) -> None:
        raise UnsafeNetworkFileError('Network file tries to set the state of a tensor after it was built '
                                     '(pickle BUILD); not allowed')


def _plain_tensor(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t.as_subclass(torch.Tensor) if isinstance(t, _FileTensor) else t


def _rebuild_tensor(dtype_name: str, shape: Tuple[int, ...], data: bytes) -> torch.Tensor:
    """Inverse of _tensor_to_data; validates every field (the loader calls it on file data)."""
    if type(dtype_name) is not str or dtype_name not in _TENSOR_DTYPES:
        raise UnsafeNetworkFileError(f'Tensor record has an unsupported dtype {_show(dtype_name)}')
    if not isinstance(shape, (tuple, list)) or not all(type(s) is int and s >= 0 for s in shape):
        raise UnsafeNetworkFileError(f'Tensor record has an invalid shape {_show(shape)}')
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeNetworkFileError(f'Tensor record data must be bytes, got {type(data).__name__}')
    dtype = _TENSOR_DTYPES[dtype_name]
    numel = math.prod(shape)  # Python ints: no overflow for absurd shapes.
    itemsize = torch.empty([], dtype=dtype).element_size()
    if len(data) != numel * itemsize:
        raise UnsafeNetworkFileError(f'Tensor record of dtype {dtype_name} and shape {tuple(shape)} '
                                     f'needs {numel * itemsize} bytes, the file has {len(data)}')
    _take_tensor(tuple(shape), itemsize, f'Tensor record of dtype {dtype_name}')
    if numel == 0:
        return torch.empty(tuple(shape), dtype=dtype)
    # Copy into a bytearray so the tensor owns writable memory.
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return raw.view(dtype).reshape(tuple(shape))


def _file_rebuild_tensor(dtype_name: Any, shape: Any, data: Any) -> torch.Tensor:
    """What the safe loader resolves torch_utils.netfile._rebuild_tensor to."""
    return _rebuild_tensor(dtype_name, shape, data).as_subclass(_FileTensor)


# ---------------------------------------------------------------------------------------
# Module records of our own format.

def _module_record(module: torch.nn.Module) -> Dict[str, Any]:
    """Describes a registered module as data: class name, constructor args, state_dict."""
    name = _qualname(module)
    if _registry.get(name) is not type(module):
        raise UnsupportedObjectError(
            f'Cannot store module of class {name!r} in a network file: it is not registered. '
            f'Decorate the class with @torch_utils.netfile.register.')
    if not hasattr(module, '_init_args') or not hasattr(module, '_init_kwargs'):
        raise UnsupportedObjectError(f'Module of class {name!r} has no recorded constructor arguments '
                                     f'(was it created without calling its __init__?)')
    state = collections.OrderedDict(module.state_dict())
    return dict(format=FORMAT_VERSION, class_name=name, args=tuple(module._init_args),
                kwargs=dict(module._init_kwargs), state=state)


def _rebuild_module(record: Dict[str, Any]) -> torch.nn.Module:
    """Builds a module from its record. Plain `pickle.load` of one of our files lands here;
    the safe loader maps this name to an inert record instead and builds modules itself."""
    return _build_module(_ModuleRecord(record), _Materializer(device=None, notes=[]))


class _ModuleRecord:
    """Inert, validated description of a registered module read from a file."""

    def __init__(self, record: Any):
        if not isinstance(record, dict):
            raise UnsafeNetworkFileError(f'Module record must be a dict, got {type(record).__name__}')
        missing = {'format', 'class_name', 'args', 'kwargs', 'state'} - set(record)
        if missing:
            raise UnsafeNetworkFileError(f'Module record lacks the fields {sorted(missing)}')
        if type(record['format']) is not int or record['format'] > FORMAT_VERSION:
            raise NetworkFileError(f'Module record has format version {_show(record["format"])}; this '
                                   f'framework reads versions up to {FORMAT_VERSION}. Update the framework.')
        if not isinstance(record['class_name'], str) or not isinstance(record['args'], (tuple, list)) \
                or not isinstance(record['kwargs'], dict) or not isinstance(record['state'], dict):
            raise UnsafeNetworkFileError('Module record has fields of the wrong types')
        self.class_name = record['class_name']
        self.args = tuple(record['args'])
        self.kwargs = record['kwargs']
        self.state = record['state']

    def __setstate__(self, state: Any) -> None:
        # A BUILD after the REDUCE would replace the fields checked above.
        raise UnsafeNetworkFileError('Network file tries to replace the fields of a module record after '
                                     'they were checked (pickle BUILD); not allowed')


_DOTTED_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$')
_TRUSTED_PACKAGES = ('training', 'torch_utils', 'metrics')  # Our own packages only.


def _resolve_registered(class_name: str) -> type:
    """Finds a registered class by name, importing its module only if it is one of ours."""
    cls = _registry.get(class_name)
    if cls is not None:
        return cls
    if not _DOTTED_NAME.match(class_name or ''):
        raise UnsafeNetworkFileError(f'Invalid class name {_show(class_name)} in network file')
    module_name = class_name.rsplit('.', 1)[0]
    # Nested classes ('pkg.mod.Outer.Inner') need the longest importable module prefix.
    if module_name.split('.')[0] in _TRUSTED_PACKAGES:
        parts = class_name.split('.')
        for i in range(len(parts) - 1, 0, -1):
            prefix = '.'.join(parts[:i])
            try:
                importlib.import_module(prefix)
                break
            except ModuleNotFoundError as e:
                if e.name and not prefix.startswith(e.name):
                    raise NetworkFileError(f'Importing {prefix} for class {class_name!r} failed: {e}') from e
                continue
        cls = _registry.get(class_name)
    if cls is None:
        raise NetworkFileError(
            f'Network file needs class {class_name!r}, which is not a registered network class of '
            f'this framework (registered: {_short_list(sorted(_registry))})')
    return cls


def _load_state_strict(module: torch.nn.Module, state: Dict[str, torch.Tensor], what: str,
                       notes: Optional[List[str]] = None, tolerate_nonpersistent: bool = False) -> None:
    """load_state_dict with an error that names the class and the mismatching keys.

    With `tolerate_nonpersistent`, entries that are non-persistent buffers of `module` (saved as
    persistent by other code bases) are copied into the buffer when shapes agree, not refused.
    """
    expected = module.state_dict()
    state = dict(state)
    if tolerate_nonpersistent:
        buffers = dict(module.named_buffers())
        for key in [k for k in state if k in buffers and k not in expected]:
            value = state.pop(key)
            if tuple(value.shape) == tuple(buffers[key].shape):
                with torch.no_grad():
                    buffers[key].copy_(value)
            elif notes is not None:
                notes.append(f'{what}: ignored stored buffer {key!r} of shape {tuple(value.shape)}')
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        lines = [f'{what}: stored tensors do not match the class.']
        if missing:
            lines.append(f'  missing from the file ({len(missing)}): {_short_list(missing)}')
        if unexpected:
            lines.append(f'  not in the class ({len(unexpected)}): {_short_list(unexpected)}')
        raise NetworkFileError('\n'.join(lines))
    bad_shapes = [f'{k}: file {tuple(state[k].shape)} vs class {tuple(expected[k].shape)}'
                  for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad_shapes:
        raise NetworkFileError(f'{what}: stored tensors have the wrong shapes:\n  ' + '\n  '.join(bad_shapes[:12]))
    module.load_state_dict(state, strict=True)


def _check_named_objects(value: Any, what: str) -> None:
    """Constructor arguments from a file may name classes ('class_name': ...) that the
    constructor would build by name; only registered classes of this framework may be named."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ('class_name', 'func_name') and isinstance(v, str):
                try:
                    _resolve_registered(v)
                except NetworkFileError:
                    raise UnsafeNetworkFileError(
                        f'{what}: constructor arguments name {k}={v!r}, which is not a registered network '
                        f'class; a network file may not make constructors build other objects') from None
            _check_named_objects(v, what)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _check_named_objects(v, what)


class _AllocationGuard(torch.overrides.TorchFunctionMode):
    """Bounds the tensors a constructor allocates. Constructor arguments come from the file, so
    a few bytes (img_resolution=65536, channel_max=65536) could otherwise make __init__ allocate
    many gigabytes before the stored state is even compared. Factory calls are counted against
    max_tensor_bytes and refused before they allocate."""

    _FACTORIES = frozenset([torch.empty, torch.zeros, torch.ones, torch.randn, torch.rand, torch.full,
                            torch.eye, torch.randint, torch.normal])

    def __init__(self, limit: int, what: str):
        super().__init__()
        self.limit = limit
        self.what = what
        self.used = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._FACTORIES:
            numel = _requested_numel(func, args, kwargs)
            if numel is not None:
                dtype = kwargs.get('dtype') or torch.get_default_dtype()
                itemsize = torch.empty([], dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 8
                self.used += numel * itemsize
                if self.used > self.limit:
                    raise UnsafeNetworkFileError(
                        f'{self.what}: the stored constructor arguments make the network allocate more than its '
                        f'stored tensors can justify ({self.used} bytes so far; bounded by 4x the stored state '
                        f'plus 64 MiB, and by max_tensor_bytes); refusing to build it')
        return func(*args, **kwargs)


def _requested_numel(func, args: tuple, kwargs: dict) -> Optional[int]:
    """Element count a factory call asks for (None when it cannot be told cheaply)."""
    try:
        if func is torch.eye:
            n = int(args[0]) if args else int(kwargs['n'])
            m = int(args[1]) if len(args) > 1 and not isinstance(args[1], torch.Tensor) else n
            return n * m
        if func is torch.randint:
            size = kwargs.get('size', args[-1] if args else None)
        elif func is torch.normal:
            size = kwargs.get('size', args[2] if len(args) > 2 else None)
        else:
            size = kwargs.get('size', args[0] if len(args) == 1 or func is torch.full else args)
        if size is None:
            return None
        if isinstance(size, (int, np.integer)):
            size = (size,)
        dims = [int(d) for d in size]
        return math.prod(max(d, 0) for d in dims)
    except (TypeError, ValueError, IndexError, KeyError):
        return None


_CONSTRUCT_SLACK = 64 << 20  # Bytes a constructor may allocate beyond 4x the state it is stored with.


def _state_nbytes(state: Dict[str, Any]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))


def _construct(cls: type, args: tuple, kwargs: dict, what: str, state_bytes: int = 0) -> torch.nn.Module:
    """cls(*args, **kwargs) for a module stored with `state_bytes` of tensors: what the
    constructor allocates is bounded by 4x that plus 64 MiB (its parameters, with room for
    temporaries and non-persistent buffers), and by max_tensor_bytes over the whole file."""
    _check_named_objects((args, kwargs), what)
    budget = _budget_var.get()
    total = budget.limits.max_tensor_bytes if budget is not None else DEFAULT_LIMITS.max_tensor_bytes
    used = budget.construct_bytes if budget is not None else 0
    guard = _AllocationGuard(min(total, used + 4 * state_bytes + _CONSTRUCT_SLACK), what)
    guard.used = used
    try:
        with guard:
            return cls(*args, **kwargs)
    except NetworkFileError:
        raise
    except Exception as e:
        try:
            shown = repr(dict(args=args, kwargs=kwargs))
        except ValueError:  # e.g. an integer of more digits than Python converts to text.
            shown = '(too large to show)'
        shown = shown if len(shown) <= 400 else shown[:400] + ' ...'
        raise NetworkFileError(f'{what}: cannot construct {_qualname(cls)} with the stored arguments '
                               f'{shown}: {type(e).__name__}: {e}') from e
    finally:
        if budget is not None:
            budget.construct_bytes = guard.used


def _build_module(record: _ModuleRecord, mat: '_Materializer') -> torch.nn.Module:
    cls = _resolve_registered(record.class_name)
    args = mat.value(record.args)
    kwargs = mat.value(record.kwargs)
    state = {k: mat.tensor(v, f'{record.class_name} state {k!r}')
             for k, v in _str_dict(record.state, f'{record.class_name} state').items()}
    module = _construct(cls, args, kwargs, record.class_name, _state_nbytes(state))
    _load_state_strict(module, state, record.class_name)
    return module


# ---------------------------------------------------------------------------------------
# Saving.

def _global_name(obj: Any) -> Tuple[str, str]:
    return getattr(obj, '__module__', None) or '', getattr(obj, '__qualname__', None) or ''


class _NullWriter:
    """A sink for a pickling pass that only checks what would be written."""

    def write(self, b) -> int:
        return len(b)


class _NetworkPickler(pickle.Pickler):
    """Pickler that stores registered modules and tensors as data and refuses anything else.

    It does not change how the objects themselves pickle or deepcopy elsewhere.
    """

    def __init__(self, file, check_only: bool = False):
        super().__init__(file, protocol=PICKLE_PROTOCOL)
        self.check_only = check_only  # Skip tensor bytes: a fast validation pass.

    def reducer_override(self, obj):
        if isinstance(obj, torch.nn.Module):
            return _rebuild_module, (_module_record(obj),)
        if isinstance(obj, torch.Tensor):
            return _rebuild_tensor, _tensor_to_data(obj, with_bytes=not self.check_only)
        if isinstance(obj, (np.ndarray, np.generic, np.dtype)):
            dtype = obj if isinstance(obj, np.dtype) else obj.dtype
            if not _NP_DTYPE_CODE.match(dtype.str[1:]) or dtype.fields is not None:
                raise UnsupportedObjectError(f'Cannot store a numpy value of dtype {dtype} in a network file; '
                                             f'only plain numeric and fixed-width string dtypes are allowed')
            return NotImplemented  # Their own reductions use only allowlisted globals.
        if isinstance(obj, (torch.dtype, torch.device, torch.Size)):
            return NotImplemented
        if type(obj) in (collections.OrderedDict, EasyDict, complex, bytearray):
            return NotImplemented
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            # Globals emitted by the reductions above; the loader must accept each of them.
            module, name = _global_name(obj)
            if (module, name) in _SAVEABLE_GLOBALS:
                return NotImplemented
            raise UnsupportedObjectError(f'Cannot store the global {module}.{name} in a network file: '
                                         f'network files hold data, not code')
        raise UnsupportedObjectError(
            f'Cannot store an object of type {_qualname(obj)} in a network file; allowed are registered '
            f'modules, tensors, numpy arrays, numbers, strings, bytes, None and plain containers')


def _check_saveable(data: Dict[str, Any]) -> None:
    """Pickles every entry into a null sink (without tensor bytes) so errors name the key."""
    for key, value in data.items():
        try:
            _NetworkPickler(_NullWriter(), check_only=True).dump(value)
        except UnsupportedObjectError as e:
            raise UnsupportedObjectError(f'Network file entry {key!r}: {e}') from None
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            raise UnsupportedObjectError(f'Network file entry {key!r} cannot be pickled: {e}') from e


def save_network_pickle(path_or_file: PathOrFile, data: Dict[str, Any]) -> None:
    """Writes a network file in our format.

    Registered modules are stored as (class name, constructor arguments, state_dict) records and
    tensors as raw bytes; containers, numbers, strings, None, EasyDict and numpy arrays as they
    are. Everything is validated before any byte is written; a path is written atomically.

    Args:
        path_or_file: Destination path, or a binary file object opened for writing.
        data: Dict such as {'G': ..., 'D': ..., 'G_ema': ..., 'augment_pipe': ...,
            'training_set_kwargs': {...}}.

    Raises:
        UnsupportedObjectError: an entry holds an unregistered module or a non-plain object;
            the message names the entry and the type.
    """
    if not isinstance(data, dict):
        raise UnsupportedObjectError(f'A network file holds a dict, got {type(data).__name__}')
    _check_saveable(data)

    if isinstance(path_or_file, (str, os.PathLike)):
        with atomic_write(path_or_file, 'wb') as f:
            _NetworkPickler(f).dump(dict(data))
    else:
        # Serialize fully first so a failure never leaves half a pickle in the caller's file.
        buf = io.BytesIO()
        _NetworkPickler(buf).dump(dict(data))
        path_or_file.write(buf.getvalue())


# ---------------------------------------------------------------------------------------
# Legacy (stylegan2-ada-pytorch) objects as data.

class _LegacyObject:
    """Inert description of a persistent object of stylegan2-ada-pytorch and its forks."""

    def __init__(self, class_name: str, version: int, module_src: str, state: Dict[str, Any]):
        self.class_name = class_name
        self.version = version
        self.module_src = module_src  # Kept as text only; never executed.
        self.state = state

    def __setstate__(self, state: Any) -> None:
        raise UnsafeNetworkFileError(f'Network file tries to replace legacy object {self.class_name!r} after '
                                     f'it was checked (pickle BUILD); not allowed')


def _legacy_persistent_obj(meta: Any) -> _LegacyObject:
    """Stands in for torch_utils.persistence._reconstruct_persistent_obj: validates, builds nothing."""
    if not isinstance(meta, dict):
        raise UnsafeNetworkFileError(f'Legacy persistent object: meta must be a dict, got {type(meta).__name__}')
    if meta.get('type') != 'class':
        raise UnsafeNetworkFileError(f'Legacy persistent object of unsupported type {_show(meta.get("type"))}')
    class_name, state = meta.get('class_name'), meta.get('state')
    if not isinstance(class_name, str) or not re.match(r'^[A-Za-z_][A-Za-z0-9_]*$', class_name):
        raise UnsafeNetworkFileError(f'Legacy persistent object has an invalid class name {_show(class_name)}')
    if not isinstance(state, dict):
        raise UnsafeNetworkFileError(f'Legacy persistent object {class_name!r} has no state dict')
    src = meta.get('module_src', '')
    return _LegacyObject(class_name, meta.get('version'), src if type(src) is str else '', state)


class _LegacyTorchModule:
    """Inert stand-in for a plain torch.nn module found in a legacy pickle."""

    torch_class = None  # Set on the per-class subclasses.
    state = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafeNetworkFileError(f'State of {_qualname(self.torch_class)} must be a dict')
        self.state = state


class _TFNetwork(_Inert):
    """Stands in for dnnlib.tflib.network.Network of the TensorFlow releases (StyleGAN2,
    StyleGAN2-ADA TF, DiffAugment-stylegan2): records the pickled state dict, once, and
    nothing else. Its build_module_src is never executed; torch_utils.tf_pickle rebuilds the
    network from the variables and static kwargs."""

    __slots__ = ('state',)

    def __init__(self):
        self.state = None

    def _kind(self) -> str:
        return 'TensorFlow network'

    def __setstate__(self, state: Any) -> None:
        if getattr(self, 'state', None) is not None:
            super().__setstate__(state)
        if type(state) is not dict or not all(type(k) is str for k in state):
            raise UnsafeNetworkFileError(f'TensorFlow network: the pickled state must be a dict with string keys, '
                                         f'got {type(state).__name__}')
        self.state = state


# Plain torch.nn modules that forks embed in their heads; read as data, rebuilt by us.
_LEGACY_TORCH_NN_CLASSES = [
    torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Embedding,
    torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.LayerNorm, torch.nn.GroupNorm,
    torch.nn.Dropout, torch.nn.Identity, torch.nn.Flatten, torch.nn.ReLU, torch.nn.LeakyReLU,
    torch.nn.GELU, torch.nn.SiLU, torch.nn.Tanh, torch.nn.Sigmoid, torch.nn.Softplus,
    torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.AvgPool2d,
    torch.nn.MaxPool2d, torch.nn.AdaptiveAvgPool2d, torch.nn.Upsample,
]
_LEGACY_TORCH_NN = {
    _global_name(c): type(f'_Legacy{c.__name__}', (_LegacyTorchModule,), {'torch_class': c})
    for c in _LEGACY_TORCH_NN_CLASSES}
_LEGACY_PLACEHOLDERS = frozenset(_LEGACY_TORCH_NN.values())


class _LegacyClass:
    def __init__(self, class_name: str, adapt: Optional[Callable] = None):
        self.class_name = class_name
        self.adapt = adapt


_legacy_classes: Dict[str, _LegacyClass] = {}


def register_legacy_class(legacy_name: str, class_name: str,
                          adapt: Optional[Callable[[tuple, dict], Tuple[tuple, dict]]] = None) -> None:
    """Maps a class name of legacy pickles onto a registered class of this framework.

    Args:
        legacy_name: Class name as stored in legacy pickles, e.g. 'Generator'.
        class_name: Our registered class, 'module.QualName', e.g. 'training.networks.Generator'.
        adapt: Optional function (args, kwargs) -> (args, kwargs) that turns the legacy
            constructor arguments into ours.
    """
    if not re.match(r'^[A-Za-z_][A-Za-z0-9_]*$', legacy_name):
        raise ValueError(f'Invalid legacy class name {legacy_name!r}')
    if not _DOTTED_NAME.match(class_name):
        raise ValueError(f'Expected a dotted class name, got {class_name!r}')
    _legacy_classes[legacy_name] = _LegacyClass(class_name, adapt)


def legacy_classes() -> Dict[str, str]:
    """Returns the compatibility table: {legacy class name: our 'module.QualName'}."""
    return {k: v.class_name for k, v in _legacy_classes.items()}


def _adapt_legacy_generator(args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    """The StyleGAN2 generator of the stylegan3 code base takes the synthesis options as
    keyword arguments of Generator itself; ours takes them as `synthesis_kwargs`."""
    own = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'mapping_kwargs', 'synthesis_kwargs')
    extra = {k: v for k, v in kwargs.items() if k not in own}
    if not extra:
        return args, kwargs
    kwargs = {k: v for k, v in kwargs.items() if k in own}
    kwargs['synthesis_kwargs'] = {**extra, **(kwargs.get('synthesis_kwargs') or {})}
    return args, kwargs


for _name in ('Generator', 'Discriminator', 'MappingNetwork', 'SynthesisNetwork'):
    register_legacy_class(_name, f'training.networks.{_name}',
                          adapt=_adapt_legacy_generator if _name == 'Generator' else None)
register_legacy_class('AugmentPipe', 'training.augment.ada.AugmentPipe')


# ---------------------------------------------------------------------------------------
# Checking stand-ins for the globals a network file may name.

def _is_int_tuple(x: Any) -> bool:
    return isinstance(x, (tuple, list)) and all(type(v) is int and v >= 0 for v in x)


class _FileStorage(_Inert):
    """A tensor storage read from a file: the bytes and their dtype, nothing a BUILD can change."""

    __slots__ = ('untyped', 'dtype')

    def __init__(self, untyped: torch.UntypedStorage, dtype: torch.dtype):
        self.untyped = untyped
        self.dtype = dtype

    def _kind(self) -> str:
        return 'tensor storage'


# Element sizes of the storage classes a legacy torch.save stream may name.
_LEGACY_STORAGE_ITEMSIZE = {
    'FloatStorage': 4, 'DoubleStorage': 8, 'HalfStorage': 2, 'BFloat16Storage': 2, 'LongStorage': 8,
    'IntStorage': 4, 'ShortStorage': 2, 'CharStorage': 1, 'ByteStorage': 1, 'BoolStorage': 1,
    'ComplexFloatStorage': 8, 'ComplexDoubleStorage': 16}
_LEGACY_TORCH_MAGIC = 0x1950a86a20f9469cfc6c


class _NothingUnpickler(pickle.Unpickler):
    """Reads the header pickles of a torch.save stream: plain values only."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafeNetworkFileError(f'A tensor storage in the file failed the weights-only check: its stream '
                                     f'refers to the global {module}.{name}; nothing was run')

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeNetworkFileError('A tensor storage in the file failed the weights-only check: persistent ids '
                                     'in its header')


class _StorageSizeUnpickler(_NothingUnpickler):
    """Reads the main pickle of a legacy torch.save stream only to learn the declared storage sizes."""

    def __init__(self, file):
        super().__init__(file)
        self.declared = []  # (storage class name, element count)

    def find_class(self, module: str, name: str) -> Any:
        if module == 'torch' and name in _LEGACY_STORAGE_ITEMSIZE:
            return name
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is tuple and len(pid) >= 5 and pid[0] == 'storage':
            self.declared.append((pid[1], pid[4]))
        return None


def _check_storage_stream(data: bytes) -> None:
    """torch's legacy reader allocates the element count a stream declares before reading the
    bytes; a tiny stream declaring 2^40 elements must be refused before that."""
    f = io.BytesIO(data)
    try:
        magic = _NothingUnpickler(f).load()
        if magic != _LEGACY_TORCH_MAGIC:
            raise UnsafeNetworkFileError('A tensor storage in the file is not a legacy torch.save stream')
        _NothingUnpickler(f).load()  # Protocol version.
        _NothingUnpickler(f).load()  # System info.
        sizes = _StorageSizeUnpickler(f)
        sizes.load()
    except NetworkFileError:
        raise
    except Exception as e:
        raise NetworkFileError(f'A tensor storage in the file cannot be read: {type(e).__name__}: {e}') from None
    declared = 0
    for type_name, numel in sizes.declared:
        if type_name not in _LEGACY_STORAGE_ITEMSIZE or type(numel) is not int or numel < 0:
            raise UnsafeNetworkFileError('A tensor storage in the file declares an invalid type or size')
        declared += numel * _LEGACY_STORAGE_ITEMSIZE[type_name]
    if declared > len(data):
        raise UnsafeNetworkFileError(f'A tensor storage in the file declares {declared} bytes but its stream '
                                     f'holds {len(data)}')


def _safe_load_storage(data: Any) -> _FileStorage:
    """torch.storage._load_from_bytes, read with torch's weights-only unpickler only."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeNetworkFileError('torch.storage._load_from_bytes expects bytes')
    _check_storage_stream(bytes(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # TypedStorage deprecation notices.
            storage = torch.load(io.BytesIO(bytes(data)), map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message suggests weights_only=False; that advice must never be followed for a
        # file of unknown origin, so only the first line (what was refused) is kept.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeNetworkFileError(f'A tensor storage in the file failed the weights-only check: '
                                     f'{_strip_torch_advice(first)}') from None
    except Exception as e:
        raise NetworkFileError(f'A tensor storage in the file cannot be read: {type(e).__name__}: '
                               f'{_strip_torch_advice(str(e))}') from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafeNetworkFileError(f'Expected a tensor storage, found {type(storage).__name__}')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dtype, untyped = storage.dtype, storage.untyped()
    if type(untyped) is not torch.UntypedStorage or dtype not in _TENSOR_DTYPES.values():
        raise UnsafeNetworkFileError('A tensor storage in the file has unexpected contents')
    return _FileStorage(untyped, dtype)


def _strip_torch_advice(text: str) -> str:
    """Drops torch's suggestions to load with weights_only=False from an error message."""
    keep = [line for line in str(text).splitlines()
            if 'weights_only' not in line and 'WeightsUnpickler' not in line and line.strip()]
    return ' '.join(keep)[:500] or 'refused by the weights-only reader'


def _safe_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                            backward_hooks=None, metadata=None) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2 with every argument checked."""
    if type(storage) is not _FileStorage:
        raise UnsafeNetworkFileError('Tensor rebuild: storage must be a tensor storage')
    if type(storage_offset) is not int or storage_offset < 0 or not _is_int_tuple(size) \
            or not _is_int_tuple(stride) or len(size) != len(stride) or not isinstance(requires_grad, bool):
        raise UnsafeNetworkFileError('Tensor rebuild: invalid offset, size or stride')
    if backward_hooks or metadata:
        raise UnsafeNetworkFileError('Tensor rebuild: tensors with hooks or metadata are not allowed')
    dtype, untyped = storage.dtype, storage.untyped
    itemsize = torch.empty([], dtype=dtype).element_size()
    available = untyped.nbytes() // itemsize
    numel = math.prod(size)
    if numel > 0:
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= available:
            raise UnsafeNetworkFileError(f'Tensor rebuild: size {tuple(size)} and stride {tuple(stride)} '
                                         f'exceed the storage of {available} elements')
        if numel > available:
            # Only an expanded or overlapping view (e.g. stride 0) can have more elements than
            # its storage; copying one would turn a few stored bytes into gigabytes.
            raise UnsafeNetworkFileError(f'Tensor rebuild: size {tuple(size)} with stride {tuple(stride)} '
                                         f'declares {numel} elements over a storage of {available}; '
                                         f'expanded views are not allowed in network files')
    _take_tensor(tuple(size), itemsize, 'Tensor')
    t = torch.empty((0,), dtype=dtype)
    return t.set_(untyped, storage_offset, tuple(size), tuple(stride)).as_subclass(_FileTensor)


def _safe_rebuild_tensor_v1(storage, storage_offset, size, stride) -> torch.Tensor:
    return _safe_rebuild_tensor_v2(storage, storage_offset, size, stride)


def _safe_rebuild_parameter(data, requires_grad, backward_hooks, state=None) -> torch.Tensor:
    """torch._utils._rebuild_parameter(_with_state): a plain tensor; extra state is dropped."""
    if not isinstance(data, _FileTensor) or backward_hooks:
        raise UnsafeNetworkFileError('Parameter rebuild: expected a tensor and no hooks')
    return data


def _safe_codecs_encode(text, encoding='utf-8'):
    """_codecs.encode as protocol-2 pickles use it for bytes: str -> latin-1 bytes only."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise UnsafeNetworkFileError('_codecs.encode is allowed only as (str, "latin1")')
    return text.encode('latin1')


def _safe_bytearray(data=b''):
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeNetworkFileError('builtins.bytearray is allowed only on bytes')
    return bytearray(data)


def _safe_reconstructor(cls, base, state):
    """copyreg._reconstructor restricted to the few classes that need it."""
    if cls in _LEGACY_PLACEHOLDERS and base is object and state is None:
        return cls.__new__(cls)
    if cls is _TFNetwork and base is object and state is None:
        return _TFNetwork()
    if cls in (EasyDict, collections.OrderedDict) and base is dict:
        if state is not None and type(state) not in (dict, collections.OrderedDict, EasyDict):
            raise UnsafeNetworkFileError(f'copyreg._reconstructor of {cls.__name__} expects a dict')
        return cls(state or {})
    name = 'numpy.ndarray' if cls is _NdarrayToken else '.'.join(_global_name(cls))
    raise UnsafeNetworkFileError(f'copyreg._reconstructor is not allowed for class {name} with base '
                                 f'{_global_name(base)[1] or type(base).__name__}')


# NumPy values. Every dtype, array and scalar is rebuilt from a validated description of
# plain numeric (or fixed-width string) data, never from state the file hands to numpy's own
# __setstate__: a structured dtype's state can declare object fields and clear the flags
# that say so, after which raw bytes from the file would be used as object pointers.

_np_reconstruct = np.empty(0).__reduce__()[0]
_np_scalar = np.float32(0).__reduce__()[0]
_np_frombuffer = np.empty(1).__reduce_ex__(5)[0]
_NP_DTYPE_CODE = re.compile(r'^(b1|[iu][1248]|f(2|4|8|12|16)|c(8|16|24|32)|[SU][1-9][0-9]{0,5})$')


class _NdarrayToken:
    """What 'numpy.ndarray' resolves to: usable only as the argument of numpy's _reconstruct."""

    def __new__(cls, *args, **kwargs):
        raise UnsafeNetworkFileError('numpy.ndarray may not be called directly in a network file')


class _DtypeToken(_Inert):
    """numpy.dtype(code, align, copy) for plain codes; BUILD may only set the byte order."""

    __slots__ = ('dtype', 'built')

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.built = False

    def _kind(self) -> str:
        return 'numpy dtype'

    def __setstate__(self, state: Any) -> None:
        if self.built:
            super().__setstate__(state)
        self.built = True
        if type(state) is not tuple or len(state) != 8 or state[1] not in ('<', '>', '|', '='):
            raise UnsafeNetworkFileError('numpy dtype: only plain numeric or string dtypes are allowed')
        candidate = self.dtype.newbyteorder(state[1]) if state[1] in '<>' and self.dtype.itemsize > 1 \
            else self.dtype
        expected = candidate.__reduce__()[2]
        # Compare field by field with plain types only; anything else (names, fields, flags
        # that differ from the plain dtype's) is a structured or object dtype in disguise.
        if tuple(type(v) for v in state) != tuple(type(v) for v in expected) or state != expected:
            raise UnsafeNetworkFileError('numpy dtype: only plain numeric or string dtypes are allowed '
                                         '(the file describes a structured or object dtype)')
        self.dtype = candidate


def _safe_np_dtype(code: Any, align: Any = False, copy: Any = False) -> _DtypeToken:
    if type(code) is not str or not _NP_DTYPE_CODE.match(code) or type(align) is not bool \
            or type(copy) is not bool:
        raise UnsafeNetworkFileError(f'numpy dtype {_show(code)} is not allowed; network files may hold '
                                     f'numeric and fixed-width string arrays only')
    try:
        return _DtypeToken(np.dtype(code))
    except TypeError:
        raise UnsafeNetworkFileError(f'numpy dtype {_show(code)} is not known to this numpy') from None


def _np_dtype_of(token: Any, what: str) -> np.dtype:
    if type(token) is not _DtypeToken:
        raise UnsafeNetworkFileError(f'{what}: expected a numpy dtype, got {type(token).__name__}')
    return token.dtype


class _NdarrayPending(_Inert):
    """numpy's _reconstruct result: an array only once BUILD gave it validated plain data."""

    __slots__ = ('array',)

    def __init__(self, array: Optional[np.ndarray] = None):
        self.array = array

    def _kind(self) -> str:
        return 'numpy array'

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            super().__setstate__(state)
        if type(state) is tuple and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if type(state) is not tuple or len(state) != 4:
            raise UnsafeNetworkFileError('numpy array: unexpected state')
        shape, dtype, fortran, raw = state
        dtype = _np_dtype_of(dtype, 'numpy array')
        if not _is_int_tuple(shape) or type(fortran) is not bool or not isinstance(raw, (bytes, bytearray)):
            raise UnsafeNetworkFileError('numpy array: expected a shape, a plain dtype and raw bytes '
                                         '(object arrays are not allowed)')
        self.array = _np_array(raw, dtype, tuple(shape), 'F' if fortran else 'C')


def _np_array(raw: Any, dtype: np.dtype, shape: Tuple[int, ...], order: str) -> np.ndarray:
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafeNetworkFileError('numpy array: only plain dtypes are allowed')
    need = math.prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise UnsafeNetworkFileError(f'numpy array of dtype {dtype.str} and shape {shape} needs {need} bytes, '
                                     f'the file has {len(raw)}')
    _take_tensor(shape, dtype.itemsize, 'numpy array')
    return np.frombuffer(bytearray(raw), dtype=dtype).reshape(shape, order=order)


class _NpScalar(_Inert):
    __slots__ = ('value',)

    def __init__(self, value: np.generic):
        self.value = value

    def _kind(self) -> str:
        return 'numpy scalar'


def _safe_np_reconstruct(subtype, shape, dtype):
    if subtype is not _NdarrayToken or type(shape) is not tuple or shape != (0,) or dtype not in (b'b', 'b'):
        raise UnsafeNetworkFileError('numpy _reconstruct is allowed only for empty plain ndarrays')
    return _NdarrayPending()


def _safe_np_scalar(dtype, data=None):
    dtype = _np_dtype_of(dtype, 'numpy scalar')
    if not isinstance(data, bytes) or len(data) != dtype.itemsize or dtype.hasobject:
        raise UnsafeNetworkFileError('numpy scalar expects a plain dtype and its bytes')
    return _NpScalar(_np_scalar(dtype, data))


def _safe_np_frombuffer(buf, dtype, shape, order):
    dtype = _np_dtype_of(dtype, 'numpy _frombuffer')
    if not isinstance(buf, (bytes, bytearray)) or not _is_int_tuple(shape) or order not in ('C', 'F'):
        raise UnsafeNetworkFileError('numpy _frombuffer expects bytes, a plain dtype, a shape and an order')
    return _NdarrayPending(_np_array(buf, dtype, tuple(shape), order))


def _np_globals() -> Dict[Tuple[str, str], Any]:
    table = {('numpy', 'ndarray'): _NdarrayToken, ('numpy', 'dtype'): _safe_np_dtype}
    for core in ('numpy.core', 'numpy._core'):  # numpy 1.x and 2.x spellings.
        table[(f'{core}.multiarray', '_reconstruct')] = _safe_np_reconstruct
        table[(f'{core}.multiarray', 'scalar')] = _safe_np_scalar
        table[(f'{core}.numeric', '_frombuffer')] = _safe_np_frombuffer
    return table


# (module, name) -> what the loader returns for it. Nothing outside this table resolves.
_ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
    ('torch_utils.netfile', '_rebuild_module'): _ModuleRecord,
    ('torch_utils.netfile', '_rebuild_tensor'): _file_rebuild_tensor,
    ('torch_utils.persistence', '_reconstruct_persistent_obj'): _legacy_persistent_obj,
    ('torch._utils', '_rebuild_tensor_v2'): _safe_rebuild_tensor_v2,
    ('torch._utils', '_rebuild_tensor'): _safe_rebuild_tensor_v1,
    ('torch._utils', '_rebuild_parameter'): _safe_rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _safe_rebuild_parameter,
    ('torch.storage', '_load_from_bytes'): _safe_load_storage,
    ('torch', 'Size'): torch.Size,
    ('torch', 'device'): torch.device,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('dnnlib.util', 'EasyDict'): EasyDict,
    ('dnnlib', 'EasyDict'): EasyDict,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('builtins', 'complex'): complex,
    ('builtins', 'bytearray'): _safe_bytearray,
    ('builtins', 'object'): object,  # Base argument of copyreg._reconstructor (protocols 0-1).
    ('builtins', 'dict'): dict,
    ('_codecs', 'encode'): _safe_codecs_encode,
    ('copyreg', '_reconstructor'): _safe_reconstructor,
    ('dnnlib.tflib.network', 'Network'): _TFNetwork,
    **_np_globals(),
    **_LEGACY_TORCH_NN,
}

# What our own writer may emit: a subset, so everything we write reads back.
_SAVEABLE_GLOBALS = frozenset([
    ('torch_utils.netfile', '_rebuild_module'), ('torch_utils.netfile', '_rebuild_tensor'),
    ('torch', 'Size'), ('torch', 'device'), ('collections', 'OrderedDict'), ('dnnlib.util', 'EasyDict'),
    ('builtins', 'complex'), ('builtins', 'bytearray'),
    *[k for k in _np_globals()],
])

_PY2_MODULES = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}


class _RestrictedUnpickler(pickle.Unpickler):
    """The one unpickler network files go through: resolves allowlisted globals only."""

    def __init__(self, file):
        super().__init__(file)
        self.kinds = collections.Counter()  # Which formats the file used.

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        if module == 'torch' and name in _TORCH_DTYPES_BY_NAME:
            return _TORCH_DTYPES_BY_NAME[name]
        obj = _ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise UnsafeNetworkFileError(
                f'Network file refers to the global {module}.{name}, which network files may not use; '
                f'the file was not loaded and nothing in it was run')
        if obj is _ModuleRecord:
            self.kinds['netfile'] += 1
        elif obj is _legacy_persistent_obj:
            self.kinds['legacy'] += 1
        elif obj is _TFNetwork:
            self.kinds['tf'] += 1
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeNetworkFileError('Network file uses pickle persistent ids, which are not allowed')


# ---------------------------------------------------------------------------------------
# Turning the inert tree into modules.

_NN_INTERNALS = frozenset(['_parameters', '_buffers', '_modules', '_non_persistent_buffers_set',
                           'training'])


def _is_plain_attr(value: Any, depth: int = 0) -> bool:
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) in (tuple, list) and depth < 8:
        return all(_is_plain_attr(v, depth + 1) for v in value)
    return False


# Values that are data as they are (torch.Size is checked to hold ints).
_LEAF_TYPES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)
_KEY_TYPES = (type(None), bool, int, float, str, bytes)


class _Materializer:
    """Builds modules from records and legacy descriptions and copies the plain values around
    them. Every value is visited once (shared values stay shared, so `x = [x, x]` nested forty
    deep costs forty lists, not 2^40), and the visit counts and nesting are bounded by the
    LoadLimits. Anything that is not data of a known type is refused by type name."""

    def __init__(self, device: Optional[torch.device], notes: List[str],
                 limits: Optional[LoadLimits] = None):
        self.device = device
        self.notes = notes
        self.limits = limits or DEFAULT_LIMITS
        self.memo: Dict[int, Tuple[Any, Any]] = {}
        self.objects = 0
        self.depth = 0

    def tensor(self, value: Any, what: str) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise UnsafeNetworkFileError(f'{what}: expected a tensor, got {type(value).__name__}')
        return _plain_tensor(value)

    def value(self, obj: Any, where: str = '') -> Any:
        hit = self.memo.get(id(obj))
        if hit is not None:
            return hit[1]
        self.objects += 1
        if self.objects > self.limits.max_objects:
            raise UnsafeNetworkFileError(f'Network file holds more than {self.limits.max_objects} values '
                                         f'(max_objects); refusing to build it')
        t = type(obj)
        if t in _LEAF_TYPES:
            return obj
        self.depth += 1
        try:
            if self.depth > self.limits.max_depth:
                raise UnsafeNetworkFileError(
                    f'{where or "network file"}: values nested more than {self.limits.max_depth} levels deep '
                    f'(max_depth); refusing to build them')
            return self._value(obj, t, where)
        finally:
            self.depth -= 1

    def _remember(self, obj: Any, result: Any) -> Any:
        self.memo[id(obj)] = (obj, result)  # Holding obj keeps its id unique.
        return result

    def _key(self, key: Any, where: str) -> Any:
        if type(key) in _KEY_TYPES:
            return key
        if type(key) is tuple and all(type(k) in _KEY_TYPES for k in key):
            return key
        raise UnsafeNetworkFileError(f'{where or "network file"}: a dict key is a {type(key).__name__}; '
                                     f'keys must be strings, numbers or None')

    def _value(self, obj: Any, t: type, where: str) -> Any:
        if t is _ModuleRecord:
            return self._remember(obj, self._finish(_build_module(obj, self)))
        if t is _LegacyObject:
            return self._remember(obj, self._finish(self._build_legacy(obj, where)))
        if isinstance(obj, _LegacyTorchModule):
            return self._remember(obj, self._finish(self._build_torch_nn(obj)))
        if t is _TFNetwork:
            from torch_utils import tf_pickle  # pylint: disable=import-outside-toplevel
            return self._remember(obj, self._finish(tf_pickle.build(obj, self, where)))
        if t is _FileTensor or t is torch.Tensor:
            result = _plain_tensor(obj)
            return self._remember(obj, result if self.device is None else result.to(self.device))
        if t is _NdarrayPending:
            if obj.array is None:
                raise UnsafeNetworkFileError(f'{where or "network file"}: a numpy array without data')
            return self._remember(obj, obj.array)
        if t is _DtypeToken:
            return self._remember(obj, obj.dtype)
        if t is _NpScalar:
            return self._remember(obj, obj.value)
        if t in (dict, collections.OrderedDict, EasyDict):
            result = self._remember(obj, t())
            for k, v in obj.items():
                k = self._key(k, where)
                result[k] = self.value(v, f'{where}.{k}' if where else str(k))
            return result
        if t is list:
            result = self._remember(obj, [])
            result.extend(self.value(v, where) for v in obj)
            return result
        if t is tuple:
            return self._remember(obj, tuple(self.value(v, where) for v in obj))
        if t is torch.Size:
            if not all(type(v) is int for v in obj):
                raise UnsafeNetworkFileError(f'{where or "network file"}: torch.Size of non-integers')
            return obj
        if t in (set, frozenset):
            return self._remember(obj, t(self.value(v, where) for v in obj))
        if t is bytearray:
            return self._remember(obj, bytearray(obj))
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType, functools.partial)):
            kind = 'class' if isinstance(obj, type) else 'function'
            name = '.'.join(_global_name(obj)) if kind == 'class' else getattr(obj, '__name__', '?')
            raise UnsafeNetworkFileError(f'{where or "network file"}: holds the {kind} {name} itself, '
                                         f'which is not data')
        kind = obj._kind() if isinstance(obj, _Inert) else t.__name__
        raise UnsafeNetworkFileError(f'{where or "network file"}: holds a {kind} where data was expected')

    def _finish(self, module: torch.nn.Module) -> torch.nn.Module:
        module.eval().requires_grad_(False)
        return module if self.device is None else module.to(self.device)

    def _build_legacy(self, obj: _LegacyObject, where: str) -> torch.nn.Module:
        entry = _legacy_classes.get(obj.class_name)
        what = f'{_show(where or "value")} (legacy class {obj.class_name!r})'
        if entry is None:
            raise NetworkFileError(
                f'{what}: this framework has no counterpart for legacy class {obj.class_name!r}; '
                f'supported legacy classes: {_short_list(sorted(_legacy_classes))}. '
                f'Load only the entries you need, e.g. keys=("G_ema",), or map the class with '
                f'torch_utils.netfile.register_legacy_class().')
        try:
            cls = _resolve_registered(entry.class_name)
        except NetworkFileError as e:
            raise NetworkFileError(f'{what}: {e}') from None
        args = self.value(obj.state.get('_init_args', ()), f'{where}._init_args')
        kwargs = self.value(obj.state.get('_init_kwargs', {}), f'{where}._init_kwargs')
        if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
            raise UnsafeNetworkFileError(f'{what}: _init_args/_init_kwargs must be a tuple and a dict')
        if entry.adapt is not None:
            args, kwargs = entry.adapt(args, kwargs)
        state = {}
        _flatten_legacy_state(obj.state, '', state, f'{what}', max_depth=self.limits.max_depth)
        module = _construct(cls, tuple(args), dict(kwargs), what, _state_nbytes(state))
        _load_state_strict(module, state, f'{what} as {entry.class_name}', self.notes,
                           tolerate_nonpersistent=True)
        return module

    def _build_torch_nn(self, obj: _LegacyTorchModule) -> torch.nn.Module:
        """A plain torch.nn module rebuilt from data: fresh internals, plain attributes, tensors."""
        cls = obj.torch_class
        what = _qualname(cls)
        state = _str_dict(obj.state, what)
        module = cls.__new__(cls)
        torch.nn.Module.__init__(module)
        for name, value in state.items():
            if name.isidentifier() and not name.startswith('__') \
                    and name not in _NN_INTERNALS and not name.startswith(('_forward', '_backward')) \
                    and not name.endswith('_hooks') and _is_plain_attr(value):
                object.__setattr__(module, name, value)
        nonpersistent = _str_set(state.get('_non_persistent_buffers_set'), what)
        for name, value in _str_dict(state.get('_parameters'), f'{what}._parameters').items():
            module._parameters[name] = None if value is None else torch.nn.Parameter(
                self.tensor(value, f'{what}.{name}'), requires_grad=False)
        for name, value in _str_dict(state.get('_buffers'), f'{what}._buffers').items():
            module.register_buffer(name, None if value is None else self.tensor(value, name),
                                   persistent=name not in nonpersistent)
        for name, child in _str_dict(state.get('_modules'), f'{what}._modules').items():
            if child is not None and not isinstance(child, (_LegacyTorchModule, _LegacyObject)):
                raise UnsafeNetworkFileError(f'{what}: submodule {name!r} is not a module')
            module._modules[name] = None if child is None else self.value(child, f'{what}.{name}')
        return module


def _str_dict(value: Any, what: str) -> Dict[str, Any]:
    """A dict from a legacy object's state, which must have string keys (None = empty)."""
    if value is None:
        return {}
    if type(value) not in (dict, collections.OrderedDict, EasyDict) or not all(type(k) is str for k in value):
        raise UnsafeNetworkFileError(f'{what} must be a dict with string keys, got {type(value).__name__}')
    return value


def _str_set(value: Any, what: str) -> set:
    if value is None:
        return set()
    if type(value) not in (set, frozenset, list, tuple) or not all(type(k) is str for k in value):
        raise UnsafeNetworkFileError(f'{what}: _non_persistent_buffers_set must be a set of names')
    return set(value)


def _flatten_legacy_state(state: Dict[str, Any], prefix: str, out: Dict[str, torch.Tensor], what: str,
                          depth: int = 0, max_depth: int = DEFAULT_LIMITS.max_depth) -> None:
    """Collects parameters and persistent buffers of a legacy object tree as 'a.b.name'."""
    if depth > max_depth:
        raise UnsafeNetworkFileError(f'{what}: submodules nested more than {max_depth} levels deep (max_depth)')
    state = _str_dict(state, f'{what}: {prefix or "state"}')
    nonpersistent = _str_set(state.get('_non_persistent_buffers_set'), what)
    for group in ('_parameters', '_buffers'):
        tensors = _str_dict(state.get(group), f'{what}: {prefix}{group}')
        for name, value in tensors.items():
            if value is None or (group == '_buffers' and name in nonpersistent):
                continue
            if not isinstance(value, torch.Tensor):
                raise UnsafeNetworkFileError(f'{what}: {prefix}{name} is not a tensor')
            out[prefix + name] = _plain_tensor(value)
    for name, child in _str_dict(state.get('_modules'), f'{what}: {prefix}_modules').items():
        if child is None:
            continue
        if isinstance(child, (_LegacyObject, _LegacyTorchModule)):
            _flatten_legacy_state(child.state, f'{prefix}{name}.', out, what, depth + 1, max_depth)
        else:
            raise UnsafeNetworkFileError(f'{what}: submodule {prefix}{name} is a {type(child).__name__}, '
                                         f'not a module')


# ---------------------------------------------------------------------------------------
# Loading.

class _LimitedReader:
    """The file as the unpickler reads it: at most max_file_bytes, and a read never asks the
    underlying file for more than that (a pickle can declare a frame or a bytes object of
    2^60 bytes; the unpickler would otherwise request them in one call)."""

    def __init__(self, file: BinaryIO, limit: int):
        self.file = file
        self.left = limit
        self.limit = limit

    def _check(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise UnsafeNetworkFileError(f'Network file is larger than {self.limit} bytes (max_file_bytes)')

    def read(self, n: int = -1) -> bytes:
        n = self.left + 1 if n is None or n < 0 or n > self.left + 1 else n
        data = self.file.read(n)
        self._check(len(data))
        return data

    def readline(self) -> bytes:
        data = self.file.readline(self.left + 1)
        self._check(len(data))
        return data

    def readinto(self, buf) -> int:
        view = memoryview(buf)
        if len(view) > self.left + 1:
            view = view[:self.left + 1]
        data = self.file.read(len(view))
        view[:len(data)] = data
        self._check(len(data))
        return len(data)


def _file_name(path_or_file: Any) -> Optional[str]:
    name = getattr(path_or_file, 'name', None)
    return name if isinstance(name, str) else None


def _named(e: NetworkFileError, name: Optional[str]) -> NetworkFileError:
    """The same error with the file named in front (once)."""
    if name is None or str(e).startswith(name):
        return e
    return type(e)(f'{name}: {e}')


def load_network_pickle(path_or_file: PathOrFile, keys: Optional[Iterable[str]] = None,
                        device: Optional[Union[str, torch.device]] = None,
                        limits: Optional[LoadLimits] = None) -> Any:
    """Reads a network file safely: our format, or legacy stylegan2-ada-pytorch pickles.

    Args:
        path_or_file: Path, or a binary file object opened for reading.
        keys: Entries to return, e.g. ('G_ema',); None = all. Entries not asked for are not
            built (so unsupported legacy classes in them do no harm); asked-for entries the
            file lacks are left out. Both are recorded in `result.notes`.
        device: Move the modules and tensors there; None = leave them on the CPU.
        limits: Bounds on file size, tensor bytes, values and nesting; None = DEFAULT_LIMITS.

    Returns:
        A `NetworkData` dict (with `.notes` and `.format`); modules are in eval mode with
        requires_grad False. A file whose top level is not a dict returns that value.

    Raises:
        UnsafeNetworkFileError: the file names a global outside the allowlist (the message names
            it), or exceeds a limit; nothing from the file was run.
        NetworkFileError: the file is damaged, needs a class this framework lacks, or its
            tensors do not match the class. Messages name the file when it has a name.
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        try:
            f = open(path_or_file, 'rb')
        except IsADirectoryError:
            raise NetworkFileError(f'{os.fspath(path_or_file)} is a directory, not a network file') from None
        with f:
            return load_network_pickle(f, keys=keys, device=device, limits=limits)

    limits = limits or DEFAULT_LIMITS
    name = _file_name(path_or_file)
    token = _budget_var.set(_Budget(limits))
    try:
        return _load(path_or_file, keys, device, limits, name)
    except NetworkFileError as e:
        raise _named(e, name) from None
    except RecursionError:
        raise NetworkFileError(f'{name or "network file"}: values nested too deeply to read') from None
    except MemoryError:
        raise NetworkFileError(f'{name or "network file"}: ran out of memory while reading it') from None
    finally:
        _budget_var.reset(token)


def _load(file: BinaryIO, keys: Optional[Iterable[str]], device: Any, limits: LoadLimits,
          name: Optional[str]) -> Any:
    unpickler = _RestrictedUnpickler(_LimitedReader(file, limits.max_file_bytes))
    try:
        raw = unpickler.load()
    except NetworkFileError:
        raise
    except Exception as e:  # Anything else means a damaged or foreign file.
        raise NetworkFileError(f'{name or "network file"} is damaged or not a network pickle: '
                               f'{type(e).__name__}: {str(e)[:300]}') from None

    fmt = 'legacy' if unpickler.kinds['legacy'] else 'netfile' if unpickler.kinds['netfile'] else 'plain'
    notes: List[str] = []
    if unpickler.kinds['tf']:
        fmt = 'tensorflow'
        if type(raw) in (tuple, list) and len(raw) == 3 and all(type(x) is _TFNetwork for x in raw):
            # The TensorFlow training loops pickle (G, D, Gs); Gs is the moving average of G.
            raw = dict(G=raw[0], D=raw[1], G_ema=raw[2])
            notes.append('TensorFlow pickle (G, D, Gs): read as data and rebuilt as G, D and G_ema')
    mat = _Materializer(device=torch.device(device) if device is not None else None, notes=notes,
                        limits=limits)
    try:
        if type(raw) not in (dict, collections.OrderedDict, EasyDict):
            if keys is not None:
                raise NetworkFileError(f'keys={tuple(keys)!r} given, but the file holds a {type(raw).__name__}, '
                                       f'not a dict')
            return mat.value(raw)

        for key in raw:
            mat._key(key, 'top level')
        wanted = list(raw) if keys is None else list(keys)
        result = NetworkData(notes=notes, format=fmt)
        for key in raw:
            if key not in wanted:
                notes.append(f'skipped {key!r} (not requested)')
        for key in wanted:
            if key not in raw:
                notes.append(f'{key!r} requested but not in the file (it holds {_short_list(raw)})')
                continue
            result[key] = mat.value(raw[key], str(key))
        return result
    except NetworkFileError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RuntimeError) as e:
        # Values of unexpected types deep inside otherwise valid records.
        raise NetworkFileError(f'malformed network file: {type(e).__name__}: {str(e)[:300]}') from None


def load_network(path_or_url: str, keys: Optional[Iterable[str]] = None,
                 device: Optional[Union[str, torch.device]] = None, limits: Optional[LoadLimits] = None) -> Any:
    """Opens a path or URL (downloads are cached) and reads it with load_network_pickle.

    Args:
        path_or_url: Local path, file:// URL or http(s) URL.
        keys: Entries to return; see load_network_pickle.
        device: Where to put modules and tensors; None = CPU.
        limits: See load_network_pickle.

    Returns:
        See load_network_pickle.
    """
    from dnnlib.util import open_url  # Late import: keeps this module importable on its own.
    if isinstance(path_or_url, str) and os.path.isdir(path_or_url):
        raise NetworkFileError(f'{path_or_url} is a directory, not a network file')
    with open_url(path_or_url) as f:
        return load_network_pickle(f, keys=keys, device=device, limits=limits)


def error_line(e: BaseException) -> str:
    """An error as one line for a command-line message: OSErrors as 'path: reason', others
    with their line breaks folded (class mismatches list names on several lines)."""
    if isinstance(e, OSError) and e.strerror:
        text = f'{e.filename}: {e.strerror}' if e.filename else e.strerror
    else:
        text = str(e) or type(e).__name__
    return ' '.join(text.split())


_GENERATOR_ATTRS = ('mapping', 'synthesis', 'z_dim', 'c_dim', 'w_dim', 'num_ws', 'img_resolution', 'img_channels')


def generator_problem(G: Any, what: str = 'G_ema') -> Optional[str]:
    """None when `G` is usable as a generator, else a sentence saying what it is instead."""
    if G is None:
        return f'holds no {what}'
    if not isinstance(G, torch.nn.Module) or not all(hasattr(G, a) for a in _GENERATOR_ATTRS):
        return f'{what} is a {type(G).__name__}, not a generator'
    bad = [n for n, t in G.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        return f'{what} has non-finite weights (NaN or Inf) in {len(bad)} tensors, e.g. {bad[0]}; its images would be blank'
    return None


def convert_network_pickle(src: str, dst: str, keys: Optional[Iterable[str]] = None) -> List[str]:
    """Reads any supported network file (e.g. a legacy pickle) and writes it in our format.

    Args:
        src: Source path or URL.
        dst: Destination path (written atomically).
        keys: Entries to keep; None = all.

    Returns:
        The notes of the load (skipped entries and the like).
    """
    data = load_network(src, keys=keys)
    if not isinstance(data, dict):
        raise NetworkFileError(f'{src} does not hold a dict of networks')
    save_network_pickle(dst, dict(data))
    return list(getattr(data, 'notes', []))


# ---------------------------------------------------------------------------------------
# Command line: python -m torch_utils.netfile convert in.pkl out.pkl

def _cli():
    """The click command group behind `python -m torch_utils.netfile`."""
    import click  # pylint: disable=import-outside-toplevel

    @click.group()
    def cli():
        """Network-file tools: convert legacy and TensorFlow pickles to the safe format, list entries."""

    @cli.command()
    @click.argument('src', metavar='IN')
    @click.argument('dst', metavar='OUT', type=click.Path(dir_okay=False))
    @click.option('--keys', metavar='LIST', default=None,
                  help='Comma-separated entries to keep, e.g. G_ema,G  [default: all]')
    def convert(src, dst, keys):
        """Convert network pickle IN (stylegan2-ada-pytorch, its forks, or a StyleGAN2 / StyleGAN2-ADA / DiffAugment TensorFlow pickle) to our format in OUT."""
        key_list = [k for k in keys.split(',') if k] if keys else None
        try:
            notes = convert_network_pickle(src, dst, keys=key_list)
        except (NetworkFileError, OSError) as e:
            raise click.ClickException(error_line(e))
        for note in notes:
            click.echo(f'note: {note}')
        click.echo(f'wrote {dst}')

    @cli.command()
    @click.argument('src', metavar='IN')
    def info(src):
        """List the entries of network file IN."""
        try:
            data = load_network(src)
        except (NetworkFileError, OSError) as e:
            raise click.ClickException(error_line(e))
        click.echo(f'format: {getattr(data, "format", "plain")}')
        for key, value in (data.items() if isinstance(data, dict) else [('(top level)', data)]):
            extra = ''
            if isinstance(value, torch.nn.Module):
                extra = f' ({sum(t.numel() for t in value.state_dict().values())} tensor elements)'
            # Keys are the file's: printed as repr unless plain, so they cannot carry terminal escapes.
            shown = key if isinstance(key, str) and re.fullmatch(r'[\w.() -]{1,100}', key) else _show(key)
            click.echo(f'{shown}: {_qualname(value)}{extra}')

    return cli


def _main(argv: Optional[List[str]] = None) -> None:
    _cli().main(args=argv, prog_name='python -m torch_utils.netfile')


def main() -> None:
    """Console entry point (sg2-netfile)."""
    _cli().main(prog_name='sg2-netfile')


if __name__ == '__main__':
    # Run through the imported module so that there is one registry, not two.
    from torch_utils import netfile as _netfile
    _netfile._main()
