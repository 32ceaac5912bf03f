"""StyleGAN2 loss: non-saturating logistic loss with lazy R1 and path-length regularisation.

The training loop calls `accumulate_gradients` once per micro-batch ("slot") and phase; the
loss runs the networks, reports its statistics and back-propagates. It knows no method:
the parts it is given follow the contract of training/plugins.py:

- `augment_pipe`: images -> images, applied to everything D sees (ADA, DiffAugment, ...).
- `real_transforms`: each sees the detached output of every G main pass
  (`observe_fakes(slot, images)`) and changes the real batch before D, in order
  (`transform_reals(reals, slot)`; APA).
- `heads`: loss terms (InsGen, vision-aided, LeCam) with `d_loss(**fields)` (kind 'real' or
  'fake', in the D main passes) and `g_loss(**fields)`, each given every field of the pass
  (see `plugins.LossTerm`) and returning a tensor (per sample or scalar) or None, added to
  the phase's loss and reported as Loss/<name>/<method>[_<kind>].

Running averages (w_avg of the mapping network, the path-length mean) are updated once per
phase from the per-slot means in slot order (`end_phase`), so they come out the same
whatever the number of processes and, with one process, equal the established per-call
updates: w_avg moves on every mapping call of a training pass (G main, path length and the
D phase's generated batch; not style mixing's second call), the path-length mean once per
path-length pass. As in the established loss, the path-length penalty is taken against the
mean moved by the batch mean *inside* the graph, and the lazy regularisers back-propagate
`output * 0 + penalty`, so parameters off the penalty's path (toRGB biases in G reg, D's
output bias in D reg) get a zero gradient and their Adam state advances with the others.
"""

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import distributed, training_stats

G_PHASES = ('Gmain', 'Greg', 'Gboth')
D_PHASES = ('Dmain', 'Dreg', 'Dboth')


def _distributed() -> bool:
    return distributed.get_world_size() > 1


def path_length_penalty(pl_lengths: torch.Tensor, pl_mean: torch.Tensor, decay: float) -> tuple:
    """Path-length penalty (StyleGAN2 paper, eq. 4) against the running mean moved by this
    batch.

    The moved mean `pl_mean + decay * (mean(pl_lengths) - pl_mean)` stays in the graph, as in
    the established loss: the gradient of penalty_j with respect to pl_lengths carries the
    `-decay * mean(...)` term of the batch mean, not only `2 (l_j - a)`.

    Args:
        pl_lengths: Per-sample path lengths [N] (in the graph).
        pl_mean: The running mean before this batch (a buffer, not differentiated).
        decay: Weight of the batch mean in the moved mean.

    Returns:
        (penalty [N], detached batch mean of pl_lengths for the running-mean update).
    """
    moved = pl_mean.lerp(pl_lengths.mean(), decay)
    return (pl_lengths - moved).square(), pl_lengths.detach().mean()


def _backward(loss: torch.Tensor, gain: float) -> None:
    """Back-propagates gain * loss (nothing to do when no trainable tensor is involved,
    e.g. a network evaluated with all its parameters frozen)."""
    if loss.requires_grad:
        loss.mul(gain).backward()


class StyleGAN2Loss:
    """The StyleGAN2 losses (Karras et al. 2020, "Analyzing and Improving the Image Quality
    of StyleGAN", sec. 2.2 and 3.2) with pluggable augmentation and heads.

    Args:
        device: Device of the networks.
        G: Generator (with `mapping` and `synthesis`).
        D: Discriminator (`D(img, c, return_features=...)`).
        augment_pipe: Module applied to every image D sees, or None.
        real_transforms: Real-batch transforms, applied in order (see the module docstring).
        heads: Loss terms (see the module docstring).
        real_transform: One more real-batch transform (appended to `real_transforms`).
        r1_gamma: R1 weight; 0 disables R1.
        style_mixing_prob: Probability of mixing two latents in a G batch.
        pl_weight: Path-length regularisation weight; 0 disables it.
        pl_batch_shrink: The path-length pass uses batch // pl_batch_shrink samples.
        pl_decay: Decay of the running path-length mean.
    """

    def __init__(self, device: torch.device, G: torch.nn.Module, D: torch.nn.Module,
                 augment_pipe: Optional[torch.nn.Module] = None, real_transforms: Sequence[Any] = (),
                 heads: Sequence[Any] = (), r1_gamma: float = 10, style_mixing_prob: float = 0.9,
                 pl_weight: float = 2, pl_batch_shrink: int = 2, pl_decay: float = 0.01,
                 real_transform: Optional[Any] = None):
        if pl_batch_shrink < 1:
            raise ValueError(f'StyleGAN2Loss: pl_batch_shrink must be >= 1, got {pl_batch_shrink}')
        if not 0 <= style_mixing_prob <= 1:
            raise ValueError(f'StyleGAN2Loss: style_mixing_prob must be in [0, 1], got {style_mixing_prob}')
        self.device = torch.device(device)
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.real_transforms = list(real_transforms) + ([real_transform] if real_transform is not None else [])
        for t in self.real_transforms:
            if not callable(getattr(t, 'transform_reals', None)):
                raise TypeError(f'StyleGAN2Loss: real-batch transform {type(t).__name__} has no '
                                f'transform_reals(reals, slot) (see training/plugins.py)')
        self.heads = list(heads)
        self.r1_gamma = float(r1_gamma)
        self.style_mixing_prob = float(style_mixing_prob)
        self.pl_weight = float(pl_weight)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        self.pl_mean = torch.zeros([], device=self.device)
        self._pending_w: Dict[int, List[torch.Tensor]] = {}  # slot -> mean w of each mapping call, in order
        self._pending_pl: Dict[int, torch.Tensor] = {}     # slot -> mean path length of this phase

    # -----------------------------------------------------------------------------------
    # Network passes.

    def run_G(self, z: torch.Tensor, c: torch.Tensor, slot: Optional[int] = None) -> tuple:
        """Generates images with style mixing; with `slot`, records the batch mean of w for the
        w_avg update (the second, style-mixing latent is not tracked).

        Returns:
            (img, ws).
        """
        ws = self.G.mapping(z, c)
        if slot is not None and self._tracks_w_avg():
            self._pending_w.setdefault(slot, []).append(ws[:, 0].detach().mean(dim=0))
        if self.style_mixing_prob > 0:
            # Mixing regularisation: from a random layer on, the ws of a second latent.
            num_ws = ws.shape[1]
            cutoff = torch.randint(1, num_ws, [], device=ws.device) if num_ws > 1 else \
                torch.full([], num_ws, device=ws.device, dtype=torch.int64)
            mix = torch.rand([], device=ws.device) < self.style_mixing_prob
            cutoff = torch.where(mix, cutoff, torch.full_like(cutoff, num_ws))
            ws2 = self.G.mapping(torch.randn_like(z), c)
            take2 = (torch.arange(num_ws, device=ws.device) >= cutoff).view(1, num_ws, 1)
            ws = torch.where(take2, ws2, ws)
        img = self.G.synthesis(ws)
        return img, ws

    def _tracks_w_avg(self) -> bool:
        mapping = self.G.mapping
        return getattr(mapping, 'w_avg_beta', None) is not None and hasattr(mapping, 'w_avg')

    def run_D(self, img: torch.Tensor, c: torch.Tensor) -> tuple:
        """Scores images through the augment stage; features only when heads need them.

        Returns:
            (logits [N, 1], features or None, the image D saw).
        """
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        if self.heads:
            logits, features = self.D(img, c, return_features=True)
        else:
            logits, features = self.D(img, c), None
        return logits, features, img

    def _head_terms(self, method: str, terms: Dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
        """Sum of the heads' loss terms (each reported as Loss/<head>/<method>[_kind])."""
        total = torch.zeros([], device=self.device)
        for index, head in enumerate(self.heads):
            fn = getattr(head, method, None)
            if fn is None:
                continue
            value = fn(**kwargs)
            if value is None:
                continue
            name = getattr(head, 'name', f'head{index}')
            key = f'Loss/{name}/{method}' + (f'_{kwargs["kind"]}' if 'kind' in kwargs else '')
            training_stats.report(key, value)
            terms[key] = value.detach().mean()
            total = total + value.mean()
        return total

    # -----------------------------------------------------------------------------------
    # One micro-batch of one phase.

    def accumulate_gradients(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor,
                             gen_z: torch.Tensor, gen_c: torch.Tensor, gain: float, cur_nimg: int,
                             slot: int = 0) -> Dict[str, torch.Tensor]:
        """Runs one phase on one micro-batch and adds gain * d(loss) to the gradients.

        Args:
            phase: 'Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg' or 'Dboth'.
            real_img: Real images [N, C, H, W] in [-1, 1].
            real_c: Their labels [N, c_dim].
            gen_z: Latents [N, z_dim] for the generated images.
            gen_c: Labels [N, c_dim] for the generated images.
            gain: Loss multiplier (the phase interval for lazy regularisation).
            cur_nimg: Images shown so far (for heads with warm-up).
            slot: Index of this micro-batch within the step.

        Returns:
            {statistic name: detached scalar} of the loss terms computed, for finite checks.
        """
        if phase not in G_PHASES + D_PHASES:
            raise ValueError(f'Unknown phase {phase!r}; expected one of {", ".join(G_PHASES + D_PHASES)}')
        do_Gmain = phase in ('Gmain', 'Gboth')
        do_Gpl = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        do_Dmain = phase in ('Dmain', 'Dboth')
        do_Dr1 = phase in ('Dreg', 'Dboth') and self.r1_gamma != 0
        terms: Dict[str, torch.Tensor] = {}

        # G main: make D call the fakes real (non-saturating loss, softplus(-D(G(z)))).
        if do_Gmain:
            gen_img, _ = self.run_G(gen_z, gen_c, slot=slot)
            for transform in self.real_transforms:
                transform.observe_fakes(slot, gen_img.detach())
            logits, features, seen = self.run_D(gen_img, gen_c)
            training_stats.report('Loss/scores/fake', logits)
            training_stats.report('Loss/signs/fake', logits.sign())
            loss_G = F.softplus(-logits)
            training_stats.report('Loss/G/loss', loss_G)
            terms['Loss/G/loss'] = loss_G.detach().mean()
            extra = self._head_terms('g_loss', terms, img=seen, raw=gen_img, c=gen_c, z=gen_z, logits=logits,
                                     features=features, cur_nimg=cur_nimg, slot=slot)
            _backward(loss_G.mean() + extra, gain)

        # Path-length regularisation: keep |J^T y| near its running mean (eq. 4 of the paper).
        if do_Gpl:
            n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:n], gen_c[:n], slot=slot)
            pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
            pl_grads, = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                            create_graph=True)
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            pl_penalty, batch_mean = path_length_penalty(pl_lengths, self.pl_mean, self.pl_decay)
            self._pending_pl[slot] = batch_mean
            training_stats.report('Loss/pl_penalty', pl_penalty)
            loss_Gpl = pl_penalty * self.pl_weight
            training_stats.report('Loss/G/reg', loss_Gpl)
            terms['Loss/G/reg'] = loss_Gpl.detach().mean()
            # `img * 0` ties every parameter that shapes the image to the graph: those off the
            # penalty's path get a zero gradient, as in the established loss.
            _backward((gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean(), gain)

        # D on fakes: softplus(D(G(z))); G is not differentiated.
        loss_Dgen = None
        if do_Dmain:
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c, slot=slot)
            logits, features, seen = self.run_D(gen_img, gen_c)
            training_stats.report('Loss/scores/fake', logits)
            training_stats.report('Loss/signs/fake', logits.sign())
            loss_Dgen = F.softplus(logits)
            terms['Loss/D/fake'] = loss_Dgen.detach().mean()
            extra = self._head_terms('d_loss', terms, kind='fake', img=seen, raw=gen_img, c=gen_c, z=gen_z,
                                     logits=logits, features=features, cur_nimg=cur_nimg, slot=slot)
            _backward(loss_Dgen.mean() + extra, gain)

        # D on reals: softplus(-D(x)) and R1 = gamma/2 |grad_x D(x)|^2, taken w.r.t. the image
        # that enters the augment stage (after the real-batch transforms, e.g. APA's mixing).
        if do_Dmain or do_Dr1:
            reals = real_img
            for transform in self.real_transforms:
                reals = transform.transform_reals(reals, slot)
            reals = reals.detach().requires_grad_(do_Dr1)
            logits, features, seen = self.run_D(reals, real_c)
            training_stats.report('Loss/scores/real', logits)
            training_stats.report('Loss/signs/real', logits.sign())
            total = torch.zeros([], device=self.device)
            if do_Dmain:
                loss_Dreal = F.softplus(-logits)
                training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)
                terms['Loss/D/real'] = loss_Dreal.detach().mean()
                total = total + loss_Dreal.mean()
                total = total + self._head_terms('d_loss', terms, kind='real', img=seen, raw=reals, c=real_c,
                                                 z=None, logits=logits, features=features, cur_nimg=cur_nimg,
                                                 slot=slot)
            if do_Dr1:
                r1_grads, = torch.autograd.grad(outputs=[logits.sum()], inputs=[reals], create_graph=True)
                r1_penalty = r1_grads.square().sum([1, 2, 3])
                training_stats.report('Loss/r1_penalty', r1_penalty)
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                training_stats.report('Loss/D/reg', loss_Dr1)
                terms['Loss/D/reg'] = loss_Dr1.detach().mean()
                if do_Dmain:
                    total = total + loss_Dr1.mean()
                else:
                    # `logits * 0`: D's parameters off R1's path (the output bias) get a zero
                    # gradient, as in the established loss ([N, 1] + [N] broadcasts to
                    # [N, N] there too, which keeps the mean's rounding the same).
                    total = total + (logits * 0 + loss_Dr1).mean()
            _backward(total, gain)
        return terms

    # -----------------------------------------------------------------------------------
    # Running averages and state.

    def _w_avg_calls(self, phase: str) -> int:
        """Mapping calls per slot that move w_avg in `phase` (the same on every rank)."""
        if not self._tracks_w_avg():
            return 0
        pl = 1 if self.pl_weight != 0 else 0
        return {'Gmain': 1, 'Greg': pl, 'Gboth': 1 + pl, 'Dmain': 1, 'Dreg': 0, 'Dboth': 1}[phase]

    @torch.no_grad()
    def end_phase(self, phase: str, num_slots: int) -> None:
        """Moves w_avg and the path-length mean with this phase's per-slot means, in slot order
        (and, within a slot, in call order).

        Collective when torch.distributed is initialised (every rank calls it after each
        phase); each rank contributes the slots it ran.

        Args:
            phase: The phase just finished.
            num_slots: Micro-batches per step over all ranks.
        """
        calls = self._w_avg_calls(phase) if phase in G_PHASES + D_PHASES else 0
        track_pl = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        if not (calls or track_pl):
            self._pending_w.clear()
            self._pending_pl.clear()
            return
        mapping = self.G.mapping
        w_dim = mapping.w_avg.shape[0] if calls else 0
        # One row per slot: `calls` w means, then the path-length mean and its flag. Rows of
        # other ranks' slots are zero here and filled by the sum (adding zeros is exact, so
        # every rank ends with the same bits).
        table = torch.zeros([num_slots, calls * w_dim + 2], device=self.device)
        for slot, ws in self._pending_w.items():
            if len(ws) != calls:
                raise RuntimeError(f'StyleGAN2Loss.end_phase({phase!r}): slot {slot} made {len(ws)} w_avg '
                                   f'updates, expected {calls}')
            for k, w in enumerate(ws):
                table[slot, k * w_dim:(k + 1) * w_dim] = w
        for slot, pl in self._pending_pl.items():
            if track_pl:
                table[slot, -2] = pl
                table[slot, -1] = 1
        if _distributed():
            torch.distributed.all_reduce(table)
        for slot in range(num_slots):
            for k in range(calls):
                mapping.w_avg.copy_(table[slot, k * w_dim:(k + 1) * w_dim].lerp(mapping.w_avg, mapping.w_avg_beta))
            if track_pl:
                # Decided on the device: a Python `if` on the flag would wait for the GPU
                # once per slot.
                moved = self.pl_mean.lerp(table[slot, -2], self.pl_decay)
                self.pl_mean.copy_(torch.where(table[slot, -1] > 0, moved, self.pl_mean))
        self._pending_w.clear()
        self._pending_pl.clear()

    @torch.no_grad()
    def state_dict(self, num_slots: Optional[int] = None) -> Dict[str, Any]:
        """The loss state: the path-length mean (`num_slots` is accepted for older callers)."""
        del num_slots
        return {'pl_mean': self.pl_mean.detach().cpu().clone()}

    @torch.no_grad()
    def load_state_dict(self, state: Dict[str, Any], **_kwargs: Any) -> None:
        """Restores `state_dict()` (older states also held APA's fakes; the loop gives those
        to APA)."""
        self.pl_mean.copy_(state['pl_mean'].to(self.device))
