"""Module-level worker functions for the process tests of test_hostile_runs (spawned
processes import them by name)."""

import os
import time


def record_and_sleep(rank, device, outdir):
    """Writes this worker's pid, then sleeps long enough to outlive any sane test."""
    path = os.path.join(outdir, f'worker{rank}.pid')
    with open(path + '.tmp', 'w') as f:
        f.write(str(os.getpid()))
    os.replace(path + '.tmp', path)
    time.sleep(300)
