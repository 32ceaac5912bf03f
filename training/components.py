"""Builds a run's parts (augment stage, real-batch transforms, loss terms, controllers)
from the config tree into one ComponentTable (see training/plugins.py for the contract).
"""

from typing import Any, Dict, List, Optional, Tuple

import torch

import dnnlib
from torch_utils import misc
from training import plugins


class Parts:
    """The built parts of a run, by kind, and the table that holds them all."""

    def __init__(self):
        self.table = plugins.ComponentTable()
        self.augment_pipe: Optional[torch.nn.Module] = None
        self.real_transforms: List[Any] = []
        self.heads: List[Any] = []
        self.controllers: List[Tuple[Any, List[torch.nn.Module]]] = []

    @property
    def real_transform(self) -> Optional[Any]:
        """The first real-batch transform (the `real_transform` of network pickles)."""
        return self.real_transforms[0] if self.real_transforms else None

    def head_map(self) -> Dict[str, Any]:
        return dict(self.table.of('loss_term'))

    def roots(self, G: torch.nn.Module, D: torch.nn.Module) -> Dict[str, Any]:
        """First components of controller module paths ('real_transform', 'augment', a
        transform's or a head's name, ...)."""
        roots: Dict[str, Any] = dict(G=G, D=D, real_transform=self.real_transform, augment=self.augment_pipe,
                                     augment_pipe=self.augment_pipe)
        for name, obj in self.table.of('real_transform') + self.table.of('loss_term'):
            roots.setdefault(name, obj)
        return roots


def _as_list(value: Any) -> List[Dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return list(value)


def build_parts(c: Any, dev: torch.device, G: torch.nn.Module, D: torch.nn.Module, training_set: Any) -> Parts:
    """Builds every part the config tree names, in the order: augment stage, real-batch
    transforms (`real_transform_kwargs`: one dict or a list, applied in order), loss terms
    (`heads_kwargs`; built with device, G, D and training_set), controllers (`controllers`,
    each pointed at its `modules` paths).

    Raises:
        ValueError: two parts of one kind share a name, or a controller path names nothing.
    """
    parts = Parts()
    if c.get('augment_kwargs') is not None:
        stage = dnnlib.construct_class_by_name(**c.augment_kwargs).train().requires_grad_(False).to(dev)
        parts.augment_pipe = parts.table.add('augment', 'augment_pipe', stage)
    for i, kwargs in enumerate(_as_list(c.get('real_transform_kwargs'))):
        transform = dnnlib.construct_class_by_name(**kwargs)
        if isinstance(transform, torch.nn.Module):
            transform = transform.train().requires_grad_(False).to(dev)
        if not callable(getattr(transform, 'transform_reals', None)):
            raise TypeError(f'real_transform_kwargs[{i}]: {kwargs.get("class_name")} has no transform_reals(reals, '
                            f'slot); see training/plugins.py')
        parts.real_transforms.append(parts.table.add('real_transform', getattr(transform, 'name', '') or
                                                     f'transform{i}', transform))
    for i, kwargs in enumerate(c.get('heads_kwargs') or []):
        head = dnnlib.construct_class_by_name(**kwargs, device=dev, G=G, D=D, training_set=training_set)
        head = head.to(dev) if isinstance(head, torch.nn.Module) else head
        parts.heads.append(parts.table.add('loss_term', getattr(head, 'name', '') or f'head{i}', head))
    roots = parts.roots(G, D)
    for kwargs in c.get('controllers') or []:
        kwargs = dict(kwargs)
        paths = kwargs.pop('modules', [])
        ctrl = dnnlib.construct_class_by_name(**kwargs)
        parts.table.add('controller', getattr(ctrl, 'name', '') or f'controller{len(parts.controllers)}', ctrl)
        parts.controllers.append((ctrl, [resolve_module_path(p, roots) for p in paths]))
    return parts


def resolve_module_path(path: str, roots: Dict[str, Any]) -> Any:
    """Finds a module by a dotted path such as 'real_transform' or 'augment.ada'.

    The first part names a root ('real_transform', 'augment', 'G', 'D', a head name); the
    rest is a submodule path inside it (an augment stage names its children 'ada',
    'diffaug', ...).
    """
    head, _, rest = path.partition('.')
    if roots.get(head) is None:
        available = sorted(k for k, v in roots.items() if v is not None)
        raise ValueError(f'controllers: module path {path!r} names {head!r}, which this run does not '
                         f'have (available: {", ".join(available)})')
    obj = roots[head]
    if rest:
        try:
            obj = obj.get_submodule(rest) if isinstance(obj, torch.nn.Module) else getattr(obj, rest)
        except AttributeError:
            raise ValueError(f'controllers: module path {path!r}: {type(obj).__name__} has no {rest!r}') from None
    return obj


def p_modules(roots: Dict[str, Optional[torch.nn.Module]]) -> List[Tuple[str, torch.nn.Module]]:
    """Every (label, module) with a tensor `p` among the roots' submodules (augment p values)."""
    found, seen = [], set()
    for root_name, root in roots.items():
        if not isinstance(root, torch.nn.Module):
            continue
        for sub_name, sub in root.named_modules():
            if id(sub) in seen or not isinstance(getattr(sub, 'p', None), torch.Tensor):
                continue
            seen.add(id(sub))
            label = getattr(sub, 'name', None) or (f'{root_name}.{sub_name}' if sub_name else root_name)
            found.append((str(label), sub))
    return found


def copy_p_values(src: Optional[torch.nn.Module], dst: Optional[torch.nn.Module], log) -> None:
    """Copies augmentation state (p values) from a network pickle's module into ours.

    The module's own `copy_state_from` decides when it has one (an augment stage matches
    children by name, or takes a bare legacy pipe's p); the same class copies every tensor
    by name; otherwise each of our submodules with a `p` takes the p of the source
    submodule of the same class.
    """
    if src is None or not isinstance(dst, torch.nn.Module) or not isinstance(src, torch.nn.Module):
        return
    if hasattr(dst, 'copy_state_from'):
        dst.copy_state_from(src)
    elif type(src) is type(dst):
        misc.copy_params_and_buffers(src, dst, require_all=False)
    else:
        sources = {type(m): m for m in src.modules() if isinstance(getattr(m, 'p', None), torch.Tensor)}
        for _name, sub in dst.named_modules():
            match = sources.get(type(sub))
            if match is not None and isinstance(getattr(sub, 'p', None), torch.Tensor):
                misc.copy_params_and_buffers(match, sub, require_all=False)
    for label, module in p_modules({'resumed': dst}):
        log(f'Resumed {label} p = {float(module.p):.4f}.')
