"""Vision-aided discriminator (Kumari et al. 2022, "Ensembling Off-the-shelf Models for GAN
Training"): frozen pretrained backbones with small trainable heads as extra discriminators.

One `VisionAidedHead` serves a list of backbones ('clip+dino'). For every image it sees:

    raw image (before the main augment stage) -> its own augmentation (DiffAugment policy,
    or its own ADA pipe with p adapted toward 0.3; cutout always) -> each frozen backbone
    (preprocessing inside) -> a trainable head per backbone -> logits per feature level

and adds lambda * L_cv to the D loss (reals and fakes) and to the G loss, with lambda = 0
before `warmup_nimg` images and `weight` (1) after. In the D step the backbones run without
autograd (only the heads learn); in the G step gradients pass through the frozen backbones
into G. R1 stays on the original D (the loss module applies it to D only).

Losses (`loss`), per backbone summed; a level's loss is averaged over its positions:
    sigmoid             BCE of the single-level logits (real 1, fake 0, G target 1)
    multilevel_sigmoid  BCE on every level, summed over levels
    hinge               relu(1 - real) + relu(1 + fake); G: -fake
    multilevel_hinge    hinge on every level, summed over levels
    *_s                 one-sided label smoothing: the real target and the G target are 0.8
                        (BCE toward 0.8; hinge margins relu(0.8 - real) and relu(0.8 - G))

The trainable heads are the registered `CVDiscriminator` (its own Adam, betas (0, 0.99));
it is what network pickles store under 'D_cv'. The backbones are not submodules: they are
never in an optimizer, a state dict, a pickle or the requires_grad switching of the loop.
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from torch_utils import misc, netfile, training_stats
from training import plugins
from training.augment.stage import AugmentStage
from training.heads import backbones as backbones_lib

BASE_LOSSES = ('sigmoid', 'multilevel_sigmoid', 'hinge', 'multilevel_hinge')
LOSS_NAMES = tuple(n + s for n in BASE_LOSSES for s in ('', '_s'))
SMOOTH_TARGET = 0.8          # Real and G target of the _s losses.
ADA_TARGET = 0.3             # Target of the branch's own adaptive p.
ADA_PIPE = 'bgc'             # ADA transforms of the branch's own pipe.
SIGN_STAT = 'CV/signs/real'  # Statistic its adaptive p follows: sign of the heads' real logits.
PICKLE_KEY = 'D_cv'          # Key of the trainable heads in network pickles.
DIFFAUG_PREFIX = 'diffaug:'


# ---------------------------------------------------------------------------------------
# Losses.

def parse_loss(name: str) -> Tuple[str, bool, bool]:
    """'multilevel_hinge_s' -> ('hinge', multilevel=True, smooth=True).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if name not in LOSS_NAMES:
        raise ValueError(f'unknown vision-aided loss {name!r}; choose one of {", ".join(LOSS_NAMES)}')
    smooth = name.endswith('_s')
    base = name[:-2] if smooth else name
    multilevel = base.startswith('multilevel_')
    return base.replace('multilevel_', ''), multilevel, smooth


def level_loss(kind: str, logits: torch.Tensor, role: str, smooth: bool) -> torch.Tensor:
    """Elementwise loss of one level's logits.

    Args:
        kind: 'sigmoid' or 'hinge'.
        logits: Any shape.
        role: 'real' and 'fake' (D step) or 'gen' (G step: fakes should look real).
        smooth: One-sided smoothing: real and G target 0.8 instead of 1.
    """
    target = SMOOTH_TARGET if smooth else 1.0
    if kind == 'sigmoid':
        # BCE with logits toward target t: t * softplus(-x) + (1 - t) * softplus(x).
        if role == 'fake':
            return F.softplus(logits)
        return target * F.softplus(-logits) + (1 - target) * F.softplus(logits)
    if kind == 'hinge':
        if role == 'real':
            return F.relu(target - logits)
        if role == 'fake':
            return F.relu(1 + logits)
        return F.relu(target - logits) if smooth else -logits
    raise ValueError(f'unknown loss kind {kind!r}')


def cv_loss(name: str, logits: Sequence[torch.Tensor], role: str) -> torch.Tensor:
    """Per-sample vision-aided loss of one backbone: each level's loss averaged over its
    positions, summed over levels.

    Args:
        name: One of LOSS_NAMES (the multilevel/single choice is made by the head, which
            returns one level or all).
        logits: Logits per level, each [N, ...].
        role: 'real', 'fake' or 'gen'.

    Returns:
        [N] tensor.
    """
    kind, _multilevel, smooth = parse_loss(name)
    if role not in ('real', 'fake', 'gen'):
        raise ValueError(f'role must be real, fake or gen, got {role!r}')
    total = 0
    for x in logits:
        total = total + level_loss(kind, x, role, smooth).flatten(1).mean(1)
    return total


# ---------------------------------------------------------------------------------------
# Trainable heads.

def _level_head(shape: Sequence[int], hidden: int) -> torch.nn.Module:
    """Conv layers to a logit map for a [C, H, W] level; an MLP for a [C] vector."""
    if len(shape) == 3:
        return torch.nn.Sequential(
            torch.nn.Conv2d(shape[0], hidden, kernel_size=3, padding=1), torch.nn.LeakyReLU(0.2),
            torch.nn.Conv2d(hidden, 1, kernel_size=1))
    if len(shape) == 1:
        return torch.nn.Sequential(
            torch.nn.Linear(shape[0], hidden), torch.nn.LeakyReLU(0.2), torch.nn.Linear(hidden, 1))
    raise ValueError(f'feature level of shape {tuple(shape)} is neither [C, H, W] nor [C]')


@netfile.register
class CVDiscriminator(torch.nn.Module):
    """The trainable heads of the vision-aided discriminator, one per backbone.

    Args:
        feature_shapes: {backbone name: [shape of each feature level]} (see backbones.py).
        multilevel: Heads on every level; otherwise only on the last (single-level) one.
        hidden: Channels / units of the hidden layer of every level head.
    """

    def __init__(self, feature_shapes: Mapping[str, Sequence[Sequence[int]]], multilevel: bool = True,
                 hidden: int = 256):
        super().__init__()
        if not feature_shapes:
            raise ValueError('CVDiscriminator: needs at least one backbone')
        self.names = list(feature_shapes)
        self.multilevel = bool(multilevel)
        self.feature_shapes = {n: [tuple(s) for s in shapes] for n, shapes in feature_shapes.items()}
        self.heads = torch.nn.ModuleDict()
        for name, shapes in self.feature_shapes.items():
            used = shapes if self.multilevel else shapes[-1:]
            self.heads[name] = torch.nn.ModuleList([_level_head(s, int(hidden)) for s in used])

    def select(self, name: str, levels: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The feature levels the head of backbone `name` uses."""
        return list(levels) if self.multilevel else list(levels[-1:])

    def forward(self, features: Mapping[str, Sequence[torch.Tensor]]) -> Dict[str, List[torch.Tensor]]:
        """{backbone: feature levels} -> {backbone: logits per used level ([N, 1, H, W] or [N, 1])}."""
        out = {}
        for name in self.names:
            levels = self.select(name, features[name])
            heads = self.heads[name]
            if len(levels) != len(heads):
                raise ValueError(f'CVDiscriminator: backbone {name!r} gave {len(levels)} levels, '
                                 f'its head has {len(heads)}')
            out[name] = [head(x.to(torch.float32)) for head, x in zip(heads, levels)]
        return out


# ---------------------------------------------------------------------------------------
# Own augmentation.

def augment_specs(aug: str) -> List[Dict[str, Any]]:
    """The branch's augmentation as AugmentStage entries.

    Args:
        aug: 'ada' (its own ADA pipe with an adaptive p, then cutout) or 'diffaug:POLICY'
            (DiffAugment with POLICY; cutout appended when missing).

    Raises:
        ValueError: a malformed value (the message shows the accepted forms).
    """
    from training.augment import diffaugment, presets as ada_presets  # pylint: disable=import-outside-toplevel
    diff_class = 'training.augment.diffaugment.DiffAugment'
    if aug == 'ada':
        return [ada_presets.ada_kwargs(ADA_PIPE, name='ada'),
                dict(class_name=diff_class, policy='cutout', name='cutout')]
    if isinstance(aug, str) and aug.startswith(DIFFAUG_PREFIX):
        ops = diffaugment.parse_policy(aug[len(DIFFAUG_PREFIX):])
        if 'cutout' not in ops:
            ops.append('cutout')
        return [dict(class_name=diff_class, policy=','.join(ops), name='diffaug')]
    raise ValueError(f'vision-aided augmentation {aug!r} is not "ada" or "diffaug:POLICY" '
                     f'(e.g. diffaug:color,translation,cutout)')


# ---------------------------------------------------------------------------------------
# The head the training loop uses.

class VisionAidedHead(torch.nn.Module, plugins.LossTerm):
    """Extra discriminator head with frozen backbones (see the module docstring).

    Args:
        backbones: 'clip+dino' or a list of registered names.
        loss: One of LOSS_NAMES.
        warmup_nimg: Images before the vision-aided loss switches on (lambda 0 before).
        aug: 'ada' or 'diffaug:POLICY' (see augment_specs).
        weights: {backbone: local file or 'random'}; others come from their official URL.
        hidden: Hidden width of the heads.
        lr: Learning rate of the heads' Adam (betas 0, 0.99).
        weight: lambda after the warm-up.
        name: Head name (statistics 'Loss/<name>/...', controller path '<name>.aug.ada').
        device: Device of the backbones and heads.
        G, D, training_set: Given by the training loop; not used.
    """

    def __init__(self, backbones: Union[str, Sequence[str]] = 'clip', loss: str = 'multilevel_sigmoid_s',
                 warmup_nimg: int = 0, aug: str = 'ada', weights: Optional[Mapping[str, str]] = None,
                 hidden: int = 256, lr: float = 0.002, weight: float = 1.0, name: str = 'cv',
                 device: Optional[torch.device] = None, G: Any = None, D: Any = None, training_set: Any = None):
        super().__init__()
        del G, D, training_set
        names = backbones_lib.parse_backbones(backbones) if isinstance(backbones, str) else list(backbones)
        self.loss_name = loss
        _kind, multilevel, _smooth = parse_loss(loss)
        if warmup_nimg < 0:
            raise ValueError(f'VisionAidedHead: warmup_nimg must be >= 0, got {warmup_nimg}')
        self.name = name
        self.warmup_nimg = int(warmup_nimg)
        self.weight = float(weight)
        self.opt_kwargs = dict(class_name='torch.optim.Adam', lr=float(lr), betas=[0, 0.99], eps=1e-8)
        shapes = {n: backbones_lib.get_spec(n).feature_shapes() for n in names}
        self.disc = CVDiscriminator(shapes, multilevel=multilevel, hidden=hidden).requires_grad_(False)
        self.disc.opt_kwargs = self.opt_kwargs   # The loop reads it from the trainable part.
        self.aug = AugmentStage(augment_specs(aug)).train().requires_grad_(False)
        # A plain dict: the backbones are not submodules (see the module docstring).
        self.backbones = backbones_lib.build_backbones(names, weights, device)
        if device is not None:
            self.to(device)

    def to(self, *args, **kwargs):
        """Moves the heads and the backbones (which are not submodules, see the module docstring)."""
        super().to(*args, **kwargs)
        for backbone in getattr(self, 'backbones', {}).values():
            backbone.to(*args, **kwargs)
        return self

    # Protocol of the training loop.
    def trainable_modules(self) -> Dict[str, torch.nn.Module]:
        """The heads: the only part an optimizer sees."""
        return {'disc': self.disc}

    def network_modules(self) -> Dict[str, torch.nn.Module]:
        """What network pickles store: the trainable heads (the backbones are public files)."""
        return {PICKLE_KEY: self.disc}

    def resume_from_network(self, data: Mapping[str, Any], log=print) -> None:
        """Takes the heads from a network pickle that has matching ones; else keeps the new ones."""
        src = data.get(PICKLE_KEY)
        if not isinstance(src, torch.nn.Module):
            log(f'Vision-aided heads: {PICKLE_KEY} not in the network pickle; starting fresh.')
            return
        if getattr(src, 'feature_shapes', None) != self.disc.feature_shapes or \
                getattr(src, 'multilevel', None) != self.disc.multilevel:
            log(f'Vision-aided heads: the pickle\'s {PICKLE_KEY} has other backbones or levels; starting fresh.')
            return
        misc.copy_params_and_buffers(src, self.disc, require_all=True)
        log(f'Vision-aided heads: resumed from the pickle\'s {PICKLE_KEY}.')

    def lam(self, cur_nimg: int) -> float:
        """lambda: 0 before the warm-up is over, `weight` after."""
        return 0.0 if cur_nimg < self.warmup_nimg else self.weight

    def features(self, raw: torch.Tensor, grad: bool) -> Dict[str, List[torch.Tensor]]:
        """Own augmentation, then every backbone; autograd through them only with `grad`
        (without it no graph is recorded, not even of the augmentation of a real batch that
        requires grad for R1)."""
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            img = self.aug(raw.to(torch.float32))
            return {n: b(img) for n, b in self.backbones.items()}

    def logits(self, raw: torch.Tensor, grad: bool) -> Dict[str, List[torch.Tensor]]:
        """{backbone: logits per used level} of images in [-1, 1]."""
        return self.disc(self.features(raw, grad))

    def _loss(self, logits: Dict[str, List[torch.Tensor]], role: str) -> torch.Tensor:
        return sum(cv_loss(self.loss_name, levels, role) for levels in logits.values())

    @staticmethod
    def _mean_logit(logits: Dict[str, List[torch.Tensor]]) -> torch.Tensor:
        """Per-sample mean over backbones, levels and positions (for statistics)."""
        per = [x.detach().flatten(1).mean(1) for levels in logits.values() for x in levels]
        return torch.stack(per).mean(0)

    def d_loss(self, kind: str, raw: torch.Tensor, cur_nimg: int, **_kwargs) -> Optional[torch.Tensor]:
        """D-step term for reals or fakes (per sample); None during the warm-up."""
        lam = self.lam(cur_nimg)
        if lam == 0:
            return None
        logits = self.logits(raw, grad=False)
        score = self._mean_logit(logits)
        training_stats.report(f'CV/scores/{kind}', score)
        if kind == 'real':
            training_stats.report(SIGN_STAT, score.sign())
        return self._loss(logits, kind) * lam

    def g_loss(self, raw: torch.Tensor, cur_nimg: int, **_kwargs) -> Optional[torch.Tensor]:
        """G-step term (per sample): gradients reach G through the frozen backbones."""
        lam = self.lam(cur_nimg)
        if lam == 0:
            return None
        return self._loss(self.logits(raw, grad=True), 'gen') * lam

    def extra_repr(self) -> str:
        return (f'backbones={"+".join(self.backbones)}, loss={self.loss_name}, '
                f'warmup_nimg={self.warmup_nimg}, weight={self.weight:g}')



# ---------------------------------------------------------------------------------------
# The method: its options and its part of the config tree (see training/methods.py).

import os  # noqa: E402

import click  # noqa: E402

from torch_utils import cli  # noqa: E402
from training.methods import ConfigError, Option  # noqa: E402

TITLE = 'Vision-aided discriminator (--cv)'
CV_CLASS = 'training.heads.vision_aided.VisionAidedHead'
CV_MODULE = 'cv.aug.ada'                  # The branch's own ADA pipe (controller path).
DEFAULT_LOSS = 'multilevel_sigmoid_s'
DEFAULT_WARMUP_KIMG = 500                 # kimg before the vision-aided loss switches on.
DEFAULT_AUG = 'ada'


def _check_backbones(value: str) -> None:
    backbones_lib.parse_backbones(value)


def _check_aug(value: str) -> None:
    augment_specs(value)


def _check_weight_files(items: Sequence[str]) -> None:
    backbones_lib.parse_weights(items)
    for item in items:
        name, _, path = str(item).partition('=')
        if path and path != 'random' and not os.path.isfile(path):
            raise ValueError(f'{name}={path}: no such file')


OPTIONS = [
    Option('--cv', str, metavar='LIST', check=_check_backbones, tag=lambda v: '-cv-' + '-'.join(
        backbones_lib.parse_backbones(v)),
        help='Vision-aided discriminator on frozen backbones, e.g. clip or clip+dino '
             f'({", ".join(backbones_lib.BACKBONES)})'),
    Option('--cv-loss', click.Choice(LOSS_NAMES), default=DEFAULT_LOSS, requires='cv',
           help='Loss of the vision-aided heads'),
    Option('--cv-warmup', cli.FiniteFloatRange(min=0), metavar='KIMG', default=DEFAULT_WARMUP_KIMG, requires='cv',
           help='kimg before the vision-aided loss switches on'),
    Option('--cv-aug', str, metavar='ada|diffaug:POLICY', default=DEFAULT_AUG, requires='cv', check=_check_aug,
           help="Augmentation of the branch's input: its own adaptive ADA, or a DiffAugment policy"),
    Option('--cv-weights', str, metavar='NAME=PATH', multiple=True, requires='cv', check=_check_weight_files,
           help='Local weight file for a backbone (NAME=random for untrained weights); repeatable'),
]


def configure(b, o) -> None:
    """The vision-aided loss term; --cv-aug=ada adds the branch's own adaptive controller
    (target 0.3, on the sign of the heads' real logits) driving its own ADA pipe."""
    if o.cv is None:
        return
    names = backbones_lib.parse_backbones(o.cv)
    weight_files = backbones_lib.parse_weights(o.cv_weights)
    extra = sorted(set(weight_files) - set(names))
    if extra:
        raise ConfigError('--cv-weights', f'names {", ".join(extra)}, which --cv={o.cv} does not list')
    if o.cv_aug == 'ada':
        from training.augment import modes  # pylint: disable=import-outside-toplevel
        speed = modes.RESUME_SPEED_KIMG if b.facts.from_pickle else modes.DEFAULT_SPEED_KIMG
        b.add_controller(dict(class_name=modes.CONTROLLER_CLASS, target=ADA_TARGET, interval=modes.ADAPT_INTERVAL,
                              speed_kimg=float(speed), name='cv', stat=SIGN_STAT), [CV_MODULE])
    b.add_loss_term(dict(class_name=CV_CLASS, backbones=names, loss=o.cv_loss,
                         warmup_nimg=int(round(o.cv_warmup * 1000)), aug=o.cv_aug, weights=weight_files,
                         lr=float(b.facts.lr_d)))
