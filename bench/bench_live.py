"""Live latency benchmark: from a frame leaving an RTSP server to its colorized frame leaving the encoder.

    python bench/bench_live.py [--minutes 10] [--model FILE.onnx] [--config FILE.yaml]
                               [--transport tcp|udp] [--clip PATH] [--warmup-s 5]

Setup, all real: ``tests/rtsp_server.py`` (GstRtspServer, driven by Debian's python3) serves a
640×360 H.264 clip with its MP3 sound in real time: ``--clip`` (default chaplin.mp4) is remuxed,
looped, to the run's length first; with ``--camera`` it is first re-encoded without B-frames, as IP
cameras send (chaplin.mp4 has B-frames: a receiver must hold two frames, 80 ms, to reorder them). The server stamps each video frame with the wall-clock time it
leaves for the network (``identity sync=true`` right before the payloader). The ``colorize`` command
reads the stream for ``--minutes`` (``--duration``), with ``--config`` (default configs/live.yaml)
plus ``live.timing_log``, which gives each frame written with its output pts and the time its packet
left x264 and was muxed.

Per frame written: latency = written_at − the server's departure stamp of the frame with that pts
(output pts 0 is the stream's first frame). Frames in the first ``--warmup-s`` seconds (processes
starting, the model loading) are left out. Prints p50/p95/max for the run and for each minute (no
growth), frames written and dropped, input and output fps, and the resident memory of the stage
processes sampled every 5 s (first sample after warm-up against the last: memory flat). Target:
p95 ≤ 300 ms on the 2-core development machine with the embedded model (``models/default.onnx``);
without it (or ``--model``), a tiny model with the pipeline's contract is built here.
"""
from __future__ import annotations

import argparse
import bisect
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import DEFAULT_MODEL_PATH  # noqa: E402
from stream.process_tree import resident_bytes, tree_members  # noqa: E402

SHARED_VIDEO = REPO.parent / "shared" / "data" / "video"
SERVER = REPO / "tests" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
TICKS_PER_SECOND = 90_000
TARGET_P95_MS = 300.0
MEMORY_SAMPLE_S = 5.0


def looped_clip(clip: Path, seconds: float, target: Path) -> Path:
    """``clip``'s video and first audio track remuxed (no re-encoding) back to back until ``seconds``."""
    import av

    with av.open(str(clip)) as source:
        video = source.streams.video[0]
        pts = sorted(p.pts for p in source.demux(video) if p.pts is not None)
        loop_s = float((pts[-1] + (pts[1] - pts[0])) * video.time_base)
    with av.open(str(target), "w") as out:
        streams = {}
        for loop in range(int(np.ceil(seconds / loop_s)) + 1):
            with av.open(str(clip)) as source:
                chosen = [source.streams.video[0], *source.streams.audio[:1]]
                for stream in chosen:
                    if stream.type not in streams:
                        streams[stream.type] = out.add_stream_from_template(stream)
                for packet in source.demux(chosen):
                    if packet.dts is None or packet.pts is None:
                        continue
                    if packet.stream.type == "audio" and packet.pts * packet.time_base >= loop_s:
                        continue  # each loop's sound as long as its pictures
                    offset = round(loop * loop_s / packet.time_base)
                    packet.pts, packet.dts = packet.pts + offset, packet.dts + offset
                    packet.stream = streams[packet.stream.type]
                    out.mux(packet)
    return target


def camera_like(clip: Path, target: Path) -> Path:
    """``clip`` re-encoded the way IP cameras send H.264: no B-frames (so no reordering delay in the
    receiver), a keyframe every 2 s; the sound is copied."""
    import av

    with av.open(str(clip)) as source, av.open(str(target), "w") as out:
        video_in = source.streams.video[0]
        audio_in = source.streams.audio[0] if source.streams.audio else None
        video = out.add_stream("libx264", rate=video_in.average_rate)
        video.width, video.height, video.pix_fmt = video_in.width, video_in.height, "yuv420p"
        video.time_base = video_in.time_base
        video.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "20"}
        video.codec_context.gop_size = round(2 * float(video_in.average_rate))
        audio = out.add_stream_from_template(audio_in) if audio_in is not None else None
        for packet in source.demux([s for s in (video_in, audio_in) if s is not None]):
            if packet.stream is video_in:
                for frame in packet.decode():
                    frame.pict_type = 0
                    for encoded in video.encode(frame):
                        out.mux(encoded)
            elif packet.dts is not None:
                packet.stream = audio
                out.mux(packet)
        for encoded in video.encode(None):
            out.mux(encoded)
    return target


def tiny_model(path: Path) -> Path:
    from tests.conftest import build_ab_model

    return build_ab_model(path)


@dataclass
class Stamps:
    """The server's departures: video buffer pts (ns, sorted) → wall-clock seconds."""

    pts_ns: list[int]
    wall: list[float]

    @classmethod
    def read(cls, path: Path) -> "Stamps":
        pairs = sorted((int(pts), float(wall)) for pts, wall in (line.split() for line in path.read_text().splitlines()))
        return cls([p for p, _ in pairs], [w for _, w in pairs])

    def departure(self, pts_ns: int) -> float | None:
        """The departure of the buffer whose pts is nearest ``pts_ns`` (None if none within 1 ms)."""
        i = bisect.bisect_left(self.pts_ns, pts_ns)
        best = min((j for j in (i - 1, i) if 0 <= j < len(self.pts_ns)), key=lambda j: abs(self.pts_ns[j] - pts_ns))
        return self.wall[best] if abs(self.pts_ns[best] - pts_ns) <= 1_000_000 else None


def stage_rss_mb(root: int) -> dict[str, float]:
    """Resident memory (MB) of each ``cz-*`` process ``root`` started (through its fork server)."""
    found = {}
    for pid in tree_members(root):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if name.startswith("cz-"):
            found[f"{name}:{pid}"] = resident_bytes(pid) / 2**20
    return found


def percentiles(values_ms: list[float]) -> str:
    if not values_ms:
        return "no frames"
    array = np.array(values_ms)
    return (f"p50 {np.percentile(array, 50):6.1f} ms   p95 {np.percentile(array, 95):6.1f} ms   "
            f"max {array.max():7.1f} ms   ({len(array)} frames)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run (default 10)")
    parser.add_argument("--model", type=Path, help="ONNX model (default: the embedded model, else a tiny one)")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "live.yaml")
    parser.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    parser.add_argument("--clip", type=Path, default=SHARED_VIDEO / "chaplin.mp4")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--camera", action="store_true",
                        help="serve the clip re-encoded like an IP camera (no B-frames) instead of as it is")
    args = parser.parse_args(argv)
    if not Path(SYSTEM_PYTHON).exists() or not args.clip.exists():
        print(f"needs {SYSTEM_PYTHON} with GstRtspServer (see .ci/run) and {args.clip}", file=sys.stderr)
        return 2
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model or (DEFAULT_MODEL_PATH if DEFAULT_MODEL_PATH.is_file() else tiny_model(tmp / "tiny_ab.onnx"))
        clip = camera_like(args.clip, tmp / "camera.mp4") if args.camera else args.clip
        clip = looped_clip(clip, seconds + 30, tmp / "looped.mp4")
        timing, stamps_path, output = tmp / "timing.txt", tmp / "stamps.txt", tmp / "live.mp4"
        config = yaml.safe_load(args.config.read_text()) or {}
        config.setdefault("live", {})["timing_log"] = str(timing)
        config["live"].setdefault("source", {})["rtsp_transport"] = args.transport
        (tmp / "bench.yaml").write_text(yaml.safe_dump(config))
        server = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), "--file", str(clip), "--audio", "mp3",
                                   "--stamps", str(stamps_path)], stdout=subprocess.PIPE, text=True)
        port = int(server.stdout.readline().split()[1])
        print(f"model {model.name}, {args.minutes:g} min of {args.clip.name}{' (camera-like)' * args.camera} "
              f"over RTSP/{args.transport}, config {args.config.name}", flush=True)
        cli = subprocess.Popen([sys.executable, "-m", "stream.cli", f"rtsp://127.0.0.1:{port}/live", "-o", str(output),
                                "--model", str(model), "--config", str(tmp / "bench.yaml"), "--duration", f"{seconds:g}"],
                               cwd=REPO, stderr=subprocess.PIPE, text=True)
        memory: list[tuple[float, float]] = []
        started = time.monotonic()
        while cli.poll() is None:
            time.sleep(MEMORY_SAMPLE_S)
            rss = stage_rss_mb(cli.pid)
            if rss:
                memory.append((time.monotonic() - started, sum(rss.values())))
        stderr = cli.stderr.read()
        server.terminate()
        server.wait(10)
        if cli.returncode != 0:
            print(stderr, file=sys.stderr)
            return 1
        stamps = Stamps.read(stamps_path)
        rows = [line.split() for line in timing.read_text().splitlines()]
        first_pts_ns = stamps.pts_ns[0]
        per_frame = []  # (output seconds, latency ms)
        for _, pts, _, written_at in rows:
            departure = stamps.departure(first_pts_ns + int(pts) * 1_000_000_000 // TICKS_PER_SECOND)
            if departure is not None:
                per_frame.append((int(pts) / TICKS_PER_SECOND, 1000 * (float(written_at) - departure)))
    summary = stderr.strip().splitlines()[-1]
    dropped = int(re.search(r"live: dropped (\d+) frames", summary).group(1))
    measured = [(t, ms) for t, ms in per_frame if t >= args.warmup_s]
    print(summary)
    print(f"frames written {len(rows)}, dropped {dropped}; input {(len(rows) + dropped) / seconds:.1f} fps, "
          f"output {len(rows) / seconds:.1f} fps; matched to server stamps: {len(per_frame)}")
    print(f"added latency (server departure -> colorized frame out of the encoder), after {args.warmup_s:g} s warm-up:")
    print(f"  whole run   {percentiles([ms for _, ms in measured])}")
    for minute in range(int(np.ceil(seconds / 60))):
        window = [ms for t, ms in measured if minute * 60 <= t < (minute + 1) * 60]
        print(f"  minute {minute + 1:3d}  {percentiles(window)}")
    if memory:
        settled = [mb for t, mb in memory if t >= args.warmup_s + 10] or [mb for _, mb in memory]
        print(f"stage processes' memory: {settled[0]:.0f} MB after warm-up, {settled[-1]:.0f} MB at the end, "
              f"{max(settled):.0f} MB at most ({len(memory)} samples)")
    p95 = np.percentile([ms for _, ms in measured], 95) if measured else float("inf")
    print(f"target p95 <= {TARGET_P95_MS:.0f} ms: {'met' if p95 <= TARGET_P95_MS else 'NOT met'} ({p95:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
