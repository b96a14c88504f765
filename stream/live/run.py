"""Live runs of the ``colorize`` command: network inputs and stream outputs.

    colorize rtsp://HOST/path -o out.mp4 [--duration S] [--preview [HOST:]PORT] [--config live.yaml]
    colorize rtsp://HOST/path -o rtsp://SERVER/path        (also rtmp://, srt://, udp:// outputs)
    colorize film.mp4 -o rtmp://SERVER/app/key             (a file, published in real time)

A run is live when the input is a network URL (rtsp, rtmp, http(s), udp, srt, ...) or the output
is a stream server. Differences from a file run (see stages/live_source.py and stages/live_sink.py):

* the output file is written under its own name as it goes (fragmented MP4 or Matroska, optionally
  segmented), so it stays playable if the process is killed; there is no ``.partial`` file;
* Ctrl-C and ``--duration`` end the run normally: exit code 0 and the summary line;
* when the source is lost for longer than ``live.reconnect.limit_s`` the run ends with the output
  finished and ``source lost: ...`` on stderr: exit code 1;
* reconnects and gaps are reported on stderr as they happen; the progress bar shows input fps,
  output fps, dropped frames and latency; the summary line ends with the same live figures.
"""
from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from models.runtime import ColorModel, SessionSettings, model_to_run
from stages.live_links import new_channel, side_endpoint
from stages.live_source import is_network_url, redact_url
from stages.outputs import publish_format, segment_glob, segment_pattern
from stream.accounting import parse_clock
from stream.config import PipelineConfig
from stream.errors import InputError, PipelineError
from stream.options import VIDEO_FORMATS, run_config
from stream.output_path import check_output_location, existing_output
from stream.progress import ProgressBar, summary_line
from stream.stop_signals import interrupted_exit_code
from stream.stage import Job
from stream.supervisor import RunReport, Supervisor

EXIT_SOURCE_LOST = 1


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", metavar="TIME",
                        help="colorize this much (seconds or [HH:]MM:SS[.ms]): of a file from --start (the frames "
                             "whose PTS is before --start + TIME), of a live source from now")
    parser.add_argument("--preview", metavar="[HOST:]PORT",
                        help="live runs: serve a web page with the colorized stream (MJPEG) and live figures "
                             "(host 127.0.0.1 unless given; port 0 = any free port)")


def parse_duration(text: str | None) -> float:
    """``--duration`` in seconds (0.0 when not given); InputError unless it is more than 0."""
    if text is None:
        return 0.0
    seconds = parse_clock(text, "--duration")
    if not seconds > 0:
        raise InputError(f"--duration must be more than 0 seconds, got {text}")
    return seconds


def is_live_run(args: argparse.Namespace) -> bool:
    return is_network_url(args.input) or publish_format(args.output) is not None


def refuse_live_options(args: argparse.Namespace) -> None:
    """--preview belongs to live runs: say so for any other run."""
    if args.preview is not None:
        raise InputError("--preview is for live runs (a network input such as rtsp://... "
                         "or a stream output such as -o rtsp://...)")


@dataclass(frozen=True)
class LiveRequest:
    """A validated live command line. ``output`` is a path or a stream-server URL."""

    input: str
    output: str
    output_format: str
    model: Path
    config: PipelineConfig
    stream_index: int
    quiet: bool
    duration_s: float = 0.0
    preview: tuple[str, int] | None = None

    @property
    def publishing(self) -> bool:
        return publish_format(self.output) is not None

    def earlier_output(self) -> Path:
        """What an earlier recording to the same place left: the output file, or with
        ``live.output.segment_s`` the first of its segments (the output's own name otherwise)."""
        written = _written_outputs(self)
        return written[0] if written else Path(self.output)


def validate_live(args: argparse.Namespace) -> LiveRequest:
    """Check a live command line; raise InputError/ConfigError/ModelError with one line."""
    from stream.live.preview import parse_address

    if not is_network_url(args.input):
        source = Path(args.input)
        if not source.exists():
            raise InputError(f"input not found: {source}")
        if source.is_dir():
            raise InputError(f"input is a directory, not a file: {source}")
    output_format = publish_format(args.output)
    if output_format is None:
        output = Path(args.output)
        if output.suffix.lower() not in VIDEO_FORMATS:
            raise InputError(f"unknown output extension '{output.suffix or '(none)'}' for a video: "
                             f"use one of {', '.join(sorted(VIDEO_FORMATS))} or a stream URL (rtsp://, rtmp://)")
        check_output_location(output)
        existing_output(output, args.overwrite, args.no_overwrite)  # refuse early
        output_format = VIDEO_FORMATS[output.suffix.lower()]
    if args.stream < 0:
        raise InputError(f"--stream must be 0 or more, got {args.stream}")
    if getattr(args, "start", None) is not None:
        raise InputError("--start is for files: a live source is colorized from now")
    if getattr(args, "map", None):
        raise InputError("--map is for files: a live run carries the video and the first audio track")
    duration = parse_duration(args.duration)
    preview = None
    if args.preview is not None:
        try:
            preview = parse_address(args.preview)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    config = run_config(args)
    if config.guidance.keyframes:
        raise InputError("--keyframe is for files and still images: a live run cannot look at the frames around one")
    model = model_to_run(args.model, config.inference.provider, config.inference.precision)
    request = LiveRequest(args.input, args.output, output_format, model, config, args.stream, args.quiet,
                          duration, preview)
    if not request.publishing and config.live.output.segment_s > 0:  # a single file was checked above
        existing_output(request.earlier_output(), args.overwrite, args.no_overwrite)
    return request


def replace_earlier_segments(request: LiveRequest) -> None:
    """With -y, a segmented recording starts by removing an earlier one's segments, so none of
    them is left beside the new ones looking like part of it."""
    if request.config.live.output.segment_s > 0:
        _remove_outputs(request)


@dataclass
class LiveFigures:
    """What the progress line, the preview page and the summary show of a live run."""

    input_fps: float = 0.0
    output_fps: float = 0.0
    dropped: int = 0
    latency_ms: float | None = None
    written: int = 0
    reconnects: int = 0
    connected: bool = True


@dataclass
class LiveMonitor:
    """Collects the stages' ``live`` events (called from the supervisor's loop).

    Log lines go to ``notice`` as they come; ``ended`` is why the source was given up (None if it was
    not); :meth:`snapshot` is safe to call from the preview server's threads.
    """

    notice: Callable[[str], None]
    bar: Any = None  # the tqdm bar showing the figures, if any
    figures: LiveFigures = field(default_factory=LiveFigures)
    ended: str | None = None
    duration_reached: bool = False

    def __post_init__(self):
        self.lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        with self.lock:
            for key in ("input_fps", "output_fps", "dropped", "latency_ms", "written", "reconnects", "connected"):
                if key in event:
                    setattr(self.figures, key, event[key])
        for line in event.get("logs", ()):
            self.notice(line)
        if event.get("ended"):
            self.ended = event["ended"]
        if event.get("duration_reached"):
            self.duration_reached = True
        if self.bar is not None:
            self.bar.set_postfix_str(self.status_text(), refresh=False)

    def snapshot(self) -> dict:
        with self.lock:
            return asdict(self.figures)

    def status_text(self) -> str:
        f = self.figures
        latency = f"{f.latency_ms:.0f} ms" if f.latency_ms is not None else "-"
        state = "" if f.connected else ", reconnecting"
        return (f"in {f.input_fps:.1f} fps, out {f.output_fps:.1f} fps, dropped {f.dropped}, "
                f"latency {latency}{state}")


def live_summary(report: RunReport, monitor: LiveMonitor) -> str:
    """The live figures of a whole run, for the end of the summary line."""
    parts = [f"live: dropped {monitor.figures.dropped} frames"]
    if report.latency_p50_ms is not None:
        parts.append(f"latency p50 {report.latency_p50_ms:.0f} ms, p95 {report.latency_p95_ms:.0f} ms")
    if monitor.figures.reconnects:
        parts.append(f"{monitor.figures.reconnects} reconnect{'s' * (monitor.figures.reconnects != 1)}")
    return ", ".join(parts)


def output_label(request: LiveRequest) -> str:
    if request.publishing or request.config.live.output.segment_s <= 0:
        return redact_url(request.output)
    return segment_pattern(request.output)


def _written_outputs(request: LiveRequest) -> list[Path]:
    """The files a live run to a path has written so far (one, or the segments)."""
    output = Path(request.output)
    if request.config.live.output.segment_s > 0:
        return sorted(output.parent.glob(segment_glob(output)))
    return [output] if output.exists() else []


def _remove_outputs(request: LiveRequest) -> None:
    if not request.publishing:
        for path in _written_outputs(request):
            path.unlink(missing_ok=True)


def run_live(request: LiveRequest) -> int:
    """Run a live job to its end; returns the exit code (0, or 1 when the source was lost)."""
    model_input_size = ColorModel(request.model, SessionSettings(
        provider=request.config.inference.provider, device_id=request.config.inference.device_id,
        intra_op_threads=1)).input_size
    channel = new_channel()
    job = Job(input=request.input, output_tmp=request.output, model=str(request.model),
              output_format=request.output_format, model_input_size=model_input_size, live=True,
              stream_index=request.stream_index, live_channel=channel, duration_s=request.duration_s,
              preview=request.preview is not None)
    bar = ProgressBar(enabled=not request.quiet and sys.stderr.isatty(), label=redact_url(request.input).rsplit("/", 1)[-1])
    monitor = LiveMonitor(notice=bar.notice, bar=bar.bar)
    preview = None
    if request.preview is not None:
        from stream.live.preview import PreviewServer

        try:
            preview = PreviewServer(*request.preview, endpoint=side_endpoint(channel, "preview"),
                                    figures=monitor.snapshot, source=redact_url(request.input)).start()
        except OSError as exc:
            raise InputError(f"--preview: cannot listen on {request.preview[0]}:{request.preview[1]}: "
                             f"{exc.strerror or exc}") from None
        bar.notice(f"preview: {preview.url}")
    supervisor = Supervisor(job, request.config, on_progress=bar, on_notice=bar.notice, on_live=monitor)
    try:
        report = supervisor.run()
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted again: stopped at once; {output_label(request)} keeps what was written",
              file=sys.stderr)
        return interrupted_exit_code()
    except PipelineError as exc:
        if request.publishing or not _written_outputs(request):
            raise
        raise PipelineError(f"{exc} ({output_label(request)} keeps what was written)") from None
    finally:
        bar.close()
        if preview is not None:
            preview.stop()
    if report.frames_written == 0:
        _remove_outputs(request)
        if report.interrupted:
            print("interrupted before the first frame was written; nothing kept", file=sys.stderr)
            return interrupted_exit_code()
        if monitor.ended:
            raise PipelineError(f"{monitor.ended}; no frame was written")
        raise InputError(f"no decodable video frames in {redact_url(request.input)}")
    if monitor.ended:
        print(f"{monitor.ended}; the output has the {report.frames_written} frames written: "
              f"{output_label(request)}", file=sys.stderr)
        return EXIT_SOURCE_LOST
    if not request.quiet:
        line = summary_line(report, output_label(request), supervisor.replicas, f"model {request.model.name}")
        print(f"{line}; {live_summary(report, monitor)}", file=sys.stderr)
    return 0
