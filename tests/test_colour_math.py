"""The colour math of the pipeline matches an independent NumPy implementation of the recipe."""
from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
from models.runtime import ColorModel, annealed_mean
from models import load_bin_centres
from stages.decoder import frame_arrays
from stages.encoder import yuv420p_from_planes, yuv420p_picture
from stages.lab import (LIGHTNESS_CODE_PER_L, chroma_lightness_code, chroma_planes, lightness_code, luma_model_input,
                        merge_ab, merge_lightness, model_input)
from tests.conftest import shared_file
from tests.lab_reference import colorize_reference, rgb_to_lab


def test_model_input_is_lightness_minus_50_at_the_model_size():
    rgb = np.random.default_rng(1).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    x = model_input(rgb, (224, 224))
    assert x.shape == (1, 224, 224) and x.dtype == np.float32
    small = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)
    # OpenCV's float conversion interpolates the sRGB curve from a table: within 0.25 L of exact.
    np.testing.assert_allclose(x[0], rgb_to_lab(small / 255.0)[..., 0] - 50, atol=0.25)


def test_white_and_black_map_to_the_ends_of_the_lightness_range():
    x = model_input(np.full((8, 8, 3), 255, np.uint8), (4, 4))
    assert np.allclose(x, 50, atol=0.01)
    assert np.allclose(model_input(np.zeros((8, 8, 3), np.uint8), (4, 4)), -50, atol=0.01)


def test_lightness_code_keeps_the_frames_lightness_to_a_thousandth():
    rgb = np.random.default_rng(7).integers(0, 256, (300, 200, 3), dtype=np.uint8)  # more rows than one strip
    rgb[0, 0], rgb[0, 1] = 255, 0
    code = lightness_code(rgb)
    assert code.dtype == np.uint16 and code.shape == (300, 200)
    assert (code[0, 0], code[0, 1]) == (65535, 0)
    lightness = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)[..., 0]
    assert np.abs(code / LIGHTNESS_CODE_PER_L - lightness).max() < 1e-3


def test_zero_ab_keeps_a_gray_frame_gray():
    gray = np.repeat(np.linspace(0, 255, 64 * 48, dtype=np.float32).reshape(48, 64, 1), 3, axis=2).astype(np.uint8)
    out = merge_ab(gray, np.zeros((2, 12, 16), np.float32))
    assert np.abs(out.astype(int) - gray.astype(int)).max() <= 1


def test_pipeline_frame_matches_the_numpy_reference_within_one_level(ab_model):
    rgb = np.random.default_rng(2).integers(0, 256, (181, 243, 3), dtype=np.uint8)
    model = ColorModel(ab_model)
    ours = merge_ab(rgb, model.predict_ab(model_input(rgb, model.input_size)[None])[0])
    reference = colorize_reference(rgb, model.predict_ab)
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_colours_outside_the_rgb_gamut_saturate_instead_of_wrapping():
    rgb = np.random.default_rng(4).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    extreme = np.random.default_rng(5).choice(np.float32([-120, 120]), (1, 2, 4, 6))

    def predict(x):
        return extreme

    ours = merge_ab(rgb, extreme[0])
    reference = colorize_reference(rgb, predict)
    assert (reference == 0).mean() > 0.05 and (reference == 255).mean() > 0.05  # the test reaches both ends
    difference = np.abs(ours.astype(int) - reference.astype(int))
    # OpenCV clips through its interpolated sRGB table: a few levels apart at the gamut's edge, never wrapped
    assert difference.max() <= 4 and (difference > 1).mean() < 0.01


def test_pipeline_frame_matches_the_reference_on_a_real_photo(ab_model):
    folder = shared_file("val", "cbsd68")
    bgr = cv2.imread(str(sorted(folder.glob("*.png"))[0]))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    model = ColorModel(ab_model)
    ours = merge_ab(rgb, model.predict_ab(model_input(rgb, model.input_size)[None])[0])
    assert np.abs(ours.astype(int) - colorize_reference(rgb, model.predict_ab).astype(int)).max() <= 1


def test_bin_scores_are_decoded_with_the_annealed_mean(bins_model):
    model = ColorModel(bins_model)
    assert model.output_kind == "bins"
    x = np.random.default_rng(3).uniform(-50, 50, (2, 1, 224, 224)).astype(np.float32)
    raw = model.session.run(None, {"l_minus_50": x})[0].astype(np.float64)
    z = raw / 0.38
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = np.einsum("nqhw,qc->nchw", p, load_bin_centres().astype(np.float64))
    np.testing.assert_allclose(model.predict_ab(x), expected, atol=1e-3)
    np.testing.assert_allclose(annealed_mean(raw.astype(np.float32), load_bin_centres()), expected, atol=1e-3)


def test_annealed_mean_of_a_one_hot_distribution_is_that_bins_centre():
    centres = load_bin_centres()
    scores = np.full((1, 313, 1, 1), -100.0, np.float32)
    scores[0, 42] = 100.0
    np.testing.assert_allclose(annealed_mean(scores, centres)[0, :, 0, 0], centres[42], atol=1e-4)


@pytest.mark.parametrize("height, width", [(2, 2), (6, 10), (360, 640), (1080, 1920)])
def test_yuv420p_picture_is_bt601_limited_range_with_box_filtered_chroma(height, width):
    rgb = np.random.default_rng(6).integers(0, 256, (height, width, 3), dtype=np.uint8)
    picture = yuv420p_picture(rgb)
    assert (picture.format.name, picture.width, picture.height) == ("yuv420p", width, height)
    packed = picture.to_ndarray()
    ffmpeg = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
    assert np.abs(packed[:height].astype(int) - ffmpeg[:height]).max() <= 1  # luma: FFmpeg's own numbers
    r, g, b = (rgb[..., i].astype(float) for i in range(3))

    def box(plane):
        return plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)).ravel()

    u = box(-37.797 * r - 74.203 * g + 112.0 * b) / 255 + 128
    v = box(112.0 * r - 93.786 * g - 18.214 * b) / 255 + 128
    luma, quarter = height * width, height * width // 4
    assert np.abs(packed.reshape(-1)[luma:luma + quarter] - u).max() < 1
    assert np.abs(packed.reshape(-1)[luma + quarter:] - v).max() < 1


# ---------------------------------------------------------------- the 4:2:0 path: luma kept, chroma computed

def decoded_frames(name: str, every: int, count: int) -> list[av.VideoFrame]:
    with av.open(str(shared_file("video", name))) as container:
        frames = [frame for i, frame in enumerate(container.decode(video=0)) if i % every == 0]
    return frames[:count]


def smooth_ab(seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 60, (56, 56, 2)).astype(np.float32)
    return np.ascontiguousarray(cv2.GaussianBlur(noise, (0, 0), 3).transpose(2, 0, 1))


@pytest.mark.parametrize("clip", ["chaplin.mp4", "bottle-detection.mp4"])
def test_the_420_path_keeps_the_luma_and_gives_the_rgb_paths_chroma_within_a_level_or_two(clip):
    for index, frame in enumerate(decoded_frames(clip, every=30, count=6)):
        arrays = frame_arrays(frame)
        assert set(arrays) == {"luma"}
        luma, ab = arrays["luma"], smooth_ab(index)
        height = frame.height
        source = frame.to_ndarray()  # yuv420p: Y rows, then U and V
        assert np.array_equal(luma, source[:height])
        picture = yuv420p_from_planes(luma, *chroma_planes(chroma_lightness_code(luma), ab)).to_ndarray()
        assert np.array_equal(picture[:height], source[:height])
        rgb_path = yuv420p_picture(merge_lightness(lightness_code(frame.to_ndarray(format="rgb24")), ab)).to_ndarray()
        chroma_error = np.abs(picture[height:].astype(int) - rgb_path[height:])
        assert chroma_error.mean() < 0.5 and np.percentile(chroma_error, 99) <= 2, (clip, index)
        assert np.abs(picture[height:].astype(int) - 128).mean() > 3  # colour was added


def test_lightness_read_from_luma_is_the_rgb_paths_lightness_for_a_black_and_white_film():
    for frame in decoded_frames("chaplin.mp4", every=60, count=4):
        luma = frame_arrays(frame)["luma"]
        rgb = frame.to_ndarray(format="rgb24")
        assert np.abs(luma_model_input(luma, (224, 224)) - model_input(rgb, (224, 224))).mean() < 0.3
        half = cv2.resize(lightness_code(rgb).astype(np.float32), (rgb.shape[1] // 2, rgb.shape[0] // 2),
                          interpolation=cv2.INTER_AREA)
        assert np.abs(chroma_lightness_code(luma) - half).mean() / LIGHTNESS_CODE_PER_L < 0.3


@pytest.mark.parametrize("pix_fmt, size, path", [("yuv420p", (64, 48), "luma"), ("yuvj420p", (64, 48), "frame"),
                                                  ("yuv420p", (63, 48), "frame"), ("yuv444p", (64, 48), "frame"),
                                                  ("yuv420p10le", (64, 48), "frame")])
def test_only_8_bit_limited_range_420_frames_of_even_size_take_the_luma_path(pix_fmt, size, path):
    rgb = np.random.default_rng(3).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
    assert set(frame_arrays(frame)) == {path}


# ---------------------------------------------------------------- colour settings: strength and upsampling

def test_saturation_scales_the_colour_and_zero_gives_the_frames_own_grey():
    from stages.lab import frame_ab
    from stream.config import ColourSettings

    rgb = np.random.default_rng(8).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    ab = np.random.default_rng(9).uniform(-40, 40, (2, 14, 20)).astype(np.float32)
    code = lightness_code(rgb)
    for upsampling in ("bilinear", "guided"):
        full = frame_ab(code, ab, ColourSettings(upsampling=upsampling))
        half = frame_ab(code, ab, ColourSettings(saturation=0.5, upsampling=upsampling))
        np.testing.assert_allclose(half, 0.5 * full, atol=1e-3)
        grey = merge_ab(rgb, ab, ColourSettings(saturation=0.0, upsampling=upsampling))
        chroma = cv2.cvtColor(grey.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)[..., 1:]
        assert np.abs(chroma).max() < 1.5  # only uint8 rounding is left


def test_guided_upsampling_puts_the_colour_edge_on_the_lightness_edge():
    """A dark left half that the model saw as blue and a bright right half it saw as red: bilinear
    stretching smears the change over a whole ab cell (10 px here), the guided filter keeps it where
    the lightness changes."""
    from stages.lab import frame_ab
    from stream.config import ColourSettings

    height, width, edge = 40, 400, 203  # the edge falls inside an ab cell, not on its border
    lightness = np.full((height, width), 30.0, np.float32)
    lightness[:, edge:] = 80.0
    code = np.uint16(np.rint(lightness * LIGHTNESS_CODE_PER_L))
    ab = np.zeros((2, 4, 40), np.float32)
    cell_of_edge = edge * 40 // width
    ab[1, :, :cell_of_edge] = -40.0   # blue (b < 0)
    ab[0, :, cell_of_edge + 1:] = 40.0  # red (a > 0); the cell holding the edge is a neutral mix
    bilinear = frame_ab(code, ab, ColourSettings(upsampling="bilinear"))
    guided = frame_ab(code, ab, ColourSettings(upsampling="guided"))

    def bleed(result: np.ndarray) -> float:
        """Mean distance of ab, within 8 px of the edge, from the colour of its own side."""
        left = result[:, edge - 8:edge] - np.float32([0.0, -40.0])
        right = result[:, edge:edge + 8] - np.float32([40.0, 0.0])
        return float(np.concatenate([np.linalg.norm(left, axis=-1), np.linalg.norm(right, axis=-1)]).mean())

    assert bleed(guided) < 0.7 * bleed(bilinear)
    assert np.abs(guided).max() <= 127.0
