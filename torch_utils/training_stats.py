"""A process-wide statistics channel.

Any module reports values by name with `report(name, value)`; the training loop and the
adaptive controllers read them through a `Collector`, which gathers everything reported
since its last `update()` on all ranks. Per name only three moments are kept (count, sum,
sum of squares, in float64), so reporting costs a few tensor ops and never a device sync.

    stats = Collector(regex='Loss/.*')
    ...
    training_stats.report('Loss/G/loss', loss)     # anywhere, any rank
    ...
    stats.update()                                  # all ranks, same moment
    stats['Loss/G/loss'], stats.std('Loss/G/loss')
"""

import re
from typing import Any, Dict, List, Optional

import numpy as np
import torch

import dnnlib
from torch_utils import distributed

# ---------------------------------------------------------------------------------------
# Process state.

_NUM_MOMENTS = 3                 # count, sum, sum of squares
_DTYPE = torch.float64           # accumulation dtype: sums of many float32 values stay exact enough

_rank = 0                        # set by init_multiprocessing()
_sync_device = None              # device for all_reduce; None in a single process
_regexes: List[re.Pattern] = []  # what all Collectors asked for
_enabled_cache: Dict[str, bool] = {}            # name -> matches some Collector's regex
_pending: Dict[str, Dict[torch.device, torch.Tensor]] = {}  # moments not yet synced, per device
_cumulative: Dict[str, torch.Tensor] = {}       # moments synced so far (all ranks), on CPU


def init_multiprocessing(rank: int, sync_device: Optional[torch.device]) -> None:
    """Tells the channel about this process; call once per process before reporting.

    Args:
        rank: This process's rank (only rank 0 reports through `report0`).
        sync_device: Device of the tensors used in all_reduce: None for a single process,
            `torch.device('cpu')` for gloo, this process's CUDA device for nccl.
    """
    global _rank, _sync_device
    _rank = int(rank)
    _sync_device = None if sync_device is None else torch.device(sync_device)


def _is_enabled(name: str) -> bool:
    enabled = _enabled_cache.get(name)
    if enabled is None:
        enabled = any(r.fullmatch(name) for r in _regexes)
        _enabled_cache[name] = enabled
    return enabled


def report(name: str, value: Any) -> Any:
    """Adds `value` to the statistic `name` and returns `value` unchanged.

    Ignored (cheaply) unless some Collector's regex matches `name`.

    Args:
        name: Statistic name, e.g. 'Loss/D/r1'.
        value: A scalar, sequence, NumPy array or tensor; every element counts once.
            An empty value registers the name without adding anything.

    Returns:
        `value`, so calls can wrap expressions.
    """
    if not _is_enabled(name):
        return value
    elems = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value, dtype=np.float64))
    elems = elems.flatten().to(_DTYPE)
    count = torch.full([], float(elems.numel()), dtype=_DTYPE, device=elems.device)
    moments = torch.stack([count, elems.sum(), elems.square().sum()])

    # Accumulate on the value's own device so that no transfer (and no sync) happens here.
    per_device = _pending.setdefault(name, {})
    acc = per_device.get(moments.device)
    if acc is None:
        per_device[moments.device] = moments
    else:
        acc.add_(moments)
    return value


def report0(name: str, value: Any) -> Any:
    """Like `report`, but only rank 0 contributes; other ranks return `value` unchanged.

    Other ranks still register the name (with nothing added) so that every rank syncs
    the same set of names.
    """
    report(name, value if _rank == 0 else [])
    return value


# ---------------------------------------------------------------------------------------
# Synchronisation.

def _resolve_sync_device() -> torch.device:
    if _sync_device is not None:
        return _sync_device
    # Not told: pick what the backend can reduce.
    if torch.distributed.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def _sync(names: List[str]) -> Dict[str, torch.Tensor]:
    """Moves pending moments of `names` into the cumulative totals, summed over ranks.

    Must be called on all ranks with the same `names` in the same order.
    """
    if not names:
        return {}
    local = []
    for name in names:
        local.append(_pending_moments(name))
        for acc in _pending.get(name, {}).values():
            acc.zero_()
    stacked = _sum_over_ranks(torch.stack(local))
    for name, moments in zip(names, stacked):
        if name in _cumulative:
            _cumulative[name] += moments
        else:
            _cumulative[name] = moments.clone()
    return {name: _cumulative[name].clone() for name in names}


def _sum_over_ranks(stacked: torch.Tensor) -> torch.Tensor:
    """All-reduce (sum) of a CPU tensor of moments; identity in a single process."""
    if distributed.get_world_size() > 1:
        reduced = stacked.to(_resolve_sync_device())
        torch.distributed.all_reduce(reduced)
        return reduced.cpu()
    return stacked


def _pending_moments(name: str) -> torch.Tensor:
    """This process's moments of `name` reported but not yet synced, on the CPU."""
    moments = torch.zeros(_NUM_MOMENTS, dtype=_DTYPE)
    for acc in _pending.get(name, {}).values():
        moments += acc.cpu()
    return moments


def _all_rank_names(local_names: List[str]) -> List[str]:
    """Union of `local_names` over ranks, in one order on every rank."""
    if distributed.get_world_size() > 1:
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, sorted(local_names))
        return sorted(set(n for names in gathered for n in names))
    return sorted(local_names)


def _reset() -> None:
    """Forgets all Collectors and reported values (for tests and fresh processes)."""
    global _rank, _sync_device
    _rank, _sync_device = 0, None
    _regexes.clear()
    _enabled_cache.clear()
    _pending.clear()
    _cumulative.clear()


# ---------------------------------------------------------------------------------------
# Collector.

class Collector:
    """Reads the statistics reported since the previous `update()`.

    Args:
        regex: Names to collect (re.fullmatch). Creating the Collector enables reporting
            for these names.
        keep_previous: Names with no new reports keep the value of the last update that
            had some; otherwise they drop out of `names()`.
    """

    def __init__(self, regex: str = '.*', keep_previous: bool = True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        # Totals seen at our last update; starting from the present totals means values
        # synced before this Collector existed are not attributed to its first update.
        self._cumulative_at_update: Dict[str, torch.Tensor] = {
            name: total.clone() for name, total in _cumulative.items() if self._regex.fullmatch(name)}
        # Values reported before this Collector existed but not synced yet (another Collector
        # enabled their names) are not ours either: the first update discounts them.
        self._reported_before: Optional[Dict[str, torch.Tensor]] = {
            name: _pending_moments(name) for name in _pending if self._regex.fullmatch(name)}
        self._moments: Dict[str, torch.Tensor] = {}               # what we currently expose
        _regexes.append(self._regex)
        _enabled_cache.clear()

    def update(self) -> None:
        """Gathers everything reported since the last update, on all ranks.

        Collective when torch.distributed is initialised: every rank must call it.
        """
        local = [n for n in set(_pending) | set(_cumulative) if self._regex.fullmatch(n)]
        names = _all_rank_names(local)
        if self._reported_before is not None:
            zeros = torch.zeros(_NUM_MOMENTS, dtype=_DTYPE)
            before = _sum_over_ranks(torch.stack([self._reported_before.get(n, zeros) for n in names])) \
                if names else []
            for name, moments in zip(names, before):
                self._cumulative_at_update[name] = self._cumulative_at_update.get(name, zeros) + moments
            self._reported_before = None
        totals = _sync(names)
        if not self._keep_previous:
            self._moments = {}
        for name, total in totals.items():
            delta = total - self._cumulative_at_update.get(name, torch.zeros_like(total))
            self._cumulative_at_update[name] = total
            if delta[0] > 0:
                self._moments[name] = delta

    def names(self) -> List[str]:
        """Names that have a value after the last update, sorted."""
        return sorted(self._moments)

    def num(self, name: str) -> int:
        """Number of values behind `name` (0 if none)."""
        moments = self._moments.get(name)
        return 0 if moments is None else int(moments[0])

    def mean(self, name: str) -> float:
        """Mean of the values behind `name` (NaN if none)."""
        moments = self._moments.get(name)
        if moments is None:
            return float('nan')
        return float(moments[1] / moments[0])

    def std(self, name: str) -> float:
        """Population standard deviation of the values behind `name` (NaN if none)."""
        moments = self._moments.get(name)
        if moments is None:
            return float('nan')
        mean = float(moments[1] / moments[0])
        var = float(moments[2] / moments[0]) - mean ** 2
        return float(np.sqrt(max(var, 0.0)))

    def as_dict(self) -> Dict[str, dnnlib.EasyDict]:
        """{name: EasyDict(num, mean, std)} for every name in `names()`."""
        return {name: dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
                for name in self.names()}

    def __getitem__(self, name: str) -> float:
        return self.mean(name)
