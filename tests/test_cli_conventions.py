"""torch_utils.cli: the conventions every tool shares."""

import click
import pytest
import torch
from click.testing import CliRunner

from torch_utils import cli


@click.command()
@click.option('--mirror', **cli.BOOL)
@click.option('--x', type=cli.FiniteFloatRange(min=0), default=1.0)
@cli.device_option()
def _tool(mirror, x, device):
    click.echo(f'{mirror} {x} {cli.resolve_device(device)}')


@pytest.mark.parametrize('args,expected', [
    ([], 'False'), (['--mirror'], 'True'), (['--mirror=1'], 'True'), (['--mirror=0'], 'False'),
    (['--mirror=true'], 'True'), (['--mirror=no'], 'False'), (['--mirror', 'yes'], 'True'),
])
def test_bool_spellings(args, expected):
    result = CliRunner().invoke(_tool, args + ['--device=cpu'])
    assert result.exit_code == 0, result.output
    assert result.output.split()[0] == expected


@pytest.mark.parametrize('value', ['nan', 'inf', '-1'])
def test_float_refuses_nonfinite_and_out_of_range(value):
    result = CliRunner().invoke(_tool, [f'--x={value}', '--device=cpu'])
    assert result.exit_code == 2 and '--x' in result.output


def test_device_values():
    assert cli.resolve_device('cpu') == torch.device('cpu')
    assert cli.resolve_device('auto').type == ('cuda' if torch.cuda.is_available() else 'cpu')
    assert cli.resolve_device(None) == cli.resolve_device('auto')
    for bad in ['tpu', 'gpu0', 'cuda:x']:
        with pytest.raises(click.BadParameter, match='device'):
            cli.resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(click.BadParameter, match='--device=cpu'):
            cli.resolve_device('cuda:0')
