"""Reliability: nothing lost, nothing hung, under faults and hostile input.

Every end-to-end test runs the real ``colorize`` command (four processes, real PyAV, real ZeroMQ)
on small inputs made here with PyAV and NumPy, and checks what the user sees: the exit code, the
exact stderr lines, frame counts, timestamps, sizes, and which files are left behind.
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stages.lab import full_lightness
from stream.accounting import FrameAccount, clock, ended_early_warning
from stream.memory import link_depth, rgb_frame_bytes
from stream.process_tree import tree_resident_bytes
from tests.conftest import REPO, cli_env, shared_file, video_facts

SUMMARY = re.compile(r"^(\d+) frames in [\d.]+ s \([\d.]+ fps\) -> .*; busy: .*; "
                     r"frames: (\d+) decoded = (\d+) written \+ (\d+) dropped(; (\d+) undecodable packets skipped)?")


# ---------------------------------------------------------------------------------------------
# Inputs made here


@dataclass(frozen=True)
class VideoSpec:
    """One video stream to write: a grey picture that moves, so every frame differs.

    ``pts`` (in ``time_base`` units) gives irregular timestamps; ``noise`` makes every frame fresh
    random noise (large packets that do not compress); ``level`` shifts the brightness.
    """

    frames: int = 20
    width: int = 64
    height: int = 48
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    rate: int = 25
    gop: int = 8
    pts: tuple[int, ...] | None = None
    time_base: Fraction | None = None
    rotation: int = 0
    noise: bool = False
    level: int = 0


def picture(spec: VideoSpec, index: int) -> np.ndarray:
    """Frame ``index`` of ``spec`` as grey RGB uint8."""
    if spec.noise:
        grey = np.random.default_rng(index).integers(0, 256, (spec.height, spec.width), dtype=np.uint8)
    else:
        ramp = np.add.outer(np.arange(spec.height) * 2, np.arange(spec.width) * 3)
        grey = np.clip((ramp + 5 * index) % 200 + 20 + spec.level, 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def write_video(path: Path, *specs: VideoSpec, audio: bool = False, options: dict | None = None) -> Path:
    """Write one container with a video stream per spec (frames interleaved) and optional AAC audio."""
    with av.open(str(path), "w", options=options or {}) as out:
        streams = []
        for spec in specs:
            stream = out.add_stream(spec.codec, rate=spec.rate)
            stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, spec.pix_fmt
            if spec.codec == "libx264":
                stream.codec_context.gop_size = spec.gop
                stream.options = {"preset": "ultrafast", "crf": "18"}
            if spec.time_base is not None:
                stream.time_base = spec.time_base
                stream.codec_context.time_base = spec.time_base
            if spec.rotation:
                stream.set_display_rotation(spec.rotation)
            streams.append(stream)
        sound = out.add_stream("aac", rate=48000) if audio else None
        longest = max(spec.frames for spec in specs)
        for index in range(longest):
            for spec, stream in zip(specs, streams):
                if index < spec.frames:
                    frame = av.VideoFrame.from_ndarray(picture(spec, index), format="rgb24")
                    frame.pts = spec.pts[index] if spec.pts else index
                    if spec.time_base is not None:
                        frame.time_base = spec.time_base
                    out.mux(stream.encode(frame))
        for stream in streams:
            out.mux(stream.encode(None))
        if sound is not None:
            write_tone(out, sound, seconds=longest / specs[0].rate)
    return path


def write_tone(out, stream, seconds: float) -> None:
    rate, chunk = 48000, 1024
    t = np.arange(int(rate * seconds)) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, len(samples), chunk):
        part = samples[start:start + chunk]
        frame = av.AudioFrame.from_ndarray(np.tile(part, (2, 1)), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        write_tone(out, out.add_stream("aac", rate=48000), seconds=1.0)
    return path


@dataclass(frozen=True)
class Decoded:
    """What PyAV decodes from a file's first video stream (any damage skipped, like the pipeline)."""

    seconds: list[float]
    rotation: int
    width: int
    height: int
    pix_fmt: str
    lightness: list[np.ndarray]


def decode_all(path: Path, stream_index: int = 0) -> Decoded:
    seconds, lightness, rotation = [], [], 0
    with av.open(str(path)) as container:
        stream = container.streams.video[stream_index]
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue
            for frame in frames:
                seconds.append(float(frame.pts * stream.time_base))
                lightness.append(full_lightness(frame.to_ndarray(format="rgb24")))
                rotation = int(frame.rotation or 0)
        context = stream.codec_context
        return Decoded(seconds, rotation, context.width, context.height, context.pix_fmt, lightness)


# ---------------------------------------------------------------------------------------------
# Running the command


@dataclass
class Outcome:
    returncode: int
    lines: list[str]

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.lines if line.startswith("warning:")]


def colorize(*args, run_tmp: Path, timeout: float = 120, file_size_limit: int | None = None) -> Outcome:
    """Run ``colorize ARGS`` as a real process; ``file_size_limit`` sets its RLIMIT_FSIZE (bytes)."""
    def limit() -> None:
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    done = subprocess.run([sys.executable, "-m", "stream.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=cli_env(run_tmp), stdin=subprocess.DEVNULL,
                          preexec_fn=limit)
    assert "Traceback" not in done.stderr, done.stderr
    return Outcome(done.returncode, [line for line in done.stderr.splitlines() if line.strip()])


def leftovers(folder: Path) -> list[str]:
    """Temporary outputs and partial files a run left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if ".colorize-" in p.name or ".partial." in p.name)


def run_dirs(run_tmp: Path) -> list[str]:
    return [p.name for p in run_tmp.iterdir() if p.name.startswith("colorize-")]


def summary(outcome: Outcome) -> re.Match:
    match = SUMMARY.match(outcome.lines[-1]) if outcome.lines else None
    assert match, outcome.lines
    return match


# ---------------------------------------------------------------------------------------------
# Frame accounting


def test_a_clip_that_ends_before_the_pipeline_warms_up_loses_no_frame(tmp_path, run_tmp, ab_model):
    """The decoder finishes a short clip long before the others; with one-frame queues its last
    frames and the end of stream are still in flight when it is done. None may be lost (they
    used to be, and the run then hung forever)."""
    source = write_video(tmp_path / "short.mkv", VideoSpec(frames=20))
    config = tmp_path / "tight.yaml"
    config.write_text("preprocessor: {queue_depth: 1}\ninference: {queue_depth: 1}\nencoder: {queue_depth: 1}\n")
    output = tmp_path / "short colour.mp4"
    outcome = colorize(source, "-o", output, "--model", ab_model, "--config", config, run_tmp=run_tmp, timeout=90)
    assert outcome.returncode == 0, outcome.lines
    assert outcome.lines[-1].endswith("; frames: 20 decoded = 20 written + 0 dropped"), outcome.lines
    assert decode_all(output).seconds == decode_all(source).seconds
    assert leftovers(tmp_path) == [] and run_dirs(run_tmp) == []


def damage_packets(source: Path, target: Path, packets: range, seed: int = 3) -> Path:
    """A copy of ``source`` with random bytes over the start (the NAL unit lengths) of some video packets."""
    with av.open(str(source)) as container:
        offsets = [packet.pos for packet in container.demux(video=0) if packet.size]
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(seed)
    for index in packets:
        data[offsets[index]:offsets[index] + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    target.write_bytes(bytes(data))
    return target


def test_corrupt_packets_in_the_middle_are_skipped_with_a_warning_and_counted(tmp_path, run_tmp, ab_model):
    clean = write_video(tmp_path / "clean.mp4", VideoSpec(frames=48, width=96, height=64, noise=True, gop=8))
    source = damage_packets(clean, tmp_path / "damaged.mp4", range(20, 23))
    output = tmp_path / "repaired.mp4"
    outcome = colorize(source, "-o", output, "--model", ab_model, run_tmp=run_tmp)
    assert outcome.returncode == 0, outcome.lines
    noticed = re.fullmatch(rf"warning: 3 video packets of {re.escape(str(source))} could not be decoded and were "
                           r"skipped \(damaged input\?\), the first noticed at 0:00:00\.(\d\d)", outcome.warnings[0])
    assert noticed and 80 <= int(noticed.group(1)) <= 96, outcome.warnings
    assert outcome.lines[-1].endswith("; frames: 45 decoded = 45 written + 0 dropped; "
                                      "3 undecodable packets skipped"), outcome.lines
    got, original = decode_all(output).seconds, decode_all(clean).seconds
    assert got == original[:20] + original[23:], "the frames that decode keep their own timestamps"
    assert leftovers(tmp_path) == []


def test_a_truncated_file_gives_the_frames_that_exist_and_says_where_it_ended(tmp_path, run_tmp, ab_model):
    whole = write_video(tmp_path / "whole.mkv", VideoSpec(frames=75, noise=True))
    source = tmp_path / "cut.mkv"
    source.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    existing = decode_all(source).seconds
    assert 10 < len(existing) < 75
    output = tmp_path / "cut.mp4"
    outcome = colorize(source, "-o", output, "--model", ab_model, run_tmp=run_tmp)
    assert outcome.returncode == 0, outcome.lines
    ended = re.fullmatch(rf"warning: {re.escape(str(source))} ended at (\S+) of the 0:00:03.00 its header announces "
                         r"\(truncated or damaged file\?\); the frames up to there were colorized", outcome.warnings[-1])
    assert ended, outcome.lines
    assert decode_all(output).seconds == existing
    assert summary(outcome).group(1) == str(len(existing))


def test_the_frame_account_balances_and_names_what_it_cannot_know():
    assert FrameAccount(decoded=96, written=96, dropped=0).lost == 0
    assert FrameAccount(decoded=96, written=90, dropped=6).describe() == "frames: 96 decoded = 90 written + 6 dropped"
    assert FrameAccount(decoded=96, written=94, dropped=0).lost == 2
    assert FrameAccount(decoded=None, written=94, dropped=0).describe().startswith("frames: ? decoded")
    assert clock(3725.5) == "1:02:05.50"
    assert ended_early_warning("a.mkv", 10.0, 10.5, 0.04) is None, "within a second is not 'early'"
    assert ended_early_warning("a.mkv", 10.0, None, 0.04) is None, "unknown length: no claim"
    assert "ended at 0:00:10.00 of the 0:00:12.00" in ended_early_warning("a.mkv", 10.0, 12.0, 0.04)


# ---------------------------------------------------------------------------------------------
# Awkward but valid inputs


def test_odd_width_and_height_gain_one_repeated_edge_row_and_column(tmp_path, run_tmp, ab_model):
    """H.264 in 4:2:0 cannot code odd sizes: the output is padded to even by repeating the last row
    and column (no picture is lost), documented in stages/encoder.py."""
    source = write_video(tmp_path / "odd.mkv", VideoSpec(frames=12, width=65, height=49, codec="ffv1",
                                                         pix_fmt="yuv444p"))
    output = tmp_path / "odd.mp4"
    outcome = colorize(source, "-o", output, "--model", ab_model, "-q", run_tmp=run_tmp)
    assert (outcome.returncode, outcome.lines) == (0, [])
    got, original = decode_all(output), decode_all(source)
    assert (got.width, got.height) == (66, 50)
    assert got.seconds == original.seconds
    for ours, theirs in zip(got.lightness, original.lightness):
        assert np.abs(ours[:49, :65] - theirs).mean() < 2, "the picture itself is unchanged"
        assert np.abs(ours[:, 65] - ours[:, 64]).mean() < 2 and np.abs(ours[49] - ours[48]).mean() < 2


@pytest.mark.parametrize("codec, pix_fmt, suffix", [
    ("libx264", "yuv422p10le", ".mp4"),
    ("libx264", "yuv444p", ".mkv"),
    ("ffv1", "yuv444p10le", ".mkv"),
    ("prores_ks", "yuv422p10le", ".mov"),
])
def test_10_bit_and_4_2_2_or_4_4_4_sources_become_8_bit_4_2_0_with_their_lightness(
        tmp_path, run_tmp, ab_model, codec, pix_fmt, suffix):
    source = write_video(tmp_path / f"master{suffix}", VideoSpec(frames=12, codec=codec, pix_fmt=pix_fmt))
    assert decode_all(source).pix_fmt == pix_fmt
    output = tmp_path / "graded.mp4"
    outcome = colorize(source, "-o", output, "--model", ab_model, "-q", run_tmp=run_tmp)
    assert (outcome.returncode, outcome.lines) == (0, [])
    got, original = decode_all(output), decode_all(source)
    assert (got.pix_fmt, got.width, got.height) == ("yuv420p", 64, 48)
    assert got.seconds == original.seconds
    for ours, theirs in zip(got.lightness, original.lightness):
        assert np.abs(ours - theirs).mean() < 2, "Lab lightness (0..100) is the input's"


def test_a_rotated_phone_video_keeps_its_display_rotation(tmp_path, run_tmp, ab_model):
    source = write_video(tmp_path / "phone.mp4", VideoSpec(frames=12, width=64, height=48, rotation=90))
    assert decode_all(source).rotation == 90
    output = tmp_path / "phone colour.mov"
    outcome = colorize(source, "-o", output, "--model", ab_model, "-q", run_tmp=run_tmp)
    assert (outcome.returncode, outcome.lines) == (0, [])
    got = decode_all(output)
    assert (got.rotation, got.width, got.height) == (90, 64, 48), "stored as coded, shown rotated"


def test_variable_frame_rate_keeps_every_irregular_timestamp(tmp_path, run_tmp, ab_model):
    ticks = (0, 33, 67, 100, 250, 283, 317, 700, 733, 767, 800, 1500, 1533)
    source = write_video(tmp_path / "vfr.mkv", VideoSpec(frames=len(ticks), pts=ticks, time_base=Fraction(1, 1000),
                                                         rate=30))
    assert decode_all(source).seconds == [t / 1000 for t in ticks]
    output = tmp_path / "vfr.mp4"
    outcome = colorize(source, "-o", output, "--model", ab_model, "-q", run_tmp=run_tmp)
    assert (outcome.returncode, outcome.lines) == (0, [])
    assert decode_all(output).seconds == pytest.approx([t / 1000 for t in ticks], abs=1e-3)


def test_the_first_video_stream_is_colorized_unless_stream_n_picks_another(tmp_path, run_tmp, ab_model):
    dark = VideoSpec(frames=10, width=64, height=48, level=-20)
    bright = VideoSpec(frames=14, width=80, height=64, level=40)
    source = write_video(tmp_path / "two angles.mkv", dark, bright, audio=True)
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    assert colorize(source, "-o", first, "--model", ab_model, "-q", run_tmp=run_tmp).returncode == 0
    assert colorize(source, "-o", second, "--model", ab_model, "-q", "--stream", "1", run_tmp=run_tmp).returncode == 0
    assert (len(decode_all(first).seconds), decode_all(first).width) == (10, 64)
    assert (len(decode_all(second).seconds), decode_all(second).width) == (14, 80)
    assert video_facts(second).audio_codecs == ["aac"]
    wrong = colorize(source, "-o", tmp_path / "third.mp4", "--model", ab_model, "--stream", "2", run_tmp=run_tmp)
    assert (wrong.returncode, wrong.lines) == (2, [f"error: --stream 2: {source} has 2 video stream(s), numbered from 0"])


def test_paths_with_spaces_and_non_ascii_and_a_very_long_tmpdir_work(tmp_path, ab_model):
    """Unix socket paths are limited to 107 bytes: a long TMPDIR must not break the run."""
    run_tmp = tmp_path.joinpath(*["a folder with a long name, ü 東京"] * 4)
    run_tmp.mkdir(parents=True)
    assert len(os.fsencode(run_tmp)) > 107
    folder = tmp_path / "Films für Oma – 色"
    folder.mkdir()
    source = write_video(folder / "Der alte Film (1931) ñ.mkv", VideoSpec(frames=12), audio=True)
    output = folder / "Der alte Film — farbig 🎨.mp4"
    outcome = colorize(source, "-o", output, "--model", ab_model, run_tmp=run_tmp)
    assert outcome.returncode == 0, outcome.lines
    assert summary(outcome).group(1) == "12" and outcome.lines[-1].split(" -> ")[1].startswith(str(output))
    assert len(decode_all(output).seconds) == 12 and video_facts(output).audio_codecs == ["aac"]
    assert leftovers(folder) == [] and run_dirs(run_tmp) == []


def test_bad_inputs_are_one_error_line_exit_2_and_nothing_written(tmp_path, run_tmp, ab_model):
    song = write_audio_only(tmp_path / "song only.m4a")
    empty = tmp_path / "leer ü.mp4"
    empty.write_bytes(b"")
    whole = write_video(tmp_path / "whole.mp4", VideoSpec(frames=20))
    no_index = tmp_path / "cut before its index.mp4"
    no_index.write_bytes(whole.read_bytes()[:-400])
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("encoder:\n  crf: 20\n  preset: [fast\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("inference:\n  batch_size: 2\n  workers:\n    heartbeat_every_s: 1\n")
    out = tmp_path / "out.mp4"
    cases = [
        ((song, "-o", out), f"error: no video stream in {song}"),
        ((empty, "-o", out), f"error: not a media file FFmpeg can read: {empty}"),
        ((no_index, "-o", out), f"error: {no_index} is an MP4/MOV whose index (moov box) is missing or cut short: "
                                "the file was truncated while being written or copied, and cannot be read without it"),
        ((whole, "-o", out, "--config", malformed), f"error: {malformed}:4: malformed YAML: "),
        ((whole, "-o", out, "--config", unknown),
         f"error: {unknown}:4: inference.workers.heartbeat_every_s: unknown key (expected one of: "),
    ]
    for args, expected in cases:
        before = sorted(tmp_path.iterdir())
        outcome = colorize(*args, "--model", ab_model, run_tmp=run_tmp, timeout=60)
        assert outcome.returncode == 2, (args, outcome.lines)
        assert len(outcome.lines) == 1 and outcome.lines[0].startswith(expected), (expected, outcome.lines)
        assert sorted(tmp_path.iterdir()) == before and run_dirs(run_tmp) == []


# ---------------------------------------------------------------------------------------------
# Memory, disk, neighbours


def test_queue_depth_shrinks_for_large_frames_to_fit_the_memory_budget():
    depth = {(w, h): link_depth(8, rgb_frame_bytes(w, h), 256) for w, h in
             [(640, 360), (1920, 1080), (3840, 2160), (7680, 4320), (15360, 8640)]}
    assert depth == {(640, 360): 8, (1920, 1080): 8, (3840, 2160): 5, (7680, 4320): 1, (15360, 8640): 1}
    assert link_depth(8, 0, 256) == 8, "unknown frame size: the configured depth"


def test_very_large_frames_pass_whole_with_memory_bounded(tmp_path, run_tmp, ab_model):
    """4K frames (25 MB each as RGB): queues are cut to the memory budget and the encoder works in
    strips, so the whole run stays within a few frames' worth of memory per stage."""
    spec = VideoSpec(frames=2, width=3840, height=2160)
    source = write_video(tmp_path / "uhd.mp4", spec)
    config = tmp_path / "fast.yaml"
    config.write_text("encoder: {preset: ultrafast}\n")
    output = tmp_path / "uhd colour.mp4"
    cli = subprocess.Popen([sys.executable, "-m", "stream.cli", str(source), "-o", str(output), "--model",
                            str(ab_model), "--config", str(config), "-q"], cwd=REPO, env=cli_env(run_tmp),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while cli.poll() is None:
        peak = max(peak, tree_resident_bytes(cli.pid))
        time.sleep(0.05)
    _, stderr = cli.communicate()
    assert (cli.returncode, stderr) == (0, "")
    got = decode_all(output)
    assert (len(got.seconds), got.width, got.height) == (2, 3840, 2160)
    frame_mb = rgb_frame_bytes(3840, 2160) / 2**20
    assert peak / 2**20 < 1000 + 30 * frame_mb, f"peak {peak / 2**20:.0f} MB"


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 1 MB tmpfs mounted for the test (skipped where mounting is not permitted)."""
    mount_point = tmp_path / "small disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("limit", ["full disk", "file size limit"])
def test_running_out_of_room_is_one_clear_line_and_nothing_else_is_touched(tmp_path, run_tmp, ab_model, limit,
                                                                           request):
    folder = request.getfixturevalue("small_disk") if limit == "full disk" else tmp_path / "films"
    folder.mkdir(exist_ok=True)
    source = write_video(tmp_path / "noisy.mkv", VideoSpec(frames=40, width=320, height=240, noise=True))
    output = folder / "noisy.mp4"
    output.write_bytes(b"the previous, good colorization")
    outcome = colorize(source, "-o", output, "--model", ab_model, "-y", run_tmp=run_tmp,
                       file_size_limit=400_000 if limit == "file size limit" else None)
    cause = "no space left on device" if limit == "full disk" else "file too large (file system or ulimit -f limit)"
    assert outcome.returncode == 1
    assert outcome.lines == [f"error: encoder stage: cannot write the output in {folder}: {cause}; "
                             "the partial output was removed"]
    assert sorted(p.name for p in folder.iterdir()) == ["noisy.mp4"]
    assert output.read_bytes() == b"the previous, good colorization"
    assert run_dirs(run_tmp) == []


@pytest.mark.parametrize("written", ["4242\n", ""], ids=["pid written", "pid not yet written"])
def test_an_output_locked_by_another_process_is_refused_naming_its_pid_only_when_known(tmp_path, written):
    """The holder takes the lock before it writes its pid: a run that looks in between says
    "another colorize run" rather than printing a placeholder pid."""
    from stream.errors import InputError
    from stream.output_path import OutputLock

    output = tmp_path / "reel.mp4"
    lock_file = output.with_name(".reel.mp4.colorize-lock")
    lock_file.write_text(written)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(lock_file)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(InputError) as refusal:
            with OutputLock(output):
                pass
    finally:
        holder.kill()
        holder.wait()
    who = "another colorize run (pid 4242)" if written else "another colorize run"
    assert str(refusal.value) == f"{who} is writing {output}; wait for it to finish or choose another output name"
    assert lock_file.read_text() == written


def test_two_runs_at_once_share_no_socket_or_temporary_file_and_never_one_output(tmp_path, run_tmp, ab_model):
    """Different outputs: both succeed side by side. The same output: one writes it, the other stops
    with one line (it is being written, or it exists by then), so no result is silently lost."""
    source = write_video(tmp_path / "reel.mkv", VideoSpec(frames=20))
    tcp = tmp_path / "tcp.yaml"
    tcp.write_text("transport: tcp\n")

    def start(output: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "stream.cli", str(source), "-o", str(output), "--model",
                                 str(ab_model), "-q", *extra], cwd=REPO, env=cli_env(run_tmp),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    runs = [start(tmp_path / "a.mp4"), start(tmp_path / "b.mp4", "--config", str(tcp))]
    assert [(run.wait(180), run.stderr.read()) for run in runs] == [(0, "")] * 2
    assert decode_all(tmp_path / "a.mp4").seconds == decode_all(tmp_path / "b.mp4").seconds == decode_all(source).seconds

    output = tmp_path / "reel.mp4"
    runs = [start(output), start(output, "--config", str(tcp))]
    results = sorted((run.wait(180), run.stderr.read()) for run in runs)
    assert results[0] == (0, "")
    assert results[1][0] == 2 and results[1][1].count("\n") == 1
    assert re.fullmatch(rf"error: (another colorize run(?: \(pid \d+\))? is writing {re.escape(str(output))}; wait for it "
                        rf"to finish or choose another output name|output exists: {re.escape(str(output))} .*)\n",
                        results[1][1]), results[1][1]
    assert decode_all(output).seconds == decode_all(source).seconds
    assert leftovers(tmp_path) == [] and run_dirs(run_tmp) == []


def test_the_run_folder_falls_back_to_tmp_when_tmpdir_is_too_long(tmp_path, monkeypatch):
    import tempfile

    from stream.rundir import make_run_dir

    deep = tmp_path.joinpath(*["x" * 40] * 3)
    deep.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    folder = Path(make_run_dir())
    try:
        assert folder.parent == Path("/tmp") and folder.name.startswith("colorize-")
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        assert (folder / "owner.pid").read_text() == f"{os.getpid()}\n"
    finally:
        shutil.rmtree(folder)


def test_run_folders_of_dead_runs_are_removed_and_live_ones_kept_even_before_the_dead_are_reaped(tmp_path):
    from stream.rundir import remove_stale_run_dirs

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)
    unreaped = subprocess.Popen([sys.executable, "-c", "pass"])  # exited, not yet waited for: a zombie
    deadline = time.monotonic() + 30
    while Path(f"/proc/{unreaped.pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for name, pid in (("colorize-dead", dead_pid), ("colorize-live", os.getpid()), ("colorize-zombie", unreaped.pid)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "owner.pid").write_text(f"{pid}\n")
        (tmp_path / name / "decoder.sock").write_text("")
    (tmp_path / "colorize-unowned").mkdir()  # not ours to judge: no owner file
    (tmp_path / "other-dead").mkdir()
    assert sorted(remove_stale_run_dirs(str(tmp_path))) == [str(tmp_path / "colorize-dead"),
                                                            str(tmp_path / "colorize-zombie")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colorize-live", "colorize-unowned", "other-dead"]
    unreaped.wait()


# ---------------------------------------------------------------------------------------------
# Hostile input


FUZZ_MUTATIONS = 40
FUZZ_BUDGET_S = 45
FUZZ_MINIMUM = 8


def first_second(source: Path, target: Path) -> Path:
    """The first second of ``source`` (video and audio packets copied as they are) in a new file."""
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        copies = {stream.index: out.add_stream_from_template(stream) for stream in src.streams
                  if stream.type in ("video", "audio")}
        for packet in src.demux(*[src.streams[i] for i in copies]):
            if packet.dts is None or packet.dts * packet.time_base > 1:
                continue
            packet.stream = copies[packet.stream.index]
            out.mux(packet)
    return target


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random damage: flipped bytes, a random block, a cut, a repeated block or a zeroed block."""
    mutated = bytearray(data)
    kind = ["flips", "block", "cut", "repeat", "zeros"][int(rng.integers(0, 5))]
    start = int(rng.integers(0, len(data)))
    length = int(rng.integers(1, 4000))
    if kind == "flips":
        for offset in rng.integers(0, len(data), int(rng.integers(1, 40))):
            mutated[offset] ^= 1 << int(rng.integers(0, 8))
    elif kind == "block":
        mutated[start:start + length] = rng.integers(0, 256, len(mutated[start:start + length]), np.uint8).tobytes()
    elif kind == "cut":
        del mutated[start:]
    elif kind == "repeat":
        mutated[start:start] = data[start:start + length]
    else:
        mutated[start:start + length] = bytes(len(mutated[start:start + length]))
    return kind, bytes(mutated)


def test_mutated_real_clips_never_hang_and_always_end_clearly(tmp_path, run_tmp, ab_model):
    """Up to FUZZ_MUTATIONS damaged copies of a real clip (fewer if FUZZ_BUDGET_S runs out): each run
    ends within its timeout with exit 0 and a valid output, or exit 1/2, one ``error:`` line and
    no output; never a traceback, never a leftover file. The clip's packets come in MP4 (index at
    the end: a cut loses it) and in Matroska (a cut leaves the frames before it) by turns."""
    real = shared_file("video", "test_video.mp4")
    clips = [first_second(real, tmp_path / "clip.mp4"), first_second(real, tmp_path / "clip.mkv")]
    output = tmp_path / "out.mp4"
    seen: dict[str, int] = {}
    started = time.monotonic()
    for index in range(FUZZ_MUTATIONS):
        if index >= FUZZ_MINIMUM and time.monotonic() - started > FUZZ_BUDGET_S:
            break
        clip = clips[index % 2]
        kind, mutated = mutate(clip.read_bytes(), np.random.default_rng(index))
        source = tmp_path / f"mutant {index} ({kind}){clip.suffix}"
        source.write_bytes(mutated)
        try:
            outcome = colorize(source, "-o", output, "--model", ab_model, "-q", run_tmp=run_tmp, timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{source.name} hung (kept in {tmp_path})")
        if outcome.returncode == 0:
            assert all(line.startswith("warning: ") for line in outcome.lines), (source.name, outcome.lines)
            assert decode_all(output).seconds, f"{source.name}: exit 0 but no playable output"
            output.unlink()
        else:
            assert outcome.returncode in (1, 2), (source.name, outcome.returncode, outcome.lines)
            assert len(outcome.lines) == 1 and outcome.lines[0].startswith("error: "), (source.name, outcome.lines)
            assert not output.exists()
        assert leftovers(tmp_path) == [] and run_dirs(run_tmp) == [], source.name
        verdict = f"exit {outcome.returncode}"
        seen[verdict] = seen.get(verdict, 0) + 1
        source.unlink()
    print(f"fuzz: {sum(seen.values())} mutations in {time.monotonic() - started:.0f} s: {seen}")


def damage_audio_packets(source: Path, target: Path, packets: range, seed: int = 5) -> Path:
    """A copy of ``source`` with random bytes over the first half of some of its audio packets."""
    with av.open(str(source)) as container:
        spans = [(packet.pos, packet.size) for packet in container.demux(audio=0) if packet.size]
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(seed)
    for index in packets:
        pos, size = spans[index]
        data[pos:pos + size // 2] = rng.integers(0, 256, size // 2, dtype=np.uint8).tobytes()
    target.write_bytes(bytes(data))
    return target


def audio_decode_errors(path: Path) -> tuple[int, int]:
    """(audio packets, packets FFmpeg's decoder rejects) of a file's first audio track."""
    packets = errors = 0
    with av.open(str(path)) as container:
        for packet in container.demux(audio=0):
            if not packet.size:
                continue
            packets += 1
            try:
                packet.decode()
            except av.error.FFmpegError:
                errors += 1
    return packets, errors


def test_damaged_audio_is_not_copied_into_the_output(tmp_path, run_tmp, ab_model):
    clean = shared_file("video", "test_video.mp4")  # AAC, copied as is into an MP4
    source = damage_audio_packets(clean, tmp_path / "damaged sound.mp4", range(40, 52))
    damaged_in = audio_decode_errors(source)[1]
    assert damaged_in > 0, "the damage must be something a decoder notices"
    output = tmp_path / "out.mp4"
    outcome = colorize(source, "-o", output, "--model", ab_model, run_tmp=run_tmp)
    assert outcome.returncode == 0, outcome.lines
    packets, errors = audio_decode_errors(output)
    assert errors == 0 and packets >= audio_decode_errors(clean)[0] - damaged_in
    assert any(re.fullmatch(rf"warning: {damaged_in} damaged audio packets of {re.escape(str(source))} skipped", line)
               for line in outcome.warnings), outcome.warnings
    assert "audio copied" in outcome.lines[-1]
