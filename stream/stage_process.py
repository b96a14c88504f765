"""What every process the supervisor starts does first, and what it reports last: shared by the
stage replicas (:mod:`stream.stage`) and the brokers (:mod:`stream.scaleout.broker`)."""
from __future__ import annotations

import ctypes
import os
import select
import signal
import threading
import time

from stream.allocator import reuse_freed_memory
from stream.rundir import process_exists


def die_with_parent(stage: str) -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so no stage is orphaned,
    and name it ``cz-<stage>`` (as shown by ps and /proc/PID/comm)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        libc.prctl(15, ctypes.c_char_p(f"cz-{stage}".encode()[:15]))  # PR_SET_NAME
    except OSError:
        pass


def become_stage_process(name: str, supervisor_pid: int) -> None:
    """First thing in a process the supervisor started (a stage replica or a broker): Ctrl-C, SIGTERM
    and SIGHUP are the supervisor's to handle, the process is named ``cz-<name>``, it dies with its parent (the fork
    server, see :func:`stream.supervisor.stage_process_context`) and with the supervisor (at once if
    that is already gone), and it reuses freed frame buffers (:mod:`stream.allocator`)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a service manager signals the whole group
        signal.signal(signum, signal.SIG_IGN)
    die_with_parent(name)
    _die_with_supervisor(supervisor_pid)
    reuse_freed_memory()


def _die_with_supervisor(supervisor_pid: int) -> None:
    """SIGKILL this process the moment the supervisor exits, however it exits (the OOM killer,
    ``kill -9``): its parent is the fork server, which outlives the supervisor as long as any
    process it forked does, so the parent-death signal alone would leave the stages running.
    A daemon thread waits on a pidfd of the supervisor (Linux ≥ 5.3), else checks every 0.5 s."""
    try:
        pidfd = os.pidfd_open(supervisor_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        pidfd = None

    def watch() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])
        else:
            while process_exists(supervisor_pid):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="cz-lifeline", daemon=True).start()


def cpu_figures(cpu_at_ready: float | None) -> dict[str, float]:
    """This process's CPU seconds (all threads) before its ``ready`` event and since, for the final
    ``stats`` event; ``cpu_at_ready``: ``time.process_time()`` then, None if it never got ready."""
    now = time.process_time()
    if cpu_at_ready is None:
        return {"startup_cpu_s": now, "cpu_s": 0.0}
    return {"startup_cpu_s": cpu_at_ready, "cpu_s": now - cpu_at_ready}
