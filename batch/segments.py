"""Cutting a video into segments at its keyframes, from the demuxer's packet index (no decoding).

A segment starts at a keyframe, so it decodes on its own, and runs up to the next segment's first
frame. Each segment is colorized into its own H.264 piece whose timestamps are the input's
(:class:`stream.stage.SegmentBounds`); joined in order, the pieces are the whole film.

Warm-up: the temporal smoother carries colour from frame to frame, so a segment's pipeline first
colours the frames just before it (decoded, smoothed, not written). The smoother keeps a fraction
``strength`` (0.93 by default) of its history at each frame the model runs on, so after ``n`` such
frames what is left of a cold start is strength^n: :func:`warmup_frames` takes enough of them for
that to fall below ``SEAM_RESIDUAL`` (1 %), which puts the colour change across a seam within the
frame-to-frame change elsewhere (``tests/test_batch.py`` measures it).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from stages.decoder import open_input
from stream.errors import InputError
from stream.stage import SegmentBounds

SEAM_RESIDUAL = 0.01
MAX_WARMUP_FRAMES = 1000


def warmup_frames(config) -> int:
    """Frames to colour before a segment under ``config`` (a :class:`stream.config.PipelineConfig`):
    enough model frames (one in ``inference.every_nth_frame``) for the smoother's cold start to
    fade below :data:`SEAM_RESIDUAL`; one model frame's worth when smoothing is off."""
    every = config.inference.every_nth_frame
    temporal = config.encoder.temporal
    if not temporal.enabled or temporal.strength <= 0:
        return every
    updates = math.ceil(math.log(SEAM_RESIDUAL) / math.log(temporal.strength))
    return min(MAX_WARMUP_FRAMES, updates * every)


@dataclass(frozen=True)
class Segment:
    """One piece of a video stream: ``index`` (from 0), ``frames`` (packets in its range),
    and its :class:`stream.stage.SegmentBounds` (ticks of the stream's time base)."""

    index: int
    frames: int
    bounds: SegmentBounds

    @property
    def start_ticks(self) -> int:
        return self.bounds.start_ticks


@dataclass(frozen=True)
class SegmentPlan:
    """The segments of one video stream and what the plan was made from."""

    segments: tuple[Segment, ...]
    time_base: tuple[int, int]
    frames: int


def packet_index(path: str, stream_index: int = 0) -> tuple[list[int], list[int], tuple[int, int]]:
    """Presentation timestamps of the video stream's packets (sorted), those of its keyframes
    (sorted) and the stream's time base, read by demuxing only. Raises InputError when the stream
    has no timestamps to cut at (raw streams without a container clock)."""
    container = open_input(path)
    try:
        videos = container.streams.video
        if stream_index >= len(videos):
            raise InputError(f"no video stream {stream_index} in {path}")
        stream = videos[stream_index]
        times, keyframes = [], []
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if packet.pts is None:
                raise InputError(f"{path}: video packets without timestamps; it cannot be cut into segments")
            times.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(packet.pts)
        time_base = (stream.time_base.numerator, stream.time_base.denominator)
    finally:
        container.close()
    return sorted(times), sorted(keyframes), time_base


def plan_segments(path: str, segment_s: float, warmup: int, stream_index: int = 0) -> SegmentPlan:
    """Segments of about ``segment_s`` seconds (> 0), each starting at a keyframe and warmed up by
    the ``warmup`` frames before it; one segment when the stream is shorter or has too few
    keyframes. Deterministic: the same arguments always give the same plan (a resumed job relies on it)."""
    times, keyframes, time_base = packet_index(path, stream_index)
    if not times:
        raise InputError(f"no video packets in {path}")
    ticks_per_segment = segment_s * time_base[1] / time_base[0]
    starts = [times[0]]
    for key in keyframes:
        if key > starts[-1] and key - starts[-1] >= ticks_per_segment:
            starts.append(key)
    segments = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else 0
        first = bisect.bisect_left(times, start)
        last = bisect.bisect_left(times, end) if end else len(times)
        warmup_start = times[max(0, first - warmup)]
        segments.append(Segment(index, last - first, SegmentBounds(warmup_start, start, end)))
    return SegmentPlan(tuple(segments), time_base, len(times))
