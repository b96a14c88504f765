"""Failures to write the output file, put in words the user can act on.

FFmpeg reports a full disk as ``OSError: [Errno 28] No space left on device: '/dir/.film.colorize-123.part.mp4'``,
naming the hidden temporary file. :func:`writing_output` turns that (and a full quota, a file-size
limit, a read-only or vanished folder) into one line naming the output's folder and the cause. The
CLI removes the partial output of a failed run, so the line says so. The encoder ignores SIGXFSZ
(:func:`fail_instead_of_dying_on_file_size_limit`) so that a ``ulimit -f`` limit is such an error
too, instead of killing the process.
"""
from __future__ import annotations

import errno
import os
import signal
from contextlib import contextmanager
from typing import Iterator

from stream.errors import PipelineError

NO_ROOM = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file system or ulimit -f limit)",
}


def fail_instead_of_dying_on_file_size_limit() -> None:
    """Writes past RLIMIT_FSIZE then fail with EFBIG instead of the process being killed."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@contextmanager
def writing_output(path: str) -> Iterator[None]:
    """Around code that writes ``path``: an OSError about that file, or about room on its disk,
    becomes a PipelineError like ``cannot write the output in /dir: no space left on device; ...``.
    Other errors (reading the input's audio, say) pass through unchanged."""
    try:
        yield
    except OSError as exc:
        about_output = exc.filename is not None and os.path.abspath(str(exc.filename)) == os.path.abspath(path)
        if exc.errno not in NO_ROOM and not about_output:
            raise
        cause = NO_ROOM.get(exc.errno) or (exc.strerror or str(exc)).lower()
        folder = os.path.dirname(os.path.abspath(path))
        raise PipelineError(f"cannot write the output in {folder}: {cause}; the partial output was removed") from None
