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
import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np

FRAME = "frame"
EOS = "eos"

FLAG_KEYFRAME = 1
FLAG_SCENE_CUT = 2
FLAG_CUT_SHORT = 4  # on EOS: the source stopped early (Ctrl-C), not at the input's end
FLAG_CARRY = 8  # the model skips this frame: its colour is carried from earlier frames (sparse inference)
FLAG_WARMUP = 16  # before a segment's first frame: coloured so smoothing carries into the segment, not written


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
    ``sample_aspect_ratio``: the source's pixel aspect (numerator, denominator; 0:1 = not signalled),
    for outputs whose run could not probe it beforehand (live sources).
    """

    kind: str
    seq: int
    pts: int | None = None
    time_base: tuple[int, int] = (1, 1)
    flags: int = 0
    sent_at: float = 0.0
    rotation: int = 0
    sample_aspect_ratio: tuple[int, int] = (0, 1)
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


class MessageError(ValueError):
    """A message that does not follow the framing: its one-line reason."""


WIRE_DTYPES = {"|u1", "<u2", "<f4"}
"""The array types the pipeline sends: uint8 frames, uint16 lightness, float32 model tensors."""
MAX_DIMS = 4
MAX_HEADER_BYTES = 16_384
HEADER_KEYS = {"kind", "seq", "pts", "time_base", "flags", "sent_at", "rotation", "sample_aspect_ratio", "buffers"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode(parts: list) -> Message:
    """Multipart frames (bytes or zmq.Frame) → Message; arrays wrap the received buffers.

    Everything is checked before anything is used, since peers on the network may send anything:
    the header is a JSON object of the known keys with values of the right types and ranges, each
    buffer is declared with a name, a shape of at most 4 non-negative dimensions and one of
    ``WIRE_DTYPES``, and its bytes are exactly shape × item size. Raises :class:`MessageError`.
    """
    if not parts:
        raise MessageError("empty message")
    head = bytes(_buffer(parts[0]))
    if len(head) > MAX_HEADER_BYTES:
        raise MessageError(f"header of {len(head)} bytes (at most {MAX_HEADER_BYTES})")
    try:
        raw = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        raise MessageError("header is not JSON") from None
    if not isinstance(raw, dict) or not set(raw) <= HEADER_KEYS or not {"kind", "seq"} <= set(raw):
        raise MessageError("header is not a frame header")
    kind = raw["kind"]
    if not isinstance(kind, str) or not 0 < len(kind) <= 32 or not _is_int(raw["seq"]) or raw["seq"] < 0:
        raise MessageError("bad kind or seq")
    if raw.get("pts") is not None and not _is_int(raw["pts"]):
        raise MessageError("bad pts")
    time_base = raw.get("time_base", [1, 1])
    if (not isinstance(time_base, list) or len(time_base) != 2 or not all(_is_int(v) and v > 0 for v in time_base)):
        raise MessageError("bad time base")
    if not _is_int(raw.get("flags", 0)) or not _is_int(raw.get("rotation", 0)):
        raise MessageError("bad flags or rotation")
    sar = raw.get("sample_aspect_ratio", [0, 1])
    if not isinstance(sar, list) or len(sar) != 2 or not all(_is_int(v) and 0 <= v < 2 ** 31 for v in sar):
        raise MessageError("bad sample aspect ratio")
    sent_at = raw.get("sent_at", 0.0)
    if not isinstance(sent_at, (int, float)) or isinstance(sent_at, bool) or not math.isfinite(sent_at):
        raise MessageError("bad send time")
    declared = raw.get("buffers", [])
    if not isinstance(declared, list) or len(declared) != len(parts) - 1:
        raise MessageError(f"{len(parts) - 1} buffers sent, {len(declared) if isinstance(declared, list) else '?'} declared")
    specs, arrays = [], {}
    for spec, part in zip(declared, parts[1:]):
        if (not isinstance(spec, dict) or set(spec) != {"name", "shape", "dtype"} or not isinstance(spec["name"], str)
                or not 0 < len(spec["name"]) <= 64 or spec["name"] in arrays):
            raise MessageError("bad buffer declaration")
        shape = spec["shape"]
        if (not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_int(d) and d >= 0 for d in shape)
                or spec["dtype"] not in WIRE_DTYPES):
            raise MessageError(f"buffer {spec['name']}: bad shape or dtype")
        data = _buffer(part)
        dtype = np.dtype(spec["dtype"])
        if math.prod(shape) * dtype.itemsize != memoryview(data).nbytes:
            raise MessageError(f"buffer {spec['name']}: {memoryview(data).nbytes} bytes for shape {shape} {dtype}")
        specs.append(BufferSpec(spec["name"], tuple(shape), spec["dtype"]))
        arrays[spec["name"]] = np.frombuffer(data, dtype=dtype).reshape(shape)
    fields = {k: v for k, v in raw.items() if k != "buffers"}
    fields["time_base"] = tuple(time_base)
    fields["sample_aspect_ratio"] = tuple(sar)
    return Message(FrameHeader(**fields, buffers=specs), arrays)


def _buffer(part):
    return part.buffer if hasattr(part, "buffer") else part
