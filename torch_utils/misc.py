"""Small PyTorch helpers used throughout the framework.

- `constant`: cached constant tensors (filters, gains) so they are built once per device.
- `assert_shape`: shape contracts at module boundaries, also under tracing.
- `suppress_tracer_warnings`: silences TracerWarnings for code that is trace-safe.
- parameter/buffer helpers: listing and copying by name.
- distributed helpers: `ddp_sync`, `check_ddp_consistency`.
- `print_module_summary`: a per-submodule table of parameters and output shapes.
"""

import contextlib
import re
import warnings
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from torch_utils import distributed

# ---------------------------------------------------------------------------------------
# Cached constants.

_constant_cache = {}


def constant(value: Any, shape: Optional[Sequence[int]] = None, dtype: Optional[torch.dtype] = None,
             device: Optional[torch.device] = None,
             memory_format: Optional[torch.memory_format] = None) -> torch.Tensor:
    """Returns a constant tensor, creating it only on the first request.

    The same tensor object is returned for equal requests, so the result must never be
    modified in place.

    Args:
        value: A scalar, nested list, NumPy array or tensor.
        shape: If given, `value` is broadcast to this shape.
        dtype: Defaults to `torch.get_default_dtype()`.
        device: Defaults to the CPU.
        memory_format: Defaults to `torch.contiguous_format`.

    Returns:
        A tensor that does not require grad.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    if shape is not None:
        shape = tuple(int(s) for s in shape)
    if dtype is None:
        dtype = torch.get_default_dtype()
    device = torch.device('cpu') if device is None else torch.device(device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())  # 'cuda' and 'cuda:0' share
    if memory_format is None:
        memory_format = torch.contiguous_format

    # The key holds the value's bytes together with its dtype and shape so that, e.g.,
    # [1, 2] and [[1], [2]] or int and float arrays of equal bytes never collide.
    key = (value.shape, value.dtype.str, value.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key)
    if tensor is None:
        # Never create the cached tensor as an inference tensor: a constant first requested
        # inside torch.inference_mode() must still be usable in autograd later.
        with torch.inference_mode(False):
            tensor = torch.as_tensor(value.copy(), dtype=dtype, device=device)
            if shape is not None:
                tensor, _ = torch.broadcast_tensors(tensor, torch.empty(shape, device=device))
            tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor


# ---------------------------------------------------------------------------------------
# Shape contracts.

@contextlib.contextmanager
def suppress_tracer_warnings() -> Iterator[None]:
    """Context manager that ignores `torch.jit.TracerWarning` inside its block.

    Use it only around code that is known to trace correctly, e.g. shape checks whose
    result is the same for every input the traced graph will see.
    """
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=torch.jit.TracerWarning)
        yield


def _shape_str(shape: Sequence[Any]) -> str:
    return '[' + ', '.join('*' if s is None else str(int(s)) if isinstance(s, torch.Tensor) else str(s)
                           for s in shape) + ']'


def _size_msg(idx: int, shape: Sequence[Any], ref_shape: Sequence[Any]) -> str:
    return f'Wrong size for dimension {idx}: got {_shape_str(shape)}, expected {_shape_str(ref_shape)}'


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[Optional[int]]) -> None:
    """Checks that `tensor` has the expected shape.

    Args:
        tensor: The tensor to check.
        ref_shape: Expected sizes, one per dimension; `None` accepts any size. Entries may
            be ints, 0-dim tensors (under tracing) or symbolic sizes.

    Raises:
        AssertionError: naming the offending dimension, the expected and the actual shape.
    """
    shape = tuple(tensor.shape)
    if len(shape) != len(ref_shape):
        with suppress_tracer_warnings():
            raise AssertionError(f'Wrong number of dimensions: got {len(shape)} with shape {_shape_str(shape)}, '
                                 f'expected {len(ref_shape)} as in {_shape_str(ref_shape)}')
    for idx, (size, ref_size) in enumerate(zip(shape, ref_shape)):
        if ref_size is None:
            continue
        if isinstance(size, torch.Tensor) or isinstance(ref_size, torch.Tensor):
            # Traced sizes: the check holds for every input the trace will see, so reading
            # the values here is safe; the message is built only on failure.
            with suppress_tracer_warnings():
                if not torch.equal(torch.as_tensor(size), torch.as_tensor(ref_size)):
                    raise AssertionError(_size_msg(idx, shape, ref_shape))
        elif size != ref_size:
            raise AssertionError(_size_msg(idx, shape, ref_shape))


# ---------------------------------------------------------------------------------------
# Parameters and buffers.

def params_and_buffers(module: torch.nn.Module) -> List[torch.Tensor]:
    """Returns all parameters followed by all buffers of `module` (recursively)."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f'Expected a torch.nn.Module, got {type(module).__name__}')
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module: torch.nn.Module) -> List[Tuple[str, torch.Tensor]]:
    """Returns (name, tensor) for all parameters followed by all buffers of `module`."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f'Expected a torch.nn.Module, got {type(module).__name__}')
    return list(module.named_parameters()) + list(module.named_buffers())


@torch.no_grad()
def copy_params_and_buffers(src_module: torch.nn.Module, dst_module: torch.nn.Module,
                            require_all: bool = False) -> None:
    """Copies parameter and buffer values from `src_module` into `dst_module` by name.

    Args:
        src_module: Where values come from.
        dst_module: Where values go; its tensors keep their identity, device, dtype and
            `requires_grad`.
        require_all: If True, every tensor of `dst_module` must exist in `src_module`;
            otherwise tensors missing in the source are left unchanged.

    Raises:
        KeyError: a destination tensor is missing in the source while `require_all`.
        ValueError: a tensor exists in both with different shapes.
    """
    src_tensors = dict(named_params_and_buffers(src_module))
    for name, tensor in named_params_and_buffers(dst_module):
        if name not in src_tensors:
            if require_all:
                raise KeyError(f'copy_params_and_buffers: "{name}" of {type(dst_module).__name__} '
                               f'is missing in the source {type(src_module).__name__}')
            continue
        src = src_tensors[name]
        if src.shape != tensor.shape:
            raise ValueError(f'copy_params_and_buffers: shape mismatch for "{name}": source '
                             f'{list(src.shape)}, destination {list(tensor.shape)}')
        tensor.copy_(src.detach())


# ---------------------------------------------------------------------------------------
# Distributed helpers.

@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Context manager: skips DDP gradient synchronisation inside the block unless `sync`.

    Used for gradient accumulation: only the last backward of a step needs the all-reduce.
    Modules that are not DistributedDataParallel are unaffected.
    """
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


def check_ddp_consistency(module: torch.nn.Module, ignore_regex: Optional[str] = None) -> None:
    """Checks that every rank holds identical parameters and buffers.

    Each tensor is compared against rank 0's copy; NaNs compare equal to NaNs. Does
    nothing when torch.distributed is not initialised. Must be called on all ranks.

    Args:
        module: The module to check (the same architecture on every rank).
        ignore_regex: Tensors are skipped when this regex fully matches their dotted name
            or the name prefixed by the module's class name ('Generator.mapping.w_avg').

    Raises:
        RuntimeError: on every rank, naming the first differing tensor and the ranks that
            differ from rank 0.
    """
    if not distributed.is_initialized():
        return
    world_size, rank = distributed.get_world_size(), distributed.get_rank()
    for name, tensor in named_params_and_buffers(module):
        fullname = f'{type(module).__name__}.{name}'
        if ignore_regex is not None and (re.fullmatch(ignore_regex, name) or re.fullmatch(ignore_regex, fullname)):
            continue
        local = tensor.detach()
        ref = local.clone()
        torch.distributed.broadcast(ref, src=0)
        if local.is_floating_point() or local.is_complex():
            nan_local, nan_ref = torch.isnan(local), torch.isnan(ref)
            same = bool(torch.equal(nan_local, nan_ref)) and bool(torch.equal(local[~nan_local], ref[~nan_ref]))
        else:
            same = bool(torch.equal(local, ref))

        # Share every rank's verdict so that all ranks raise together instead of some
        # waiting forever in the next collective.
        flags = torch.zeros(world_size, dtype=torch.int32, device=local.device)
        flags[rank] = 0 if same else 1
        torch.distributed.all_reduce(flags)
        bad_ranks = [r for r in range(world_size) if flags[r].item()]
        if bad_ranks:
            raise RuntimeError(f'check_ddp_consistency: "{fullname}" differs from rank 0 on rank(s) '
                               f'{bad_ranks}')


# ---------------------------------------------------------------------------------------
# Module summary.

def _tensors_in(obj: Any) -> List[torch.Tensor]:
    """Flattens tensors out of nested tuples, lists and dicts (module outputs)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for x in obj for t in _tensors_in(x)]
    if isinstance(obj, dict):
        return [t for x in obj.values() for t in _tensors_in(x)]
    return []


def print_module_summary(module: torch.nn.Module, inputs: Sequence[Any], max_nesting: int = 3,
                         skip_redundant: bool = True) -> Any:
    """Runs `module(*inputs)` once and prints a table of its submodules.

    Each row lists a submodule (in call order), the parameters and buffers it owns that no
    earlier row counted, and the shape and dtype of each tensor it returned. Submodules
    nested deeper than `max_nesting` are folded into their ancestor's row.

    Args:
        module: The module to run.
        inputs: Positional arguments for the forward call (a single tensor is accepted too).
        max_nesting: Deepest submodule level that gets its own row (0 = only `module`).
        skip_redundant: Drop rows that own no tensors and return no tensor not already seen.

    Returns:
        Whatever `module(*inputs)` returned.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f'Expected a torch.nn.Module, got {type(module).__name__}')
    if isinstance(inputs, torch.Tensor) or not isinstance(inputs, (tuple, list)):
        inputs = [inputs]

    # Forward hooks fire children-first, so each entry sees its children's tensors as
    # already counted and keeps only what it owns directly.
    entries = []
    hooks = []
    for name, mod in module.named_modules():
        depth = 0 if name == '' else name.count('.') + 1
        if depth > max_nesting:
            continue
        label = name if name else f'<top-level> ({type(mod).__name__})'
        hook = lambda _mod, _inputs, outputs, label=label: entries.append((label, _mod, _tensors_in(outputs)))
        hooks.append(mod.register_forward_hook(hook))
    try:
        outputs = module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()

    seen_tensors = set()
    rows = []
    total_params = total_buffers = 0
    for label, mod, outs in entries:
        params = [t for t in mod.parameters() if id(t) not in seen_tensors]
        buffers = [t for t in mod.buffers() if id(t) not in seen_tensors]
        new_outs = [t for t in outs if id(t) not in seen_tensors]
        seen_tensors.update(id(t) for t in params + buffers + outs)
        if skip_redundant and not (params or buffers or new_outs):
            continue
        num_params = sum(t.numel() for t in params)
        num_buffers = sum(t.numel() for t in buffers)
        total_params += num_params
        total_buffers += num_buffers
        shown = new_outs if skip_redundant else outs
        shapes = [str(list(t.shape)) for t in shown] or ['-']
        dtypes = [str(t.dtype).split('.')[-1] for t in shown] or ['-']
        rows.append([label, str(num_params) if num_params else '-', str(num_buffers) if num_buffers else '-',
                     shapes[0], dtypes[0]])
        rows += [['', '', '', s, d] for s, d in zip(shapes[1:], dtypes[1:])]

    header = ['Module', 'Parameters', 'Buffers', 'Output shape', 'Datatype']
    total = ['Total', str(total_params), str(total_buffers), '', '']
    widths = [max(len(r[i]) for r in [header, total] + rows) for i in range(len(header))]
    rule = ['-' * w for w in widths]
    lines = [header, rule] + rows + [rule, total]
    print()
    for cells in lines:
        print('  '.join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    print()
    return outputs
