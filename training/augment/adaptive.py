"""Adaptive probability controller shared by ADA, APA and any other module with a `p`.

The overfitting heuristic of ADA (Karras et al. 2020, sec. 3): r_t = E[sign(D(x_real))]
over the real batches D saw since the last adjustment. Every `interval` D steps,

    p <- clamp(p + sign(r_t - target) * nimg / (speed_kimg * 1000), 0, p_max)

where nimg is the number of images in those steps (batch_size * interval), so p can cross
[0, 1] in `speed_kimg` thousand images. APA uses the same rule on the sign of D's logits on
its mixed real batch. One controller can drive several modules (they then move together),
or each module can have its own.
"""

import math
import re
from typing import Any, Dict, Iterable, List, Optional

import torch

from torch_utils import training_stats
from training import plugins


class AdaptiveP(plugins.Controller):
    """Moves the `p` buffer of modules toward a target value of a reported statistic.

    A plain object (not part of network pickles); its pending accumulation is part of the
    training state through state_dict()/load_state_dict().

    Args:
        target: value of the statistic to hold (0.6 for ADA and APA).
        interval: number of D steps between adjustments.
        speed_kimg: thousands of images for p to cross the range [0, 1].
        stat: name of the statistic in the stats channel (the loss reports the sign of D's
            raw logits on the real batch as 'Loss/signs/real').
        p_max: upper bound of p.
        name: short name; p is reported as 'Progress/<name>_p'.
    """

    def __init__(self, target: float = 0.6, interval: int = 4, speed_kimg: float = 500,
                 stat: str = 'Loss/signs/real', p_max: float = 1.0, name: str = 'ada'):
        if not isinstance(target, (int, float)) or not math.isfinite(target):
            raise ValueError(f'AdaptiveP: target must be a finite number, got {target!r}')
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'AdaptiveP: interval must be an int >= 1, got {interval!r}')
        if not isinstance(speed_kimg, (int, float)) or not speed_kimg > 0 or not math.isfinite(speed_kimg):
            raise ValueError(f'AdaptiveP: speed_kimg must be a number > 0, got {speed_kimg!r}')
        if not isinstance(p_max, (int, float)) or not 0 <= p_max <= 1:
            raise ValueError(f'AdaptiveP: p_max must be in [0, 1], got {p_max!r}')
        if not isinstance(stat, str) or not stat:
            raise ValueError(f'AdaptiveP: stat must be a statistic name, got {stat!r}')
        if not isinstance(name, str) or not name:
            raise ValueError(f'AdaptiveP: name must be a non-empty string, got {name!r}')
        self.target = float(target)
        self.interval = interval
        self.speed_kimg = float(speed_kimg)
        self.stat = stat
        self.p_max = float(p_max)
        self.name = name
        self._collector = training_stats.Collector(regex=re.escape(stat), keep_previous=False)
        # Pending accumulation since the last adjustment (plain floats: exact resume).
        self.stat_sum = 0.0
        self.stat_num = 0.0
        self.steps = 0
        self.nimg = 0

    def step(self, batch_size: int, modules: Iterable[torch.nn.Module], cur_nimg: Optional[int] = None) -> None:
        """Accounts for one D step; adjusts p of `modules` every `interval` steps.

        Collective when torch.distributed is initialised: every rank must call it after the
        same D step, so that the statistic (and hence p) is the same on all ranks.

        Args:
            batch_size: images in this step, over all ranks.
            modules: modules with a scalar `p` buffer, moved together.
            cur_nimg: images shown so far (unused: the rule depends on the statistic only).
        """
        del cur_nimg
        modules = list(modules)
        for m in modules:
            if not isinstance(getattr(m, 'p', None), torch.Tensor):
                raise TypeError(f'AdaptiveP {self.name!r}: module {type(m).__name__} has no p buffer')
        # Sum and count of the statistic, gathered over ranks, in float64.
        self._collector.update()
        num = self._collector.num(self.stat)
        if num > 0:
            self.stat_sum += self._collector.mean(self.stat) * num
            self.stat_num += num
        self.steps += 1
        self.nimg += int(batch_size)

        if self.steps >= self.interval:
            # Without any report in the interval there is nothing to react to.
            if self.stat_num > 0:
                r_t = self.stat_sum / self.stat_num
                direction = (r_t > self.target) - (r_t < self.target)
                adjust = direction * self.nimg / (self.speed_kimg * 1000)
                with torch.no_grad():
                    for m in modules:
                        m.p.copy_((m.p + adjust).clamp(0, self.p_max))
            self.stat_sum, self.stat_num, self.steps, self.nimg = 0.0, 0.0, 0, 0
        if modules:
            training_stats.report0(f'Progress/{self.name}_p', modules[0].p.detach().float())

    def state_dict(self) -> Dict[str, Any]:
        """Pending accumulation as plain numbers (safe for torch.load(weights_only=True))."""
        return dict(stat_sum=float(self.stat_sum), stat_num=float(self.stat_num),
                    steps=int(self.steps), nimg=int(self.nimg))

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores what state_dict() returned."""
        missing = {'stat_sum', 'stat_num', 'steps', 'nimg'} - set(state)
        if missing:
            raise KeyError(f'AdaptiveP {self.name!r}: state lacks {sorted(missing)}')
        self.stat_sum = float(state['stat_sum'])
        self.stat_num = float(state['stat_num'])
        self.steps = int(state['steps'])
        self.nimg = int(state['nimg'])


def controlled_modules(root: Dict[str, torch.nn.Module], paths: List[str]) -> List[torch.nn.Module]:
    """Resolves controller module paths such as 'real_transform' or 'augment.ada'.

    Args:
        root: {first path component: module}, e.g. {'augment': stage, 'real_transform': apa}.
        paths: dotted paths; after the first component, submodule names (AugmentStage names
            its children by their short names).

    Returns:
        The modules, in order.

    Raises:
        KeyError: a path does not name a module with a `p` buffer.
    """
    out = []
    for path in paths:
        head, _, rest = path.partition('.')
        module = root.get(head)
        if module is None:
            raise KeyError(f'Controller module path {path!r}: no {head!r} (known: {", ".join(sorted(k for k, v in root.items() if v is not None))})')
        if rest:
            try:
                module = module.get_submodule(rest)
            except AttributeError:
                raise KeyError(f'Controller module path {path!r}: {head!r} has no submodule {rest!r}') from None
        if not isinstance(getattr(module, 'p', None), torch.Tensor):
            raise KeyError(f'Controller module path {path!r}: {type(module).__name__} has no p buffer')
        out.append(module)
    return out
