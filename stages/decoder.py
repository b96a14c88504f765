"""Decoder stage: opens the input with PyAV and sends its video frames as RGB24 arrays.

Each frame keeps its pts and the stream's time base, so the output has the input's timestamps
(constant or variable frame rate). Packets that fail to decode are skipped and counted (see
:mod:`stream.accounting`); a damaged or truncated file gives the frames that can be decoded, with
a warning; an input with no decodable frame at all is an input error (exit code 2).
"""
from __future__ import annotations

import itertools
import time
from typing import Iterable

import av

from stream.accounting import DecodeAccount, ended_early_warning
from stream.errors import InputError
from stream.messages import FLAG_KEYFRAME, FRAME, FrameHeader, Message
from stream.stage import Stage


def open_input(path: str, options: dict[str, str] | None = None):
    """av.open with our error wording: anything FFmpeg cannot open is an InputError."""
    try:
        return av.open(path, mode="r", options=options or {})
    except FileNotFoundError:
        raise InputError(f"input not found: {path}") from None
    except (av.error.InvalidDataError, av.error.EOFError):
        raise InputError(f"not a media file FFmpeg can read: {path}") from None
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot open input {path}: {exc.strerror or exc}") from None


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


class Decoder(Stage):
    name = "decoder"
    output_link = "frames"

    def __new__(cls, spec, control):
        if spec.job.live and cls is Decoder:  # live sources: stages/live_source.py
            from stages.live_source import LiveDecoder
            cls = LiveDecoder
        return super().__new__(cls)

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
        total = estimated_frame_count(self.stream)
        if self.job.max_frames:
            total = min(total or self.job.max_frames, self.job.max_frames)
        self.control.emit("total", frames=total)

    def drain(self) -> None:
        self.draining = True

    def produce(self) -> Iterable[Message]:
        last_pts = None
        for frame in itertools.islice(self._frames(), self.job.max_frames or None):
            if self.draining:
                break
            pts = frame.pts
            if pts is None:
                pts = 0 if last_pts is None else last_pts + self.frame_ticks
            last_pts = pts
            self.last_frame_end_s = float((pts + (frame.duration or self.frame_ticks)) * self.stream.time_base)
            header = FrameHeader(kind=FRAME, seq=self.decoded, pts=pts, time_base=self.time_base,
                                 flags=FLAG_KEYFRAME if frame.key_frame else 0,
                                 sent_at=time.time(), rotation=int(frame.rotation or 0))
            self.decoded += 1
            self.account.frames = self.decoded
            self.account.concealed += bool(frame.is_corrupt)
            yield Message(header, {"frame": frame.to_ndarray(format="rgb24")})
        if self.decoded == 0 and not self.draining:
            raise InputError(f"no decodable video frames in {self.job.input}")

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
        found = account.warnings(self.job.input)
        if account.read_to_end:
            frame_s = float(self.frame_ticks * self.stream.time_base)
            found.append(ended_early_warning(self.job.input, self.last_frame_end_s, self.expected_end_s, frame_s))
        return [line for line in found if line]

    def close(self) -> None:
        container = getattr(self, "container", None)
        if container is not None:
            container.close()

    def stats(self) -> dict:
        account = getattr(self, "account", DecodeAccount())
        return {"decoded": getattr(self, "decoded", 0), "undecodable_packets": account.undecodable,
                "packets": account.packets, "warnings": self.warnings()}


STAGE = Decoder
