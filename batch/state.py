"""Job state of ``colorize batch``: one SQLite file beside the outputs.

SQLite (Python's standard library) rather than our own file format: every change is one atomic
transaction that survives SIGKILL and power loss, and two batch runs on the same output folder
share it safely through its locking.

What is recorded, per output file: the *fingerprint* of what makes its pixels (:func:`fingerprint`),
its status, frame count and the SHA-256 of the finished file; per finished segment piece, its frame
count and SHA-256. Nothing is trusted on the record alone: a finished output or piece is reused only
if the file on disk still hashes to what was recorded under the same fingerprint.

Ownership: a run *claims* each output it works on (its owner id and a heartbeat refreshed every few
seconds). Another run leaves a claimed output alone while the claim is fresh, and takes it over once
the owner is gone (its process no longer exists on this host, or its heartbeat is older than
``STALE_S`` seconds: a run killed on another host).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stream.rundir import process_exists

STALE_S = 30.0
HEARTBEAT_S = 5.0
SAMPLE_BYTES = 1 << 20

PIXEL_SETTINGS = {
    "decoder": ("deinterlace",),
    "inference": ("every_nth_frame", "provider"),
    "encoder": ("crf", "preset", "audio", "audio_bitrate_kbps", "temporal"),
    "colour": None,  # every field
    "guidance": ("references", "reference_strength"),
}
"""The config keys that change an output's pixels or sound; the others (replicas, threads, queues)
change only speed, so a job resumed with other ones still reuses its finished work."""


def input_identity(path: Path) -> dict:
    """What identifies an input cheaply but safely: size, modification time, and a hash of its
    first and last MiB (a file replaced by another of the same size and time still differs there)."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        if stat.st_size > SAMPLE_BYTES:
            handle.seek(max(SAMPLE_BYTES, stat.st_size - SAMPLE_BYTES))
            digest.update(handle.read(SAMPLE_BYTES))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample_sha256": digest.hexdigest()}


def pixel_settings(config) -> dict:
    """The :data:`PIXEL_SETTINGS` of a :class:`stream.config.PipelineConfig`, as plain data."""
    chosen = {}
    for section, keys in PIXEL_SETTINGS.items():
        values = dataclasses.asdict(getattr(config, section))
        chosen[section] = values if keys is None else {key: values[key] for key in keys}
    return chosen


def fingerprint(identity: dict, model_sha256: str, config, plan: dict) -> str:
    """SHA-256 (hex) over the input's identity, the model's hash, the pixel settings of ``config``
    and ``plan`` (how the file is cut: segment length, warm-up, program version)."""
    text = json.dumps({"input": identity, "model": model_sha256, "settings": pixel_settings(config), "plan": plan},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def owner_id() -> str:
    """This run's id: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str, heartbeat: float, now: float) -> bool:
    host, _, pid = owner.rpartition(":")
    if now - heartbeat > STALE_S:
        return False
    if host == socket.gethostname() and pid.isdigit():
        return process_exists(int(pid))
    return True


@dataclass(frozen=True)
class FileRecord:
    """A row of the ``files`` table."""

    output: str
    fingerprint: str
    status: str  # 'working', 'done' or 'failed'
    frames: int
    sha256: str
    error: str


class JobState:
    """The state file of one output folder. Methods are safe to call from several threads."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.owner = owner_id()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS files (
                output TEXT PRIMARY KEY, input TEXT, fingerprint TEXT, status TEXT, frames INTEGER,
                sha256 TEXT, error TEXT, owner TEXT, heartbeat REAL);
            CREATE TABLE IF NOT EXISTS pieces (
                output TEXT, idx INTEGER, fingerprint TEXT, frames INTEGER, sha256 TEXT, path TEXT,
                PRIMARY KEY (output, idx));
        """)
        self._claimed: set[str] = set()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="batch-heartbeat", daemon=True)
        self._beat.start()

    def record(self, output: str) -> FileRecord | None:
        with self._lock:
            row = self._db.execute("SELECT output, fingerprint, status, frames, sha256, error FROM files "
                                   "WHERE output = ?", (output,)).fetchone()
        return FileRecord(*row) if row else None

    def claim(self, output: str, source: str, print_: str) -> str:
        """Take ``output`` for this run: '' when claimed, else the id of the live run that holds it."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT owner, heartbeat, status FROM files WHERE output = ?",
                                       (output,)).fetchone()
                if row and row[2] == "working" and row[0] and row[0] != self.owner and _owner_alive(row[0], row[1] or 0, now):
                    self._db.execute("COMMIT")
                    return row[0]
                self._db.execute(
                    "INSERT INTO files (output, input, fingerprint, status, frames, sha256, error, owner, heartbeat) "
                    "VALUES (?, ?, ?, 'working', 0, '', '', ?, ?) ON CONFLICT(output) DO UPDATE SET "
                    "input = excluded.input, fingerprint = excluded.fingerprint, status = 'working', "
                    "error = '', owner = excluded.owner, heartbeat = excluded.heartbeat",
                    (output, source, print_, self.owner, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._claimed.add(output)
        return ""

    def finish(self, output: str, frames: int, sha256: str) -> None:
        """``output`` is complete: its frame count and checksum; its pieces are forgotten."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE files SET status = 'done', frames = ?, sha256 = ?, owner = '' WHERE output = ?",
                             (frames, sha256, output))
            self._db.execute("DELETE FROM pieces WHERE output = ?", (output,))
            self._db.execute("COMMIT")
            self._claimed.discard(output)

    def fail(self, output: str, reason: str) -> None:
        with self._lock:
            self._db.execute("UPDATE files SET status = 'failed', error = ?, owner = '' WHERE output = ?",
                             (reason, output))
            self._claimed.discard(output)

    def release(self, output: str) -> None:
        """Give up the claim on an unfinished output (an interrupted run): its pieces stay reusable."""
        with self._lock:
            self._db.execute("UPDATE files SET owner = '' WHERE output = ? AND owner = ?", (output, self.owner))
            self._claimed.discard(output)

    def piece(self, output: str, index: int, print_: str) -> tuple[int, str, str] | None:
        """(frames, sha256, path) of a piece recorded under this fingerprint, else None."""
        with self._lock:
            row = self._db.execute("SELECT frames, sha256, path FROM pieces WHERE output = ? AND idx = ? AND "
                                   "fingerprint = ?", (output, index, print_)).fetchone()
        return tuple(row) if row else None

    def add_piece(self, output: str, index: int, print_: str, frames: int, sha256: str, path: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO pieces (output, idx, fingerprint, frames, sha256, path) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (output, index, print_, frames, sha256, path))

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._lock:
                for output in list(self._claimed):
                    self._db.execute("UPDATE files SET heartbeat = ? WHERE output = ? AND owner = ?",
                                     (time.time(), output, self.owner))

    def close(self) -> None:
        self._stop.set()
        for output in list(self._claimed):
            self.release(output)
        with self._lock:
            self._db.close()
