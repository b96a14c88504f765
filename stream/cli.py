"""The ``colorize`` command.

    colorize INPUT -o OUTPUT [--config FILE.yaml] [--model FILE.onnx] [--stream N] [--quiet]
    colorize rtsp://HOST/PATH -o OUTPUT [--duration S] [--preview [HOST:]PORT]   (live: stream/live/run.py)
    colorize COMMAND ...      (convert-caffe, evaluate, quantize, bench-model, compare, devices, ...)

Everything the user gives is validated here, before any stage process starts: a bad input, path,
model or config is one ``error:`` line and exit code 2, with nothing written. A stage failing
while running, or the machine failing the run (a full disk, a folder removed mid-run), is one
``error:`` line and exit code 1, with the partial output removed. Ctrl-C, SIGTERM and SIGHUP
finish the frames in flight and keep a playable ``.partial``: exit code 130, 143 or 129.
A run that succeeds despite damage in the input says so in ``warning:`` lines (shown even with
--quiet), and the summary line balances the frames: decoded = written + dropped.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import zmq

from models.runtime import ColorModel, ModelError, SessionSettings, model_to_run
from stream import __version__
from stream.accounting import account_of, parse_clock
from stream.config import ConfigError, PipelineConfig
from stream.errors import InputError, PipelineError, error_lines
from stream.output_path import OutputLock, check_output_location, existing_output, remove_stale_temporaries
from stream.live.run import (add_live_arguments, is_live_run, parse_duration, refuse_live_options,
                             replace_earlier_segments, run_live, validate_live)
from stream.memory import rgb_frame_bytes
from stream.options import VIDEO_FORMATS, run_config
from stream.progress import ProgressBar, summary_line
from stream.stage import Job
from stream.stop_signals import interrupted_exit_code, stop_on_signals
from stream.still_image import IMAGE_SUFFIXES, colorize_image, is_still_image
from stream.supervisor import Supervisor
from stream.observe.tune import fit_to_machine

SUBCOMMANDS = {
    # name: (module whose main(argv) -> int runs it, one-line description)
    "batch": ("batch.cli", "colorize many files or folders, resumably, on this machine or a Ray cluster"),
    "convert-caffe": ("models.caffe.convert", "convert the reference Caffe model to ONNX"),
    "evaluate": ("models.evaluate", "measure colorization quality on a folder of colour images"),
    "evaluate-video": ("models.evaluate_video", "measure flicker and quality on a video"),
    "quantize": ("models.quantize", "make a static INT8 model"),
    "bench-model": ("models.bench_model", "time a model's inference (mean, p50, p99)"),
    "compare": ("models.compare", "compare two models or providers node by node"),
    "devices": ("models.providers", "list the inference providers this machine can run"),
    "worker": ("stream.scaleout.worker_cli", "join a running pipeline as a worker of its inference or preprocessor stage"),
    "tune": ("stream.observe.tune", "measure this machine and write a pipeline YAML suited to it"),
    "keys": ("stream.scaleout.keys", "create the CURVE keys workers on other hosts need to join a pipeline"),
    "profile": ("stream.observe.profile", "run the pipeline traced: per-stage timings, a Perfetto trace, advice"),
}


def run_subcommand(name: str, argv: list[str]) -> int:
    import importlib

    return importlib.import_module(SUBCOMMANDS[name][0]).main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colorize",
        usage="colorize INPUT -o OUTPUT [options]\n       colorize COMMAND [options]   (COMMAND: see below)",
        description="Colorize a black-and-white video or image (Zhang et al. 2016 model, ONNX Runtime).",
        epilog="other commands (run 'colorize COMMAND --help'):\n" + "\n".join(
            f"  {name:15} {text}" for name, (_, text) in SUBCOMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="video file (anything FFmpeg reads) or image (jpg, png, bmp, tif, webp, "
                                      "single-picture gif)")
    parser.add_argument("-o", "--output", required=True,
                        help="output: .mp4/.m4v/.mov/.mkv for video (H.264); .jpg/.png/.bmp/.tif/.webp for images")
    add_setting_arguments(parser)
    add_map_argument(parser)
    parser.add_argument("--keyframe", action="append", metavar="POSITION=IMAGE",
                        help="a colour version of one frame: POSITION is a frame number (from 0) or a time "
                             "([HH:]MM:SS[.ms], or seconds with a decimal point); its colour is carried along the "
                             "motion to the frames around it, within the shot; repeatable (guidance.keyframes)")
    parser.add_argument("--stream", type=int, default=0, metavar="N", help="video stream to colorize (default 0)")
    parser.add_argument("--start", metavar="TIME",
                        help="colorize from this time of the file (seconds or [HH:]MM:SS[.ms]; frame-accurate as "
                             "in FFmpeg: the frames whose PTS is at or after it; the output's clock starts at it, "
                             "the audio cut there)")
    parser.add_argument("-y", "--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("-n", "--no-overwrite", action="store_true",
                        help="if the output file exists, keep it and do nothing (exit 0)")
    parser.add_argument("--version", action="version", version=f"colorize {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary line")
    add_live_arguments(parser)
    return parser


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the model and override the pipeline YAML (shared with ``colorize batch``)."""
    parser.add_argument("--config", type=Path, help="pipeline YAML (default: built-in defaults, see configs/default.yaml)")
    parser.add_argument("--model", type=Path, help="ONNX model (default: the embedded model)")
    parser.add_argument("--saturation", metavar="S",
                        help="colour strength 0..2: 0 = grey, 1 = the model's colour (colour.saturation, default 1)")
    parser.add_argument("--crf", metavar="N", help="x264 quality 0..51, lower is better (encoder.crf, default 18)")
    parser.add_argument("--preset", metavar="NAME",
                        help="x264 preset, ultrafast .. veryslow (encoder.preset, default veryfast)")
    parser.add_argument("--provider", metavar="NAME",
                        help="inference device: cpu, cuda, npu or openvino (inference.provider, default cpu)")
    parser.add_argument("--precision", metavar="NAME",
                        help="the embedded model's twin: auto (INT8 where the CPU has VNNI or dot products), fp32 "
                             "or int8 (inference.precision, default auto)")
    parser.add_argument("--deinterlace", metavar="MODE",
                        help="auto (bwdif where the stream is flagged interlaced), on (every frame) or off (keep "
                             "the fields, flagged) (decoder.deinterlace, default auto)")
    parser.add_argument("--device-id", metavar="N", help="which GPU/NPU for cuda and npu (inference.device_id, default 0)")
    parser.add_argument("--reference", action="append", metavar="IMAGE",
                        help="a colour photograph whose palette guides the colours, repeatable (guidance.references)")
    parser.add_argument("--reference-strength", metavar="S",
                        help="how far colours lean toward the references: 0 = off, 1 = fully (default 1, up to 4)")


def add_map_argument(parser: argparse.ArgumentParser) -> None:
    """``--map``, FFmpeg's track selection (shared with ``colorize batch``)."""
    parser.add_argument("--map", action="append", metavar="SPEC",
                        help="tracks to keep besides the video, FFmpeg-style, repeatable: 0 (all), 0:a (all audio), "
                             "a:1, s:m:language:eng, d (the timecode), 0:3 (stream 3), -0:s (drop subtitles: alone, "
                             "from the default); default: all audio, subtitles and the timecode")


@dataclass(frozen=True)
class Request:
    """A validated command line."""

    input: str
    output: Path
    model: Path
    config: PipelineConfig
    is_image: bool
    stream_index: int
    quiet: bool
    start_s: float = 0.0
    duration_s: float = 0.0
    """The part of a video file to colorize (``--start``, ``--duration``); 0 = from the start, to the end."""
    maps: tuple = ()
    """``--map`` rules (:class:`stages.tracks.MapRule`): the other streams the output carries; () = all."""
    keyframes: tuple = ()
    """Parsed ``guidance.keyframes`` (:class:`stages.guidance.KeyframeSpec`), placed when the run starts."""


def validate(args: argparse.Namespace) -> Request:
    """Check everything the user gave; raise InputError/ConfigError/ModelError with one line."""
    is_url = "://" in args.input
    source = Path(args.input)
    if not is_url:
        if not source.exists():
            raise InputError(f"input not found: {source}")
        if source.is_dir():
            raise InputError(f"input is a directory, not a file: {source}")
    output = Path(args.output)
    is_image = not is_url and is_still_image(source)
    allowed = IMAGE_SUFFIXES if is_image else set(VIDEO_FORMATS)
    if output.suffix.lower() not in allowed:
        kind = "an image" if is_image else "a video"
        raise InputError(f"unknown output extension '{output.suffix or '(none)'}' for {kind}: "
                         f"use one of {', '.join(sorted(allowed))}")
    check_output_location(output)
    if not is_url and (output.resolve() == source.resolve()
                       or (output.exists() and os.path.samefile(output, source))):
        raise InputError(f"output path is the same as the input: {output}")
    existing_output(output, getattr(args, "overwrite", False), getattr(args, "no_overwrite", False))  # refuse early
    if args.stream < 0:
        raise InputError(f"--stream must be 0 or more, got {args.stream}")
    start = parse_clock(args.start, "--start") if getattr(args, "start", None) is not None else 0.0
    duration = parse_duration(getattr(args, "duration", None))
    if is_image and (start or duration):
        raise InputError("--start and --duration are for videos, not still images")
    video_only = {"--crf": getattr(args, "crf", None), "--preset": getattr(args, "preset", None),
                  "--deinterlace": getattr(args, "deinterlace", None), "--stream": args.stream or None}
    given = [flag for flag, value in video_only.items() if value is not None]
    if is_image and given:
        raise InputError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for videos, not still images")
    config = run_config(args)
    model = model_to_run(args.model, config.inference.provider, config.inference.precision)
    maps = parse_maps(getattr(args, "map", None))
    if is_image and maps:
        raise InputError("--map is for videos, not still images")
    keyframes = check_guidance(config)
    if is_image and any(spec.frame != 0 and spec.time_s != 0 for spec in keyframes):
        raise InputError("--keyframe for a still image: its position is 0 (the picture itself)")
    return Request(args.input, output, model, config, is_image, args.stream, args.quiet, start, duration, maps,
                   keyframes)


def check_guidance(config: PipelineConfig) -> tuple:
    """The run's keyframes, parsed, after checking every keyframe and reference image can be read
    (InputError naming the first that cannot)."""
    from stages.guidance import parse_keyframe, read_colour_image

    for reference in config.guidance.references:
        if not Path(reference).is_file():
            raise InputError(f"--reference {reference}: image not found")
        read_colour_image(Path(reference), "--reference")
    return tuple(parse_keyframe(text) for text in config.guidance.keyframes)


def parse_maps(texts: list[str] | None) -> tuple:
    """The ``--map`` options, parsed (raises InputError naming a bad one)."""
    from stages.tracks import parse_map

    return tuple(parse_map(text) for text in texts or [])


@dataclass(frozen=True)
class VideoProbe:
    """What the run needs to know of the input before it starts: frame rate, one frame's size, what
    it signals about its picture (see :class:`stream.stage.Job`) and its other streams."""

    frame_rate: tuple[int, int]
    width: int
    height: int
    sample_aspect_ratio: tuple[int, int] = (0, 1)
    color_primaries: int = 2
    color_trc: int = 2
    field_order: int = 0
    start_time_s: float = 0.0
    """When the video's first frame is due (seconds on the input's clock; --start counts from here)."""
    side: object = None
    """Its other streams in the output (a :class:`stages.tracks.SidePlan`), when the probe was asked."""

    @property
    def frame_bytes(self) -> int:
        return rgb_frame_bytes(self.width, self.height)


def probe_video(path: str, stream_index: int, output_format: str = "", audio_mode: str = "auto",
                maps: tuple = (), start_s: float = 0.0) -> VideoProbe:
    """Open the input once to check it has the video stream asked for; with ``output_format``, also
    plan which of its other streams that output carries (:func:`stages.tracks.plan_side_tracks`,
    ``maps``: parsed ``--map`` rules)."""
    from stages.decoder import open_input
    from stages.deinterlace import field_order_of
    from stages.hdr import BT709, HLG_TRC, PQ_TRC
    from stages.tracks import plan_side_tracks

    container = open_input(path)
    try:
        videos = container.streams.video
        if not videos:
            raise InputError(f"no video stream in {path}")
        if stream_index >= len(videos):
            raise InputError(f"--stream {stream_index}: {path} has {len(videos)} video stream(s), numbered from 0")
        stream = videos[stream_index]
        rate = Fraction(stream.average_rate or stream.guessed_rate or 25).limit_denominator(100_000)
        context = stream.codec_context
        side = plan_side_tracks(container, stream, output_format, audio_mode, maps, start_s) if output_format else None
        sar = stream.sample_aspect_ratio or context.sample_aspect_ratio
        primaries, trc = int(context.color_primaries), int(context.color_trc)
        if trc in (PQ_TRC, HLG_TRC):  # tone-mapped to SDR BT.709 (stages/hdr.py): tag what is written
            primaries = trc = BT709
        return VideoProbe((rate.numerator, rate.denominator), context.width, context.height,
                          (sar.numerator, sar.denominator) if sar else (0, 1),
                          primaries, trc, field_order_of(stream),
                          float((stream.start_time or 0) * stream.time_base) if stream.time_base else 0.0, side)
    finally:
        container.close()


def temporary_output(output: Path) -> Path:
    """A hidden name beside the output; the file only takes the output's name once complete."""
    return output.with_name(f".{output.stem}.colorize-{os.getpid()}.part{output.suffix}")


def partial_output(output: Path) -> Path:
    """Where an interrupted run keeps the frames done so far (a playable file, clearly marked)."""
    return output.with_name(f"{output.stem}.partial{output.suffix}")


def one_thread_session(request: Request) -> ColorModel:
    """The run's model on its provider and device, one onnxruntime thread: to read its input size
    and to fit ``auto`` settings (:func:`stream.observe.tune.fit_to_machine`) before the stages start."""
    inference = request.config.inference
    return ColorModel(request.model, SessionSettings(provider=inference.provider, device_id=inference.device_id,
                                                     intra_op_threads=1))


def video_job(request: Request, probe: VideoProbe, model: ColorModel, output_tmp: Path, **settings) -> Job:
    """The :class:`Job` of a video file run: what ``request`` asks, what ``probe`` found, written to
    ``output_tmp``; ``settings``: further :class:`Job` fields (``max_frames``, ``segment``, ...)."""
    if "output_format" not in settings:
        settings["output_format"] = VIDEO_FORMATS[request.output.suffix.lower()]
    return Job(input=request.input, output_tmp=str(output_tmp), model=str(request.model),
               frame_rate=probe.frame_rate, model_input_size=model.input_size, stream_index=request.stream_index,
               frame_bytes=probe.frame_bytes, sample_aspect_ratio=probe.sample_aspect_ratio,
               color_primaries=probe.color_primaries, color_trc=probe.color_trc, field_order=probe.field_order,
               duration_s=request.duration_s,
               start_s=input_start_s(request, probe), **settings)


def input_start_s(request: Request, probe: VideoProbe) -> float:
    """Where ``--start`` cuts, on the input's clock (seconds; 0 = no cut)."""
    return probe.start_time_s + request.start_s if request.start_s else 0.0


def run_video(request: Request, max_frames: int = 0, trace_dir: str = "") -> int:
    """Colorize a video file through the stage processes; the exit code (errors are raised).

    ``max_frames`` and ``trace_dir`` go to the :class:`Job` (``colorize profile`` uses them).
    """
    model = one_thread_session(request)
    output_format = VIDEO_FORMATS[request.output.suffix.lower()]
    probe = probe_video(request.input, request.stream_index, output_format, request.config.encoder.audio,
                        request.maps, request.start_s)
    config, auto_line = fit_to_machine(request.config, model, probe.width, probe.height, live=False)
    tmp = temporary_output(request.output)
    guide_folder = tempfile.mkdtemp(prefix="colorize-guides-") if request.keyframes else ""
    try:
        guide_file = keyframe_guides(request, probe, config, guide_folder) if request.keyframes else ""
        job = video_job(request, probe, model, tmp, max_frames=max_frames, trace_dir=trace_dir,
                        side_tracks=probe.side.tracks, timecode=probe.side.timecode, guide_file=guide_file)
        return run_job(request, job, config, probe, auto_line)
    finally:
        if guide_folder:
            shutil.rmtree(guide_folder, ignore_errors=True)


def keyframe_guides(request: Request, probe: VideoProbe, config: PipelineConfig, folder: str) -> str:
    """Place the request's keyframes and carry their colour (:func:`stages.guidance.build_keyframe_guides`)
    into a file in ``folder``; its path. Raises InputError for a keyframe that does not fit the video."""
    from stages.guidance import build_keyframe_guides

    start_s = input_start_s(request, probe)
    num, den = probe.sample_aspect_ratio
    display_width = round(probe.width * num / den) if num > 0 and den > 0 else probe.width
    guides = build_keyframe_guides(request.input, request.stream_index, list(request.keyframes),
                                   config.encoder.temporal, config.guidance.reach_s, start_s,
                                   (probe.width, display_width), probe.height)
    path = Path(folder) / "keyframes.npz"
    guides.save(path)
    return str(path)


def run_job(request: Request, job: Job, config: PipelineConfig, probe: VideoProbe, auto_line: str) -> int:
    """Run a video file's :class:`Job` to its end and put the output in place; the exit code."""
    tmp = Path(job.output_tmp)
    bar = ProgressBar(enabled=not request.quiet and sys.stderr.isatty(), label=Path(request.input).name)
    supervisor = Supervisor(job, config, on_progress=bar, on_notice=bar.notice)
    try:
        report = supervisor.run()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    if report.frames_written == 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        if report.interrupted:
            print("interrupted before the first frame was written; nothing kept", file=sys.stderr)
            return interrupted_exit_code()
        raise InputError(f"no decodable video frames in {request.input}")
    for line in [*report.warnings, *filter(None, [probe.side.warning()])]:
        print(f"warning: {line}", file=sys.stderr)
    account = account_of(report)
    if account.lost or account.dropped:  # a file run drops nothing: any gap is a lost frame
        kept = partial_output(request.output)
        tmp.replace(kept)
        raise PipelineError(f"{account.lost + account.dropped} frames were lost in the pipeline "
                            f"({account.describe()}); the frames written are in {kept}")
    if report.interrupted:
        kept = partial_output(request.output)
        tmp.replace(kept)
        print(f"interrupted: kept the {report.frames_written} frames done so far in {kept}", file=sys.stderr)
        return interrupted_exit_code()
    try:
        tmp.replace(request.output)
    except OSError as exc:
        raise PipelineError(f"cannot give the finished output its name ({exc.strerror}: {request.output}); "
                            f"it is kept as {tmp}") from None
    if not request.quiet:
        settings = "; ".join(filter(None, [f"model {request.model.name}", auto_line]))
        print(summary_line(report, str(request.output), supervisor.replicas, settings), file=sys.stderr)
    return 0


def run_image(request: Request) -> int:
    model = ColorModel(request.model, SessionSettings(provider=request.config.inference.provider,
                                                     device_id=request.config.inference.device_id))
    from stages.guidance import palette_from_config

    keyframe = request.keyframes[-1].image if request.keyframes else None
    height, width, warnings = colorize_image(Path(request.input), request.output, model, request.config.colour,
                                             palette_from_config(request.config.guidance), keyframe)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if not request.quiet:
        print(f"{width}x{height} image -> {request.output}", file=sys.stderr)
    return 0


def environment_failure(exc: OSError | zmq.ZMQError) -> str:
    """One line for a failure of the machine rather than of the input or a stage."""
    if isinstance(exc, zmq.ZMQError):
        return f"cannot set up the run's sockets: {exc.strerror}"
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def negative_maps_joined(argv: list[str]) -> list[str]:
    """``--map -0:s`` as ``--map=-0:s``: argparse would take a value starting with '-' for an option."""
    joined, waiting = [], False
    for arg in argv:
        if waiting and arg.startswith("-"):
            joined[-1] = f"--map={arg}"
        else:
            joined.append(arg)
        waiting = arg == "--map"
    return joined


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return run_subcommand(argv[0], argv[1:])
    args = build_parser().parse_args(negative_maps_joined(argv))
    stop_on_signals()
    return reporting_errors(lambda: colorize(args))


def colorize(args: argparse.Namespace) -> int:
    """The main command on its parsed arguments: a live run, an image or a video file."""
    live = is_live_run(args)
    if not live:
        refuse_live_options(args)
    request = validate_live(args) if live else validate(args)
    if live and request.publishing:
        return run_live(request)
    output = Path(request.output)
    with OutputLock(output):
        remove_stale_temporaries(output)
        # under the lock: a run that held it may have finished this output since validate
        earlier = request.earlier_output() if live else output
        if existing_output(earlier, args.overwrite, args.no_overwrite):
            if not request.quiet:
                print(f"{earlier} exists: kept, nothing done (-n)", file=sys.stderr)
            return 0
        if live:
            replace_earlier_segments(request)
            return run_live(request)
        return run_image(request) if request.is_image else run_video(request)


def reporting_errors(command: Callable[[], int]) -> int:
    """Run ``command`` and return its exit code; what it raises becomes one ``error:`` line and
    exit code 2 (bad input, config or model), 1 (a stage or the machine failed) or 130 (Ctrl-C)."""
    try:
        return command()
    except (InputError, ConfigError, ModelError) as exc:
        print(error_lines(exc), file=sys.stderr)
        return 2
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, zmq.ZMQError) as exc:  # the machine, not the input: a folder gone mid-run, a busy port
        print(f"error: {environment_failure(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; output removed", file=sys.stderr)
        return interrupted_exit_code()


if __name__ == "__main__":
    sys.exit(main())
