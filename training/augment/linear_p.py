"""InsGen's linear p schedule (`--ada_linear` of the InsGen code): instead of following D's
outputs, the augmentation p rises linearly from 0 at the start of training to the target at
its end, p = target * cur_nimg / total_nimg, updated every `interval` steps. InsGen
recommends it below 5k training images. With `--ada-linear=1` it replaces the rule of the
run's adaptive APA/ADA controllers (the same modules, the same target).
"""

from typing import Any, Dict, Optional, Sequence

import torch

from torch_utils import training_stats
from training import plugins
from training.methods import ConfigError, Option

LINEAR_CLASS = 'training.augment.linear_p.LinearP'


class LinearP(plugins.Controller):
    """Sets `p` of its modules to target * cur_nimg / (total_kimg * 1000), every `interval` steps.

    Args:
        target: p at the end of training.
        total_kimg: Length of training.
        interval: Steps between updates.
        name: p is reported as 'Progress/<name>_p'.
    """

    def __init__(self, target: float = 0.6, total_kimg: float = 25000, interval: int = 4, name: str = 'ada'):
        if not 0 <= target <= 1:
            raise ValueError(f'LinearP: target must be in [0, 1], got {target!r}')
        if not total_kimg > 0:
            raise ValueError(f'LinearP: total_kimg must be positive, got {total_kimg!r}')
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'LinearP: interval must be an int >= 1, got {interval!r}')
        self.target = float(target)
        self.total_kimg = float(total_kimg)
        self.interval = interval
        self.name = name
        self.steps = 0

    def value(self, cur_nimg: int) -> float:
        return min(self.target * cur_nimg / (self.total_kimg * 1000), self.target)

    def step(self, batch_size: int, modules: Sequence[torch.nn.Module], cur_nimg: Optional[int] = None) -> None:
        del batch_size
        if cur_nimg is None:
            raise ValueError('LinearP.step needs cur_nimg (images shown so far, after this step)')
        modules = list(modules)
        self.steps += 1
        if self.steps >= self.interval:
            with torch.no_grad():
                for m in modules:
                    m.p.fill_(self.value(cur_nimg))
            self.steps = 0
        if modules:
            training_stats.report0(f'Progress/{self.name}_p', modules[0].p.detach().float())

    def state_dict(self) -> Dict[str, Any]:
        return {'steps': int(self.steps)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.steps = int(state['steps'])


# ---------------------------------------------------------------------------------------
# The method: its option and its part of the config tree (see training/methods.py).

TITLE = "InsGen's linear p schedule (--ada-linear)"
OPTIONS = [
    Option('--ada-linear', is_bool=True, tag='-adalinear',
           help='Raise the adaptive APA/ADA p linearly from 0 to --target over the run instead of '
                "following D's outputs (InsGen's --ada_linear; recommended there below 5k images)"),
]


def configure(b, o) -> None:
    if not o.ada_linear:
        return
    ctrls = b.controllers(role='augment_p')
    if not ctrls:
        raise ConfigError('--ada-linear', 'needs an adaptive p to schedule: --aug=apa, --aug=ada or --ada-own-p')
    for ctrl in ctrls:
        b.replace_controller(ctrl, dict(class_name=LINEAR_CLASS, target=ctrl.target, interval=ctrl.interval,
                                        total_kimg=float(b.facts.total_kimg), name=ctrl.name))
