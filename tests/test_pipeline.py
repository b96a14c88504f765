"""End to end: `colorize INPUT -o OUTPUT` through four real processes over real ZeroMQ sockets."""
from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from models.runtime import ColorModel
from stream.accounting import parse_clock
from tests.conftest import REPO, cli_env, run_cli, shared_file, video_facts
from tests.lab_reference import colorize_reference

AUTO_CHOICES = re.compile(r"; auto: inference \d+× \((\d+ threads?|all threads), batch \d+\), preprocessor \d+× "
                          r"\(\d+ cores?, 640×360, cpu, estimated \d+ fps\); busy: ")
SUMMARY = re.compile(r"^(\d+) frames in [\d.]+ s \([\d.]+ fps\) -> .*; busy: decoder \d+%, preprocessor \d+%, "
                     r"inference \d+%, encoder \d+%")


def stage_processes() -> dict[int, str]:
    """pid → name of every live stage process (they name themselves cz-<stage>)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name.startswith("cz-"):
                found[int(entry.name)] = name
    return found


def run_dirs(run_tmp: Path) -> list[str]:
    """The per-run folders (ipc sockets) in TMPDIR; onnxruntime's own files there are not ours."""
    return [p.name for p in run_tmp.iterdir() if p.name.startswith("colorize-")]


def assert_nothing_left(run_tmp: Path, output: Path) -> None:
    assert run_dirs(run_tmp) == [], "the run left its ipc folder in TMPDIR"
    assert sorted(p.name for p in run_tmp.iterdir()) == [], "the run left files in TMPDIR (sockets, .ses, pymp-*)"
    leftovers = [p.name for p in output.parent.iterdir() if ".colorize-" in p.name]
    assert leftovers == [], f"temporary outputs left behind: {leftovers}"


def test_black_and_white_film_becomes_colour_with_its_sound_and_timing(tmp_path, run_tmp, ab_model):
    source = shared_file("video", "chaplin.mp4")
    output = tmp_path / "chaplin colour.mp4"
    before = set(stage_processes())
    result = run_cli(source, "-o", output, "--model", ab_model, tmpdir=run_tmp)
    assert result.returncode == 0, result.stderr
    got, original = video_facts(output), video_facts(source)
    assert got.frames == original.frames == 241
    assert (got.codec, got.pix_fmt) == ("h264", "yuv420p")
    assert (got.width, got.height) == (640, 360)
    assert got.pts == original.pts
    assert abs(got.duration_s - original.duration_s) <= 1 / 25
    assert got.audio_codecs == ["mp3"]
    assert original.mean_chroma < 1.0 and got.mean_chroma > 5.0
    assert SUMMARY.match(result.last_error_line), result.stderr
    assert SUMMARY.match(result.last_error_line).group(1) == "241"
    assert AUTO_CHOICES.search(result.last_error_line), result.stderr  # the defaults were fitted and said so
    assert_nothing_left(run_tmp, output)
    assert set(stage_processes()) - before == set()


def test_an_8_bit_420_film_keeps_its_very_luma_codes_and_gains_chroma(tmp_path, run_tmp, ab_model):
    source = shared_file("video", "chaplin.mp4")
    output = tmp_path / "lossless.mp4"
    result = run_cli(source, "-o", output, "--model", ab_model, "--crf", "0", "-q", tmpdir=run_tmp)
    assert result.returncode == 0, result.stderr
    with av.open(str(source)) as original, av.open(str(output)) as coloured:
        pairs = list(zip(original.decode(video=0), coloured.decode(video=0), strict=True))
    assert len(pairs) == 241
    for before, after in pairs:
        assert after.format.name == "yuv420p"
        assert np.array_equal(before.to_ndarray()[:360], after.to_ndarray()[:360])  # Y': grain untouched
    chroma = np.stack([after.to_ndarray()[360:] for _, after in pairs[::40]]).astype(int)
    assert np.abs(chroma - 128).mean() > 2


def test_webm_vp8_with_vorbis_becomes_h264_with_aac_in_mp4_and_vorbis_kept_in_mkv(tmp_path, run_tmp, ab_model):
    source = shared_file("video", "big_buck_bunny_0_30.webm")
    mp4, mkv = tmp_path / "bunny.mp4", tmp_path / "bunny.mkv"
    assert run_cli(source, "-o", mp4, "--model", ab_model, "--quiet", tmpdir=run_tmp).returncode == 0
    facts = video_facts(mp4)
    assert (facts.frames, facts.width, facts.height, facts.codec) == (720, 1280, 720, "h264")
    assert facts.audio_codecs == ["aac"]
    result = run_cli(source, "-o", mkv, "--model", ab_model, "--quiet", tmpdir=run_tmp)
    assert result.returncode == 0 and result.stderr == ""
    assert video_facts(mkv).audio_codecs == ["vorbis"]
    assert_nothing_left(run_tmp, mp4)


def test_a_model_with_bin_scores_output_runs_the_same_pipeline(tmp_path, run_tmp, bins_model):
    source = shared_file("video", "test_video.mp4")
    output = tmp_path / "street.mkv"
    result = run_cli(source, "-o", output, "--model", bins_model, "--quiet", tmpdir=run_tmp)
    assert result.returncode == 0, result.stderr
    assert video_facts(output).frames == 96


def test_several_replicas_keep_every_frame_in_order(tmp_path, run_tmp, ab_model):
    source = shared_file("video", "test_video.mp4")
    config = tmp_path / "replicas.yaml"
    config.write_text("preprocessor:\n  replicas: 2\ninference:\n  replicas: 2\n  batch_size: 3\n")
    single, multi = tmp_path / "single.mkv", tmp_path / "multi.mkv"
    assert run_cli(source, "-o", single, "--model", ab_model, "-q", tmpdir=run_tmp).returncode == 0
    result = run_cli(source, "-o", multi, "--model", ab_model, "--config", config, "-q", tmpdir=run_tmp)
    assert result.returncode == 0, result.stderr
    assert video_facts(multi).pts == video_facts(single).pts
    assert decoded_frames(multi) == decoded_frames(single)


def decoded_frames(path: Path) -> list[bytes]:
    import av
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").tobytes() for f in container.decode(video=0)]


def test_a_still_image_is_colorized_exactly_like_the_reference_recipe(tmp_path, ab_model):
    photo = sorted(shared_file("val", "cbsd68").glob("*.png"))[0]
    gray = cv2.cvtColor(cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    source, output = tmp_path / "old photo.png", tmp_path / "colour photo.png"
    cv2.imwrite(str(source), gray)
    result = run_cli(source, "-o", output, "--model", ab_model)
    assert result.returncode == 0, result.stderr
    ours = cv2.cvtColor(cv2.imread(str(output)), cv2.COLOR_BGR2RGB)
    reference = colorize_reference(cv2.cvtColor(gray, cv2.COLOR_BGR2RGB), ColorModel(ab_model).predict_ab)
    assert ours.shape == gray.shape
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1
    assert np.abs(ours.astype(int) - gray[..., ::-1].astype(int)).mean() > 3, "no colour was added"


def test_a_jpeg_in_gives_a_jpeg_out(tmp_path, ab_model):
    photo = sorted(shared_file("val", "cbsd68").glob("*.png"))[1]
    source, output = tmp_path / "in.jpg", tmp_path / "out.jpg"
    cv2.imwrite(str(source), cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE))
    result = run_cli(source, "-o", output, "--model", ab_model)
    assert result.returncode == 0 and output.read_bytes()[:2] == b"\xff\xd8"
    assert cv2.imread(str(output)).shape == cv2.imread(str(photo)).shape


def test_saturation_sets_the_colour_strength_of_a_still_from_grey_to_double(tmp_path, ab_model):
    photo = sorted(shared_file("val", "cbsd68").glob("*.png"))[3]
    source = tmp_path / "gray.png"
    cv2.imwrite(str(source), cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE))

    outputs = iter(range(100))

    def chroma(*flags: str) -> float:
        output = tmp_path / f"out{next(outputs)}.png"
        result = run_cli(source, "-o", output, "--model", ab_model, *flags)
        assert result.returncode == 0, result.stderr
        lab = cv2.cvtColor(cv2.imread(str(output)).astype(np.float32) / 255, cv2.COLOR_BGR2LAB)
        return float(np.hypot(lab[..., 1], lab[..., 2]).mean())

    full, half, none = chroma(), chroma("--saturation", "0.5"), chroma("--saturation", "0")
    assert none < 1.0, "saturation 0 must leave the picture grey"
    assert half == pytest.approx(full / 2, rel=0.1)
    config = tmp_path / "strong.yaml"
    config.write_text("colour:\n  saturation: 0.5\n")
    assert chroma("--config", str(config)) == pytest.approx(half, rel=0.02)


def test_an_existing_output_is_refused_kept_with_n_and_replaced_with_y(tmp_path, ab_model):
    photo = sorted(shared_file("val", "cbsd68").glob("*.png"))[4]
    source, output = tmp_path / "gray.png", tmp_path / "colour.png"
    cv2.imwrite(str(source), cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE))
    output.write_bytes(b"an earlier result")

    refused = run_cli(source, "-o", output, "--model", ab_model)
    assert refused.returncode == 2
    assert refused.stderr == f"error: output exists: {output} (-y replaces it, -n keeps it and skips the run)\n"
    kept = run_cli(source, "-o", output, "--model", ab_model, "-n")
    assert kept.returncode == 0 and kept.stderr == f"{output} exists: kept, nothing done (-n)\n"
    assert output.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colour.png", "gray.png"]

    replaced = run_cli(source, "-o", output, "--model", ab_model, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert cv2.imread(str(output)).shape == cv2.imread(str(photo)).shape


def test_webp_and_single_picture_gif_are_stills_and_an_animated_gif_is_a_video(tmp_path, ab_model):
    photo = cv2.imread(str(sorted(shared_file("val", "cbsd68").glob("*.png"))[5]), cv2.IMREAD_GRAYSCALE)
    gray = cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR)
    assert cv2.imwrite(str(tmp_path / "still.webp"), gray) and cv2.imwrite(str(tmp_path / "still.gif"), gray)
    for source, output in (("still.webp", "out.webp"), ("still.gif", "out.png")):
        result = run_cli(tmp_path / source, "-o", tmp_path / output, "--model", ab_model)
        assert result.returncode == 0, result.stderr
        assert result.stderr == f"{gray.shape[1]}x{gray.shape[0]} image -> {tmp_path / output}\n"
        colour = cv2.imread(str(tmp_path / output))
        assert colour.shape == gray.shape and np.abs(colour.astype(int) - gray.astype(int)).mean() > 3

    frames = [np.roll(gray, 8 * i, axis=1) for i in range(5)]
    assert cv2.imwritemulti(str(tmp_path / "moving.gif"), frames)
    result = run_cli(tmp_path / "moving.gif", "-o", tmp_path / "moving.mp4", "--model", ab_model, "-q")
    assert result.returncode == 0, result.stderr
    assert video_facts(tmp_path / "moving.mp4").frames == 5


@pytest.mark.parametrize("args, message", [
    (("--start", "1"), "--start and --duration are for videos, not still images"),
    (("--map", "0:a"), "--map is for videos, not still images"),
    (("--crf", "30"), "--crf is for videos, not still images"),
    (("--stream", "1"), "--stream is for videos, not still images"),
    (("--deinterlace", "on"), "--deinterlace is for videos, not still images"),
    (("--crf", "20", "--preset", "fast"), "--crf and --preset are for videos, not still images"),
])
def test_video_only_options_on_a_still_are_refused_rather_than_ignored(tmp_path, ab_model, args, message):
    source = tmp_path / "gray.png"
    cv2.imwrite(str(source), cv2.imread(str(sorted(shared_file("val", "cbsd68").glob("*.png"))[0]), cv2.IMREAD_GRAYSCALE))
    result = run_cli(source, "-o", tmp_path / "out.png", "--model", ab_model, *args)
    assert (result.returncode, result.stderr) == (2, f"error: {message}\n")
    assert list(tmp_path.iterdir()) == [source]


def test_an_animated_webp_is_refused_in_one_line_naming_what_to_do(tmp_path, ab_model):
    source = tmp_path / "moving.webp"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=5:duration=1",
                    "-loop", "0", str(source)], check=True)
    result = run_cli(source, "-o", tmp_path / "moving.mp4", "--model", ab_model)
    assert result.returncode == 2
    assert result.stderr == (f"error: {source} is an animated WebP (5 pictures), which FFmpeg cannot decode: "
                             "save it as a GIF or a video first\n")
    assert list(tmp_path.iterdir()) == [source]


def test_a_truncated_jpeg_is_colorized_with_one_warning_instead_of_the_decoders_raw_message(tmp_path, ab_model):
    photo = sorted(shared_file("val", "cbsd68").glob("*.png"))[2]
    whole, cut, output = tmp_path / "whole.jpg", tmp_path / "cut.jpg", tmp_path / "out.png"
    cv2.imwrite(str(whole), cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE))
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    result = run_cli(cut, "-o", output, "--model", ab_model)
    assert result.returncode == 0, result.stderr
    height, width = cv2.imread(str(photo)).shape[:2]
    assert result.stderr.splitlines() == [
        f"warning: {cut} is damaged or truncated (decoder: Premature end of JPEG file): the part it could not "
        "read is filler, not picture", f"{width}x{height} image -> {output}"]
    assert cv2.imread(str(output)).shape == (height, width, 3)
    clean = run_cli(whole, "-o", tmp_path / "clean.png", "--model", ab_model)
    assert clean.stderr == f"{width}x{height} image -> {tmp_path / 'clean.png'}\n"


def test_version_and_usage_name_both_forms_of_the_command():
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout == "colorize 0.1.0\n"
    usage = run_cli("--help").stdout
    assert "colorize INPUT -o OUTPUT [options]" in usage and "colorize COMMAND [options]" in usage


def test_encoder_flags_override_the_config(tmp_path, ab_model):
    """--crf and --preset reach x264: the stream's encoder settings (x264 writes them into the stream)."""
    output = tmp_path / "out.mp4"
    result = run_cli(shared_file("video", "chaplin.mp4"), "-o", output, "--model", ab_model, "--crf", "30",
                     "--preset", "ultrafast", "-q")
    assert result.returncode == 0, result.stderr
    settings = output.read_bytes()
    assert b"crf=30.0" in settings and b"subme=0" in settings  # subme 0: ultrafast's signature


def wrong_contract_model(tmp_path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["N", 3, 224, 224])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 224, 224])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["rgb"], ["out"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "rgb.onnx"
    onnx.save(model, str(path))
    return path


def remuxed_to_matroska(source: Path, target: Path) -> Path:
    """The source's video packets, copied into Matroska (whose header comes first, unlike this MP4's)."""
    import av
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return target


def bad_input_cases(tmp_path: Path, chaplin: Path, model: Path):
    """(arguments, exact error line) for each kind of bad input."""
    text = tmp_path / "notes.mp4"
    text.write_text("these are not frames\n" * 50)
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(remuxed_to_matroska(chaplin, tmp_path / "whole.mkv").read_bytes()[:6000])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    config = tmp_path / "bad.yaml"
    config.write_text("inference:\n  batch_size: 0\n")
    out = tmp_path / "out.mp4"
    corrupt_model = tmp_path / "corrupt.onnx"
    corrupt_model.write_bytes(b"\x08\x07garbage" * 10)
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"an earlier result")
    return [
        ((tmp_path / "missing.mp4", "-o", out, "--model", model), f"error: input not found: {tmp_path / 'missing.mp4'}"),
        ((text, "-o", out, "--model", model), f"error: not a media file FFmpeg can read: {text}"),
        ((empty, "-o", out, "--model", model), f"error: not a media file FFmpeg can read: {empty}"),
        ((truncated, "-o", out, "--model", model), f"error: no decodable video frames in {truncated}"),
        ((chaplin, "-o", tmp_path / "nowhere" / "out.mp4", "--model", model),
         f"error: output directory does not exist: {tmp_path / 'nowhere'}"),
        ((chaplin, "-o", a_file / "out.mp4", "--model", model), f"error: output directory does not exist: {a_file}"),
        ((chaplin, "-o", chaplin, "--model", model), f"error: output path is the same as the input: {chaplin}"),
        ((chaplin, "-o", tmp_path / "out.avi", "--model", model),
         "error: unknown output extension '.avi' for a video: use one of .m4v, .mkv, .mov, .mp4"),
        ((chaplin, "-o", out, "--model", tmp_path / "none.onnx"), f"error: model file not found: {tmp_path / 'none.onnx'}"),
        ((chaplin, "-o", out, "--model", wrong_contract_model(tmp_path)),
         "error: model rgb.onnx input 'rgb' has shape N×3×224×224 (tensor(float)); "
         "expected float N×1×H×W with fixed H and W"),
        ((chaplin, "-o", out, "--model", corrupt_model), None),
        ((chaplin, "-o", out, "--model", model, "--saturation", "3"),
         "error: --saturation: expected a number in 0.0..2.0, found '3'"),
        ((chaplin, "-o", out, "--model", model, "--saturation", "nan"),
         "error: --saturation: expected a number in 0.0..2.0, found 'nan'"),
        ((chaplin, "-o", out, "--model", model, "--crf", "60"), "error: --crf: expected an integer in 0..51, found '60'"),
        ((chaplin, "-o", out, "--model", model, "--preset", "quick"),
         "error: --preset: expected one of ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, "
         "veryslow, found 'quick'"),
        ((chaplin, "-o", out, "--model", model, "--provider", "tpu"),
         "error: --provider: expected one of cpu, cuda, npu, openvino, found 'tpu'"),
        ((chaplin, "-o", out, "--precision", "int4"),
         "error: --precision: expected one of auto, fp32, int8, found 'int4'"),
        ((chaplin, "-o", out, "--model", model, "--device-id", "-1"),
         "error: --device-id: expected an integer in 0..1023, found '-1'"),
        ((chaplin, "-o", existing, "--model", model),
         f"error: output exists: {existing} (-y replaces it, -n keeps it and skips the run)"),
        ((chaplin, "-o", existing, "--model", model, "-y", "-n"),
         "error: -y (overwrite) and -n (keep existing outputs) contradict each other: give one"),
        ((chaplin, "-o", out, "--model", model, "--config", config),
         f"error: {config}:2: inference.batch_size: expected an integer in 1..1024 or auto, found '0'"),
    ]


def test_each_bad_input_is_one_clear_line_exit_2_and_nothing_written(tmp_path, run_tmp, ab_model):
    chaplin = shared_file("video", "chaplin.mp4")
    for args, expected in bad_input_cases(tmp_path, chaplin, ab_model):
        before = set(tmp_path.iterdir())
        result = run_cli(*args, timeout=60, tmpdir=run_tmp)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        if expected is None:
            assert lines[0].startswith(f"error: cannot load model {args[-1]}: not a valid ONNX model")
        else:
            assert lines[0] == expected
        assert set(tmp_path.iterdir()) == before, f"{args} wrote files"
        assert run_dirs(run_tmp) == []


def start_cli(args, run_tmp: Path, own_group: bool = False) -> subprocess.Popen:
    """The command, started as a child; ``own_group``: in a process group of its own (as a shell job
    or a service is), so a signal can be sent to all of it."""
    return subprocess.Popen([sys.executable, "-m", "stream.cli", *map(str, args)], cwd=REPO, env=cli_env(run_tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            start_new_session=own_group)


def wait_for_children(cli: subprocess.Popen, names: set[str], timeout: float = 60) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = {pid: name for pid, name in stage_processes().items() if descends_from(pid, cli.pid)}
        if names <= set(children.values()):
            return children
        time.sleep(0.1)
    raise AssertionError(f"stage processes {names} did not start")


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def descends_from(pid: int, ancestor: int) -> bool:
    """True when ``ancestor`` started ``pid``, directly or through its processes (the fork server)."""
    while pid > 1:
        pid = parent_of(pid)
        if pid == ancestor:
            return True
    return False


def wait_for_file(path_glob, folder: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(folder.glob(path_glob)):
            return
        time.sleep(0.1)
    raise AssertionError("the encoder never started writing")


def writing_run(output: Path, run_tmp: Path, model: Path) -> tuple[subprocess.Popen, dict[int, str]]:
    """A CLI colorizing the 720p clip into ``output``, once every stage runs and the encoder writes;
    returns it and its stage processes (pid → name)."""
    cli = start_cli((shared_file("video", "big_buck_bunny_0_30.webm"), "-o", output, "--model", model, "-q"), run_tmp)
    children = wait_for_children(cli, {"cz-decoder", "cz-preprocessor", "cz-inference", "cz-encoder"})
    wait_for_file(f".{output.stem}.colorize-*", output.parent)
    return cli, children


def test_a_stage_killed_mid_run_fails_the_run_fast_with_no_orphans(tmp_path, run_tmp, ab_model):
    output = tmp_path / "killed.mp4"
    cli, children = writing_run(output, run_tmp, ab_model)
    victim = next(pid for pid, name in children.items() if name == "cz-inference")
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = cli.communicate(timeout=30)
    assert time.monotonic() - killed_at < 5
    assert cli.returncode == 1
    assert stderr.strip().splitlines() == ["error: inference stage died (killed by SIGKILL)"]
    assert not output.exists()
    time.sleep(0.2)
    assert not set(children) & set(stage_processes()), "stage processes outlived the run"
    assert_nothing_left(run_tmp, output)


def still_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited process its parent has not reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_supervisor_takes_every_stage_process_with_it(tmp_path, run_tmp, ab_model):
    output = tmp_path / "orphaned.mp4"
    cli, children = writing_run(output, run_tmp, ab_model)
    cli.kill()  # SIGKILL, as the OOM killer would: no clean-up code runs in the supervisor
    cli.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while any(still_running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if still_running(pid)], "stage processes outlived their supervisor"
    assert not output.exists()
    # no clean-up ran: the lock file and the hidden partial output are still there
    debris = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".orphaned."))
    assert debris == [".orphaned.colorize-%d.part.mp4" % cli.pid, ".orphaned.mp4.colorize-lock"]
    again = run_cli(shared_file("video", "chaplin.mp4"), "-o", output, "--model", ab_model, "-q", tmpdir=run_tmp)
    assert again.returncode == 0, again.stderr
    assert [p.name for p in tmp_path.iterdir() if p != run_tmp] == ["orphaned.mp4"], "the next run cleans up after a killed one"
    assert run_dirs(run_tmp) == []


@pytest.mark.parametrize("to_group", [False, True], ids=["to the command", "to its process group"])
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["ctrl-c", "sigterm", "sighup"])
def test_ctrl_c_sigterm_and_sighup_keep_a_playable_partial_file_with_the_frames_done(tmp_path, run_tmp, ab_model,
                                                                                      signum, exit_code, to_group):
    """Sent to the whole process group too, as a terminal (Ctrl-C, hang-up), ``timeout`` and
    systemd do: the helper processes must not die before the frames in flight are written."""
    source = shared_file("video", "big_buck_bunny_0_30.webm")
    output = tmp_path / "stopped.mp4"
    cli = start_cli((source, "-o", output, "--model", ab_model), run_tmp, own_group=to_group)
    wait_for_children(cli, {"cz-decoder", "cz-preprocessor", "cz-inference", "cz-encoder"})
    wait_for_file(".stopped.colorize-*", tmp_path)
    time.sleep(1.0)
    if to_group:
        os.killpg(cli.pid, signum)
    else:
        cli.send_signal(signum)
    _, stderr = cli.communicate(timeout=60)
    assert cli.returncode == exit_code, stderr
    partial = tmp_path / "stopped.partial.mp4"
    lines = stderr.strip().splitlines()
    assert lines[0] == "interrupted: finishing the frames in flight (Ctrl-C again stops at once)"
    match = re.fullmatch(r"interrupted: kept the (\d+) frames done so far in (.+)", lines[-1])
    assert match and Path(match.group(2)) == partial
    assert not output.exists()
    facts = video_facts(partial)
    assert 0 < facts.frames == int(match.group(1)) < 720
    video_end, audio_end = stream_ends(partial)
    assert facts.audio_codecs and abs(audio_end - video_end) < 0.1, (video_end, audio_end)  # not the whole 30 s
    assert_nothing_left(run_tmp, output)


def stream_ends(path: Path) -> tuple[float, float]:
    """Where the video and the audio of a file end (seconds: the last packet's pts + duration)."""
    ends = {"video": 0.0, "audio": 0.0}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is not None and packet.stream.type in ends:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                ends[packet.stream.type] = max(ends[packet.stream.type], end)
    return ends["video"], ends["audio"]


def test_two_pipelines_at_once_share_nothing(tmp_path, run_tmp, ab_model):
    source = shared_file("video", "test_video.mp4")
    first = start_cli((source, "-o", tmp_path / "a.mkv", "--model", ab_model, "-q"), run_tmp)
    second = start_cli((source, "-o", tmp_path / "b.mkv", "--model", ab_model, "-q"), run_tmp)
    assert first.wait(120) == 0 and second.wait(120) == 0
    assert decoded_frames(tmp_path / "a.mkv") == decoded_frames(tmp_path / "b.mkv")
    assert run_dirs(run_tmp) == []


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")
def test_ffprobe_agrees_the_output_is_valid_h264(tmp_path, ab_model):
    source = shared_file("video", "test_video.mp4")
    output = tmp_path / "probe.mp4"
    assert run_cli(source, "-o", output, "--model", ab_model, "-q").returncode == 0
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
                            str(output)], capture_output=True, text=True)
    assert probe.stdout.split() == ["h264", "aac"]


def run_on_a_terminal(args, timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; returns (exit code, everything shown)."""
    import pty
    import select

    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    cli = subprocess.Popen([sys.executable, "-m", "stream.cli", *map(str, args)], cwd=REPO, env=cli_env(),
                           stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        elif cli.poll() is not None:
            break
    os.close(leader)
    return cli.wait(10), shown.decode(errors="replace")


def test_a_terminal_shows_a_progress_bar_with_total_and_rate_and_quiet_shows_nothing(tmp_path, ab_model):
    source = shared_file("video", "test_video.mp4")
    code, shown = run_on_a_terminal((source, "-o", tmp_path / "bar.mkv", "--model", ab_model))
    assert code == 0
    assert re.search(r"test_video\.mp4: +100%\|.*\| 96/96 \[", shown), shown
    assert re.search(r"frame/s\]", shown)
    assert "96 frames in" in shown
    code, shown = run_on_a_terminal((source, "-o", tmp_path / "quiet.mkv", "--model", ab_model, "--quiet"))
    assert code == 0 and shown.strip() == ""


def test_without_model_the_embedded_model_colorizes_a_gray_photo(tmp_path):
    photo = sorted(shared_file("val", "cbsd68").glob("*.png"))[2]
    source, output = tmp_path / "gray.png", tmp_path / "colour.png"
    cv2.imwrite(str(source), cv2.imread(str(photo), cv2.IMREAD_GRAYSCALE))
    result = run_cli(source, "-o", output)
    assert result.returncode == 0, result.stderr
    lab = cv2.cvtColor(cv2.imread(str(output)).astype(np.float32) / 255, cv2.COLOR_BGR2LAB)
    assert np.hypot(lab[..., 1], lab[..., 2]).mean() > 5.0, "the embedded model added no colour"


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_embedded_model_does_not_paint_a_black_and_white_film_red(tmp_path, precision):
    """The first embedded model turned chaplin.mp4's lawns and suits red (mean a* +6 to +7 over the
    picture, large areas above a* 15). Frames of the colorized film: no cast and no saturated red,
    with either twin of the embedded model."""
    output = tmp_path / "chaplin colour.mp4"
    result = run_cli(shared_file("video", "chaplin.mp4"), "-o", output, "--precision", precision)
    assert result.returncode == 0, result.stderr
    twin = {"fp32": "default.onnx", "int8": "default-int8.onnx"}[precision]
    assert f" -> {output}; model {twin}; auto: " in result.last_error_line
    with av.open(str(output)) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i % 40 == 20]
    assert len(frames) == 6
    for rgb in frames:
        lab = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)[:, 80:560]  # inside the pillarbox
        a, b = lab[..., 1], lab[..., 2]
        assert abs(a.mean()) < 4.0 and abs(b.mean()) < 6.0, (a.mean(), b.mean())
        assert (a > 15).mean() < 0.02, "saturated red areas"
        assert np.hypot(a, b).mean() > 1.0, "no colour was added"


def test_auto_precision_takes_the_int8_twin_only_on_the_cpu_of_a_machine_with_int8_dot_products():
    from models import (DEFAULT_INT8_MODEL_PATH, DEFAULT_MODEL_PATH, INT8_DOT_PRODUCT_FLAGS, cpu_flags,
                        embedded_model)

    has_dot_products = bool(cpu_flags() & INT8_DOT_PRODUCT_FLAGS)
    assert embedded_model("cpu", "auto") == (DEFAULT_INT8_MODEL_PATH if has_dot_products else DEFAULT_MODEL_PATH)
    assert embedded_model("cuda", "auto") == DEFAULT_MODEL_PATH
    assert embedded_model("cpu", "fp32") == DEFAULT_MODEL_PATH
    assert embedded_model("cuda", "int8") == DEFAULT_INT8_MODEL_PATH


def test_the_int8_twin_colours_validation_photos_like_the_float_model():
    from models import DEFAULT_INT8_MODEL_PATH, DEFAULT_MODEL_PATH
    from models.quantize import load_l_minus_50

    photos = sorted(shared_file("val", "cbsd68").glob("*.png"))[::8]
    fp32, int8 = ColorModel(DEFAULT_MODEL_PATH), ColorModel(DEFAULT_INT8_MODEL_PATH)
    inputs = np.concatenate([load_l_minus_50(photo, fp32.input_size) for photo in photos])
    a, b = fp32.predict_ab(inputs).ravel(), int8.predict_ab(inputs).ravel()
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.98
    assert np.abs(a - b).mean() < 1.5  # Lab units


def flash_and_beep_clip(path: Path, audio_offset_s: float) -> Path:
    """A 3 s 160×120 clip with one white frame at t = 1 s and a 1 kHz beep starting at t = 1 s, with
    PCM audio (MOV) that starts ``audio_offset_s`` (a multiple of 1/25 s) after the picture
    (negative: before it)."""
    from fractions import Fraction

    video_start, audio_start = max(0.0, -audio_offset_s), max(0.0, audio_offset_s)
    rate = 48000
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=rate)
        audio.layout = "mono"
        for index in range(75):
            pts = round(video_start * 25) + index
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 255 if pts == 25 else 0, np.uint8))
            frame.pts, frame.time_base = pts, Fraction(1, 25)
            for packet in video.encode(frame):
                out.mux(packet)
        samples = np.zeros(3 * rate, np.int16)
        beep = round((1.0 - audio_start) * rate)
        samples[beep:beep + 2400] = (12000 * np.sin(np.arange(2400) * 2 * np.pi * 1000 / rate)).astype(np.int16)
        for start in range(0, samples.size, 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="s16", layout="mono")
            frame.sample_rate, frame.time_base = rate, Fraction(1, rate)
            frame.pts = round(audio_start * rate) + start
            for packet in audio.encode(frame):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def flash_and_beep_times(path: Path) -> tuple[float, float]:
    """When a player shows the brightest frame and when the first loud audio sample sounds (seconds)."""
    with av.open(str(path)) as container:
        flash = max(((float(f.pts * f.time_base), f.to_ndarray()[:f.height].mean())
                     for f in container.decode(video=0)), key=lambda item: item[1])[0]
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            samples = frame.to_ndarray().astype(np.float32)
            if frame.format.name.startswith("s16"):
                samples /= 32768
            loud = np.flatnonzero(np.abs(samples).max(axis=0) > 0.1)
            if loud.size:
                return flash, float(frame.pts * frame.time_base) + loud[0] / frame.sample_rate
    raise AssertionError(f"no beep in {path}")


@pytest.mark.parametrize("offset_s", [0.5, -0.5])
@pytest.mark.parametrize("suffix, audio", [(".mp4", "aac"), (".mkv", "copied")])
def test_audio_starting_after_or_before_the_picture_stays_in_sync_copied_or_transcoded(tmp_path, ab_model,
                                                                                          offset_s, suffix, audio):
    source = flash_and_beep_clip(tmp_path / "flash.mov", offset_s)
    flash, beep = flash_and_beep_times(source)
    assert abs(beep - flash) < 0.005
    output = tmp_path / f"out{suffix}"
    result = run_cli(source, "-o", output, "--model", ab_model)
    assert result.returncode == 0, result.stderr
    assert f"audio {audio}" in result.last_error_line  # PCM goes into MKV as it is, into MP4 as AAC
    flash, beep = flash_and_beep_times(output)
    assert abs(beep - flash) <= 0.040, (flash, beep)


def anamorphic_clip(path: Path, sar: tuple[int, int]) -> Path:
    """Ten 720×576 frames with sample aspect ratio ``sar`` (DV/DVD), tagged BT.709 (matrix,
    primaries, transfer) as an HD master would be."""
    from fractions import Fraction

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 720, 576, "yuv420p"
        context = video.codec_context
        context.sample_aspect_ratio = Fraction(*sar)
        context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((576, 720, 3), 20 * index, np.uint8))
            frame.pts = index
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


@pytest.mark.parametrize("sar, display", [((64, 45), 16 / 9), ((16, 15), 4 / 3)])
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_pixel_aspect_and_colour_description_reach_the_output(tmp_path, ab_model, sar, display, suffix):
    source = anamorphic_clip(tmp_path / "dv.mp4", sar)
    output = tmp_path / f"out{suffix}"
    result = run_cli(source, "-o", output, "--model", ab_model, "-q")
    assert result.returncode == 0, result.stderr
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        assert (context.width, context.height) == (720, 576)  # stored as the source stores it
        shown = 720 * stream.sample_aspect_ratio / 576
        assert abs(shown / display - 1) < 0.01, (stream.sample_aspect_ratio, shown)
        assert (context.color_primaries, context.color_trc) == (1, 1)  # the source's light: BT.709
        assert (context.colorspace, context.color_range) == (6, 1)  # what we wrote: BT.601 matrix, limited range


def test_a_second_audio_track_from_another_source_is_kept_with_its_language(tmp_path, ab_model):
    chaplin, other = shared_file("video", "chaplin.mp4"), shared_file("video", "test_video.mp4")
    source = tmp_path / "tracks.mkv"
    with av.open(str(chaplin)) as first, av.open(str(other)) as second, av.open(str(source), "w") as out:
        streams = [(first, first.streams.video[0]), (first, first.streams.audio[0]), (second, second.streams.audio[0])]
        copies = {}
        for _, stream in streams:
            copies[stream] = out.add_stream_from_template(stream)
        copies[streams[2][1]].metadata["language"] = "fra"
        for container, stream in streams:
            for packet in container.demux(stream):
                if packet.dts is None or packet.pts * packet.time_base > 2:
                    continue
                packet.stream = copies[stream]
                out.mux(packet)
    output = tmp_path / "out.mkv"
    result = run_cli(source, "-o", output, "--model", ab_model)
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    with av.open(str(output)) as container:
        assert [(s.type, s.metadata.get("language")) for s in container.streams][1:] == [("audio", None),
                                                                                          ("audio", "fra")]


def idet_counts(path: Path) -> dict[str, int]:
    """FFmpeg's idet verdicts over a file's frames: {'TFF': n, 'BFF': n, 'Progressive': n, ...}."""
    log = subprocess.run(["ffmpeg", "-v", "info", "-nostats", "-i", str(path), "-vf", "idet", "-f", "null", "-"],
                         capture_output=True, text=True).stderr
    line = next(line for line in log.splitlines() if "Multi frame detection" in line)
    return {key: int(value) for key, value in re.findall(r"(\w+):\s*(\d+)", line.split("detection:")[1])}


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (the command) not installed")
def test_an_interlaced_capture_is_deinterlaced_by_default_or_kept_flagged_on_request(tmp_path, ab_model):
    source = tmp_path / "pal_tff.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=720x576:r=50:d=2",
                    "-vf", "tinterlace=mode=interleave_top,setfield=tff", "-c:v", "libx264", "-flags", "+ildct+ilme",
                    "-x264-params", "tff=1", "-pix_fmt", "yuv420p", str(source)], check=True)
    assert idet_counts(source)["TFF"] >= 45  # 50 combed frames, flagged top field first
    original = video_facts(source)

    deinterlaced = tmp_path / "auto.mp4"
    result = run_cli(source, "-o", deinterlaced, "--model", ab_model)
    assert result.returncode == 0, result.stderr
    assert result.last_error_line.endswith("; deinterlaced (bwdif, top field first)")
    facts = video_facts(deinterlaced)
    assert (facts.frames, facts.pts) == (original.frames, original.pts)
    verdicts = idet_counts(deinterlaced)
    assert verdicts["Progressive"] >= 40 and verdicts["TFF"] + verdicts["BFF"] <= 10, verdicts
    with av.open(str(deinterlaced)) as container:
        assert container.streams.video[0].codec_context.field_order in (0, 1)  # unknown or progressive

    kept = tmp_path / "off.mp4"
    result = run_cli(source, "-o", kept, "--model", ab_model, "--deinterlace", "off")
    assert result.returncode == 0, result.stderr
    assert result.last_error_line.endswith("; interlaced, kept (top field first)")
    with av.open(str(kept)) as container:
        assert container.streams.video[0].codec_context.field_order == 2  # AV_FIELD_TT: players deinterlace
    assert idet_counts(kept)["TFF"] >= 45

    progressive = run_cli(shared_file("video", "test_video.mp4"), "-o", tmp_path / "p.mp4", "--model", ab_model)
    assert "interlaced (" not in progressive.last_error_line and "interlaced, kept" not in progressive.last_error_line


@pytest.mark.parametrize("channels", [4, 2])
def test_transparency_of_a_still_is_kept_in_png_and_named_when_jpeg_drops_it(tmp_path, ab_model, channels):
    photo = cv2.imread(str(sorted(shared_file("val", "cbsd68").glob("*.png"))[4]), cv2.IMREAD_GRAYSCALE)
    height, width = photo.shape
    alpha = np.zeros((height, width), np.uint8)
    alpha[height // 4:3 * height // 4, width // 4:3 * width // 4] = 255  # a visible window, the rest hidden
    alpha[:, :8] = 128
    source = tmp_path / "cutout.png"
    assert cv2.imwrite(str(source), np.dstack([photo, photo, photo, alpha]))
    if channels == 2:  # grey + alpha, as scanners and editors write it (OpenCV writes no such PNG)
        if shutil.which("ffmpeg") is None:
            pytest.skip("ffmpeg (the command) not installed")
        grey_alpha = tmp_path / "cutout-ya8.png"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-pix_fmt", "ya8", str(grey_alpha)], check=True)
        source = grey_alpha
    png = tmp_path / "colour.png"
    result = run_cli(source, "-o", png, "--model", ab_model)
    assert result.returncode == 0, result.stderr
    written = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    assert written.shape == (height, width, 4)
    assert np.array_equal(written[:, :, 3], cv2.imread(str(source), cv2.IMREAD_UNCHANGED)[:, :, -1])
    jpeg = tmp_path / "colour.jpg"
    result = run_cli(source, "-o", jpeg, "--model", ab_model)
    assert result.returncode == 0, result.stderr
    assert (f"warning: .jpg has no alpha channel: the transparency of {source} is dropped "
            "(use .png, .webp or .tif to keep it)") in result.stderr.splitlines()


@pytest.mark.parametrize("start, duration, first, count", [
    ("2", "3", 50, 75), ("0:00:02.000", "0:03", 50, 75),
    ("2.5", "3", 63, 75),  # between two frames: the first is the one at 2.52 s, shown at 0.02 s
    ("0", "0.5", 0, 13),  # the frame at 0.48 s starts inside the half second: kept, as by ffmpeg -t 0.5
])
def test_start_and_duration_colorize_exactly_the_frames_whose_pts_lies_in_that_part_with_its_sound(
        tmp_path, ab_model, start, duration, first, count):
    source = shared_file("video", "chaplin.mp4")  # 25 fps, a frame every 40 ms from 0
    output = tmp_path / "part.mp4"
    result = run_cli(source, "-o", output, "--model", ab_model, "--start", start, "--duration", duration,
                     "--crf", "0")
    assert result.returncode == 0, result.stderr
    assert f"frames: {count} decoded = {count} written" in result.last_error_line
    with av.open(str(source)) as original, av.open(str(output)) as part:
        wanted = [f.to_ndarray()[:360] for i, f in enumerate(original.decode(video=0)) if first <= i < first + count]
        got = list(part.decode(video=0))
        audio = part.streams.audio[0]
        audio_start = float(audio.start_time * audio.time_base)
        audio_length = float(audio.duration * audio.time_base)
    assert len(got) == count
    cut = parse_clock(start, "--start")
    for frame, luma, index in zip(got, wanted, itertools.count(first)):  # frame-accurate, on the source's clock
        assert abs(float(frame.pts * frame.time_base) - (index * 0.04 - cut)) < 1e-3
        assert np.array_equal(frame.to_ndarray()[:360], luma)
    assert abs(audio_start) < 0.03 and abs(audio_length - parse_clock(duration, "--duration")) < 0.05, (audio_start, audio_length)


@pytest.mark.parametrize("args, message", [
    (("--start", "soon"), "error: --start: expected seconds or [HH:]MM:SS[.ms], found 'soon'"),
    (("--start", "1:75"), "error: --start: expected seconds or [HH:]MM:SS[.ms], found '1:75'"),
    (("--duration", "-2"), "error: --duration: expected seconds or [HH:]MM:SS[.ms], found '-2'"),
    (("--start", "1:00:00"), "error: nothing to colorize from --start on: the video of {source} ends before it"),
])
def test_a_bad_part_is_one_clear_line_and_nothing_written(tmp_path, ab_model, args, message):
    source = shared_file("video", "chaplin.mp4")
    output = tmp_path / "part.mp4"
    result = run_cli(source, "-o", output, "--model", ab_model, *args)
    assert (result.returncode, result.stderr.strip()) == (2, message.format(source=source))
    assert list(tmp_path.iterdir()) == []


def ffmpeg_has(*names: str) -> bool:
    if shutil.which("ffmpeg") is None:
        return False
    listing = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    listing += subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return all(re.search(rf"\b{name}\b", listing) for name in names)


@pytest.mark.skipif(not ffmpeg_has("zscale", "tonemap", "libx265"), reason="ffmpeg with zscale, tonemap and libx265 needed")
@pytest.mark.parametrize("transfer, name", [("smpte2084", "HDR10 (PQ)"), ("arib-std-b67", "HLG")])
def test_hdr_is_tone_mapped_to_sdr_and_said_so(tmp_path, ab_model, transfer, name):
    source, rendering = tmp_path / "hdr.mp4", tmp_path / "sdr.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=1", "-vf",
                    f"zscale=tin=bt709:t={transfer}:pin=bt709:p=bt2020:min=bt709:m=bt2020nc:rin=tv:r=tv:npl=203,"
                    "format=yuv420p10le", "-c:v", "libx265", "-x265-params",
                    f"log-level=error:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc", str(source)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-vf",  # FFmpeg's own SDR rendering, to compare with
                    "zscale=t=linear:npl=203,format=gbrpf32le,zscale=p=bt709,tonemap=reinhard:desat=0,"
                    "zscale=t=bt709:m=bt709:r=tv,format=yuv420p", "-c:v", "libx264", "-crf", "0", str(rendering)],
                   check=True)
    output = tmp_path / "out.mp4"
    result = run_cli(source, "-o", output, "--model", ab_model, "--saturation", "0")
    assert result.returncode == 0, result.stderr
    assert (f"warning: {source} is {name}: tone-mapped to SDR BT.709 (reference white 203 cd/m², peak 1000 "
            "assumed) for colorization and output") in result.stderr.splitlines()

    def luma_p99(path: Path) -> float:
        with av.open(str(path)) as container:
            return float(np.mean([np.percentile(f.to_ndarray()[:360], 99) for f in container.decode(video=0)]))

    with av.open(str(output)) as container:
        context = container.streams.video[0].codec_context
        assert (context.color_primaries, context.color_trc) == (1, 1)  # tagged as what it now is: BT.709 SDR
    ours, reference, naive = luma_p99(output), luma_p99(rendering), luma_p99(source) / 4
    assert abs(ours / reference - 1) < 0.15, (ours, reference, naive)
