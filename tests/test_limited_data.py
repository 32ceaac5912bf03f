"""The digits detector (domain FID features) and a smoke run of the limited-data benchmark."""

import json
import os
import sys

import numpy as np
import pytest
import torch

from metrics import detectors, digits_detector
from metrics.frechet_inception_distance import frechet_distance
from train_helpers import invoke

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))


@pytest.fixture(scope='module')
def detector():
    return detectors.get_detector('inception', 'digits')


def test_shipped_detector_classifies_the_digits(detector):
    images, labels = digits_detector.digit_images(resolution=32)     # the demo's resolution
    net = detector.module
    with torch.no_grad():
        logits = net(torch.from_numpy(images), return_features=False)
        features = detector(torch.from_numpy(images[:8]), return_features=True)
    accuracy = float((logits.argmax(1).numpy() == labels).mean())
    assert accuracy > 0.97, accuracy
    assert features.shape == (8, 128)
    # RGB input (a generator's 3-channel rendering) gives the same features as grey.
    rgb = torch.from_numpy(images[:8]).repeat(1, 3, 1, 1)
    torch.testing.assert_close(detector(rgb, return_features=True), features)


def _stats(x):
    x = x.numpy().astype(np.float64)
    return x.mean(0), np.cov(x, rowvar=False)


def test_domain_fid_separates_digits_from_non_digits(detector):
    images, _ = digits_detector.digit_images(resolution=16)
    rng = np.random.RandomState(0)
    order = rng.permutation(len(images))
    with torch.no_grad():
        a = detector(torch.from_numpy(images[order[:800]]), return_features=True)
        b = detector(torch.from_numpy(images[order[800:1600]]), return_features=True)
        # Blurry blobs of the same brightness: image statistics of a collapsed generator.
        blobs = torch.from_numpy(images[order[:800]]).float().mean(0, keepdim=True).repeat(800, 1, 1, 1)
        blobs = (blobs + torch.from_numpy(rng.normal(0, 20, blobs.shape)).float()).clamp(0, 255)
        c = detector(blobs.to(torch.uint8), return_features=True)
    same = frechet_distance(*_stats(a), *_stats(b))
    other = frechet_distance(*_stats(a), *_stats(c))
    assert other > 20 * same, (same, other)


def test_train_rejects_a_missing_detector_file(tmp_path):
    result = invoke(['--outdir', str(tmp_path), '--data', 'demo', '--cfg', 'cpu', '--metrics', 'fid50_full',
                     '--detector', str(tmp_path / 'nope.pkl'), '--dry-run'])
    assert result.exit_code != 0
    assert '--detector' in result.output and 'nope.pkl' in result.output


@pytest.mark.slow
def test_benchmark_smoke_run(tmp_path):
    import limited_data   # benchmarks/limited_data.py
    out = tmp_path / 'ld'
    limited_data.main(['--outdir', str(out), '--sizes', '24', '--methods', 'noaug,apa', '--spread-seeds', '',
                       '--kimg', '0.128', '--snap-kimg', '0.064', '--metric', 'fid100_full', '--jobs', '2'])
    with open(out / 'results.json', encoding='utf-8') as f:
        data = json.load(f)
    assert [r['method'] for r in data['results']] == ['noaug', 'apa']
    for r in data['results']:
        assert r['num_train'] == 24 and r['num_heldout_scored'] == 1000
        assert len(r['snapshots']) == 2
        for s in r['snapshots']:
            assert np.isfinite(s['fid']) and s['fid'] > 0
            for key in ('D_train', 'D_heldout', 'D_fake'):
                assert np.isfinite(s[key]['mean']) and -1 <= s[key]['sign'] <= 1
    assert data['results'][1]['p'], 'APA reports its p'
    assert not data['results'][0]['p']
    for name in ('fid.png', 'd_outputs.png', 'p.png', 'results.csv', 'summary.md'):
        assert (out / name).stat().st_size > 0, name
    summary = (out / 'summary.md').read_text()
    assert '| 24 | noaug |' in summary and '| 24 | apa |' in summary
    # A second call reuses the finished runs instead of training again.
    limited_data.main(['--outdir', str(out), '--sizes', '24', '--methods', 'noaug', '--spread-seeds', '',
                       '--kimg', '0.128', '--snap-kimg', '0.064', '--metric', 'fid100_full'])
    assert len(os.listdir(out / 'runs' / '00024-noaug-seed0')) == 2   # the run dir and result.json


def test_training_reports_the_domain_fid(tmp_path):
    from train_helpers import TINY, newest_run_dir, run_ok
    args = [a for a in TINY if not a.startswith('--metrics')]
    run_ok(['--outdir', tmp_path, '--data', 'demo', '--subset', '16', *args, '--metrics', 'fid50_full',
            '--detector', 'digits'])
    run_dir = newest_run_dir(tmp_path)
    with open(os.path.join(run_dir, 'metric-fid50_full.jsonl'), encoding='utf-8') as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 1 and np.isfinite(rows[0]['results']['fid50_full'])
    with open(os.path.join(run_dir, 'training_options.json'), encoding='utf-8') as f:
        assert json.load(f)['metric_detector']['inception'] == digits_detector.DETECTOR_PATH


@pytest.mark.slow
def test_benchmark_takes_a_dataset_zip(tmp_path):
    import limited_data   # benchmarks/limited_data.py
    from train_helpers import write_blobs
    data = write_blobs(str(tmp_path / 'blobs.zip'), num=40)
    out = tmp_path / 'ld'
    limited_data.main(['--outdir', str(out), '--data', data, '--sizes', '50%', '--methods', 'ada',
                       '--spread-seeds', '', '--cfg', 'cpu', '--kimg', '0.064', '--snap-kimg', '0.064',
                       '--metric', 'fid50_full', '--detector', 'digits', '--extra=--cbase=256 --cmax=16'])
    with open(out / 'results.json', encoding='utf-8') as f:
        data = json.load(f)
    (r,) = data['results']
    assert r['num_train'] == 20 and r['num_heldout_scored'] == 20    # 50% of 40; the other half held out
    assert '--ada-kimg=0.1' in r['command']   # a tenth of --kimg, at least 0.1 and '--cfg=cpu' in r['command']
    assert len(r['snapshots']) == 1 and np.isfinite(r['snapshots'][0]['fid'])
