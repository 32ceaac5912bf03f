"""Keeping freed host memory for reuse: fewer page faults when training on the CPU.

glibc's malloc serves every block above its mmap threshold (128 KiB at first, raised as
large blocks are freed, to at most 32 MiB) with a fresh `mmap` and unmaps it on `free`;
above its trim threshold it also returns the top of the heap to the kernel. A training
step on the CPU allocates and frees hundreds of megabytes of activations and gradients, so
each step faults those pages in again and the kernel zeroes every one of them (a G forward
and backward pass at 32x32, batch 32: about 35,000 page faults and 0.05-0.1 s of system
time a step). With both thresholds raised, freed blocks stay in the heap and the next step
reuses them: the same bits, no faults. The process keeps what it freed until it exits
instead of handing it back between steps: its resident size stays near its peak (the peak
itself was the same at the side-by-side config, docs/performance.md).

`keep_freed_host_memory()` is called by the training loop and by `calc_metrics.py` when they
run on the CPU. It does nothing outside glibc, when the user has set glibc's own malloc
variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `GLIBC_TUNABLES`), or when
`TORCH_UTILS_KEEP_HOST_MEMORY=0`.
"""

import ctypes
import os
import sys
from typing import Optional

ENV = 'TORCH_UTILS_KEEP_HOST_MEMORY'
_USER_SETTINGS = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'GLIBC_TUNABLES')
# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap. Where glibc refuses it (some versions cap the
# mmap threshold at 32 MiB on 64-bit systems), that cap is used.
THRESHOLD = 1 << 30
FALLBACK_THRESHOLD = 32 << 20

_state: Optional[str] = None


def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # pylint: disable=pointless-statement
        libc.mallopt  # pylint: disable=pointless-statement
    except (OSError, AttributeError):
        return None  # not glibc (musl, ...)
    return libc


def keep_freed_host_memory() -> str:
    """Raises glibc's mmap and trim thresholds once per process; returns what happened.

    Returns 'kept' (thresholds raised now or earlier), or why not: 'disabled' (the
    environment variable is 0), 'user settings' (glibc's own variables are set), 'not glibc'
    or 'refused' (mallopt returned an error).
    """
    global _state  # pylint: disable=global-statement
    if _state is not None:
        return _state
    if os.environ.get(ENV, '1').strip().lower() in ('0', 'false', 'no', 'off'):
        _state = 'disabled'
    elif any(name in os.environ for name in _USER_SETTINGS):
        _state = 'user settings'
    else:
        libc = _glibc()
        if libc is None:
            _state = 'not glibc'
        else:
            ok = any(libc.mallopt(M_MMAP_THRESHOLD, t) == 1 for t in (THRESHOLD, FALLBACK_THRESHOLD))
            ok = ok and any(libc.mallopt(M_TRIM_THRESHOLD, t) == 1 for t in (THRESHOLD, FALLBACK_THRESHOLD))
            _state = 'kept' if ok else 'refused'
    return _state
