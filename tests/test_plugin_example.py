"""The complete example method of docs/architecture.md, registered and trained as written."""

import importlib
import json
import os
import re
import sys

import pytest
from click.testing import CliRunner

from train_helpers import TINY, newest_run_dir, write_blobs
from torch_utils import training_stats
from training import methods, presets

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs', 'architecture.md')


@pytest.fixture
def drift_method(tmp_path, monkeypatch):
    with open(DOC, encoding='utf-8') as f:
        text = f.read()
    block = re.search(r'\*\*A complete method\.\*\*.*?```python\n(.*?)```', text, re.S).group(1)
    (tmp_path / 'example_drift.py').write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(methods, 'METHODS', methods.METHODS + ('example_drift',))
    yield
    monkeypatch.undo()
    sys.modules.pop('example_drift', None)
    import train  # pylint: disable=import-outside-toplevel
    importlib.reload(train)           # back to the registered methods only


def test_the_documented_method_plugs_in(tmp_path, drift_method):
    data = dict(data_path='d.zip', data_name='d', resolution=16, num_images=10, has_labels=False)
    c, desc = presets.build(**data, cfg='cpu', drift=0.001)
    assert c.heads_kwargs == [dict(class_name='example_drift.DriftPenalty', eps=0.001)]
    assert desc == 'd-cpu-apa-drift0.001'
    with pytest.raises(presets.ConfigError) as e:
        presets.build(**data, cfg='cpu', drift=-1)
    assert e.value.flag == '--drift'

    import train  # pylint: disable=import-outside-toplevel
    train = importlib.reload(train)   # its options are built from the registry at import
    help_text = CliRunner().invoke(train.main, ['--help']).output
    assert 'Drift penalty (--drift):' in help_text and '--drift EPS' in help_text
    dataset = write_blobs(str(tmp_path / 'blobs.zip'))
    training_stats._reset()
    res = CliRunner().invoke(train.main, ['--outdir', str(tmp_path / 'runs'), '--data', dataset, '--drift=0.5'] + TINY)
    assert res.exit_code == 0, res.output
    run_dir = newest_run_dir(tmp_path / 'runs')
    assert run_dir.endswith('-drift0.5')
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    assert rows[-1]['Loss/drift/penalty']['num'] > 0
