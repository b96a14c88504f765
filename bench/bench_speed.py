"""Speed table: what a user gets from each way of running, against the FFmpeg-alone floor, in one sitting.

    python bench/bench_speed.py [--repeat 3] [--frames-360p 800] [--frames-1080p 240] [--model FILE.onnx]
                                [--skip-int8] [--skip-memory]

Clips: the first ``--frames-360p`` frames of the shared 640×360 ``bottle-detection.mp4`` (copied
without re-encoding), and the same clip scaled to 1920×1080 (``--frames-1080p`` frames, libx264
veryfast CRF 20, made here in a temporary folder), both 8-bit 4:2:0 H.264 like most real video.

Rows, each run ``--repeat`` times on each clip, interleaved (run 1 of every row, then run 2...), so
a disturbance on the shared machine spreads over all rows instead of hitting one:

* sequential loop (FP32): decode → RGB → Lab → model → merge → RGB → yuv420p → x264 in one
  process, every library on its own default threads: how the sample apps run
  (``bench_throughput.run_sequential``);
* ``colorize`` with no ``--config`` and no ``--model``: the defaults, ``auto`` values fitted to this
  machine and input (:func:`stream.observe.tune.fit_to_machine`) and the embedded model's twin that
  ``inference.precision: auto`` picks here (INT8 on CPUs with VNNI), as the command does;
* ``colorize --config configs/throughput.yaml``: the hand-tuned file;
* the same with the embedded model's INT8 twin (``colorize quantize``'s defaults; ``--skip-int8``);
* FFmpeg alone: decode → libx264 veryfast, no colour (PyAV, the same libraries and threads): the floor
  no colorizer can beat.

Figures are frames per second end to end (process start-up included) as the range over the runs,
with each row's best run over the FFmpeg-alone best and over the sequential loop's best. Audio is
off everywhere. Then the peak memory (RSS and PSS of the whole process tree) of a default run per
frame size: 360p, 1080p and 4K (a 48-frame 3840×2160 copy; ``--skip-memory``). Pause anything
else running on the machine while this runs: the figures are only comparable within one sitting.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import VIDEO_DIR, no_audio, run_pipeline, run_sequential, trimmed  # noqa: E402
from models import DEFAULT_MODEL_PATH, embedded_model  # noqa: E402
from stream.config import PROJECT_ROOT, PipelineConfig, load_config  # noqa: E402

THROUGHPUT_CONFIG = PROJECT_ROOT / "configs" / "throughput.yaml"
SOURCE = VIDEO_DIR / "bottle-detection.mp4"


def scaled_copy(source: Path, width: int, height: int, frames: int, target: Path) -> Path:
    """The first ``frames`` frames of ``source`` scaled to ``width``×``height`` (bicubic), as 8-bit
    4:2:0 H.264 (veryfast, CRF 20) with the source's timestamps."""
    import av

    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        video = src.streams.video[0]
        stream = out.add_stream("libx264", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = video.time_base
        stream.options = {"preset": "veryfast", "crf": "20"}
        for index, frame in enumerate(src.decode(video)):
            if index >= frames:
                break
            scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
            scaled.pts, scaled.time_base = frame.pts, frame.time_base
            for packet in stream.encode(scaled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return target


def ffmpeg_alone(source: Path, output: Path, preset: str = "veryfast", crf: int = 18) -> float:
    """Frames per second of decode → libx264 with no colour work (each library's own threads)."""
    import av

    started = time.perf_counter()
    frames = 0
    with av.open(str(source)) as src, av.open(str(output), "w") as out:
        video = src.streams.video[0]
        video.thread_type = "AUTO"
        stream = out.add_stream("libx264", rate=Fraction(video.average_rate or 25).limit_denominator(100_000))
        stream.width, stream.height, stream.pix_fmt = video.codec_context.width, video.codec_context.height, "yuv420p"
        stream.time_base = video.time_base
        stream.codec_context.time_base = video.time_base
        stream.options = {"preset": preset, "crf": str(crf)}
        for frame in src.decode(video):
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in stream.encode(frame):
                out.mux(packet)
            frames += 1
        for packet in stream.encode(None):
            out.mux(packet)
    return frames / (time.perf_counter() - started)


def int8_twin(model: Path, folder: Path) -> Path:
    from models.quantize import DEFAULT_CALIBRATION_DIR, quantize_model

    target = folder / f"{model.stem}-int8.onnx"
    quantize_model(model, target, DEFAULT_CALIBRATION_DIR)
    return target


def fps_range(values: list[float]) -> str:
    return f"{min(values):.1f}–{max(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frames-360p", type=int, default=800)
    parser.add_argument("--frames-1080p", type=int, default=240)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH,
                        help="the float model of every row but the defaults' (default: the embedded model)")
    parser.add_argument("--skip-int8", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)
    if not SOURCE.exists():
        print(f"shared clip not found: {SOURCE} (read ../shared/data/README.md)", file=sys.stderr)
        return 2
    cores = len(os.sched_getaffinity(0))
    defaults = no_audio(PipelineConfig())
    default_model = embedded_model(defaults.inference.provider, defaults.inference.precision)
    tuned = no_audio(load_config(THROUGHPUT_CONFIG))
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as scratch:
        work = Path(scratch)
        clips = {"640×360": trimmed(SOURCE, args.frames_360p, work),
                 "1920×1080": scaled_copy(SOURCE, 1920, 1080, args.frames_1080p, work / "clip-1080p.mp4")}
        int8 = None if args.skip_int8 else int8_twin(args.model, work)
        rows: dict[str, object] = {
            "sequential loop (FP32, sample-app style)":
                lambda clip, out: run_sequential(clip, args.model, out, defaults).fps,
            f"colorize, defaults ({default_model.name}, auto)":
                lambda clip, out: run_pipeline(clip, default_model, out, defaults).fps,
            "colorize --config configs/throughput.yaml":
                lambda clip, out: run_pipeline(clip, args.model, out, tuned).fps,
        }
        if int8 is not None:
            rows["same, INT8 twin (colorize quantize)"] = lambda clip, out: run_pipeline(clip, int8, out, tuned).fps
        rows["FFmpeg alone: decode → x264 veryfast (floor)"] = lambda clip, out: ffmpeg_alone(clip, out)
        figures = {(row, size): [] for row in rows for size in clips}
        for run in range(args.repeat):
            for size, clip in clips.items():
                for row, measure in rows.items():
                    output = work / "out.mp4"
                    figures[(row, size)].append(measure(clip, output))
                    output.unlink(missing_ok=True)
                    print(f"run {run + 1}/{args.repeat} {size:>9} {row}: {figures[(row, size)][-1]:.1f} fps",
                          file=sys.stderr, flush=True)
        floor_row, seq_row = list(rows)[-1], list(rows)[0]
        print(f"\nfps end to end, range over {args.repeat} runs; × = best run over the best of FFmpeg alone / "
              f"of the sequential loop ({cores} cores, {args.model.name})")
        header = "| | " + " | ".join(f"{size} fps | × floor | × loop" for size in clips) + " |"
        print(header)
        print("|---" * (1 + 3 * len(clips)) + "|")
        for row in rows:
            cells = []
            for size in clips:
                values = figures[(row, size)]
                best = max(values)
                cells += [fps_range(values), f"{best / max(figures[(floor_row, size)]):.2f}",
                          f"{best / max(figures[(seq_row, size)]):.2f}"]
            print(f"| {row} | " + " | ".join(cells) + " |")
        if not args.skip_memory:
            clips["3840×2160"] = scaled_copy(SOURCE, 3840, 2160, 48, work / "clip-4k.mp4")
            print("\npeak memory of a default run (whole process tree)")
            print("| frame size | RSS MiB | PSS MiB | processes |")
            print("|---|---|---|---|")
            for size, clip in clips.items():
                result = run_pipeline(clip, default_model, work / "mem.mp4", defaults)
                print(f"| {size} | {result.peak_rss_mib:.0f} | {result.peak_pss_mib:.0f} | {result.processes} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
