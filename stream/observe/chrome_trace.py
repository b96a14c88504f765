"""The stage processes' records (:mod:`stream.observe.tracing`) as a Chrome / Perfetto trace.

The result is the Trace Event Format's JSON object form, ``{"traceEvents": [...]}``, which
https://ui.perfetto.dev and chrome://tracing open:

* one process track (``pid``: the stage process's own pid) per stage process, named by ``M``
  ``process_name`` events (``decoder``; ``inference #1``, ``inference #2`` for replicas), in
  pipeline order;
* on its thread ``frames`` (tid 1), one ``X`` slice per frame, ``frame N`` (args ``seq``), for the
  work that finished it; a batch's work is shared equally by its frames (args ``batch``), one
  after the other; on its thread ``blocked sending`` (tid 2), the sends that waited for room
  downstream (:data:`BLOCKED_MIN_S` or longer);
* in a ``queues`` process (pid 0), one ``C`` counter per link (``frames``, ``tensors``, ``colour``):
  the frames on the link at each moment, i.e. frames handed to it (the start of their send) minus
  frames taken off it.

``ts`` and ``dur`` are microseconds from the first event of the run.
"""
from __future__ import annotations

from dataclasses import dataclass

from stream.observe.tracing import StageRecord
from stream.transport import LINKS

STAGE_ORDER = ("decoder", "preprocessor", "inference", "encoder")
QUEUES_PID = 0
FRAMES_TID, BLOCKED_TID = 1, 2
BLOCKED_MIN_S = 0.5e-3


@dataclass(frozen=True)
class FrameSlice:
    """The part of a stage process's work that went to one frame (seconds, monotonic clock);
    ``batch``: how many frames shared that piece of work."""

    seq: int
    start: float
    end: float
    batch: int

    @property
    def duration(self) -> float:
        return self.end - self.start


def frame_slices(record: StageRecord) -> list[FrameSlice]:
    """One slice per frame the process finished: each piece of work split equally between its frames."""
    slices = []
    for start, end, seqs in record.work:
        share = (end - start) / len(seqs) if seqs else 0.0
        for i, seq in enumerate(seqs):
            slices.append(FrameSlice(seq, start + i * share, start + (i + 1) * share, len(seqs)))
    return slices


def track_name(record: StageRecord) -> str:
    """``decoder`` for a stage of one process; ``inference #1``, ``inference #2``… for replicas."""
    return record.stage if record.replicas == 1 else f"{record.stage} #{record.replica + 1}"


def in_pipeline_order(records: list[StageRecord]) -> list[StageRecord]:
    return sorted(records, key=lambda r: (STAGE_ORDER.index(r.stage), r.replica))


def queue_depths(records: list[StageRecord], link: str) -> list[tuple[float, int]]:
    """(time, frames on ``link``) at every change: +1 when a frame's send starts, -1 when it is taken off."""
    changes = [(start, 1) for r in records if r.output_link == link for _, start, _ in r.sent]
    changes += [(at, -1) for r in records if r.input_link == link for _, at in r.received]
    depths, depth = [], 0
    for at, change in sorted(changes, key=lambda c: (c[0], -c[1])):
        depth += change
        depths.append((at, depth))
    return depths


def run_start(records: list[StageRecord]) -> float:
    """The first timestamp of the run (the trace's zero)."""
    times = [start for r in records for start, _, _ in r.work]
    times += [start for r in records for _, start, _ in r.sent] + [at for r in records for _, at in r.received]
    return min(times)


def build_trace(records: list[StageRecord]) -> dict:
    """The Trace Event Format object for one run's records (see the module docstring)."""
    origin = run_start(records)

    def us(seconds: float) -> float:
        return round((seconds - origin) * 1e6, 3)

    events: list[dict] = [
        {"ph": "M", "name": "process_name", "pid": QUEUES_PID, "tid": 0, "args": {"name": "queues"}},
        {"ph": "M", "name": "process_sort_index", "pid": QUEUES_PID, "tid": 0, "args": {"sort_index": len(records)}},
    ]
    for index, record in enumerate(in_pipeline_order(records)):
        pid = record.pid
        events += [
            {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": track_name(record)}},
            {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": index}},
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": FRAMES_TID, "args": {"name": "frames"}},
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": BLOCKED_TID, "args": {"name": "blocked sending"}},
        ]
        for piece in frame_slices(record):
            args = {"seq": piece.seq, **({"batch": piece.batch} if piece.batch > 1 else {})}
            events.append({"ph": "X", "name": f"frame {piece.seq}", "cat": record.stage, "pid": pid,
                           "tid": FRAMES_TID, "ts": us(piece.start), "dur": round(piece.duration * 1e6, 3),
                           "args": args})
        for seq, start, end in record.sent:
            if end - start >= BLOCKED_MIN_S:
                events.append({"ph": "X", "name": f"blocked sending frame {seq}", "cat": "blocked", "pid": pid,
                               "tid": BLOCKED_TID, "ts": us(start), "dur": round((end - start) * 1e6, 3),
                               "args": {"seq": seq, "link": record.output_link}})
    for link in LINKS:
        for at, depth in [(origin, 0)] + queue_depths(records, link):
            events.append({"ph": "C", "name": link, "pid": QUEUES_PID, "tid": 0, "ts": us(at),
                           "args": {"queued": depth}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}
