"""Conventions shared by every command-line tool (train, generate, calc_metrics, ...).

- Booleans are value options: `--mirror=1`, `--mirror=true`, `--mirror=yes` (and 0, false,
  no), or the bare flag `--mirror` for true; every one defaults to false and has a positive
  name (no `--no-x`).
- `--device` is `auto` (CUDA when available, else the CPU), `cpu`, `cuda` or `cuda:N`.
- Durations of training are in kimg.
- Float options refuse nan and inf at parse time.
"""

import math
from typing import Any, Dict, Optional

import click
import torch

# Keyword arguments of click.option for a boolean value option.
BOOL: Dict[str, Any] = dict(type=bool, is_flag=False, flag_value=True, default=False, show_default=True,
                            metavar='BOOL')

DEVICE_HELP = 'auto (CUDA when available), cpu, cuda or cuda:N'


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which pass its comparisons or overflow
    later, after outputs exist)."""

    def _describe_range(self) -> str:
        if self.min is None and self.max is None:
            return 'finite'
        return super()._describe_range()

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f'{value} is not a finite number', param, ctx)
        return value


def device_option(**kwargs: Any):
    """The `--device` option of every tool (default auto)."""
    opts = dict(metavar='auto|cpu|cuda[:N]', default='auto', show_default=True, help=DEVICE_HELP)
    opts.update(kwargs)
    return click.option('--device', **opts)


def resolve_device(value: Optional[str], param_hint: str = '--device') -> torch.device:
    """A `--device` value as a torch.device; click.BadParameter for anything unusable here.

    Args:
        value: 'auto' or None (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.
        param_hint: The option named in errors.
    """
    text = 'auto' if value is None else str(value).strip().lower()
    if text == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f'{value!r} is not a device; use {DEVICE_HELP}', param_hint=param_hint) from None
    if device.type not in ('cpu', 'cuda'):
        raise click.BadParameter(f'{value!r}: only cpu and cuda devices are supported', param_hint=param_hint)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise click.BadParameter('CUDA is not available on this machine; use --device=cpu',
                                     param_hint=param_hint)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise click.BadParameter(f'{value!r}: only {torch.cuda.device_count()} CUDA device(s) are visible',
                                     param_hint=param_hint)
    return device
