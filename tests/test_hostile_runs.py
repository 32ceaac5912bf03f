"""Runs a user stops or a disk that fills up: workers die with their launcher, a full disk is
one clear error and leaves the previous snapshot intact."""

import errno
import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import dnnlib
from dnnlib import util as dnnlib_util
from torch_utils import netfile
from training import training_state

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


def alive(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            return not any(line.startswith('State:') and 'Z' in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


def wait_dead(pids, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='uses /proc')
def test_kill_9_of_the_launcher_kills_its_workers(tmp_path):
    script = textwrap.dedent(f'''
        import sys
        sys.path[:0] = [{REPO!r}, {TESTS!r}]
        from torch_utils import distributed
        import hostile_workers
        distributed.launch(hostile_workers.record_and_sleep, 2, 'cpu', args=({str(tmp_path)!r},))
    ''')
    launcher = subprocess.Popen([sys.executable, '-c', script], cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS='1'))
    pid_files = [tmp_path / f'worker{r}.pid' for r in range(2)]
    pids = []
    try:
        deadline = time.time() + 120
        while not all(p.exists() for p in pid_files):
            assert launcher.poll() is None, 'launcher ended early'
            assert time.time() < deadline, 'workers did not start'
            time.sleep(0.2)
        pids = [int(p.read_text()) for p in pid_files]
        assert all(alive(p) for p in pids)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=30)
        assert wait_dead(pids, timeout=15), 'workers outlived their launcher'
    finally:
        launcher.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='uses /proc')
def test_watchdog_ends_a_child_whose_parent_died(tmp_path):
    """The fallback where prctl is not available: a thread polls the parent pid."""
    child = textwrap.dedent(f'''
        import os, sys, time
        sys.path.insert(0, {REPO!r})
        from torch_utils import distributed
        assert distributed.die_with_parent(os.getppid(), poll_seconds=0.1, use_prctl=False) == 'watchdog'
        print(os.getpid(), flush=True)
        time.sleep(300)
    ''')
    parent = textwrap.dedent(f'''
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, '-c', {child!r}])
        time.sleep(300)
    ''')
    proc = subprocess.Popen([sys.executable, '-c', parent], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid = int(proc.stdout.readline())
        assert alive(pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert wait_dead([pid], timeout=10)
    finally:
        proc.kill()
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------
# A full disk while writing a snapshot.

class _FullAfter:
    """Stands in for the file under atomic_write: ENOSPC after `limit` bytes."""

    def __init__(self, limit):
        self.limit = limit

    def install(self, monkeypatch):
        real_write = dnnlib_util._WriteCounter.write
        limit = self.limit

        def write(counter, data):
            if counter.written + len(data) > limit:
                err = OSError(errno.ENOSPC, 'No space left on device')
                if counter.error is None:
                    counter.error = err
                raise err
            return real_write(counter, data)
        monkeypatch.setattr(dnnlib_util._WriteCounter, 'write', write)


def test_full_disk_during_state_write_is_one_error_naming_path_and_space(tmp_path, monkeypatch):
    state = {'progress': {'cur_nimg': 1000}, 'x': torch.zeros(100_000)}
    first = training_state.save_training_state(str(tmp_path), state, 1000)
    before = sorted(os.listdir(tmp_path))
    _FullAfter(50_000).install(monkeypatch)
    with pytest.raises(dnnlib_util.DiskFullError) as info:
        training_state.save_training_state(str(tmp_path), state, 2000)
    e = info.value
    assert e.errno == errno.ENOSPC and e.filename.endswith('training-state-000002.pt')
    text = str(e)
    assert 'no space left' in text and 'previous file is intact' in text and 'unexpected pos' not in text
    assert netfile.error_line(e).count('\n') == 0
    # Nothing half-written: the old state and pointer are as they were, no temporary file.
    assert sorted(os.listdir(tmp_path)) == before
    monkeypatch.undo()
    assert training_state.load_training_state(str(tmp_path))['path'] == first


def test_full_disk_during_network_pickle_write(tmp_path, monkeypatch):
    path = tmp_path / 'network-snapshot-000001.pkl'
    netfile.save_network_pickle(str(path), dict(x=torch.zeros(10)))
    _FullAfter(100).install(monkeypatch)
    with pytest.raises(dnnlib_util.DiskFullError, match='network-snapshot-000001.pkl.*no space left'):
        netfile.save_network_pickle(str(path), dict(x=torch.zeros(100_000)))
    monkeypatch.undo()
    assert netfile.load_network_pickle(str(path))['x'].shape == (10,)
    assert os.listdir(tmp_path) == ['network-snapshot-000001.pkl']


def test_atomic_write_into_missing_or_non_directory_parent_names_the_target(tmp_path):
    (tmp_path / 'file').write_text('x')
    with pytest.raises(NotADirectoryError) as info:
        with dnnlib.atomic_write(str(tmp_path / 'file' / 'out.pkl')):
            pass
    assert info.value.filename.endswith('out.pkl') and 'is not a folder' in str(info.value)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        with dnnlib.atomic_write(str(tmp_path / 'nope' / 'out.pkl')):
            pass


# ---------------------------------------------------------------------------------------
# Snapshot names.

def test_snapshot_tags_never_collide_and_sort_by_image_count(tmp_path):
    assert training_state.snapshot_tag(0) == '000000'
    assert training_state.snapshot_tag(12345) == '000012'
    assert training_state.snapshot_tag(12345, taken={'000012'}) == '000012_345'
    taken = set()
    for n in range(0, 5000, 16):
        tag = training_state.snapshot_tag(n, taken)
        assert tag not in taken
        taken.add(tag)
    taken = set()
    for nimg in (64, 128, 1000, 1064):
        tag = training_state.snapshot_tag(nimg, taken)
        taken.add(tag)
        training_state.save_training_state(str(tmp_path), {'n': nimg}, nimg, keep=None, tag=tag)
    names = [os.path.basename(p) for p in training_state._state_files(str(tmp_path))]
    assert names == ['training-state-000001_064.pt', 'training-state-000001.pt',
                     'training-state-000000_128.pt', 'training-state-000000.pt']
    assert training_state.find_training_state(str(tmp_path)).endswith('training-state-000001_064.pt')
    # Sorting the names gives the order of writing too (scripts often take sorted(glob)[-1]).
    assert sorted(names) == names[::-1]


# ---------------------------------------------------------------------------------------
# Damaged training states.

def _states(tmp_path, n=2):
    for i in range(1, n + 1):
        training_state.save_training_state(str(tmp_path), {'progress': {'cur_nimg': i * 1000}, 'modules': {},
                                                           'x': torch.full([1000], float(i))}, i * 1000, keep=None)


def test_truncated_newest_state_gives_way_to_the_intact_older_one(tmp_path):
    _states(tmp_path)
    newest = tmp_path / 'training-state-000002.pt'
    newest.write_bytes(newest.read_bytes()[:700])
    path, warnings = training_state.find_intact_training_state(str(tmp_path))
    assert path.endswith('training-state-000001.pt')
    assert any('training-state-000002.pt is damaged' in w for w in warnings)
    assert any('newest intact state instead' in w for w in warnings)
    with pytest.raises(training_state.TrainingStateError,
                       match=r'000002.pt is damaged.*intact older state is beside it: resume with --resume=.*000001.pt'):
        training_state.find_intact_training_state(str(newest))
    (tmp_path / 'training-state-000001.pt').write_bytes(b'garbage')
    with pytest.raises(training_state.TrainingStateError, match='no training state in .* is intact'):
        training_state.find_intact_training_state(str(tmp_path))


def test_bit_flip_in_a_state_is_caught_by_the_checksum(tmp_path):
    _states(tmp_path, 1)
    path = tmp_path / 'training-state-000001.pt'
    data = bytearray(path.read_bytes())
    i = data.index(b'\x00\x00\x80\x3f')  # A stored 1.0 of the tensor.
    data[i + 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(training_state.TrainingStateError, match='checksum'):
        training_state.check_state_file(str(path))


def test_malicious_state_is_refused_without_torch_advice(tmp_path):
    marker = tmp_path / 'marker'

    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))
    path = tmp_path / 'training-state-000001.pt'
    torch.save({'format': 1, 'x': Evil()}, str(path))
    with pytest.raises(training_state.TrainingStateError) as info:
        training_state.load_training_state(str(path))
    text = str(info.value)
    assert 'weights_only' not in text and 'will likely succeed' not in text
    assert 'refused it unread' in text and str(path) in text
    assert not marker.exists()
