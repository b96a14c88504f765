"""Specification of `colorize evaluate` (models/evaluate.py): image-quality metrics of a colorization model."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from models import load_bin_centres
from models.evaluate import (CELL_WIDTH, GAP, LABEL_HEIGHT, THUMB_HEIGHT, AbErrorTally, ab_error,
                             ab_error_auc, class_rebalanced_weights, colourfulness, evaluate_images, lab_ab,
                             main, nearest_bins, psnr, sheet_size)
from tests.conftest import save_colour_model

CBSD68 = Path(__file__).resolve().parents[2] / "shared/data/val/cbsd68"
needs_cbsd68 = pytest.mark.skipif(not CBSD68.is_dir(), reason=f"validation images not found at {CBSD68}")

CONSTANT_AB = (15.0, 25.0)


def write_constant_ab_model(path: Path, a: float, b: float) -> Path:
    """ONNX model honouring the contract (N×1×224×224 L−50 → N×2×56×56 ab) that predicts ab = (a, b) everywhere."""
    from onnx import helper, numpy_helper

    nodes = [
        helper.make_node("AveragePool", ["l_minus_50"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["pooled", "weight", "bias"], ["ab"], kernel_shape=[1, 1]),
    ]
    initializers = [numpy_helper.from_array(np.zeros((2, 1, 1, 1), np.float32), "weight"),
                    numpy_helper.from_array(np.array([a, b], np.float32), "bias")]
    return save_colour_model(path, "constant_ab", nodes, initializers)


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    return write_constant_ab_model(tmp_path_factory.mktemp("models") / "constant.onnx", *CONSTANT_AB)


@pytest.fixture(scope="module")
def gray_model(tmp_path_factory) -> Path:
    return write_constant_ab_model(tmp_path_factory.mktemp("models") / "gray.onnx", 0.0, 0.0)


def lab_to_rgb(lightness: float, a: float, b: float, height: int = 48, width: int = 64) -> np.ndarray:
    lab = np.empty((height, width, 3), np.float32)
    lab[:] = (lightness, a, b)
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture
def synthetic_dir(tmp_path) -> Path:
    """Three small PNGs: two of the model's constant colour (two lightnesses), one neutral gray."""
    folder = tmp_path / "images"
    folder.mkdir()
    write_rgb(folder / "a_colour.png", lab_to_rgb(60.0, *CONSTANT_AB))
    write_rgb(folder / "b_colour.png", lab_to_rgb(45.0, *CONSTANT_AB, height=40, width=30))
    write_rgb(folder / "c_gray.png", np.full((32, 32, 3), 128, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


# ---------------------------------------------------------------- metric functions

class TestAbErrorAuc:
    """AuC = mean over t = 0..150 of the (weighted) share of pixels with ab error ≤ t, in 0..1."""

    def test_zero_error_scores_one(self):
        assert ab_error_auc(np.zeros((8, 8))) == 1.0

    def test_error_beyond_the_last_threshold_scores_zero(self):
        assert ab_error_auc(np.full((8, 8), 200.0)) == 0.0

    def test_constant_error_of_75_covers_thresholds_75_to_150(self):
        assert ab_error_auc(np.full((8, 8), 75.0)) == pytest.approx(76 / 151)  # ≈ 50.3 %

    def test_fractional_error_counts_from_the_next_integer_threshold(self):
        assert ab_error_auc(np.full(4, 74.2)) == pytest.approx(76 / 151)

    def test_half_the_pixels_right_half_hopeless_scores_one_half(self):
        assert ab_error_auc(np.array([0.0, 0.0, 500.0, 500.0])) == pytest.approx(0.5)

    def test_weights_are_normalised(self):
        err = np.array([0.0, 500.0])
        assert ab_error_auc(err, np.array([3.0, 1.0])) == pytest.approx(0.75)
        assert ab_error_auc(err, np.array([0.3, 0.1])) == pytest.approx(0.75)

    def test_max_threshold_changes_the_sweep(self):
        assert ab_error_auc(np.full(3, 10.0), max_threshold=19) == pytest.approx(10 / 20)


class TestClassRebalancing:
    def test_every_occupied_bin_carries_equal_weight_summing_to_one(self):
        bins = np.array([7] * 90 + [200] * 10)
        weights = class_rebalanced_weights(bins)
        assert weights.sum() == pytest.approx(1.0)
        assert weights[bins == 7].sum() == pytest.approx(0.5)
        assert weights[bins == 200].sum() == pytest.approx(0.5)

    def test_rare_colours_count_as_much_as_common_ones(self):
        bins = np.array([7] * 90 + [200] * 10)
        err = np.where(bins == 7, 0.0, 500.0)  # common colour exact, rare colour hopeless
        assert ab_error_auc(err) == pytest.approx(0.9)
        assert ab_error_auc(err, class_rebalanced_weights(bins)) == pytest.approx(0.5)

    def test_streaming_tally_matches_the_pooled_arrays(self):
        rng = np.random.default_rng(0)
        errs = [rng.gamma(2.0, 20.0, size=(30, 40)) for _ in range(3)]
        bins = [rng.choice([3, 50, 51, 312], size=(30, 40), p=[0.7, 0.2, 0.08, 0.02]) for _ in range(3)]
        tally = AbErrorTally()
        for err, b in zip(errs, bins):
            tally.add(err, b)
        all_err, all_bins = np.concatenate([e.ravel() for e in errs]), np.concatenate([b.ravel() for b in bins])
        assert tally.auc() == pytest.approx(ab_error_auc(all_err))
        assert tally.auc(rebalanced=True) == pytest.approx(ab_error_auc(all_err, class_rebalanced_weights(all_bins)))

    def test_empty_tally_is_nan(self):
        assert math.isnan(AbErrorTally().auc())

    def test_nearest_bins_maps_each_centre_to_itself(self):
        centres = load_bin_centres()
        assert np.array_equal(nearest_bins(centres[None]), np.arange(313)[None])


class TestPsnrAndColourfulness:
    def test_identical_images_score_the_100_db_cap(self):
        image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        assert psnr(image, image) == 100.0

    def test_psnr_of_a_known_mse(self):
        a = np.zeros((10, 10, 3), np.uint8)
        assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))  # MSE 1

    def test_gray_image_has_zero_colourfulness(self):
        assert colourfulness(np.full((8, 8, 3), 97, np.uint8)) == 0.0

    def test_uniform_colour_scores_0_3_times_mean_opponent_magnitude(self):
        image = np.zeros((4, 4, 3), np.uint8)
        image[..., 0] = 200  # rg = 200, yb = 100
        assert colourfulness(image) == pytest.approx(0.3 * math.hypot(200, 100))

    def test_colourfulness_grows_with_spread(self):
        flat = np.full((2, 2, 3), 100, np.uint8)
        varied = flat.copy()
        varied[0, 0] = (255, 0, 0)
        assert colourfulness(varied) > colourfulness(flat)

    def test_lab_ab_reads_back_the_colour_of_a_synthetic_image(self):
        assert np.allclose(lab_ab(lab_to_rgb(60.0, *CONSTANT_AB)), CONSTANT_AB, atol=1.5)

    def test_ab_error_is_euclidean_in_lab_units(self):
        truth = np.zeros((2, 2, 2), np.float32)
        predicted = np.full((2, 2, 2), (3.0, 4.0), np.float32)
        assert np.allclose(ab_error(predicted, truth), 5.0)


# ---------------------------------------------------------------- evaluate_images

def test_a_model_predicting_zero_ab_scores_exactly_the_grayscale_baseline(gray_model, synthetic_dir):
    report = evaluate_images(gray_model, synthetic_dir)
    assert report.ours == report.grayscale
    assert report.grayscale.colourfulness_share_pct < 1.0


def test_a_model_predicting_the_true_colour_beats_the_baseline(colour_model, synthetic_dir):
    report = evaluate_images(colour_model, synthetic_dir, limit=2)
    assert report.image_count == 2 and [s.name for s in report.images] == ["a_colour.png", "b_colour.png"]
    # truth ab ≈ (15, 25) up to uint8 rounding: ours is within a couple of units, gray is 29.2 away
    assert report.ours.auc_pct > 98.0
    assert report.grayscale.auc_pct == pytest.approx(100 * 121 / 151, abs=1.0)
    assert report.ours.auc_rebalanced_pct > report.grayscale.auc_rebalanced_pct
    assert report.ours.psnr_db > report.grayscale.psnr_db
    assert report.ours.colourfulness_share_pct == pytest.approx(100.0, abs=10.0)


def test_report_json_and_table_from_the_cli(colour_model, synthetic_dir, tmp_path, capsys):
    out = tmp_path / "out" / "report.json"
    assert main([str(colour_model), str(synthetic_dir), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "constant.onnx on 3 image(s)" in table and "grayscale" in table and "rebalanced" in table
    data = json.loads(out.read_text())
    assert data["image_count"] == 3 and len(data["images"]) == 3
    assert set(data["ours"]) == {"auc_pct", "auc_rebalanced_pct", "psnr_db", "colourfulness",
                                 "colourfulness_share_pct"}
    assert data["sheet_path"] is None
    assert set(data["per_image"]) >= {"auc_rebalanced_pct", "auc_rebalanced_gray_pct", "delta_a", "delta_b",
                                      "below_gray", "colourfulness_share_pct"}
    assert "colour cast, mean of ours minus truth" in table and "each image on its own" in table


def test_per_image_figures_report_the_colour_cast_and_images_below_grayscale(colour_model, synthetic_dir):
    report = evaluate_images(colour_model, synthetic_dir)
    per = report.per_image
    # two images are the model's own colour (no cast), the neutral one gets ab = (15, 25) added
    neutral = next(s for s in report.images if s.name.startswith("c_"))
    assert neutral.delta_a == pytest.approx(CONSTANT_AB[0], abs=2.0)
    assert neutral.delta_b == pytest.approx(CONSTANT_AB[1], abs=2.5)
    assert per.delta_a == pytest.approx(np.mean([s.delta_a for s in report.images]))
    assert per.images == 3 and per.below_gray == 1
    assert per.auc_rebalanced_pct == pytest.approx(np.mean([s.auc_rebalanced_pct for s in report.images]))


def test_green_truth_figure_is_our_mean_a_star_where_the_photo_is_green(colour_model, synthetic_dir, tmp_path):
    greens = tmp_path / "greens"
    greens.mkdir()
    write_rgb(greens / "lawn.png", lab_to_rgb(45.0, -30.0, 25.0))  # grass green; the model says a* +15
    write_rgb(greens / "sky.png", lab_to_rgb(70.0, -5.0, -30.0))  # blue: not counted
    report = evaluate_images(colour_model, greens)
    lawn, sky = sorted(report.images, key=lambda s: s.name)
    assert lawn.green_truth_pixels == 48 * 64 and sky.green_truth_pixels == 0
    assert report.per_image.green_truth_a == pytest.approx(CONSTANT_AB[0], abs=0.5)
    assert report.per_image.brief()["green_truth_a"] == pytest.approx(CONSTANT_AB[0], abs=0.5)
    assert re.search(r"is green \(a\* < -8, chroma >= 10\): mean a\* of ours \+1[45]\.\d\d \(above 0: vegetation "
                     r"leans red\)", report.format_table())
    no_green = evaluate_images(colour_model, synthetic_dir)
    assert math.isnan(no_green.per_image.green_truth_a) and no_green.per_image.brief()["green_truth_a"] is None
    assert "chroma >= 10): no such pixel" in no_green.format_table()


def test_saturation_zero_scores_exactly_the_grayscale_baseline(colour_model, synthetic_dir):
    from stream.config import ColourSettings

    report = evaluate_images(colour_model, synthetic_dir, colour=ColourSettings(saturation=0.0))
    assert report.ours == report.grayscale


@needs_cbsd68
def test_on_validation_photographs_writes_a_contact_sheet(colour_model, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main([str(colour_model), str(CBSD68), "--limit", "3", "--sheet", str(sheet), "--sheet-rows", "2"]) == 0
    assert "contact sheet" in capsys.readouterr().out
    image = cv2.imread(str(sheet))
    assert image.shape == (*sheet_size(2, 3), 3)
    assert image.shape[:2] == (2 * (LABEL_HEIGHT + THUMB_HEIGHT) + 3 * GAP, 3 * CELL_WIDTH + 4 * GAP)

    report = evaluate_images(colour_model, CBSD68, limit=2)
    assert report.image_count == 2
    assert report.ours.colourfulness_share_pct > 0.0
    assert 0.0 < report.grayscale.auc_pct < 100.0
    assert report.grayscale.auc_rebalanced_pct < report.grayscale.auc_pct  # rare colours are far from gray


# ---------------------------------------------------------------- bad input

def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def test_missing_model(synthetic_dir, tmp_path, capsys):
    missing = tmp_path / "nope.onnx"
    assert run_cli(capsys, str(missing), str(synthetic_dir)) == (2, f"error: model file not found: {missing}\n")


def test_file_that_is_not_a_model(synthetic_dir, tmp_path, capsys):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"this is not a protobuf")
    code, err = run_cli(capsys, str(bogus), str(synthetic_dir))
    assert code == 2
    assert err.startswith(f"error: cannot load model {bogus}: not a valid ONNX model")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_images_directory(colour_model, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert run_cli(capsys, str(colour_model), str(missing)) == (2, f"error: images directory not found: {missing}\n")


def test_directory_without_images(colour_model, tmp_path, capsys):
    (tmp_path / "readme.txt").write_text("no pictures here")
    assert run_cli(capsys, str(colour_model), str(tmp_path)) == (
        2, f"error: no images (*.jpg *.jpeg *.png *.bmp *.tif *.tiff) in {tmp_path}\n")


def test_unreadable_image(colour_model, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert run_cli(capsys, str(colour_model), str(tmp_path)) == (
        2, f"error: cannot read image: {tmp_path / 'broken.png'}\n")


def test_images_are_checked_before_the_model(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert run_cli(capsys, str(tmp_path / "nope.onnx"), str(missing))[1] == (
        f"error: images directory not found: {missing}\n")
