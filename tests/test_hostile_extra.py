"""More hostile inputs beyond the reported ones: special files in dataset folders, deeply
nested JSON, terminal escapes in keys, non-finite weights, oversized projected latents,
damaged state counters and pointers."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dataset_tool
import generate
from torch_utils import netfile
from training import dataset as dataset_lib
from training import networks, training_state
from training.dataset import ImageFolderDataset
from test_hostile_cli import one_error_line
from train_helpers import TINY, invoke, write_blobs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_G():
    return networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                              mapping_kwargs=dict(num_layers=1),
                              synthesis_kwargs=dict(channel_base=64, channel_max=8))


def png_folder(path, n=2, res=8):
    path.mkdir()
    for i in range(n):
        PIL.Image.fromarray(np.full([res, res, 3], 40 * i, np.uint8)).save(path / f'{i}.png')
    return path


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='needs FIFOs')
def test_special_files_in_a_dataset_folder_are_not_read(tmp_path):
    """A FIFO named like an image used to block the loader forever, and /dev/zero never ends."""
    src = png_folder(tmp_path / 'src')
    os.mkfifo(src / 'fifo.png')
    if os.path.exists('/dev/zero'):
        os.symlink('/dev/zero', src / 'zero.png')
    ds = ImageFolderDataset(str(src))
    assert len(ds) == 2
    res = CliRunner().invoke(dataset_tool.main, ['--source', str(src), '--dest', str(tmp_path / 'o.zip')])
    assert res.exit_code == 0, res.output
    assert 'Wrote 2 images' in res.output


def test_deeply_nested_dataset_json(tmp_path):
    src = png_folder(tmp_path / 'src')
    (src / 'dataset.json').write_text('{"labels": ' + '[' * 100000 + ']' * 100000 + '}')
    res = CliRunner().invoke(dataset_tool.main, ['--source', str(src), '--dest', str(tmp_path / 'o.zip')])
    one_error_line(res, 'dataset.json')
    with pytest.raises(dataset_lib.DatasetError, match='dataset.json'):
        ImageFolderDataset(str(src), use_labels=True).get_label(0)


def test_deeply_nested_state_pointer_falls_back_to_the_files(tmp_path):
    training_state.save_training_state(str(tmp_path), {'x': 1}, 1000)
    (tmp_path / 'training-state-latest.json').write_text('[' * 100000 + ']' * 100000)
    assert training_state.find_training_state(str(tmp_path)).endswith('training-state-000001.pt')


def test_state_with_counters_of_the_wrong_type_is_refused_before_a_run_directory(tmp_path):
    data = write_blobs(str(tmp_path / 'd.zip'))
    path = tmp_path / 'training-state-000001.pt'
    torch.save({'format': 1, 'progress': {'cur_nimg': 'x', 'cur_tick': 0, 'batch_idx': 0}, 'modules': {}}, str(path))
    res = invoke(['--outdir', tmp_path / 'runs', '--data', data, *TINY, f'--resume={path}'])
    one_error_line(res, '--resume', 'cur_nimg')
    assert not (tmp_path / 'runs').exists()


def test_train_outdir_that_is_a_file(tmp_path):
    data = write_blobs(str(tmp_path / 'd.zip'))
    (tmp_path / 'f').write_text('x')
    res = invoke(['--outdir', tmp_path / 'f', '--data', data, *TINY])
    one_error_line(res, '--outdir', 'not a directory')


def test_info_prints_hostile_keys_escaped(tmp_path):
    path = tmp_path / 'k.pkl'
    netfile.save_network_pickle(str(path), {'\x1b]0;owned\x07\x1b[2J': 1, 'G_ema': 2})
    proc = subprocess.run([sys.executable, '-m', 'torch_utils.netfile', 'info', str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and '\x1b' not in proc.stdout
    assert "'\\x1b]0;owned\\x07\\x1b[2J': builtins.int" in proc.stdout and 'G_ema: builtins.int' in proc.stdout


def test_generator_with_non_finite_weights_is_refused(tmp_path):
    G = tiny_G()
    with torch.no_grad():
        G.synthesis.b4.conv1.weight[0, 0, 0, 0] = float('nan')
    path = tmp_path / 'nan.pkl'
    netfile.save_network_pickle(str(path), dict(G_ema=G))
    res = CliRunner().invoke(generate.main, ['--network', str(path), '--seeds', '0', '--outdir',
                                             str(tmp_path / 'o'), '--device', 'cpu'])
    one_error_line(res, '--network', 'non-finite weights', 'synthesis.b4.conv1.weight')
    assert not (tmp_path / 'o').exists()


def test_projected_w_that_is_hostile(tmp_path):
    good = tmp_path / 'g.pkl'
    netfile.save_network_pickle(str(good), dict(G_ema=tiny_G()))
    base = ['--network', str(good), '--outdir', str(tmp_path / 'o'), '--device', 'cpu', '--projected-w']
    obj = tmp_path / 'obj.npz'
    np.savez(obj, w=np.array([object(), 1], dtype=object))
    one_error_line(CliRunner().invoke(generate.main, base + [str(obj)]), '--projected-w', 'numeric array')
    # 10^10 float32 zeros declared in a header of a few bytes: refused before reading.
    big = tmp_path / 'big.npz'
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header['shape'] = (100000, 1, 100000)
    buf = bytearray()
    import io
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, header)
    with zipfile.ZipFile(big, 'w') as z:
        z.writestr('w.npy', f.getvalue() + b'\0' * 16)
    one_error_line(CliRunner().invoke(generate.main, base + [str(big)]), '--projected-w', 'over')
    garbage = tmp_path / 'garbage.npz'
    garbage.write_bytes(b'PK\x03\x04 not really')
    one_error_line(CliRunner().invoke(generate.main, base + [str(garbage)]), '--projected-w', 'not a readable')
    assert not (tmp_path / 'o').exists() or os.listdir(tmp_path / 'o') == []


def test_zip_member_that_holds_more_than_it_declares(tmp_path):
    """Declared small, the data is longer: zipfile stops at the declared size and the CRC
    check fails, so the image is reported by name, not read on and on."""
    path = tmp_path / 'lie.zip'
    write_blobs(str(path), num=2)
    name = b'00000/img00000001.png'
    data = bytearray(path.read_bytes())
    for sig, size_off, name_off in ((b'PK\x03\x04', 22, 30), (b'PK\x01\x02', 24, 46)):
        i = data.index(sig)
        while data[i + name_off:i + name_off + len(name)] != name:
            i = data.index(sig, i + 4)
        data[i + size_off:i + size_off + 4] = (40).to_bytes(4, 'little')  # Uncompressed size.
    path.write_bytes(bytes(data))
    with pytest.raises(dataset_lib.DatasetError, match='img00000001.png'):
        ImageFolderDataset(str(path))[1]


def test_zip_with_traversal_names_writes_only_inside_dest(tmp_path):
    src = tmp_path / 'src.zip'
    buf = PIL.Image.fromarray(np.zeros([8, 8, 3], np.uint8))
    import io
    b = io.BytesIO()
    buf.save(b, format='png')
    with zipfile.ZipFile(src, 'w') as z:
        z.writestr('../../escape.png', b.getvalue())
        z.writestr('/abs.png', b.getvalue())
    out = tmp_path / 'out' / 'o.zip'
    res = CliRunner().invoke(dataset_tool.main, ['--source', str(src), '--dest', str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path)) == ['out', 'src.zip'] and os.listdir(tmp_path / 'out') == ['o.zip']
    with zipfile.ZipFile(out) as z:
        assert all(not n.startswith(('/', '..')) for n in z.namelist())
