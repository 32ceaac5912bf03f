"""train.py: --desc, --rerun, the start-time detector check, --cudnn-benchmark."""

import json
import os

import pytest

import dnnlib
from train_helpers import TINY, invoke, newest_run_dir, run_ok, write_blobs


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return write_blobs(str(tmp_path_factory.mktemp('data') / 'blobs.zip'))


def test_desc_names_the_run(tmp_path, dataset):
    run_ok(['--outdir', tmp_path, '--data', dataset, '--desc=try2'] + TINY)
    assert newest_run_dir(tmp_path).endswith('-apa-try2')
    res = invoke(['--outdir', tmp_path / 'x', '--data', dataset, '--desc=a/b'] + TINY)
    assert res.exit_code == 2 and '--desc' in res.output and not os.path.exists(tmp_path / 'x')


def test_rerun_repeats_a_run_from_its_options_file(tmp_path, dataset):
    run_ok(['--outdir', tmp_path / 'a', '--data', dataset, '--lecam=0.1'] + TINY)
    first = newest_run_dir(tmp_path / 'a')
    options = os.path.join(first, 'training_options.json')
    res = run_ok(['--outdir', tmp_path / 'b', '--rerun', options, '--desc=again'])
    second = newest_run_dir(tmp_path / 'b')
    assert os.path.basename(second) == os.path.basename(first).replace('00000-', '00000-', 1) + '-rerun-again'
    assert 'Rerunning' in res.output
    with open(options) as f, open(os.path.join(second, 'training_options.json')) as g:
        a, b = json.load(f), json.load(g)
    assert a.pop('run_dir') != b.pop('run_dir') and a == b
    # The same tree from the same seed: the same images.
    fakes = sorted(x for x in os.listdir(first) if x.startswith('fakes0'))
    for name in fakes:
        with open(os.path.join(first, name), 'rb') as f, open(os.path.join(second, name), 'rb') as g:
            assert f.read() == g.read(), name
    for extra, what in [(['--kimg=1'], '--kimg'), ([], None)]:
        if what is None:
            continue
        res = invoke(['--outdir', tmp_path / 'c', '--rerun', options] + extra)
        assert res.exit_code == 2 and what in res.output
    res = invoke(['--outdir', tmp_path / 'c', '--rerun', str(tmp_path / 'nothing.json')])
    assert res.exit_code == 2 and 'cannot read' in res.output
    res = invoke(['--outdir', tmp_path / 'c'])
    assert res.exit_code == 2 and '--data' in res.output


def test_missing_metric_detector_fails_before_training(tmp_path, dataset, monkeypatch):
    def offline(url, *args, **kwargs):
        raise OSError(f'Could not download {url}: offline')
    monkeypatch.setattr(dnnlib, 'open_url', offline)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    res = invoke(['--outdir', tmp_path / 'runs', '--data', dataset] + TINY + ['--metrics=fid50k_full'])
    assert res.exit_code == 2, res.output
    assert '--metrics' in res.output and 'inception-2015-12-05.pt' in res.output and 'put it at' in res.output
    assert not os.path.exists(tmp_path / 'runs')
    # A replacement detector needs no official file.
    run_ok(['--outdir', tmp_path / 'runs', '--data', dataset] + TINY + ['--metrics=fid50k_full', '--kimg=0.008',
                                                                        '--detector=digits', '--snap=100'])


def test_cudnn_benchmark_spellings(tmp_path, dataset):
    for args, expected in [([], True), (['--cudnn-benchmark=0'], False), (['--nobench=1'], False)]:
        res = run_ok(['--outdir', tmp_path, '--data', dataset, '--dry-run'] + TINY + args)
        tree = json.loads(res.output[res.output.index('{'):res.output.rindex('}') + 1])
        assert tree['cudnn_benchmark'] is expected, args


def test_detector_dir_is_searched_first(tmp_path, monkeypatch):
    from metrics import detectors  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(dnnlib, 'open_url', lambda url, *a, **k: (_ for _ in ()).throw(OSError('offline')))
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    (tmp_path / 'dets').mkdir()
    (tmp_path / 'dets' / 'inception-2015-12-05.pt').write_bytes(b'x')
    assert detectors.ensure_official_detector('inception', str(tmp_path / 'dets')) == \
        str(tmp_path / 'dets' / 'inception-2015-12-05.pt')
    with pytest.raises(detectors.DetectorNotFoundError, match='--detector-dir'):
        detectors.ensure_official_detector('vgg16', str(tmp_path / 'dets'))


def test_resume_new_methods_needs_a_state_resume(tmp_path, dataset):
    res = invoke(['--outdir', tmp_path, '--data', dataset, '--resume-new-methods=1'] + TINY)
    assert res.exit_code == 2 and '--resume-new-methods' in res.output and not os.listdir(tmp_path)
