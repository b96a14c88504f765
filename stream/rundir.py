"""The private folder each run keeps its ipc socket files in.

A Unix socket's path is limited to ``zmq.IPC_PATH_MAX_LEN`` (107) bytes, so a long ``TMPDIR``
(deep home folders, CI work trees) would make every socket fail to bind. The folder is made in
``TMPDIR`` when the longest socket path of a run fits there, else in ``/tmp``. Each run gets its
own folder (``mkdtemp``: a new random name, mode 0700), so two runs never share an endpoint.
"""
from __future__ import annotations

import os
import tempfile

import zmq

from stream.errors import PipelineError

PREFIX = "colorize-"
SOCKET_NAME_ROOM = 32  # the longest socket file name a run uses ("lease-preprocessor.sock") and some margin
FALLBACK_BASE = "/tmp"


def _fits(base: str) -> bool:
    folder = os.path.join(base, PREFIX + "x" * 8)
    return len(os.fsencode(folder)) + 1 + SOCKET_NAME_ROOM <= zmq.IPC_PATH_MAX_LEN


def make_run_dir() -> str:
    """Create the run's folder; raise PipelineError (one line) when no usable place exists."""
    preferred = tempfile.gettempdir()
    problems = []
    for base in dict.fromkeys((preferred, FALLBACK_BASE)):
        if not _fits(base):
            problems.append(f"{base}: path too long for socket files")
            continue
        try:
            return tempfile.mkdtemp(prefix=PREFIX, dir=base)
        except OSError as exc:
            problems.append(f"{base}: {exc.strerror or exc}")
    raise PipelineError(f"cannot make the run's socket folder ({'; '.join(problems)}); "
                        "set TMPDIR to a short writable folder")
