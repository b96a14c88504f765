"""The encoder stage in live mode: live outputs, forwarded audio, acknowledgements, figures, preview.

:class:`LiveEncoder` is what :class:`stages.encoder.Encoder` becomes when ``job.live`` is set. On top
of the file encoder it

* opens the output by :func:`stages.outputs.plan_output` (fragmented file, segments or a stream
  server) with zero-latency x264 and a keyframe every ``live.output.keyframe_interval_s``;
* takes its audio from the decoder over the audio side link (:class:`LiveAudio`), not from the input;
* acknowledges every frame written to the decoder (its in-flight window), and with
  ``live.timing_log`` logs each frame's arrival and write times;
* sends ``live`` events every half second: ``output_fps``, ``latency_ms`` (p50 of the last second,
  from the frame's arrival at the decoder to its packet leaving x264), ``written``;
* with ``job.preview``, sends JPEGs of the colorized frames (at most ``live.preview.fps`` per second)
  to the ``--preview`` server on the preview side link, dropping them when the page is behind.
"""
from __future__ import annotations

import time
from collections import deque
from fractions import Fraction

import av
import cv2
import numpy as np
import zmq
from av.video.frame import PictureType

from stages.encoder import Encoder
from stages.live_links import (AUDIO, AUDIO_END, AUDIO_FORMAT, AUDIO_HWM, PREVIEW_HWM, pull_socket,
                               push_socket, receive_nowait, side_endpoint)
from stages.outputs import keyframe_interval, open_output, plan_output, video_options
from stream.messages import Message

EVENT_INTERVAL_S = 0.5
FORMAT_WAIT_S = 2.0
END_WAIT_S = 1.0
JITTER_S = 0.02


class LiveAudio:
    """Audio samples from the audio side link, encoded to AAC on the video's clock.

    The same interface as :class:`stages.tracks.SideTracks`: ``stream`` (None when the source has no
    audio), :meth:`write_until`, :meth:`flush`, :meth:`warnings`, :meth:`summary` and :meth:`close`. The AAC
    track starts at 0 and stays continuous: a gap in the samples (a reconnect) is filled with silence
    and an overlap trimmed, so audio keeps in step with the video's timestamps.
    """

    def __init__(self, link: zmq.Socket, output, bitrate_kbps: int):
        self.link, self.output = link, output
        self.stream = None
        self.pending: deque[tuple[int, np.ndarray]] = deque()
        self.next_sample = 0
        self.ended = False
        self.flushed = False
        self.packets_written = 0
        self.rate = self.channels = 0
        deadline = time.monotonic() + FORMAT_WAIT_S
        while not self.channels and not self.ended and time.monotonic() < deadline:
            if link.poll(50):
                self._take(receive_nowait(link))
            if self.rate and not self.channels:
                break  # the source has no audio
        if self.channels:
            self.stream = output.add_stream("aac", rate=self.rate)
            self.stream.codec_context.layout = "stereo" if self.channels == 2 else "mono"
            self.stream.bit_rate = bitrate_kbps * 1000
            self.stream.options = {"aac_coder": "fast"}  # a quarter of the default coder's CPU time
            self.layout = "stereo" if self.channels == 2 else "mono"

    def _take(self, message: Message | None) -> None:
        if message is None:
            return
        kind = message.header.kind
        if kind == AUDIO_FORMAT:
            self.rate, self.channels = message.header.time_base[1], message.header.seq
            self.rate = self.rate if self.channels else 1
        elif kind == AUDIO:
            self.pending.append((message.header.pts, np.array(message.arrays["samples"])))
        elif kind == AUDIO_END:
            self.ended = True

    def _receive(self) -> None:
        while (message := receive_nowait(self.link)) is not None:
            self._take(message)

    def write_until(self, seconds: float | None) -> None:
        """Encode every sample that starts before ``seconds`` of output; all of them (and flush) if None."""
        if self.stream is None:
            return
        self._receive()
        if seconds is None:
            deadline = time.monotonic() + END_WAIT_S
            while not self.ended and time.monotonic() < deadline:
                if self.link.poll(50):
                    self._receive()
        limit = None if seconds is None else round(seconds * self.rate)
        while self.pending and (limit is None or self.pending[0][0] < limit):
            start, samples = self.pending.popleft()
            self._write(start, samples)
        if seconds is None:
            self.flush()

    def flush(self) -> None:
        """Write what the AAC encoder still holds (once)."""
        if self.stream is not None and not self.flushed:
            self.flushed = True
            self._mux(self.stream.encode(None))

    def _write(self, start: int, samples: np.ndarray) -> None:
        jitter = round(JITTER_S * self.rate)
        if start > self.next_sample + jitter:
            self._encode(np.zeros((samples.shape[0], start - self.next_sample), np.float32))
        elif start < self.next_sample - jitter:
            samples = samples[:, self.next_sample - start:]
        if samples.shape[1]:
            self._encode(samples)

    def _encode(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, np.float32), format="fltp",
                                           layout=self.layout)
        frame.sample_rate = self.rate
        frame.pts = self.next_sample
        frame.time_base = Fraction(1, self.rate)
        self.next_sample += samples.shape[1]
        self._mux(self.stream.encode(frame))

    def _mux(self, packets) -> None:
        for packet in packets:
            self.output.mux(packet)
            self.packets_written += 1

    def summary(self) -> str | None:
        """For the summary line: 'aac' once audio was written, else None."""
        return "aac" if self.packets_written else None

    def warnings(self, source: str) -> list[str]:
        """As AudioTrack.warnings; nothing to report here (the decoder skips damaged packets)."""
        return []

    def close(self) -> None:
        """Nothing to release: the side link belongs to the encoder."""


class LiveEncoder(Encoder):
    """The encoder stage in live mode (see the module docstring)."""

    colour_ahead = 0  # each frame out as soon as it is coloured: latency before throughput

    def open(self) -> None:
        super().open()
        live = self.config.live
        self.side_context = zmq.Context()
        channel = self.job.live_channel
        self.audio_link = pull_socket(self.side_context, side_endpoint(channel, "audio"), AUDIO_HWM)
        self.acks = push_socket(self.side_context, side_endpoint(channel, "acks"), hwm=100_000)
        self.preview = (push_socket(self.side_context, side_endpoint(channel, "preview"), PREVIEW_HWM)
                        if self.job.preview else None)
        self.plan = plan_output(self.job.output_tmp, self.job.output_format, live.output)
        self.written_at: deque[float] = deque(maxlen=256)
        self.recent_latency: deque[tuple[float, float]] = deque(maxlen=256)
        self.last_event = 0.0
        self.last_preview = 0.0
        self.last_keyframe_s: float | None = None
        self.timing = open(live.timing_log, "a", buffering=1) if live.timing_log else None

    def _open_container(self):
        return open_output(self.plan)

    def _open_output(self, message: Message, height: int, width: int) -> None:
        super()._open_output(message, height, width)
        live = self.config.live.output
        self.video.options = {**self.video.options, **video_options(live)}
        self.video.codec_context.gop_size = keyframe_interval(live, float(Fraction(*self.job.frame_rate)))
        if self.config.encoder.audio != "none":
            self.audio = LiveAudio(self.audio_link, self.output, self.config.encoder.audio_bitrate_kbps)

    def _before_encode(self, frame: av.VideoFrame) -> None:
        """A keyframe at least every ``keyframe_interval_s`` of output time, however many frames were
        dropped (x264's own interval counts frames)."""
        seconds = float(frame.pts * frame.time_base)
        interval = self.config.live.output.keyframe_interval_s
        if self.last_keyframe_s is None or seconds - self.last_keyframe_s >= interval - 1e-3:
            frame.pict_type = PictureType.I
            self.last_keyframe_s = seconds

    def _written(self, picture: av.VideoFrame, message: Message) -> None:
        now = time.time()
        try:
            self.acks.send(str(message.header.seq).encode(), zmq.NOBLOCK)
        except zmq.Again:
            pass
        self.written_at.append(now)
        if self.timing is not None:
            self.timing.write(f"{message.header.seq} {message.header.pts} {message.header.sent_at:.6f} {now:.6f}\n")
        self.recent_latency.append((now, now - message.header.sent_at))
        if self.preview is not None and now - self.last_preview >= 1.0 / self.config.live.preview.fps:
            self.last_preview = now
            self._send_preview(picture.to_ndarray(format="rgb24"))
        if now - self.last_event >= EVENT_INTERVAL_S:
            self.last_event = now
            self._emit_live(now)

    def _send_preview(self, rgb: np.ndarray) -> None:
        cfg = self.config.live.preview
        height, width = rgb.shape[:2]
        if width > cfg.width:
            rgb = cv2.resize(rgb, (cfg.width, max(2, round(height * cfg.width / width))), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        if ok:
            try:
                self.preview.send(jpeg.tobytes(), zmq.NOBLOCK)
            except zmq.Again:
                pass

    def _emit_live(self, now: float) -> None:
        recent = [t for t in self.written_at if now - t <= 2.0]
        fps = (len(recent) - 1) / max(1e-6, recent[-1] - recent[0]) if len(recent) >= 2 else 0.0
        latencies = sorted(lat for t, lat in self.recent_latency if now - t <= 1.0)
        fields = {"output_fps": round(fps, 2), "written": self.written}
        if latencies:
            fields["latency_ms"] = round(1000 * latencies[len(latencies) // 2], 1)
        self.control.emit("live", **fields)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if getattr(self, "timing", None) is not None:
                self.timing.close()
            context = getattr(self, "side_context", None)
            if context is not None:
                for sock in (self.audio_link, self.acks, self.preview):
                    if sock is not None:
                        sock.close(linger=0)
                context.term()

    def stats(self) -> dict:
        figures = super().stats()
        if getattr(self, "plan", None) is not None:
            figures["output_kind"] = self.plan.kind
        return figures


STAGE = LiveEncoder
