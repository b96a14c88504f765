"""Soak benchmark: long runs back to back; memory, file descriptors and sockets must stay flat.

    python bench/bench_soak.py [--runs 5] [--clip PATH] [--model FILE.onnx] [--config FILE.yaml]

Runs the pipeline inside this process with :class:`stream.supervisor.Supervisor`, exactly as the
CLI sets it up, on ``one-by-one-person-detection.mp4`` (1,394 frames, 640×360) ``--runs`` times in
a row. After each run it prints the frames written, wall time and fps, then what the supervisor
process holds once the run is over: resident memory, open file descriptors (and how many are
sockets), threads, live descendant processes (from run 1 on: the fork server the stages come
from and multiprocessing's resource tracker), run folders left behind (the runs get a private
TMPDIR for this); and the peak resident memory
of the whole process tree (supervisor and stage processes) sampled every 50 ms during the run.

"Flat" means runs 2..N end holding what run 1 ended with (run 1 pays one-time imports and
allocations, and starts the fork server the stage processes come from): the same descriptors,
sockets, threads and children, and the last run no more than a few MB of memory above run 1 (a
leak accumulates; a bump after one run that is gone after the next is the allocator, not a leak,
and is shown apart); the last line says whether that held. The model is ``--model``, else a tiny model with the
pipeline's contract (what is measured is the pipeline's own memory and handles, not the model).
"""
from __future__ import annotations

import argparse
import gc
import multiprocessing.util
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.runtime import ColorModel, SessionSettings  # noqa: E402
from stream.cli import probe_video  # noqa: E402
from stream.config import load_config  # noqa: E402
from stream.process_tree import tree_members, tree_resident_bytes  # noqa: E402
from stream.stage import Job  # noqa: E402
from stream.supervisor import Supervisor  # noqa: E402

VIDEO_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "video"
DEFAULT_CLIP = VIDEO_DIR / "one-by-one-person-detection.mp4"
MEMORY_SLACK_MB = 8.0


@dataclass(frozen=True)
class Holdings:
    """What this process holds between runs."""

    rss_mb: float
    fds: int
    sockets: int
    threads: int
    children: int
    run_dirs: int


def holdings() -> Holdings:
    gc.collect()
    status = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    leftover = list(Path(tempfile.gettempdir()).glob("colorize-*"))
    return Holdings(rss_mb=int(fields["VmRSS"].split()[0]) / 1024, fds=len(links),
                    sockets=sum(link.startswith("socket:") for link in links),
                    threads=int(fields["Threads"]), children=len(tree_members(os.getpid())) - 1,
                    run_dirs=len(leftover))


def tree_rss_mb(root: int) -> float:
    """Resident MB of ``root`` and all its descendants."""
    return tree_resident_bytes(root) / 2**20


class PeakSampler(threading.Thread):
    """Samples the process tree's resident memory every 50 ms until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_mb = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak_mb = max(self.peak_mb, tree_rss_mb(os.getpid()))

    def stop(self) -> float:
        self.done.set()
        self.join()
        return self.peak_mb


def tiny_model(folder: Path) -> Path:
    from tests.conftest import build_ab_model

    return build_ab_model(folder / "tiny_ab.onnx")


def one_run(clip: Path, model: Path, config, workdir: Path, index: int) -> tuple[int, float, float]:
    """Colorize ``clip`` once; returns (frames written, wall seconds, peak tree MB)."""
    settings = SessionSettings(provider=config.inference.provider, device_id=config.inference.device_id,
                               intra_op_threads=1)
    probe = probe_video(str(clip), 0)
    output = workdir / f"soak-{index}.mp4"
    job = Job(input=str(clip), output_tmp=str(output), model=str(model), output_format="mp4",
              frame_rate=probe.frame_rate, model_input_size=ColorModel(model, settings).input_size,
              frame_bytes=probe.frame_bytes)
    sampler = PeakSampler()
    sampler.start()
    started = time.monotonic()
    try:
        report = Supervisor(job, config).run()
    finally:
        peak = sampler.stop()
    wall = time.monotonic() - started
    output.unlink(missing_ok=True)
    return report.frames_written, wall, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args(argv)
    if not args.clip.is_file():
        print(f"error: clip not found: {args.clip} (read ../shared/data/README.md)", file=sys.stderr)
        return 2
    config = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        workdir = Path(folder)
        private_tmp = workdir / "tmp"
        private_tmp.mkdir()
        multiprocessing.util.get_temp_dir()  # multiprocessing's own folder stays in TMPDIR: it outlives ours
        tempfile.tempdir = str(private_tmp)  # run folders land here, apart from other programs' runs
        model = args.model or tiny_model(workdir)
        print(f"clip {args.clip.name}, model {model.name}, {args.runs} runs, cpu cores {os.cpu_count()}")
        print(f"{'run':>3} {'frames':>6} {'wall s':>7} {'fps':>6} {'peak tree MB':>12} | after the run: "
              f"{'RSS MB':>7} {'fds':>4} {'sockets':>7} {'threads':>7} {'children':>8} {'run dirs':>8}")
        before = holdings()
        print(f"{'-':>3} {'':>6} {'':>7} {'':>6} {'':>12} | before:        {before.rss_mb:7.1f} {before.fds:4d} "
              f"{before.sockets:7d} {before.threads:7d} {before.children:8d} {before.run_dirs:8d}")
        after = []
        for index in range(1, args.runs + 1):
            frames, wall, peak = one_run(args.clip, model, config, workdir, index)
            held = holdings()
            after.append(held)
            print(f"{index:3d} {frames:6d} {wall:7.1f} {frames / wall:6.1f} {peak:12.0f} | "
                  f"{'':14} {held.rss_mb:7.1f} {held.fds:4d} {held.sockets:7d} {held.threads:7d} "
                  f"{held.children:8d} {held.run_dirs:8d}", flush=True)
    first, rest = after[0], after[1:]
    problems = []
    for held in rest:
        for name in ("fds", "sockets", "threads", "children", "run_dirs"):
            if getattr(held, name) != getattr(first, name):
                problems.append(f"{name} {getattr(first, name)} -> {getattr(held, name)}")
    growth = after[-1].rss_mb - first.rss_mb  # where memory ends up: a leak keeps it, a transient bump does not
    highest = max((held.rss_mb for held in rest), default=first.rss_mb) - first.rss_mb
    if growth > MEMORY_SLACK_MB:
        problems.append(f"RSS grew {growth:.1f} MB from run 1 to run {args.runs}")
    print(f"flat: {'yes' if not problems else 'NO: ' + '; '.join(problems)} "
          f"(RSS after run {args.runs}: {growth:+.1f} MB from run 1; highest after any run {highest:+.1f} MB)")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
