"""Small utilities shared by every part of the framework.

- `EasyDict`: a dict whose keys are also attributes (config trees use it).
- `construct_class_by_name` / `call_func_by_name` / `get_obj_by_name`: build objects from
  the `class_name` strings of a config tree.
- `make_cache_dir_path`: where downloaded files and compiled ops are cached.
"""

import importlib
import os
from typing import Any


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
