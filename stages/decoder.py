"""Decoder stage: opens the input with PyAV and sends its video frames on.

An 8-bit 4:2:0 limited-range frame (most H.264, HEVC, VP8/9, MPEG-2 and DV-converted video) with
even sizes goes as its luma plane alone (``luma``, uint8 H×W): its chroma is about to be replaced,
and its luma is kept unchanged to the output (:func:`stages.lab.chroma_planes`). Any other frame
goes as RGB24 (``frame``, uint8 H×W×3), converted by FFmpeg.

Each frame keeps its pts and the stream's time base, so the output has the input's timestamps
(constant or variable frame rate). Packets that fail to decode are skipped and counted (see
:mod:`stream.accounting`); a damaged or truncated file gives the frames that can be decoded, with
a warning; an input with no decodable frame at all is an input error (exit code 2).
"""
from __future__ import annotations

import itertools
import math
import os
import time
from typing import Iterable

import av
import cv2
import numpy as np

from stream.accounting import DecodeAccount, ended_early_warning
from stages.deinterlace import FIELD_ORDERS, Deinterlacer, describe_field_order, field_order_of
from stages.hdr import describe as describe_hdr
from stages.hdr import is_hdr, sdr_rgb
from stages.temporal import ModelCadence
from stream.errors import InputError
from stream.messages import FLAG_CARRY, FLAG_KEYFRAME, FLAG_WARMUP, FRAME, FrameHeader, Message
from stream.stage import Stage


def open_input(path: str, options: dict[str, str] | None = None):
    """av.open with our error wording: anything FFmpeg cannot open is an InputError."""
    try:
        return av.open(path, mode="r", options=options or {})
    except FileNotFoundError:
        raise InputError(f"input not found: {path}") from None
    except (av.error.InvalidDataError, av.error.EOFError):
        if mp4_index_missing_or_cut(path):
            raise InputError(f"{path} is an MP4/MOV whose index (moov box) is missing or cut short: the file "
                             "was truncated while being written or copied, and cannot be read without it") from None
        raise InputError(f"not a media file FFmpeg can read: {path}") from None
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot open input {path}: {exc.strerror or exc}") from None


def mp4_index_missing_or_cut(path: str) -> bool:
    """Whether ``path`` is an ISO base media file (MP4, MOV: an ``ftyp`` box first, ISO/IEC 14496-12)
    whose top-level boxes end without a whole ``moov``, the index a recorder writes last."""
    try:
        with open(path, "rb") as handle:
            size_total = os.fstat(handle.fileno()).st_size
            offset, first = 0, True
            while offset + 8 <= size_total:
                handle.seek(offset)
                header = handle.read(16)
                size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if first and kind != b"ftyp":
                    return False
                if size == 1 and len(header) == 16:
                    size = int.from_bytes(header[8:16], "big")
                elif size == 0:
                    size = size_total - offset
                if kind == b"moov":
                    return offset + size > size_total
                if size < 8:
                    return not first
                offset, first = offset + size, False
            return not first
    except OSError:
        return False


def estimated_frame_count(stream) -> int | None:
    """Frame count from the container, else duration × average rate; None when unknown."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.average_rate:
        return int(round(float(stream.duration * stream.time_base * stream.average_rate)))
    container_duration = stream.container.duration
    if container_duration and stream.average_rate:
        return int(round(container_duration / 1_000_000 * float(stream.average_rate)))
    return None


def announced_end_s(container, stream) -> float | None:
    """Where the container says the video ends (seconds), or None when it does not say.

    The stream's own duration, else Matroska's per-track DURATION tag, else the container's
    duration when the video is its only stream (with audio, that may be longer than the video).
    """
    if stream.duration and stream.time_base:
        return float((stream.duration + (stream.start_time or 0)) * stream.time_base)
    tag = stream.metadata.get("DURATION")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    if container.duration and len(container.streams) == 1:
        return container.duration / 1_000_000
    return None


def takes_luma_path(frame: av.VideoFrame) -> bool:
    """True for frames whose luma can be kept as the output's: 8-bit 4:2:0, limited range, even sizes."""
    return (frame.format.name == "yuv420p" and frame.color_range != JPEG_RANGE
            and frame.width % 2 == 0 and frame.height % 2 == 0)


JPEG_RANGE = 2  # AVColorRange AVCOL_RANGE_JPEG: full-range luma 0..255


def frame_arrays(frame: av.VideoFrame) -> dict[str, np.ndarray]:
    """What a decoded frame travels as: ``{"luma": uint8 H×W}`` (:func:`takes_luma_path`) or
    ``{"frame": uint8 H×W×3 RGB}`` (HDR frames tone-mapped to SDR first: :mod:`stages.hdr`)."""
    if is_hdr(frame):
        return {"frame": sdr_rgb(frame)}
    if takes_luma_path(frame):
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8, count=frame.height * plane.line_size).reshape(frame.height, plane.line_size)
        return {"luma": np.ascontiguousarray(rows[:, :frame.width])}
    return {"frame": frame.to_ndarray(format="rgb24")}


def grey_plane(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The luma of a frame from :func:`frame_arrays`, uint8 H×W (computed for an RGB frame)."""
    if "luma" in arrays:
        return arrays["luma"]
    return cv2.cvtColor(arrays["frame"], cv2.COLOR_RGB2GRAY)


class Decoder(Stage):
    name = "decoder"
    output_link = "frames"

    def open(self) -> None:
        self.container = open_input(self.job.input)
        videos = self.container.streams.video
        if not videos:
            raise InputError(f"no video stream in {self.job.input}")
        if self.job.stream_index >= len(videos):
            raise InputError(f"--stream {self.job.stream_index}: {self.job.input} has "
                             f"{len(videos)} video stream(s), numbered from 0")
        self.stream = videos[self.job.stream_index]
        self.stream.thread_type = "AUTO"
        if self.config.decoder.threads:
            self.stream.codec_context.thread_count = self.config.decoder.threads
        self.time_base = (self.stream.time_base.numerator, self.stream.time_base.denominator)
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.frame_ticks = int(round(1 / (rate * self.stream.time_base))) if rate else 1
        self.decoded = 0
        self.account = DecodeAccount()
        self.last_frame_end_s: float | None = None
        self.expected_end_s = announced_end_s(self.container, self.stream)
        self.draining = False
        self.cadence = ModelCadence(self.config.inference.every_nth_frame, self.config.encoder.temporal)
        self.interlace_note = ""
        self.hdr_note = ""
        self._frame_time_base = None
        self.start_ticks = round(self.job.start_s / self.stream.time_base) if self.job.start_s else 0
        self.end_ticks = self.start_ticks + round(self.job.duration_s / self.stream.time_base) if self.job.duration_s else None
        self.warmup_ticks, self.shift_ticks = self.start_ticks, self.start_ticks
        self.warmed = self.skipped = 0
        segment = self.job.segment
        if segment is not None:  # a piece of a segmented run: timestamps kept, warm-up frames before it
            self.warmup_ticks, self.start_ticks, self.shift_ticks = segment.warmup_ticks, segment.start_ticks, 0
            self.end_ticks = segment.end_ticks or None
        if self.warmup_ticks > (self.stream.start_time or 0):
            self.container.seek(self.warmup_ticks, stream=self.stream, backward=True)  # the keyframe before
        total = estimated_frame_count(self.stream)
        rate = self.stream.average_rate or self.stream.guessed_rate
        if segment is not None:
            total = (math.ceil(float((segment.end_ticks - segment.start_ticks) * self.stream.time_base * rate))
                     if segment.end_ticks and rate else None)
        elif total and rate and (self.job.start_s or self.job.duration_s):
            first = self.job.start_s - float((self.stream.start_time or 0) * self.stream.time_base) if self.job.start_s else 0.0
            total = max(0, total - math.ceil(first * float(rate) - 1e-6))
            if self.job.duration_s:
                total = min(total, math.ceil(self.job.duration_s * float(rate)))
        if self.job.max_frames:
            total = min(total or self.job.max_frames, self.job.max_frames)
        self.control.emit("total", frames=total)

    def drain(self) -> None:
        self.draining = True

    def produce(self) -> Iterable[Message]:
        last_pts = None
        for frame in itertools.islice(self._deinterlaced(self._frames()), self.job.max_frames or None):
            if self.draining:
                break
            pts, duration = self._on_stream_clock(frame.pts), self._on_stream_clock(frame.duration)
            if pts is None:
                pts = self.warmup_ticks if last_pts is None else last_pts + self.frame_ticks
            if pts < self.warmup_ticks:
                self.skipped += 1
                self.account.frames = self.decoded + self.skipped
                continue  # decoded from the keyframe before --start: not part of the output
            if self.end_ticks is not None and pts >= self.end_ticks:
                break
            warmup = pts < self.start_ticks
            last_pts = pts
            pts -= self.shift_ticks  # --start is the output's time 0; a segment keeps the input's clock
            self.last_frame_end_s = float((last_pts + (duration or self.frame_ticks)) * self.stream.time_base)
            if not self.hdr_note and is_hdr(frame):
                self.hdr_note = (f"{self.job.input} is {describe_hdr(frame)}: tone-mapped to SDR BT.709 "
                                 "(reference white 203 cd/m², peak 1000 assumed) for colorization and output")
            arrays = frame_arrays(frame)
            flags = FLAG_KEYFRAME if frame.key_frame else 0
            if self.cadence.every > 1 and not self.cadence.wants_model(grey_plane(arrays)):
                flags |= FLAG_CARRY
            if warmup:
                flags |= FLAG_WARMUP
                self.warmed += 1
            header = FrameHeader(kind=FRAME, seq=self.decoded, pts=pts, time_base=self.time_base, flags=flags,
                                 sent_at=time.time(), rotation=int(frame.rotation or 0))
            self.decoded += 1
            self.account.frames = self.decoded + self.skipped
            self.account.concealed += bool(frame.is_corrupt)
            yield Message(header, arrays)
        if self.decoded == 0 and not self.draining and self.job.start_s:
            raise InputError(f"nothing to colorize from --start on: the video of {self.job.input} ends before it")
        if self.decoded == 0 and not self.draining:
            raise InputError(f"no decodable video frames in {self.job.input}")

    def _on_stream_clock(self, ticks: int | None) -> int | None:
        """``ticks`` of the last frame's time base (a filter may change it: bwdif halves it) in the
        stream's time base."""
        time_base = self._frame_time_base
        if ticks is None or time_base is None or time_base == self.stream.time_base:
            return ticks
        return round(ticks * time_base / self.stream.time_base)

    def _deinterlaced(self, frames):
        """The decoded frames, through bwdif when ``decoder.deinterlace`` says so (see
        :mod:`stages.deinterlace`); decided at the first frame, said in the run's summary."""
        mode, order = self.config.decoder.deinterlace, field_order_of(self.stream)
        deinterlacer = None
        for frame in frames:
            if deinterlacer is None and self.decoded == 0 and not self.interlace_note:
                interlaced = order in FIELD_ORDERS or frame.interlaced_frame
                if mode == "on" or (mode == "auto" and interlaced):
                    deinterlacer = Deinterlacer(self.stream, every_frame=mode == "on")
                    self.interlace_note = f"deinterlaced (bwdif, {describe_field_order(order)})"
                elif interlaced:
                    self.interlace_note = f"interlaced, kept ({describe_field_order(order)})"
                else:
                    self.interlace_note = "progressive"
            for ready in (deinterlacer.push(frame) if deinterlacer else [frame]):
                self._frame_time_base = ready.time_base
                yield ready
        for ready in (deinterlacer.flush() if deinterlacer else []):
            self._frame_time_base = ready.time_base
            yield ready

    def _frames(self):
        """Decoded frames in order; a packet that fails to decode is skipped and counted.

        A demuxer that gives up on damaged data ends the input there: the frames still inside the
        decoder are flushed out, and the warnings say where the input ended.
        """
        try:
            for packet in self.container.demux(self.stream):
                if packet.size:
                    self.account.packets += 1
                yield from self._decode(packet)
        except (av.error.InvalidDataError, av.error.EOFError):
            self.account.reject(None)
            yield from self._decode(None)
        self.account.read_to_end = True

    def _decode(self, packet):
        """The frames of one packet (None: flush the decoder); [] if FFmpeg rejects it."""
        try:
            return self.stream.codec_context.decode(packet)
        except av.error.EOFError:
            return []
        except av.error.InvalidDataError:
            at = None
            if packet is not None and packet.pts is not None:
                at = float(packet.pts * self.stream.time_base)
            self.account.reject(at)
            return []

    def warnings(self) -> list[str]:
        """Lines for the user about damage found in the input (none for a clean file)."""
        account = getattr(self, "account", None)
        if account is None:
            return []
        found = account.warnings(self.job.input) + [getattr(self, "hdr_note", "")]
        if account.read_to_end and not self.job.duration_s:
            frame_s = float(self.frame_ticks * self.stream.time_base)
            found.append(ended_early_warning(self.job.input, self.last_frame_end_s, self.expected_end_s, frame_s))
        return [line for line in found if line]

    def close(self) -> None:
        container = getattr(self, "container", None)
        if container is not None:
            container.close()

    def stats(self) -> dict:
        account = getattr(self, "account", DecodeAccount())
        notes = [self.interlace_note] if getattr(self, "interlace_note", "").startswith(("deinterlaced", "interlaced")) else []
        return {"decoded": getattr(self, "decoded", 0) - getattr(self, "warmed", 0),
                "warmup": getattr(self, "warmed", 0), "undecodable_packets": account.undecodable,
                "packets": account.packets, "warnings": self.warnings(), "notes": notes}


STAGE = Decoder
