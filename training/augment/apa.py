"""APA: adaptive pseudo augmentation (Jiang et al. 2021), the real-batch transform.

In every D pass over real images (the main D step and the R1 step) each real image is
replaced, independently and with probability p, by the matching image of the generator's
latest batch (detached). The mixed batch is what D sees, what the real-branch loss uses and
what R1 is computed on. When D overfits, its sign statistic on this batch rises and the
controller (training.augment.adaptive.AdaptiveP) raises p, so D is shown more "reals" that
are really fakes; this deceives an overconfident D without any extra generator pass.
"""

from typing import Any, Dict, Optional

import math
import torch

from torch_utils import netfile, training_stats
from training import plugins


@netfile.register
class PseudoAugment(torch.nn.Module, plugins.RealTransform):
    """Replaces real images by pseudo (generated, detached) images with probability p.

    As a real-batch transform of the training loop it keeps the latest generated batch of
    each micro-batch (`observe_fakes`) and mixes it into that micro-batch's reals
    (`transform_reals`); the kept batches are part of its training state, so a resumed
    run mixes exactly the images the uninterrupted run would have. Called directly,
    `forward(reals, pseudo)` mixes a given pseudo batch.

    Args:
        p: initial deception probability (the persistent `p` buffer).
    """

    name = 'apa'

    def __init__(self, p: float = 0.0):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 <= p <= 1:
            raise ValueError(f'PseudoAugment: p must be a number in [0, 1], got {p!r}')
        self.register_buffer('p', torch.tensor(float(p), dtype=torch.float32))
        self._fakes: Dict[int, torch.Tensor] = {}   # slot -> detached images of its last G main pass

    # Real-batch transform of the training loop.
    def observe_fakes(self, slot: int, images: torch.Tensor) -> None:
        self._fakes[int(slot)] = images.detach()

    def transform_reals(self, reals: torch.Tensor, slot: int) -> torch.Tensor:
        return self(reals, self._fakes.get(int(slot)))

    def get_state(self, ctx: plugins.StateContext) -> Dict[str, Any]:
        """p and the latest fakes of every micro-batch in slot order ([num_slots * batch_gpu,
        C, H, W] on the CPU, None before the first G main pass). Collective."""
        table = plugins.gather_slots(self._fakes, ctx.num_slots, ctx.device)
        return {'p': self.p.detach().cpu().clone(), 'fakes': None if table is None else table.flatten(0, 1).cpu()}

    def set_state(self, state: Dict[str, Any], ctx: plugins.StateContext) -> None:
        """Restores `get_state`; each rank keeps the fakes of its own micro-batches."""
        with torch.no_grad():
            self.p.copy_(torch.as_tensor(state['p']).to(self.p.device))
        self._fakes = {}
        fakes = state.get('fakes')
        if fakes is None or fakes.shape[0] % ctx.batch_gpu != 0:
            return
        chunks = fakes.to(ctx.device).split(ctx.batch_gpu)
        for slot in ctx.my_slots:
            if slot < len(chunks):
                self._fakes[slot] = chunks[slot].clone()

    def forward(self, reals: torch.Tensor, pseudo: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mixes the real batch with the pseudo batch.

        Args:
            reals: real images [N, C, H, W].
            pseudo: the latest generated images, same shape (detached here), or None (no
                generator output yet): then `reals` is returned unchanged.

        Returns:
            [N, C, H, W]: per sample, the pseudo image with probability p, else the real one.
            Reports the realised fraction of replaced samples as 'Augment/apa/replaced'.
        """
        if pseudo is None:
            return reals
        if not isinstance(reals, torch.Tensor) or reals.ndim != 4:
            raise ValueError('PseudoAugment: reals must be a 4-D tensor [N, C, H, W], got '
                             f'{tuple(reals.shape) if isinstance(reals, torch.Tensor) else type(reals).__name__}')
        if not isinstance(pseudo, torch.Tensor) or tuple(pseudo.shape) != tuple(reals.shape):
            raise ValueError(f'PseudoAugment: pseudo images must have the shape of the real batch '
                             f'{tuple(reals.shape)}, got '
                             f'{tuple(pseudo.shape) if isinstance(pseudo, torch.Tensor) else type(pseudo).__name__}')
        n = reals.shape[0]
        # One uniform per sample, compared with p on the device: no host sync.
        replace = torch.rand([n], device=reals.device) < self.p.to(reals.device)
        training_stats.report('Augment/apa/replaced', replace.float())
        pseudo = pseudo.detach().to(device=reals.device, dtype=reals.dtype)
        return torch.where(replace[:, None, None, None], pseudo, reals)
