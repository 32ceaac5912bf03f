"""calc_metrics.py end to end: a real (tiny) generator in a network file, a dataset zip and a
stand-in TorchScript detector; the same numbers from one and from two processes; clear
errors for bad options and missing detectors."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import calc_metrics
import dnnlib
from metrics import detectors
from test_metrics import random_images, save_tiny_detector, write_dataset_zip
from torch_utils import netfile
from training import networks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ['fid40_full', 'kid40', 'pr403_full', 'is40', 'ppl2_wend16', 'ppl_zfull8']


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp('calc')
    data = write_dataset_zip(str(d / 'data.zip'), random_images(40, seed=3))
    det = save_tiny_detector(str(d / 'det.pt'))
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    run_dir = d / 'run'
    run_dir.mkdir()
    pkl = run_dir / 'network-snapshot-000000.pkl'
    # Trained on a 20-image subset: the metrics still use all 40 images.
    netfile.save_network_pickle(str(pkl), dict(G_ema=G, training_set_kwargs=dict(
        class_name='training.dataset.ImageFolderDataset', path=data, max_size=20, xflip=False)))
    # One thread per process in both runs: PPL divides by epsilon^2 and so magnifies the
    # last-bit differences that another thread count (reduction order) would bring.
    env = dict(os.environ, DNNLIB_CACHE_DIR=str(d / 'cache'), OMP_NUM_THREADS='1')
    return dnnlib.EasyDict(dir=d, data=data, det=det, pkl=str(pkl), run_dir=run_dir, env=env)


def _run(setup, *args):
    cmd = [sys.executable, 'calc_metrics.py', '--network', setup.pkl, '--metrics', ','.join(METRICS),
           '--detector', setup.det, '--device', 'cpu', '--batch', '16', *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=setup.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{')]
    return proc.stdout, {r['metric']: r for r in rows}


def test_calc_metrics_one_and_two_processes_agree(setup):
    out1, rows1 = _run(setup, '--gpus', '1')
    assert '(40 images' in out1 and 'subset of 20 images' in out1
    # Written beside the network file, one row per metric.
    for metric in METRICS:
        lines = (setup.run_dir / f'metric-{metric}.jsonl').read_text().splitlines()
        assert len(lines) == 1 and json.loads(lines[0]) == rows1[metric]
        assert rows1[metric]['snapshot_pkl'] == 'network-snapshot-000000.pkl'
        assert rows1[metric]['num_gpus'] == 1
    r = {k: v for row in rows1.values() for k, v in row['results'].items()}
    assert r['fid40_full'] > 0.01 and math.isfinite(r['kid40'])
    assert 0 <= r['pr403_full_precision'] <= 1 and 0 <= r['pr403_full_recall'] <= 1
    assert 1 <= r['is40_mean'] <= 10 and r['is40_std'] >= 0
    assert r['ppl2_wend16'] > 0 and r['ppl_zfull8'] > 0

    # Two CPU processes, without the statistics cache so the dataset is sharded too.
    out2, rows2 = _run(setup, '--gpus', '2', '--no-cache', '--no-jsonl', '--metricdata', setup.data)
    for metric in METRICS:
        assert rows2[metric]['num_gpus'] == 2
        for key, value in rows1[metric]['results'].items():
            assert rows2[metric]['results'][key] == value, key  # Bit for bit.
        assert len((setup.run_dir / f'metric-{metric}.jsonl').read_text().splitlines()) == 1


def test_bad_options_fail_with_clear_messages(setup, tmp_path, monkeypatch):
    runner = CliRunner()
    res = runner.invoke(calc_metrics.main, ['--network', setup.pkl, '--metrics', 'fid50k_ful', '--device', 'cpu'])
    assert res.exit_code != 0 and 'Unknown metric "fid50k_ful"' in res.output

    res = runner.invoke(calc_metrics.main, ['--network', str(tmp_path / 'missing.pkl'), '--device', 'cpu'])
    assert res.exit_code != 0 and 'missing.pkl' in res.output

    res = runner.invoke(calc_metrics.main, ['--network', setup.pkl, '--metricdata', str(tmp_path / 'none.zip'),
                                            '--device', 'cpu', '--detector', setup.det])
    assert res.exit_code != 0 and '--metricdata' in res.output and 'none.zip' in res.output

    # A network file without its training set needs --metricdata.
    bare = tmp_path / 'bare.pkl'
    netfile.save_network_pickle(str(bare), dict(G_ema=netfile.load_network(setup.pkl)['G_ema']))
    res = runner.invoke(calc_metrics.main, ['--network', str(bare), '--device', 'cpu'])
    assert res.exit_code != 0 and '--metricdata' in res.output

    # No detector on disk and no network: the message says which file and where to put it.
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv(detectors.DETECTOR_DIR_ENV, raising=False)

    def offline(url, *args, **kwargs):
        raise dnnlib.DownloadError(url, None, OSError('network unreachable'))
    monkeypatch.setattr(dnnlib, 'open_url', offline)
    res = runner.invoke(calc_metrics.main, ['--network', setup.pkl, '--metrics', 'pr50k3_full', '--device', 'cpu',
                                            '--no-jsonl'])
    assert res.exit_code != 0
    assert 'vgg16.pt' in res.output and '--detector-dir' in res.output
    assert os.path.join(str(tmp_path / 'cache'), 'detectors', 'vgg16.pt') in res.output


def test_bool_spellings_and_device_conventions(setup, tmp_path):
    """--cache/--jsonl/--mirror are value booleans (old --no-cache/--no-jsonl still work);
    --device follows torch_utils.cli (auto, cpu, cuda, cuda:N)."""
    runner = CliRunner()
    jsonl = setup.run_dir / 'metric-fid40_full.jsonl'
    before = jsonl.read_text() if jsonl.exists() else None
    for args in (['--jsonl=0', '--cache=false'], ['--no-jsonl', '--no-cache'], ['--jsonl', '0', '--mirror=1']):
        res = runner.invoke(calc_metrics.main, ['--network', setup.pkl, '--metrics', 'fid40_full', '--detector',
                                                setup.det, '--device', 'cpu', '--batch', '16', *args],
                            env={'DNNLIB_CACHE_DIR': str(tmp_path / 'cache')})
        assert res.exit_code == 0, res.output
        assert '"fid40_full"' in res.output
    assert (jsonl.read_text() if jsonl.exists() else None) == before  # jsonl off each time.
    res = runner.invoke(calc_metrics.main, ['--network', setup.pkl, '--device', 'tpu'])
    assert res.exit_code == 2 and '--device' in res.output
    res = runner.invoke(calc_metrics.main, ['--network', setup.pkl, '--mirror=maybe', '--device', 'cpu'])
    assert res.exit_code == 2 and '--mirror' in res.output


def test_torchrun_gpus_disagreement_is_refused(setup, monkeypatch):
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', '29999')
    res = CliRunner().invoke(calc_metrics.main, ['--network', setup.pkl, '--gpus', '3', '--device', 'cpu'])
    assert res.exit_code == 2 and 'WORLD_SIZE=2' in res.output and '--gpus' in res.output


@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_one(setup):
    """Started by torchrun (two CPU ranks, gloo), the results equal the single-process ones."""
    metrics = 'fid40_full,kid40'
    base = [sys.executable, 'calc_metrics.py', '--network', setup.pkl, '--metrics', metrics, '--detector', setup.det,
            '--device', 'cpu', '--batch', '16', '--no-jsonl', '--cache=0', '--metricdata', setup.data]
    one = subprocess.run(base, cwd=ROOT, env=setup.env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stdout + one.stderr
    from torch_utils import distributed
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node=2',
           f'--master-port={distributed.find_free_port()}', *base[1:]]
    two = subprocess.run(cmd, cwd=ROOT, env=setup.env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    rows1 = {r['metric']: r for r in map(json.loads, [l for l in one.stdout.splitlines() if l.startswith('{')])}
    rows2 = [json.loads(l) for l in two.stdout.splitlines() if l.startswith('{')]
    assert len(rows2) == 2  # Rank 0 alone reports.
    for row in rows2:
        assert row['num_gpus'] == 2 and row['results'] == rows1[row['metric']]['results']


def test_metricdata_accepts_a_named_dataset(setup, tmp_path, monkeypatch):
    from training import named_datasets
    monkeypatch.setitem(named_datasets.REGISTRY, '100-shot-obama', named_datasets.NamedDataset(
        '100-shot-obama', 'file://' + setup.data, None, 'test'))
    monkeypatch.setattr(dnnlib.util, '_cache_dir', str(tmp_path / 'cache'))
    res = CliRunner().invoke(calc_metrics.main, ['--network', setup.pkl, '--metrics', 'fid40_full', '--detector',
                                                 setup.det, '--device', 'cpu', '--jsonl=0',
                                                 '--metricdata', '100-shot-obama'])
    assert res.exit_code == 0, res.output
    cached = str(tmp_path / 'cache' / 'datasets' / '100-shot-obama.zip')
    assert f'Metric dataset: {cached} (40 images' in res.output
