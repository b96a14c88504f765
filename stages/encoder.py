"""Encoder stage: restores frame order, merges predicted ab with each frame's L, writes H.264.

Temporal smoothing (:mod:`stages.temporal`) also runs here: it needs the frames in presentation
order, which only the encoder has once its reorder buffer has put them back.

Post-processing (ab resize, merge with the full-resolution L, Lab → RGB) happens here rather than
in the inference stage: inference is the bottleneck on CPU, while the encoder's own work (x264)
runs on FFmpeg's threads, so this is where the extra milliseconds cost least. The RGB → yuv420p
conversion is left to FFmpeg's swscale inside PyAV.

The output (libx264, yuv420p, the input's time base and timestamps, its rotation, its first audio
track) is written to ``job.output_tmp``; the supervisor renames it once the run has succeeded.

Whatever the source's pixel format (10-bit, 4:2:2, 4:4:4, RGB), the output is 8-bit 4:2:0, which
every player decodes; the lightness is the source's. Odd sizes: 4:2:0 H.264 cannot code an odd
width or height, so such frames gain one column or row repeating the last one (a 1919×1079 source
gives 1920×1080): no source pixel is lost, unlike cropping, and the file still plays everywhere,
unlike 4:4:4. A failure to write (a full disk, a quota, ``ulimit -f``) ends the run with one line
naming the folder and the cause (:mod:`stages.output_errors`).
"""
from __future__ import annotations

import time
from collections import deque
from fractions import Fraction
from typing import Iterable

import av
import numpy as np

from stages.audio import AudioTrack
from stages.lab import merge_ab
from stages.temporal import TemporalSmoother
from stages.output_errors import fail_instead_of_dying_on_file_size_limit, writing_output
from stream.messages import Message
from stream.stage import Stage

PROGRESS_INTERVAL_S = 0.25
LATENCY_WINDOW = 10_000


def even_size(rgb: np.ndarray) -> np.ndarray:
    """yuv420p needs even width and height: odd frames get their last row/column repeated."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class Encoder(Stage):
    name = "encoder"
    input_link = "colour"

    def __new__(cls, spec, control):
        if spec.job.live and cls is Encoder:  # live outputs: stages/live_sink.py
            from stages.live_sink import LiveEncoder
            cls = LiveEncoder
        return super().__new__(cls)

    def open(self) -> None:
        fail_instead_of_dying_on_file_size_limit()
        self.reorder_buffer: dict[int, Message] = {}
        self.next_seq = 0
        self.expected: int | None = None
        self.output = None
        self.video = None
        self.audio: AudioTrack | None = None
        self.last_pts: int | None = None
        self.last_progress = 0.0
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.temporal = TemporalSmoother(self.config.encoder.temporal)

    def handle(self, message: Message) -> Iterable[Message]:
        seq = message.header.seq
        if seq < self.next_seq or seq in self.reorder_buffer:
            return ()  # a frame sent again after its first copy arrived: written once only
        self.reorder_buffer[seq] = message
        self._write_ready()
        return ()

    def on_end_of_stream(self, message: Message) -> None:
        self.expected = message.header.seq
        self._write_ready()

    def _write_ready(self) -> None:
        with writing_output(self.job.output_tmp):
            while self.next_seq in self.reorder_buffer:
                self._write(self.reorder_buffer.pop(self.next_seq))
                self.next_seq += 1
            now = time.monotonic()
            if now - self.last_progress >= PROGRESS_INTERVAL_S:
                self.last_progress = now
                self.control.emit("progress", frames=self.next_seq)
            if self.expected is not None and self.next_seq >= self.expected:
                self._finish()

    def _open_output(self, message: Message, height: int, width: int) -> None:
        enc = self.config.encoder
        self.output = self._open_container()
        self.video = self.output.add_stream("libx264", rate=Fraction(*self.job.frame_rate))
        self.video.width, self.video.height = width, height
        self.video.pix_fmt = "yuv420p"
        time_base = message.header.time_base_fraction
        self.video.time_base = time_base
        self.video.codec_context.time_base = time_base
        self.video.options = {"crf": str(enc.crf), "preset": enc.preset}
        if enc.threads:
            self.video.codec_context.thread_count = enc.threads
        if message.header.rotation:
            self.video.set_display_rotation(message.header.rotation)
        kind = "matroska" if self.job.output_format == "matroska" else "mp4"
        if not self.job.live:
            self.audio = AudioTrack(self.job.input, self.output, kind, enc.audio, enc.audio_bitrate_kbps)

    def _open_container(self):
        return av.open(self.job.output_tmp, mode="w", format=self.job.output_format)

    def _before_encode(self, frame: av.VideoFrame) -> None:
        """Called with each frame (pts and time base set) just before it is encoded."""

    def _written(self, rgb: np.ndarray, message: Message) -> None:
        """Called after each frame is encoded (``rgb``: the colorized H×W×3 uint8 frame)."""

    def _write(self, message: Message) -> None:
        ab = self.temporal.update(message.arrays["frame"], message.arrays["ab"])
        rgb = even_size(merge_ab(message.arrays["frame"], ab))
        if self.output is None:
            self._open_output(message, rgb.shape[0], rgb.shape[1])
        pts = message.header.pts
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1
        self.last_pts = pts
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = pts
        frame.time_base = message.header.time_base_fraction
        self._before_encode(frame)
        for packet in self.video.encode(frame):
            self.output.mux(packet)
        if self.audio is not None:
            self.audio.write_until(float(pts * frame.time_base))
        self.latencies.append(time.time() - message.header.sent_at)
        self._written(rgb, message)

    def _finish(self) -> None:
        if self.output is not None:
            for packet in self.video.encode(None):
                self.output.mux(packet)
            if self.audio is not None:
                self.audio.write_until(None)
                self.audio.close()
            self.output.close()
            self.output = None
        self.finished = True

    def close(self) -> None:
        if getattr(self, "output", None) is not None:
            try:
                self.output.close()
            except av.error.FFmpegError:
                pass
        if getattr(self, "audio", None) is not None:
            self.audio.close()

    def stats(self) -> dict:
        latencies = sorted(getattr(self, "latencies", []))
        figures = {"written": getattr(self, "next_seq", 0)}
        if latencies:
            figures["latency_p50_ms"] = 1000 * latencies[len(latencies) // 2]
            figures["latency_p95_ms"] = 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
        if getattr(self, "audio", None) is not None and self.audio.stream is not None:
            if self.audio.packets_written:
                figures["audio"] = "copied" if self.audio.copy else "aac"
            figures["warnings"] = self.audio.warnings(self.job.input)
        return figures


STAGE = Encoder
