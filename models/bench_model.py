"""Latency and throughput of one ONNX model on one provider: ``colorize bench-model``.

    colorize bench-model MODEL [--provider cpu|cuda|npu|openvino] [--batch N] [--loop 100] [--warmup 10]
                         [--threads T] [--json PATH|-]

The model is checked against the pipeline's contract and opened on the named provider only (no fall-back).
Its input is a fixed pseudo-random batch of L − 50 values (float32 N×1×H×W, uniform in −50..50, seed 0).
After ``warmup`` untimed runs, ``loop`` runs of ``session.run`` are timed one by one (wall clock, so the
transfer to and from a device is included; the pipeline's own pre- and post-processing is not).
The report gives the per-inference mean, p50, p99, min and max in ms (the figures the Ascend ``msame``
tool prints), and throughput as inferences/s and frames/s (= inferences/s × batch).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.runtime import PROVIDERS, ColorModel, ModelError, SessionSettings
from models.tool_cli import run_tool, write_json_report
from stream.errors import InputError


@dataclass(frozen=True)
class BenchResult:
    """Timings of ``loop`` inferences of a ``batch``-frame input (milliseconds per inference)."""

    model: str
    provider: str
    intra_op_threads: int
    batch: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    warmup: int
    loop: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    inferences_per_s: float
    frames_per_s: float

    def summary(self) -> str:
        """A readable report, in the style of the other commands' tables."""
        dims = lambda shape: "×".join(map(str, shape))  # noqa: E731
        threads = self.intra_op_threads or "auto"
        return "\n".join([
            f"{Path(self.model).name}: input {dims(self.input_shape)}, output {dims(self.output_shape)}; "
            f"provider {self.provider} ({PROVIDERS[self.provider][0]}), intra-op threads {threads}; "
            f"batch {self.batch}, {self.warmup} warm-up and {self.loop} timed inferences",
            f"inference time, mean      {self.mean_ms:9.3f} ms",
            f"inference time, p50       {self.p50_ms:9.3f} ms",
            f"inference time, p99       {self.p99_ms:9.3f} ms",
            f"inference time, min / max {self.min_ms:9.3f} / {self.max_ms:.3f} ms",
            f"throughput                {self.inferences_per_s:9.2f} inferences/s, {self.frames_per_s:.2f} frames/s",
        ])


def random_input(batch: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """float32 batch×1×h×w of L − 50 values, uniform in −50..50, reproducible from ``seed``."""
    return np.random.default_rng(seed).uniform(-50.0, 50.0, (batch, 1, *size)).astype(np.float32)


def time_runs(run, count: int) -> np.ndarray:
    """Wall-clock seconds of ``count`` calls of ``run()``, one by one, as float64 (count,)."""
    times = np.empty(count, np.float64)
    for i in range(count):
        start = time.perf_counter()
        run()
        times[i] = time.perf_counter() - start
    return times


def benchmark(model_path: Path, provider: str = "cpu", batch: int = 1, loop: int = 100, warmup: int = 10,
              threads: int = 0) -> BenchResult:
    """Time ``loop`` inferences after ``warmup``; ModelError/InputError (one line) on bad model or options."""
    if batch < 1 or loop < 1 or warmup < 0 or threads < 0:
        raise InputError("--batch and --loop must be at least 1, --warmup and --threads at least 0")
    model = ColorModel(Path(model_path), SessionSettings(provider=provider, intra_op_threads=threads))
    if model.fixed_batch is not None and model.fixed_batch != batch:
        raise InputError(f"model {Path(model_path).name} has a fixed batch of {model.fixed_batch}; "
                         f"use --batch {model.fixed_batch}")
    feed = {model.input_name: random_input(batch, model.input_size)}
    session = model.session
    try:
        output_shape = tuple(session.run([model.output_name], feed)[0].shape)
        for _ in range(warmup):
            session.run([model.output_name], feed)
        seconds = time_runs(lambda: session.run([model.output_name], feed), loop)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"inference failed on {provider}: {first[:200]}") from None
    ms = seconds * 1e3
    per_s = loop / float(seconds.sum())
    return BenchResult(model=str(model_path), provider=provider, intra_op_threads=threads, batch=batch,
                       input_shape=(batch, 1, *model.input_size), output_shape=output_shape, warmup=warmup,
                       loop=loop, mean_ms=float(ms.mean()), p50_ms=float(np.percentile(ms, 50)),
                       p99_ms=float(np.percentile(ms, 99)), min_ms=float(ms.min()), max_ms=float(ms.max()),
                       inferences_per_s=per_s, frames_per_s=per_s * batch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colorize bench-model",
                                     description="Latency (mean, p50, p99) and throughput of an ONNX model.")
    parser.add_argument("model", type=Path, help="ONNX model (the pipeline's contract)")
    parser.add_argument("--provider", choices=list(PROVIDERS), default="cpu", help="inference provider (default cpu)")
    parser.add_argument("--batch", type=int, default=1, help="frames per inference (default 1)")
    parser.add_argument("--loop", type=int, default=100, help="timed inferences (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed inferences first (default 10)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (default 0 = onnxruntime's choice)")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH ('-' = stdout only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry: prints the summary, returns 0; on bad input prints ``error: <one line>`` to stderr, returns 2."""
    args = build_parser().parse_args(argv)

    def summary() -> str:
        result = benchmark(args.model, args.provider, args.batch, args.loop, args.warmup, args.threads)
        if args.json and args.json != "-":
            write_json_report(Path(args.json), asdict(result))
        return json.dumps(asdict(result), indent=2) if args.json == "-" else result.summary()
    return run_tool(summary)


if __name__ == "__main__":
    sys.exit(main())
