"""Per-frame timestamps recorded inside a stage process, for ``colorize profile``.

Only when ``Job.trace_dir`` is set does :func:`stream.stage.run_stage` make a :class:`StageRecorder`;
otherwise the stage loop carries ``None`` and records nothing (one ``is not None`` test per piece
of work). The recorder keeps plain lists in the process and writes them once, at the end, as one
small JSON file in ``trace_dir`` (:meth:`StageRecorder.save`), read back with :func:`load_records`.

Times are ``time.monotonic()`` seconds: CLOCK_MONOTONIC, one clock for every process of the
machine, so the stage processes' timestamps compare directly.

What is recorded for one replica of a stage (a :class:`StageRecord`):

* ``work``: every piece of the stage's own work (one ``produce`` step, ``handle``, ``flush``, end of
  stream) as ``(start, end, seqs)``: ``seqs`` are the frames it finished, i.e. sent downstream
  (a batch: all of its frames), or for the sink the frames written (:meth:`Stage.frames_done`).
  Work that finished no frame (a frame joining a batch, x264's last packets) has ``seqs`` empty.
* ``received``: ``(seq, time)`` each frame was taken off the input link;
* ``sent``: ``(seq, start, end)`` of each frame's send on the output link: ``end - start`` is the
  time blocked because the next stage's queue was full;
* ``cpu_s``: the process's CPU seconds from its first piece of work to its last.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from stream.messages import Message

if TYPE_CHECKING:
    from stream.stage import Stage
    from stream.transport import Link


@dataclass
class StageRecord:
    """What one stage process recorded (see the module docstring); ``replicas``: of its stage."""

    stage: str
    replica: int
    replicas: int
    pid: int
    input_link: str | None
    output_link: str | None
    work: list[tuple[float, float, list[int]]] = field(default_factory=list)
    received: list[tuple[int, float]] = field(default_factory=list)
    sent: list[tuple[int, float, float]] = field(default_factory=list)
    cpu_s: float = 0.0


class StageRecorder:
    """Collects a :class:`StageRecord` in a stage process (only while tracing)."""

    def __init__(self, stage: "Stage", replicas: int):
        self.stage = stage
        self.record = StageRecord(stage=stage.name, replica=stage.spec.replica, replicas=replicas,
                                  pid=os.getpid(), input_link=stage.input_link, output_link=stage.output_link)
        self.sink_done = 0
        self.cpu_start: float | None = None

    def work(self, start: float, end: float, sent: Iterable[Message]) -> None:
        """One piece of work from ``start`` to ``end``, which finished the frames ``sent`` (a sink: the
        frames its :meth:`Stage.frames_done` count moved past)."""
        if self.stage.output_link is None:
            done = self.stage.frames_done()
            seqs, self.sink_done = list(range(self.sink_done, done)), done
        else:
            seqs = [message.header.seq for message in sent if not message.is_eos]
        self.record.work.append((start, end, seqs))
        cpu = time.process_time()
        if self.cpu_start is None:
            self.cpu_start = cpu
        self.record.cpu_s = cpu - self.cpu_start

    def recorded(self, link: "Link") -> "RecordedLink":
        """``link`` (the stage's input or output), recording each frame taken off it or sent on it."""
        return RecordedLink(link, self.record)

    def save(self, folder: str) -> Path:
        """Write the record as ``STAGE-REPLICA-PID.json`` in ``folder`` (complete or absent)."""
        path = Path(folder) / f"{self.record.stage}-{self.record.replica}-{self.record.pid}.json"
        partial = path.with_suffix(".part")
        partial.write_text(json.dumps(asdict(self.record), separators=(",", ":")))
        partial.replace(path)
        return path


class RecordedLink:
    """A :class:`stream.transport.Link` whose frames (not the end of stream) are timed into a record."""

    def __init__(self, link: "Link", record: StageRecord):
        self.link, self.record, self.socket = link, record, link.socket

    def send(self, message: Message) -> None:
        start = time.monotonic()
        self.link.send(message)
        if not message.is_eos:
            self.record.sent.append((message.header.seq, start, time.monotonic()))

    def receive(self) -> Message:
        message = self.link.receive()
        if not message.is_eos:
            self.record.received.append((message.header.seq, time.monotonic()))
        return message

    def close(self) -> None:
        self.link.close()


def load_records(folder: Path) -> list[StageRecord]:
    """Every record the stage processes saved in ``folder``, in file-name order."""
    records = []
    for path in sorted(folder.glob("*.json")):
        raw = json.loads(path.read_text())
        raw["work"] = [(start, end, list(seqs)) for start, end, seqs in raw["work"]]
        raw["received"] = [tuple(item) for item in raw["received"]]
        raw["sent"] = [tuple(item) for item in raw["sent"]]
        records.append(StageRecord(**raw))
    return records
