"""Messages that travel between the stage processes, and their ZeroMQ multipart framing.

A message is one multipart ZeroMQ message:

    part 0      header: UTF-8 JSON of :class:`FrameHeader` (a few hundred bytes)
    part 1..k   raw array buffers, in the order of ``header.buffers`` (no pickling;
                sent and received without copying where pyzmq allows)

``kind`` is ``"frame"`` for a video frame and ``"eos"`` for the end of the stream. The end-of-stream
message carries in ``seq`` the number of frames the decoder sent, so the last stage knows when it
has everything even when several replicas of a stage reorder frames.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np

FRAME = "frame"
EOS = "eos"

FLAG_KEYFRAME = 1
FLAG_SCENE_CUT = 2
FLAG_CUT_SHORT = 4  # on EOS: the source stopped early (Ctrl-C), not at the input's end


@dataclass(frozen=True)
class BufferSpec:
    """Name, shape and NumPy dtype string of one raw buffer of a message."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class FrameHeader:
    """What a stage needs to know about a frame besides its pixels.

    ``seq``: 0-based frame number in decoding order (for EOS: the total frame count).
    ``pts`` and ``time_base`` (numerator, denominator): the frame's presentation time in the
    source's units, kept through the pipeline so the output has the input's timestamps.
    ``flags``: FLAG_* bits. ``sent_at``: wall-clock time (s) the decoder emitted the frame.
    ``rotation``: display rotation in degrees from the source's display matrix (0 if none).
    """

    kind: str
    seq: int
    pts: int | None = None
    time_base: tuple[int, int] = (1, 1)
    flags: int = 0
    sent_at: float = 0.0
    rotation: int = 0
    buffers: list[BufferSpec] = field(default_factory=list)

    @property
    def time_base_fraction(self) -> Fraction:
        return Fraction(*self.time_base)


@dataclass
class Message:
    """A header plus named arrays. Arrays received from the wire are read-only views."""

    header: FrameHeader
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def is_eos(self) -> bool:
        return self.header.kind == EOS


def end_of_stream(frame_count: int, cut_short: bool = False) -> Message:
    """EOS after ``frame_count`` frames; ``cut_short``: the source was drained before the input's end."""
    return Message(FrameHeader(kind=EOS, seq=frame_count, flags=FLAG_CUT_SHORT if cut_short else 0))


def encode(message: Message) -> list:
    """Message → list of multipart frames: JSON header, then each array's buffer (no copy)."""
    specs, parts = [], []
    for name, array in message.arrays.items():
        array = np.ascontiguousarray(array)
        specs.append(BufferSpec(name, tuple(array.shape), array.dtype.str))
        parts.append(memoryview(array).cast("B") if array.size else b"")
    message.header.buffers = specs
    header = asdict(message.header)
    return [json.dumps(header, separators=(",", ":")).encode()] + parts


def decode(parts: list) -> Message:
    """Multipart frames (bytes or zmq.Frame) → Message; arrays wrap the received buffers."""
    raw = json.loads(bytes(_buffer(parts[0])))
    specs = [BufferSpec(s["name"], tuple(s["shape"]), s["dtype"]) for s in raw.pop("buffers")]
    raw["time_base"] = tuple(raw["time_base"])
    header = FrameHeader(**raw, buffers=specs)
    arrays = {}
    for spec, part in zip(specs, parts[1:]):
        arrays[spec.name] = np.frombuffer(_buffer(part), dtype=np.dtype(spec.dtype)).reshape(spec.shape)
    return Message(header, arrays)


def _buffer(part):
    return part.buffer if hasattr(part, "buffer") else part
