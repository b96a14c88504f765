"""Outputs of live runs: files that stay playable if the process is killed, time segments, publishing.

    -o out.mp4 / .m4v / .mov     fragmented MP4: an empty ``moov`` first, then a ``moof``+``mdat``
                                 fragment per keyframe, each packet flushed to disk as written, so
                                 everything up to the last fragment plays after a kill
    -o out.mkv                   Matroska, a cluster at least every keyframe interval, each flushed
                                 to disk as written (plays after a kill)
    live.output.segment_s > 0    out-00000.mp4, out-00001.mp4, ...: a new file at the first keyframe
                                 after every ``segment_s`` seconds, each playable on its own
    -o rtsp://HOST[:PORT]/PATH   published to an RTSP server (ANNOUNCE + RECORD), over
                                 ``live.output.publish_rtsp_transport``
    -o rtmp://HOST/APP/KEY       published as FLV over RTMP
    -o srt://... / udp://...     MPEG-TS

Video is H.264 with a keyframe at least every ``keyframe_interval_s`` (fragments, segments and
viewers who join late all start at keyframes) and, by default, x264's ``zerolatency`` tuning: no
B-frames and no lookahead, so each frame leaves the encoder as soon as it is encoded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av

from stream.config import LiveOutputConfig

PUBLISH_FORMATS = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "flv", "rtmps": "flv", "srt": "mpegts",
                   "udp": "mpegts"}
FRAGMENTED_MP4 = "+frag_keyframe+empty_moov+default_base_moof"
FILE_FORMATS = {"mp4", "mov", "matroska"}


def publish_format(target: str) -> str | None:
    """The FFmpeg muxer for a stream-server URL (rtsp://, rtmp://, srt://, udp://), else None."""
    scheme, sep, _ = target.partition("://")
    return PUBLISH_FORMATS.get(scheme.lower()) if sep else None


def segment_pattern(path: str | Path) -> str:
    """``out.mp4`` → ``out-%05d.mp4``: the names FFmpeg's segment muxer writes."""
    path = Path(path)
    return str(path.with_name(f"{path.stem}-%05d{path.suffix}"))


def segment_glob(path: str | Path) -> str:
    path = Path(path)
    return f"{path.stem}-[0-9][0-9][0-9][0-9][0-9]{path.suffix}"


@dataclass(frozen=True)
class OutputPlan:
    """How a live output is opened: ``target`` (path, segment name pattern or URL), FFmpeg ``format``
    and muxer ``options``; ``kind`` says which of the three it is."""

    target: str
    format: str
    kind: Literal["file", "segments", "publish"]
    options: dict[str, str] = field(default_factory=dict)


def plan_output(target: str, file_format: str, cfg: LiveOutputConfig) -> OutputPlan:
    """The plan for ``target`` (a path or URL); ``file_format`` is the muxer for paths ('mp4', ...)."""
    published = publish_format(target)
    if published == "rtsp":
        return OutputPlan(target, "rtsp", "publish", {"rtsp_transport": cfg.publish_rtsp_transport})
    if published == "flv":
        return OutputPlan(target, "flv", "publish", {"flvflags": "no_duration_filesize"})
    if published:
        return OutputPlan(target, published, "publish")
    if file_format not in FILE_FORMATS:
        raise ValueError(f"not a live file format: {file_format}")
    if file_format in ("mp4", "mov"):
        inner = {"movflags": FRAGMENTED_MP4}
    else:  # Matroska keeps a cluster in memory until it closes: close one at least every keyframe interval
        inner = {"cluster_time_limit": str(round(1000 * cfg.keyframe_interval_s)), "cluster_size_limit": "1048576"}
    if cfg.segment_s > 0:
        options = {"segment_time": f"{cfg.segment_s:g}", "segment_format": file_format,
                   "reset_timestamps": "1"}
        options["segment_format_options"] = ":".join(f"{k}={v}" for k, v in inner.items()) + ":flush_packets=1"
        return OutputPlan(segment_pattern(target), "segment", "segments", options)
    return OutputPlan(target, file_format, "file", {**inner, "flush_packets": "1"})


def open_output(plan: OutputPlan):
    """Open the plan's container for writing (raises av.error.FFmpegError when FFmpeg cannot)."""
    return av.open(plan.target, mode="w", format=plan.format, options=dict(plan.options))


def keyframe_interval(cfg: LiveOutputConfig, frame_rate: float) -> int:
    """Frames between keyframes: ``keyframe_interval_s`` (and at most one segment) at ``frame_rate``."""
    seconds = cfg.keyframe_interval_s if cfg.segment_s <= 0 else min(cfg.keyframe_interval_s, cfg.segment_s)
    return max(1, round(seconds * frame_rate))


def video_options(cfg: LiveOutputConfig) -> dict[str, str]:
    """libx264 options added in live mode."""
    return {"tune": "zerolatency"} if cfg.zero_latency else {}
