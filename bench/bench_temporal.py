"""Benchmark of temporal smoothing: flicker, quality and cost on the real clips, and scene-cut correctness.

    python bench/bench_temporal.py [--model models/default.onnx] [--frames 150] [--json bench/out/temporal.json]
                                   [--samples bench/out/temporal]

For each clip of ``../shared/data/video`` (desaturated first: the colorizer sees only lightness) the
first ``--frames`` frames are colorized per frame and with :class:`stages.temporal.TemporalSmoother`
(default :class:`stages.temporal.TemporalConfig`, or the options given), and compared:

* flicker per-frame → temporal and its reduction (target: ≥ 50 % lower);
* PSNR change against the original colour (target: ≥ −0.2 dB; clips without colour: n/a);
* smoother cost in ms/frame and in % of the colorization path (model input, inference, merge), measured
  in the loop (where onnxruntime's spinning threads compete with it) and alone (best of 3 passes);
  the target is ≤ 10 % of end-to-end, i.e. ~2–3 ms/frame at the pipeline's 15–30 fps;
* on two clips joined (a hard cut), whether the smoother drops its history at the cut: the colour
  right after the cut must be the new prediction (ab gap to per-frame ≈ 0), and no false cuts elsewhere.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import DEFAULT_MODEL_PATH  # noqa: E402
from models.evaluate_video import (SideBySideWriter, VideoQualityReport, desaturate,  # noqa: E402
                                   evaluate_frames, read_video)
from models.runtime import ColorModel  # noqa: E402
from stages.lab import lightness_code  # noqa: E402
from stages.temporal import TemporalSmoother  # noqa: E402
from stream.config import TemporalConfig  # noqa: E402

VIDEO_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "video"
CLIPS = ("test_video.mp4", "video_with_failing_audio.mp4", "car-detection.mp4", "bottle-detection.mp4",
         "one-by-one-person-detection.mp4", "big_buck_bunny_0_30.webm", "chaplin.mp4")
JOINED = ("video_with_failing_audio.mp4", "bottle-detection.mp4")
TARGET_REDUCTION_PCT = 50.0
TARGET_PSNR_DELTA_DB = -0.2
TARGET_OVERHEAD_PCT = 10.0


def joined_frames(first: Path, second: Path, frames_each: int):
    """The first ``frames_each`` frames of ``first`` then of ``second`` (resized to the first's size)."""
    head, _ = read_video(first, frames_each)
    head = list(head)
    height, width = head[0].shape[:2]
    tail, _ = read_video(second, frames_each)
    tail = [f if f.shape[:2] == (height, width) else cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA)
            for f in tail]
    return head + tail, len(head)


def standalone_smoother_ms(path: Path, frames: int, config: TemporalConfig, passes: int = 3) -> float:
    """ms/frame of the smoother alone (no inference running beside it) over a clip's gray frames (as the
    lightness the encoder receives), best of
    ``passes``; predictions are zeros (the cost does not depend on their values)."""
    lightness = [lightness_code(desaturate(f)) for f in read_video(path, frames)[0]]
    ab = np.zeros((2, 56, 56), np.float32)
    smoother, best = TemporalSmoother(config), math.inf
    for _ in range(passes):
        smoother.reset()
        started = time.perf_counter()
        for frame in lightness:
            smoother.update(frame, ab)
        best = min(best, (time.perf_counter() - started) / len(lightness))
    return 1000.0 * best


def cut_figures(report: VideoQualityReport, cut_index: int) -> dict:
    """Scene-cut correctness: was the cut detected, ab gap (temporal vs per-frame) at and after it, false cuts."""
    gaps = [f.ab_gap for f in report.frames]
    return {"cut_index": cut_index, "detected": cut_index in report.scene_cuts,
            "false_cuts": [i for i in report.scene_cuts if i != cut_index],
            "ab_gap_at_cut": gaps[cut_index],
            "ab_gap_before_cut": float(np.nanmean(gaps[max(1, cut_index - 10):cut_index])),
            "ab_gap_cut_plus_1_to_3": float(np.nanmean(gaps[cut_index + 1:cut_index + 4]))}


def row(name: str, report: VideoQualityReport) -> str:
    def cell(value: float, spec: str) -> str:
        return "n/a" if value is None or not math.isfinite(value) else format(value, spec)
    dpsnr = report.temporal.psnr_db - report.per_frame.psnr_db
    reduction, overhead = report.flicker_reduction_pct, report.smoother_overhead_pct
    verdict = [reduction >= TARGET_REDUCTION_PCT, not math.isfinite(dpsnr) or dpsnr >= TARGET_PSNR_DELTA_DB,
               overhead <= TARGET_OVERHEAD_PCT]
    return (f"{name:<34} {report.frame_count:>5}  {cell(report.per_frame.flicker, '.3f'):>7} → "
            f"{cell(report.temporal.flicker, '.3f'):<7} {cell(reduction, '5.1f'):>6} %  "
            f"{cell(report.per_frame.psnr_db, '.2f'):>6} {cell(dpsnr, '+.3f'):>7}  "
            f"{cell(report.smoother_seconds_per_frame * 1000, '.2f'):>5} ms {cell(overhead, '4.1f'):>5} %  "
            f"{len(report.scene_cuts):>4}  {' '.join('ok' if v else 'MISS' for v in verdict)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH,
                        help="ONNX model (default: models/default.onnx)")
    parser.add_argument("--frames", type=int, default=150, help="frames per clip (default 150)")
    parser.add_argument("--videos", type=Path, default=VIDEO_DIR, help=f"clip folder (default {VIDEO_DIR})")
    parser.add_argument("--json", type=Path, help="write all reports as JSON")
    parser.add_argument("--samples", type=Path, help="folder for side-by-side MP4s (per-frame | temporal)")
    for f in dataclasses.fields(TemporalConfig):
        if f.name != "enabled":
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"error: model not found: {args.model} (give --model PATH)", file=sys.stderr)
        return 2
    if not args.videos.is_dir():
        print(f"error: clip folder not found: {args.videos}", file=sys.stderr)
        return 2
    config = TemporalConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TemporalConfig)
                               if f.name != "enabled"})
    model = ColorModel(args.model)
    print(f"model {args.model}, {args.frames} frames per clip, {config}")
    print(f"{'clip':<34} {'frames':>5}  {'flicker per-frame → temporal':>24}  {'PSNR':>6} {'ΔPSNR':>7}  "
          f"{'smoother (in loop)':>14}  cuts  targets (flicker, PSNR, cost)")
    reports: dict[str, dict] = {}
    reductions, deltas, overheads = [], [], []
    for clip in CLIPS:
        path = args.videos / clip
        if not path.is_file():
            print(f"{clip:<34} missing, skipped")
            continue
        frames, rate = read_video(path, args.frames)
        sample = (SideBySideWriter(args.samples / f"{path.stem}.mp4", rate, ["per-frame", "temporal"])
                  if args.samples else None)
        try:
            report = evaluate_frames(model, frames, config, name=str(path), sample=sample)
        finally:
            if sample is not None:
                sample.close()
        alone_ms = standalone_smoother_ms(path, args.frames, config)
        print(row(clip, report) + f"  (alone {alone_ms:.2f} ms)", flush=True)
        reports[clip] = {**report.to_json(), "smoother_alone_ms_per_frame": alone_ms}
        reductions.append(report.flicker_reduction_pct)
        overheads.append(report.smoother_overhead_pct)
        if report.has_colour:
            deltas.append(report.temporal.psnr_db - report.per_frame.psnr_db)

    first, second = (args.videos / name for name in JOINED)
    if first.is_file() and second.is_file():
        frames, cut_index = joined_frames(first, second, args.frames // 2)
        report = evaluate_frames(model, iter(frames), config, name=f"{first.name} + {second.name}")
        name = f"joined ({first.stem[:12]}+{second.stem[:12]})"
        print(row(name, report))
        cut = cut_figures(report, cut_index)
        print(f"scene cut at frame {cut_index}: {'detected' if cut['detected'] else 'NOT DETECTED'}; "
              f"ab gap temporal vs per-frame at the cut {cut['ab_gap_at_cut']:.3f} (0 = no carried colour), "
              f"next 3 frames {cut['ab_gap_cut_plus_1_to_3']:.2f}, 10 frames before {cut['ab_gap_before_cut']:.2f}; "
              f"false cuts: {cut['false_cuts'] or 'none'}")
        reports["joined"] = {**report.to_json(), "cut": cut}
    if reductions:
        mean_delta, min_delta = (np.mean(deltas), np.min(deltas)) if deltas else (math.nan, math.nan)
        print(f"mean over clips: flicker {np.mean(reductions):.1f} % lower (min {np.min(reductions):.1f}), "
              f"ΔPSNR {mean_delta:+.3f} dB (min {min_delta:+.3f}), "
              f"smoother {np.mean(overheads):.1f} % of the colorization path")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(reports, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
