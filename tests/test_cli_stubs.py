"""Entry points whose features are not in this version must refuse to run, not pretend."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('script', [])
def test_unimplemented_cli_fails_clearly(script):
    help_run = subprocess.run([sys.executable, script, '--help'], cwd=ROOT, capture_output=True, text=True)
    assert help_run.returncode == 0
    run = subprocess.run([sys.executable, script, '--outdir', 'nowhere'], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0
    assert 'not implemented' in run.stderr
    assert not os.path.exists(os.path.join(ROOT, 'nowhere'))
