"""The augment stage: the chain of augmentations every image passes on its way into D.

The stage is built from the config tree (`augment_kwargs`): a list of kwargs dicts, each
with a `class_name` (e.g. the ADA pipeline, DiffAugment) and optionally a `name`. It applies
its children in order. Children are registered under their short names ('ada', 'diffaug'),
so a controller reaches a child's `p` as `stage.get('ada').p` or through the submodule path
'ada', and the state dict reads 'ada.p', 'ada.Hz_geom', ...

The stage is what a network pickle stores as `augment_pipe`.
"""

import copy
from typing import Any, Dict, Iterator, List, Sequence

import torch

import dnnlib
from torch_utils import misc, netfile


@netfile.register
class AugmentStage(torch.nn.Module):
    """Applies a list of augmentation modules in order.

    Args:
        augments: kwargs dicts, each with 'class_name' (an nn.Module mapping images to
            images) and optionally 'name' (default: the class's `name` attribute); the other
            entries go to the constructor.
    """

    def __init__(self, augments: Sequence[Dict[str, Any]] = ()):
        super().__init__()
        if isinstance(augments, dict) or not isinstance(augments, (list, tuple)):
            raise ValueError(f'AugmentStage: augments must be a list of kwargs dicts, got {type(augments).__name__}')
        for i, spec in enumerate(augments):
            if not isinstance(spec, dict) or not isinstance(spec.get('class_name'), str):
                raise ValueError(f'AugmentStage: augments[{i}] must be a dict with a class_name, got {spec!r}')
            spec = copy.deepcopy(dict(spec))
            name = spec.pop('name', None)
            child = dnnlib.construct_class_by_name(**spec)
            if not isinstance(child, torch.nn.Module):
                raise ValueError(f'AugmentStage: augments[{i}] ({spec["class_name"]}) is not a torch.nn.Module')
            name = name if name is not None else getattr(child, 'name', None)
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f'AugmentStage: augments[{i}] ({spec["class_name"]}) needs a name that is a '
                                 f'Python identifier, got {name!r}; give one with the "name" key')
            if name in self._modules or hasattr(torch.nn.Module, name) or hasattr(type(self), name):
                raise ValueError(f'AugmentStage: augments[{i}] name {name!r} is already taken; give each '
                                 'augmentation a distinct "name"')
            child.name = name
            self.add_module(name, child)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augments [N, C, H, W] images with every child in order (identity when empty)."""
        for child in self._modules.values():
            images = child(images)
        return images

    def __iter__(self) -> Iterator[torch.nn.Module]:
        return iter(self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)

    def names(self) -> List[str]:
        """Short names of the children, in order."""
        return list(self._modules)

    def get(self, name: str) -> torch.nn.Module:
        """The child called `name`.

        Raises:
            KeyError: no such child; the message lists the names there are.
        """
        child = self._modules.get(name)
        if child is None:
            raise KeyError(f'AugmentStage has no augmentation {name!r} (it has: {", ".join(self._modules) or "none"})')
        return child

    def p_modules(self) -> Dict[str, torch.nn.Module]:
        """{name: child} for the children that carry a `p` buffer."""
        return {name: m for name, m in self._modules.items() if isinstance(getattr(m, 'p', None), torch.Tensor)}

    @torch.no_grad()
    def copy_state_from(self, source: torch.nn.Module) -> List[str]:
        """Copies p and other state from another stage or from a bare augmentation module
        (e.g. the AugmentPipe of a stylegan2-ada network pickle) into matching children.

        Args:
            source: an AugmentStage (children matched by name) or any other module (matched
                to the children of the same class).

        Returns:
            Names of the children that received state.
        """
        updated = []
        if isinstance(source, AugmentStage):
            for name, child in self._modules.items():
                if name in source._modules and type(source._modules[name]) is type(child):
                    misc.copy_params_and_buffers(source._modules[name], child)
                    updated.append(name)
        elif isinstance(source, torch.nn.Module):
            for name, child in self._modules.items():
                if type(child) is type(source):
                    misc.copy_params_and_buffers(source, child)
                    updated.append(name)
        return updated
