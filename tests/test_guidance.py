"""Colour by example: keyframes set the colour around them within a shot, references pull the palette,
and a keyframe that does not fit is one error line before any work."""
from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from tests.conftest import run_cli, shared_file


def ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *map(str, args)], check=True)


def lab_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [cv2.cvtColor(f.to_ndarray(format="rgb24").astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
                for f in container.decode(video=0)]


def ab_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.square(a[..., 1:] - b[..., 1:]).sum(axis=2)).mean())


def save_frame(video: Path, index: int, image: Path) -> Path:
    with av.open(str(video)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n == index:
                cv2.imwrite(str(image), cv2.cvtColor(frame.to_ndarray(format="rgb24"), cv2.COLOR_RGB2BGR))
                return image
    raise AssertionError(f"{video} has no frame {index}")


@pytest.fixture(scope="module")
def two_shots(tmp_path_factory):
    """40 frames of car-detection.mp4 then 40 of bottle-detection.mp4 (a cut at frame 40), 640×360,
    in colour (the truth) and desaturated (the input)."""
    folder = tmp_path_factory.mktemp("shots")
    colour, grey = folder / "colour.mp4", folder / "grey.mp4"
    ffmpeg("-i", shared_file("video", "car-detection.mp4"), "-i", shared_file("video", "bottle-detection.mp4"),
           "-filter_complex", "[0:v]scale=640:360,fps=25,trim=end_frame=40,setpts=N/25/TB[a];"
                              "[1:v]scale=640:360,fps=25,trim=end_frame=40,setpts=N/25/TB[b];[a][b]concat=n=2[v]",
           "-map", "[v]", "-c:v", "libx264", "-crf", "12", colour)
    ffmpeg("-i", colour, "-vf", "hue=s=0", "-c:v", "libx264", "-crf", "12", grey)
    return colour, grey, folder


def test_a_keyframe_colours_the_frames_on_both_sides_of_it_and_none_past_the_cut(two_shots, tmp_path):
    colour, grey, folder = two_shots
    keyframe = save_frame(colour, 20, tmp_path / "frame20.png")
    assert run_cli(grey, "-o", tmp_path / "auto.mp4", "-q").returncode == 0
    guided = run_cli(grey, "-o", tmp_path / "guided.mp4", "--keyframe", f"20={keyframe}", "-q")
    assert guided.returncode == 0, guided.stderr
    truth, auto, kept = lab_frames(colour), lab_frames(tmp_path / "auto.mp4"), lab_frames(tmp_path / "guided.mp4")
    assert len(kept) == len(truth) == 80
    assert ab_distance(kept[20], truth[20]) < 2.0  # the keyframe's own colour, on the frame's lightness
    for index in (2, 10, 30, 39):  # before and after it, in its shot
        assert ab_distance(kept[index], truth[index]) < 0.6 * ab_distance(auto[index], truth[index]), index
    for index in (40, 50, 79):  # past the cut: the model's own colour
        assert ab_distance(kept[index], auto[index]) < 0.5, index


def test_a_moving_coloured_object_keeps_its_colour_through_the_shot(tmp_path):
    colour, grey = tmp_path / "colour.mp4", tmp_path / "grey.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=0x808080:size=320x240:rate=25:duration=2", "-f", "lavfi",
           "-i", "color=c=0xd02020:size=48x48:rate=25:duration=2",
           "-filter_complex", "[0][1]overlay=x='40+60*t':y=96,noise=alls=6:allf=t", "-c:v", "libx264", "-crf", "10",
           colour)
    ffmpeg("-i", colour, "-vf", "hue=s=0", "-c:v", "libx264", "-crf", "10", grey)
    keyframe = save_frame(colour, 0, tmp_path / "first.png")
    result = run_cli(grey, "-o", tmp_path / "out.mp4", "--keyframe", f"0={keyframe}", "-q")
    assert result.returncode == 0, result.stderr
    last = lab_frames(tmp_path / "out.mp4")[-1]
    x = round(40 + 60 * 49 / 25)  # where the square is in the last frame (frame 49)
    square = last[104:136, x + 8:x + 40]
    assert square[..., 1].mean() > 25, "the red square lost its colour"
    assert abs(last[20:60, 250:300, 1:]).mean() < 6, "the grey background took colour"


def test_a_keyframe_at_a_time_lands_on_the_frame_shown_then_also_with_variable_frame_rate(tmp_path):
    from stages.guidance import KeyframeSpec, resolve_keyframes

    vfr = tmp_path / "vfr.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2",
           "-vf", "setpts='if(lt(N,20),N*0.04,0.8+(N-20)*0.1)/TB'", "-fps_mode", "vfr", "-c:v", "libx264", vfr)
    with av.open(str(vfr)) as container:
        stream = container.streams.video[0]
        times = sorted(p.pts for p in container.demux(stream) if p.size)
        time_base = stream.time_base
    seconds = [float((t - times[0]) * time_base) for t in times]
    steps = np.diff(seconds)
    assert steps.max() > 1.5 * steps.min(), "the clip is not variable frame rate"
    image, specs, expected = Path("unused.png"), [], []
    for index in (5, 19, 20, 24, len(times) - 1):  # a time within a frame's showing lands on that frame
        end = seconds[index + 1] if index + 1 < len(seconds) else seconds[index] + steps[-1]
        specs += [KeyframeSpec(f"{index}", image, time_s=(seconds[index] + end) / 2),
                  KeyframeSpec(f"{index}", image, time_s=seconds[index])]
        expected += [index, index]
    specs.append(KeyframeSpec("frame", image, frame=25))
    placed = [resolve_keyframes([spec], times, Fraction(time_base))[0] for spec in specs]
    assert [p.index for p in placed] == expected + [25]


def test_a_keyframe_for_a_still_gives_its_colour_and_a_reference_pulls_the_palette(tmp_path):
    original = shared_file("val", "cbsd68", "101085.png")
    grey = tmp_path / "grey.png"
    ffmpeg("-i", original, "-vf", "hue=s=0", grey)
    truth = cv2.cvtColor(cv2.imread(str(original)).astype(np.float32) / 255, cv2.COLOR_BGR2LAB)

    def result(*options) -> np.ndarray:
        output = tmp_path / f"out{len(list(tmp_path.iterdir()))}.png"
        run = run_cli(grey, "-o", output, *options)
        assert run.returncode == 0, run.stderr
        return cv2.cvtColor(cv2.imread(str(output)).astype(np.float32) / 255, cv2.COLOR_BGR2LAB)

    auto = result()
    assert ab_distance(result("--keyframe", f"0={original}"), truth) < 1.5
    referenced = result("--reference", original)
    cast = lambda lab: abs(lab[..., 1].mean() - truth[..., 1].mean()) + abs(lab[..., 2].mean() - truth[..., 2].mean())
    assert cast(referenced) < 0.7 * cast(auto)
    assert ab_distance(result("--reference", original, "--reference-strength", "0"), auto) < 0.01


@pytest.mark.parametrize("keyframe, message", [
    ("20", "error: --keyframe 20: expected POSITION=IMAGE (a frame number or a time, then a file)"),
    ("20=missing.png", "error: --keyframe 20=missing.png: image not found: missing.png"),
    ("500={frame}", "error: --keyframe 500={frame}: frame 500 is past the end of the video (80 frames, numbered from 0)"),
    ("00:00:09.5={frame}", "error: --keyframe 00:00:09.5={frame}: 9.5 s is past the end of the video (3.20 s)"),
    ("1:2:3:4={frame}", "error: --keyframe 1:2:3:4={frame}: expected seconds or [HH:]MM:SS[.ms], found '1:2:3:4'"),
    ("10={square}", "error: --keyframe {square}: the image is 100×100 (aspect 1.000), the video's frames are "
                    "640×360 (1.778)"),
    ("10={text}", "error: --keyframe {text}: not an image file OpenCV can read"),
])
def test_a_keyframe_that_does_not_fit_is_one_line_before_any_work(two_shots, tmp_path, keyframe, message):
    colour, grey, _ = two_shots
    names = {"frame": save_frame(colour, 10, tmp_path / "frame.png"), "square": tmp_path / "square.png",
             "text": tmp_path / "notes.png"}
    cv2.imwrite(str(names["square"]), np.zeros((100, 100, 3), np.uint8))
    names["text"].write_text("not a picture")
    result = run_cli(grey, "-o", tmp_path / "out.mp4", "--keyframe", keyframe.format(**names))
    assert (result.returncode, result.stderr.strip()) == (2, message.format(**names))
    assert not list(tmp_path.glob("*.mp4"))


def test_two_keyframes_on_one_frame_are_refused(two_shots, tmp_path):
    colour, grey, _ = two_shots
    frame = save_frame(colour, 10, tmp_path / "frame.png")
    result = run_cli(grey, "-o", tmp_path / "out.mp4", "--keyframe", f"10={frame}", "--keyframe", f"0.4={frame}")
    assert (result.returncode, result.stderr.strip()) == (
        2, f"error: --keyframe 10={frame} and --keyframe 0.4={frame} are both on frame 10: keep one")


def test_keyframe_images_named_in_a_yaml_file_are_found_beside_it(two_shots, tmp_path):
    colour, grey, _ = two_shots
    folder = tmp_path / "job"
    folder.mkdir()
    save_frame(colour, 10, folder / "frame10.png")
    (folder / "guided.yaml").write_text("guidance:\n  keyframes: ['10=frame10.png']\n")
    result = run_cli(grey, "-o", tmp_path / "out.mp4", "--config", folder / "guided.yaml", "-q")
    assert result.returncode == 0, result.stderr
    assert ab_distance(lab_frames(tmp_path / "out.mp4")[10], lab_frames(colour)[10]) < 2.0
