"""Process-group set-up for training on one or several processes and machines.

Two ways to get several processes:
- local: `launch(fn, world_size, ...)` spawns `world_size` processes on this machine; they
  meet at 127.0.0.1 on a free port picked here.
- torchrun: the launcher already started one process per GPU on every machine and set
  RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; each process joins with
  `init(...)` using those (`torchrun_env()` reads them).

Collectives use NCCL on CUDA and gloo on CPUs, so multi-process behaviour can be tested on
machines without a GPU.
"""

import ctypes
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Optional, Sequence

import torch

import dnnlib

TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


class DistributedError(RuntimeError):
    """A device or backend request this machine cannot serve."""


def find_free_port(host: str = '127.0.0.1') -> int:
    """A TCP port that was free a moment ago (the OS picks it), for a local process group."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        return int(s.getsockname()[1])


def torchrun_env(environ: Optional[dict] = None) -> Optional[dnnlib.EasyDict]:
    """Reads the variables torchrun (or another launcher of the same convention) sets.

    Args:
        environ: The environment to read (default: os.environ).

    Returns:
        EasyDict(rank, world_size, local_rank, master_addr, master_port), or None when this
        process was not started by such a launcher (RANK and WORLD_SIZE not both set).

    Raises:
        DistributedError: Some variables are set but malformed or inconsistent.
    """
    env = os.environ if environ is None else environ
    if 'RANK' not in env or 'WORLD_SIZE' not in env:
        return None
    try:
        rank = int(env['RANK'])
        world_size = int(env['WORLD_SIZE'])
        local_rank = int(env.get('LOCAL_RANK', rank))
        master_port = int(env['MASTER_PORT']) if env.get('MASTER_PORT') else None
    except ValueError as e:
        raise DistributedError(f'Malformed launcher variables ({", ".join(TORCHRUN_VARS)}): {e}') from e
    if world_size < 1 or not 0 <= rank < world_size:
        raise DistributedError(f'RANK={rank} is not in [0, WORLD_SIZE={world_size})')
    if local_rank < 0:
        raise DistributedError(f'LOCAL_RANK={local_rank} is negative')
    if world_size > 1 and (not env.get('MASTER_ADDR') or master_port is None):
        raise DistributedError('WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are not set; start the processes '
                               'with torchrun, or set them to the address and port of rank 0')
    return dnnlib.EasyDict(rank=rank, world_size=world_size, local_rank=local_rank,
                           master_addr=env.get('MASTER_ADDR'), master_port=master_port)


def resolve_device_type(requested: str = 'auto') -> str:
    """'cuda' or 'cpu' for a request of 'auto', 'cuda' or 'cpu'.

    Raises:
        DistributedError: CUDA was requested but is not available.
    """
    if requested not in ('auto', 'cpu', 'cuda'):
        raise DistributedError(f'unknown device {requested!r}; use auto, cpu or cuda')
    if requested == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if requested == 'cuda' and not torch.cuda.is_available():
        raise DistributedError('CUDA was requested but no CUDA device is available (torch.cuda.is_available() '
                               'is False); train on the CPU with --device=cpu, or check the driver and the '
                               'CUDA build of PyTorch')
    return requested


def check_world(device_type: str, num_processes: int, local_processes: Optional[int] = None) -> None:
    """Checks that this machine can host the processes asked for.

    Args:
        device_type: 'cuda' or 'cpu'.
        num_processes: Processes in the whole group.
        local_processes: Processes on this machine (default: all of them).

    Raises:
        DistributedError: More CUDA processes than visible GPUs, or NCCL missing.
    """
    local = num_processes if local_processes is None else local_processes
    if device_type == 'cuda':
        visible = torch.cuda.device_count()
        if local > visible:
            raise DistributedError(f'{local} processes need {local} GPUs, but only {visible} '
                                   f'{"is" if visible == 1 else "are"} visible')
        if num_processes > 1 and not (torch.distributed.is_available() and torch.distributed.is_nccl_available()):
            raise DistributedError('several CUDA processes need the NCCL backend, which this PyTorch build lacks; '
                                   'use --device=cpu (gloo) or a PyTorch build with NCCL')
    elif num_processes > 1 and not torch.distributed.is_available():
        raise DistributedError('this PyTorch build has no torch.distributed; run with a single process')


def backend_for(device_type: str) -> str:
    """The collective backend for a device type: NCCL on CUDA, gloo on CPUs."""
    return 'nccl' if device_type == 'cuda' else 'gloo'


def device_for(device_type: str, local_rank: int) -> torch.device:
    """The device a process works on: its own GPU (by local rank) or the CPU."""
    if device_type == 'cuda':
        return torch.device('cuda', local_rank)
    return torch.device('cpu')


def init(rank: int, world_size: int, device_type: str, local_rank: Optional[int] = None,
         master_addr: Optional[str] = None, master_port: Optional[int] = None) -> torch.device:
    """Joins the process group (when there is more than one process) and picks the device.

    Args:
        rank: Global rank of this process.
        world_size: Number of processes in the group.
        device_type: 'cuda' or 'cpu'.
        local_rank: Rank on this machine (selects the GPU); default `rank`.
        master_addr, master_port: Where rank 0 listens; default from MASTER_ADDR/MASTER_PORT.

    Returns:
        The device of this process (also made the current CUDA device).
    """
    local_rank = rank if local_rank is None else local_rank
    device = device_for(device_type, local_rank)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    if world_size > 1:
        addr = master_addr or os.environ.get('MASTER_ADDR', '127.0.0.1')
        port = master_port or int(os.environ.get('MASTER_PORT', '0'))
        if not port:
            raise DistributedError('no MASTER_PORT for the process group')
        kwargs = dict(device_id=device) if device.type == 'cuda' else {}
        torch.distributed.init_process_group(backend=backend_for(device_type), init_method=f'tcp://{addr}:{port}',
                                             rank=rank, world_size=world_size, **kwargs)
    return device


def destroy() -> None:
    """Leaves the process group, if this process joined one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier() -> None:
    """Waits for every rank (no-op without a group).

    Called before leaving a group after success: gloo can abort a process whose peer has
    already torn its side down ("terminate called without an active exception").
    """
    if is_initialized():
        torch.distributed.barrier()


def leave_and_exit(code: int = 0) -> None:
    """Ends a worker process after success: waits for every rank, then exits at once.

    Gloo's worker threads can abort a process (SIGABRT, "terminate called without an active
    exception") while the process group or the interpreter is being torn down, which turns a
    finished run into a failed one at random. After the barrier no rank needs the group any
    more, so the worker flushes its output and leaves through os._exit, skipping that
    teardown. Use it only at the very end of a process that exists for one job (a spawned or
    launched worker), never in a process that has more to do.
    """
    barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def get_rank() -> int:
    return torch.distributed.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return torch.distributed.get_world_size() if is_initialized() else 1


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (a plain picklable value); identity without a group."""
    if not is_initialized():
        return obj
    holder = [obj]
    torch.distributed.broadcast_object_list(holder, src=src)
    return holder[0]


def run_worker(fn: Callable, rank: int, world_size: int, device_type: str, local_rank: Optional[int] = None,
               master_addr: Optional[str] = None, master_port: Optional[int] = None,
               args: Sequence[Any] = ()) -> None:
    """The whole life of one worker process: joins the group, runs `fn(rank, device, *args)`,
    and leaves.

    On an error it leaves the group and raises; after success it ends the process through
    `leave_and_exit`, so call it only in a process that exists for this one job (a spawned
    worker, or one started by torchrun). The arguments are those of `init`.
    """
    device = init(rank, world_size, device_type, local_rank=local_rank, master_addr=master_addr,
                  master_port=master_port)
    try:
        fn(rank, device, *args)
    except BaseException:
        destroy()
        raise
    leave_and_exit()


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, poll_seconds: float = 1.0, use_prctl: bool = True) -> str:
    """Makes this process end when the process `parent_pid` (its launcher) ends, even by
    kill -9, so that a user's kill of the launcher stops the workers and their snapshots.

    On Linux the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG);
    elsewhere, or if prctl is unavailable, a daemon thread polls the parent pid.

    Returns:
        'prctl' or 'watchdog': the mechanism in use.
    """
    if use_prctl and sys.platform.startswith('linux'):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # The parent died before prctl took effect.
                    os._exit(1)  # pylint: disable=protected-access
                return 'prctl'
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent_pid:
                os._exit(1)  # pylint: disable=protected-access

    if os.getppid() != parent_pid:
        os._exit(1)  # pylint: disable=protected-access
    threading.Thread(target=watch, name='parent-watchdog', daemon=True).start()
    return 'watchdog'


def _spawn_entry(local_rank: int, fn: Callable, world_size: int, device_type: str, master_port: int,
                 args: Sequence[Any], parent_pid: Optional[int] = None) -> None:
    if parent_pid is not None:
        die_with_parent(parent_pid)
    run_worker(fn, local_rank, world_size, device_type, local_rank=local_rank, master_addr='127.0.0.1',
               master_port=master_port, args=args)


def launch(fn: Callable, world_size: int, device_type: str, args: Sequence[Any] = ()) -> None:
    """Runs `fn(rank, device, *args)` in `world_size` processes on this machine.

    With one process, `fn` runs here (no process group, easiest to debug); with more, the
    processes are spawned, join a group at 127.0.0.1 on a free port, and leave it at the end.
    An exception in any process is raised here.

    Args:
        fn: A picklable (module-level) function.
        world_size: Number of processes.
        device_type: 'cuda' or 'cpu'.
        args: Further picklable arguments for `fn`.
    """
    check_world(device_type, world_size)
    if world_size == 1:
        device = init(0, 1, device_type)
        fn(0, device, *args)
        return
    port = find_free_port()
    # Workers end with this process (kill -9 included): see die_with_parent.
    torch.multiprocessing.spawn(_spawn_entry, args=(fn, world_size, device_type, port, tuple(args), os.getpid()),
                                nprocs=world_size, join=True)
