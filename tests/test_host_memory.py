"""torch_utils.host_memory: when the glibc thresholds are raised, and that freed memory is reused."""

import os
import subprocess
import sys
import textwrap

import pytest

from torch_utils import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Eight rounds of what a training step does with its activations: allocate and fill blocks
# of 8, 40, 16 and 8 MiB, free them in reverse order. Prints the page faults of each of the
# last five rounds. With glibc's defaults the 40 MiB block is above the largest dynamic mmap
# threshold (32 MiB): it is mapped afresh every round and its 10,240 pages fault every time.
# With the thresholds raised the blocks come back from the heap, already faulted in (0 faults
# in most rounds; a round may still map one block afresh where the heap's free space is
# fragmented).
PROBE = textwrap.dedent('''
    import resource, sys
    import torch
    from torch_utils import host_memory
    state = host_memory.keep_freed_host_memory() if sys.argv[1] == 'keep' else 'off'
    faults = []
    for i in range(8):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.empty(mib << 18).fill_(1.0) for mib in (8, 40, 16, 8)]
        while blocks:
            blocks.pop()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(state, ','.join(map(str, faults[3:])))
''')


def _probe(mode, **env):
    full_env = {k: v for k, v in os.environ.items()
                if k not in (host_memory.ENV,) + host_memory._USER_SETTINGS}  # pylint: disable=protected-access
    full_env.update(env, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, '-c', PROBE, mode], env=full_env, capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.rsplit(maxsplit=1)
    return out[0], [int(v) for v in out[1].split(',')]


@pytest.mark.skipif(host_memory._glibc() is None, reason='glibc only')  # pylint: disable=protected-access
def test_freed_memory_is_reused_without_page_faults():
    state, faults_kept = _probe('keep')
    assert state == 'kept'
    _, faults_default = _probe('off')
    big_block = (40 << 20) // 4096
    assert min(faults_kept) < big_block // 4, faults_kept
    assert min(faults_default) >= big_block * 0.95, faults_default


@pytest.mark.skipif(host_memory._glibc() is None, reason='glibc only')  # pylint: disable=protected-access
@pytest.mark.parametrize('env, state', [({host_memory.ENV: '0'}, 'disabled'),
                                        ({host_memory.ENV: 'off'}, 'disabled'),
                                        ({'MALLOC_MMAP_THRESHOLD_': '131072'}, 'user settings'),
                                        ({'GLIBC_TUNABLES': 'glibc.malloc.trim_threshold=0'}, 'user settings')])
def test_left_alone_when_disabled_or_user_configured(env, state):
    got, faults = _probe('keep', **env)
    assert got == state
    if env.get(host_memory.ENV) is not None:
        assert min(faults) >= (40 << 20) // 4096 * 0.95  # glibc's defaults: the big block faults again


def test_decided_once_per_process(monkeypatch):
    monkeypatch.setattr(host_memory, '_state', None)
    monkeypatch.setenv(host_memory.ENV, '0')
    assert host_memory.keep_freed_host_memory() == 'disabled'
    monkeypatch.delenv(host_memory.ENV)
    assert host_memory.keep_freed_host_memory() == 'disabled'  # the first decision stands
    monkeypatch.setattr(host_memory, '_state', None)  # leave the real process as it was
