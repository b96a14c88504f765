"""The stage process: what every pipeline stage runs, whatever its job.

A stage class (in ``stages/``) implements a few hooks; :func:`run_stage` is the process entry
point that wires it to its sockets, runs the receive → handle → send loop, measures busy time and
reports to the supervisor. The protocol:

* Frames flow downstream; a stage may hold frames back (batching) and emit them later.
* End of stream (EOS) is forwarded after everything the stage holds has been sent.
* The sink (encoder) reports ``done`` when it has written every frame the EOS announced; the
  supervisor then sends ``stop`` to all stages. Intermediate stages keep serving until ``stop``,
  because with several replicas frames may still arrive after an EOS passed through; the source
  too keeps its socket open until ``stop``, so no frame in flight is lost when it finishes first.
* Any exception becomes one ``error`` event (a single line) and a non-zero exit.
* A leased stage (see :mod:`stream.scaleout.broker`) gets its frames from its broker instead of a PULL
  socket and returns each result to it; :mod:`stream.scaleout.worker` runs that side.
"""
from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import ClassVar, Iterable

import zmq

from stream.config import PipelineConfig
from stream.errors import InputError, PipelineError
from stream.memory import queue_depth
from stream.messages import Message, end_of_stream
from stream.stage_process import become_stage_process, cpu_figures
from stream.observe.tracing import StageRecorder
from stream.transport import CommandListener, ControlChannel, Endpoints, Link, poll_timeout_ms

COMMAND_POLL_MS = 100


@dataclass(frozen=True)
class SegmentBounds:
    """One segment of a file run in pieces (:mod:`batch`), in ticks of the video stream's time base.

    Frames from ``warmup_ticks`` up to ``start_ticks`` are decoded, coloured and smoothed but not
    written, so the temporal state at the segment's first frame is what a one-piece run has there;
    frames from ``start_ticks`` up to ``end_ticks`` (0 = the end of the stream) are written with
    their timestamps unchanged, so the pieces join by remuxing.
    """

    warmup_ticks: int
    start_ticks: int
    end_ticks: int = 0


@dataclass(frozen=True)
class Job:
    """What this run works on, as probed and validated by the supervisor.

    ``output_tmp`` is where the encoder writes before the supervisor renames the file into place;
    ``output_format`` is the FFmpeg muxer name ('mp4', 'mov', 'matroska'); ``frame_rate`` the
    source's average rate (numerator, denominator), for the encoder's rate control.
    ``live`` runs (see :mod:`stages.live_source`, :mod:`stages.live_sink`) also use ``live_channel``
    (the name their side links derive from) and ``preview`` (send JPEG previews to the
    ``--preview`` server). ``duration_s``: end after this much output (0 = no limit); for files,
    from ``start_s`` seconds of the input, which becomes the output's time 0.
    ``frame_bytes``: size of one RGB frame as probed (0 = unknown), for the links' memory budget.
    ``max_frames``: the decoder stops after this many frames (0 = the whole input).
    ``trace_dir``: when set, every stage process records its per-frame timestamps and saves them
    there at exit (``colorize profile``, see :mod:`stream.observe.tracing`); empty = no tracing at all.
    ``sample_aspect_ratio`` (0:1 = not signalled), ``color_primaries`` and ``color_trc`` (FFmpeg's
    AVColorPrimaries / AVColorTransferCharacteristic numbers, 2 = unspecified): what the source
    signals, written into the output so players show its picture the same shape and colours;
    ``field_order`` (AVFieldOrder, 0 = unknown) for a source kept interlaced (``decoder.deinterlace: off``).
    ``segment``: only this part of the stream, timestamps kept (:class:`SegmentBounds`); None = all.
    ``side_tracks``: the input's audio and subtitle streams (absolute indices) the output carries
    (None: the first audio track); ``timecode``: the output's start timecode ('' = none).
    ``guide_file``: keyframe colour guides for the encoder (:mod:`stages.guidance`; '' = none).
    """

    input: str
    output_tmp: str
    model: str
    output_format: str = "mp4"
    frame_rate: tuple[int, int] = (25, 1)
    model_input_size: tuple[int, int] = (224, 224)
    live: bool = False
    stream_index: int = 0
    live_channel: str = ""
    duration_s: float = 0.0
    preview: bool = False
    frame_bytes: int = 0
    max_frames: int = 0
    trace_dir: str = ""
    sample_aspect_ratio: tuple[int, int] = (0, 1)
    color_primaries: int = 2
    color_trc: int = 2
    field_order: int = 0
    start_s: float = 0.0
    segment: SegmentBounds | None = None
    side_tracks: tuple[int, ...] | None = None
    timecode: str = ""
    guide_file: str = ""


@dataclass(frozen=True)
class StageSpec:
    """Everything a stage process needs, passed to :func:`run_stage` (picklable)."""

    stage: str
    replica: int
    job: Job
    config: PipelineConfig
    endpoints: Endpoints
    supervisor_pid: int = field(default_factory=os.getpid)
    worker_id: str = ""


class Stage:
    """Base of the four stages. Subclasses override the hooks they need.

    ``input_link`` / ``output_link``: names of the links read and written (None for the decoder's
    input and the encoder's output). Hooks run inside the stage's own process.
    Stages that can be leased declare ``reads`` (the arrays :meth:`handle` needs, all a broker sends
    a worker) and ``consumes`` (those of them the output no longer carries).
    """

    name: ClassVar[str]
    input_link: ClassVar[str | None] = None
    output_link: ClassVar[str | None] = None
    reads: ClassVar[tuple[str, ...]] = ()
    consumes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: StageSpec, control: ControlChannel):
        self.spec, self.job, self.config, self.control = spec, spec.job, spec.config, control
        self.finished = False

    def open(self) -> None:
        """Heavy set-up (opening files, loading models), before the first frame."""

    def produce(self) -> Iterable[Message]:
        """Sources only: yield frames until the input ends."""
        raise NotImplementedError

    def handle(self, message: Message) -> Iterable[Message]:
        """One frame in, zero or more frames out."""
        return (message,)

    def flush(self) -> Iterable[Message]:
        """Everything still held, at end of stream or when a batch deadline passes."""
        return ()

    def deadline(self) -> float | None:
        """Monotonic time at which :meth:`flush` must run even without new input, or None."""
        return None

    def on_end_of_stream(self, message: Message) -> None:
        """Called when EOS arrives (after :meth:`flush`); the sink sets ``finished`` when complete."""

    def drain(self) -> None:
        """Sources: stop producing soon (Ctrl-C); the stream then ends normally."""

    def close(self) -> None:
        """Release resources; called on every exit path."""

    def stats(self) -> dict:
        """Stage-specific figures added to the final ``stats`` event."""
        return {}

    def frames_done(self) -> int:
        """Sinks: the frames finished so far (written, in ``seq`` order); tracing attributes the
        sink's work to the frames this count moves past. Other stages finish a frame by sending it."""
        return 0


LIVE_STAGE_MODULES = {"decoder": "live_source", "encoder": "live_sink"}
"""The stages that live runs replace: network sources, fragmented and published outputs."""


def stage_class(name: str, live: bool = False) -> type[Stage]:
    """The class running stage ``name``: ``stages.<name>.STAGE``, or for a ``live`` run the one
    of :data:`LIVE_STAGE_MODULES` where the stage has a live form."""
    module = LIVE_STAGE_MODULES.get(name, name) if live else name
    return getattr(importlib.import_module(f"stages.{module}"), "STAGE")


def run_stage(spec: StageSpec) -> None:
    """Process entry point: run one stage replica until done, stopped or failed."""
    become_stage_process(spec.stage, spec.supervisor_pid)
    cls = stage_class(spec.stage, spec.job.live)
    stage_config = getattr(spec.config, spec.stage)
    if stage_config.cpu_affinity:
        os.sched_setaffinity(0, stage_config.cpu_affinity)
    context = zmq.Context()
    control = ControlChannel(context, spec.endpoints.control, spec.stage, spec.replica)
    commands = CommandListener(context, spec.endpoints.commands)
    stage = cls(spec, control)
    trace = StageRecorder(stage, getattr(stage_config, "replicas", 1)) if spec.job.trace_dir else None
    inbound = outbound = None
    busy = 0.0
    exit_code = 0
    started = time.monotonic()
    cpu_at_ready = None
    leased = spec.stage in spec.endpoints.leases
    try:
        if cls.input_link and not leased:
            inbound = Link.receiver(context, spec.endpoints.links[cls.input_link][spec.replica],
                                    queue_depth(spec.config, cls.input_link, spec.job.frame_bytes))
        if cls.output_link and not leased:
            outbound = Link.sender(context, spec.endpoints.links[cls.output_link],
                                   queue_depth(spec.config, cls.output_link, spec.job.frame_bytes))
        if trace is not None:
            inbound = trace.recorded(inbound) if inbound is not None else None
            outbound = trace.recorded(outbound) if outbound is not None else None
        t0 = time.monotonic()
        stage.open()
        busy += time.monotonic() - t0
        control.emit("ready")
        cpu_at_ready = time.process_time()
        if leased:
            from stream.scaleout.worker import default_credit, run_local_replica

            busy += run_local_replica(stage, context, spec.endpoints.leases[spec.stage], spec.worker_id,
                                      default_credit(stage_config), commands)
        elif inbound is None:
            busy += _run_source(stage, outbound, commands, trace)
        else:
            busy += _run_filter(stage, inbound, outbound, commands, trace)
        if stage.finished:
            control.emit("done", **stage.stats())
    except InputError as exc:
        control.emit("error", message=str(exc), exit_code=2)
        exit_code = 2
    except PipelineError as exc:  # a failure the stage already put in words (a full disk, say)
        control.emit("error", message=str(exc), exit_code=1)
        exit_code = 1
    except Exception as exc:  # noqa: BLE001 - every failure must reach the supervisor as one line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        control.emit("error", message=f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__,
                     exit_code=1, traceback=traceback.format_exc(limit=8))
        exit_code = 1
    finally:
        try:
            stage.close()
            if trace is not None:
                trace.save(spec.job.trace_dir)
        finally:
            control.emit("stats", busy_s=busy, alive_s=time.monotonic() - started, **cpu_figures(cpu_at_ready),
                         **stage.stats())
            for sock in (inbound, outbound):
                if sock is not None:
                    sock.close()
            commands.close()
            control.close()
            context.term()
    sys.exit(exit_code)


def _spent(t0: float, sent: list[Message], trace: StageRecorder | None) -> float:
    """Seconds since ``t0``: one piece of the stage's work, which finished the frames ``sent``
    (recorded as such when tracing)."""
    t1 = time.monotonic()
    if trace is not None:
        trace.work(t0, t1, sent)
    return t1 - t0


def _run_source(stage: Stage, outbound: Link, commands: CommandListener, trace: StageRecorder | None) -> float:
    """Send what ``produce`` yields, then EOS with the frame count; return on ``stop``. Returns busy seconds.

    The source keeps its socket open until ``stop`` (sent once the sink is done): a PUSH socket
    that closes while its consumer's queue is full loses the frames still in flight, linger or not.
    """
    busy, count, drained = 0.0, 0, False
    frames = iter(stage.produce())
    while True:
        command = commands.poll()
        if command == "stop":
            return busy
        if command == "drain":
            stage.drain()
            drained = True
        t0 = time.monotonic()
        message = next(frames, None)
        busy += _spent(t0, [message] if message is not None else [], trace)
        if message is None:
            break
        outbound.send(message)
        count += 1
    outbound.send(end_of_stream(count, cut_short=drained))
    while commands.poll() != "stop":
        commands.socket.poll(COMMAND_POLL_MS)
    return busy


def _run_filter(stage: Stage, inbound: Link, outbound: Link | None, commands: CommandListener,
                trace: StageRecorder | None) -> float:
    """Receive, handle, send until ``stop`` or the sink finishes. Returns busy seconds."""
    poller = zmq.Poller()
    poller.register(inbound.socket, zmq.POLLIN)
    poller.register(commands.socket, zmq.POLLIN)
    busy = 0.0

    def send_all(messages: Iterable[Message]) -> None:
        if outbound is not None:
            for out in messages:
                outbound.send(out)

    while not stage.finished:
        timeout = COMMAND_POLL_MS
        due = stage.deadline()
        if due is not None:
            timeout = min(timeout, poll_timeout_ms(due - time.monotonic()))
        ready = dict(poller.poll(timeout))
        if commands.socket in ready and commands.poll() == "stop":
            break
        if inbound.socket in ready:
            message = inbound.receive()
            t0 = time.monotonic()
            if message.is_eos:
                held = list(stage.flush())
                stage.on_end_of_stream(message)
                busy += _spent(t0, held, trace)
                send_all(held)
                send_all((message,))
            else:
                produced = list(stage.handle(message))
                busy += _spent(t0, produced, trace)
                send_all(produced)
        due = stage.deadline()
        if due is not None and time.monotonic() >= due:
            t0 = time.monotonic()
            held = list(stage.flush())
            busy += _spent(t0, held, trace)
            send_all(held)
    return busy
