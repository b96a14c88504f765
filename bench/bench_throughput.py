"""Throughput benchmark: the pipeline against a sequential single-process loop, on the same clip, model
and settings, measured in one run.

    python bench/bench_throughput.py [--model FILE.onnx] [--config configs/throughput.yaml]
                                     [--frames 240] [--repeat 1] [--skip-scaling] [--skip-memory]

For each clip (the first ``--frames`` frames of the 640×360 ``bottle-detection.mp4`` and of the
1280×720 ``big_buck_bunny_0_30.webm``):

* sequential: decode → preprocess → infer → post-process → encode in one loop, with the functions
  the stages run (stages/lab.py, models/runtime.py, PyAV + libx264) and the same allocator
  settings (stream/allocator.py), twice: every library on one
  thread, and every library on its own default threads (FFmpeg, x264, OpenCV and onnxruntime
  all use both cores); CPU seconds per frame for each step (process time, all threads);
* pipeline: the real :class:`stream.supervisor.Supervisor` with ``--config``: end-to-end fps
  (from start, process start-up included) and steady fps (from the first frame written; on short
  clips it is flattered by the frames the queues filled before that), each stage's busy share,
  the CPU it used, and its peak memory: the sum over the supervisor and every stage process of
  RSS (sampled every 50 ms) and of PSS, which counts shared pages once (every second);
* ratio = pipeline fps / sequential fps (both loops);
* efficiency, as the issue defines it = pipeline fps × (the stages' CPU seconds per frame, each
  stage process from its ``ready`` event on) / cores: how much of the machine the stages keep busy.
  Only end to end: the stages' CPU covers the pipeline filling its queues before the first frame is
  written, so against the steady rate it would exceed 1 on short clips;
* work efficiency, stricter = pipeline fps × (the one-thread loop's CPU seconds per frame: the
  work itself) / cores: also counts the pipeline's own overhead (transport, threads) as lost;
* useful CPU = that work over the CPU the pipeline's processes really used (start-up, transport
  and idle polling are the rest; the fork server's one-time imports, paid once per process that
  runs pipelines, are not counted), which, unlike efficiency, does not depend on what else the
  machine is running.

Then a scaling table (inference replicas 1, 2, 4, 8, one onnxruntime thread each), the cost of the
broker path (inference leased with a restart policy) against direct links, and the peak memory
of a 96-frame and a 1,394-frame clip (memory must not grow with length). The model is ``--model``,
else ``models/default.onnx``, else a random-weight ``ColorNet(32)`` exported with torch (same
architecture and cost as the trained one). Audio is off in both so both do the same work.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import DEFAULT_MODEL_PATH  # noqa: E402
from models.runtime import ColorModel, SessionSettings  # noqa: E402
from stream.allocator import reuse_freed_memory  # noqa: E402
from stream.config import PipelineConfig, load_config  # noqa: E402
from stream.process_tree import resident_bytes, tree_members  # noqa: E402

VIDEO_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "video"
STAGES = ("decoder", "preprocessor", "inference", "encoder")
SCALING_REPLICAS = (1, 2, 4, 8)


# -- memory of a process tree ---------------------------------------------------------------

def _pss_kib(pid: int) -> int:
    """Proportional set size of one process (shared pages counted once over the tree), KiB; 0 if gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler:
    """Samples the summed RSS (MiB) of this process and all its descendants every 50 ms, and their
    summed PSS every second (the process tree is looked up every 0.5 s). ``cpu_s``: the sampler's
    own CPU time, which the caller leaves out of the pipeline's.

    PSS is sampled 20× less often because reading it walks every page table (~15 ms of CPU for the
    pipeline's 8 processes, against 0.1 ms for RSS): at 50 ms it took a sixth of a core from the
    run it measured. The sequential loops run unsampled, so the sampler's share of a core is printed
    beside the pipeline's figures.
    """

    def __init__(self, interval_s: float = 0.05, tree_every: int = 10, pss_every: int = 20):
        self.interval_s, self.tree_every, self.pss_every = interval_s, tree_every, pss_every
        self.peak_rss, self.peak_pss, self.processes, self.cpu_s = 0.0, 0.0, 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me, tree, samples = os.getpid(), {os.getpid()}, 0
        while not self._stop.is_set():
            if samples % self.tree_every == 0:
                tree = tree_members(me)
            rss = sum(resident_bytes(p) for p in tree) / 2**20
            self.peak_rss = max(self.peak_rss, rss)
            if samples % self.pss_every == 0:
                self.peak_pss = max(self.peak_pss, sum(_pss_kib(p) for p in tree) / 1024)
            self.processes = max(self.processes, len(tree))
            samples += 1
            self.cpu_s = time.thread_time()
            self._stop.wait(self.interval_s)


# -- the two ways of colorizing ---------------------------------------------------------------

@dataclass
class SequentialResult:
    frames: int
    wall_s: float
    step_cpu_s: dict[str, float]

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    @property
    def cpu_per_frame(self) -> float:
        return sum(self.step_cpu_s.values()) / self.frames


def run_sequential(source: Path, model_path: Path, output: Path, config: PipelineConfig,
                   one_thread: bool = False) -> SequentialResult:
    """One process, one loop: the same functions the stages run, timed step by step (CPU time).

    ``one_thread``: FFmpeg, x264, OpenCV and onnxruntime on one thread each (the work itself, with
    no thread pools spinning); else each library's own default threading.
    """
    import av
    import cv2

    from stages.decoder import open_input
    from stages.encoder import even_size, yuv420p_picture
    from stages.lab import lightness_code, merge_lightness, model_input

    started = time.perf_counter()
    cpu = {"decode": 0.0, "preprocess": 0.0, "inference": 0.0, "post-process + encode": 0.0}
    clock = time.process_time
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1 if one_thread else cv_threads)
    t = clock()
    model = ColorModel(model_path, SessionSettings(provider=config.inference.provider,
                                                   intra_op_threads=1 if one_thread else 0))
    smoother = None
    if getattr(config.encoder, "temporal", None) is not None:
        from stages.temporal import TemporalSmoother
        smoother = TemporalSmoother(config.encoder.temporal)
    container = open_input(str(source))
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if one_thread:
        stream.codec_context.thread_count = 1
    rate = Fraction(stream.average_rate or 25).limit_denominator(100_000)
    out = av.open(str(output), mode="w", format="mp4")
    video = None
    cpu["decode"] += clock() - t
    frames = 0
    decoded = container.decode(stream)
    while True:
        t = clock()
        frame = next(decoded, None)
        if frame is None:
            cpu["decode"] += clock() - t
            break
        rgb = frame.to_ndarray(format="rgb24")
        pts, time_base = frame.pts, frame.time_base
        t2 = clock()
        cpu["decode"] += t2 - t
        x = model_input(rgb, model.input_size)
        lightness = lightness_code(rgb)
        t3 = clock()
        cpu["preprocess"] += t3 - t2
        ab = model.predict_ab(x[None])[0]
        t4 = clock()
        cpu["inference"] += t4 - t3
        if smoother is not None:
            ab = smoother.update(lightness, ab)
        colour = even_size(merge_lightness(lightness, ab))
        if video is None:
            video = out.add_stream("libx264", rate=rate)
            video.height, video.width = colour.shape[:2]
            video.pix_fmt = "yuv420p"
            video.time_base = time_base
            video.codec_context.time_base = time_base
            video.options = {"crf": str(config.encoder.crf), "preset": config.encoder.preset}
            if one_thread:
                video.codec_context.thread_count = 1
        picture = yuv420p_picture(colour)
        picture.pts, picture.time_base = pts, time_base
        for packet in video.encode(picture):
            out.mux(packet)
        cpu["post-process + encode"] += clock() - t4
        frames += 1
    t = clock()
    for packet in video.encode(None):
        out.mux(packet)
    out.close()
    container.close()
    cpu["post-process + encode"] += clock() - t
    cv2.setNumThreads(cv_threads)
    return SequentialResult(frames, time.perf_counter() - started, cpu)


@dataclass
class PipelineResult:
    frames: int
    wall_s: float
    steady_fps: float
    busy_share: dict[str, float]
    cpu_s: float
    peak_rss_mib: float
    peak_pss_mib: float
    processes: int
    resent: int = 0
    first_frame_s: float = 0.0
    stage_cpu_s: dict[str, float] | None = None
    sampler_cpu_s: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s


def run_pipeline(source: Path, model_path: Path, output: Path, config: PipelineConfig) -> PipelineResult:
    """The real pipeline (supervisor in this process, stages as processes), memory sampled throughout."""
    from stream.cli import probe_video
    from stream.stage import Job
    from stream.supervisor import Supervisor
    from stream.observe.tune import fit_to_machine

    probe = probe_video(str(source), 0)
    session = ColorModel(model_path, SessionSettings(intra_op_threads=1))
    config, _ = fit_to_machine(config, session, probe.width, probe.height, live=False)  # as colorize does
    input_size = session.input_size
    job = Job(input=str(source), output_tmp=str(output), model=str(model_path), output_format="mp4",
              frame_rate=probe.frame_rate, model_input_size=input_size, frame_bytes=probe.frame_bytes)
    marks: list[tuple[float, int]] = []

    def progress(event) -> None:
        marks.append((time.monotonic(), event.frames_done))

    cpu_self = time.process_time()
    started = time.monotonic()
    with MemorySampler() as memory:
        supervisor = Supervisor(job, config, on_progress=progress, on_notice=lambda text: None)
        report = supervisor.run()
    cpu = (time.process_time() - cpu_self - memory.cpu_s + sum(report.cpu_s.values())
           + sum(report.startup_cpu_s.values()))
    first = next(((t, n) for t, n in marks if n > 0), None)
    last = marks[-1] if marks else None
    steady = (last[1] - first[1]) / (last[0] - first[0]) if first and last and last[0] > first[0] else 0.0
    shares = {stage: report.busy_share(stage, supervisor.replicas.get(stage, 1)) for stage in STAGES}
    return PipelineResult(report.frames_written, report.wall_s, steady, shares, cpu, memory.peak_rss,
                          memory.peak_pss, memory.processes, report.resent_frames,
                          first_frame_s=first[0] - started if first else 0.0, stage_cpu_s=dict(report.cpu_s),
                          sampler_cpu_s=memory.cpu_s)


# -- inputs ------------------------------------------------------------------------------------

def trimmed(source: Path, frames: int, folder: Path) -> Path:
    """The first ``frames`` video packets of ``source`` copied (no re-encoding) into a file of the same kind."""
    import av

    target = folder / f"{source.stem}-{frames}{source.suffix}"
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        copied = 0
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
            copied += 1
            if copied >= frames:
                break
    return target


def random_model(folder: Path) -> Path:
    """A random-weight ColorNet(32) with the embedded model's architecture (until models/default.onnx exists)."""
    import numpy as np
    import torch

    from models import load_bin_centres
    from models.network import AnnealedMean, ColorNet, ExportedColorizer

    torch.manual_seed(0)
    model = ExportedColorizer(ColorNet(32).eval(), AnnealedMean(torch.from_numpy(load_bin_centres()))).eval()
    path = folder / "random_colornet32.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, 224, 224), str(path), input_names=["l_minus_50"], output_names=["ab"],
                      dynamic_axes={"l_minus_50": {0: "N"}, "ab": {0: "N"}}, opset_version=17, dynamo=False)
    assert np.isfinite(ColorModel(path).predict_ab(np.zeros((1, 1, 224, 224), np.float32))).all()
    return path


# -- the report --------------------------------------------------------------------------------

def with_inference(config: PipelineConfig, **changes) -> PipelineConfig:
    return replace(config, inference=replace(config.inference, **changes))


def no_audio(config: PipelineConfig) -> PipelineConfig:
    return replace(config, encoder=replace(config.encoder, audio="none"))


def best(results: list, key) -> object:
    return max(results, key=key)


def compare(label: str, source: Path, model: Path, config: PipelineConfig, work: Path, repeat: int,
            cores: int, lines: list[str]) -> None:
    seqs, singles, pipes = [], [], []
    for i in range(repeat):
        singles.append(run_sequential(source, model, work / f"one-{label}-{i}.mp4", config, one_thread=True))
        seqs.append(run_sequential(source, model, work / f"seq-{label}-{i}.mp4", config))
        pipes.append(run_pipeline(source, model, work / f"pipe-{label}-{i}.mp4", config))
    single = best(singles, key=lambda r: r.fps)
    seq = best(seqs, key=lambda r: r.fps)
    pipe = best(pipes, key=lambda r: r.fps)
    cpu_frame = single.cpu_per_frame
    lines.append(f"{label}: {source.name}, {seq.frames} frames")
    for name, r in (("sequential, 1 thread", single), ("sequential, threads", seq)):
        lines.append(f"  {name:20} {r.fps:6.1f} fps ({r.wall_s:.1f} s); CPU per frame "
                     + ", ".join(f"{step} {1000 * s / r.frames:.1f} ms" for step, s in r.step_cpu_s.items())
                     + f" = {1000 * r.cpu_per_frame:.1f} ms")
    lines.append(f"  pipeline          {pipe.fps:6.1f} fps end to end ({pipe.wall_s:.1f} s, start-up included), "
                 f"{pipe.steady_fps:.1f} fps steady (from the first frame written, {pipe.first_frame_s:.2f} s after start)")
    lines.append("  busy share        " + ", ".join(f"{s} {100 * v:.0f}%" for s, v in pipe.busy_share.items()))
    lines.append(f"  peak memory       {pipe.peak_rss_mib:.0f} MiB RSS summed over {pipe.processes} processes "
                 f"({pipe.peak_pss_mib:.0f} MiB PSS); sampling it took {pipe.sampler_cpu_s / pipe.wall_s:.1%} of a core")
    ratio, steady_ratio = pipe.fps / seq.fps, pipe.steady_fps / seq.fps
    lines.append(f"  ratio to 1 thread {pipe.fps / single.fps:.2f}× end to end, {pipe.steady_fps / single.fps:.2f}× steady")
    lines.append(f"  ratio to threads  {ratio:.2f}× end to end, {steady_ratio:.2f}× steady (target ≥ 1.3×); "
                 f"that loop alone used {seq.cpu_per_frame * seq.fps / cores:.0%} of the cores")
    stage_cpu_frame = sum(pipe.stage_cpu_s.values()) / pipe.frames
    lines.append("  stage CPU         " + ", ".join(f"{stage} {1000 * cpu / pipe.frames:.1f} ms"
                                                  for stage, cpu in pipe.stage_cpu_s.items())
                 + f" = {1000 * stage_cpu_frame:.1f} ms a frame (each process from its ready event on)")
    lines.append(f"  efficiency        {pipe.fps * stage_cpu_frame / cores:.2f} (fps × stage CPU per frame / {cores} cores, "
                 "the issue's definition, end to end; target ≥ 0.85)")
    lines.append(f"  work efficiency   {pipe.fps * cpu_frame / cores:.2f} (fps × {1000 * cpu_frame:.1f} ms, the one-thread "
                 f"loop's CPU per frame, / {cores} cores: stricter, counts the pipeline's own overhead as lost)")
    cpu_share = pipe.cpu_s / pipe.wall_s / cores
    lines.append(f"  useful CPU        {pipe.frames * cpu_frame / pipe.cpu_s:.2f} of the CPU time the pipeline used "
                 f"({pipe.cpu_s / pipe.frames * 1000:.1f} ms a frame, start-up included; {100 * cpu_share:.0f}% of "
                 f"the {cores} cores) was the work itself ({1000 * cpu_frame:.1f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "configs" / "throughput.yaml")
    parser.add_argument("--frames", type=int, default=240, help="frames of each clip (default 240)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each, best kept (default 1)")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)
    reuse_freed_memory()  # the sequential loop gets the allocator settings every stage process has
    cores = len(os.sched_getaffinity(0))
    config = no_audio(load_config(args.config))
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        work = Path(tmp)
        model = args.model or (DEFAULT_MODEL_PATH if DEFAULT_MODEL_PATH.is_file() else random_model(work))
        load = os.getloadavg()
        lines = [f"bench_throughput: {cores} cores, load average {load[0]:.1f} at start; model {model.name}; "
                 f"config {args.config.name} (inference ×{config.inference.replicas}, batch {config.inference.batch_size}, "
                 f"{config.inference.intra_op_threads or 'auto'} thread(s)); audio off"]

        def show(line_count: int) -> None:
            print("\n".join(lines[line_count:]), flush=True)

        shown = 0
        show(shown)
        shown = len(lines)
        clips = [("640×360", trimmed(VIDEO_DIR / "bottle-detection.mp4", args.frames, work)),
                 ("1280×720", trimmed(VIDEO_DIR / "big_buck_bunny_0_30.webm", args.frames, work))]
        for label, source in clips:
            compare(label, source, model, config, work, args.repeat, cores, lines)
            show(shown)
            shown = len(lines)

        small = VIDEO_DIR / "test_video.mp4"
        if not args.skip_scaling:
            lines.append(f"scaling: {small.name}, inference replicas × 1 onnxruntime thread, batch 1")
            lines.append("  replicas    fps   steady fps   inference busy   CPU used   peak RSS")
            for replicas in SCALING_REPLICAS:
                scaled = with_inference(config, replicas=replicas, intra_op_threads=1, batch_size=1)
                r = run_pipeline(small, model, work / f"scale-{replicas}.mp4", scaled)
                lines.append(f"  {replicas:8d} {r.fps:6.1f} {r.steady_fps:12.1f} {100 * r.busy_share['inference']:15.0f}% "
                             f"{100 * r.cpu_s / r.wall_s / cores:8.0f}% {r.peak_rss_mib:8.0f} MiB")
                show(shown)
                shown = len(lines)
            direct = run_pipeline(small, model, work / "direct.mp4", config)
            leased_config = with_inference(config, restart=replace(config.inference.restart, max_restarts=1))
            leased = run_pipeline(small, model, work / "leased.mp4", leased_config)
            lines.append(f"broker path: direct links {direct.fps:.1f} fps ({direct.steady_fps:.1f} steady), "
                         f"{direct.peak_rss_mib:.0f} MiB; inference through the broker {leased.fps:.1f} fps "
                         f"({leased.steady_fps:.1f} steady), {leased.peak_rss_mib:.0f} MiB")
            show(shown)
            shown = len(lines)

        if not args.skip_memory:
            lines.append("memory against length (default config, audio off):")
            for name in ("test_video.mp4", "one-by-one-person-detection.mp4"):
                r = run_pipeline(VIDEO_DIR / name, model, work / f"mem-{name}.mp4", no_audio(PipelineConfig()))
                lines.append(f"  {name:34} {r.frames:5d} frames  peak {r.peak_rss_mib:5.0f} MiB RSS "
                             f"({r.peak_pss_mib:.0f} MiB PSS), {r.fps:.1f} fps")
                show(shown)
                shown = len(lines)
        lines.append(f"load average at the end {os.getloadavg()[0]:.1f}")
        show(shown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
