"""Large-frame memory benchmark: peak memory of a run on 8K frames, with and without the queue budget.

    python bench/bench_large_frames.py [--width 7680] [--height 4320] [--frames 12] [--model FILE.onnx]

Writes ``--frames`` frames of ``--width``×``--height`` (libx264, ultrafast), then colorizes them
with the real ``colorize`` command twice: with the default ``queue_memory_mb`` (256, so each link
queues one 100 MB frame per side) and with the budget lifted (``queue_memory_mb`` 1,000,000, so
each link queues ``queue_depth`` = 8 frames per side, as before the budget existed). For each it
prints wall time and the peak resident memory of the whole process tree (the CLI and its stage
processes), sampled every 50 ms, and each process's own peak. The encoder is the slowest stage,
so frames pile up in front of it: the difference is the memory the budget saves.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream.memory import link_depth, rgb_frame_bytes  # noqa: E402
from stream.process_tree import resident_bytes, tree_members  # noqa: E402


def write_frames(path: Path, width: int, height: int, frames: int) -> None:
    ramp = (np.add.outer(np.arange(height) // 8, np.arange(width) // 8) % 200 + 30).astype(np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30"}
        for index in range(frames):
            grey = np.roll(ramp, 8 * index, axis=1)
            frame = av.VideoFrame.from_ndarray(np.repeat(grey[:, :, None], 3, axis=2), format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def tree(root: int) -> dict[int, tuple[str, int]]:
    """pid → (name, resident bytes) for ``root`` and its descendants."""
    found = {}
    for pid in tree_members(root):
        try:
            with open(f"/proc/{pid}/comm") as handle:
                found[pid] = (handle.read().strip(), resident_bytes(pid))
        except OSError:
            continue
    return found


def measure(source: Path, model: Path, config: Path, folder: Path) -> tuple[int, float, float, dict[str, float]]:
    """Run the CLI; returns (exit code, wall s, peak tree MB, peak MB per process name)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(folder))
    started = time.monotonic()
    cli = subprocess.Popen([sys.executable, "-m", "stream.cli", str(source), "-o", str(folder / "out.mp4"),
                            "--model", str(model), "--config", str(config), "-q"], cwd=REPO, env=env,
                           stdin=subprocess.DEVNULL)
    peak, per_name = 0, {}
    while cli.poll() is None:
        members = tree(cli.pid)
        peak = max(peak, sum(resident for _, resident in members.values()))
        for name, resident in members.values():
            per_name[name] = max(per_name.get(name, 0), resident)
        time.sleep(0.05)
    return cli.returncode, time.monotonic() - started, peak / 2**20, {k: v / 2**20 for k, v in per_name.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=7680)
    parser.add_argument("--height", type=int, default=4320)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--model", type=Path)
    args = parser.parse_args(argv)
    frame_mb = rgb_frame_bytes(args.width, args.height) / 2**20
    with tempfile.TemporaryDirectory(prefix="large-frames-") as name:
        folder = Path(name)
        source = folder / "large.mp4"
        write_frames(source, args.width, args.height, args.frames)
        if args.model is None:
            from tests.conftest import build_ab_model

            model = build_ab_model(folder / "tiny_ab.onnx")
        else:
            model = args.model
        print(f"{args.frames} frames of {args.width}×{args.height} ({frame_mb:.0f} MB each as RGB), "
              f"cpu cores {os.cpu_count()}")
        for label, budget in (("budget 256 MB", 256), ("no budget", 1_000_000)):
            config = folder / f"{budget}.yaml"
            config.write_text(f"queue_memory_mb: {budget}\nencoder: {{preset: ultrafast}}\n")
            depth = link_depth(8, rgb_frame_bytes(args.width, args.height), budget)
            code, wall, peak, per_name = measure(source, model, config, folder)
            stages = ", ".join(f"{name} {mb:.0f}" for name, mb in sorted(per_name.items()))
            print(f"{label:>14}: queue depth {depth} per side, exit {code}, {wall:.0f} s, "
                  f"peak tree {peak:.0f} MB ({stages})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
