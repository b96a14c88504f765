"""Batch figures: one pipeline against segment-parallel batch jobs on a long film, and what resuming costs.

    python bench/bench_batch.py [--minutes 10] [--segment-s 120] [--jobs 1 2]

The film: the shared 640×360 ``bottle-detection.mp4`` desaturated and looped to ``--minutes``
minutes (libx264 veryfast, a keyframe at most every 250 frames as x264 places them by default,
AAC sound from a sine), made once in a temporary folder. Rows, each from a cold start of the command:

* ``colorize FILM -o OUT``: one pipeline over the whole film;
* ``colorize batch FILM -o DIR --jobs N`` for each N: segments of ``--segment-s`` seconds, N
  pipelines side by side, the join at the end included;

each with frames per second end to end and the peak RSS and PSS of the whole process tree.
Then resuming: a ``--jobs 1`` batch is killed with SIGKILL once half its segments are done and the
same command is run again: the time from the restart to the first bytes of a new piece (the first
frames of new work written), the pieces reused, the frames done twice (those of the segment in
flight at the kill), and the restarted run's wall time. Pause anything else running on the machine.
"""
from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_throughput import MemorySampler  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO.parent / "shared" / "data" / "video" / "bottle-detection.mp4"


def make_film(minutes: float, path: Path) -> int:
    """The looped, desaturated film; its frame count."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(SOURCE), "-f", "lavfi",
                    "-i", "sine=frequency=330", "-t", str(minutes * 60), "-map", "0:v", "-map", "1:a",
                    "-vf", "hue=s=0", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
                    "-c:a", "aac", str(path)], check=True)
    import av

    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size)


def timed(command: list[str]) -> tuple[float, MemorySampler]:
    """Run ``colorize COMMAND`` to its end: wall seconds and the memory sampler."""
    start = time.monotonic()
    with MemorySampler() as memory:
        subprocess.run([sys.executable, "-m", "stream.cli", *command], check=True, cwd=REPO,
                       stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start, memory


def pieces(outdir: Path) -> list[tuple[int, int]]:
    database = outdir / ".colorize-batch" / "job.sqlite"
    try:
        with sqlite3.connect(database, timeout=10) as connection:
            return connection.execute("SELECT idx, frames FROM pieces").fetchall()
    except sqlite3.OperationalError:
        return []


def resume_figures(film: Path, outdir: Path, segment_s: float) -> dict:
    """Kill a --jobs 1 batch at half its segments, start it again: see the module's docstring."""
    from batch.segments import plan_segments, warmup_frames
    from stream.config import PipelineConfig

    plan = plan_segments(str(film), segment_s, warmup_frames(PipelineConfig()))
    half = len(plan.segments) // 2
    command = [sys.executable, "-m", "stream.cli", "batch", str(film), "-o", str(outdir), "--jobs", "1",
               "--segment-s", str(segment_s), "-q"]
    job = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(pieces(outdir)) < half:
        time.sleep(0.1)
    job.send_signal(signal.SIGKILL)
    job.wait()
    done_at_kill = pieces(outdir)
    started = time.monotonic()
    again = subprocess.Popen(command, cwd=REPO, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_bytes = None
    folder = outdir / ".colorize-batch" / "pieces"
    while again.poll() is None:
        if first_bytes is None and any(p.stat().st_size > 0 for p in folder.rglob(".*.part.mp4") if p.exists()):
            first_bytes = time.monotonic() - started
        time.sleep(0.02)
    wall = time.monotonic() - started
    stderr = again.stderr.read()
    in_flight = plan.segments[len(done_at_kill)] if len(done_at_kill) < len(plan.segments) else None
    return {"segments": len(plan.segments), "reused": len(done_at_kill), "first_new_bytes_s": first_bytes,
            "lost_frames_at_most": in_flight.frames if in_flight else 0, "restart_wall_s": wall,
            "summary": stderr.strip().splitlines()[-2:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--segment-s", type=float, default=120.0)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    if not SOURCE.exists():
        print(f"needs {SOURCE} (read ../shared/data/README.md)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        work = Path(folder)
        film = work / "film.mp4"
        frames = make_film(args.minutes, film)
        print(f"film: {args.minutes:g} min, {frames} frames, 640×360, segments of {args.segment_s:g} s")
        print("| run | wall s | fps | peak RSS MiB | peak PSS MiB |")
        print("|---|---|---|---|---|")
        rows = [("colorize FILM (one pipeline)", ["-q", str(film), "-o", str(work / "one.mp4"), "-y"])]
        rows += [(f"colorize batch --jobs {n}", ["batch", str(film), "-o", str(work / f"jobs{n}"), "--jobs", str(n),
                                                 "--segment-s", str(args.segment_s), "-q"]) for n in args.jobs]
        for name, command in rows:
            wall, memory = timed(command)
            print(f"| {name} | {wall:.1f} | {frames / wall:.1f} | {memory.peak_rss:.0f} | {memory.peak_pss:.0f} |",
                  flush=True)
        resume = resume_figures(film, work / "resume", args.segment_s)
        first = resume["first_new_bytes_s"]
        print(f"\nresume after SIGKILL at {resume['reused']} of {resume['segments']} segments: "
              f"{resume['reused']} pieces reused, first bytes of new work "
              f"{'n/a' if first is None else f'{first:.1f} s'} after the restart, at most "
              f"{resume['lost_frames_at_most']} frames done twice (the segment in flight), restarted run "
              f"{resume['restart_wall_s']:.1f} s; {' / '.join(resume['summary'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
