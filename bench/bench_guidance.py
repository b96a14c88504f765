"""Colour by example, measured: automatic colour against one keyframe per shot and against a reference.

    python bench/bench_guidance.py [--frames 150] [--strength 1.0]

Each shared colour clip (its first ``--frames`` frames) is desaturated and cut into shots where the
temporal smoother sees a cut. Three ways of colorizing it with the real ``colorize`` command:

* automatic: no guidance;
* keyframes: ``--keyframe`` at the first frame of every shot, the image being the original's frame;
* reference: each shot on its own (``--start``/``--duration``) with ``--reference`` that same frame.

Against the original colour, per clip and then averaged over the clips: PSNR (RGB, mean over the
frames), plain AuC of the per-pixel ab error (thresholds 0–150), the colour cast |mean a* − the
original's| and |mean b* − the original's| per shot (the worst shot of each clip, then the mean),
and flicker (motion-compensated ab change between frames, :class:`models.evaluate_video.FlickerMeter`).
Targets (issue): keyframes ≥ 3 dB above automatic with the cast within 1.5; reference cast within 2;
flicker no higher than automatic.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.evaluate import ab_error, ab_error_auc  # noqa: E402
from models.evaluate_video import FlickerMeter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VIDEO_DIR = REPO.parent / "shared" / "data" / "video"
CLIPS = ("test_video.mp4", "video_with_failing_audio.mp4", "car-detection.mp4", "bottle-detection.mp4",
         "one-by-one-person-detection.mp4", "big_buck_bunny_0_30.webm")
MODES = ("automatic", "keyframes", "reference")


def frames_of(path: Path) -> tuple[list[np.ndarray], float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)], rate


def shot_starts(frames: list[np.ndarray]) -> list[int]:
    """First frame of each shot: where the temporal smoother's cut score passes its threshold."""
    from stages.lab import lightness_code
    from stages.temporal import TemporalSmoother
    from stream.config import TemporalConfig

    config = TemporalConfig()
    tracker, starts = TemporalSmoother(config), [0]
    for index, rgb in enumerate(frames):
        motion = tracker.track(lightness_code(rgb))
        if index and motion is not None and motion[2] > config.scene_cut_threshold and index - starts[-1] > 5:
            starts.append(index)
    return starts


def colorize(*args) -> None:
    subprocess.run([sys.executable, "-m", "stream.cli", *map(str, args), "-y", "-q"], check=True, cwd=REPO,
                   stdin=subprocess.DEVNULL)


def lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)


def scores(original: list[np.ndarray], output: list[np.ndarray], starts: list[int]) -> dict[str, float]:
    psnrs, errors, casts_a, casts_b = [], [], [], []
    meter = FlickerMeter()
    bounds = [*starts, len(original)]
    for shot in range(len(starts)):
        da, db = [], []
        for index in range(bounds[shot], bounds[shot + 1]):
            truth, made = lab(original[index]), lab(output[index])
            mse = float(np.square(original[index].astype(np.float32) - output[index].astype(np.float32)).mean())
            psnrs.append(10 * math.log10(255 ** 2 / max(mse, 1e-6)))
            errors.append(ab_error(made[..., 1:][::4, ::4], truth[..., 1:][::4, ::4]))
            da.append(made[..., 1].mean() - truth[..., 1].mean())
            db.append(made[..., 2].mean() - truth[..., 2].mean())
            small = cv2.resize(made, (160, round(160 * made.shape[0] / made.shape[1])), interpolation=cv2.INTER_AREA)
            meter.pair(cv2.resize(truth[..., 0], small.shape[1::-1], interpolation=cv2.INTER_AREA))
            meter.change("out", small)
        casts_a.append(abs(float(np.mean(da))))
        casts_b.append(abs(float(np.mean(db))))
    return {"psnr": float(np.mean(psnrs)), "auc": 100 * ab_error_auc(np.concatenate([e.ravel() for e in errors])),
            "cast_a": max(casts_a), "cast_b": max(casts_b), "flicker": meter.mean("out")}


def run_clip(name: str, frames: int, strength: float, work: Path) -> dict[str, dict[str, float]] | None:
    source = VIDEO_DIR / name
    if not source.exists():
        return None
    folder = work / Path(name).stem
    folder.mkdir()
    original_path, grey = folder / "original.mp4", folder / "grey.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), "-frames:v", str(frames), "-an",
                    "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", str(original_path)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(original_path), "-vf", "hue=s=0",
                    "-c:v", "libx264", "-crf", "12", str(grey)], check=True)
    original, rate = frames_of(original_path)
    starts = shot_starts(original)
    keys = []
    for start in starts:
        path = folder / f"shot{start}.png"
        cv2.imwrite(str(path), cv2.cvtColor(original[start], cv2.COLOR_RGB2BGR))
        keys.append(path)
    outputs = {}
    colorize(grey, "-o", folder / "automatic.mp4")
    outputs["automatic"] = frames_of(folder / "automatic.mp4")[0]
    colorize(grey, "-o", folder / "keyframes.mp4", *[a for s, k in zip(starts, keys) for a in ("--keyframe", f"{s}={k}")])
    outputs["keyframes"] = frames_of(folder / "keyframes.mp4")[0]
    shots = []
    bounds = [*starts, len(original)]
    for shot, (start, key) in enumerate(zip(starts, keys)):
        part = folder / f"reference{shot}.mp4"
        colorize(grey, "-o", part, "--start", f"{start / rate:.6f}", "--duration", f"{(bounds[shot + 1] - start) / rate:.6f}",
                 "--reference", key, "--reference-strength", strength)
        shots += frames_of(part)[0][:bounds[shot + 1] - start]
    outputs["reference"] = shots
    count = min(len(original), *(len(v) for v in outputs.values()))
    return {mode: scores(original[:count], outputs[mode][:count], [s for s in starts if s < count]) for mode in MODES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--strength", type=float, default=1.0, help="--reference-strength for the reference runs")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-guidance-") as folder:
        for name in CLIPS:
            figures = run_clip(name, args.frames, args.strength, Path(folder))
            if figures is not None:
                results[name] = figures
                print(name, "; ".join(f"{mode}: PSNR {f['psnr']:.2f}, cast {f['cast_a']:.2f}/{f['cast_b']:.2f}"
                                      for mode, f in figures.items()), flush=True)
    if not results:
        print(f"no shared colour clips in {VIDEO_DIR} (read ../shared/data/README.md)", file=sys.stderr)
        return 2
    print(f"\n{len(results)} clips, first {args.frames} frames each; per-shot cast: worst shot of each clip, mean over clips")
    print("| mode | PSNR dB | plain AuC % | cast |Δa*| | cast |Δb*| | flicker |")
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        mean = {key: float(np.mean([r[mode][key] for r in results.values()]))
                for key in ("psnr", "auc", "cast_a", "cast_b", "flicker")}
        print(f"| {mode} | {mean['psnr']:.2f} | {mean['auc']:.2f} | {mean['cast_a']:.2f} | {mean['cast_b']:.2f} | "
              f"{mean['flicker']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
