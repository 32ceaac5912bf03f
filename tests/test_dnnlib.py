"""dnnlib: config helpers, format_time, is_url and open_url with its download cache.

http(s) is exercised against a local server on 127.0.0.1; nothing touches the network.
"""

import functools
import hashlib
import http.server
import os
import pathlib
import socket
import threading

import pytest

import dnnlib
from dnnlib import util

PAYLOAD = bytes(range(256)) * 64  # 16 KiB, not text


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server:
    """Serves a directory over HTTP on 127.0.0.1 in a thread and counts GET requests."""

    def __init__(self, root):
        self.requests = 0
        outer = self

        class Handler(_QuietHandler):
            def do_GET(self):
                outer.requests += 1
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Handler, directory=str(root)))
        self.base = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()
            self.thread = None


@pytest.fixture
def server(tmp_path):
    root = tmp_path / 'served'
    root.mkdir()
    (root / 'weights.pkl').write_bytes(PAYLOAD)
    srv = _Server(root)
    yield srv
    srv.stop()


def _free_port():
    # A port that was free a moment ago: nothing listens there, so connections are refused.
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# Core helpers (already shared; keep their behaviour).

def test_easydict_and_construct_by_name():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d == {'a': 1, 'b': 2} and d.a == 1
    with pytest.raises(AttributeError):
        _ = d.missing
    od = dnnlib.construct_class_by_name([('x', 3)], class_name='collections.OrderedDict')
    assert od['x'] == 3
    assert dnnlib.call_func_by_name(-4, func_name='abs') == 4


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setattr(util, '_cache_dir', None)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    assert dnnlib.make_cache_dir_path('downloads', 'x') == os.path.join(str(tmp_path), 'downloads', 'x')


@pytest.mark.parametrize('seconds,expected', [
    (0, '0s'), (41, '41s'), (59.6, '1m 00s'), (187, '3m 07s'), (3599, '59m 59s'),
    (12 * 3600 + 5 * 60 + 30, '12h 05m'), (2 * 86400 + 3 * 3600 + 59, '2d 03h'), (-5, '0s')])
def test_format_time(seconds, expected):
    assert dnnlib.format_time(seconds) == expected


def test_is_url():
    assert util.is_url('https://example.com/a.pkl')
    assert util.is_url('http://127.0.0.1:8000/x')
    assert not util.is_url('file:///tmp/a.pkl')
    assert util.is_url('file:///tmp/a.pkl', allow_file_urls=True)
    assert not util.is_url('/tmp/a.pkl')
    assert not util.is_url('ftp://host/a')
    assert not util.is_url('https://')
    assert not util.is_url(None)


# ---------------------------------------------------------------------------------------
# Local files.

def test_open_local_path_and_file_url(tmp_path):
    path = tmp_path / 'a b.bin'
    path.write_bytes(PAYLOAD)
    with dnnlib.open_url(str(path)) as f:
        assert f.read() == PAYLOAD
    file_url = pathlib.Path(path).as_uri()  # spaces become %20
    assert '%20' in file_url
    with dnnlib.open_url(file_url) as f:
        assert f.read() == PAYLOAD
    assert dnnlib.open_url(file_url, return_filename=True) == str(path)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert dnnlib.open_url(str(path), sha256=digest, return_filename=True) == str(path)
    with pytest.raises(dnnlib.ChecksumError, match='sha256'):
        dnnlib.open_url(str(path), sha256='0' * 64)
    assert path.exists()  # a user's own file is never deleted


def test_open_missing_local_file(tmp_path):
    missing = tmp_path / 'nope.pkl'
    with pytest.raises(FileNotFoundError, match='nope.pkl'):
        dnnlib.open_url(str(missing))
    with pytest.raises(FileNotFoundError, match='nope.pkl'):
        dnnlib.open_url(missing.as_uri())


# ---------------------------------------------------------------------------------------
# http(s) through the cache.

def test_download_then_cache_hit_offline(server, tmp_path):
    cache = tmp_path / 'cache'
    url = f'{server.base}/weights.pkl'
    with dnnlib.open_url(url, cache_dir=str(cache), verbose=False, md5=hashlib.md5(PAYLOAD).hexdigest()) as f:
        assert f.read() == PAYLOAD
    assert server.requests == 1
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].endswith('_weights.pkl')  # no temporary left behind

    # Second call: served from the cache, even with the server gone.
    server.stop()
    path = dnnlib.open_url(url, cache_dir=str(cache), verbose=False, return_filename=True,
                           sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert path == os.path.join(str(cache), files[0])
    with dnnlib.open_url(url, cache_dir=str(cache), verbose=False) as f:
        assert f.read() == PAYLOAD


def test_download_uses_default_cache_dir(server, tmp_path, monkeypatch):
    monkeypatch.setattr(util, '_cache_dir', str(tmp_path / 'dl'))
    path = dnnlib.open_url(f'{server.base}/weights.pkl', verbose=False, return_filename=True)
    assert os.path.dirname(path) == os.path.join(str(tmp_path / 'dl'), 'downloads')


def test_download_without_cache(server, tmp_path):
    f = dnnlib.open_url(f'{server.base}/weights.pkl', cache=False, verbose=False, cache_dir=str(tmp_path / 'c'))
    assert f.read() == PAYLOAD
    assert not (tmp_path / 'c').exists()
    with pytest.raises(ValueError, match='return_filename'):
        dnnlib.open_url(f'{server.base}/weights.pkl', cache=False, return_filename=True)


def test_checksum_mismatch_deletes_download(server, tmp_path):
    cache = tmp_path / 'cache'
    url = f'{server.base}/weights.pkl'
    with pytest.raises(dnnlib.ChecksumError) as info:
        dnnlib.open_url(url, cache_dir=str(cache), verbose=False, md5='f' * 32)
    assert 'f' * 32 in str(info.value) and hashlib.md5(PAYLOAD).hexdigest() in str(info.value)
    assert 'discarded' in str(info.value)
    assert os.listdir(cache) == []  # neither the file nor a temporary stays
    assert server.requests == 1  # a wrong file is not retried


def test_corrupt_cached_file_is_replaced(server, tmp_path):
    cache = tmp_path / 'cache'
    url = f'{server.base}/weights.pkl'
    path = dnnlib.open_url(url, cache_dir=str(cache), verbose=False, return_filename=True)
    pathlib.Path(path).write_bytes(b'garbage')
    with dnnlib.open_url(url, cache_dir=str(cache), verbose=False, sha256=hashlib.sha256(PAYLOAD).hexdigest()) as f:
        assert f.read() == PAYLOAD
    assert server.requests == 2


def test_http_404_is_clear_and_not_retried(server, tmp_path):
    cache = tmp_path / 'cache'
    url = f'{server.base}/missing.pkl'
    with pytest.raises(dnnlib.DownloadError) as info:
        dnnlib.open_url(url, cache_dir=str(cache), verbose=False, num_attempts=5)
    msg = str(info.value)
    assert url in msg and '404' in msg
    assert info.value.cache_path in msg and info.value.cache_path.startswith(str(cache))
    assert server.requests == 1
    assert not os.path.exists(info.value.cache_path)
    assert [n for n in os.listdir(cache) if n.startswith('.tmp-')] == []


def test_offline_error_names_cache_path_and_hand_placed_file_works(tmp_path):
    cache = tmp_path / 'cache'
    url = f'http://127.0.0.1:{_free_port()}/models/net%20v2.pkl'
    with pytest.raises(dnnlib.DownloadError) as info:
        dnnlib.open_url(url, cache_dir=str(cache), verbose=False, num_attempts=1, timeout=5)
    err = info.value
    msg = str(err)
    assert url in msg and 'ConnectionError' in msg
    assert err.cache_path == os.path.join(str(cache), util._url_cache_name(url))
    assert err.cache_path in msg and err.cache_path.endswith('_net_v2.pkl')
    assert isinstance(err, OSError) and err.__cause__ is err.cause

    # Following the message's advice makes the next call succeed without the network.
    pathlib.Path(err.cache_path).write_bytes(PAYLOAD)
    with dnnlib.open_url(url, cache_dir=str(cache), verbose=False, md5=hashlib.md5(PAYLOAD).hexdigest()) as f:
        assert f.read() == PAYLOAD


def test_cache_names_differ_per_url():
    a = util._url_cache_name('https://a.example/x/model.pkl')
    b = util._url_cache_name('https://b.example/x/model.pkl')
    assert a != b and a.endswith('_model.pkl') and b.endswith('_model.pkl')
    assert '/' not in util._url_cache_name('https://a.example/dir/')


def test_bad_arguments():
    with pytest.raises(ValueError, match='scheme'):
        dnnlib.open_url('ftp://host/file')
    with pytest.raises(ValueError, match='num_attempts'):
        dnnlib.open_url('https://host/file', num_attempts=0)


# ---------------------------------------------------------------------------------------
# atomic_write


def test_atomic_write_replaces_whole_file_or_nothing(tmp_path):
    path = tmp_path / 'out.json'
    with dnnlib.atomic_write(path, 'w') as f:
        f.write('first')
    assert path.read_text() == 'first'
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    # A failure mid-write keeps the old content and leaves no temporary file behind.
    with pytest.raises(RuntimeError):
        with dnnlib.atomic_write(path, 'w') as f:
            f.write('half of the second')
            raise RuntimeError('crash')
    assert path.read_text() == 'first'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.json']
    with dnnlib.atomic_write(path, 'wb') as f:
        f.write(b'\x00\x01')
    assert path.read_bytes() == b'\x00\x01'
    with pytest.raises(ValueError, match='mode'):
        with dnnlib.atomic_write(path, 'a'):
            pass
