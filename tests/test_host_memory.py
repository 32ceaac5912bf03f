"""torch_utils.host_memory: when the glibc thresholds are raised, and that freed memory is reused."""

import os
import subprocess
import sys
import textwrap

import pytest

from torch_utils import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Six rounds of what a training step does with its activations: allocate and fill blocks of
# 8, 40, 16 and 8 MiB, free them in reverse order. Prints the page faults of the last two
# rounds: with the thresholds raised the blocks come back from the heap (already faulted
# in); with glibc's defaults the 40 MiB block is mapped afresh every time (above the largest
# dynamic mmap threshold) and the heap top is trimmed, so those pages fault again.
PROBE = textwrap.dedent('''
    import resource, sys
    import torch
    from torch_utils import host_memory
    state = host_memory.keep_freed_host_memory() if sys.argv[1] == 'keep' else 'off'
    for i in range(6):
        if i == 4:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.empty(mib << 18).fill_(1.0) for mib in (8, 40, 16, 8)]
        while blocks:
            blocks.pop()
    print(state, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
''')


def _probe(mode, **env):
    full_env = {k: v for k, v in os.environ.items()
                if k not in (host_memory.ENV,) + host_memory._USER_SETTINGS}  # pylint: disable=protected-access
    full_env.update(env, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, '-c', PROBE, mode], env=full_env, capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.rsplit(maxsplit=1)
    return out[0], int(out[1])


@pytest.mark.skipif(host_memory._glibc() is None, reason='glibc only')  # pylint: disable=protected-access
def test_freed_memory_is_reused_without_page_faults():
    state, faults_kept = _probe('keep')
    assert state == 'kept'
    _, faults_default = _probe('off')
    pages = (72 << 20) // 4096  # one round
    assert faults_kept < pages // 10, faults_kept
    assert faults_default > pages // 2, faults_default


@pytest.mark.skipif(host_memory._glibc() is None, reason='glibc only')  # pylint: disable=protected-access
@pytest.mark.parametrize('env, state', [({host_memory.ENV: '0'}, 'disabled'),
                                        ({host_memory.ENV: 'off'}, 'disabled'),
                                        ({'MALLOC_MMAP_THRESHOLD_': '131072'}, 'user settings'),
                                        ({'GLIBC_TUNABLES': 'glibc.malloc.trim_threshold=0'}, 'user settings')])
def test_left_alone_when_disabled_or_user_configured(env, state):
    got, faults = _probe('keep', **env)
    assert got == state
    if env.get(host_memory.ENV) is not None:
        assert faults > (72 << 20) // 4096 // 2  # glibc's defaults: pages faulted again


def test_decided_once_per_process(monkeypatch):
    monkeypatch.setattr(host_memory, '_state', None)
    monkeypatch.setenv(host_memory.ENV, '0')
    assert host_memory.keep_freed_host_memory() == 'disabled'
    monkeypatch.delenv(host_memory.ENV)
    assert host_memory.keep_freed_host_memory() == 'disabled'  # the first decision stands
    monkeypatch.setattr(host_memory, '_state', None)  # leave the real process as it was
