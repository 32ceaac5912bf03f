"""Careless and hostile input to every command: each ends in one clear line that names the
problem and the file or flag, with no traceback, no run directory and no temporary file left
behind. Inputs are crafted here."""

import errno
import json
import os
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import calc_metrics
import dataset_tool
import generate
import select_backbone
import train
from torch_utils import netfile
from training import dataset as dataset_lib
from training import networks, training_state
from training.dataset import DatasetWriter, ImageFolderDataset
from train_helpers import TINY, invoke, newest_run_dir, run_ok, write_blobs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_error_line(res, *needles):
    """The click result failed with exactly one 'Error:' line holding every needle."""
    assert res.exit_code in (1, 2), (res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert 'Traceback' not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith('Error')]
    assert len(errors) == 1, res.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def tree(path):
    return sorted(os.path.relpath(os.path.join(r, f), path) for r, ds, fs in os.walk(path) for f in fs + ds)


# ---------------------------------------------------------------------------------------
# Crafted network files.

@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('hostile')
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    good = d / 'good.pkl'
    netfile.save_network_pickle(str(good), dict(G_ema=G))
    out = dict(good=str(good), marker=str(d / 'marker'))
    (d / 'refused.pkl').write_bytes(b'cos\nsystem\n(Vtouch ' + str(d / 'marker').encode() + b'\ntR.')
    (d / 'damaged.pkl').write_bytes(good.read_bytes()[:300])
    netfile.save_network_pickle(str(d / 'notgen.pkl'), dict(G_ema={'mapping': 1}))
    netfile.save_network_pickle(str(d / 'mapping.pkl'), dict(G_ema=G.mapping))
    for name in ('refused', 'damaged', 'notgen', 'mapping'):
        out[name] = str(d / f'{name}.pkl')
    return out


# ---------------------------------------------------------------------------------------
# generate.py

@pytest.mark.parametrize('name, needle', [('refused', 'os.system'), ('damaged', 'damaged'),
                                          ('notgen', 'G_ema is a dict, not a generator'),
                                          ('mapping', 'G_ema is a MappingNetwork, not a generator')])
def test_generate_bad_network_files(files, tmp_path, name, needle):
    out = tmp_path / 'out'
    res = CliRunner().invoke(generate.main, ['--network', files[name], '--seeds', '0', '--outdir', str(out),
                                             '--device', 'cpu'])
    one_error_line(res, '--network', needle)
    assert not out.exists() and not os.path.exists(files['marker'])


@pytest.mark.parametrize('psi', ['nan', 'inf', '-inf'])
def test_generate_non_finite_truncation(files, tmp_path, psi):
    res = CliRunner().invoke(generate.main, ['--network', files['good'], '--seeds', '0', '--trunc', psi,
                                             '--outdir', str(tmp_path / 'o'), '--device', 'cpu'])
    one_error_line(res, '--trunc', 'not a finite number')
    assert not (tmp_path / 'o').exists()


def test_generate_outdir_that_is_a_file(files, tmp_path):
    (tmp_path / 'f').write_text('x')
    res = CliRunner().invoke(generate.main, ['--network', files['good'], '--seeds', '0', '--outdir',
                                             str(tmp_path / 'f'), '--device', 'cpu'])
    one_error_line(res, '--outdir', 'not a directory')
    res = CliRunner().invoke(generate.main, ['--network', files['good'], '--seeds', '0', '--outdir',
                                             str(tmp_path / 'f' / 'sub'), '--device', 'cpu'])
    one_error_line(res, '--outdir')


def test_generate_streams_a_hundred_million_seeds(files, tmp_path, monkeypatch):
    """The first images are on disk long before the seeds run out; a write error (here a
    read-only disk after 4 images) is one line naming the file."""
    real = generate.save_png
    saved = []

    def save(img, path):
        if len(saved) == 4:
            raise OSError(errno.EROFS, 'Read-only file system', path)
        real(img, path)
        saved.append(path)
    monkeypatch.setattr(generate, 'save_png', save)
    start = time.perf_counter()
    res = CliRunner().invoke(generate.main, ['--network', files['good'], '--seeds', '0-100000000', '--batch', '2',
                                             '--outdir', str(tmp_path / 'o'), '--device', 'cpu'])
    assert time.perf_counter() - start < 30
    one_error_line(res, 'cannot write', 'seed0004.png', 'Read-only file system', '4 images saved')
    assert sorted(os.listdir(tmp_path / 'o')) == [f'seed{i:04d}.png' for i in range(4)]
    assert len(generate.parse_seeds('0-100000000')) == 100000001


def test_generate_oversized_grid_and_video(files, tmp_path):
    res = CliRunner().invoke(generate.main, ['--network', files['good'], '--seeds', '0-9999999', '--grid',
                                             '10000x1000', '--outdir', str(tmp_path / 'o'), '--device', 'cpu'])
    one_error_line(res, '--grid')
    res = CliRunner().invoke(generate.main, ['--network', files['good'], '--seeds', '0-99999', '--video',
                                             '--outdir', str(tmp_path / 'o'), '--device', 'cpu'])
    one_error_line(res, '--seeds', 'at most')


def test_generate_in_a_child_process_prints_one_line(files, tmp_path):
    proc = subprocess.run([sys.executable, 'generate.py', '--network', files['refused'], '--seeds', '0',
                           '--outdir', str(tmp_path / 'o'), '--device', 'cpu'], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith('Error')] == [
        ln for ln in proc.stderr.splitlines() if 'os.system' in ln]


# ---------------------------------------------------------------------------------------
# select_backbone.py, calc_metrics.py, netfile

@pytest.mark.parametrize('name, needle', [('refused', 'os.system'), ('damaged', 'damaged'),
                                          ('notgen', 'not a generator')])
def test_select_backbone_bad_network_files(files, tmp_path, name, needle):
    data = write_blobs(str(tmp_path / 'd.zip'))
    res = CliRunner().invoke(select_backbone.main, ['--network', files[name], '--data', data, '--device', 'cpu',
                                                    '--cv', 'vgg16', '--cv-weights', 'vgg16=random'])
    one_error_line(res, '--network', needle)


@pytest.mark.parametrize('name, needle', [('refused', 'os.system'), ('notgen', 'not a generator')])
def test_calc_metrics_bad_network_files(files, name, needle):
    res = CliRunner().invoke(calc_metrics.main, ['--network', files[name], '--device', 'cpu', '--metrics', 'fid50k_full'])
    one_error_line(res, '--network', needle)


def test_netfile_convert_into_a_non_directory_parent(files, tmp_path):
    (tmp_path / 'f').write_text('x')
    res = CliRunner().invoke(netfile._cli(), ['convert', files['good'], str(tmp_path / 'f' / 'out.pkl')])
    one_error_line(res, 'out.pkl', 'is not a folder')
    res = CliRunner().invoke(netfile._cli(), ['convert', files['good'], str(tmp_path / 'nope' / 'out.pkl')])
    one_error_line(res, 'out.pkl', 'does not exist')
    res = CliRunner().invoke(netfile._cli(), ['info', str(tmp_path)])
    one_error_line(res, 'is a directory')
    assert tree(tmp_path) == ['f']


# ---------------------------------------------------------------------------------------
# train.py: options

@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    return write_blobs(str(tmp_path_factory.mktemp('data') / 'blobs.zip'))


@pytest.mark.parametrize('flag, value', [('--kimg', 'inf'), ('--kimg', 'nan'), ('--glr', 'inf'), ('--dlr', 'nan'),
                                         ('--gamma', 'inf'), ('--tick', 'inf'), ('--resume-kimg', 'inf'),
                                         ('--batch', '100000000'), ('--batch-gpu', '100000000'),
                                         ('--cbase', '1000000000'), ('--kimg', '1e300')])
def test_train_absurd_values_fail_before_any_directory(data16, tmp_path, flag, value):
    out = tmp_path / 'runs'
    res = invoke(['--outdir', out, '--data', data16, *[a for a in TINY if not a.startswith(flag + '=')],
                  f'{flag}={value}'])
    one_error_line(res, flag)
    assert not out.exists()


@pytest.mark.parametrize('name, needle', [('refused', 'os.system'), ('damaged', 'damaged')])
def test_train_resume_from_bad_pickle(files, data16, tmp_path, name, needle):
    out = tmp_path / 'runs'
    res = invoke(['--outdir', out, '--data', data16, *TINY, f'--resume={files[name]}'])
    one_error_line(res, '--resume', needle)
    assert not out.exists() and not os.path.exists(files['marker'])


def test_train_resume_from_malicious_state_never_follows_torch_advice(data16, tmp_path):
    marker = tmp_path / 'marker'

    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))
    state = tmp_path / 'training-state-000001.pt'
    torch.save({'format': 1, 'progress': Evil(), 'modules': {}}, str(state))
    out = tmp_path / 'runs'
    for attempt in range(2):
        res = invoke(['--outdir', out, '--data', data16, *TINY, f'--resume={state}'])
        line = one_error_line(res, '--resume', str(state), 'weights-only reader')
        assert 'weights_only=False' not in res.output and 'likely succeed' not in res.output, line
    assert not out.exists() and not marker.exists()


def test_train_resume_from_garbage_and_empty_state(data16, tmp_path):
    for content in (b'', b'PK\x03\x04garbage'):
        state = tmp_path / 'training-state-000001.pt'
        state.write_bytes(content)
        res = invoke(['--outdir', tmp_path / 'runs', '--data', data16, *TINY, f'--resume={state}'])
        one_error_line(res, '--resume', 'damaged')
    assert not (tmp_path / 'runs').exists()


def test_train_with_corrupt_or_odd_sized_png_in_the_zip(tmp_path):
    path = tmp_path / 'bad.zip'
    write_blobs(str(path), num=8)
    buf = PIL.Image.new('L', (32, 32))
    odd = tmp_path / 'odd.png'
    buf.save(odd)
    with zipfile.ZipFile(path, 'a') as z:
        z.writestr('00000/img00000008.png', odd.read_bytes())
    res = invoke(['--outdir', tmp_path / 'runs', '--data', path, *TINY])
    one_error_line(res, '--data', 'img00000008.png is 32x32')
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(tmp_path / 'bad2.zip', 'w') as z:
        with zipfile.ZipFile(path) as src:
            for n in src.namelist()[:-1]:
                z.writestr(n, src.read(n))
        z.writestr('00000/img00000009.png', b'\x89PNG\r\n\x1a\n' + b'\0' * 40)
    res = invoke(['--outdir', tmp_path / 'runs', '--data', tmp_path / 'bad2.zip', *TINY])
    one_error_line(res, '--data', 'img00000009.png', 'not a PNG')
    assert not (tmp_path / 'runs').exists()


def zip_bomb(path, declared=0xFFFFFFF0, name='00000/img00000000.png'):
    """A zip of a few hundred bytes whose one member declares ~4 GB uncompressed."""
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, b'\0' * 1000)
    data = bytearray(open(path, 'rb').read())
    for sig, off in ((b'PK\x03\x04', 22), (b'PK\x01\x02', 24)):
        i = data.index(sig)
        data[i + off:i + off + 4] = struct.pack('<I', declared)
    open(path, 'wb').write(bytes(data))
    assert zipfile.ZipFile(path).infolist()[0].file_size == declared
    return str(path)


def test_zip_bomb_is_refused_by_loader_train_and_dataset_tool(tmp_path):
    bomb = zip_bomb(tmp_path / 'bomb.zip')
    assert os.path.getsize(bomb) < 1000
    with pytest.raises(dataset_lib.DatasetError, match=r'declares 4294967280 bytes uncompressed'):
        ImageFolderDataset(bomb)
    res = invoke(['--outdir', tmp_path / 'runs', '--data', bomb, *TINY])
    one_error_line(res, '--data', 'declares 4294967280 bytes')
    res = CliRunner().invoke(dataset_tool.main, ['--source', bomb, '--dest', str(tmp_path / 'out.zip')])
    one_error_line(res, 'img00000000.png', 'declares 4294967280 bytes')
    labels_bomb = zip_bomb(tmp_path / 'labels.zip', name='dataset.json', declared=0xFFFFFFF0)
    res = CliRunner().invoke(dataset_tool.main, ['--source', labels_bomb, '--dest', str(tmp_path / 'out2.zip')])
    one_error_line(res, 'dataset.json', 'declares')
    assert sorted(os.listdir(tmp_path)) == ['bomb.zip', 'labels.zip']


def test_full_disk_during_a_snapshot_is_one_line_in_the_terminal_and_log(data16, tmp_path, monkeypatch):
    from dnnlib import util as dnnlib_util
    real_write, real_mkstemp = dnnlib_util._WriteCounter.write, dnnlib_util.tempfile.mkstemp
    paths = {}

    def mkstemp(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        paths[fd] = path
        return fd, path

    def write(counter, data):
        if 'network-snapshot' in paths.get(counter._f.fileno(), ''):
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_write(counter, data)
    monkeypatch.setattr(dnnlib_util._WriteCounter, 'write', write)
    monkeypatch.setattr(dnnlib_util.tempfile, 'mkstemp', mkstemp)
    res = invoke(['--outdir', tmp_path / 'runs', '--data', data16, *TINY])
    line = one_error_line(res, 'network-snapshot-000000.pkl', 'no space left', 'previous file is intact')
    run_dir = newest_run_dir(tmp_path / 'runs')
    log = open(os.path.join(run_dir, 'log.txt')).read()
    assert 'Error: ' + line.split('Error: ', 1)[1] in log
    assert not [n for n in os.listdir(run_dir) if n.endswith('.tmp') or n.endswith('.pkl')]


# ---------------------------------------------------------------------------------------
# train.py: resume targets

def test_truncated_newest_state_resumes_from_the_intact_older_one(data16, tmp_path):
    out = tmp_path / 'runs'
    run_ok(['--outdir', out, '--data', data16, *[a for a in TINY if not a.startswith('--snap')], '--snap=1'])
    run_dir = newest_run_dir(out)
    states = sorted(n for n in os.listdir(run_dir) if n.startswith('training-state-0'))
    # 8 and 16 images: both in kimg 0, so the second name carries the exact count.
    assert states == ['training-state-000000.pt', 'training-state-000000_016.pt']
    pkls = sorted(n for n in os.listdir(run_dir) if n.startswith('network-snapshot-'))
    assert pkls == ['network-snapshot-000000.pkl', 'network-snapshot-000000_016.pkl']  # None overwritten.
    newest = os.path.join(run_dir, states[1])
    with open(newest, 'r+b') as f:
        f.truncate(os.path.getsize(newest) // 2)
    res = invoke(['--outdir', out, '--data', data16, *TINY, f'--resume={newest}'])
    one_error_line(res, '--resume', 'is damaged', 'intact older state', states[0])
    res = run_ok(['--outdir', out, '--data', data16, *[a for a in TINY if not a.startswith('--kimg')],
                  '--kimg=0.024', f'--resume={run_dir}'])
    assert 'is damaged' in res.output and f'newest intact state instead: {os.path.join(run_dir, states[0])}' in res.output
    resumed = newest_run_dir(out)
    log = open(os.path.join(resumed, 'log.txt')).read()
    assert f'Resuming exactly from {os.path.join(run_dir, states[0])} (kimg 0.008' in log


def _dry_run_config(data, tmp_path):
    res = run_ok(['--outdir', tmp_path / 'dry', '--data', data, *TINY, '--dry-run'])
    text = res.output
    return json.loads(text[text.index('{'):text.rindex('}') + 1])


def test_resume_of_a_larger_network_says_what_was_copied(data16, tmp_path):
    data32 = str(tmp_path / 'd32.zip')
    with DatasetWriter(data32) as w:
        for i in range(8):
            w.add(np.full([32, 32], i * 10, np.uint8))
    c = _dry_run_config(data32, tmp_path)
    common = dict(c_dim=0, img_resolution=32, img_channels=1)
    G = networks.Generator(**{k: v for k, v in c['G_kwargs'].items() if k != 'class_name'}, **common)
    D = networks.Discriminator(**{k: v for k, v in c['D_kwargs'].items() if k != 'class_name'}, **common)
    pkl = str(tmp_path / 'net32.pkl')
    netfile.save_network_pickle(pkl, dict(G=G, D=D, G_ema=G))
    res = invoke(['--outdir', tmp_path / 'runs', '--data', data16, *TINY, f'--resume={pkl}', '--dry-run'])
    assert res.exit_code == 0, res.output
    assert '(32x32) into this 16x16 run' in res.output
    assert 'of the file are unused (synthesis.b32.' in res.output
    assert 'start fresh (b16.fromrgb.' in res.output

    # A network that shares nothing meaningful with this run: refused unless asked for.
    other = str(tmp_path / 'other.pkl')
    netfile.save_network_pickle(other, dict(G=G.mapping, D=D.b4))
    res = invoke(['--outdir', tmp_path / 'runs', '--data', data16, *TINY, f'--resume={other}'])
    one_error_line(res, '--resume', '0% of G', '--allow-partial-resume=1')
    res = invoke(['--outdir', tmp_path / 'runs', '--data', data16, *TINY, f'--resume={other}', '--dry-run',
                  '--allow-partial-resume=1'])
    assert res.exit_code == 0 and 'G copies 0 of its' in res.output
    # Same names, other shapes (another --cmax): refused, the loop could not copy them.
    G8 = networks.Generator(**{**{k: v for k, v in c['G_kwargs'].items() if k != 'class_name'},
                               'synthesis_kwargs': {**c['G_kwargs']['synthesis_kwargs'], 'channel_max': 8}},
                            **dict(common, img_resolution=16))
    wide = str(tmp_path / 'cmax8.pkl')
    netfile.save_network_pickle(wide, dict(G=G8))
    res = invoke(['--outdir', tmp_path / 'runs', '--data', data16, *TINY, f'--resume={wide}'])
    one_error_line(res, '--resume', 'other shapes')
    assert not (tmp_path / 'runs').exists()


# ---------------------------------------------------------------------------------------
# dataset_tool.py

def _folder_with_labels(tmp_path, labels):
    src = tmp_path / 'src'
    src.mkdir()
    names = []
    for i, _ in enumerate(labels):
        name = f'{i}.png'
        PIL.Image.fromarray(np.full([8, 8, 3], i * 30, np.uint8)).save(src / name)
        names.append(name)
    (src / 'dataset.json').write_text(json.dumps({'labels': [[n, lab] for n, lab in zip(names, labels)]}))
    return str(src)


@pytest.mark.parametrize('labels, needle', [
    ([0, 'cat'], "'cat' is not a class index"),
    ([[0.5], [float('nan')]], 'only finite numbers'),
    ([True, False], 'is a boolean'),
    ([0, 99999999999], 'class index 99999999999 is outside'),
    ([0, [1.0, 2.0]], 'labels mix'),
    ([[1.0], [1.0, 2.0]], 'labels mix'),
    ([-1, 0], 'class index -1'),
])
def test_dataset_tool_label_validation(tmp_path, labels, needle):
    src = _folder_with_labels(tmp_path, labels)
    res = CliRunner().invoke(dataset_tool.main, ['--source', src, '--dest', str(tmp_path / 'out.zip')])
    one_error_line(res, 'dataset.json', needle)
    assert sorted(os.listdir(tmp_path)) == ['src']


def test_loader_label_validation(tmp_path):
    path = tmp_path / 'd.zip'
    write_blobs(str(path), num=4, num_classes=2)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    labels = json.loads(members['dataset.json'])['labels']
    labels[1][1] = 'dog'
    members['dataset.json'] = json.dumps({'labels': labels}).encode()
    with zipfile.ZipFile(tmp_path / 'e.zip', 'w') as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(dataset_lib.DatasetError, match=r"label of 00000/img00000001.png: 'dog'"):
        ImageFolderDataset(str(tmp_path / 'e.zip'), use_labels=True).get_label(0)


@pytest.mark.parametrize('args, flag', [(['--resolution', '65536'], '--resolution'),
                                        (['--resolution', '65536x65536'], '--resolution'),
                                        (['--width', '65536', '--height', '65536'], '--width')])
def test_dataset_tool_absurd_resolution(tmp_path, args, flag):
    res = CliRunner().invoke(dataset_tool.main, ['--source', 'demo', '--dest', str(tmp_path / 'o.zip'), *args])
    one_error_line(res, flag)
    assert os.listdir(tmp_path) == []


def test_dataset_tool_unwritable_dest_and_full_disk(tmp_path, monkeypatch):
    (tmp_path / 'f').write_text('x')
    res = CliRunner().invoke(dataset_tool.main, ['--source', 'demo', '--dest', str(tmp_path / 'f' / 'o.zip')])
    one_error_line(res, '--dest', 'cannot write there')

    real = DatasetWriter._write

    def write(self, name, data):
        if name == 'dataset.json':
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real(self, name, data)
    monkeypatch.setattr(DatasetWriter, '_write', write)
    for dest in ('o.zip', 'folder'):
        res = CliRunner().invoke(dataset_tool.main, ['--source', 'demo', '--dest', str(tmp_path / dest),
                                                     '--max-images', '4'])
        one_error_line(res, '--dest', 'No space left on device', 'nothing was written')
    assert sorted(os.listdir(tmp_path)) == ['f']


def test_dataset_tool_decompression_bomb_image(tmp_path):
    """A tiny PNG declaring 60000x60000 pixels is refused from its header."""
    src = tmp_path / 'src'
    src.mkdir()
    PIL.Image.new('L', (8, 8)).save(src / 'a.png')
    data = bytearray((src / 'a.png').read_bytes())
    data[16:24] = struct.pack('>II', 60000, 60000)
    import zlib
    data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])))
    (src / 'b.png').write_bytes(bytes(data))
    res = CliRunner().invoke(dataset_tool.main, ['--source', str(src), '--dest', str(tmp_path / 'o.zip')])
    one_error_line(res, 'b.png', '60000x60000 pixels')
    res = CliRunner().invoke(dataset_tool.main, ['--source', str(src), '--dest', str(tmp_path / 'o.zip'), '--skip-bad'])
    assert res.exit_code == 0 and 'b.png' in res.output


def test_image_with_a_good_header_and_corrupt_pixels_stops_the_run_with_one_line_in_the_log(tmp_path):
    path = tmp_path / 'd.zip'
    write_blobs(str(path), num=8)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = '00000/img00000003.png'
    png = bytearray(members[name])
    i = png.index(b'IDAT') + 4
    png[i:i + 20] = b'\xff' * 20  # The header still says 16x16 grayscale; the pixels do not decode.
    members[name] = bytes(png)
    with zipfile.ZipFile(tmp_path / 'e.zip', 'w') as z:
        for n, b in members.items():
            z.writestr(n, b)
    res = invoke(['--outdir', tmp_path / 'runs', '--data', tmp_path / 'e.zip', *TINY])
    line = one_error_line(res, 'cannot decode image', name)
    run_dir = newest_run_dir(tmp_path / 'runs')
    assert 'Error: ' + line.split('Error: ', 1)[1] in open(os.path.join(run_dir, 'log.txt')).read()


def test_read_only_destinations(files, tmp_path, monkeypatch):
    """A read-only file system (simulated: the tests may run as root, for whom chmod does not
    bite) is one line naming the destination, for netfile convert and dataset_tool."""
    import tempfile
    from training import dataset as dataset_mod

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, 'Read-only file system', kwargs.get('dir') or (args[0] if args else None))
    monkeypatch.setattr(tempfile, 'mkstemp', read_only)
    res = CliRunner().invoke(netfile._cli(), ['convert', files['good'], str(tmp_path / 'out.pkl')])
    one_error_line(res, 'out.pkl', 'Read-only file system')
    monkeypatch.undo()

    real_zipfile = dataset_mod.zipfile.ZipFile

    def zip_read_only(path, mode='r', *args, **kwargs):
        if mode == 'x':
            raise OSError(errno.EROFS, 'Read-only file system', path)
        return real_zipfile(path, mode, *args, **kwargs)
    monkeypatch.setattr(dataset_mod.zipfile, 'ZipFile', zip_read_only)
    res = CliRunner().invoke(dataset_tool.main, ['--source', 'demo', '--dest', str(tmp_path / 'd.zip')])
    one_error_line(res, '--dest', 'Read-only file system')
    assert os.listdir(tmp_path) == []
