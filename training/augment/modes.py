"""The augmentation mode (`--aug`): APA, ADA, a fixed p, or none, and their options.

- apa:   APA real-batch transform with an adaptive p; --with-dataaug adds the ADA pipe
         that shares APA's p (or adapts its own with --ada-own-p).
- ada:   the ADA pipe with an adaptive p (established ADA), no APA.
- fixed: APA with p fixed to --p; --with-dataaug adds ADA at the same fixed p (or an
         adaptive one of its own with --ada-own-p).
- noaug: neither APA nor ADA.
The adaptive controllers it adds have the role 'augment_p' (other methods find them by it:
InsGen's positive view follows their p, --ada-linear replaces their rule).
"""

import copy
from typing import Any, Dict

import click

from torch_utils import cli
from training.methods import ConfigBuilder, ConfigError, Option, given
from training.augment import presets as ada_presets

TITLE = 'Augmentation: APA, ADA (--aug)'
AUG_MODES = ('apa', 'ada', 'fixed', 'noaug')
DEFAULT_TARGET = 0.6
DEFAULT_AUGPIPE = 'bgc'
DEFAULT_SPEED_KIMG = 500          # p can traverse [0, 1] in this many kimg ...
RESUME_SPEED_KIMG = 100           # ... faster when fine-tuning from a network pickle.
ADAPT_INTERVAL = 4                # D steps between p updates.
STAGE_CLASS = 'training.augment.stage.AugmentStage'
ADA_CLASS = 'training.augment.ada.AugmentPipe'
APA_CLASS = 'training.augment.apa.PseudoAugment'
CONTROLLER_CLASS = 'training.augment.adaptive.AdaptiveP'
APA_MODULE = 'real_transform'     # Controller module paths.
ADA_MODULE = 'augment.ada'

_unit = cli.FiniteFloatRange(min=0, max=1)
_open_unit = cli.FiniteFloatRange(min=0, max=1, min_open=True)

OPTIONS = [
    Option('--aug', click.Choice(AUG_MODES), default='apa',
           help='apa (adaptive pseudo augmentation), ada (adaptive discriminator augmentation), '
                'fixed (APA at a fixed --p) or noaug'),
    Option('--p', _unit, help='Fixed probability for --aug=fixed'),
    Option('--target', _open_unit, tag='-target{}',
           help=f'Target of the overfitting heuristic for --aug=apa/ada  [default: {DEFAULT_TARGET}]'),
    Option('--with-dataaug', is_bool=True, tag='-dataaug',
           help='With APA, also apply the ADA pipeline to every D input, sharing p'),
    Option('--augpipe', click.Choice(tuple(ada_presets.ADA_PRESETS)), tag='-{}',
           help=f'ADA pipeline for --aug=ada or --with-dataaug  [default: {DEFAULT_AUGPIPE}]'),
    Option('--ada-own-p', is_bool=True, tag='-adaownp', requires='with_dataaug',
           help="With --with-dataaug, let ADA adapt its own p instead of sharing APA's"),
    Option('--ada-target', _open_unit, tag='-adatarget{}', requires='ada_own_p',
           help=f'Target of ADA\'s own p (--ada-own-p)  [default: {DEFAULT_TARGET}]'),
    Option('--ada-kimg', cli.FiniteFloatRange(min=0, min_open=True),
           help=f'kimg for an adaptive p to cross [0, 1]  [default: {DEFAULT_SPEED_KIMG}, '
                f'{RESUME_SPEED_KIMG} when resuming from a network pickle]'),
]


def describe(o: Dict[str, Any]) -> str:
    desc = f'-{o.aug}'
    if given(o, 'p'):
        desc += f'-p{o.p:g}'
    for dest, tag in [('target', '-target{:g}'), ('with_dataaug', '-dataaug'), ('augpipe', '-{}'),
                      ('ada_own_p', '-adaownp'), ('ada_target', '-adatarget{:g}')]:
        if given(o, dest):
            desc += tag.format(o[dest])
    return desc


def _controller(name: str, target: float, speed_kimg: float) -> Dict[str, Any]:
    return dict(class_name=CONTROLLER_CLASS, target=float(target), interval=ADAPT_INTERVAL,
                speed_kimg=float(speed_kimg), name=name)


def configure(b: ConfigBuilder, o: Dict[str, Any]) -> None:
    """Adds the APA transform, the ADA pipe and their controllers for `--aug`."""
    aug, p = o.aug, o.p
    if aug == 'fixed' and p is None:
        raise ConfigError('--p', '--aug=fixed needs --p (the fixed probability)')
    if p is not None and aug != 'fixed':
        raise ConfigError('--p', f'only applies with --aug=fixed (got --aug={aug}); adaptive modes start at p=0')
    if given(o, 'target') and aug not in ('apa', 'ada'):
        raise ConfigError('--target', f'only applies with --aug=apa or --aug=ada (got --aug={aug})')
    if o.with_dataaug and aug not in ('apa', 'fixed'):
        raise ConfigError('--with-dataaug', f'adds ADA next to APA, so it needs --aug=apa or --aug=fixed '
                                            f'(got --aug={aug}; --aug=ada already is ADA)')
    if given(o, 'ada_target') and not o.ada_own_p:
        raise ConfigError('--ada-target', 'only applies with --with-dataaug --ada-own-p (use --target for --aug=ada)')
    uses_ada = aug == 'ada' or o.with_dataaug
    if given(o, 'augpipe') and not uses_ada:
        raise ConfigError('--augpipe', 'selects the ADA pipeline, so it needs --aug=ada or --with-dataaug')
    adaptive = aug in ('apa', 'ada') or o.ada_own_p
    if given(o, 'ada_kimg') and not adaptive:
        raise ConfigError('--ada-kimg', 'sets the speed of an adaptive p; --aug=fixed/noaug have none')
    augpipe = o.augpipe or DEFAULT_AUGPIPE
    target = DEFAULT_TARGET if o.target is None else o.target
    speed = o.ada_kimg if o.ada_kimg is not None else (RESUME_SPEED_KIMG if b.facts.from_pickle
                                                       else DEFAULT_SPEED_KIMG)
    b.facts.ada_fixed_p = None
    if uses_ada:
        spec = dict(class_name=ADA_CLASS, **copy.deepcopy(ada_presets.ADA_PRESETS[augpipe]))
        # Adaptive pipes start at p=0 (the buffer's initial value); a fixed shared p is
        # given to the pipe as its starting p and, with no controller, stays there.
        if aug == 'fixed' and not o.ada_own_p:
            spec['p'] = float(p)
            b.facts.ada_fixed_p = float(p)
        b.add_augment(spec)
    if aug in ('apa', 'fixed'):
        b.add_real_transform(dict(class_name=APA_CLASS, p=float(p) if aug == 'fixed' else 0.0))
    if aug == 'apa':
        shared = [APA_MODULE] + ([ADA_MODULE] if o.with_dataaug and not o.ada_own_p else [])
        b.add_controller(_controller('apa', target, speed), shared, role='augment_p')
    if aug == 'ada':
        b.add_controller(_controller('ada', target, speed), [ADA_MODULE], role='augment_p')
    if o.ada_own_p:
        b.add_controller(_controller('ada', DEFAULT_TARGET if o.ada_target is None else o.ada_target, speed),
                         [ADA_MODULE], role='augment_p')
