"""Decoder stage: opens the input with PyAV and sends its video frames as RGB24 arrays.

Each frame keeps its pts and the stream's time base, so the output has the input's timestamps
(constant or variable frame rate). Packets that fail to decode are skipped and counted; an
input with no decodable frame at all is an input error (exit code 2).
"""
from __future__ import annotations

import time
from typing import Iterable

import av

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
        self.undecodable_packets = 0
        self.draining = False
        self.control.emit("total", frames=estimated_frame_count(self.stream))

    def drain(self) -> None:
        self.draining = True

    def produce(self) -> Iterable[Message]:
        last_pts = None
        for frame in self._frames():
            if self.draining:
                break
            pts = frame.pts
            if pts is None:
                pts = 0 if last_pts is None else last_pts + self.frame_ticks
            last_pts = pts
            header = FrameHeader(kind=FRAME, seq=self.decoded, pts=pts, time_base=self.time_base,
                                 flags=FLAG_KEYFRAME if frame.key_frame else 0,
                                 sent_at=time.time(), rotation=int(frame.rotation or 0))
            self.decoded += 1
            yield Message(header, {"frame": frame.to_ndarray(format="rgb24")})
        if self.decoded == 0 and not self.draining:
            raise InputError(f"no decodable video frames in {self.job.input}")

    def _frames(self):
        """Decoded frames in order; a packet that fails to decode is skipped and counted."""
        try:
            for packet in self.container.demux(self.stream):
                try:
                    yield from packet.decode()
                except av.error.InvalidDataError:
                    self.undecodable_packets += 1
        except av.error.InvalidDataError:
            self.undecodable_packets += 1

    def close(self) -> None:
        container = getattr(self, "container", None)
        if container is not None:
            container.close()

    def stats(self) -> dict:
        return {"decoded": getattr(self, "decoded", 0),
                "undecodable_packets": getattr(self, "undecodable_packets", 0)}


STAGE = Decoder
