"""``colorize profile``: run the real pipeline traced, and say where its time goes.

    colorize profile INPUT [-o OUT] [--config FILE.yaml] [--model FILE.onnx] [--trace trace.json] [--frames N]

The run is the normal one (:func:`stream.cli.run_video`: same validation, same Supervisor, same
stage processes) with ``Job.trace_dir`` set, so every stage process records per-frame timestamps
(:mod:`stream.observe.tracing`). Afterwards:

* ``--trace`` (default ``trace.json``) gets a Chrome / Perfetto trace (:mod:`stream.observe.chrome_trace`);
* stdout gets one row per stage, over the run's window (first piece of work to last): frames, mean
  and p95 milliseconds of work per frame, and shares of each replica's time: ``busy`` (working),
  ``waiting`` (no frame to work on; for the decoder, the time after its input ended) and
  ``blocked`` (sending, the next stage's queue full); ``CPU`` is the cores its processes used;
* then one ``advice:`` line: the bottleneck (the stage with the highest busy share) and the change
  most likely to help it (:func:`advise`).

Without ``-o`` the colorized video goes to a temporary file, deleted at the end; ``--frames N``
profiles the first N frames only. Errors are the main command's: one ``error:`` line, exit code 2
for bad input (nothing run), 1 for a failed run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import get_args, get_type_hints

import numpy as np

from stream.observe.chrome_trace import STAGE_ORDER, build_trace, frame_slices, in_pipeline_order
from stream.cli import one_thread_session, probe_video, reporting_errors, run_video, validate
from stream.config import EncoderConfig, PipelineConfig
from stream.errors import InputError, PipelineError
from stream.output_path import refuse_to_replace
from stream.observe.tracing import StageRecord, load_records
from stream.observe.tune import fit_to_machine

X264_PRESETS = get_args(get_type_hints(EncoderConfig)["preset"])  # fastest first
ACCELERATED_PROVIDERS = ("cuda", "npu", "openvino")
BIGGEST_USEFUL_BATCH = 8


@dataclass(frozen=True)
class StageFigures:
    """One stage (all its replicas) over the run's window. Shares are of each replica's time (0..1),
    averaged over replicas; ``cores``: CPU seconds of all its processes per second of the window."""

    stage: str
    replicas: int
    frames: int
    mean_ms: float
    p95_ms: float
    busy: float
    waiting: float
    blocked: float
    cores: float


@dataclass(frozen=True)
class MachineTimes:
    """The machine's CPU seconds so far (all CPUs, from /proc/stat): idle, and in all."""

    idle: float
    total: float

    @classmethod
    def now(cls) -> "MachineTimes":
        try:
            with open("/proc/stat") as stat:
                ticks = [int(value) for value in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return cls(0.0, 0.0)
        return cls(float(ticks[3] + ticks[4]), float(sum(ticks[:8])))  # idle + iowait; up to steal

    def idle_cores_since(self, earlier: "MachineTimes") -> float:
        """CPUs the machine left idle since ``earlier``, on average (infinite when unknown)."""
        total = self.total - earlier.total
        return (self.idle - earlier.idle) / total * (os.cpu_count() or 1) if total > 0 else float("inf")


@dataclass(frozen=True)
class Profile:
    """What the report prints: the stages in pipeline order, the window, the cores this process may
    use (``cores``) and those the machine left idle during the run (``idle_cores``: other programs
    count too)."""

    stages: list[StageFigures]
    frames: int
    window_s: float
    cores: int
    idle_cores: float = float("inf")

    @property
    def fps(self) -> float:
        return self.frames / self.window_s if self.window_s > 0 else 0.0

    @property
    def cores_used(self) -> float:
        return sum(figures.cores for figures in self.stages)

    @property
    def cores_free(self) -> float:
        """Cores another replica could have used: not used by the pipeline, and idle on the machine."""
        return max(0.0, min(self.cores - self.cores_used, self.idle_cores))

    def bottleneck(self) -> StageFigures:
        return max(self.stages, key=lambda figures: figures.busy)


@dataclass(frozen=True)
class Advice:
    """The bottleneck stage, why it is one, and the change most likely to help."""

    stage: str
    why: str
    change: str

    def line(self) -> str:
        return f"advice: {self.stage} is the bottleneck ({self.why}); {self.change}"


def measure(records: list[StageRecord], cores: int, idle_cores: float = float("inf")) -> Profile:
    """Per-stage figures from the stage processes' records (see the module docstring)."""
    window_start = min(start for r in records for start, _, _ in r.work)
    window_end = max(end for r in records for _, end, _ in r.work)
    window = max(window_end - window_start, 1e-9)
    stages = []
    for stage in STAGE_ORDER:
        mine = [r for r in records if r.stage == stage]
        slices = [piece for r in mine for piece in frame_slices(r)]
        durations_ms = np.array([piece.duration * 1000 for piece in slices]) if slices else np.zeros(1)
        replicas = len(mine)
        busy = sum(end - start for r in mine for start, end, _ in r.work) / (window * replicas)
        blocked = sum(end - start for r in mine for _, start, end in r.sent) / (window * replicas)
        stages.append(StageFigures(stage=stage, replicas=replicas, frames=len(slices),
                                   mean_ms=float(durations_ms.mean()), p95_ms=float(np.percentile(durations_ms, 95)),
                                   busy=busy, waiting=max(0.0, 1.0 - busy - blocked), blocked=blocked,
                                   cores=sum(r.cpu_s for r in mine) / window))
    return Profile(stages=stages, frames=stages[-1].frames, window_s=window, cores=cores, idle_cores=idle_cores)


def model_is_int8(model: Path) -> bool:
    """True when the model computes on 8-bit data (as ``colorize quantize`` makes it)."""
    import onnx

    from models.quantize import quantized_op_counts

    return bool(quantized_op_counts(onnx.load(str(model), load_external_data=False)))


def advise(profile: Profile, config: PipelineConfig, model: Path) -> Advice:
    """The change most likely to help the bottleneck, in this order: more replicas of it (when a core
    is free), a bigger batch (inference on an accelerator), an INT8 model (inference on the CPU),
    another provider; for the decoder and the encoder (one process each) FFmpeg threads or a faster
    x264 preset."""
    worst = profile.bottleneck()
    per_replica = f" on {worst.replicas} replicas" if worst.replicas > 1 else ""
    why = f"busy {100 * worst.busy:.0f}% of the time, {worst.mean_ms:.1f} ms a frame{per_replica}"
    free = profile.cores_free
    room = f"{free:.1f} of {profile.cores} cores were free"
    more_replicas = (f"more replicas: {worst.stage}.replicas: {worst.replicas + 1} ({room})"
                     if free >= 1 else None)
    if worst.stage == "decoder":
        threads = config.decoder.threads
        change = (f"more FFmpeg threads: decoder.threads: {profile.cores} (now {threads})"
                  if threads and threads < profile.cores and free >= 1 else
                  "the decoder is one process, already on FFmpeg's threads: a lighter input (resolution, codec) "
                  "is what would go faster")
    elif worst.stage == "preprocessor":
        change = more_replicas or (f"no core was free ({free:.1f} of {profile.cores}): more replicas would "
                                   "only share them; a machine with more cores")
    elif worst.stage == "inference":
        inference = config.inference
        if inference.provider in ACCELERATED_PROVIDERS and inference.batch_size < BIGGEST_USEFUL_BATCH:
            change = (f"a bigger batch: inference.batch_size: {min(2 * inference.batch_size, BIGGEST_USEFUL_BATCH)} "
                      f"(now {inference.batch_size}; batches keep a {inference.provider} device busy)")
        elif more_replicas:
            change = more_replicas
        elif inference.provider == "cpu" and not model_is_int8(model):
            change = (f"an INT8 model: colorize quantize {model} -o model_int8.onnx, then --model model_int8.onnx "
                      f"(no core was free for another replica: {free:.1f} of {profile.cores})")
        else:
            change = (f"another provider than {inference.provider}: colorize devices lists the ones this machine runs "
                      "(inference.provider)")
    else:
        preset = config.encoder.preset
        faster = X264_PRESETS[max(0, X264_PRESETS.index(preset) - 1)]
        change = (f"a faster x264 preset: encoder.preset: {faster} (now {preset}; a somewhat bigger file at the same crf)"
                  if faster != preset else
                  "the encoder is one process already at x264's fastest preset: a lower crf costs less, "
                  "or a smaller output")
    return Advice(worst.stage, why, change)


def report_lines(profile: Profile, source: str) -> list[str]:
    """The table (one row per stage) and its legend."""
    lines = [f"profile: {Path(source).name}, {profile.frames} frames in {profile.window_s:.2f} s "
             f"({profile.fps:.1f} fps); {profile.cores} core{'s' * (profile.cores != 1)}: "
             f"{profile.cores_used:.1f} used by the pipeline, {profile.cores_free:.1f} free",
             f"{'stage':<13}{'replicas':>9}{'frames':>8}{'mean ms':>9}{'p95 ms':>9}{'busy':>7}{'waiting':>9}"
             f"{'blocked':>9}{'CPU':>6}"]
    for f in profile.stages:
        lines.append(f"{f.stage:<13}{f.replicas:>9}{f.frames:>8}{f.mean_ms:>9.2f}{f.p95_ms:>9.2f}"
                     f"{100 * f.busy:>6.0f}%{100 * f.waiting:>8.0f}%{100 * f.blocked:>8.0f}%{f.cores:>6.2f}")
    lines.append("mean/p95: work per frame; busy, waiting (no frame to work on; the decoder: input ended), blocked "
                 "(next queue full): shares of each replica's time; CPU: cores used")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colorize profile",
        description="Colorize INPUT through the real pipeline with tracing on: print each stage's time per "
                    "frame, busy and waiting shares and the bottleneck, and write a Chrome/Perfetto trace.")
    parser.add_argument("input", help="video file")
    parser.add_argument("-o", "--output", type=Path,
                        help="keep the colorized video here (default: a temporary file, deleted)")
    parser.add_argument("-y", "--overwrite", action="store_true", help="replace an existing -o file")
    parser.add_argument("--config", type=Path, help="pipeline YAML (default: built-in defaults)")
    parser.add_argument("--model", type=Path, help="ONNX model (default: the embedded model)")
    parser.add_argument("--trace", type=Path, default=Path("trace.json"),
                        help="trace to write, for https://ui.perfetto.dev or chrome://tracing (default trace.json)")
    parser.add_argument("--frames", type=int, metavar="N", help="profile the first N frames only (default: all)")
    return parser


def check_options(args: argparse.Namespace) -> None:
    """What :func:`stream.cli.validate` does not check: --frames, --trace, a live input, an
    existing -o without -y."""
    if args.frames is not None and args.frames < 1:
        raise InputError(f"--frames must be 1 or more, got {args.frames}")
    if "://" in args.input:
        raise InputError(f"profile runs on video files, not live sources: {args.input}")
    if args.output is not None:
        refuse_to_replace(args.output, args.overwrite)
    trace_dir = args.trace.parent if str(args.trace.parent) else Path(".")
    if args.trace.is_dir():
        raise InputError(f"--trace is a directory: {args.trace}")
    if not trace_dir.is_dir():
        raise InputError(f"trace directory does not exist: {trace_dir}")
    if not os.access(trace_dir, os.W_OK | os.X_OK):
        raise InputError(f"trace directory is not writable: {trace_dir}")


def refuse_leased_stages(config: PipelineConfig) -> None:
    """Stages behind a broker (restarts, joining workers) are not traced: say so before running."""
    for stage in ("preprocessor", "inference"):
        if getattr(config, stage).leased:
            raise InputError(f"profile cannot trace a stage run through a broker: {stage}.restart.max_restarts or "
                             f"{stage}.workers.listen is set in the config; profile with a config without them")


def profile(args: argparse.Namespace) -> int:
    """Validate, run traced, write the trace, print the report; the exit code (errors are raised)."""
    check_options(args)
    with tempfile.TemporaryDirectory(prefix="colorize-profile-") as scratch:
        output = args.output or Path(scratch) / f"{Path(args.input).stem or 'profile'}.mp4"
        request = validate(argparse.Namespace(input=args.input, output=output, config=args.config,
                                              model=args.model, stream=0, quiet=True, overwrite=True))
        if request.is_image:
            raise InputError(f"profile runs on videos, not images: {args.input}")
        refuse_leased_stages(request.config)
        probe = probe_video(request.input, request.stream_index)
        fitted, _ = fit_to_machine(request.config, one_thread_session(request), probe.width, probe.height, live=False)
        request = dataclasses.replace(request, config=fitted)
        records_dir = Path(scratch) / "records"
        records_dir.mkdir()
        before = MachineTimes.now()
        code = run_video(request, max_frames=args.frames or 0, trace_dir=str(records_dir))
        idle_cores = MachineTimes.now().idle_cores_since(before)
        if code != 0:
            return code
        records = load_records(records_dir)
    missing = [stage for stage in STAGE_ORDER if not any(r.stage == stage for r in records)]
    if missing:
        raise PipelineError(f"no trace came back from the {', '.join(missing)} stage")
    args.trace.write_text(json.dumps(build_trace(in_pipeline_order(records))))
    result = measure(records, cores=len(os.sched_getaffinity(0)), idle_cores=idle_cores)
    for line in report_lines(result, args.input):
        print(line)
    print(f"trace: {args.trace} (open it in https://ui.perfetto.dev or chrome://tracing)")
    if args.output:
        print(f"output: {args.output}")
    print(advise(result, request.config, request.model).line())
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return reporting_errors(lambda: profile(args))
