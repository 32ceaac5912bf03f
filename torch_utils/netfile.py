"""Network files: saving and safe loading of network pickles.

Classes that can appear in a network file are registered with `@register`; the decorator
records the constructor arguments of every instance so that a saved object is described as
(class name, constructor arguments, state) and rebuilt from that alone on load.
"""

import copy
import functools

_registry = {}  # 'module.ClassName' -> class


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
