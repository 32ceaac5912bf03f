"""Shared pieces of the multi-process tests: spawn workers and fail, not hang, on a deadline."""

import time
from typing import Any, Callable, Sequence

import pytest
import torch


def spawn_with_deadline(fn: Callable, args: Sequence[Any], nprocs: int = 2, timeout: float = 120,
                        what: str = 'workers') -> None:
    """Runs `fn(rank, *args)` in `nprocs` spawned processes and waits for all of them.

    A worker that raises fails the test with its traceback (from torch.multiprocessing); workers
    still running after `timeout` seconds are killed and the test fails, naming `what`.
    """
    ctx = torch.multiprocessing.spawn(fn, args=tuple(args), nprocs=nprocs, join=False)
    deadline = time.time() + timeout
    while not ctx.join(timeout=1):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f'{what} did not finish within {timeout}s')
