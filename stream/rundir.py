"""The private folder each run keeps its ipc socket files in, and where multiprocessing's own
socket goes.

A Unix socket's path is limited to ``zmq.IPC_PATH_MAX_LEN`` (107) bytes, so a long ``TMPDIR``
(deep home folders, CI work trees) would make every socket fail to bind. The folder is made in
``TMPDIR`` when the longest socket path of a run fits there, else in ``/tmp``. Each run gets its
own folder (``mkdtemp``: a new random name, mode 0700), so two runs never share an endpoint. The
folder names its owner (``owner.pid``), so a later run removes the folders of runs that were killed.
"""
from __future__ import annotations

import multiprocessing.util
import os
import shutil
import tempfile

import zmq

from stream.errors import PipelineError

PREFIX = "colorize-"
SOCKET_NAME_ROOM = 32  # the longest socket file name a run uses ("lease-preprocessor.sock") and some margin
FALLBACK_BASE = "/tmp"


def _fits(base: str) -> bool:
    folder = os.path.join(base, PREFIX + "x" * 8)
    return len(os.fsencode(folder)) + 1 + SOCKET_NAME_ROOM <= zmq.IPC_PATH_MAX_LEN


OWNER_FILE = "owner.pid"


def process_exists(pid: int) -> bool:
    """Whether a process with this pid is alive (of any user): one that has exited but that its
    parent has not yet reaped (a zombie, state Z in /proc/PID/stat) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != b"Z"


def remove_stale_run_dirs(base: str) -> list[str]:
    """Remove the run folders in ``base`` whose owning process no longer exists (left by a run
    killed with SIGKILL, which runs no clean-up); returns their paths. Folders of live runs, and
    folders without an owner file, are left alone."""
    removed = []
    try:
        names = [n for n in os.listdir(base) if n.startswith(PREFIX)]
    except OSError:
        return removed
    for name in names:
        folder = os.path.join(base, name)
        try:
            with open(os.path.join(folder, OWNER_FILE)) as owner:
                pid = int(owner.read().strip())
        except (OSError, ValueError):
            continue
        if not process_exists(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def make_run_dir() -> str:
    """Create the run's folder; raise PipelineError (one line) when no usable place exists."""
    preferred = tempfile.gettempdir()
    problems = []
    for base in dict.fromkeys((preferred, FALLBACK_BASE)):
        if not _fits(base):
            problems.append(f"{base}: path too long for socket files")
            continue
        try:
            remove_stale_run_dirs(base)
            folder = tempfile.mkdtemp(prefix=PREFIX, dir=base)
            with open(os.path.join(folder, OWNER_FILE), "w") as owner:
                owner.write(f"{os.getpid()}\n")
            return folder
        except OSError as exc:
            problems.append(f"{base}: {exc.strerror or exc}")
    raise PipelineError(f"cannot make the run's socket folder ({'; '.join(problems)}); "
                        "set TMPDIR to a short writable folder")


def place_fork_server_socket() -> None:
    """The fork server the stages come from listens on a Unix socket in multiprocessing's own
    temporary folder, made in ``TMPDIR`` on first use; when ``TMPDIR`` is too long for socket paths,
    make that folder in ``/tmp`` instead. Call before the first stage process is started."""
    if _fits(tempfile.gettempdir()):
        return
    saved, tempfile.tempdir = tempfile.tempdir, FALLBACK_BASE
    try:
        multiprocessing.util.get_temp_dir()  # made once per process, then reused (and removed at exit)
    finally:
        tempfile.tempdir = saved
