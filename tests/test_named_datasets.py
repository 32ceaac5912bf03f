"""training.named_datasets: --data=100-shot-obama and --data=https://...zip, fetched once into
the cache (file:// and a localhost HTTP server stand in for the published files), checksums
and the offline message."""

import hashlib
import http.server
import io
import os
import socket
import threading
import zipfile

import numpy as np
import PIL.Image
import pytest

import dataset_tool
import dnnlib
from training import named_datasets
from training.dataset import ImageFolderDataset
from training.named_datasets import DatasetFetchError, NamedDataset, resolve_data_source


def _image_zip(path, n=5, res=16):
    """A zip of JPEG/PNG photos in a folder, as the DiffAugment few-shot zips are."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, 'w') as z:
        for i in range(n):
            buf = io.BytesIO()
            PIL.Image.fromarray(rng.integers(0, 256, (res, res, 3), dtype=np.uint8)).save(buf, format='png')
            z.writestr(f'obama/{i:03d}.png', buf.getvalue())
    return str(path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(dnnlib.util, '_cache_dir', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def _register(monkeypatch, url, sha256=None, name='100-shot-obama'):
    monkeypatch.setitem(named_datasets.REGISTRY, name, NamedDataset(name, url, sha256, 'test'))


def _sha(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def test_registry_lists_the_diffaugment_sets_without_invented_checksums():
    for name in ('100-shot-obama', '100-shot-grumpy_cat', '100-shot-panda', 'AnimalFace-cat', 'AnimalFace-dog'):
        entry = named_datasets.REGISTRY[name]
        assert entry.url == f'https://hanlab.mit.edu/projects/data-efficient-gans/datasets/{name}.zip'
        assert entry.sha256 is None or len(entry.sha256) == 64
    assert named_datasets.lookup('animalface-CAT').name == 'AnimalFace-cat'


def test_named_dataset_is_fetched_once_into_the_cache(tmp_path, cache, monkeypatch, capsys):
    src = _image_zip(tmp_path / 'published.zip')
    _register(monkeypatch, 'file://' + src)
    path = resolve_data_source('100-shot-obama', '--data')
    assert path == str(cache / 'datasets' / '100-shot-obama.zip')
    assert open(path, 'rb').read() == open(src, 'rb').read()
    # No checksum in the table: the first download records it.
    assert (cache / 'datasets' / '100-shot-obama.zip.sha256').read_text().split()[0] == _sha(src)
    assert 'recorded' in capsys.readouterr().err
    ds = ImageFolderDataset(path)
    assert len(ds) == 5 and ds.resolution == 16
    os.remove(src)  # The cached copy is used from now on; nothing is fetched again.
    assert resolve_data_source('100-shot-obama', '--data') == path
    assert [f for f in os.listdir(cache / 'datasets') if f.startswith('.')] == []


def test_recorded_checksum_catches_a_changed_cached_file(tmp_path, cache, monkeypatch):
    src = _image_zip(tmp_path / 'published.zip')
    _register(monkeypatch, 'file://' + src)
    path = resolve_data_source('100-shot-obama', '--data')
    with open(path, 'ab') as f:
        f.write(b'junk')
    with pytest.raises(DatasetFetchError, match=r'--data 100-shot-obama: .*recorded at its first download.*delete it'):
        resolve_data_source('100-shot-obama', '--data')


def test_checksum_mismatch_keeps_nothing(tmp_path, cache, monkeypatch):
    src = _image_zip(tmp_path / 'published.zip')
    _register(monkeypatch, 'file://' + src, sha256='0' * 64)
    with pytest.raises(DatasetFetchError, match=r'has SHA-256 [0-9a-f]{64}, expected 0{64}; the file was discarded'):
        resolve_data_source('100-shot-obama', '--data')
    assert not os.path.exists(cache / 'datasets' / '100-shot-obama.zip')
    assert os.listdir(cache / 'datasets') == []
    # The right checksum passes, and a cached file is checked against the table.
    _register(monkeypatch, 'file://' + src, sha256=_sha(src))
    assert _sha(resolve_data_source('100-shot-obama', '--data')) == _sha(src)
    assert not os.path.exists(cache / 'datasets' / '100-shot-obama.zip.sha256')  # Known: nothing to record.


def _closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_offline_message_says_where_to_put_the_file(tmp_path, cache, monkeypatch):
    _register(monkeypatch, f'http://127.0.0.1:{_closed_port()}/100-shot-obama.zip')
    monkeypatch.setenv('no_proxy', '*')
    with pytest.raises(DatasetFetchError) as info:
        resolve_data_source('100-shot-obama', '--data')
    dest = str(cache / 'datasets' / '100-shot-obama.zip')
    msg = str(info.value)
    assert msg.startswith('--data 100-shot-obama: could not download http://127.0.0.1:')
    assert msg.endswith(f'place it at {dest}')
    # Placing it there by hand is enough.
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    _image_zip(dest)
    assert resolve_data_source('100-shot-obama', '--data') == dest


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    root = tmp_path / 'www'
    root.mkdir()
    monkeypatch.setenv('no_proxy', '*')
    for var in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(var, raising=False)

    class Handler(http.server.SimpleHTTPRequestHandler):
        requests = []

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            Handler.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f'http://127.0.0.1:{server.server_address[1]}', Handler.requests
    server.shutdown()
    server.server_close()


def test_url_dataset_over_http_is_fetched_once(http_server, cache):
    root, base, requests = http_server
    _image_zip(root / 'few.zip', n=3)
    url = f'{base}/few.zip'
    path = resolve_data_source(url, '--data')
    assert os.path.dirname(path) == str(cache / 'datasets') and path.endswith('_few.zip')
    assert _sha(path) == _sha(root / 'few.zip') and len(ImageFolderDataset(path)) == 3
    assert resolve_data_source(url, '--data') == path
    assert requests == ['/few.zip']  # The second use did not touch the server.
    with pytest.raises(DatasetFetchError, match=r'--data .*missing\.zip.*HTTP Error 404.*place it at'):
        resolve_data_source(f'{base}/missing.zip', '--data')


def test_plain_values_pass_through(tmp_path):
    assert resolve_data_source('demo', '--data') == 'demo'
    assert resolve_data_source('runs/ds.zip', '--data') == 'runs/ds.zip'
    z = _image_zip(tmp_path / 'x.zip')
    assert resolve_data_source('file://' + z, '--data') == z
    # A local file or folder named like a registry entry is the user's, not the registry's.
    (tmp_path / '100-shot-obama').mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert resolve_data_source('100-shot-obama', '--data') == '100-shot-obama'
    finally:
        os.chdir(cwd)


def test_dataset_tool_source_accepts_names(tmp_path, cache, monkeypatch):
    src = _image_zip(tmp_path / 'published.zip', n=4)
    _register(monkeypatch, 'file://' + src, name='100-shot-panda')
    report = dataset_tool.convert_dataset('100-shot-panda', str(tmp_path / 'panda.zip'), progress=False)
    assert report.num_images == 4 and report.shape == (16, 16, 3)
    _register(monkeypatch, f'http://127.0.0.1:{_closed_port()}/x.zip', name='100-shot-panda')
    os.remove(cache / 'datasets' / '100-shot-panda.zip')
    monkeypatch.setenv('no_proxy', '*')
    with pytest.raises(dataset_tool.DatasetToolError, match=r'--source 100-shot-panda: could not download'):
        dataset_tool.convert_dataset('100-shot-panda', str(tmp_path / 'p2.zip'), progress=False)
