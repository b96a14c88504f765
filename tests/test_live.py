"""Live sources and outputs, end to end: a real RTSP server (GstRtspServer, tests/rtsp_server.py),
the real ``colorize`` CLI with its four processes, a real relay for publishing (rtsp-server-perl),
and the preview page loaded in headless Chromium."""
from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from stages.live_source import FrameGate, LiveFrame, Timeline
from stream.config import ConfigError, load_config
from tests.conftest import REPO, BackgroundCli, run_cli, shared_file, video_facts

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = REPO / "tests" / "rtsp_server.py"
CHROMIUM = "/usr/bin/chromium"
RELAY = shutil.which("rtsp-server-perl")
LIVE_SUMMARY = re.compile(r"; live: dropped (\d+) frames, latency p50 (\d+) ms, p95 (\d+) ms")


def gst_rtsp_missing() -> str | None:
    """Why a GstRtspServer cannot run here, or None."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (Debian's python3 drives GstRtspServer)"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True, text=True)
    if probe.returncode != 0:
        return ("GstRtspServer not installed (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                "gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)")
    return None


@pytest.fixture(scope="session")
def gst_available() -> None:
    reason = gst_rtsp_missing()
    if reason:
        pytest.skip(reason)


class RtspServer:
    """tests/rtsp_server.py as a subprocess serving ``media`` on rtsp://127.0.0.1:PORT/live."""

    def __init__(self, media: Path, audio: str, port: int = 0):
        self.media, self.audio, self.port = media, audio, port
        self.process: subprocess.Popen | None = None

    def start(self) -> "RtspServer":
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(SERVER_SCRIPT), "--file", str(self.media),
                                         "--audio", self.audio, "--port", str(self.port)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("ready "):
            self.process.kill()
            raise AssertionError(f"RTSP server did not start: {line!r} {self.process.stderr.read()}")
        self.port = int(line.split()[1])
        return self

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def chaplin_server(gst_available):
    server = RtspServer(shared_file("video", "chaplin.mp4"), "mp3").start()
    yield server
    server.stop()


def wait_for_frames(path: Path, frames: int, timeout: float = 60) -> None:
    """Wait until the (fragmented) output being written holds at least ``frames`` decodable frames."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0 and decodable_frames(path) >= frames:
            return
        time.sleep(0.3)
    raise AssertionError(f"{path} never reached {frames} frames")


def decodable_frames(path: Path) -> int:
    import av
    try:
        with av.open(str(path)) as container:
            return sum(1 for _ in container.decode(video=0))
    except (av.error.FFmpegError, IndexError):
        return 0


def audio_seconds(path: Path) -> float:
    import av
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
        return sum(f.samples for f in frames) / frames[0].sample_rate


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "live.yaml"
    path.write_text(text)
    return path


def test_an_rtsp_stream_is_colorized_with_its_audio(tmp_path, chaplin_server, ab_model):
    """(a) every frame of the served film (nothing dropped with drop: none), its sound, and colour."""
    output = tmp_path / "live chaplin.mp4"
    config = config_file(tmp_path, "live:\n  drop: none\n  source:\n    on_end: stop\n")
    result = run_cli(chaplin_server.url, "-o", output, "--model", ab_model, "--config", config,
                     timeout=120, tmpdir=tmp_path)
    assert result.returncode == 0, result.stderr
    got, original = video_facts(output), video_facts(shared_file("video", "chaplin.mp4"))
    assert got.frames == original.frames == 241
    assert (got.codec, got.width, got.height) == ("h264", 640, 360)
    assert all(b > a for a, b in zip(got.pts, got.pts[1:]))
    assert abs(got.duration_s - original.duration_s) < 0.2
    assert got.audio_codecs == ["aac"]
    assert abs(audio_seconds(output) - original.duration_s) < 0.3
    assert original.mean_chroma < 1.0 and got.mean_chroma > 5.0
    summary = LIVE_SUMMARY.search(result.last_error_line)
    assert result.last_error_line.startswith("241 frames in ") and summary, result.stderr
    assert summary.group(1) == "0"


def test_a_widescreen_pal_stream_keeps_its_pixel_aspect(tmp_path, gst_available, ab_model):
    """A 720×576 camera or DVB feed with 64:45 pixels (16:9) must not come out with square pixels."""
    source = tmp_path / "anamorphic.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=720x576:rate=25:duration=4",
                    "-f", "lavfi", "-i", "sine=duration=4", "-vf", "setsar=64/45", "-c:v", "libx264", "-c:a", "aac",
                    str(source)], check=True)
    server = RtspServer(source, "aac").start()
    try:
        config = config_file(tmp_path, "live:\n  source:\n    on_end: stop\n")
        output = tmp_path / "out.mp4"
        result = run_cli(server.url, "-o", output, "--model", ab_model, "--config", config, timeout=120, tmpdir=tmp_path)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    import av
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (720, 576)
        assert stream.sample_aspect_ratio == Fraction(64, 45)


def test_the_source_going_away_reconnects_then_ends_cleanly_after_the_limit(tmp_path, gst_available, ab_model):
    """(b) over UDP, a 30 s clip with AAC sound: the server stops mid-stream and comes back: the same
    output continues after a gap; then it stays away longer than the limit: the run ends with a
    clear line and a playable file."""
    server = RtspServer(shared_file("video", "car-detection.mp4"), "aac").start()
    output = tmp_path / "reconnected.mkv"
    config = config_file(tmp_path, "live:\n  source:\n    rtsp_transport: udp\n"
                                   "  reconnect:\n    limit_s: 5\n    backoff_initial_s: 0.2\n    backoff_max_s: 0.5\n")
    cli = BackgroundCli(server.url, "-o", output, "--model", ab_model, "--config", config, tmpdir=tmp_path)
    try:
        wait_for_frames(output, 3)
        server.stop()
        cli.wait_for(r"^source lost \(.*\); reconnecting for up to 5 s$")
        time.sleep(0.5)
        server.start()
        back = cli.wait_for(r"^source back after a ([\d.]+) s gap \((\d+) attempts?\); "
                                 r"the output continues at ([\d.]+) s$")
        before_gap = decodable_frames(output)
        wait_for_frames(output, before_gap + 3)
        server.stop()
        code = cli.finish(90)
    finally:
        cli.kill()
        server.stop()
    assert code == 1, cli.lines
    match = re.fullmatch(rf"source lost: {re.escape(server.url)} did not come back within 5 s "
                         rf"\((\d+) attempts; last error: Connection refused\); "
                         rf"the output has the (\d+) frames written: {re.escape(str(output))}", cli.lines[-1])
    assert match, cli.lines
    facts = video_facts(output)
    assert facts.frames == int(match.group(2)) >= before_gap + 3
    assert (facts.width, facts.height) == (768, 432)
    seconds = np.array(facts.pts) * facts.time_base
    steps = np.diff(seconds)
    assert (steps > 0).all(), "timestamps must keep increasing across the gap"
    gap, resumed_at = float(back.group(1)), float(back.group(3))
    first_after_gap = int(np.argmin(np.abs(seconds - resumed_at)))
    assert abs(seconds[first_after_gap] - resumed_at) <= 0.01, "the first frame after the gap is where the log says"
    assert steps[first_after_gap - 1] >= gap - 0.01 >= 0.5
    assert facts.audio_codecs == ["aac"]
    assert abs(audio_seconds(output) - seconds[-1]) < 0.5, "the sound runs as long as the pictures, gap included"


@pytest.mark.skipif(RELAY is None, reason="rtsp-server-perl not installed (apt-get install rtsp-server-perl)")
def test_the_colorized_stream_is_published_to_an_rtsp_server_and_read_back(tmp_path, chaplin_server, ab_model):
    """(c) -o rtsp://relay/...: the relay (rtsp-server-perl, UDP) serves what we publish to a viewer."""
    import av
    import cv2

    source_port, viewer_port = free_port(), free_port()
    relay = subprocess.Popen([RELAY, "--serverport", str(source_port), "--clientport", str(viewer_port),
                              "--source_listen_address", "127.0.0.1", "--client_listen_address", "127.0.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = config_file(tmp_path, "live:\n  output:\n    publish_rtsp_transport: udp\n")
    cli = None
    try:
        wait_for_port(source_port)
        cli = BackgroundCli(chaplin_server.url, "-o", f"rtsp://127.0.0.1:{source_port}/colour", "--model", ab_model,
                      "--config", config, "--duration", "8", tmpdir=tmp_path)
        viewer, frames, chroma = None, 0, []
        deadline = time.monotonic() + 60
        while viewer is None and time.monotonic() < deadline and cli.process.poll() is None:
            try:
                viewer = av.open(f"rtsp://127.0.0.1:{viewer_port}/colour", timeout=(2, 3),
                                 options={"rtsp_transport": "udp", "analyzeduration": "100000"})
            except av.error.FFmpegError:
                time.sleep(0.2)
        assert viewer is not None, cli.lines
        assert [s.codec_context.name for s in viewer.streams] == ["h264", "aac"]
        try:
            for frame in viewer.decode(video=0):
                frames += 1
                if frames > 3 and frames % 5:
                    continue
                rgb = frame.to_ndarray(format="rgb24").astype(np.float32) / 255
                chroma.append(float(np.hypot(*cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 1:].transpose(2, 0, 1)).mean()))
        except av.error.FFmpegError:
            pass  # the publisher left: the relay closes the session
        viewer.close()
        assert cli.finish(90) == 0, cli.lines
    finally:
        if cli is not None:
            cli.kill()
        relay.terminate()
        relay.wait(10)
    written = int(re.match(r"(\d+) frames in .* -> rtsp://", cli.lines[-1]).group(1))
    assert written >= 3 and frames >= 1, (frames, cli.lines)
    assert np.mean(chroma) > 5.0, "the viewer sees the colorized stream"


def test_preview_page_shows_the_colorized_stream_and_ctrl_c_keeps_the_normal_output(tmp_path, chaplin_server, ab_model):
    """The --preview page in headless Chromium receives frames and figures; Ctrl-C then ends the
    run normally: the output keeps its own name (no .partial) and plays."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    output = tmp_path / "previewed.mp4"
    cli = BackgroundCli(chaplin_server.url, "-o", output, "--model", ab_model, "--preview", "127.0.0.1:0", tmpdir=tmp_path)
    try:
        url = cli.wait_for(r"^preview: (http://127\.0\.0\.1:\d+/)$").group(1)
        wait_for_frames(output, 5)
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                              "--no-first-run", "--disable-background-networking", "--disable-component-update",
                              "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
                              "--virtual-time-budget=3000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=60).stdout
        assert 'data-frame="640x360"' in dom, dom
        assert re.search(r'id="input_fps">[1-9][\d.]*<', dom) and re.search(r'id="latency_ms">[\d.]+<', dom), dom
        with urllib.request.urlopen(url + "frame.jpg", timeout=10) as reply:
            assert reply.headers["Content-Type"] == "image/jpeg"
            jpeg = reply.read()
        cli.process.send_signal(signal.SIGINT)
        code = cli.finish(90)
    finally:
        cli.kill()
    assert code == 0, cli.lines
    assert colourfulness(jpeg) > 5.0
    assert not list(tmp_path.glob("*.partial*"))
    written = int(re.match(r"(\d+) frames in ", cli.lines[-1]).group(1))
    assert video_facts(output).frames == written > 5


def colourfulness(jpeg: bytes) -> float:
    import cv2
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    return float(np.hypot(lab[..., 1], lab[..., 2]).mean())


def test_a_slow_pipeline_drops_frames_and_latency_stays_bounded(tmp_path, chaplin_server, ab_model):
    """Inference held back (each frame waits 150 ms for a batch that never fills) against a 25 fps
    source: frames are dropped, counted and shown, and none waits behind a backlog. With one frame in
    flight, the frame written k-th arrived after frame k-2 was written: its latency is at most two
    passes through the pipeline, however slow the machine (a backlog would break this at once)."""
    output, timing = tmp_path / "dropping.mkv", tmp_path / "timing.txt"
    config = config_file(tmp_path, "inference:\n  batch_size: 8\n  batch_timeout_ms: 150\n"
                                   f"live:\n  drop: oldest\n  max_in_flight: 1\n  timing_log: {timing}\n")
    result = run_cli(chaplin_server.url, "-o", output, "--model", ab_model, "--config", config,
                     "--duration", "6", timeout=120, tmpdir=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = LIVE_SUMMARY.search(result.last_error_line)
    assert summary, result.stderr
    written, dropped = int(re.match(r"(\d+) frames in ", result.last_error_line).group(1)), int(summary.group(1))
    facts = video_facts(output)
    assert facts.frames == written >= 3 and dropped > written and written + dropped <= 6 * 25 + 2
    assert facts.pts[-1] * facts.time_base <= 6.0, "no frame after --duration (to the 1 ms of the mkv clock)"
    rows = [line.split() for line in timing.read_text().splitlines()]
    assert [int(seq) for seq, *_ in rows] == list(range(written))
    arrived = [float(row[2]) for row in rows]
    done = [float(row[3]) for row in rows]
    assert all(done[k] - arrived[k] >= 0.15 for k in range(written)), "each frame waited for its batch"
    assert all(arrived[k] >= done[k - 2] - 0.01 for k in range(2, written)), list(zip(arrived, done))


def test_killing_the_process_leaves_playable_segments(tmp_path, chaplin_server, ab_model):
    """Segmented fragmented MP4: SIGKILL mid-run leaves files that each play."""
    output = tmp_path / "cut.mp4"
    config = config_file(tmp_path, "live:\n  output:\n    segment_s: 1\n    keyframe_interval_s: 1\n")
    cli = BackgroundCli(chaplin_server.url, "-o", output, "--model", ab_model, "--config", config, tmpdir=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("cut-*.mp4"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        cli.process.send_signal(signal.SIGKILL)
        cli.finish(90)
    finally:
        cli.kill()
    segments = sorted(tmp_path.glob("cut-*.mp4"))
    assert [p.name for p in segments[:3]] == ["cut-00000.mp4", "cut-00001.mp4", "cut-00002.mp4"]
    assert not output.exists()
    for segment in segments[:-1]:
        facts = video_facts(segment)
        assert facts.frames > 0 and facts.pts[0] == 0 and facts.mean_chroma > 5.0, segment
    assert decodable_frames(segments[-1]) >= 0

    again = run_cli(chaplin_server.url, "-o", output, "--model", ab_model, "--config", config, timeout=60,
                    tmpdir=tmp_path)
    assert (again.returncode, again.stderr) == (2, f"error: output exists: {segments[0]} (-y replaces it, -n keeps "
                                                   "it and skips the run)\n")
    before = {p: p.stat().st_mtime_ns for p in segments}
    kept = run_cli(chaplin_server.url, "-o", output, "--model", ab_model, "--config", config, "-n", timeout=60,
                   tmpdir=tmp_path)
    assert (kept.returncode, kept.stderr) == (0, f"{segments[0]} exists: kept, nothing done (-n)\n")
    assert {p: p.stat().st_mtime_ns for p in sorted(tmp_path.glob("cut-*.mp4"))} == before
    replaced = run_cli(chaplin_server.url, "-o", output, "--model", ab_model, "--config", config, "-y",
                       "--duration", "1.5", "-q", timeout=120, tmpdir=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    now = sorted(tmp_path.glob("cut-*.mp4"))
    assert now and all(p not in before or p.stat().st_mtime_ns != before[p] for p in now), \
        "a segment of the earlier recording was left beside the new ones"


def test_a_source_that_cannot_be_reached_is_one_clear_line_exit_2(tmp_path, ab_model):
    url = f"rtsp://127.0.0.1:{free_port()}/nothing"
    result = run_cli(url, "-o", tmp_path / "out.mp4", "--model", ab_model, timeout=60, tmpdir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: cannot open input {url}: Connection refused"]
    assert list(tmp_path.glob("out*")) == []


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_a_server_that_takes_the_connection_and_never_answers_is_one_clear_line_exit_2(tmp_path, ab_model, scheme):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"{scheme}://127.0.0.1:{silent.getsockname()[1]}/camera"
        config = tmp_path / "quick.yaml"
        config.write_text("live:\n  source:\n    open_timeout_s: 2\n")
        result = run_cli(url, "-o", tmp_path / "out.mp4", "--model", ab_model, "--config", config, timeout=60,
                         tmpdir=tmp_path)
    assert (result.returncode, result.stderr) == (2, f"error: cannot open input {url}: no answer within 2 s\n")
    assert list(tmp_path.glob("out*")) == []


@pytest.mark.parametrize("args, message", [
    (("--preview", "8080"), "error: --preview is for live runs (a network input such as rtsp://... "
                            "or a stream output such as -o rtsp://...)"),
])
def test_live_options_on_a_file_run_are_refused(tmp_path, ab_model, args, message):
    source = shared_file("video", "test_video.mp4")
    result = run_cli(source, "-o", tmp_path / "out.mp4", "--model", ab_model, *args, timeout=60)
    assert (result.returncode, result.stderr.strip()) == (2, message)


@pytest.mark.parametrize("args, message", [
    (("--preview", "localhost:http"), "error: --preview: expected HOST:PORT or PORT (port 0..65535), got 'localhost:http'"),
    (("--duration", "0"), "error: --duration must be more than 0 seconds, got 0"),
    (("--duration", "soon"), "error: --duration: expected seconds or [HH:]MM:SS[.ms], found 'soon'"),
    (("--start", "10"), "error: --start is for files: a live source is colorized from now"),
])
def test_bad_live_options_are_one_clear_line(tmp_path, ab_model, args, message):
    result = run_cli("rtsp://127.0.0.1:9/x", "-o", tmp_path / "out.mp4", "--model", ab_model, *args, timeout=60)
    assert (result.returncode, result.stderr.strip()) == (2, message)


def test_live_config_is_validated_and_documented(tmp_path):
    assert load_config(REPO / "configs" / "live.yaml").live.source.rtsp_transport in ("tcp", "udp")
    bad = config_file(tmp_path, "live:\n  reconnect:\n    backoff_initial_s: 2\n    backoff_max_s: 1\n")
    with pytest.raises(ConfigError, match=r":4: live\.reconnect\.backoff_max_s: expected at least backoff_initial_s$"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r":2: live\.drop: expected one of oldest, newest, none, found 'some'$"):
        load_config(config_file(tmp_path, "live:\n  drop: some\n"))


def test_the_timeline_keeps_increasing_across_a_reconnect_and_shows_the_gap():
    timeline = Timeline()
    assert timeline.begin(source_ticks=900_000, wall=100.0) is None
    first = [timeline.place(900_000 + i * 3600, 100.0 + i * 0.04) for i in range(3)]
    assert first == [0, 3600, 7200]
    gap = timeline.begin(source_ticks=0, wall=102.08)  # the new connection's clock restarts at 0
    assert gap == pytest.approx(2.0)
    assert timeline.place(0, 102.08) == 7200 + 180_000


@pytest.mark.parametrize("policy, kept, dropped", [("oldest", [3], 2), ("newest", [1], 2)])
def test_the_frame_gate_drops_by_policy(policy, kept, dropped):
    gate = FrameGate(policy, capacity=1)
    for ticks in (1, 2, 3):
        gate.put(LiveFrame(frame=None, ticks=ticks, arrived_at=0.0))
    assert [gate.take(0).ticks] == kept and gate.dropped == dropped and gate.take(0) is None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def test_the_first_frame_after_a_gap_keeps_its_mark_when_frames_are_dropped():
    """The first frame of a new connection is flagged (a scene cut for temporal smoothing); if the
    gate drops it, the next frame kept carries the flag instead."""
    oldest = FrameGate("oldest", capacity=1)
    oldest.put(LiveFrame(frame=None, ticks=1, arrived_at=0.0, after_gap=True))
    oldest.put(LiveFrame(frame=None, ticks=2, arrived_at=0.0))
    kept = oldest.take(0)
    assert (kept.ticks, kept.after_gap, oldest.dropped) == (2, True, 1)
    newest = FrameGate("newest", capacity=1)
    newest.put(LiveFrame(frame=None, ticks=1, arrived_at=0.0))
    newest.put(LiveFrame(frame=None, ticks=2, arrived_at=0.0, after_gap=True))
    first = newest.take(0)
    newest.put(LiveFrame(frame=None, ticks=3, arrived_at=0.0))
    second = newest.take(0)
    assert [(first.ticks, first.after_gap), (second.ticks, second.after_gap)] == [(1, False), (3, True)]


def test_credentials_in_urls_are_never_shown(tmp_path):
    from stages.live_source import redact_url

    result = run_cli("rtsp://operator:hunter2@127.0.0.1:9/stream", "-o", tmp_path / "out.mp4", timeout=60)
    assert result.returncode == 2
    assert result.stderr == "error: cannot open input rtsp://operator:***@127.0.0.1:9/stream: Connection refused\n"
    assert "hunter2" not in result.stdout + result.stderr
    assert redact_url("srt://relay:9000?mode=caller&passphrase=s3cret") == "srt://relay:9000?mode=caller&passphrase=***"
    assert redact_url("rtmp://u:p@server/live/key") == "rtmp://u:***@server/live/key"
    assert redact_url("rtsp://camera.local/stream") == "rtsp://camera.local/stream"
    assert redact_url("/films/reel 1.mp4") == "/films/reel 1.mp4"


def test_the_preview_serves_a_bounded_number_of_viewers_and_drops_idle_connections(tmp_path):
    """300 half-open connections once held 300 threads: now at most MAX_CLIENTS are served, the rest
    get 503 at once, and idle ones are closed after IDLE_TIMEOUT_S, after which a viewer gets the page."""
    import threading
    import urllib.error

    from stream.live.preview import IDLE_TIMEOUT_S, MAX_CLIENTS, PreviewServer

    server = PreviewServer("127.0.0.1", 0, f"ipc://{tmp_path}/preview.sock", figures=dict,
                           source="rtsp://camera/stream").start()
    host, port = server.address
    idle = []
    try:
        for _ in range(MAX_CLIENTS + 40):
            idle.append(socket.create_connection((host, port), timeout=5))
        time.sleep(1.0)
        serving = [t for t in threading.enumerate() if "process_request_thread" in t.name]
        assert len(serving) <= MAX_CLIENTS
        answers = []
        for sock in idle:  # the served ones stay silent (they wait for a request), the others got 503
            sock.settimeout(0.05)
            try:
                answers.append(sock.recv(200))
            except TimeoutError:
                answers.append(None)
        assert sum(a is not None and a.startswith(b"HTTP/1.0 503") for a in answers) >= 40
        assert sum(a is None for a in answers) <= MAX_CLIENTS
        with pytest.raises(urllib.error.HTTPError) as busy:
            urllib.request.urlopen(f"http://{host}:{port}/", timeout=5)
        assert busy.value.code == 503
        time.sleep(IDLE_TIMEOUT_S + 1.0)
        assert [t for t in threading.enumerate() if "process_request_thread" in t.name] == []
        page = urllib.request.urlopen(f"http://{host}:{port}/", timeout=5).read().decode()
        assert "rtsp://camera/stream" in page
    finally:
        for sock in idle:
            sock.close()
        server.stop()
