"""The plug-in contract: what the loss and the loop call on a method's run-time parts.

A method (see training/methods.py) adds parts to the config tree; the loop builds them and
keeps them in one `ComponentTable`, which build, resume, snapshots, the training state and
the multi-process consistency check all iterate. There are four kinds of part, each a base
class here with no-op defaults, so a part defines only what it uses:

- augment stage (`augment_kwargs`): an nn.Module images -> images in front of D for every
  image D sees (ADA, DiffAugment); one stage, holding its augmentations as named children.
- real-batch transform (`real_transform_kwargs`, one or a list): changes the real batch
  before the augment stage (APA). Transforms chain in order. `observe_fakes(slot, images)`
  is called with the detached output of every G main pass, so a transform can keep what it
  needs (APA keeps the latest fakes of each micro-batch).
- loss term (`heads_kwargs`): adds terms to the D and G main passes (InsGen, vision-aided,
  LeCam). `d_loss(**p)` / `g_loss(**p)` receive every field of the pass (see `LossTerm`)
  and return a per-sample or scalar tensor, or None.
- controller (`controllers`): moves the `p` of modules it is pointed at by path (the
  adaptive ADA/APA heuristic, InsGen's linear schedule).

Common hooks (all optional): `end_step(cur_nimg)` once per step on every rank (collectives
allowed), `get_state(ctx)` / `set_state(state, ctx)` for the training state (collective:
`ctx` says which micro-batches this rank runs), `trainable_modules()` (each gets an optimizer
in D's main phase), `network_modules()` (stored in network pickles), `resume_from_network(
data, log)` (called with a loaded network pickle), `consistency_modules()` (checked to be
equal on every rank at snapshots).
"""

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from torch_utils import distributed

KINDS = ('augment', 'real_transform', 'loss_term', 'controller')


class StateContext:
    """What `get_state` / `set_state` need to know about the run's micro-batches.

    Attributes:
        num_slots: Micro-batches per step over all ranks.
        my_slots: The micro-batches this rank runs.
        batch_gpu: Images per micro-batch.
        device: This rank's device.
    """

    def __init__(self, num_slots: int, my_slots: Sequence[int], batch_gpu: int, device: torch.device):
        self.num_slots = int(num_slots)
        self.my_slots = list(my_slots)
        self.batch_gpu = int(batch_gpu)
        self.device = torch.device(device)


class Plugin:
    """Hooks shared by every kind of part; every default does nothing."""

    name: str = ''

    def end_step(self, cur_nimg: int) -> None:
        """After every step's optimizer and EMA updates, on every rank (collectives allowed)."""

    def get_state(self, ctx: StateContext) -> Any:
        """What exact resume needs (collective). Default: `state_dict()` if the part has one."""
        fn = getattr(self, 'state_dict', None)
        return fn() if callable(fn) else None

    def set_state(self, state: Any, ctx: StateContext) -> None:
        """Restores what `get_state` returned. Default: `load_state_dict(state)`."""
        fn = getattr(self, 'load_state_dict', None)
        if callable(fn) and state is not None:
            fn(state)

    def trainable_modules(self) -> Dict[str, torch.nn.Module]:
        """{key: module} trained in D's main phase, each with its own optimizer."""
        return {}

    def network_modules(self) -> Dict[str, torch.nn.Module]:
        """{pickle key: module} stored in network snapshots."""
        return {}

    def resume_from_network(self, data: Dict[str, Any], log: Callable[..., None] = print) -> None:
        """Takes what it can from a loaded network pickle (G, D and G_ema are already copied)."""

    def consistency_modules(self) -> Dict[str, torch.nn.Module]:
        """{label: module} that must be equal on every rank (checked at snapshots)."""
        return dict(self.network_modules())


class RealTransform(Plugin):
    """Changes the real batch before the augment stage (e.g. APA)."""

    def observe_fakes(self, slot: int, images: torch.Tensor) -> None:
        """The detached images of the G main pass of micro-batch `slot`."""

    def transform_reals(self, reals: torch.Tensor, slot: int) -> torch.Tensor:
        """The real batch D's real pass sees (and R1 is taken on)."""
        return reals


class LossTerm(Plugin):
    """Adds terms to the main D and G passes.

    Every call receives all of these keywords (accept **kwargs for those not used):
    kind ('real' or 'fake', D only), img (the image D saw, after the augment stage), raw
    (the same image before the augment stage: G's output, or the real batch after the
    real-batch transforms; in the G pass gradients reach G through it), c (labels), z
    (latents of generated images, None for reals), logits (D's [N, 1] output), features
    (D's map before its epilogue), cur_nimg, slot (micro-batch index within the step).
    """

    def d_loss(self, **kwargs: Any) -> Optional[torch.Tensor]:
        """Term of D's main pass on reals or fakes (per sample or scalar), or None."""
        return None

    def g_loss(self, **kwargs: Any) -> Optional[torch.Tensor]:
        """Term of G's main pass (per sample or scalar), or None."""
        return None


class Controller(Plugin):
    """Moves the `p` buffer of the modules it drives; `step` runs after every step."""

    def step(self, batch_size: int, modules: Sequence[torch.nn.Module], cur_nimg: Optional[int] = None) -> None:
        """Accounts for one step (collective when distributed)."""
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        del state


# ---------------------------------------------------------------------------------------
# Hooks through the table, for parts that do not derive from the base classes (older
# third-party heads): the same defaults, looked up once.

def hook(obj: Any, name: str) -> Optional[Callable[..., Any]]:
    """`obj.<name>` if the part defines it (as a method of its own or of a base class here)."""
    fn = getattr(obj, name, None)
    return fn if callable(fn) else None


def get_state(obj: Any, ctx: StateContext) -> Any:
    fn = hook(obj, 'get_state')
    if fn is not None:
        return fn(ctx)
    if hook(obj, 'state_dict') is not None:
        return obj.state_dict()
    return None


def set_state(obj: Any, state: Any, ctx: StateContext) -> None:
    fn = hook(obj, 'set_state')
    if fn is not None:
        fn(state, ctx)
    elif hook(obj, 'load_state_dict') is not None and state is not None:
        obj.load_state_dict(state)


def network_modules(obj: Any, name: str) -> Dict[str, torch.nn.Module]:
    fn = hook(obj, 'network_modules')
    if fn is not None:
        return dict(fn())
    return {name: obj} if isinstance(obj, torch.nn.Module) else {}


def trainable_modules(obj: Any, name: str) -> List[Tuple[str, torch.nn.Module]]:
    """(optimizer name, module) pairs with parameters: `trainable_modules()` when the part
    defines one, else a part that is a module is trained as a whole."""
    fn = hook(obj, 'trainable_modules')
    if fn is not None:
        parts = [(f'{name}.{key}', module) for key, module in fn().items()]
    elif isinstance(obj, torch.nn.Module):
        parts = [(name, obj)]
    else:
        parts = []
    return [(n, m) for n, m in parts if any(True for _ in m.parameters())]


# ---------------------------------------------------------------------------------------
# The table.

class ComponentTable:
    """The run's parts by kind and unique name, in build order."""

    def __init__(self):
        self._entries: Dict[str, Tuple[str, str, Any]] = {}

    @staticmethod
    def key(kind: str, name: str) -> str:
        return f'{kind}/{name}'

    def add(self, kind: str, name: str, obj: Any) -> Any:
        """Adds a part; two parts of one kind with one name are an error naming both."""
        if kind not in KINDS:
            raise ValueError(f'unknown component kind {kind!r}; expected one of {", ".join(KINDS)}')
        if not isinstance(name, str) or not name:
            raise ValueError(f'a {kind} needs a non-empty name, got {name!r} ({type(obj).__name__})')
        key = self.key(kind, name)
        if key in self._entries:
            other = self._entries[key][2]
            raise ValueError(f'two {kind} parts are named {name!r} ({type(other).__name__} and '
                             f'{type(obj).__name__}); give one of them another "name"')
        self._entries[key] = (kind, name, obj)
        return obj

    def __iter__(self) -> Iterator[Tuple[str, str, Any]]:
        """(key, name, part) in build order."""
        for key, (_kind, name, obj) in self._entries.items():
            yield key, name, obj

    def of(self, kind: str) -> List[Tuple[str, Any]]:
        """(name, part) of one kind, in build order."""
        return [(name, obj) for k, name, obj in self._entries.values() if k == kind]

    def parts(self, kind: str) -> List[Any]:
        return [obj for _name, obj in self.of(kind)]

    def keys(self) -> List[str]:
        return list(self._entries)

    def get(self, key: str) -> Any:
        return self._entries[key][2]

    def call_all(self, hook_name: str, *args: Any) -> None:
        """Calls `hook_name(*args)` on every part that defines it, in build order."""
        for _key, _name, obj in self:
            fn = hook(obj, hook_name)
            if fn is not None:
                fn(*args)


# ---------------------------------------------------------------------------------------
# A helper for parts that keep per-micro-batch tensors.

@torch.no_grad()
def gather_slots(per_slot: Dict[int, torch.Tensor], num_slots: int, device: torch.device) -> Optional[torch.Tensor]:
    """Stacks {slot: tensor} of all ranks into one [num_slots, ...] tensor in slot order.

    Collective when torch.distributed is initialised (every rank calls it; each holds the
    slots it ran). Returns None when no rank holds any slot. Slots nobody holds are zero.
    """
    multi = distributed.get_world_size() > 1
    held = sorted(per_slot)
    ref = per_slot[held[0]] if held else None
    shape = torch.tensor(list(ref.shape) if ref is not None else [], dtype=torch.float64, device=device)
    dims = torch.tensor([float(len(shape)) if held else -1.0], dtype=torch.float64, device=device)
    if multi:
        torch.distributed.all_reduce(dims, op=torch.distributed.ReduceOp.MAX)
    if dims.item() < 0:
        return None
    full_shape = torch.zeros([int(dims.item())], dtype=torch.float64, device=device)
    if held:
        full_shape.copy_(shape)
    if multi:
        torch.distributed.all_reduce(full_shape, op=torch.distributed.ReduceOp.MAX)
    dtype = ref.dtype if ref is not None else torch.float32
    table = torch.zeros([num_slots] + [int(s) for s in full_shape.tolist()], device=device, dtype=dtype)
    for slot in held:
        table[slot] = per_slot[slot].to(device)
    if multi:
        # Adding zeros is exact: every rank ends with the same bits.
        torch.distributed.all_reduce(table)
    return table
