"""``colorize tune``: measure each stage on a sample of the input and write a pipeline YAML for this machine.

    colorize tune INPUT [-o tuned.yaml] [--model FILE.onnx] [--config BASE.yaml] [--frames N]

The first ``N`` frames are decoded, preprocessed, run through the model at batch sizes 1, 2, 4, 8
(one onnxruntime thread, and as many as there are cores) and merged + encoded with libx264, each
step timed in wall and CPU seconds with the very functions the stages run. Then, with ``cores`` =
the CPUs this process may use (``os.sched_getaffinity``):

* costs are CPU seconds per frame: the work itself, which other programs on a busy machine do not
  inflate the way they inflate wall-clock times (both are printed);
* the machine's limit is ``cores / (CPU seconds per frame of all stages)``; the decoder and the
  encoder are one process each, so ``1 / their cost`` caps it too: that is the target frame rate;
* inference gets the batch size with the lowest CPU cost per frame (a smaller one within 5%) and
  ``ceil(target × its cost per frame)`` replicas of one thread each (replicas scale with no
  synchronisation inside operators), unless one replica is enough and threads make it faster;
* the preprocessor gets ``ceil(target × its cost per frame)`` replicas;
* queues are sized to the batches in flight, so replicas never wait on an empty queue.

The reasoning is printed; the YAML carries the measurements as comments and loads like any config.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BATCH_SIZES = (1, 2, 4, 8)
INFERENCE_SAMPLE = 16


@dataclass(frozen=True)
class Cost:
    """Seconds per frame of one step: wall clock and CPU (all threads of this process)."""

    wall: float
    cpu: float

    def __str__(self) -> str:
        return f"{1000 * self.wall:7.1f} ms/frame wall, {1000 * self.cpu:7.1f} ms CPU"


class Stopwatch:
    def __enter__(self) -> "Stopwatch":
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0

    def per(self, frames: int) -> Cost:
        return Cost(self.wall / frames, self.cpu / frames)


@dataclass(frozen=True)
class Measurements:
    frames: int
    size: tuple[int, int]
    cores: int
    decode: Cost
    preprocess: Cost
    inference: dict[tuple[int, int], Cost]
    encode: Cost


@dataclass(frozen=True)
class Plan:
    """What tune decided, with one line of reasoning per decision."""

    preprocessor_replicas: int
    inference_replicas: int
    batch_size: int
    intra_op_threads: int
    batch_timeout_ms: float
    inference_queue_depth: int
    encoder_queue_depth: int
    target_fps: float
    reasons: list[str]


def measure(source: str, stream_index: int, model_path: Path, provider: str, preset: str,
            frames: int) -> Measurements:
    """Time every step of the pipeline on the first ``frames`` frames of ``source``."""
    import av

    from models.runtime import ColorModel, SessionSettings
    from stages.decoder import frame_arrays, open_input
    from stages.encoder import colour_picture
    from stream.config import ColourSettings
    from stages.preprocessor import prepare
    from stream.allocator import reuse_freed_memory

    reuse_freed_memory()  # as in the stage processes, whose costs these are
    cores = len(os.sched_getaffinity(0))
    container = open_input(source)
    try:
        stream = container.streams.video[stream_index]
        stream.thread_type = "AUTO"
        decoded: list[dict[str, np.ndarray]] = []
        with Stopwatch() as decode:
            for frame in container.decode(stream):
                decoded.append(frame_arrays(frame))
                size = (frame.width, frame.height)
                if len(decoded) >= frames:
                    break
    finally:
        container.close()
    if not decoded:
        from stream.errors import InputError
        raise InputError(f"no decodable video frames in {source}")
    count = len(decoded)
    model = ColorModel(model_path, SessionSettings(provider=provider, intra_op_threads=1))
    with Stopwatch() as preprocess:
        for arrays in decoded:
            if "frame" in arrays:  # the RGB path makes even sizes before the encoder
                rgb = arrays["frame"]
                arrays["frame"] = rgb[:rgb.shape[0] // 2 * 2, :rgb.shape[1] // 2 * 2]
            prepare(arrays, model.input_size)
    sample = np.stack([arrays["l_input"] for arrays in decoded[:INFERENCE_SAMPLE]])
    inference = time_inference(model_path, provider, sample, sorted({1, cores}))
    ab = model.predict_ab(sample[:1])[0]
    output = av.open(io.BytesIO(), mode="w", format="mp4")
    video = output.add_stream("libx264", rate=25)
    video.height, video.width = decoded[0]["lightness"].shape if "luma" not in decoded[0] else decoded[0]["luma"].shape
    video.pix_fmt = "yuv420p"
    video.options = {"preset": preset}
    with Stopwatch() as encode:
        for arrays in decoded:
            picture = colour_picture(arrays["lightness"], ab, arrays.get("luma"), ColourSettings())
            for packet in video.encode(picture):
                output.mux(packet)
        for packet in video.encode(None):
            output.mux(packet)
    output.close()
    return Measurements(frames=count, size=size, cores=cores, decode=decode.per(count),
                        preprocess=preprocess.per(count), inference=inference, encode=encode.per(count))


def time_inference(model_path: Path, provider: str, sample: np.ndarray, thread_counts: list[int],
                   batches: tuple[int, ...] = BATCH_SIZES) -> dict[tuple[int, int], Cost]:
    """Cost per frame of the model on ``sample`` (float32 N×1×h×w) for each (batch, threads)."""
    from models.runtime import ColorModel, SessionSettings

    inference: dict[tuple[int, int], Cost] = {}
    for threads in thread_counts:
        model = ColorModel(model_path, SessionSettings(provider=provider, intra_op_threads=threads))
        for batch in batches:
            if batch > len(sample):
                break
            usable = len(sample) // batch * batch
            model.predict_ab(sample[:batch])
            with Stopwatch() as run:
                for start in range(0, usable, batch):
                    model.predict_ab(sample[start:start + batch])
            inference[(batch, threads)] = run.per(usable)
    return inference


def plan(m: Measurements) -> Plan:
    """Replicas, batch and threads for the measured costs (see the module docstring)."""
    single = {batch: cost for (batch, threads), cost in m.inference.items() if threads == 1}
    cheapest = min(cost.cpu for cost in single.values())
    batch = min(b for b, cost in single.items() if cost.cpu <= cheapest * 1.05)
    infer = single[batch]
    total = m.decode.cpu + m.preprocess.cpu + infer.cpu + m.encode.cpu
    machine_fps = m.cores / total
    serial_fps = min(1 / m.decode.cpu, 1 / m.encode.cpu)
    target = min(machine_fps, serial_fps)
    reasons = [
        f"all stages together cost {1000 * total:.1f} ms of CPU per frame (inference at batch {batch}), "
        f"so {m.cores} core{'s' * (m.cores != 1)} can do at most {machine_fps:.1f} fps",
        f"the decoder and the encoder are one process each: alone they reach at least {1 / m.decode.cpu:.1f} and "
        f"{1 / m.encode.cpu:.1f} fps, so the target is {target:.1f} fps",
        f"inference: batch {batch} chosen, the smallest batch within 5 % of the lowest CPU cost per frame "
        f"({1000 * cheapest:.1f} ms at one thread; a smaller batch waits for fewer frames) "
        f"({', '.join(f'batch {b}: {1000 * c.cpu:.1f} ms' for b, c in sorted(single.items()))})",
    ]
    replicas = max(1, min(m.cores, math.ceil(target * infer.cpu - 1e-9)))
    threads = 1
    threaded = m.inference.get((batch, m.cores))
    if replicas == 1 and m.cores > 1 and threaded is not None and threaded.wall < 0.75 * infer.wall:
        threads = m.cores
        reasons.append(f"inference: {target:.1f} fps × {1000 * infer.cpu:.1f} ms needs one replica; "
                       f"{m.cores} threads make it {infer.wall / threaded.wall:.1f}× faster, so it gets {m.cores}")
    else:
        reasons.append(f"inference: {target:.1f} fps × {1000 * infer.cpu:.1f} ms a frame = "
                       f"{target * infer.cpu:.2f} busy replicas → {replicas} replica{'s' * (replicas != 1)} "
                       "of one thread each")
    pre = max(1, min(m.cores, math.ceil(target * m.preprocess.cpu - 1e-9)))
    reasons.append(f"preprocessor: {target:.1f} fps × {1000 * m.preprocess.cpu:.1f} ms = "
                   f"{target * m.preprocess.cpu:.2f} busy replicas → {pre} replica{'s' * (pre != 1)}")
    fill_ms = 1000 * batch * replicas / max(target, 1e-3)
    timeout = 20.0 if batch == 1 else round(max(20.0, 1.5 * fill_ms))
    if batch > 1:
        reasons.append(f"a batch of {batch} fills in about {fill_ms:.0f} ms per replica: batch timeout {timeout:g} ms")
    queue = max(8, 2 * batch)
    return Plan(preprocessor_replicas=pre, inference_replicas=replicas, batch_size=batch, intra_op_threads=threads,
                batch_timeout_ms=timeout, inference_queue_depth=queue,
                encoder_queue_depth=max(8, 2 * batch * replicas), target_fps=target, reasons=reasons)


# What the quick estimate does not run, per megapixel of frame and one thread, as measured on the
# 2-core development machine (bench/bench_speed.py clips): H.264 decoding, and libx264 by preset.
DECODE_MS_PER_MPX = 1.5
X264_MS_PER_MPX = {"ultrafast": 3.5, "superfast": 5.0, "veryfast": 8.0, "faster": 12.0, "fast": 16.0,
                   "medium": 20.0, "slow": 32.0, "slower": 60.0, "veryslow": 120.0}
COLOUR_MS_PER_MPX = 3.3  # the colour step on that machine: scales the two figures above to this one's speed
TEMPORAL_MS = 1.5  # temporal smoothing works at a fixed size (flow_size), whatever the frame's
QUICK_REPEATS = 3


def quick_measure(model, width: int, height: int, preset: str, cores: int) -> Measurements:
    """Measurements for :func:`plan` in about a tenth of a second, without reading the input: the
    preprocessing, the model (batch 1 and 2; ``model``: a :class:`models.runtime.ColorModel` session
    of one onnxruntime thread on the run's provider and device) and the colour step are timed on a
    synthetic frame of ``width``×``height`` (the best of a few runs); decoding and libx264 are
    estimated from their cost per megapixel, scaled by how fast the colour step ran here."""
    from stages.encoder import colour_picture
    from stream.config import ColourSettings
    from stages.preprocessor import prepare

    width, height = max(2, width // 2 * 2), max(2, height // 2 * 2)
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    luma = (126 + 90 * np.sin(rows / 37.0) * np.cos(cols / 53.0)).astype(np.uint8)

    def best(step) -> Cost:
        costs = []
        for _ in range(QUICK_REPEATS):
            with Stopwatch() as watch:
                step()
            costs.append(watch.per(1))
        return min(costs, key=lambda cost: cost.cpu)

    arrays = {"luma": luma}
    preprocess = best(lambda: prepare(dict(arrays), model.input_size))
    prepare(arrays, model.input_size)
    sample = np.stack([arrays["l_input"]] * 2)
    model.predict_ab(sample[:1])
    inference = {}
    for batch in (1, 2):
        cost = best(lambda: model.predict_ab(sample[:batch]))
        inference[(batch, 1)] = Cost(cost.wall / batch, cost.cpu / batch)
    ab = model.predict_ab(sample[:1])[0]
    colour = best(lambda: colour_picture(arrays["lightness"], ab, luma, ColourSettings()))
    megapixels = width * height / 1e6
    speed = colour.cpu / (COLOUR_MS_PER_MPX / 1000 * megapixels) if colour.cpu > 0 else 1.0
    decode_s = DECODE_MS_PER_MPX / 1000 * megapixels * speed
    encode_s = colour.cpu + (TEMPORAL_MS + X264_MS_PER_MPX.get(preset, 8.0) * megapixels) / 1000 * speed
    return Measurements(frames=1, size=(width, height), cores=cores, decode=Cost(decode_s, decode_s),
                        preprocess=preprocess, inference=inference, encode=Cost(encode_s, encode_s))


def sparse_inference(m: Measurements, every: int) -> Measurements:
    """``m`` with the model's cost per output frame when it runs on 1 frame in ``every``
    (``inference.every_nth_frame``; the frames between take the colour carried along the motion)."""
    return dataclasses.replace(m, inference={key: Cost(cost.wall / every, cost.cpu / every)
                                             for key, cost in m.inference.items()})


def fit_to_machine(config, model, width: int, height: int, live: bool, cores: int | None = None):
    """``config`` (a :class:`stream.config.PipelineConfig`) with its ``auto`` values chosen for this
    machine and this input, and one line saying what was chosen ('' when nothing was ``auto``).
    ``model``: the run's model as a one-thread :class:`models.runtime.ColorModel` session on its
    provider and device (the one the caller opened to read the model's input size). ``cores``: how
    many cores the run may use (default: all this process may run on).

    * live runs: one replica each, onnxruntime's own threads, no batching (latency first);
    * GPU/NPU providers: one inference replica, batches of 8 (the device is kept busy by batches,
      not by replicas); the preprocessor as for the CPU;
    * the CPU: :func:`plan` on :func:`quick_measure`: replicas of one thread each, as many as the
      frame rate the cores can reach keeps busy, and the cheapest batch.
    """
    from stream.config import PLAIN_CHOICES, auto_fields, with_choices

    pending = auto_fields(config)
    if not pending:
        return config, ""
    cores = cores or len(os.sched_getaffinity(0))
    if live:
        choices, basis = dict(PLAIN_CHOICES), "live"
    else:
        m = quick_measure(model, width, height, config.encoder.preset, cores)
        p = plan(sparse_inference(m, config.inference.every_nth_frame))
        choices = {"preprocessor.replicas": p.preprocessor_replicas, "inference.replicas": p.inference_replicas,
                   "inference.batch_size": p.batch_size, "inference.intra_op_threads": p.intra_op_threads}
        if config.inference.provider != "cpu":
            choices.update({"inference.replicas": 1, "inference.batch_size": ACCELERATOR_BATCH,
                            "inference.intra_op_threads": 0})
        basis = f"{width}×{height}, {config.inference.provider}, estimated {p.target_fps:.0f} fps"
    fitted = with_choices(config, choices)
    inference = fitted.inference
    threads = inference.intra_op_threads or "all"
    line = (f"auto: inference {inference.replicas}× ({threads} thread{'s' * (threads != 1)}, batch {inference.batch_size}), "
            f"preprocessor {fitted.preprocessor.replicas}× ({cores} core{'s' * (cores != 1)}, {basis})")
    return fitted, line


ACCELERATOR_BATCH = 8


def render_yaml(source: str, m: Measurements, p: Plan, base_transport: str) -> str:
    lines = [f"# Written by `colorize tune {source}` on {time.strftime('%Y-%m-%d %H:%M')}: "
             f"{m.frames} frames of {m.size[0]}×{m.size[1]}, {m.cores} core{'s' * (m.cores != 1)}.",
             "# Measured (seconds per frame, one process):",
             f"#   decode      {m.decode}",
             f"#   preprocess  {m.preprocess}"]
    lines += [f"#   inference   batch {b}, {t} thread{'s' * (t != 1)}: {c}" for (b, t), c in sorted(m.inference.items())]
    lines += [f"#   encode      {m.encode}", "# Reasoning:"]
    lines += [f"#   {reason}" for reason in p.reasons]
    lines += [
        "",
        f"transport: {base_transport}",
        "",
        "preprocessor:",
        f"  replicas: {p.preprocessor_replicas}",
        "",
        "inference:",
        f"  replicas: {p.inference_replicas}",
        f"  batch_size: {p.batch_size}",
        f"  batch_timeout_ms: {p.batch_timeout_ms:g}",
        f"  intra_op_threads: {p.intra_op_threads}",
        "  inter_op_threads: 1",
        f"  queue_depth: {p.inference_queue_depth}",
        "",
        "encoder:",
        f"  queue_depth: {p.encoder_queue_depth}",
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colorize tune",
                                     description="Measure each stage on a sample of INPUT and write a YAML "
                                                 "with replicas, batch size and threads for this machine.")
    parser.add_argument("input", help="a video like the ones you will colorize (its first frames are used)")
    parser.add_argument("-o", "--output", type=Path, default=Path("tuned.yaml"), help="YAML to write (tuned.yaml)")
    parser.add_argument("-y", "--overwrite", action="store_true", help="replace an existing -o file")
    parser.add_argument("--model", type=Path, help="ONNX model (default: the embedded model)")
    parser.add_argument("--config", type=Path, help="base YAML: its provider, preset and transport are kept")
    parser.add_argument("--frames", type=int, default=48, help="frames to sample (default 48)")
    parser.add_argument("--stream", type=int, default=0, metavar="N", help="video stream (default 0)")
    return parser


def main(argv: list[str]) -> int:
    from models.runtime import ModelError, model_to_run
    from stream.config import ConfigError, load_config
    from stream.errors import InputError, error_lines
    from stream.output_path import refuse_to_replace

    args = build_parser().parse_args(argv)
    try:
        if args.frames < 1:
            raise InputError(f"--frames must be 1 or more, got {args.frames}")
        if not Path(args.input).is_file():
            raise InputError(f"input not found: {args.input}")
        refuse_to_replace(args.output, args.overwrite)
        base = load_config(args.config)
        model = model_to_run(args.model, base.inference.provider, base.inference.precision)
        if not model.is_file():
            raise ModelError(f"model file not found: {model}")
        m = measure(args.input, args.stream, model, base.inference.provider, base.encoder.preset, args.frames)
    except (InputError, ConfigError, ModelError) as exc:
        print(error_lines(exc), file=sys.stderr)
        return 2
    every = base.inference.every_nth_frame
    p = plan(sparse_inference(m, every))
    if every > 1:
        p.reasons.insert(0, f"the model runs on 1 frame in {every} (inference.every_nth_frame): its cost per "
                            f"frame below is the measured one divided by {every}")
    print(f"tune: {Path(args.input).name}, {m.size[0]}×{m.size[1]}, {m.frames} frames sampled; "
          f"{m.cores} core{'s' * (m.cores != 1)} (os.sched_getaffinity)")
    print(f"  decode       {m.decode}")
    print(f"  preprocess   {m.preprocess}")
    for (batch, threads), cost in sorted(m.inference.items()):
        print(f"  inference    batch {batch}, {threads} thread{'s' * (threads != 1)}: {cost}")
    print(f"  encode       {m.encode}  (merge + libx264 {base.encoder.preset})")
    for reason in p.reasons:
        print(f"  → {reason}")
    args.output.write_text(render_yaml(Path(args.input).name, m, p, base.transport))
    load_config(args.output)
    print(f"wrote {args.output}: preprocessor ×{p.preprocessor_replicas}, inference ×{p.inference_replicas} "
          f"(batch {p.batch_size}, {p.intra_op_threads} thread{'s' * (p.intra_op_threads != 1)}), "
          f"target {p.target_fps:.1f} fps")
    return 0
