"""Temporal stability: stages.temporal.TemporalSmoother and models.evaluate_video."""
from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stages.lab import lightness_code
from stages.temporal import TemporalSmoother
from stream.config import TemporalConfig
from tests.conftest import save_colour_model

VIDEO_DIR = Path(__file__).resolve().parents[2] / "shared/data/video"
AB_SIZE = 32
FRAME_SIZE = 256


def texture(seed: int, size: int = FRAME_SIZE, blur: float = 3.0, contrast: float = 60.0) -> np.ndarray:
    """A smooth random gray texture, float32 size×size, values around 128."""
    noise = np.random.default_rng(seed).normal(0.0, 1.0, (size, size)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), blur)
    return 128.0 + contrast * smooth / smooth.std()


def to_lightness(gray: np.ndarray) -> np.ndarray:
    """A gray image → the lightness code the smoother takes (what the encoder receives)."""
    return lightness_code(np.repeat(np.clip(gray + 0.5, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2))


def frame_change(abs_: list[np.ndarray]) -> float:
    """Mean Euclidean ab change between consecutive 2×h×w predictions (Lab units)."""
    return float(np.mean([np.hypot(*(b - a)).mean() for a, b in zip(abs_, abs_[1:])]))


def run(smoother: TemporalSmoother, frames: list[np.ndarray], abs_: list[np.ndarray]) -> list[np.ndarray]:
    return [smoother.update(lightness, ab) for lightness, ab in zip(frames, abs_)]


# ---------------------------------------------------------------- config

def test_config_fields_have_defaults_within_their_documented_bounds():
    hints = typing.get_type_hints(TemporalConfig)
    for f in dataclasses.fields(TemporalConfig):
        if hints[f.name] in (int, float):
            low, high = f.metadata["min"], f.metadata["max"]
            assert low <= f.default <= high, f.name
        else:
            assert hints[f.name] is bool or typing.get_origin(hints[f.name]) is typing.Literal, f.name


# ---------------------------------------------------------------- smoother, synthetic

def test_static_scene_with_noisy_predictions_is_steadied():
    rng = np.random.default_rng(1)
    frame = to_lightness(texture(0))
    base = rng.normal(0.0, 20.0, (2, AB_SIZE, AB_SIZE)).astype(np.float32)
    noisy = [base + rng.normal(0.0, 8.0, base.shape).astype(np.float32) for _ in range(30)]
    out = run(TemporalSmoother(), [frame] * 30, noisy)
    assert all(o.shape == (2, AB_SIZE, AB_SIZE) and o.dtype == np.float32 for o in out)
    settled = out[10:]
    assert frame_change(settled) < 0.3 * frame_change(noisy[10:])
    # and stays on the truth: the average error against the noiseless ab shrinks too
    assert np.hypot(*(settled[-1] - base)).mean() < 0.6 * np.hypot(*(noisy[-1] - base)).mean()


def moving_square_frames(steps: int, shift: int, start: int = 64, side: int = 64):
    """A textured square sliding right by ``shift`` px per frame over a different static texture."""
    background, pattern = texture(10), texture(11, size=side, blur=2.0)
    frames, lefts = [], []
    for t in range(steps):
        left = start + t * shift
        image = background.copy()
        image[96:96 + side, left:left + side] = pattern
        frames.append(to_lightness(image))
        lefts.append(left)
    return frames, lefts, side


def test_history_follows_the_motion_of_a_translating_object():
    frames, lefts, side = moving_square_frames(steps=4, shift=8)
    scale = AB_SIZE / FRAME_SIZE
    top, bottom = int(96 * scale), int((96 + side) * scale)

    def columns(left: int) -> slice:
        return slice(int(math.ceil(left * scale)), int((left + side) * scale))

    first = np.zeros((2, AB_SIZE, AB_SIZE), np.float32)
    first[0, top:bottom, columns(lefts[0])] = 60.0  # the square is red in the first prediction only
    blank = np.zeros_like(first)
    smoother = TemporalSmoother(TemporalConfig(strength=0.9))
    out = run(smoother, frames, [first] + [blank] * (len(frames) - 1))[-1]
    a = out[0]
    now = a[top + 1:bottom - 1, columns(lefts[-1])]
    vacated = a[top + 1:bottom - 1, columns(lefts[0]).start:columns(lefts[-1]).start]
    assert not smoother.last_step.scene_cut
    assert now.mean() > 0.5 * 60.0 * 0.9 ** 3  # the colour moved with the square (about 0.9³ of it is left)
    assert vacated.mean() < 0.25 * now.mean()  # and did not stay behind on the uncovered background
    centre_x = (a.clip(0) * np.arange(AB_SIZE)[None]).sum() / a.clip(0).sum()
    expected_x = (lefts[-1] + side / 2) * scale - 0.5
    assert abs(centre_x - expected_x) < 1.5


def test_hard_cut_drops_the_history():
    rng = np.random.default_rng(2)
    scene_a, scene_b = to_lightness(texture(20)), to_lightness(texture(21, contrast=40.0) - 20.0)
    ab_a = np.full((2, AB_SIZE, AB_SIZE), 40.0, np.float32)
    smoother = TemporalSmoother()
    for _ in range(5):
        smoother.update(scene_a, ab_a + rng.normal(0, 2, ab_a.shape).astype(np.float32))
    assert not smoother.last_step.scene_cut
    ab_b = rng.normal(-30.0, 5.0, ab_a.shape).astype(np.float32)
    after_cut = smoother.update(scene_b, ab_b)
    assert smoother.last_step.scene_cut
    np.testing.assert_array_equal(after_cut, ab_b)
    # the next frame of the new scene is smoothed again, against the new scene's colours only
    next_frame = smoother.update(scene_b, ab_b + 1.0)
    assert not smoother.last_step.scene_cut
    assert np.abs(next_frame - ab_b).max() <= 1.0 + 1e-4


def test_signalled_cut_reset_and_first_frame_return_the_prediction():
    frame = to_lightness(texture(30))
    ab1 = np.full((2, AB_SIZE, AB_SIZE), 30.0, np.float32)
    ab2 = np.full((2, AB_SIZE, AB_SIZE), -30.0, np.float32)
    smoother = TemporalSmoother()
    np.testing.assert_array_equal(smoother.update(frame, ab1), ab1)  # first frame
    assert not np.array_equal(smoother.update(frame, ab2), ab2)  # history in use
    smoother.reset()
    np.testing.assert_array_equal(smoother.update(frame, ab2), ab2)
    assert not np.array_equal(smoother.update(frame, ab1), ab1)
    np.testing.assert_array_equal(smoother.update(frame, ab2, scene_cut=True), ab2)
    # a different frame size or ab grid is a new stream too
    np.testing.assert_array_equal(smoother.update(to_lightness(texture(30, size=128)), ab1), ab1)
    small_ab = np.zeros((2, 16, 16), np.float32)
    np.testing.assert_array_equal(smoother.update(to_lightness(texture(30, size=128)), small_ab), small_ab)


def test_disabled_smoother_passes_predictions_through_and_input_is_not_modified():
    frame = to_lightness(texture(40))
    ab = np.random.default_rng(4).normal(0, 10, (2, AB_SIZE, AB_SIZE)).astype(np.float32)
    for config in (TemporalConfig(enabled=False), TemporalConfig(strength=0.0)):
        smoother = TemporalSmoother(config)
        for _ in range(3):
            out = smoother.update(frame, ab + 1.0)
            np.testing.assert_array_equal(out, ab + 1.0)
    kept = ab.copy()
    smoother = TemporalSmoother()
    smoother.update(frame, ab)
    smoother.update(frame, ab * 0.5)
    np.testing.assert_array_equal(ab, kept)


def test_identical_input_gives_identical_output():
    frames, _, _ = moving_square_frames(steps=6, shift=5)
    rng = np.random.default_rng(5)
    abs_ = [rng.normal(0, 15, (2, AB_SIZE, AB_SIZE)).astype(np.float32) for _ in frames]
    first = run(TemporalSmoother(), frames, abs_)
    again = TemporalSmoother()
    run(again, frames[:3], abs_[:3])
    again.reset()
    second = run(again, frames, abs_)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- real clips

def clip(name: str) -> Path:
    path = VIDEO_DIR / name
    if not path.is_file():
        pytest.skip(f"shared clip {path} not present (../shared/data/video is read in place, never copied)")
    return path


def first_frames(path: Path, count: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def test_real_cut_between_two_clips_is_detected_and_shots_are_not_cut():
    from models.evaluate_video import desaturate

    shot_a = first_frames(clip("video_with_failing_audio.mp4"), 6)
    shot_b = first_frames(clip("bottle-detection.mp4"), 6)
    smoother = TemporalSmoother()
    ab = np.zeros((2, 56, 56), np.float32)
    cuts = []
    for index, rgb in enumerate(shot_a + shot_b):
        smoother.update(lightness_code(desaturate(rgb)), ab)
        if smoother.last_step.scene_cut:
            cuts.append(index)
    assert cuts == [0, len(shot_a)]


# ---------------------------------------------------------------- sparse inference: carry and cadence

def test_a_skipped_frame_carries_the_colour_along_the_motion():
    frames, lefts, side = moving_square_frames(steps=4, shift=8)
    scale = AB_SIZE / FRAME_SIZE
    top, bottom = int(96 * scale), int((96 + side) * scale)
    first = np.zeros((2, AB_SIZE, AB_SIZE), np.float32)
    first[0, top:bottom, int(math.ceil(lefts[0] * scale)):int((lefts[0] + side) * scale)] = 60.0
    smoother = TemporalSmoother(TemporalConfig(enabled=False))  # carrying needs no smoothing
    smoother.update(frames[0], first)
    for frame in frames[1:]:
        carried = smoother.carry(frame)
    a = carried[0]
    centre_x = (a.clip(0) * np.arange(AB_SIZE)[None]).sum() / a.clip(0).sum()
    assert abs(centre_x - ((lefts[-1] + side / 2) * scale - 0.5)) < 1.5  # the red moved with the square
    assert a.max() > 40.0  # and was not washed out (no blending with a prediction)


def test_carry_with_no_history_gives_no_colour_rather_than_another_shots():
    smoother = TemporalSmoother()
    assert np.array_equal(smoother.carry(to_lightness(texture(3))), np.zeros((2, 1, 1), np.float32))
    assert smoother.last_step.scene_cut


def test_the_model_runs_every_kth_frame_and_at_every_cut_the_smoother_would_see():
    from models.evaluate_video import desaturate
    from stages.temporal import ModelCadence

    shot_a = first_frames(clip("video_with_failing_audio.mp4"), 7)
    shot_b = first_frames(clip("bottle-detection.mp4"), 6)
    cadence = ModelCadence(4)
    runs = [cadence.wants_model(cv2.cvtColor(desaturate(rgb), cv2.COLOR_RGB2GRAY)) for rgb in shot_a + shot_b]
    assert [i for i, run in enumerate(runs) if run] == [0, 4, 7, 11]  # the cut at 7 restarts the count
    assert all(ModelCadence(1).wants_model(np.zeros((4, 4), np.uint8)) for _ in range(3))


def noisy_colorizer(path: Path, size: int = 64) -> Path:
    """A tiny ONNX colorizer whose ab depends on fine L detail (so per-frame output flickers):
    L − 50 (N×1×64×64) → 30·sin(0.15·conv4×4/stride 4(L)) as ab N×2×16×16."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(7)
    weights = rng.choice([-1.0, 1.0], size=(2, 1, 4, 4)).astype(np.float32)
    return save_colour_model(
        path, "noisy_colorizer",
        [helper.make_node("Conv", ["l", "w"], ["c"], strides=[4, 4]),
         helper.make_node("Mul", ["c", "k"], ["ck"]),
         helper.make_node("Sin", ["ck"], ["s"]),
         helper.make_node("Mul", ["s", "amp"], ["ab"])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array(0.15, np.float32), "k"),
         numpy_helper.from_array(np.array(30.0, np.float32), "amp")],
        size=size, input_name="l", opset=13)


def test_evaluate_video_reports_less_flicker_with_temporal_smoothing(tmp_path):
    from models.evaluate_video import evaluate_video, main

    video = clip("video_with_failing_audio.mp4")
    model = noisy_colorizer(tmp_path / "noisy.onnx")
    sample = tmp_path / "side.mp4"
    report = evaluate_video(model, video, TemporalConfig(), max_frames=12, sample_path=sample)
    assert report.frame_count == 12 and (report.height, report.width) == (360, 640)
    assert report.has_colour
    assert report.temporal.flicker < 0.7 * report.per_frame.flicker
    assert report.flicker_reduction_pct > 30.0
    for scores in (report.per_frame, report.temporal):
        assert 5.0 < scores.psnr_db < 60.0 and 0.0 < scores.auc_pct <= 100.0
        assert scores.seconds_per_frame > 0.0
    assert report.temporal.psnr_db > report.per_frame.psnr_db - 1.0
    assert 0.0 < report.smoother_seconds_per_frame < report.temporal.seconds_per_frame
    assert report.scene_cuts == []
    assert report.frames[0].ab_gap == 0.0 and math.isnan(report.frames[0].flicker_per_frame)
    with av.open(str(sample)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (2 * 640, 360)
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == 12
    json_path = tmp_path / "report.json"
    assert main([str(model), str(video), "--max-frames", "3", "--json", str(json_path)]) == 0
    assert '"flicker_reduction_pct"' in json_path.read_text()


def test_evaluate_video_without_colour_reports_flicker_only(tmp_path):
    from models.evaluate_video import evaluate_video

    report = evaluate_video(noisy_colorizer(tmp_path / "noisy.onnx"), clip("test_video.mp4"), None, max_frames=4)
    assert not report.has_colour and report.temporal is None
    assert math.isnan(report.per_frame.psnr_db) and report.per_frame.flicker > 0.0
    assert "per-frame" in report.format_table()


def test_evaluate_video_bad_input_is_one_error_line(tmp_path, capsys):
    from models.evaluate_video import main

    model = noisy_colorizer(tmp_path / "noisy.onnx")
    assert main([str(model), str(tmp_path / "missing.mp4")]) == 2
    assert capsys.readouterr().err.startswith("error: video not found")
