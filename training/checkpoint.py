"""Checkpoints of a run: network snapshots, the training state, and resuming from either.

The training state (training_state.py writes it atomically) holds G, D, G_ema, every
optimizer, the state of every part of the run's ComponentTable under its key
('augment/augment_pipe', 'real_transform/apa', 'loss_term/insgen', 'controller/apa', ...),
the loss's running means, the RNG streams and the progress counters. Resume is strict: a
part of this run that the state lacks is an error naming it, unless the run allows new
parts (`resume_allow_new`, train.py --resume-new-methods=1), which then start fresh. States
written before the table existed (separate augment_pipe, real_transform, heads and
controllers entries, APA's fakes in the loss state) are read through `_legacy_components`.
"""

import copy
import json
from typing import Any, Callable, Dict, List

import torch

from torch_utils import misc, netfile
from training import components, plugins, training_state


def _cpu_tree(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _cpu_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_tree(v) for v in value)
    return value


def _cpu_state(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def collect_state(c: Any, *, G, D, G_ema, parts: components.Parts, opts_by_name: Dict[str, Any], loss,
                  ctx: plugins.StateContext, cur_nimg: int, cur_tick: int, batch_idx: int) -> Dict[str, Any]:
    """Everything exact continuation needs (collective: parts gather every rank's slots)."""
    config = {k: v for k, v in c.items()}
    return {
        'config': json.loads(json.dumps(config, default=str)),
        'progress': {'cur_nimg': int(cur_nimg), 'cur_tick': int(cur_tick), 'batch_idx': int(batch_idx)},
        'modules': {'G': _cpu_state(G), 'D': _cpu_state(D), 'G_ema': _cpu_state(G_ema)},
        'components': {key: _cpu_tree(plugins.get_state(obj, ctx)) for key, _name, obj in parts.table},
        'optimizers': {name: _cpu_tree(opt.state_dict()) for name, opt in opts_by_name.items()},
        'loss': loss.state_dict(),
        'rng': training_state.capture_rng_state(),
    }


def _legacy_components(state: Dict[str, Any], parts: components.Parts) -> Dict[str, Any]:
    """The component states of a training state written before the component table."""
    mods = state.get('modules', {})
    out: Dict[str, Any] = {}
    if mods.get('augment_pipe') is not None:
        out['augment/augment_pipe'] = mods['augment_pipe']
    transforms = parts.table.of('real_transform')
    if mods.get('real_transform') is not None and transforms:
        out[plugins.ComponentTable.key('real_transform', transforms[0][0])] = dict(
            mods['real_transform'], fakes=state.get('loss', {}).get('latest_fakes'))
    for name, head_state in (mods.get('heads') or {}).items():
        out[plugins.ComponentTable.key('loss_term', name)] = head_state
    stored = state.get('controllers', [])
    ctrls = parts.table.of('controller')
    if len(stored) != len(ctrls):
        raise training_state.TrainingStateError(
            f'{state.get("path")} holds {len(stored)} adaptive controllers, this run has {len(ctrls)}.')
    for (name, _ctrl), ctrl_state in zip(ctrls, stored):
        out[plugins.ComponentTable.key('controller', name)] = ctrl_state
    return out


def restore_state(state: Dict[str, Any], *, G, D, G_ema, parts: components.Parts, opts_by_name: Dict[str, Any],
                  loss, ctx: plugins.StateContext, allow_new: bool = False,
                  log: Callable[..., None] = print) -> None:
    """Loads a training state into the run (everything but the progress counters).

    Raises:
        TrainingStateError: the state lacks a network, an optimizer or a part of this run
            (parts only unless `allow_new`).
    """
    path = state.get('path')
    mods = state['modules']
    for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
        if mods.get(name) is None:
            raise training_state.TrainingStateError(f'{path} has no {name}, which this run has.')
        module.load_state_dict(mods[name])
    stored = state['components'] if 'components' in state else _legacy_components(state, parts)
    for key, _name, obj in parts.table:
        if key not in stored:
            if not allow_new:
                raise training_state.TrainingStateError(
                    f'{path} has no state for {key}, which this run has. To add a method to a run on '
                    f'resume, pass --resume-new-methods=1 (its parts then start fresh).')
            log(f'Resume: {key} is new in this run; it starts fresh.')
            continue
        plugins.set_state(obj, stored[key], ctx)
    for key in sorted(set(stored) - set(parts.table.keys())):
        log(f'Resume: the state holds {key}, which this run does not use; ignored.')
    for name, opt in opts_by_name.items():
        if name not in state['optimizers']:
            if allow_new and name.startswith('head_'):
                log(f'Resume: optimizer {name} is new in this run; it starts fresh.')
                continue
            raise training_state.TrainingStateError(f'{path} has no optimizer {name!r}.')
        opt.load_state_dict(state['optimizers'][name])
    loss.load_state_dict(state['loss'])
    training_state.restore_rng_state(state['rng'])


def network_data(*, G, D, G_ema, parts: components.Parts, training_set_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """What a network snapshot holds: the networks, the augment stage, the first real-batch
    transform (as `real_transform`), every part's network modules, the dataset options."""
    transform = parts.real_transform
    data = dict(G=G, D=D, G_ema=G_ema, augment_pipe=parts.augment_pipe,
                real_transform=transform if isinstance(transform, torch.nn.Module) else None,
                training_set_kwargs=dict(training_set_kwargs))
    for _key, name, obj in parts.table:
        if obj is parts.augment_pipe or obj is transform:
            continue
        for key, module in plugins.network_modules(obj, name).items():
            data.setdefault(key, module)
    return data


def cpu_copies(data: Dict[str, Any]) -> Dict[str, Any]:
    """Snapshot copies of the modules (CPU, eval mode, no grad); other values as they are."""
    out = {}
    for key, value in data.items():
        if isinstance(value, torch.nn.Module):
            value = copy.deepcopy(value).eval().requires_grad_(False).cpu()
        out[key] = value
    return out


def save_network_snapshot(path: str, data: Dict[str, Any]) -> None:
    netfile.save_network_pickle(path, cpu_copies(data))


def consistency_modules(*, G, D, G_ema, parts: components.Parts) -> List[torch.nn.Module]:
    """Modules that must be bit-equal on every rank: networks and every part's modules."""
    found: List[torch.nn.Module] = [G, D, G_ema]
    for _key, name, obj in parts.table:
        if isinstance(obj, torch.nn.Module):
            found.append(obj)
        fn = plugins.hook(obj, 'consistency_modules')
        mods = fn() if fn is not None else plugins.network_modules(obj, name)
        found.extend(m for m in mods.values() if isinstance(m, torch.nn.Module))
    unique, seen = [], set()
    for m in found:
        if id(m) not in seen:
            seen.add(id(m))
            unique.append(m)
    return unique


def resume_from_pickle(path: str, *, G, D, G_ema, parts: components.Parts, log: Callable[..., None]) -> None:
    """Weights and augmentation p from a network pickle; parts take what they can."""
    log(f'Resuming weights from {path}.')
    data = netfile.load_network_pickle(path)
    for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
        if data.get(name) is not None:
            misc.copy_params_and_buffers(data[name], module, require_all=False)
    components.copy_p_values(data.get('augment_pipe'), parts.augment_pipe, log)
    for i, (name, transform) in enumerate(parts.table.of('real_transform')):
        components.copy_p_values(data.get('real_transform') if i == 0 else data.get(name), transform, log)
    # Loss terms take their parts from the pickle, or start from the resumed D where it has
    # none (a pickle trained without the method).
    for _key, _name, obj in parts.table:
        if obj is parts.augment_pipe or obj in parts.real_transforms:
            continue
        fn = plugins.hook(obj, 'resume_from_network')
        if fn is not None:
            fn(data, log)
