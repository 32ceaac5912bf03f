"""LeCam regularisation (Tseng et al., CVPR 2021, "Regularizing Generative Adversarial
Networks under Limited Data").

Two anchors follow D's mean output: alpha_R on the real batches, alpha_F on the generated
ones (exponential moving averages with decay 0.99, bias-corrected as the official
implementation does). D's loss gets

    lambda * ( E_x[(D(x) - alpha_F)^2] + E_z[(D(G(z)) - alpha_R)^2] )

which pulls D's real outputs toward where its fake outputs are and vice versa, keeping the
two from drifting apart when D starts to memorise a small training set (the paper links
the regularised objective to the LeCam divergence). `hinge=True` uses the form of the
official StyleGAN2 code, relu(D(x) - alpha_F)^2 + relu(alpha_R - D(G(z)))^2, which only
penalises outputs beyond the opposite anchor. Combinable with every augmentation.

How it fits our loop: the penalty of every micro-batch of a step uses the anchors as they
were at the start of the step; `end_step` then moves them once with the step's mean
outputs, gathered over all micro-batches of all ranks in slot order. Results thus do not
depend on the number of processes. The first step has no anchors yet and adds no penalty.
"""

from typing import Any, Dict, Optional

import torch

from torch_utils import cli, training_stats
from training import plugins
from training.methods import Option

LECAM_CLASS = 'training.heads.lecam.LeCam'
DEFAULT_DECAY = 0.99


class LeCam(plugins.LossTerm):
    """The LeCam loss term (see the module docstring).

    Args:
        weight: lambda.
        decay: EMA decay of the anchors.
        hinge: Use the official code's one-sided (relu) form.
        device: Device of the anchors.
        G, D, training_set: Given by the training loop; not used.
    """

    name = 'lecam'

    def __init__(self, weight: float, decay: float = DEFAULT_DECAY, hinge: bool = False, device: Any = 'cpu',
                 G: Any = None, D: Any = None, training_set: Any = None):
        del G, D, training_set
        if not weight > 0:
            raise ValueError(f'LeCam: weight must be positive, got {weight}')
        if not 0 < decay < 1:
            raise ValueError(f'LeCam: decay must be in (0, 1), got {decay}')
        self.weight = float(weight)
        self.decay = float(decay)
        self.hinge = bool(hinge)
        self.device = torch.device(device)
        # Biased EMAs of the mean outputs and the number of updates (for the bias correction).
        self.ema = {'real': torch.zeros([], dtype=torch.float64, device=self.device),
                    'fake': torch.zeros([], dtype=torch.float64, device=self.device)}
        self.updates = 0
        self._pending: Dict[str, Dict[int, torch.Tensor]] = dict(real={}, fake={})

    def anchor(self, kind: str) -> Optional[torch.Tensor]:
        """The bias-corrected anchor of D's outputs on `kind` images, None before the first update."""
        if self.updates == 0:
            return None
        return self.ema[kind] / (1 - self.decay ** self.updates)

    def d_loss(self, kind: str, logits: torch.Tensor, slot: int = 0, **kwargs: Any) -> Optional[torch.Tensor]:
        """Per-sample penalty of D's outputs on reals (against alpha_F) or fakes (against alpha_R)."""
        del kwargs
        self._pending[kind][int(slot)] = logits.detach().float().mean().view(1)
        other = self.anchor('fake' if kind == 'real' else 'real')
        if other is None:
            return None
        out = logits.flatten(1).mean(1)
        diff = out - other.to(out.dtype)
        if self.hinge:
            diff = torch.relu(diff if kind == 'real' else -diff)
        penalty = diff.square()
        training_stats.report(f'Loss/lecam/penalty_{kind}', penalty)
        return penalty * self.weight

    @torch.no_grad()
    def end_step(self, cur_nimg: int) -> None:
        """Moves both anchors with the step's mean outputs (collective when distributed)."""
        del cur_nimg
        means = {}
        for kind in ('real', 'fake'):
            pending = self._pending[kind]
            num_slots = (max(pending) + 1) if pending else 0
            table = plugins.gather_slots(pending, _max_slots(num_slots, self.device), self.device)
            self._pending[kind] = {}
            if table is None:
                return
            means[kind] = table.double().mean()
        for kind, mean in means.items():
            self.ema[kind].mul_(self.decay).add_(mean * (1 - self.decay))
        self.updates += 1
        training_stats.report0('LeCam/anchor_real', float(self.anchor('real')))
        training_stats.report0('LeCam/anchor_fake', float(self.anchor('fake')))

    def get_state(self, ctx: plugins.StateContext) -> Dict[str, Any]:
        if any(self._pending.values()):
            raise RuntimeError('LeCam.get_state: outputs of an unfinished step are pending; save after end_step')
        return {'ema_real': self.ema['real'].cpu().clone(), 'ema_fake': self.ema['fake'].cpu().clone(),
                'updates': int(self.updates)}

    def set_state(self, state: Dict[str, Any], ctx: plugins.StateContext) -> None:
        self.ema = {'real': state['ema_real'].to(self.device, torch.float64).clone(),
                    'fake': state['ema_fake'].to(self.device, torch.float64).clone()}
        self.updates = int(state['updates'])
        self._pending = dict(real={}, fake={})


def _max_slots(local: int, device: torch.device) -> int:
    """The number of slots over all ranks (each rank knows only the slots it ran)."""
    from torch_utils import distributed  # pylint: disable=import-outside-toplevel
    if distributed.get_world_size() <= 1:
        return local
    n = torch.tensor([float(local)], device=device)
    torch.distributed.all_reduce(n, op=torch.distributed.ReduceOp.MAX)
    return int(n.item())


# ---------------------------------------------------------------------------------------
# The method: its options and its part of the config tree (see training/methods.py).

TITLE = 'LeCam regularisation (--lecam)'
OPTIONS = [
    Option('--lecam', cli.FiniteFloatRange(min=0, min_open=True), metavar='LAMBDA', tag='-lecam{}',
           help='Add LeCam regularisation with this weight (the official StyleGAN2 scripts use 3e-7 at '
                '256x256 and 1e-6 on CIFAR-10; the paper\'s BigGAN runs 0.3)'),
    Option('--lecam-decay', cli.FiniteFloatRange(min=0, max=1, min_open=True, max_open=True), default=DEFAULT_DECAY,
           requires='lecam', tag='-lecamdecay{}', help='EMA decay of the LeCam anchors'),
    Option('--lecam-hinge', is_bool=True, requires='lecam', tag='-lecamhinge',
           help="One-sided (relu) form of the official code instead of the paper's squares"),
]


def configure(b, o) -> None:
    if o.lecam is not None:
        b.add_loss_term(dict(class_name=LECAM_CLASS, weight=float(o.lecam), decay=float(o.lecam_decay),
                             hinge=bool(o.lecam_hinge)))
