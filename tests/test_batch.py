"""``colorize batch``: folders of mixed files, segments that join into the one-piece film, resuming
after SIGKILL, failures that cost one file only, and the same job on a real Ray cluster."""
from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from tests.conftest import REPO, BackgroundCli, cli_env, run_cli, shared_file, video_facts

SEAM_CONFIG = "inference:\n  every_nth_frame: 1\nencoder:\n  crf: 0\n"
"""Every frame through the model (64 warm-up frames) and lossless x264: what is compared is the colour."""


def ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    """chaplin.mp4 (9.64 s, 241 frames, sound) with a keyframe every second and AAC sound."""
    path = tmp_path_factory.mktemp("film") / "film.mp4"
    ffmpeg("-i", shared_file("video", "chaplin.mp4"), "-c:v", "libx264", "-preset", "veryfast", "-g", 25,
           "-keyint_min", 25, "-sc_threshold", 0, "-c:a", "aac", path)
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A folder as users keep them: H.264+AAC MP4, VP8+Vorbis WebM and MPEG-4+PCM AVI in a subfolder,
    and a still photo."""
    root = tmp_path_factory.mktemp("archive") / "reels"
    (root / "b").mkdir(parents=True)
    ffmpeg("-t", 3, "-i", shared_file("video", "chaplin.mp4"), "-c:v", "libx264", "-c:a", "aac", root / "clip.mp4")
    ffmpeg("-t", 2, "-i", shared_file("video", "big_buck_bunny_0_30.webm"), "-vf", "hue=s=0", "-c:v", "libvpx",
           "-c:a", "libvorbis", root / "b" / "cartoon.webm")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2,hue=s=0", "-f", "lavfi",
           "-i", "sine=frequency=440:duration=2", "-c:v", "mpeg4", "-c:a", "pcm_s16le", root / "b" / "old.avi")
    ffmpeg("-i", shared_file("val", "cbsd68", "101085.png"), "-vf", "hue=s=0", root / "photo.png")
    return root


def frame_hashes(path: Path) -> list[str]:
    """SHA-1 of every decoded frame's pixels (yuv420p), in order."""
    with av.open(str(path)) as container:
        return [hashlib.sha1(frame.to_ndarray(format="yuv420p").tobytes()).hexdigest()
                for frame in container.decode(video=0)]


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        return [(packet.pts, bytes(packet)) for packet in container.demux(audio=0) if packet.size]


def chroma_planes(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="yuv420p")[frame.height:].astype(np.int16)
                for frame in container.decode(video=0)]


def pieces_recorded(outdir: Path) -> int:
    database = outdir / ".colorize-batch" / "job.sqlite"
    if not database.exists():
        return 0
    with sqlite3.connect(database, timeout=10) as connection:
        try:
            return connection.execute("SELECT COUNT(*) FROM pieces").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def wait_for_pieces(outdir: Path, count: int, process, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while pieces_recorded(outdir) < count:
        assert process.poll() is None, "the batch ended before the pieces it should have made"
        assert time.monotonic() < deadline, f"fewer than {count} pieces after {timeout} s"
        time.sleep(0.2)


def test_a_folder_is_colorized_into_a_mirror_and_a_second_run_skips_everything(archive, tmp_path):
    outdir = tmp_path / "out"
    first = run_cli("batch", archive, "-o", outdir)
    assert first.returncode == 0, first.stderr
    assert first.last_error_line == "4 inputs: 4 done"
    sources = {"clip.mp4": "clip.mp4", "b/cartoon.mp4": "b/cartoon.webm", "b/old.mp4": "b/old.avi"}
    for output, source in sources.items():  # AAC copied; Vorbis and PCM, which MP4 does not take, as AAC
        made, original = video_facts(outdir / output), video_facts(archive / source)
        assert (made.frames, made.codec, made.audio_codecs) == (original.frames, "h264", ["aac"]), output
        assert made.mean_chroma > 3 * original.mean_chroma + 1, f"{output}: no colour added"
    photo = av.open(str(outdir / "photo.png"))
    rgb = next(photo.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 2, "the photo got no colour"
    times = {path: path.stat().st_mtime_ns for path in outdir.rglob("*") if path.is_file() and ".colorize" not in str(path)}

    second = run_cli("batch", archive, "-o", outdir)
    assert second.returncode == 0, second.stderr
    assert second.last_error_line == "4 inputs: 4 skipped"
    assert {path: path.stat().st_mtime_ns for path in times} == times

    with open(outdir / "b" / "old.mp4", "r+b") as damaged:  # complete means verified, not present
        damaged.truncate(damaged.seek(0, os.SEEK_END) // 2)
    third = run_cli("batch", archive, "-o", outdir)
    assert third.returncode == 0, third.stderr
    assert third.last_error_line == "4 inputs: 1 done, 3 skipped"
    assert video_facts(outdir / "b" / "old.mp4").frames == 50


def test_a_segmented_film_equals_the_one_piece_run_in_frames_timestamps_sound_and_seams(film, tmp_path):
    from batch.segments import plan_segments

    config = tmp_path / "seam.yaml"
    config.write_text(SEAM_CONFIG)
    assert len(plan_segments(str(film), 3.0, 64).segments) == 4
    one = tmp_path / "one.mp4"
    assert run_cli(film, "-o", one, "--config", config, "-q").returncode == 0
    batch = run_cli("batch", film, "-o", tmp_path / "out", "--config", config, "--segment-s", 3)
    assert batch.returncode == 0, batch.stderr
    joined = tmp_path / "out" / "film.mp4"

    a, b = video_facts(one), video_facts(joined)
    assert (b.frames, b.pts, b.time_base, b.duration_s) == (a.frames, a.pts, a.time_base, a.duration_s) == (
        241, a.pts, a.time_base, a.duration_s)
    assert audio_packets(joined) == audio_packets(one) != []

    whole, pieces = chroma_planes(one), chroma_planes(joined)
    seams = [75, 150, 225]  # 3 s at 25 fps, on the one-second keyframes
    for seam in seams:
        for frame in (seam - 1, seam, seam + 1):
            assert np.abs(pieces[frame] - whole[frame]).mean() < 0.25, f"frame {frame} differs at the seam"
    change = [np.abs(pieces[i] - pieces[i - 1]).mean() for i in range(1, len(pieces))]
    elsewhere = [c for i, c in enumerate(change, 1) if i not in seams]
    assert max(change[seam - 1] for seam in seams) <= np.percentile(elsewhere, 95)


def test_sigkill_mid_job_then_the_same_command_reuses_finished_segments_and_gives_the_same_film(film, tmp_path):
    args = ("batch", film, "--segment-s", 2)
    reference = run_cli(*args, "-o", tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr

    outdir = tmp_path / "out"
    killed = BackgroundCli(*args, "-o", outdir)
    wait_for_pieces(outdir, 2, killed.process)
    killed.process.kill()
    killed.process.wait()
    assert not (outdir / "film.mp4").exists()

    again = run_cli(*args, "-o", outdir)
    assert again.returncode == 0, again.stderr
    reused = int(again.stderr.split(" pieces reused")[0].rsplit("(", 1)[1])
    assert reused >= 2
    assert frame_hashes(outdir / "film.mp4") == frame_hashes(tmp_path / "reference" / "film.mp4")
    assert audio_packets(outdir / "film.mp4") == audio_packets(tmp_path / "reference" / "film.mp4")
    assert not list((outdir / ".colorize-batch" / "pieces").rglob("*.mp4")), "pieces left after the join"


def test_ctrl_c_to_a_two_worker_batch_stops_it_at_once_and_no_piece_is_written_after_it(film, tmp_path):
    """A terminal's Ctrl-C reaches the whole process group: the batch exits 130 within seconds, its
    workers and their pipelines are gone (nothing in OUTDIR changes afterwards), and the same command
    finishes the film."""
    outdir = tmp_path / "out"
    stopped = BackgroundCli("batch", film, "-o", outdir, "--segment-s", 1, "--jobs", 2, own_group=True)
    wait_for_pieces(outdir, 1, stopped.process)
    os.killpg(stopped.process.pid, signal.SIGINT)
    signalled, started = time.time(), time.monotonic()
    assert stopped.process.wait(timeout=60) == 130
    assert time.monotonic() - started < 15
    finished_after = [p.name for p in (outdir / ".colorize-batch" / "pieces").rglob("*.mp4")
                      if not p.name.startswith(".") and p.stat().st_mtime > signalled + 0.5]
    assert finished_after == [], "pieces were still finished (and not recorded) after Ctrl-C"
    stopped.reader.join(10)
    assert stopped.lines[-1] == "interrupted: the pieces finished so far are kept; run the same command again to continue"

    def snapshot() -> dict:
        return {p: p.stat().st_mtime_ns for p in outdir.rglob("*") if p.is_file()}

    before = snapshot()
    time.sleep(3)
    assert snapshot() == before, "a worker went on writing after the batch stopped"
    again = run_cli("batch", film, "-o", outdir, "--segment-s", 1, "--jobs", 2)
    assert again.returncode == 0, again.stderr
    assert video_facts(outdir / "film.mp4").frames == 241


def test_a_second_run_on_the_same_outdir_leaves_the_files_the_first_is_working_on_alone(film, archive, tmp_path):
    outdir = tmp_path / "out"
    first = BackgroundCli("batch", film, "-o", outdir, "--segment-s", 2)
    wait_for_pieces(outdir, 1, first.process)
    second = run_cli("batch", film, archive / "photo.png", "-o", outdir)
    assert second.returncode == 1
    assert f"being colorized by another batch run ({os.uname().nodename}:{first.process.pid})" in second.stderr
    assert second.last_error_line == "2 inputs: 1 done, 1 busy"
    assert first.finish(timeout=300) == 0
    assert video_facts(outdir / "film.mp4").frames == 241


def test_a_node_that_cannot_see_outdir_sends_its_piece_back_instead(film, tmp_path):
    """What a Ray node without the shared folder does: the marker file is not there (or differs),
    so the piece comes back as bytes for the driver to store, and nothing is written at the destination."""
    from batch.piece import PieceTask, run_piece
    from batch.segments import plan_segments, warmup_frames
    from models.runtime import model_to_run
    from stream.config import PipelineConfig

    config = PipelineConfig()
    segment = plan_segments(str(film), 2.0, warmup_frames(config)).segments[1]
    (tmp_path / "marker").write_text("another job's token")
    destination = tmp_path / "pieces" / "film-00001.mp4"
    task = PieceTask(key="film.mp4#1", input=str(film), model=str(model_to_run(None, "cpu", "auto")), config=config,
                     segment=segment.bounds, destination=str(destination), marker=str(tmp_path / "marker"),
                     token="this job's token", suffix=".mp4")
    result = run_piece(task)
    assert result.data is not None and hashlib.sha256(result.data).hexdigest() == result.sha256
    assert result.frames == segment.frames
    assert not destination.exists()
    piece = tmp_path / "piece.mp4"
    piece.write_bytes(result.data)
    with av.open(str(piece)) as container:
        times = [float(frame.pts * frame.time_base) for frame in container.decode(video=0)]
    with av.open(str(film)) as container:
        stream = container.streams.video[0]
        source = [float(t * stream.time_base) for t in sorted(p.pts for p in container.demux(stream) if p.size)]
    assert times == source[50:100]  # the second 2-second segment, on the input's own clock


def test_a_damaged_file_fails_alone_with_its_reason_and_the_exit_code_says_so(archive, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "broken.mp4").write_bytes(os.urandom(4096))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=5:duration=1", "-loop", 0, inputs / "moving.webp")
    (inputs / "photo.png").write_bytes((archive / "photo.png").read_bytes())
    result = run_cli("batch", inputs, "-o", tmp_path / "out")
    assert result.returncode == 1
    assert f"failed             0  {tmp_path / 'out' / 'broken.mp4'}: not a media file FFmpeg can read: " \
           f"{inputs / 'broken.mp4'}" in result.stderr
    assert f"{tmp_path / 'out' / 'moving.mp4'}: {inputs / 'moving.webp'} is an animated WebP (5 pictures), " \
           "which FFmpeg cannot decode: save it as a GIF or a video first" in result.stderr
    assert result.last_error_line == "3 inputs: 1 done, 2 failed"
    assert (tmp_path / "out" / "photo.png").is_file() and not (tmp_path / "out" / "broken.mp4").exists()


def test_outputs_not_made_by_the_job_are_kept_unless_overwrite(archive, tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "photo.png").write_bytes(b"someone else's file")
    refused = run_cli("batch", archive / "photo.png", "-o", outdir)
    assert refused.returncode == 1
    assert "the output exists and was not made by this job (--overwrite replaces it)" in refused.stderr
    assert (outdir / "photo.png").read_bytes() == b"someone else's file"
    replaced = run_cli("batch", archive / "photo.png", "-o", outdir, "--overwrite")
    assert replaced.returncode == 0 and replaced.last_error_line == "1 input: 1 done"
    assert (outdir / "photo.png").read_bytes()[:4] == b"\x89PNG"


def test_an_output_path_taken_by_a_folder_fails_that_file_before_any_work(archive, tmp_path):
    outdir = tmp_path / "out"
    (outdir / "photo.png").mkdir(parents=True)
    result = run_cli("batch", archive / "photo.png", "-o", outdir, "--overwrite")
    assert result.returncode == 1
    assert f"failed             0  {outdir / 'photo.png'}: the output path is a folder: {outdir / 'photo.png'}" \
        in result.stderr


@pytest.mark.parametrize("args, message", [
    (["nowhere.mp4"], "error: input not found: nowhere.mp4"),
    (["{archive}", "--keyframe", "0=x.png"],
     "error: guidance.keyframes: keyframes belong to one film; colorize batch takes references only"),
    (["{archive}", "--jobs", "0"], "error: --jobs must be 1 or more, got 0"),
    (["{archive}", "--segment-s", "0"], "error: --segment-s must be more than 0, got 0"),
])
def test_bad_arguments_are_one_line_and_exit_code_2(archive, tmp_path, args, message):
    result = run_cli("batch", *[a.format(archive=archive) for a in args], "-o", tmp_path / "out")
    assert (result.returncode, result.stderr.strip()) == (2, message)


def test_an_outdir_below_a_file_is_one_line_and_exit_code_2(archive, tmp_path):
    (tmp_path / "notes").write_text("a file")
    result = run_cli("batch", archive / "photo.png", "-o", tmp_path / "notes" / "out")
    assert (result.returncode, result.stderr.strip()) == (
        2, f"error: -o {tmp_path / 'notes' / 'out'}: {tmp_path / 'notes'} is a file, not a folder")


def test_two_folders_holding_the_same_name_are_refused_saying_what_to_do(archive, tmp_path):
    for folder in ("reel1", "reel2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "photo.png").write_bytes((archive / "photo.png").read_bytes())
    result = run_cli("batch", tmp_path / "reel1", tmp_path / "reel2", "-o", tmp_path / "out")
    assert (result.returncode, result.stderr.strip()) == (2, (
        f"error: {tmp_path / 'reel1' / 'photo.png'} and {tmp_path / 'reel2' / 'photo.png'} would both be written "
        f"to {tmp_path / 'out' / 'photo.png'} (outputs mirror the path below each folder given, or each listed "
        "file's own folder): give their common parent folder as the input, or run them into different -o folders"))
    together = run_cli("batch", tmp_path, "-o", tmp_path / "out", "-q")
    assert together.returncode == 0, together.stderr
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == [
        "reel1/photo.png", "reel2/photo.png"]


@pytest.mark.parametrize("below", ["", "sub"], ids=["the folder itself", "a folder to create in it"])
def test_an_outdir_on_a_read_only_file_system_is_one_line_and_exit_code_2(archive, tmp_path, below):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a read-only tmpfs needs root (or CAP_SYS_ADMIN) on this machine")
    try:
        outdir = mount / below if below else mount
        result = run_cli("batch", archive / "photo.png", "-o", outdir)
        assert (result.returncode, result.stderr.strip()) == (
            2, f"error: -o {outdir}: {mount} is not writable (permissions or a read-only file system)")
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def ray_cluster():
    """A real Ray cluster on this machine: a head (no work) and two worker nodes of 2 CPUs."""
    pytest.importorskip("ray", reason="the cluster extra is not installed (pip install '.[cluster]')")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def test_the_same_job_runs_on_a_ray_cluster_and_survives_losing_a_node(film, archive, ray_cluster, tmp_path):
    cluster, workers = ray_cluster
    local = run_cli("batch", film, "-o", tmp_path / "local", "--segment-s", 2)
    assert local.returncode == 0, local.stderr

    outdir = tmp_path / "cluster"
    command = ["batch", film, archive / "photo.png", "-o", outdir, "--segment-s", 2, "--cluster", cluster.address]
    job = subprocess.Popen([sys.executable, "-m", "stream.cli", *map(str, command)], cwd=REPO, env=cli_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_pieces(outdir, 1, job, timeout=300)
        cluster.remove_node(workers[0])
        _, stderr = job.communicate(timeout=600)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, stderr
    assert stderr.strip().splitlines()[-1] == "2 inputs: 2 done"
    assert frame_hashes(outdir / "film.mp4") == frame_hashes(tmp_path / "local" / "film.mp4")
    assert audio_packets(outdir / "film.mp4") == audio_packets(tmp_path / "local" / "film.mp4")
