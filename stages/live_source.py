"""Live sources: network inputs read at their own pace, with bounded latency, reconnects and audio.

The decoder stage becomes a :class:`LiveDecoder` when ``job.live`` is set. Contract:

* A reader thread owns the connection. It opens the URL with :func:`open_options` (transport,
  probing, timeouts from ``live.source``), decodes every video frame as it arrives and hands it to
  a :class:`FrameGate`; it decodes the first audio track to float samples and forwards them on the
  audio side link (:mod:`stages.live_links`), because the encoder cannot open a live source again.
* The stage's main thread sends a frame downstream only while fewer than ``live.max_in_flight``
  frames are unacknowledged by the encoder. Frames arriving meanwhile wait in the gate, which
  drops by ``live.drop`` (and counts what it drops), so latency stays bounded instead of growing.
* One output clock (:class:`Timeline`, ticks of 1/90000 s): the first frame is at 0; after a
  reconnect the clock resumes after the last frame plus the time the source was gone, so
  timestamps keep increasing and the gap is visible (and logged).
* Reconnects (:class:`Backoff`): when the connection breaks, stays silent ``read_timeout_s``, or
  ends (with ``on_end: reconnect``), it is opened again after waits growing from
  ``backoff_initial_s`` to ``backoff_max_s``. Once the source has been gone ``reconnect.limit_s``
  the stream ends normally (the output is finished and playable) and a ``live`` event carries
  ``ended``: why. Only the very first connection failing is an input error (exit code 2).
  FFmpeg reports an RTSP server that went away exactly as the end of its stream (a clean EOF),
  hence ``on_end: reconnect`` by default.
* A local file in live mode (publishing a file to a stream server), or a network input that
  announces a duration (a recording served over HTTP, say), is read in real time (paced by its
  timestamps, like ``ffmpeg -re``); a local file ends at its end.
* ``job.duration_s``: the reader stops at the first frame that far along the output clock; frames
  still waiting when the stream ends (Ctrl-C, duration) count as dropped, so that
  frames decoded = frames written + frames dropped.
* Drop policy 'none' holds up to 250 decoded frames; beyond that the reader waits, so the source is
  read more slowly (TCP pushes back on the server; UDP loses packets).

The main thread reports ``live`` events every half second: ``input_fps``, ``dropped``,
``reconnects``, ``connected`` and ``logs`` (lines: source lost, failed attempts, source back and
the gap); the last one also ``ended`` and ``duration_reached``.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator

import av
import zmq

from stages.decoder import Decoder, frame_arrays
from stages.live_links import (AUDIO_HWM, audio_end_message, audio_format_message, audio_message,
                               pull_socket, push_socket, send_nowait, side_endpoint)
from stream.config import LiveConfig, LiveSourceConfig
from stream.errors import InputError
from stream.messages import FLAG_KEYFRAME, FLAG_SCENE_CUT, FRAME, FrameHeader, Message

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "srt", "tcp", "rtp")
TICKS_PER_SECOND = 90_000
EVENT_INTERVAL_S = 0.5
WAIT_S = 0.05
NONE_POLICY_CAPACITY = 250  # decoded frames (~350 KB each at 640×360) held before reading slows down
HELD_AUDIO_LIMIT = 400


def is_network_url(text: str) -> bool:
    """True for inputs and outputs FFmpeg reaches over the network (rtsp://, rtmp://, udp://, ...)."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in NETWORK_SCHEMES


SECRET_QUERY_KEYS = ("pass", "secret", "token", "key", "auth")


def redact_url(url: str) -> str:
    """``url`` as it may be shown or logged: a password in its user part and the values of query
    parameters that name a secret (passphrase, password, token, key, auth…) are replaced by ``***``
    (``rtsp://user:secret@cam/s`` → ``rtsp://user:***@cam/s``). A plain path is returned as is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, question, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    user_info, at, host = authority.rpartition("@")
    if at and ":" in user_info:
        authority = f"{user_info.split(':', 1)[0]}:***@{host}"
    if query:
        pairs = []
        for pair in query.split("&"):
            name, eq, value = pair.partition("=")
            secret = eq and any(word in name.lower() for word in SECRET_QUERY_KEYS)
            pairs.append(f"{name}=***" if secret else pair)
        query = "&".join(pairs)
    return f"{scheme}://{authority}{slash}{path}{question}{query}"


def open_options(url: str, cfg: LiveSourceConfig) -> dict[str, str]:
    """FFmpeg options for opening ``url``: short probing (a fast first frame), the RTSP transport."""
    options = {"analyzeduration": str(cfg.analyzeduration_ms * 1000), "probesize": str(cfg.probesize_bytes)}
    scheme = url.partition("://")[0].lower()
    if scheme in ("rtsp", "rtsps"):
        options["rtsp_transport"] = cfg.rtsp_transport
    if scheme == "udp":
        options["overrun_nonfatal"] = "1"
    return options


def open_source(url: str, cfg: LiveSourceConfig, network: bool):
    """Open a live source; raises InputError with one line when it cannot be opened. A server that
    takes the connection and never answers ends some demuxers (RTSP's) with "invalid data" once
    their own wait runs out: after ``open_timeout_s`` that is said as no answer."""
    started = time.monotonic()
    try:
        if network:
            return av.open(url, mode="r", options=open_options(url, cfg),
                           timeout=(cfg.open_timeout_s, cfg.read_timeout_s))
        return av.open(url, mode="r")
    except FileNotFoundError:
        raise InputError(f"input not found: {redact_url(url)}") from None
    except av.error.ExitError:
        raise InputError(f"cannot open input {redact_url(url)}: no answer within {cfg.open_timeout_s:g} s") from None
    except (av.error.InvalidDataError, av.error.EOFError):
        if network and time.monotonic() - started >= cfg.open_timeout_s:
            raise InputError(f"cannot open input {redact_url(url)}: no answer within "
                             f"{cfg.open_timeout_s:g} s") from None
        raise InputError(f"not a media stream FFmpeg can read: {redact_url(url)}") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"cannot open input {redact_url(url)}: {getattr(exc, 'strerror', None) or exc}") from None


@dataclass(frozen=True)
class Backoff:
    """Waits between reconnect attempts: ``initial_s``, doubling, at most ``max_s``."""

    initial_s: float
    max_s: float

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(self.max_s, delay * 2)


class Timeline:
    """One output clock (integer ticks of 1/90000 s) for every connection to the source.

    :meth:`begin` starts a connection at its first frame's source time; :meth:`place` maps a source
    time to output ticks, strictly increasing. The first connection starts at 0; a later one at the
    last frame's ticks plus the wall-clock time since that frame (at least one frame period).
    """

    def __init__(self):
        self.offset: int | None = None
        self.last: int | None = None
        self.last_wall = 0.0
        self.period = TICKS_PER_SECOND // 25

    def begin(self, source_ticks: int, wall: float) -> float | None:
        """Start a connection; returns the gap in seconds since the previous connection's last frame."""
        if self.last is None:
            self.offset = -source_ticks
            return None
        gap = max(self.period, round((wall - self.last_wall) * TICKS_PER_SECOND))
        self.offset = self.last + gap - source_ticks
        return gap / TICKS_PER_SECOND

    def place(self, source_ticks: int, wall: float) -> int:
        ticks = source_ticks + self.offset
        if self.last is not None:
            if ticks > self.last:
                self.period = min(ticks - self.last, TICKS_PER_SECOND)
            ticks = max(ticks, self.last + 1)
        self.last, self.last_wall = ticks, wall
        return ticks

    def to_output(self, source_ticks: int) -> int:
        return source_ticks + (self.offset or 0)


@dataclass
class LiveFrame:
    """A decoded frame waiting to be sent: ``ticks`` on the output clock, ``arrived_at`` wall-clock s;
    ``after_gap``: the first frame of a new connection (sent flagged as a scene cut);
    ``sample_aspect_ratio``: the pixel aspect its decoder reported (0:1 = not signalled)."""

    frame: av.VideoFrame
    ticks: int
    arrived_at: float
    after_gap: bool = False
    sample_aspect_ratio: tuple[int, int] = (0, 1)


class FrameGate:
    """Hands frames from the reader thread to the sender, holding at most ``capacity`` of them.

    When full, ``policy`` 'oldest' drops the oldest waiting frame for the new one, 'newest' drops the
    new frame, 'none' makes the reader wait for room. ``dropped`` counts frames dropped.
    """

    def __init__(self, policy: str, capacity: int):
        self.policy, self.capacity = policy, capacity
        self.items: deque[LiveFrame] = deque()
        self.cond = threading.Condition()
        self.dropped = 0
        self.closed = False
        self.carried_gap = False  # a dropped frame's after_gap passes to the next frame kept

    def put(self, item: LiveFrame) -> None:
        with self.cond:
            while len(self.items) >= self.capacity and not self.closed:
                if self.policy == "oldest":
                    item.after_gap |= self.items.popleft().after_gap
                    self.dropped += 1
                elif self.policy == "newest":
                    self.dropped += 1
                    self.carried_gap |= item.after_gap
                    return
                else:
                    self.cond.wait(0.1)
            if not self.closed:
                item.after_gap |= self.carried_gap
                self.carried_gap = False
                self.items.append(item)
                self.cond.notify_all()

    def take(self, timeout_s: float) -> LiveFrame | None:
        with self.cond:
            if not self.items and not self.closed:
                self.cond.wait(timeout_s)
            if self.items:
                item = self.items.popleft()
                self.cond.notify_all()
                return item
            return None

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def discard(self) -> None:
        """Drop what still waits (the run is ending), so every decoded frame is written or dropped."""
        with self.cond:
            self.dropped += len(self.items)
            self.items.clear()

    @property
    def exhausted(self) -> bool:
        with self.cond:
            return self.closed and not self.items


def _describe(exc: BaseException, cfg: LiveSourceConfig) -> str:
    if isinstance(exc, av.error.ExitError):
        return f"no data for {cfg.read_timeout_s:g} s"
    if isinstance(exc, InputError):
        return str(exc).split(": ", 1)[-1]
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class SourceReader(threading.Thread):
    """Reads the source until it ends, the reconnect limit passes or :attr:`stop` is set.

    Thread-safe outputs: the gate (frames), ``logs`` (lines for the main thread to report),
    ``decoded`` / ``reconnects`` counters, ``end_reason`` (set when the source was lost for good) and
    ``error`` (an unexpected failure, re-raised by the stage).
    """

    def __init__(self, url: str, container, network: bool, stream_index: int, cfg: LiveConfig,
                 gate: FrameGate, context: zmq.Context, audio_endpoint: str, audio_wanted: bool,
                 decoder_threads: int, duration_s: float = 0.0):
        super().__init__(name="live-source", daemon=True)
        self.url, self.container, self.network, self.stream_index = url, container, network, stream_index
        self.paced = not network or container.duration is not None  # a recording: read at its own pace
        self.cfg, self.gate, self.context = cfg, gate, context
        self.audio_endpoint, self.audio_wanted, self.decoder_threads = audio_endpoint, audio_wanted, decoder_threads
        self.timeline = Timeline()
        self.stop = threading.Event()
        self.logs: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.decoded = 0
        self.undecodable_packets = 0
        self.reconnects = 0
        self.arrivals: deque[float] = deque(maxlen=256)
        self.end_reason: str | None = None
        self.error: BaseException | None = None
        self.connected = True
        self.audio_rate = 0
        self.audio_layout = ""
        self.pace_start: float | None = None
        self.dropped_audio = 0
        self.attempts_before_back = 0
        self.duration_ticks = round(duration_s * TICKS_PER_SECOND)
        self.duration_reached = False

    # --- thread body -------------------------------------------------------------------------

    def run(self) -> None:
        audio_link = push_socket(self.context, self.audio_endpoint, AUDIO_HWM)
        try:
            self._announce_audio(audio_link)
            container = self.container
            while container is not None and not self.stop.is_set():
                reason = self._read(container, audio_link)
                container.close()
                self.connected = False
                if self.stop.is_set():
                    break
                if reason is None and (not self.network or self.cfg.source.on_end == "stop"):
                    break
                container = self._reconnect(reason or "the stream ended")
        except BaseException as exc:  # noqa: BLE001 - handed to the stage's main thread
            self.error = exc
        finally:
            send_nowait(audio_link, audio_end_message())
            audio_link.close()
            self.gate.close()

    def _announce_audio(self, audio_link: zmq.Socket) -> None:
        streams = self.container.streams.audio if self.audio_wanted else []
        if not streams or not streams[0].codec_context.sample_rate:
            send_nowait(audio_link, audio_format_message(0, 0))
            return
        ctx = streams[0].codec_context
        channels = min(2, ctx.layout.nb_channels if ctx.layout else 2) or 2
        self.audio_rate, self.audio_layout = ctx.sample_rate, "stereo" if channels == 2 else "mono"
        send_nowait(audio_link, audio_format_message(self.audio_rate, channels))

    def _read(self, container, audio_link: zmq.Socket) -> str | None:
        """Demux one connection; None when it ended cleanly, else why it broke."""
        video = container.streams.video[min(self.stream_index, len(container.streams.video) - 1)]
        video.thread_type = "SLICE"
        if self.decoder_threads:
            video.codec_context.thread_count = self.decoder_threads
        audio = container.streams.audio[0] if (self.audio_rate and container.streams.audio) else None
        state = _Connection(video.time_base, audio.time_base if audio else None)
        state.video_context = video.codec_context
        if audio is not None:  # one per connection: a new connection may bring another sample format
            state.resampler = av.AudioResampler(format="fltp", layout=self.audio_layout, rate=self.audio_rate)
        try:
            for packet in container.demux([s for s in (video, audio) if s is not None]):
                if self.stop.is_set():
                    return None
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    self.undecodable_packets += 1
                    continue
                for frame in frames:
                    if packet.stream is video:
                        self._on_video(frame, state, audio_link)
                    else:
                        self._on_audio(frame, state, audio_link)
            return None
        except (av.error.FFmpegError, OSError) as exc:
            return _describe(exc, self.cfg.source)

    def _on_video(self, frame: av.VideoFrame, state: "_Connection", audio_link: zmq.Socket) -> None:
        now = time.time()
        source = state.video_ticks(frame)
        after_gap = not state.started and self.timeline.last is not None
        if not state.started:
            state.started = True
            gap = self.timeline.begin(source, now)
            if gap is not None:
                attempts = self.attempts_before_back
                self.logs.put(f"source back after a {gap:.2f} s gap ({attempts} attempt{'s' * (attempts != 1)}); "
                              f"the output continues at {(self.timeline.last or 0) / TICKS_PER_SECOND + gap:.2f} s")
            for held in state.held_audio:
                self._send_audio(held, state, audio_link)
            state.held_audio.clear()
        ticks = self.timeline.place(source, now)
        if self.duration_ticks and ticks >= self.duration_ticks:
            self.duration_reached = True
            self.stop.set()
            return
        if self.paced:
            self._pace(ticks)
            now = time.time()
        self.decoded += 1
        self.arrivals.append(now)
        sar = state.video_context.sample_aspect_ratio if state.video_context is not None else None
        self.gate.put(LiveFrame(frame, ticks, now, after_gap, (sar.numerator, sar.denominator) if sar else (0, 1)))

    def _pace(self, ticks: int) -> None:
        if self.pace_start is None:
            self.pace_start = time.monotonic() - ticks / TICKS_PER_SECOND
        delay = self.pace_start + ticks / TICKS_PER_SECOND - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)

    def _on_audio(self, frame: av.AudioFrame, state: "_Connection", audio_link: zmq.Socket) -> None:
        if state.audio_start is None:
            state.audio_start = state.audio_ticks(frame)
        for resampled in state.resampler.resample(frame):
            if not state.started:
                if len(state.held_audio) < HELD_AUDIO_LIMIT:
                    state.held_audio.append(resampled)
                continue
            self._send_audio(resampled, state, audio_link)

    def _send_audio(self, frame: av.AudioFrame, state: "_Connection", audio_link: zmq.Socket) -> None:
        start_ticks = self.timeline.to_output(state.audio_start) + state.audio_samples * TICKS_PER_SECOND // self.audio_rate
        state.audio_samples += frame.samples
        samples = frame.to_ndarray().astype("float32", copy=False)
        start_sample = round(start_ticks * self.audio_rate / TICKS_PER_SECOND)
        if not send_nowait(audio_link, audio_message(samples, start_sample, self.audio_rate)):
            self.dropped_audio += 1

    def _reconnect(self, reason: str):
        """Open the source again with backoff; None when the limit passed or the reader was stopped."""
        policy = self.cfg.reconnect
        lost_at = time.monotonic()
        self.logs.put(f"source lost ({reason}); reconnecting for up to {policy.limit_s:g} s")
        attempts, last_error = 0, reason
        for delay in Backoff(policy.backoff_initial_s, policy.backoff_max_s).delays():
            remaining = policy.limit_s - (time.monotonic() - lost_at)
            if remaining <= 0:
                break
            if self.stop.wait(min(delay, remaining)):
                return None
            attempts += 1
            try:
                container = open_source(self.url, self.cfg.source, self.network)
                if not container.streams.video:
                    container.close()
                    raise InputError(f"{redact_url(self.url)}: no video stream")
            except InputError as exc:
                last_error = _describe(exc, self.cfg.source)
                self.logs.put(f"reconnect attempt {attempts} failed: {last_error}")
                continue
            self.reconnects += 1
            self.connected = True
            self.attempts_before_back = attempts
            return container
        self.end_reason = (f"source lost: {redact_url(self.url)} did not come back within {policy.limit_s:g} s "
                           f"({attempts} attempt{'s' if attempts != 1 else ''}; last error: {last_error})")
        return None

    def input_fps(self, window_s: float = 2.0) -> float:
        now = time.time()
        recent = [t for t in list(self.arrivals) if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(1e-6, recent[-1] - recent[0])


class _Connection:
    """Per-connection state: source times of frames without pts, audio held before the first frame."""

    def __init__(self, video_time_base: Fraction, audio_time_base: Fraction | None):
        self.video_tb, self.audio_tb = video_time_base, audio_time_base
        self.started = False
        self.last_video: int | None = None
        self.step = TICKS_PER_SECOND // 25
        self.audio_start: int | None = None
        self.audio_samples = 0
        self.held_audio: list[av.AudioFrame] = []
        self.resampler: av.AudioResampler | None = None
        self.video_context = None

    def video_ticks(self, frame: av.VideoFrame) -> int:
        if frame.pts is not None:
            ticks = round(frame.pts * self.video_tb * TICKS_PER_SECOND)
            if self.last_video is not None and ticks > self.last_video:
                self.step = ticks - self.last_video
        else:
            ticks = 0 if self.last_video is None else self.last_video + self.step
        self.last_video = ticks
        return ticks

    def audio_ticks(self, frame: av.AudioFrame) -> int:
        if frame.pts is not None and self.audio_tb is not None:
            return round(frame.pts * self.audio_tb * TICKS_PER_SECOND)
        return self.last_video or 0


class LiveDecoder(Decoder):
    """The decoder stage in live mode (see the module docstring)."""

    def open(self) -> None:
        live = self.config.live
        self.network = is_network_url(self.job.input)
        container = open_source(self.job.input, live.source, self.network)
        videos = container.streams.video
        if not videos:
            container.close()
            raise InputError(f"no video stream in {redact_url(self.job.input)}")
        if self.job.stream_index >= len(videos):
            container.close()
            raise InputError(f"--stream {self.job.stream_index}: {redact_url(self.job.input)} has "
                             f"{len(videos)} video stream(s), numbered from 0")
        self.decoded = self.undecodable_packets = 0
        self.draining = self.stopped = False
        self.sent = self.acked = 0
        self.context = zmq.Context()
        channel = self.job.live_channel
        self.acks = pull_socket(self.context, side_endpoint(channel, "acks"), hwm=100_000)
        self.commands = self.context.socket(zmq.SUB)
        self.commands.setsockopt(zmq.LINGER, 0)
        self.commands.setsockopt(zmq.SUBSCRIBE, b"")
        self.commands.connect(self.spec.endpoints.commands)
        capacity = NONE_POLICY_CAPACITY if live.drop == "none" else 1
        self.gate = FrameGate(live.drop, capacity)
        self.reader = SourceReader(self.job.input, container, self.network, self.job.stream_index, live,
                                   self.gate, self.context, side_endpoint(channel, "audio"),
                                   audio_wanted=self.config.encoder.audio != "none",
                                   decoder_threads=self.config.decoder.threads, duration_s=self.job.duration_s)
        self.reader.start()
        self.last_event = 0.0
        self.control.emit("total", frames=None)

    def produce(self) -> Iterable[Message]:
        max_in_flight = self.config.live.max_in_flight
        while True:
            self._poll_side_links()
            if self.draining or self.stopped:
                break
            if self.sent - self.acked >= max_in_flight:
                self.acks.poll(int(WAIT_S * 1000))
                continue
            item = self.gate.take(WAIT_S)
            if item is None:
                if self.gate.exhausted:
                    break
                continue
            yield self._message(item)
        self._stop_reader()
        self.gate.discard()
        self._poll_side_links(final=True)
        if self.reader.error is not None:
            raise self.reader.error

    def _message(self, item: LiveFrame) -> Message:
        frame = item.frame
        flags = (FLAG_KEYFRAME if frame.key_frame else 0) | (FLAG_SCENE_CUT if item.after_gap else 0)
        header = FrameHeader(kind=FRAME, seq=self.sent, pts=item.ticks, time_base=(1, TICKS_PER_SECOND),
                             flags=flags, sent_at=item.arrived_at, rotation=int(frame.rotation or 0),
                             sample_aspect_ratio=item.sample_aspect_ratio)
        self.sent += 1
        self.decoded = self.reader.decoded
        return Message(header, frame_arrays(frame))

    def _poll_side_links(self, final: bool = False) -> None:
        while True:
            try:
                parts = self.acks.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.acked = max(self.acked, int(parts[0]) + 1)
        while True:
            try:
                command = self.commands.recv(zmq.NOBLOCK).decode()
            except zmq.Again:
                break
            if command == "drain":
                self.draining = True
            elif command == "stop":
                self.stopped = True
        now = time.monotonic()
        if final or now - self.last_event >= EVENT_INTERVAL_S:
            self.last_event = now
            self._emit_live(final)

    def _emit_live(self, final: bool) -> None:
        reader = self.reader
        logs = []
        while True:
            try:
                logs.append(reader.logs.get_nowait())
            except queue.Empty:
                break
        fields = {"input_fps": round(reader.input_fps(), 2), "dropped": self.gate.dropped,
                  "reconnects": reader.reconnects, "connected": reader.connected, "logs": logs}
        if final:
            fields["ended"] = reader.end_reason
            fields["duration_reached"] = reader.duration_reached
        self.control.emit("live", **fields)

    def _stop_reader(self) -> None:
        self.reader.stop.set()
        self.gate.close()
        self.reader.join(self.config.live.source.read_timeout_s + 1.0)

    def drain(self) -> None:
        self.draining = True

    def close(self) -> None:
        reader = getattr(self, "reader", None)
        if reader is None:
            return
        self._stop_reader()
        self.acks.close()
        self.commands.close()
        if not reader.is_alive():
            self.context.term()

    def stats(self) -> dict:
        reader = getattr(self, "reader", None)
        if reader is None:
            return {"decoded": 0, "undecodable_packets": 0}
        return {"decoded": reader.decoded, "undecodable_packets": reader.undecodable_packets,
                "dropped": self.gate.dropped, "reconnects": reader.reconnects}


STAGE = LiveDecoder
