"""Every command-line tool answers --help, and every one of its options is documented."""

import importlib
import os
import subprocess
import sys

import click
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ['train', 'generate', 'calc_metrics', 'dataset_tool', 'select_backbone', 'projector', 'style_mixing',
         'rank_samples']


@pytest.mark.parametrize('tool', TOOLS)
def test_every_option_has_help(tool):
    command = importlib.import_module(tool).main
    assert isinstance(command, click.Command)
    undocumented = [p.name for p in command.params if isinstance(p, click.Option) and not (p.help or '').strip()]
    assert undocumented == [], f'{tool}.py options without help: {undocumented}'


@pytest.mark.parametrize('tool', ['train', 'dataset_tool', 'projector'])
def test_help_runs_as_a_script(tool):
    res = subprocess.run([sys.executable, f'{tool}.py', '--help'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert 'Usage:' in res.stdout and '--help' in res.stdout
