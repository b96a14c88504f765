"""FP32 vs INT8 on this CPU: latency at batch 1 and ab agreement on CBSD68.

    python bench/bench_int8.py [--embedded MODEL] [--threads 0] [--runs 100] [--count 64] [--skip-reference]
                               [--json out.json]

Two models, each quantized here with ``colorize quantize``'s defaults (QDQ u8s8 per-channel, calibrated on
``--count`` images of ../shared/data/train):

* the embedded model: models/default.onnx if present, else (``--embedded``) a given file, else a
  random-weight ColorNet exported with PyTorch (when torch is installed);
* the reference architecture (Zhang et al. 2016, ≈32 M parameters) with random weights, written as a
  caffemodel for the published prototxt and converted by models.caffe.convert (when both are present).

Latency: one CPU session per model, same thread count, ``--runs`` timed ``session.run`` calls each at
batch 1, FP32 and INT8 interleaved in rounds of 10 in the same process; the median is reported, and
the ratio FP32/INT8. Agreement: ab (float32 N×2×56×56, Lab units) of INT8 vs FP32 over every CBSD68
image: cosine similarity, mean and max absolute error. Targets: INT8 ≥ 2× faster, cosine ≥ 0.99.
With random weights the cosine says little about a trained model's colours; the output says so.
Rows that cannot run print why and are skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from models import DEFAULT_MODEL_PATH, load_bin_centres  # noqa: E402
from models.bench_model import random_input, time_runs  # noqa: E402
from models.compare import DEFAULT_IMAGES  # noqa: E402
from models.providers import probe_provider  # noqa: E402
from models.quantize import DEFAULT_CALIBRATION_DIR, load_l_minus_50, quantize_model, spread_images  # noqa: E402
from models.runtime import ColorModel, SessionSettings  # noqa: E402

PROTOTXT = REPO.parent / "shared/data/zhang/colorization_deploy_v2.prototxt"
TARGET_SPEEDUP = 2.0
TARGET_COSINE = 0.99
ROUND = 10


@dataclass(frozen=True)
class Candidate:
    """A float model to benchmark: label, file, parameter count, and whether its weights are random."""

    label: str
    path: Path
    parameters: int
    random_weights: bool


@dataclass(frozen=True)
class Row:
    """FP32 vs INT8 figures of one model (latency in ms at batch 1; ab errors in Lab units)."""

    label: str
    parameters: int
    random_weights: bool
    fp32_ms: float
    int8_ms: float
    speedup: float
    cosine: float
    mean_abs_error: float
    max_abs_error: float
    images: int
    quantize_seconds: float


def count_parameters(path: Path) -> int:
    import onnx

    model = onnx.load(str(path))
    return int(sum(np.prod(init.dims, dtype=np.int64) for init in model.graph.initializer))


def embedded_candidate(work: Path, override: Path | None) -> Candidate | str:
    """The shipped model, a given file, or a random-weight ColorNet; a string says why there is none."""
    if override is not None:
        return Candidate(f"embedded ({override.name})", override, count_parameters(override), False)
    if DEFAULT_MODEL_PATH.is_file():
        return Candidate("embedded (default.onnx)", DEFAULT_MODEL_PATH, count_parameters(DEFAULT_MODEL_PATH), False)
    try:
        import torch

        from models.network import AnnealedMean, ColorNet, ExportedColorizer
    except ImportError:
        return "models/default.onnx is absent and torch is not installed to export a random-weight ColorNet"
    torch.manual_seed(0)
    model = ExportedColorizer(ColorNet(), AnnealedMean(torch.from_numpy(load_bin_centres()))).eval()
    path = work / "colornet_random.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as models/train.py uses
        torch.onnx.export(model, torch.zeros(1, 1, 224, 224), str(path), input_names=["l_minus_50"],
                          output_names=["ab"], dynamic_axes={"l_minus_50": {0: "N"}, "ab": {0: "N"}},
                          opset_version=17, dynamo=False)
    return Candidate("embedded arch. (ColorNet, random)", path, count_parameters(path), True)


def reference_candidate(work: Path) -> Candidate | str:
    """The Zhang et al. architecture with random weights, through the Caffe converter."""
    if not PROTOTXT.is_file():
        return f"reference prototxt not found: {PROTOTXT}"
    try:
        from models.caffe.convert import convert_caffe
        from models.caffe.synthetic import write_random_caffemodel
    except ImportError as exc:
        return f"Caffe converter not available ({exc})"
    caffemodel, path = work / "zhang_random.caffemodel", work / "zhang_random.onnx"
    write_random_caffemodel(PROTOTXT, caffemodel, seed=0)
    convert_caffe(PROTOTXT, caffemodel, path)
    caffemodel.unlink()
    return Candidate("reference (Zhang 2016, random)", path, count_parameters(path), True)


def interleaved_latency(fp32: ColorModel, int8: ColorModel, runs: int) -> tuple[float, float]:
    """Median ms per batch-1 inference of each session, timed alternately in rounds of ROUND runs."""
    feed = {fp32.input_name: random_input(1, fp32.input_size)}
    run_fp32 = lambda: fp32.session.run([fp32.output_name], feed)  # noqa: E731
    run_int8 = lambda: int8.session.run([int8.output_name], feed)  # noqa: E731
    time_runs(run_fp32, 3), time_runs(run_int8, 3)
    fp32_times, int8_times = [], []
    for _ in range(max(1, runs // ROUND)):
        fp32_times.append(time_runs(run_fp32, ROUND))
        int8_times.append(time_runs(run_int8, ROUND))
    return float(np.median(np.concatenate(fp32_times))) * 1e3, float(np.median(np.concatenate(int8_times))) * 1e3


def ab_agreement(fp32: ColorModel, int8: ColorModel, images: list[Path]) -> tuple[float, float, float]:
    """(cosine, mean |Δab|, max |Δab|) of INT8 vs FP32 ab over ``images``, one image per run."""
    dot = norm_a = norm_b = abs_sum = 0.0
    abs_max, elements = 0.0, 0
    for path in images:
        x = load_l_minus_50(path, fp32.input_size)
        a = fp32.predict_ab(x).astype(np.float64).ravel()
        b = int8.predict_ab(x).astype(np.float64).ravel()
        dot, norm_a, norm_b = dot + a @ b, norm_a + a @ a, norm_b + b @ b
        diff = np.abs(a - b)
        abs_sum, abs_max, elements = abs_sum + diff.sum(), max(abs_max, diff.max()), elements + a.size
    cosine = dot / np.sqrt(norm_a * norm_b) if norm_a > 0 and norm_b > 0 else float(norm_a == norm_b)
    return float(cosine), abs_sum / max(1, elements), float(abs_max)


def bench_candidate(candidate: Candidate, work: Path, threads: int, runs: int, count: int,
                    images: list[Path]) -> Row:
    int8_path = work / f"{candidate.path.stem}_int8.onnx"
    started = time.perf_counter()
    quantize_model(candidate.path, int8_path, DEFAULT_CALIBRATION_DIR, count)
    quantize_seconds = time.perf_counter() - started
    settings = SessionSettings(provider="cpu", intra_op_threads=threads)
    fp32, int8 = ColorModel(candidate.path, settings), ColorModel(int8_path, settings)
    fp32_ms, int8_ms = interleaved_latency(fp32, int8, runs)
    cosine, mean_err, max_err = ab_agreement(fp32, int8, images)
    return Row(candidate.label, candidate.parameters, candidate.random_weights, fp32_ms, int8_ms,
               fp32_ms / int8_ms, cosine, mean_err, max_err, len(images), quantize_seconds)


def format_rows(rows: list[Row]) -> str:
    header = (f"{'model':<34} {'params':>8} {'FP32 ms':>9} {'INT8 ms':>9} {'speed-up':>9} "
              f"{'ab cosine':>10} {'mean|Δab|':>10} {'max|Δab|':>9}  verdict")
    lines = [header]
    for r in rows:
        fast = r.speedup >= TARGET_SPEEDUP
        close = r.cosine >= TARGET_COSINE
        verdict = ("speed ok" if fast else f"speed-up < {TARGET_SPEEDUP:g}×") + ", " + (
            "cosine not meaningful (random weights)" if r.random_weights else
            ("cosine ok" if close else f"cosine < {TARGET_COSINE}"))
        lines.append(f"{r.label:<34} {r.parameters / 1e6:>7.2f}M {r.fp32_ms:>9.2f} {r.int8_ms:>9.2f} "
                     f"{r.speedup:>8.2f}× {r.cosine:>10.5f} {r.mean_abs_error:>10.3f} {r.max_abs_error:>9.2f}  "
                     f"{verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_int8.py",
                                     description="FP32 vs INT8 latency and ab agreement on this CPU.")
    parser.add_argument("--embedded", type=Path,
                        help="float model to use as the embedded one (default: models/default.onnx)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads for both (default 0 = one per core)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per model (default 100)")
    parser.add_argument("--count", type=int, default=64, help="calibration images (default 64)")
    parser.add_argument("--skip-reference", action="store_true", help="leave out the 32 M-parameter reference model")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)

    if not DEFAULT_IMAGES.is_dir() or not DEFAULT_CALIBRATION_DIR.is_dir():
        print(f"skipped: needs {DEFAULT_IMAGES} and {DEFAULT_CALIBRATION_DIR} (see ../shared/data/README.md)")
        return 0
    images = spread_images(DEFAULT_IMAGES, 0)
    cpu = probe_provider("cpu").detail
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"FP32 vs INT8 on {cpu}; batch 1, intra-op threads {args.threads or 'one per core'}, "
          f"median of {max(1, args.runs // ROUND) * ROUND} runs each, interleaved; ab over {len(images)} CBSD68 "
          f"images; load average at start {load:.1f} (timings are only comparable within one run)")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        work = Path(tmp)
        makers = [lambda: embedded_candidate(work, args.embedded)]
        if not args.skip_reference:
            makers.append(lambda: reference_candidate(work))
        for make in makers:
            candidate = make()
            if isinstance(candidate, str):
                print(f"skipped: {candidate}")
                continue
            print(f"... {candidate.label}: quantizing and timing", flush=True)
            rows.append(bench_candidate(candidate, work, args.threads, args.runs, args.count, images))
            print(format_rows(rows[-1:]).splitlines()[-1], flush=True)
    print(format_rows(rows))
    print(f"targets: INT8 at least {TARGET_SPEEDUP:g}× faster than FP32; "
          f"ab cosine INT8 vs FP32 at least {TARGET_COSINE}")
    if any(r.random_weights for r in rows):
        print("note: rows marked 'random' have random weights; their ab cosine shows how quantization noise "
              "propagates through that architecture, not the colour accuracy of a trained model")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
