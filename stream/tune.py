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
    from stages.decoder import open_input
    from stages.encoder import yuv420p_picture
    from stream.allocator import reuse_freed_memory
    from stages.lab import lightness_code, merge_lightness, model_input

    reuse_freed_memory()  # as in the stage processes, whose costs these are
    cores = len(os.sched_getaffinity(0))
    container = open_input(source)
    try:
        stream = container.streams.video[stream_index]
        stream.thread_type = "AUTO"
        rgb: list[np.ndarray] = []
        with Stopwatch() as decode:
            for frame in container.decode(stream):
                rgb.append(frame.to_ndarray(format="rgb24"))
                if len(rgb) >= frames:
                    break
    finally:
        container.close()
    if not rgb:
        from stream.errors import InputError
        raise InputError(f"no decodable video frames in {source}")
    count = len(rgb)
    model = ColorModel(model_path, SessionSettings(provider=provider, intra_op_threads=1))
    with Stopwatch() as preprocess:
        inputs = [model_input(frame, model.input_size) for frame in rgb]
        lightness = [lightness_code(frame[:frame.shape[0] // 2 * 2, :frame.shape[1] // 2 * 2]) for frame in rgb]
    inference: dict[tuple[int, int], Cost] = {}
    sample = np.stack(inputs[:INFERENCE_SAMPLE])
    for threads in sorted({1, cores}):
        model = ColorModel(model_path, SessionSettings(provider=provider, intra_op_threads=threads))
        for batch in BATCH_SIZES:
            if batch > len(sample):
                break
            usable = len(sample) // batch * batch
            model.predict_ab(sample[:batch])
            with Stopwatch() as run:
                for start in range(0, usable, batch):
                    ab = model.predict_ab(sample[start:start + batch])
            inference[(batch, threads)] = run.per(usable)
    ab = model.predict_ab(sample[:1])[0]
    output = av.open(io.BytesIO(), mode="w", format="mp4")
    video = output.add_stream("libx264", rate=25)
    video.height, video.width = rgb[0].shape[0] // 2 * 2, rgb[0].shape[1] // 2 * 2
    video.pix_fmt = "yuv420p"
    video.options = {"preset": preset}
    with Stopwatch() as encode:
        for code in lightness:
            colour = merge_lightness(code, ab)
            for packet in video.encode(yuv420p_picture(colour)):
                output.mux(packet)
        for packet in video.encode(None):
            output.mux(packet)
    output.close()
    return Measurements(frames=count, size=(rgb[0].shape[1], rgb[0].shape[0]), cores=cores,
                        decode=decode.per(count), preprocess=preprocess.per(count), inference=inference,
                        encode=encode.per(count))


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
    parser.add_argument("--model", type=Path, help="ONNX model (default: the embedded model)")
    parser.add_argument("--config", type=Path, help="base YAML: its provider, preset and transport are kept")
    parser.add_argument("--frames", type=int, default=48, help="frames to sample (default 48)")
    parser.add_argument("--stream", type=int, default=0, metavar="N", help="video stream (default 0)")
    return parser


def main(argv: list[str]) -> int:
    from models import DEFAULT_MODEL_PATH
    from models.runtime import ModelError
    from stream.config import ConfigError, load_config
    from stream.errors import InputError, error_lines

    args = build_parser().parse_args(argv)
    try:
        if args.frames < 1:
            raise InputError(f"--frames must be 1 or more, got {args.frames}")
        if not Path(args.input).is_file():
            raise InputError(f"input not found: {args.input}")
        base = load_config(args.config)
        model = args.model or DEFAULT_MODEL_PATH
        if not model.is_file():
            raise ModelError(f"model file not found: {model}")
        m = measure(args.input, args.stream, model, base.inference.provider, base.encoder.preset, args.frames)
    except (InputError, ConfigError, ModelError) as exc:
        print(error_lines(exc), file=sys.stderr)
        return 2
    p = plan(m)
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
