"""Checks on where an output file will go, made before any stage starts (exit code 2 on failure)."""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from stream.errors import InputError


def check_output_location(output: Path) -> None:
    """Raise :class:`InputError` unless ``output`` can be created: its folder exists and is writable,
    and the name is not a folder."""
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output directory is not writable: {parent}")
    if output.is_dir():
        raise InputError(f"output is a directory: {output}")


def existing_output(output: Path, overwrite: bool, keep: bool) -> bool:
    """FFmpeg's rule for an output file that already exists: True means skip the run (``keep``, -n).

    Raises :class:`InputError` when it exists and neither ``overwrite`` (-y) nor ``keep`` was given,
    or when both were; the existing file is never touched here.
    """
    if overwrite and keep:
        raise InputError("-y (overwrite) and -n (keep existing outputs) contradict each other: give one")
    if not output.exists():
        return False
    if keep:
        return True
    if not overwrite:
        raise InputError(f"output exists: {output} (-y replaces it, -n keeps it and skips the run)")
    return False


def refuse_to_replace(path: Path, overwrite: bool) -> None:
    """For the commands that write one file besides a video (``profile -o``, ``tune -o``): raise
    :class:`InputError` when ``path`` exists and ``overwrite`` (-y) was not given."""
    if path.exists() and not overwrite:
        raise InputError(f"output exists: {path} (-y replaces it)")


class OutputLock:
    """Held while a run writes ``output``: a second run for the same name stops with one line
    instead of both succeeding and one result silently replacing the other.

    An exclusive ``flock`` on ``.NAME.colorize-lock`` beside the output, holding the writer's pid;
    the file is removed when the lock is released. The kernel drops the lock when its process dies
    (even by SIGKILL), so a lock file left behind never blocks a later run, which takes it over and
    removes it. Raises :class:`InputError` on entry when another run holds it.
    """

    def __init__(self, output: Path):
        self.path = output.with_name(f".{output.name}.colorize-lock")
        self.output = output
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_pid(fd)
                os.close(fd)
                who = f"another colorize run (pid {holder})" if holder else "another colorize run"
                raise InputError(f"{who} is writing {self.output}; "
                                 "wait for it to finish or choose another output name") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its last holder removed between our open and our lock
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None


def _holder_pid(fd: int, wait_s: float = 1.0) -> str:
    """The pid the lock's holder wrote, or "" when it has not written one within ``wait_s``
    (it takes the lock first and writes its pid just after)."""
    deadline = time.monotonic() + wait_s
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit() or time.monotonic() >= deadline:
            return text if text.isdigit() else ""
        time.sleep(0.01)


def remove_stale_temporaries(output: Path) -> list[Path]:
    """Remove hidden partial outputs (``.STEM.colorize-PID.part.EXT``) that runs for ``output``
    left when they were killed (SIGKILL runs no clean-up): those whose PID no longer exists.
    Call while holding the :class:`OutputLock`. Returns what was removed."""
    from stream.rundir import process_exists

    removed = []
    pattern = f".{output.stem}.colorize-*.part{output.suffix}"
    for path in output.parent.glob(pattern):
        pid = path.name[len(f".{output.stem}.colorize-"):-len(f".part{output.suffix}")]
        if pid.isdigit() and not process_exists(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
