"""The full training state: one file per snapshot from which a run continues exactly.

A network pickle holds what generation and evaluation need (the networks). A training
state holds everything else a run needs to continue as if it had never stopped: every
network, every optimizer, each augmentation probability and controller, the loss state
(path-length mean, the latest generated batch), the counters, the RNG streams and the
config tree.

Files are `training-state-<kimg>.pt` (see `snapshot_tag`), written by `torch.save` to a temporary name and
renamed into place, so a crash while writing leaves the previous state intact. A pointer
`training-state-latest.json` names the newest complete one. They are read with
`torch.load(weights_only=True)`: only tensors and plain containers, numbers and strings are
inside, so loading never runs code from the file.
"""

import glob
import json
import os
import pickle
import random
import re
import zipfile
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

import dnnlib

FORMAT_VERSION = 1
STATE_PREFIX = 'training-state-'
STATE_SUFFIX = '.pt'
LATEST_POINTER = 'training-state-latest.json'
_STATE_NAME = re.compile(r'^training-state-(\d+)(?:_(\d{3}))?\.pt$')


class TrainingStateError(RuntimeError):
    """A training state is missing, damaged, or does not fit the run."""


def snapshot_tag(cur_nimg: int, taken: Iterable[str] = ()) -> str:
    """The <kimg> of snapshot file names: the familiar six digits of whole kimg ('000012' at
    12000 to 12999 images), unless a snapshot of this run already took that name; then the
    exact image count after an underscore ('000012_345' at 12345 images). The underscore sorts
    after the '.' of the short name, so sorting the file names still gives the order in
    which they were written.

    So two snapshots less than 1 kimg apart (a fine --tick/--snap schedule, or the final
    snapshot just after a regular one) never share a name: every network pickle is kept, and
    the newest states too.

    Args:
        cur_nimg: Image count of the snapshot.
        taken: Tags this run has used so far (the caller adds the result).
    """
    cur_nimg = int(cur_nimg)
    kimg, rest = divmod(cur_nimg, 1000)
    short = f'{kimg:06d}'
    return short if short not in set(taken) else f'{short}_{rest:03d}'


def state_file_name(cur_nimg: int, tag: Optional[str] = None) -> str:
    """File name of the state taken at image count `cur_nimg` (or with the given tag)."""
    return f'{STATE_PREFIX}{tag or snapshot_tag(cur_nimg)}{STATE_SUFFIX}'


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


def save_training_state(run_dir: str, state: Dict[str, Any], cur_nimg: int, keep: Optional[int] = 2,
                        tag: Optional[str] = None) -> str:
    """Writes a training state and points `training-state-latest.json` at it.

    The state file is complete before the pointer moves, and older files are removed only
    after that, so an interruption at any moment leaves a loadable state behind.

    Args:
        run_dir: The run directory.
        state: Tensors and plain data (see `to_plain`); `format` is added.
        cur_nimg: Image count of the state (names the file).
        keep: How many state files to keep (newest first); None keeps all.
        tag: The <kimg> part of the name (see `snapshot_tag`); None = whole kimg.

    Returns:
        The path of the written file.
    """
    name = state_file_name(cur_nimg, tag)
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
            nimg = int(m.group(1)) * 1000 + int(m.group(2) or 0)
            found.append((nimg, os.path.getmtime(path), path))
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
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            pass  # A damaged pointer: fall back to the files themselves.
    files = _state_files(path)
    if not files:
        raise TrainingStateError(f'Run directory {path} holds no {STATE_PREFIX}*{STATE_SUFFIX} file to '
                                 f'resume from (states are written with every network snapshot).')
    return files[0]


def check_state_file(file: str) -> None:
    """Cheap integrity check of a state file without unpickling it: torch.save writes a zip
    archive, so a truncated or overwritten file lacks its directory or fails a CRC.

    Raises:
        TrainingStateError: naming the file and what is wrong with it.
    """
    try:
        with zipfile.ZipFile(file) as z:
            bad = z.testzip()
    except zipfile.BadZipFile:
        size = os.path.getsize(file) if os.path.exists(file) else 0
        raise TrainingStateError(f'training state {file} is damaged ({size} bytes, not a complete state '
                                 f'archive: truncated or overwritten?)') from None
    except OSError as e:
        raise TrainingStateError(f'cannot read training state {file}: {e.strerror or e}') from None
    except Exception as e:  # zipfile raises assorted errors on mangled headers.
        raise TrainingStateError(f'training state {file} is damaged ({type(e).__name__}: {e})') from None
    if bad is not None:
        raise TrainingStateError(f'training state {file} is damaged (member {bad} fails its checksum)')


def find_intact_training_state(path: str) -> Tuple[str, List[str]]:
    """Like find_training_state, but checks the file and, for a run directory whose newest
    state is damaged, takes the newest intact older one.

    Returns:
        (state file, warnings): a warning for each damaged state passed over.

    Raises:
        TrainingStateError: the file given is damaged (the message names an intact state
            beside it, if any), or no state of the directory is intact.
    """
    first = find_training_state(path)
    if os.path.isfile(path):
        try:
            check_state_file(first)
        except TrainingStateError as e:
            others = [f for f in _state_files(os.path.dirname(os.path.abspath(first)) or '.')
                      if os.path.abspath(f) != os.path.abspath(first)]
            for other in others:
                try:
                    check_state_file(other)
                except TrainingStateError:
                    continue
                raise TrainingStateError(f'{e}; an intact older state is beside it: resume with --resume={other}, '
                                         f'or pass the run directory to take it automatically') from None
            raise
        return first, []
    warnings = []
    candidates = [first] + [f for f in _state_files(path) if os.path.abspath(f) != os.path.abspath(first)]
    for file in candidates:
        try:
            check_state_file(file)
        except TrainingStateError as e:
            warnings.append(str(e))
            continue
        if warnings:
            warnings.append(f'resuming from the newest intact state instead: {file}')
        return file, warnings
    raise TrainingStateError(f'no training state in {path} is intact: ' + '; '.join(warnings))


def _first_line_without_advice(e: BaseException) -> str:
    """torch.load's message without its suggestion to load with weights_only=False: a file
    that fails the weights-only check must never be loaded any other way."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keep = [ln for ln in lines if 'weights_only' not in ln and 'WeightsUnpickler' not in ln
            and not ln.startswith(('(1)', '(2)', 'Check the documentation', 'Please file an issue'))]
    text = ' '.join(keep)
    return (text[:300] + '...' if len(text) > 300 else text) or type(e).__name__


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
    except pickle.UnpicklingError as e:
        raise TrainingStateError(f'Cannot read training state {file}: the weights-only reader refused it unread '
                                 f'({_first_line_without_advice(e)}); it is damaged or holds more than tensors and '
                                 f'plain data, and was not loaded any other way') from None
    except Exception as e:
        raise TrainingStateError(f'Cannot read training state {file}: {type(e).__name__}: '
                                 f'{_first_line_without_advice(e)}') from None
    if not isinstance(state, dict) or 'format' not in state:
        raise TrainingStateError(f'{file} is not a training state of this framework.')
    if type(state['format']) is not int:
        raise TrainingStateError(f'{file} is not a training state of this framework (bad format field).')
    if state['format'] > FORMAT_VERSION:
        raise TrainingStateError(f'{file} has state format {state["format"]}; this framework reads up to '
                                 f'{FORMAT_VERSION}. Update the framework.')
    state['path'] = file
    return state
