"""InsGen: instance discrimination as extra discriminator tasks.

Yang et al. 2021, "Data-Efficient Instance Generation from Instance Discrimination" (NeurIPS).
D's last feature map before its 4x4 epilogue, averaged over space, feeds two contrastive
heads (MoCo-style, He et al. 2020):

- real-instance head (D step): query = head(D(aug(x))), positive key = momentum head of
  D_ema(aug'(x)), negatives = the real queue; the keys are then enqueued;
- fake-instance head (D step): query = head(D(aug(G(z)))), positive key from the
  latent-perturbed image G(z + delta), delta ~ N(0, 0.15^2), through D_ema and the momentum
  head, without gradients; negatives = the fake queue;
- G diversity term (G step): the fake-instance loss of aug(G(z)) against D_ema(aug'(G(z))),
  head frozen, weight 0.1; gradients reach G through D.

InfoNCE (van den Oord et al. 2018, as used by MoCo) with temperature 0.2:
-log(exp(q.k+/t) / sum_k exp(q.k/t)), the sum over the positive and the queued negatives.

How it fits our loop (see docs/insgen.md):
- The query view is the image D saw in its main pass (the augment stage's output) and its
  features, so the query costs no extra D pass. The positive view is a second augmentation
  by the head's own ADA pipeline (`augment_pipe`, bgc by default). Its p follows the run's
  adaptive ADA p when the run has one (train.py adds the pipe to that controller), else it
  is held at `aug_p`.
- Keys are enqueued, and the momentum heads and D_ema move, once per step in `end_step`,
  with the keys of every micro-batch of every rank in slot order. All slots of a step thus
  see the queue as it was at the start of the step, and results do not depend on the number
  of processes. Moving the momentum heads once per step, after D's optimizer step, is what
  the per-forward update of the published code amounts to (the heads only change at the
  optimizer step).
"""

import copy
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import distributed, misc, netfile, training_stats
from training import plugins

DEFAULT_QUEUE_FRACTION = 0.05   # Default queue size: 5% of the training images.
DEFAULT_AUG_P = 0.5             # p of the positive view's pipeline when no controller drives it.


# ---------------------------------------------------------------------------------------
# Pieces with their own tests.

def info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample InfoNCE loss of queries against their positive keys and shared negatives.

    Args:
        q: L2-normalised queries [N, D].
        k: L2-normalised positive keys [N, D] (no gradient is needed through them).
        negatives: L2-normalised negative keys [K, D].
        temperature: Softmax temperature t.

    Returns:
        [N] losses: logsumexp([q.k, q.negatives] / t) - q.k / t (cross-entropy with the
        positive as the target class).
    """
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ negatives.t()
    logits = torch.cat([pos, neg], dim=1) / temperature
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


@torch.no_grad()
def enqueue(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """Writes keys into a ring buffer in order, as if enqueued one at a time.

    Args:
        queue: [K, D] buffer, updated in place.
        ptr: int64 scalar tensor, the next position to write; advanced by len(keys) mod K.
        keys: [n, D] keys; with n > K only the last K remain, as with one-at-a-time writes.
    """
    size, n = queue.shape[0], keys.shape[0]
    if n == 0:
        return
    # The pointer stays on the device: no host read in this per-step call.
    idx = (ptr + torch.arange(n, device=queue.device)) % size
    if n > size:
        idx, keys = idx[-size:], keys[-size:]
    queue[idx] = keys.to(queue.dtype)
    ptr.copy_((ptr + n) % size)


@torch.no_grad()
def momentum_update(target: torch.nn.Module, source: torch.nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * source for parameters; buffers copied."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.copy_(t * momentum + s.detach() * (1 - momentum))
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)


def _projection(in_features: int, out_features: int) -> torch.nn.Sequential:
    # The paper's head: width -> width, ReLU, width -> out (output L2-normalised by the caller).
    return torch.nn.Sequential(torch.nn.Linear(in_features, in_features), torch.nn.ReLU(),
                               torch.nn.Linear(in_features, out_features))


@netfile.register
class InstanceHeads(torch.nn.Module):
    """The two contrastive heads, their momentum copies and their key queues.

    This is the part of InsGen stored in network pickles (under 'insgen'); D_ema is stored
    beside it as 'D_ema', as the published InsGen code does.

    Args:
        in_features: Width of D's pooled features (channels of the 4x4 map).
        out_features: Width of the normalised embedding.
        real_queue_size: Number of real keys kept as negatives.
        fake_queue_size: Number of fake keys kept as negatives.
    """

    def __init__(self, in_features: int, out_features: int = 128, real_queue_size: int = 256,
                 fake_queue_size: int = 256):
        super().__init__()
        for name, value in [('in_features', in_features), ('out_features', out_features),
                            ('real_queue_size', real_queue_size), ('fake_queue_size', fake_queue_size)]:
            if int(value) < 1:
                raise ValueError(f'InstanceHeads: {name} must be at least 1, got {value}')
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.real = _projection(self.in_features, self.out_features)
        self.fake = _projection(self.in_features, self.out_features)
        # Momentum copies start equal to the heads and are never trained by gradients.
        self.real_momentum = copy.deepcopy(self.real).requires_grad_(False)
        self.fake_momentum = copy.deepcopy(self.fake).requires_grad_(False)
        # Queues start as random unit vectors (as in MoCo): uninformative negatives until
        # real keys replace them.
        self.register_buffer('real_queue', F.normalize(torch.randn([int(real_queue_size), self.out_features]), dim=1))
        self.register_buffer('real_queue_ptr', torch.zeros([], dtype=torch.int64))
        self.register_buffer('fake_queue', F.normalize(torch.randn([int(fake_queue_size), self.out_features]), dim=1))
        self.register_buffer('fake_queue_ptr', torch.zeros([], dtype=torch.int64))

    def query(self, kind: str, features: torch.Tensor) -> torch.Tensor:
        """Normalised queries [N, out] of pooled features [N, in] through head `kind`."""
        return F.normalize(getattr(self, kind)(features.float()), dim=1)

    @torch.no_grad()
    def key(self, kind: str, features: torch.Tensor) -> torch.Tensor:
        """Normalised keys [N, out] of pooled features through the momentum copy of `kind`."""
        return F.normalize(getattr(self, f'{kind}_momentum')(features.float()), dim=1)

    def queue(self, kind: str) -> torch.Tensor:
        return getattr(self, f'{kind}_queue')

    @torch.no_grad()
    def enqueue(self, kind: str, keys: torch.Tensor) -> None:
        enqueue(getattr(self, f'{kind}_queue'), getattr(self, f'{kind}_queue_ptr'), keys)

    @torch.no_grad()
    def update_momentum(self, momentum: float) -> None:
        momentum_update(self.real_momentum, self.real, momentum)
        momentum_update(self.fake_momentum, self.fake, momentum)

    def extra_repr(self) -> str:
        return (f'in_features={self.in_features}, out_features={self.out_features}, '
                f'real_queue={self.real_queue.shape[0]}, fake_queue={self.fake_queue.shape[0]}')


@torch.no_grad()
def gather_in_slot_order(pending: Dict[int, torch.Tensor], device: torch.device) -> Optional[torch.Tensor]:
    """Concatenates every rank's per-slot keys in slot order (collective when distributed).

    Every rank runs the same number of slots of the same size, so an all_gather of the
    stacked keys plus their slot numbers is enough.

    Args:
        pending: {slot: keys [B, D]} of this rank.
        device: Device for the collective.

    Returns:
        [num_slots * B, D] keys, or None when no rank has any.
    """
    slots = sorted(pending)
    if distributed.get_world_size() <= 1:
        return torch.cat([pending[s] for s in slots]) if slots else None
    count = torch.tensor([len(slots)], device=device)
    counts = [torch.zeros_like(count) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(counts, count)
    if max(int(x) for x in counts) == 0:
        return None
    if len({int(x) for x in counts}) != 1:
        raise RuntimeError(f'InsGen: ranks hold different numbers of micro-batches of keys '
                           f'({[int(x) for x in counts]}); every rank must run the same slots per step')
    keys = torch.stack([pending[s] for s in slots]).contiguous()
    ids = torch.tensor(slots, device=device, dtype=torch.int64)
    all_keys = [torch.zeros_like(keys) for _ in counts]
    all_ids = [torch.zeros_like(ids) for _ in counts]
    torch.distributed.all_gather(all_keys, keys)
    torch.distributed.all_gather(all_ids, ids)
    keys, ids = torch.cat(all_keys), torch.cat(all_ids)
    return keys[ids.argsort()].flatten(0, 1)


# ---------------------------------------------------------------------------------------
# The head the training loop drives.

class InsGen(plugins.LossTerm):
    """InsGen's loss terms, D_ema and queues behind the extra-head protocol of training.loss.

    Built by the training loop as `InsGen(**kwargs, device=..., G=G, D=D, training_set=...)`.

    Args:
        device: Training device.
        G: The generator (for the latent-perturbed positives).
        D: The discriminator (features; D_ema starts as its copy).
        training_set: The dataset (its size sets the default queue sizes).
        real_queue_size: Real queue length (--rqs); None = 5% of the training images.
        fake_queue_size: Fake queue length (--fqs); None = 5% of the training images.
        temperature: InfoNCE temperature (--insgen-temp).
        real_weight: Weight of the real-instance loss in the D step.
        fake_weight: Weight of the fake-instance loss in the D step.
        g_weight: Weight of the G diversity term (0 = off, --no-cl-on-g).
        momentum: Momentum of the head copies.
        d_ema_momentum: Momentum of D_ema.
        latent_std: Standard deviation of the latent perturbation of fake positives.
        out_features: Embedding width.
        augpipe: ADA preset of the positive view's pipeline.
        aug_p: Its p when no adaptive controller drives it.
        opt_kwargs: Optimizer of the heads (None = D's settings).
    """

    name = 'insgen'

    def __init__(self, *, device: Any, G: torch.nn.Module, D: torch.nn.Module, training_set: Any = None,
                 real_queue_size: Optional[int] = None, fake_queue_size: Optional[int] = None,
                 temperature: float = 0.2, real_weight: float = 1.0, fake_weight: float = 1.0,
                 g_weight: float = 0.1, momentum: float = 0.999, d_ema_momentum: float = 0.999,
                 latent_std: float = 0.15, out_features: int = 128, augpipe: str = 'bgc',
                 aug_p: float = DEFAULT_AUG_P, opt_kwargs: Optional[Dict[str, Any]] = None):
        from training.augment import presets as ada_presets  # pylint: disable=import-outside-toplevel
        if not temperature > 0:
            raise ValueError(f'InsGen: temperature must be positive, got {temperature}')
        for key, value in [('real_weight', real_weight), ('fake_weight', fake_weight), ('g_weight', g_weight),
                           ('latent_std', latent_std)]:
            if not value >= 0:
                raise ValueError(f'InsGen: {key} must be non-negative, got {value}')
        for key, value in [('momentum', momentum), ('d_ema_momentum', d_ema_momentum), ('aug_p', aug_p)]:
            if not 0 <= value <= 1:
                raise ValueError(f'InsGen: {key} must be in [0, 1], got {value}')
        if augpipe not in ada_presets.ADA_PRESETS:
            raise ValueError(f'InsGen: unknown ADA preset {augpipe!r}; choose one of '
                             f'{", ".join(ada_presets.ADA_PRESETS)}')
        if not hasattr(D, 'b4') or not hasattr(D.b4, 'in_channels'):
            raise TypeError(f'InsGen needs a StyleGAN2 discriminator with a 4x4 epilogue (D.b4), got '
                            f'{type(D).__name__}')
        default_size = max(1, int(round(DEFAULT_QUEUE_FRACTION * len(training_set)))) if training_set is not None \
            else 256
        self.device = torch.device(device)
        self.G = G
        self.D = D
        self.temperature = float(temperature)
        self.weights = dict(real=float(real_weight), fake=float(fake_weight), g=float(g_weight))
        self.momentum = float(momentum)
        self.d_ema_momentum = float(d_ema_momentum)
        self.latent_std = float(latent_std)
        self.opt_kwargs = dict(opt_kwargs) if opt_kwargs else None

        self.heads = InstanceHeads(D.b4.in_channels, out_features,
                                   real_queue_size if real_queue_size is not None else default_size,
                                   fake_queue_size if fake_queue_size is not None else default_size)
        self.heads = self.heads.train().requires_grad_(False).to(self.device)
        # The key encoder: a momentum copy of D, never trained by gradients.
        self.D_ema = copy.deepcopy(D).eval().requires_grad_(False).to(self.device)
        self.augment_pipe = dnnlib.construct_class_by_name(
            class_name='training.augment.ada.AugmentPipe', p=float(aug_p),
            **ada_presets.ADA_PRESETS[augpipe]).train().requires_grad_(False).to(self.device)
        self._pending: Dict[str, Dict[int, torch.Tensor]] = dict(real={}, fake={})

    # -----------------------------------------------------------------------------------
    # Protocol of the training loop.

    def trainable_modules(self) -> Dict[str, torch.nn.Module]:
        """The two heads, each with its own optimizer."""
        return dict(real=self.heads.real, fake=self.heads.fake)

    def network_modules(self) -> Dict[str, torch.nn.Module]:
        """What network pickles hold: D_ema and the heads with their queues."""
        return {'D_ema': self.D_ema, 'insgen': self.heads}

    @torch.no_grad()
    def resume_from_network(self, data: Dict[str, Any], log: Callable[..., None] = print) -> None:
        """Takes D_ema and the heads from a network pickle; without them, D_ema = the resumed D.

        Args:
            data: The loaded network pickle (G, D, G_ema already copied into the run).
            log: Where to say what was taken.
        """
        src = data.get('D_ema')
        if isinstance(src, torch.nn.Module):
            _copy_matching(src, self.D_ema, 'D_ema', log)
            log('InsGen: D_ema taken from the network pickle.')
        else:
            momentum_update(self.D_ema, self.D, 0.0)
            log('InsGen: the network pickle has no D_ema; starting it from the resumed D.')
        src = data.get('insgen')
        if isinstance(src, torch.nn.Module):
            _copy_matching(src, self.heads, 'insgen', log)
            log('InsGen: contrastive heads taken from the network pickle.')
        else:
            log('InsGen: the network pickle has no contrastive heads; they start fresh.')

    def state_dict(self) -> Dict[str, Any]:
        """Heads, momentum heads, queues and pointers, D_ema and the positive view's p."""
        if any(self._pending.values()):
            raise RuntimeError('InsGen.state_dict: keys of an unfinished step are pending; save after end_step')
        return dict(heads=self.heads.state_dict(), D_ema=self.D_ema.state_dict(),
                    augment_pipe=self.augment_pipe.state_dict())

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.heads.load_state_dict(state['heads'])
        self.D_ema.load_state_dict(state['D_ema'])
        self.augment_pipe.load_state_dict(state['augment_pipe'])
        self._pending = dict(real={}, fake={})

    @torch.no_grad()
    def end_step(self, cur_nimg: int) -> None:
        """Enqueues the step's keys of all ranks in slot order; moves the momentum heads and D_ema.

        Collective when torch.distributed is initialised.
        """
        del cur_nimg
        for kind in ('real', 'fake'):
            keys = gather_in_slot_order(self._pending[kind], self.device)
            if keys is not None:
                self.heads.enqueue(kind, keys)
            self._pending[kind] = {}
        self.heads.update_momentum(self.momentum)
        momentum_update(self.D_ema, self.D, self.d_ema_momentum)

    # -----------------------------------------------------------------------------------
    # Loss terms.

    @torch.no_grad()
    def _keys(self, kind: str, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # Positive view: the head's own augmentation, D_ema, the momentum head.
        _, features = self.D_ema(self.augment_pipe(img.detach()), c, return_features=True)
        return self.heads.key(kind, features.mean(dim=[2, 3]))

    def _loss(self, kind: str, features: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        q = self.heads.query(kind, features.mean(dim=[2, 3]))
        return info_nce(q, keys, self.heads.queue(kind).detach(), self.temperature)

    def d_loss(self, kind: str, img: torch.Tensor, raw: torch.Tensor, c: torch.Tensor, z: Optional[torch.Tensor],
               features: torch.Tensor, slot: int = 0, **kwargs: Any) -> Optional[torch.Tensor]:
        """Real- or fake-instance loss of one micro-batch in the D main pass (weighted, [N]).

        Args:
            kind: 'real' or 'fake'.
            img: The image D saw (unused: its features are given).
            raw: The image before the augment stage (reals, or G(z) for fakes).
            c: Labels.
            z: Latents of the fakes (None for reals).
            features: D's [N, C, 4, 4] features of `img`.
            slot: Micro-batch index within the step (orders the keys in the queue).
        """
        del img, kwargs
        weight = self.weights[kind]
        if weight == 0:
            return None
        if kind == 'real':
            keys = self._keys('real', raw, c)
        else:
            # Positive of a fake: the image of a slightly perturbed latent (no gradients).
            with torch.no_grad():
                positive = self.G(z + torch.randn_like(z) * self.latent_std, c)
            keys = self._keys('fake', positive, c)
        loss = self._loss(kind, features, keys)
        training_stats.report(f'Loss/insgen/{kind}', loss)
        self._pending[kind][int(slot)] = keys.detach()
        return loss * weight

    def g_loss(self, img: torch.Tensor, raw: torch.Tensor, c: torch.Tensor, features: torch.Tensor,
               **kwargs: Any) -> Optional[torch.Tensor]:
        """The G diversity term: fake-instance loss of G(z) against a second view of itself.

        The heads are frozen here (the loop trains them in the D step only) and nothing is
        enqueued; the gradient reaches G through D's features of `img`.
        """
        del img, kwargs
        if self.weights['g'] == 0:
            return None
        loss = self._loss('fake', features, self._keys('fake', raw, c))
        training_stats.report('Loss/insgen/g_div', loss)
        return loss * self.weights['g']


@torch.no_grad()
def _copy_matching(src: torch.nn.Module, dst: torch.nn.Module, what: str, log: Callable[..., None]) -> None:
    """Copies tensors by name where the shapes agree (e.g. queues of another size stay fresh)."""
    src_tensors = dict(misc.named_params_and_buffers(src))
    skipped: List[str] = []
    for name, tensor in misc.named_params_and_buffers(dst):
        value = src_tensors.get(name)
        if value is None or value.shape != tensor.shape:
            skipped.append(name)
            continue
        tensor.copy_(value.to(tensor.device, tensor.dtype))
    if skipped:
        log(f'InsGen: {what} from the network pickle lacks or has other shapes for {len(skipped)} tensors '
            f'({", ".join(skipped[:4])}{", ..." if len(skipped) > 4 else ""}); those start fresh.')


# ---------------------------------------------------------------------------------------
# The method: its options and its part of the config tree (see training/methods.py).

import click  # noqa: E402  (the declarations below are independent of the run-time parts above)

from torch_utils import cli  # noqa: E402
from training.methods import Option  # noqa: E402

TITLE = 'InsGen (--insgen)'
INSGEN_CLASS = 'training.heads.insgen.InsGen'
INSGEN_MODULE = 'insgen.augment_pipe'       # Its pipeline, as a controller module path.
DEFAULT_WEIGHTS = (1.0, 1.0, 0.1)           # real-instance, fake-instance (D step), diversity (G step).
DEFAULT_TEMPERATURE = 0.2


def parse_weights(value: Any) -> Optional[tuple]:
    """`--insgen-weights`: 'REAL,FAKE,G' (or a sequence of 3 numbers) -> a tuple; None stays None."""
    if value is None:
        return None
    parts = value.split(',') if isinstance(value, str) else list(value)
    try:
        weights = tuple(float(x) for x in parts)
    except (TypeError, ValueError):
        weights = ()
    if len(weights) != 3 or not all(w >= 0 for w in weights):
        raise ValueError(f'expected three non-negative numbers REAL,FAKE,G (e.g. 1,1,0.1), got {value!r}')
    return weights


OPTIONS = [
    Option('--insgen', is_bool=True, tag='-insgen', help="Add InsGen's real- and fake-instance contrastive heads to D"),
    Option('--rqs', click.IntRange(min=1), requires='insgen',
           help='InsGen real-instance queue size  [default: 5% of the training images]'),
    Option('--fqs', click.IntRange(min=1), requires='insgen',
           help='InsGen fake-instance queue size  [default: 5% of the training images]'),
    Option('--insgen-temp', cli.FiniteFloatRange(min=0, min_open=True), default=DEFAULT_TEMPERATURE,
           requires='insgen', help='InfoNCE temperature'),
    Option('--insgen-weights', str, metavar='REAL,FAKE,G', requires='insgen', check=parse_weights,
           help='Loss weights of the real-instance, fake-instance and G diversity terms  [default: 1,1,0.1]'),
    Option('--no-cl-on-g', is_bool=True, requires='insgen', help="Drop InsGen's diversity term from the G step"),
]


def configure(b, o) -> None:
    """The InsGen loss term. Queues default to 5% of the training images; the positive
    view's ADA pipe follows the run's adaptive ADA p when a controller drives one, takes the
    fixed ADA p of --aug=fixed --with-dataaug, and is held at DEFAULT_AUG_P otherwise."""
    if not o.insgen:
        return
    real_w, fake_w, g_w = parse_weights(o.insgen_weights) or DEFAULT_WEIGHTS
    if o.no_cl_on_g:
        g_w = 0.0
    default_size = max(1, int(round(DEFAULT_QUEUE_FRACTION * b.facts.num_images)))
    aug_p = DEFAULT_AUG_P
    if not b.share_p('augment.ada', INSGEN_MODULE) and b.facts.get('ada_fixed_p') is not None:
        aug_p = float(b.facts.ada_fixed_p)
    from training.augment.modes import DEFAULT_AUGPIPE  # pylint: disable=import-outside-toplevel
    b.add_loss_term(dict(
        class_name=INSGEN_CLASS, real_queue_size=int(o.rqs if o.rqs is not None else default_size),
        fake_queue_size=int(o.fqs if o.fqs is not None else default_size), temperature=float(o.insgen_temp),
        real_weight=real_w, fake_weight=fake_w, g_weight=g_w, augpipe=o.augpipe or DEFAULT_AUGPIPE, aug_p=aug_p))


