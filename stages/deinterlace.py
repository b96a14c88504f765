"""Interlaced sources (DV, DVD, broadcast, camcorder captures): deinterlaced before colorization, or
kept interlaced and flagged.

A combed frame colorized as it is keeps its combing, and an output flagged progressive is never
deinterlaced by a player. ``decoder.deinterlace`` (``--deinterlace``) decides per run:

* ``auto`` (default): deinterlace when the stream says it is interlaced (its field order, or its
  first frame's interlaced flag); then only the frames flagged interlaced are filtered;
* ``on``: deinterlace every frame, flagged or not (sources whose flags lie);
* ``off``: keep the fields; the output is then coded interlaced and flagged with the source's
  field order (:func:`x264_interlace_options`).

The filter is FFmpeg's bwdif (Bob Weaver: motion-adaptive, edge-directed, with w3fdif's
interpolation), one output frame per input frame (``mode=send_frame``), so frame count, timestamps
and duration are the source's. It runs in the decoder process through PyAV's filter graph.
"""
from __future__ import annotations

import av

FIELD_ORDERS = {2: "top field first", 3: "bottom field first", 4: "top field first", 5: "bottom field first"}
"""FFmpeg's AVFieldOrder values that mean interlaced (TT, BB, TB, BT) → what a viewer is told."""


def field_order_of(stream) -> int:
    """The stream's AVFieldOrder (0 unknown, 1 progressive, 2..5 interlaced)."""
    return int(getattr(stream.codec_context, "field_order", 0) or 0)


def describe_field_order(order: int) -> str:
    return FIELD_ORDERS.get(order, "field order unknown")


class Deinterlacer:
    """bwdif on a stream's frames, in order: :meth:`push` each decoded frame, :meth:`flush` at the
    end; both return the frames ready (the filter looks one frame ahead). ``every_frame``: filter
    every frame (``deint=all``), else only those flagged interlaced."""

    def __init__(self, stream, every_frame: bool):
        self.stream = stream
        self.every_frame = every_frame
        self.graph = None

    def _build(self) -> None:
        self.graph = av.filter.Graph()
        source = self.graph.add_buffer(template=self.stream)
        deint = "all" if self.every_frame else "interlaced"
        bwdif = self.graph.add("bwdif", f"mode=send_frame:parity=auto:deint={deint}")
        sink = self.graph.add("buffersink")
        source.link_to(bwdif)
        bwdif.link_to(sink)
        self.graph.configure()

    def push(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        if self.graph is None:
            self._build()
        self.graph.push(frame)
        return self._pull()

    def flush(self) -> list[av.VideoFrame]:
        if self.graph is None:
            return []
        self.graph.push(None)
        return self._pull()

    def _pull(self) -> list[av.VideoFrame]:
        ready = []
        while True:
            try:
                ready.append(self.graph.pull())
            except (BlockingIOError, av.error.EOFError):  # EAGAIN (wants the next frame first) or the end
                return ready


def x264_interlace_options(field_order: int) -> dict[str, str]:
    """libx264 options that code and flag the output interlaced with ``field_order`` (empty for a
    progressive or unknown order)."""
    if field_order not in FIELD_ORDERS:
        return {}
    return {"x264-params": "interlaced=1:" + ("tff=1" if FIELD_ORDERS[field_order].startswith("top") else "bff=1")}
