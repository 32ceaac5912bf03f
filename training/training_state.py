"""The full training state: one file per snapshot from which a run continues exactly.

A network pickle holds what generation and evaluation need (the networks). A training
state holds everything else a run needs to continue as if it had never stopped: every
network, every optimizer, each augmentation probability and controller, the loss state
(path-length mean, the latest generated batch), the counters, the RNG streams and the
config tree.

Files are `training-state-<kimg:06d>.pt`, written by `torch.save` to a temporary name and
renamed into place, so a crash while writing leaves the previous state intact. A pointer
`training-state-latest.json` names the newest complete one. They are read with
`torch.load(weights_only=True)`: only tensors and plain containers, numbers and strings are
inside, so loading never runs code from the file.
"""

import glob
import json
import os
import random
import re
from typing import Any, Dict, List, Optional

import numpy as np
import torch

import dnnlib

FORMAT_VERSION = 1
STATE_PREFIX = 'training-state-'
STATE_SUFFIX = '.pt'
LATEST_POINTER = 'training-state-latest.json'
_STATE_NAME = re.compile(r'^training-state-(\d+)\.pt$')


class TrainingStateError(RuntimeError):
    """A training state is missing, damaged, or does not fit the run."""


def state_file_name(cur_nimg: int) -> str:
    """File name of the state taken at image count `cur_nimg` (kimg, 6 digits)."""
    return f'{STATE_PREFIX}{int(cur_nimg) // 1000:06d}{STATE_SUFFIX}'


# ---------------------------------------------------------------------------------------
# Plain data.

def to_plain(value: Any, where: str = 'state') -> Any:
    """Converts a nested value into what `torch.load(weights_only=True)` accepts.

    EasyDicts become dicts, NumPy arrays become tensors, NumPy scalars Python numbers;
    anything else that is not a tensor, container, number, string or None is refused here
    (at save time) instead of making the file unreadable later.

    Args:
        value: The value to convert.
        where: Path of the value, for the error message.

    Returns:
        The converted value.
    """
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor, torch.dtype)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_plain(v, f'{where}[{k!r}]') for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f'{where}[{i}]') for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f'{where}: a training state holds only tensors and plain data, got {type(value).__name__}')


# ---------------------------------------------------------------------------------------
# RNG streams.

def capture_rng_state() -> Dict[str, Any]:
    """The state of every global random stream as plain data (torch CPU/CUDA, NumPy, Python)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': {'kind': str(kind), 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                  'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
        'python': {'version': int(py_version), 'internal': list(py_internal), 'gauss': py_gauss},
        'cuda': [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Restores what `capture_rng_state` returned (CUDA streams only for devices present)."""
    torch.set_rng_state(state['torch'].cpu())
    npst = state['numpy']
    np.random.set_state((npst['kind'], npst['keys'].numpy().astype(np.uint32), npst['pos'],
                         npst['has_gauss'], npst['cached_gaussian']))
    py = state['python']
    random.setstate((py['version'], tuple(py['internal']), py['gauss']))
    cuda_states = state.get('cuda') or []
    if cuda_states and torch.cuda.is_available():
        for index, rng in enumerate(cuda_states[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(rng.cpu(), index)


# ---------------------------------------------------------------------------------------
# Writing.

def _atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save into a temporary file beside `path`, then rename: all or nothing."""
    with dnnlib.atomic_write(path, 'wb') as f:
        torch.save(obj, f)


def _atomic_write_text(path: str, text: str) -> None:
    with dnnlib.atomic_write(path, 'w') as f:
        f.write(text)


def save_training_state(run_dir: str, state: Dict[str, Any], cur_nimg: int, keep: Optional[int] = 2) -> str:
    """Writes a training state and points `training-state-latest.json` at it.

    The state file is complete before the pointer moves, and older files are removed only
    after that, so an interruption at any moment leaves a loadable state behind.

    Args:
        run_dir: The run directory.
        state: Tensors and plain data (see `to_plain`); `format` is added.
        cur_nimg: Image count of the state (names the file).
        keep: How many state files to keep (newest first); None keeps all.

    Returns:
        The path of the written file.
    """
    name = state_file_name(cur_nimg)
    path = os.path.join(run_dir, name)
    payload = to_plain(dict(state, format=FORMAT_VERSION))
    _atomic_torch_save(payload, path)
    _atomic_write_text(os.path.join(run_dir, LATEST_POINTER),
                       json.dumps({'file': name, 'cur_nimg': int(cur_nimg)}) + '\n')
    if keep is not None:
        for old in _state_files(run_dir)[keep:]:
            if os.path.basename(old) != name:
                try:
                    os.remove(old)
                except OSError:
                    pass
    return path


# ---------------------------------------------------------------------------------------
# Finding and reading.

def _state_files(run_dir: str) -> List[str]:
    """State files of a run directory, newest (highest kimg, then latest written) first."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(run_dir), f'{STATE_PREFIX}*{STATE_SUFFIX}')):
        m = _STATE_NAME.match(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), os.path.getmtime(path), path))
    return [p for _k, _t, p in sorted(found, reverse=True)]


def is_training_state_path(path: str) -> bool:
    """True for a state file or a directory holding at least one state file."""
    if os.path.isdir(path):
        return bool(_state_files(path))
    return os.path.isfile(path) and path.endswith(STATE_SUFFIX)


def find_training_state(path: str) -> str:
    """Resolves a run directory or a state file to the state file to resume from.

    Args:
        path: A `training-state-*.pt` file, or a run directory (its newest complete state:
            the one the pointer names, else the newest file by name).

    Returns:
        The path of the state file.
    """
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise TrainingStateError(f'Resume path {path} does not exist; give a run directory, a '
                                 f'{STATE_PREFIX}*{STATE_SUFFIX} file or a network pickle.')
    pointer = os.path.join(path, LATEST_POINTER)
    if os.path.isfile(pointer):
        try:
            with open(pointer, encoding='utf-8') as f:
                name = json.load(f)['file']
            candidate = os.path.join(path, os.path.basename(name))
            if os.path.isfile(candidate):
                return candidate
        except (OSError, ValueError, KeyError, TypeError):
            pass  # A damaged pointer: fall back to the files themselves.
    files = _state_files(path)
    if not files:
        raise TrainingStateError(f'Run directory {path} holds no {STATE_PREFIX}*{STATE_SUFFIX} file to '
                                 f'resume from (states are written with every network snapshot).')
    return files[0]


def load_training_state(path: str, map_location: Any = 'cpu') -> Dict[str, Any]:
    """Reads a training state (a file or a run directory) safely.

    Args:
        path: State file or run directory (see `find_training_state`).
        map_location: Where tensors go (default CPU).

    Returns:
        The state dict, with `path` set to the file it came from.
    """
    file = find_training_state(path)
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:
        raise TrainingStateError(f'Cannot read training state {file}: {type(e).__name__}: {e}') from e
    if not isinstance(state, dict) or 'format' not in state:
        raise TrainingStateError(f'{file} is not a training state of this framework.')
    if state['format'] > FORMAT_VERSION:
        raise TrainingStateError(f'{file} has state format {state["format"]}; this framework reads up to '
                                 f'{FORMAT_VERSION}. Update the framework.')
    state['path'] = file
    return state
