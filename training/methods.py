"""The method registry: every data-efficient method declares its options once, here they meet.

A method is one module with:

- `TITLE`: the heading of its options in `train.py --help`;
- `OPTIONS`: a list of `Option` (flag, type with its range, default, help, run-name tag,
  the option it requires) -- the only place an option is declared: train.py builds its
  click options from it and `presets.build` validates direct calls with the same types;
- `configure(builder, o)`: adds the method's parts to the config tree through the
  `ConfigBuilder` (augmentations, real-batch transforms, loss terms, controllers), reading
  its options from `o` (all options, defaults filled in);
- optionally `describe(o) -> str`, its part of the run-directory name (default: the tags
  of its options that differ from their defaults).

`METHODS` lists the modules in the order they configure (a method that joins another's
controller comes after it). Adding a method is one new module and one line here.
"""

import dataclasses
import importlib
from typing import Any, Callable, Dict, List, Optional, Sequence

import click

import dnnlib

METHODS = (
    'training.augment.modes',        # --aug: APA, ADA, fixed p, none (and --with-dataaug)
    'training.augment.diffaugment',  # --diffaugment
    'training.heads.insgen',         # --insgen
    'training.heads.vision_aided',   # --cv
    'training.heads.lecam',          # --lecam
    'training.augment.linear_p',     # --ada-linear
)


class ConfigError(ValueError):
    """A bad option value or combination; `flag` names the option(s) at fault."""

    def __init__(self, flag: str, message: str):
        super().__init__(f'{flag}: {message}')
        self.flag = flag
        self.message = message


@dataclasses.dataclass
class Option:
    """One command-line option of a method.

    Attributes:
        flag: '--name' as typed.
        type: A click type (with its range) or a Python type.
        default: The value when the option is not given (None: the method decides).
        help: Help text.
        metavar: Shown in --help.
        multiple: May be given several times (the value is a tuple).
        is_bool: A boolean value option (`--x=1`, `--x=true`, or the bare flag).
        tag: Run-name part when the value differs from the default: a format string with
            `{}` for the value (e.g. '-target{}'), or a function value -> str.
        requires: The dest of an option that must be set (truthy) for this one to apply.
        check: Extra validation value -> None, raising ValueError with the reason.
    """

    flag: str
    type: Any = str
    default: Any = None
    help: str = ''
    metavar: Optional[str] = None
    multiple: bool = False
    is_bool: bool = False
    tag: Any = None
    requires: Optional[str] = None
    check: Optional[Callable[[Any], None]] = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip('-').replace('-', '_')

    def click_option(self) -> Callable:
        """The click.option decorator of this option (click's default is None, or () and
        False: the declared default is filled in by `parse_options`)."""
        help_text = self.help
        if self.requires:
            parent = self.requires.replace('_', '-')
            help_text += f'  [with --{parent}]'
        if self.is_bool:
            return click.option(self.flag, self.dest, type=bool, is_flag=False, flag_value=True, default=False,
                                show_default=True, metavar='BOOL', help=help_text)
        if self.default is not None:
            help_text += f'  [default: {_fmt(self.default)}]'
        kwargs: Dict[str, Any] = dict(type=self.type, default=() if self.multiple else None, multiple=self.multiple)
        if self.metavar:
            kwargs['metavar'] = self.metavar
        return click.option(self.flag, self.dest, help=help_text, **kwargs)

    def convert(self, value: Any) -> Any:
        """Validates a given value (click has converted it already for train.py; direct
        calls of `presets.build` come through here too)."""
        try:
            if self.is_bool:
                value = value if isinstance(value, bool) else click.BOOL.convert(value, None, None)
            elif self.multiple:
                value = tuple(_convert(self.type, v) for v in value)
            else:
                value = _convert(self.type, value)
            if self.check is not None:
                self.check(value)
        except click.BadParameter as e:
            raise ConfigError(self.flag, e.message) from None
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(self.flag, str(e.args[0] if e.args else e)) from None
        return value


def _convert(kind: Any, value: Any) -> Any:
    if isinstance(kind, click.ParamType):
        return kind.convert(value, None, None)
    if kind in (int, float, str):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ValueError(f'expected {kind.__name__}, got {value!r}') from None
    return value


def method_modules() -> List[Any]:
    """The registered method modules, in configure order."""
    return [importlib.import_module(name) for name in METHODS]


def all_options() -> List[Option]:
    """Every method option, in registry order; flags are unique."""
    seen: Dict[str, str] = {}
    out: List[Option] = []
    for module in method_modules():
        for opt in module.OPTIONS:
            if opt.dest in seen:
                raise RuntimeError(f'option {opt.flag} is declared by {seen[opt.dest]} and {module.__name__}')
            seen[opt.dest] = module.__name__
            out.append(opt)
    return out


def option_names() -> List[str]:
    return [opt.dest for opt in all_options()]


def parse_options(values: Dict[str, Any]) -> dnnlib.EasyDict:
    """All method options: given values validated, the others at their defaults.

    An option counts as given when its value is not None (not empty for multiple ones, true
    for booleans); `o._given` is the set of those names.

    Raises:
        ConfigError: a bad value, or a value for an option whose `requires` is not set.
        TypeError: a name no method declares.
    """
    options = all_options()
    unknown = sorted(set(values) - {opt.dest for opt in options})
    if unknown:
        raise TypeError(f'unknown method option(s): {", ".join(unknown)}')
    o = dnnlib.EasyDict()
    was_given = set()
    for opt in options:
        raw = values.get(opt.dest)
        if opt.is_bool:
            value = opt.convert(raw) if raw is not None else False
            present = bool(value)
        elif opt.multiple:
            value = opt.convert(raw) if raw else ()
            present = bool(value)
        else:
            value = opt.convert(raw) if raw is not None else None
            present = value is not None
            if not present:
                value = opt.default
        o[opt.dest] = value
        if present:
            was_given.add(opt.dest)
    by_dest = {opt.dest: opt for opt in options}
    for opt in options:
        if opt.requires and opt.dest in was_given and not o[opt.requires]:
            parent = by_dest[opt.requires]
            spelled = f'{parent.flag}=1' if parent.is_bool else parent.flag
            raise ConfigError(opt.flag, f'only applies with {spelled}')
    o._given = was_given
    return o


def given(o: Dict[str, Any], dest: str) -> bool:
    """Whether option `dest` was given (see `parse_options`)."""
    return dest in o.get('_given', ())


def describe(o: Dict[str, Any]) -> str:
    """The methods' part of the run-directory name."""
    desc = ''
    for module in method_modules():
        fn = getattr(module, 'describe', None)
        if fn is not None:
            desc += fn(o)
            continue
        for opt in module.OPTIONS:
            if opt.tag is None or not given(o, opt.dest):
                continue
            desc += opt.tag(o[opt.dest]) if callable(opt.tag) else opt.tag.format(_fmt(o[opt.dest]))
    return desc


def _fmt(value: Any) -> str:
    return f'{value:g}' if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------
# What methods add to the config tree.

class ConfigBuilder:
    """The API through which methods add their parts to the config tree.

    Attributes:
        c: The tree (`augment_kwargs`, `real_transform_kwargs`, `heads_kwargs`,
            `controllers` are written by `finish`).
        facts: What methods may read about the run: num_images (after --subset, x2 with
            --mirror), from_pickle (fine-tuning from a network pickle), total_kimg, lr_d
            (D's learning rate), ada_fixed_p (the p of an ADA pipe held fixed, or None).
    """

    def __init__(self, c: dnnlib.EasyDict, facts: Dict[str, Any]):
        self.c = c
        self.facts = dnnlib.EasyDict(facts)
        self._augments: List[Dict[str, Any]] = []
        self._transforms: List[Dict[str, Any]] = []
        self._terms: List[Dict[str, Any]] = []
        self._controllers: List[dnnlib.EasyDict] = []
        self._roles: List[Optional[str]] = []

    def add_augment(self, spec: Dict[str, Any]) -> None:
        """Appends an augmentation to the stage in front of D (applied in order)."""
        self._augments.append(dnnlib.EasyDict(spec))

    def has_augment(self, class_name: str) -> bool:
        return any(a.get('class_name') == class_name for a in self._augments)

    def add_real_transform(self, spec: Dict[str, Any]) -> None:
        """Appends a real-batch transform (applied in order)."""
        self._transforms.append(dnnlib.EasyDict(spec))

    def add_loss_term(self, spec: Dict[str, Any]) -> dnnlib.EasyDict:
        """Appends a loss term (an extra D head or regulariser)."""
        entry = dnnlib.EasyDict(spec)
        self._terms.append(entry)
        return entry

    def add_controller(self, spec: Dict[str, Any], modules: Sequence[str], role: Optional[str] = None) -> dnnlib.EasyDict:
        """Adds a controller of the `p` of the modules at `modules` (paths such as
        'real_transform', 'augment.ada', '<head>.augment_pipe'). `role` marks what it is
        for other methods ('augment_p': the run's APA/ADA p)."""
        entry = dnnlib.EasyDict(spec, modules=list(modules))
        self._controllers.append(entry)
        self._roles.append(role)
        return entry

    def controllers(self, role: Optional[str] = None) -> List[dnnlib.EasyDict]:
        """The controllers added so far (with `role`: only those)."""
        return [ctrl for ctrl, r in zip(self._controllers, self._roles) if role is None or r == role]

    def replace_controller(self, ctrl: Dict[str, Any], spec: Dict[str, Any]) -> None:
        """Gives a controller another rule (`spec`: class_name and arguments); it keeps the
        modules it drives and its role."""
        modules = list(ctrl['modules'])
        ctrl.clear()
        ctrl.update(spec, modules=modules)

    def share_p(self, driven: str, path: str) -> bool:
        """Makes every controller that drives `driven` drive `path` too; False if none does."""
        shared = False
        for ctrl in self._controllers:
            if driven in ctrl.modules:
                ctrl.modules.append(path)
                shared = True
        return shared

    def finish(self, stage_class: str) -> None:
        """Writes the parts into the tree."""
        self.c.augment_kwargs = dnnlib.EasyDict(class_name=stage_class, augments=self._augments) \
            if self._augments else None
        if not self._transforms:
            self.c.real_transform_kwargs = None
        elif len(self._transforms) == 1:
            self.c.real_transform_kwargs = self._transforms[0]
        else:
            self.c.real_transform_kwargs = list(self._transforms)
        self.c.heads_kwargs = list(self._terms)
        self.c.controllers = list(self._controllers)


def configure_all(builder: ConfigBuilder, o: Dict[str, Any]) -> None:
    for module in method_modules():
        module.configure(builder, o)
