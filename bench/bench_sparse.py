"""Sparse inference, measured honestly: colour quality, flicker and speed for the model on every k-th frame.

    python bench/bench_sparse.py [--model FILE.onnx] [--frames 150] [--ks 1 2 4] [--skip-speed]

Quality: each shared colour clip (the first ``--frames`` frames, desaturated so the colorizer sees
only lightness; chaplin.mp4 has no colour to compare with and is left out) is colorized as the
pipeline does it, with temporal smoothing, for each k of ``--ks``
(:func:`models.evaluate_video.evaluate_frames` with ``every_nth_frame``: the same
:class:`stages.temporal.ModelCadence` and flow carry as the stages). Printed per k, averaged over
the clips: PSNR against the original colour, plain and rebalanced AuC of the ab error, and flicker
(motion-compensated ab change between frames).

Speed: the real pipeline (defaults, ``auto`` fitted as ``colorize`` does, audio off) on the first
800 frames of the 640×360 ``bottle-detection.mp4`` and on a 240-frame 1920×1080 copy of it, for
each k, interleaved over ``--repeat`` runs; fps end to end (best run).

Rule for the default (issue: "only if quality holds"): k becomes the default only where PSNR is
within 0.2 dB of k = 1 and plain AuC within 0.2 points, on the mean over the clips; the verdict is
printed.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_speed import SOURCE, scaled_copy  # noqa: E402
from bench_throughput import VIDEO_DIR, no_audio, run_pipeline, trimmed  # noqa: E402
from models import DEFAULT_MODEL_PATH  # noqa: E402
from models.evaluate_video import evaluate_frames, read_video  # noqa: E402
from models.runtime import ColorModel  # noqa: E402
from stream.config import PipelineConfig, TemporalConfig  # noqa: E402

COLOUR_CLIPS = ("test_video.mp4", "video_with_failing_audio.mp4", "car-detection.mp4", "bottle-detection.mp4",
                "one-by-one-person-detection.mp4", "big_buck_bunny_0_30.webm")
PSNR_TOLERANCE_DB = 0.2
AUC_TOLERANCE = 0.2


def quality(model: ColorModel, frames: int, k: int) -> dict[str, float]:
    rows = []
    for name in COLOUR_CLIPS:
        path = VIDEO_DIR / name
        if not path.exists():
            continue
        clip, _ = read_video(path, frames)
        report = evaluate_frames(model, clip, TemporalConfig(), name=name, has_colour=True, every_nth_frame=k)
        rows.append(report)
    if not rows:
        raise SystemExit(f"no shared colour clips in {VIDEO_DIR} (read ../shared/data/README.md)")

    def mean(get) -> float:
        values = [get(r) for r in rows]
        return sum(values) / len(values)

    return {"clips": len(rows), "psnr": mean(lambda r: r.temporal.psnr_db), "auc": mean(lambda r: r.temporal.auc_pct),
            "rb_auc": mean(lambda r: r.temporal.auc_rebalanced_pct), "flicker": mean(lambda r: r.temporal.flicker)}


def with_every(config: PipelineConfig, k: int) -> PipelineConfig:
    return dataclasses.replace(config, inference=dataclasses.replace(config.inference, every_nth_frame=k))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args(argv)
    model = ColorModel(args.model)
    ks = sorted(set(args.ks) | {1})
    figures = {k: quality(model, args.frames, k) for k in ks}
    speed: dict[tuple[int, str], float] = {}
    if not args.skip_speed:
        with tempfile.TemporaryDirectory(prefix="bench-sparse-") as scratch:
            work = Path(scratch)
            clips = {"640×360": trimmed(SOURCE, 800, work),
                     "1920×1080": scaled_copy(SOURCE, 1920, 1080, 240, work / "clip-1080p.mp4")}
            base = no_audio(PipelineConfig())
            for _ in range(args.repeat):
                for size, clip in clips.items():
                    for k in ks:
                        fps = run_pipeline(clip, args.model, work / "out.mp4", with_every(base, k)).fps
                        speed[(k, size)] = max(speed.get((k, size), 0.0), fps)
    base = figures[1]
    print(f"\nsparse inference, {args.model.name}, {base['clips']} desaturated colour clips × {args.frames} frames "
          "(temporal smoothing on); fps: real pipeline, defaults, best of "
          f"{args.repeat} runs")
    sizes = sorted({size for _, size in speed}, key=len)
    print("| " + " | ".join(["k", "PSNR dB", "Δ PSNR", "AuC %", "Δ AuC", "rebalanced AuC %", "flicker",
                             *(f"{size} fps" for size in sizes)]) + " |")
    print("|---" * (7 + len(sizes)) + "|")
    verdicts = []
    for k in ks:
        f = figures[k]
        holds = f["psnr"] >= base["psnr"] - PSNR_TOLERANCE_DB and f["auc"] >= base["auc"] - AUC_TOLERANCE
        if k > 1:
            verdicts.append(f"k = {k}: {'quality holds' if holds else 'quality does not hold'}")
        cells = [str(k), f"{f['psnr']:.2f}", f"{f['psnr'] - base['psnr']:+.2f}", f"{f['auc']:.2f}",
                 f"{f['auc'] - base['auc']:+.2f}", f"{f['rb_auc']:.2f}", f"{f['flicker']:.3f}"]
        cells += [f"{speed.get((k, size), math.nan):.1f}" for size in sizes]
        print("| " + " | ".join(cells) + " |")
    print(f"default rule: within {PSNR_TOLERANCE_DB} dB PSNR and {AUC_TOLERANCE} AuC points of k = 1 → "
          + "; ".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
