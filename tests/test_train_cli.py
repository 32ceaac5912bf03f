"""train.py end to end: option checking, dry runs, two-tick runs per method, resume, 2 processes.

Runs use a 16x16 grayscale dataset of 32 labelled images written by the test and a network
of 16 channels, so that a two-tick run (4 steps of 4 images) takes seconds on a CPU.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from torch_utils import distributed, netfile
from training.dataset import DatasetWriter
from train_helpers import TINY, invoke, newest_run_dir, run_ok, write_blobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """A 16x16 grayscale zip with 32 images (soft blobs) and 4 classes."""
    return write_blobs(str(tmp_path_factory.mktemp('data') / 'blobs.zip'), seed=123, num_classes=4)


@pytest.fixture(scope='module')
def unlabelled(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('data') / 'plain')
    with DatasetWriter(path) as w:
        for i in range(8):
            w.add(np.full([16, 16, 3], i * 20, np.uint8))
    return path


only_run_dir = newest_run_dir


def state_nimg(run_dir):
    """Image count of the newest training state of a run."""
    path = train.find_training_state(run_dir)
    assert path is not None, f'no training state in {run_dir}: {os.listdir(run_dir)}'
    return torch.load(path, map_location='cpu', weights_only=True)['progress']['cur_nimg']


def newest_pickle(run_dir):
    pkls = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')), key=os.path.getmtime)
    assert pkls, f'no network snapshot in {run_dir}: {os.listdir(run_dir)}'
    return netfile.load_network_pickle(pkls[-1])


# ---------------------------------------------------------------------------------------
# Options and dry runs (no training).


def test_dry_run_prints_tree_and_creates_nothing(tmp_path, dataset):
    outdir = tmp_path / 'runs'
    res = run_ok(['--outdir', outdir, '--data', dataset, '--dry-run', '--cfg=low_shot', '--with-dataaug=1',
                  '--diffaugment=color,translation', '--mirror', '--metrics=none'])
    tree = json.loads(res.output[:res.output.rindex('}') + 1])
    assert tree['run_dir'].endswith('00000-blobs-mirror-low_shot-apa-dataaug-diffaug-color-translation')
    assert tree['batch_size'] == 8 and tree['training_set_kwargs']['resolution'] == 16
    assert tree['training_set_kwargs']['xflip'] is True
    assert [a['class_name'] for a in tree['augment_kwargs']['augments']] == [
        'training.augment.ada.AugmentPipe', 'training.augment.diffaugment.DiffAugment']
    assert tree['controllers'][0]['modules'] == ['real_transform', 'augment.ada']
    assert not outdir.exists()


def test_dry_run_demo_data_needs_no_download(tmp_path):
    res = run_ok(['--outdir', tmp_path, '--data', 'demo', '--cfg=cpu', '--dry-run'])
    tree = json.loads(res.output[:res.output.rindex('}') + 1])
    assert tree['training_set_kwargs']['resolution'] == 16
    assert tree['run_dir'].endswith('00000-demo-cpu-apa')


@pytest.mark.parametrize('extra,flag', [
    (['--aug=fixed'], '--p'),
    (['--p=0.5'], '--p'),
    (['--aug=fixed', '--p=2'], '--p'),
    (['--aug=noaug', '--target=0.5'], '--target'),
    (['--target=0'], '--target'),
    (['--aug=bogus'], '--aug'),
    (['--cfg=huge'], '--cfg'),
    (['--batch=6', '--batch-gpu=4'], '--batch/--batch-gpu/--gpus'),
    (['--batch=0'], '--batch'),
    (['--gamma=-1'], '--gamma'),
    (['--pl-weight=-1'], '--pl-weight'),
    (['--pl-weight=nan'], '--pl-weight'),
    (['--style-mixing=1.5'], '--style-mixing'),
    (['--kimg=0'], '--kimg'),
    (['--subset=33'], '--subset'),
    (['--aug=ada', '--with-dataaug=1'], '--with-dataaug'),
    (['--ada-own-p=1'], '--ada-own-p'),
    (['--augpipe=bgc'], '--augpipe'),
    (['--aug=ada', '--augpipe=xyz'], '--augpipe'),
    (['--diffaugment=color,zoom'], '--diffaugment'),
    (['--metrics=fid_bogus'], '--metrics'),
    (['--resume=does/not/exist.pkl'], '--resume'),
    (['--resume-kimg=5'], '--resume-kimg'),
    (['--mirror=maybe'], '--mirror'),
    (['--metricdata=nowhere.zip'], '--metricdata'),
    (['--device=tpu'], '--device'),
    (['--compile=sometimes'], '--compile'),
])
def test_bad_values_are_rejected_naming_the_flag(tmp_path, dataset, extra, flag):
    res = invoke(['--outdir', tmp_path / 'runs', '--data', dataset, '--cfg=cpu', '--dry-run'] + extra)
    assert res.exit_code == 2, res.output
    assert flag in res.output, res.output
    assert not (tmp_path / 'runs').exists()


def test_compile_option_reaches_the_config_or_names_what_is_missing(tmp_path, dataset, monkeypatch):
    base = ['--outdir', tmp_path / 'runs', '--data', dataset, '--cfg=cpu', '--dry-run']
    for value, want in (('1', True), ('0', False)):
        res = run_ok(base + [f'--compile={value}'])
        assert json.loads(res.output[:res.output.rindex('}') + 1])['compile'] is want
    from training import compiled_nets  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(compiled_nets, 'available', lambda: False)  # a torch without torch.compile
    res = invoke(base + ['--compile=1'])
    assert res.exit_code == 2 and '--compile' in res.output and 'PyTorch 2.6' in res.output, res.output
    assert run_ok(base).exit_code == 0  # without the option nothing needs it


def test_data_errors(tmp_path, dataset, unlabelled):
    res = invoke(['--outdir', tmp_path, '--data', tmp_path / 'missing.zip', '--dry-run'])
    assert res.exit_code == 2 and '--data' in res.output and 'missing.zip' in res.output
    res = invoke(['--outdir', tmp_path, '--data', unlabelled, '--cond=1', '--dry-run'])
    assert res.exit_code == 2 and '--cond' in res.output and 'no labels' in res.output
    # --metricdata at another resolution is refused.
    other = str(tmp_path / 'other-32x32.zip')
    with DatasetWriter(other) as w:
        for _ in range(2):
            w.add(np.zeros([32, 32], dtype=np.uint8))
    res = invoke(['--outdir', tmp_path, '--data', dataset, '--metricdata', other, '--dry-run'])
    assert res.exit_code == 2 and '--metricdata' in res.output and 'resolution' in res.output


def test_gpus_beyond_visible_cuda_devices(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    res = invoke(['--outdir', tmp_path, '--data', dataset, '--gpus=2', '--device=cuda', '--dry-run'])
    assert res.exit_code == 2 and '--gpus' in res.output and 'only 1 is visible' in res.output


def test_cuda_requested_without_cuda(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    res = invoke(['--outdir', tmp_path, '--data', dataset, '--device=cuda', '--dry-run'])
    assert res.exit_code == 2 and '--device' in res.output and 'CUDA' in res.output


def test_torchrun_environment(tmp_path, dataset, monkeypatch):
    env = dict(RANK='1', WORLD_SIZE='4', LOCAL_RANK='1', MASTER_ADDR='10.0.0.1', MASTER_PORT='29500')
    assert distributed.torchrun_env(env) == dict(rank=1, world_size=4, local_rank=1, master_addr='10.0.0.1',
                                                 master_port=29500)
    assert distributed.torchrun_env({}) is None
    with pytest.raises(distributed.DistributedError, match='MASTER_ADDR'):
        distributed.torchrun_env(dict(RANK='0', WORLD_SIZE='2'))
    with pytest.raises(distributed.DistributedError, match='RANK=4'):
        distributed.torchrun_env(dict(RANK='4', WORLD_SIZE='4', MASTER_ADDR='a', MASTER_PORT='1'))
    # Under a launcher, WORLD_SIZE decides the process count; a different --gpus is an error.
    for k, v in dict(RANK='0', WORLD_SIZE='2', LOCAL_RANK='0', LOCAL_WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                     MASTER_PORT='1').items():
        monkeypatch.setenv(k, v)
    res = invoke(['--outdir', tmp_path, '--data', dataset, '--gpus=4', '--device=cpu', '--dry-run'])
    assert res.exit_code == 2 and '--gpus' in res.output and 'WORLD_SIZE=2' in res.output
    res = run_ok(['--outdir', tmp_path, '--data', dataset, '--cfg=cpu', '--device=cpu', '--dry-run'])
    assert json.loads(res.output[:res.output.rindex('}') + 1])['num_gpus'] == 2


def test_free_port_and_devices():
    port = distributed.find_free_port()
    assert 1024 <= port < 65536
    assert distributed.device_for('cpu', 3) == torch.device('cpu')
    assert distributed.device_for('cuda', 3) == torch.device('cuda', 3)
    assert distributed.backend_for('cpu') == 'gloo' and distributed.backend_for('cuda') == 'nccl'


def test_run_dir_numbering_and_resume_targets(tmp_path):
    (tmp_path / '00007-old').mkdir()
    (tmp_path / 'notes').mkdir()
    (tmp_path / '00009-file.txt').write_text('')
    assert train.next_run_dir(str(tmp_path), 'x') == os.path.join(str(tmp_path), '00008-x')
    run = tmp_path / '00007-old'
    with pytest.raises(Exception, match='holds no training state'):
        train.resolve_resume(str(run))
    (run / 'network-snapshot-000004.pkl').write_bytes(b'')
    with pytest.raises(Exception, match='network-snapshot-000004.pkl'):
        train.resolve_resume(str(run))
    for k in (4, 12, 8):
        (run / f'training-state-{k:06d}.pt').write_bytes(b'')
    assert train.resolve_resume(str(run)) == (None, str(run / 'training-state-000012.pt'))
    (run / 'training-state-latest.json').write_text(json.dumps({'file': 'training-state-000008.pt'}))
    assert train.resolve_resume(str(run)) == (None, str(run / 'training-state-000008.pt'))
    assert train.resolve_resume(str(run / 'network-snapshot-000004.pkl')) == (str(run / 'network-snapshot-000004.pkl'), None)
    assert train.resolve_resume('https://example.com/net.pkl') == ('https://example.com/net.pkl', None)


# ---------------------------------------------------------------------------------------
# Two-tick runs.

METHODS = {
    'noaug': ['--aug=noaug'],
    'apa': ['--aug=apa'],
    'fixed': ['--aug=fixed', '--p=0.5'],
    'ada': ['--aug=ada'],
    'diffaugment': ['--aug=noaug', '--diffaugment=color,translation,cutout'],
    'apa_dataaug': ['--aug=apa', '--with-dataaug=1'],
    'apa_ada_own_p': ['--aug=apa', '--with-dataaug=1', '--ada-own-p=1'],
    'all': ['--aug=apa', '--with-dataaug=1', '--diffaugment=color,translation,cutout'],
}
P_STATS = {
    'noaug': [], 'apa': ['apa'], 'fixed': [], 'ada': ['ada'], 'diffaugment': [], 'apa_dataaug': ['apa'],
    'apa_ada_own_p': ['apa', 'ada'], 'all': ['apa'],
}


@pytest.mark.parametrize('method', list(METHODS))
def test_two_tick_run_per_method(tmp_path, dataset, method):
    outdir = tmp_path / 'runs'
    res = run_ok(['--outdir', outdir, '--data', dataset, '--cond=1'] + TINY + METHODS[method])
    run_dir = only_run_dir(str(outdir))
    files = os.listdir(run_dir)
    for name in ('training_options.json', 'reals.png', 'stats.jsonl', 'log.txt'):
        assert name in files, (name, files)
    assert any(f.startswith('fakes') and f.endswith('.png') for f in files), files
    with open(os.path.join(run_dir, 'training_options.json')) as f:
        options = json.load(f)
    assert options['run_dir'] == run_dir and 'rank' not in options

    # The snapshot's generator makes images of the dataset's shape, conditioned on 4 classes.
    data = newest_pickle(run_dir)
    G = data['G_ema']
    img = G(torch.randn([2, G.z_dim]), torch.eye(4)[:2])
    assert img.shape == (2, 1, 16, 16) and torch.isfinite(img).all()
    assert (data['augment_pipe'] is None) == (method in ('noaug', 'apa', 'fixed'))

    # Two ticks of 8 images each; every adaptive p is reported.
    assert state_nimg(run_dir) == 16
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    assert rows, 'stats.jsonl is empty'
    for name in P_STATS[method]:
        assert f'Progress/{name}_p' in rows[-1], (name, sorted(rows[-1]))
    assert 'kimg' in res.output


RESUME_ARGS = TINY + ['--aug=apa', '--with-dataaug=1']


@pytest.fixture(scope='module')
def base_run(dataset, tmp_path_factory):
    """One two-tick APA + ADA run that the resume tests continue from."""
    outdir = tmp_path_factory.mktemp('base')
    run_ok(['--outdir', outdir, '--data', dataset] + RESUME_ARGS)
    return only_run_dir(str(outdir))


def test_resume_from_run_dir_continues_exactly(tmp_path, dataset, base_run):
    """N ticks, then resume for M more == N + M ticks in one go (same weights, same p)."""
    args = ['--data', dataset] + RESUME_ARGS + ['--kimg=0.032']
    run_ok(['--outdir', tmp_path / 'full'] + args)
    assert state_nimg(base_run) == 16
    res = run_ok(['--outdir', tmp_path / 'part'] + args + ['--resume', base_run])
    assert 'Resume' in res.output
    resumed_dir = only_run_dir(str(tmp_path / 'part'))
    assert resumed_dir.endswith('-resume')
    assert state_nimg(resumed_dir) == 32

    full = newest_pickle(only_run_dir(str(tmp_path / 'full')))
    resumed = newest_pickle(resumed_dir)
    for key in ('G', 'D', 'G_ema'):
        a, b = dict(full[key].state_dict()), dict(resumed[key].state_dict())
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), f'{key}.{name} differs after resume'
    assert torch.equal(full['augment_pipe'].get('ada').p, resumed['augment_pipe'].get('ada').p)


def test_resume_with_other_networks_is_refused(tmp_path, dataset, base_run):
    res = invoke(['--outdir', tmp_path, '--data', dataset] + RESUME_ARGS + ['--cmax=8', '--resume', base_run])
    assert res.exit_code == 2 and '--resume' in res.output and 'channel_max' in res.output
    assert not os.listdir(tmp_path)
    # Changes that can continue (here the R1 weight) are only noted.
    res = invoke(['--outdir', tmp_path, '--data', dataset] + RESUME_ARGS + ['--gamma=1', '--resume', base_run,
                                                                           '--dry-run'])
    assert res.exit_code == 0 and 'r1_gamma' in res.output


def test_resume_from_network_pickle(tmp_path, dataset, base_run):
    pkl = sorted(glob.glob(os.path.join(base_run, 'network-snapshot-*.pkl')))[-1]
    # The counter starts at --resume-kimg and --kimg is the total, as in the established tools.
    run_ok(['--outdir', tmp_path, '--data', dataset] + RESUME_ARGS + ['--resume', pkl, '--resume-kimg=1',
                                                                     '--kimg=1.016'])
    run_dir = only_run_dir(str(tmp_path))
    assert run_dir.endswith('-resumecustom')
    assert state_nimg(run_dir) == 1000 + 16
    with open(os.path.join(run_dir, 'training_options.json')) as f:
        options = json.load(f)
    assert options['resume_pkl'] == pkl and options['ema_rampup'] is None
    assert options['controllers'][0]['speed_kimg'] == 100


def test_two_processes_match_one(tmp_path, dataset):
    """--gpus=2 on the CPU (2 processes, gloo), and torchrun with 2 processes, train like 1 process."""
    common = [sys.executable, 'train.py', '--data', dataset] + TINY + ['--aug=apa', '--batch-gpu=2']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for gpus in (1, 2):
        proc = subprocess.run(common + ['--outdir', str(tmp_path / f'g{gpus}'), f'--gpus={gpus}'], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The same under torchrun: each process joins from the launcher's variables.
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node=2',
                f'--master-port={distributed.find_free_port()}']
    proc = subprocess.run(torchrun + common[1:] + ['--outdir', str(tmp_path / 'tr')], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = newest_pickle(only_run_dir(str(tmp_path / 'g1')))
    assert only_run_dir(str(tmp_path / 'g2')).endswith('-cpu-kimg0.016-batch4-pl2-mix0.9-apa')
    assert len(os.listdir(str(tmp_path / 'tr'))) == 1          # one run directory for both ranks
    for other in ('g2', 'tr'):
        two = newest_pickle(only_run_dir(str(tmp_path / other)))
        for key in ('G', 'D', 'G_ema'):
            a, b = dict(one[key].state_dict()), dict(two[key].state_dict())
            for name in a:
                torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=f'{other} {key}.{name}')


@pytest.mark.gpu
def test_two_tick_run_on_cuda_with_mixed_precision(tmp_path, dataset):
    args = [a for a in TINY if a not in ('--cfg=cpu', '--device=cpu')]
    run_ok(['--outdir', tmp_path, '--data', dataset, '--cfg=auto', '--device=cuda', '--with-dataaug=1',
            '--diffaugment=color,translation,cutout'] + args)
    run_dir = only_run_dir(str(tmp_path))
    with open(os.path.join(run_dir, 'training_options.json')) as f:
        options = json.load(f)
    assert options['device'] == 'cuda' and options['G_kwargs']['synthesis_kwargs']['num_fp16_res'] == 4
    assert state_nimg(run_dir) == 16
