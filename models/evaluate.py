"""Image-quality evaluation of a colorization model against colour photographs.

    colorize evaluate MODEL IMAGES_DIR [--sheet sheet.png] [--json report.json] [--limit N]

Each image (``*.jpg *.jpeg *.png *.bmp *.tif *.tiff`` directly in IMAGES_DIR, sorted by name) is
colorized from its lightness alone (``model_input`` → ``predict_ab`` → ``merge_ab``) and compared with
the image itself (ground truth) and with the grayscale baseline (its own L with a = b = 0):

* AuC of the cumulative distribution of per-pixel ab error (Euclidean, Lab units, full resolution,
  predicted ab against ground-truth ab) over the thresholds 0, 1, …, 150, plain and class-rebalanced,
  as in Zhang et al., ECCV 2016, Table 1 ("AuC non-rebal / rebal");
* PSNR of the RGB result (uint8, peak 255), averaged over images;
* colourfulness (Hasler & Süsstrunk 2003) as a share of the ground truth's.

A contact sheet (rows of gray input | ours | ground truth) can be written for a person to look at.
Colour conventions are those of :mod:`stages.lab` (OpenCV float Lab, L in 0..100).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from models import NUM_BINS, load_bin_centres
from models.runtime import ColorModel, SessionSettings
from models.tool_cli import json_ready, positive_int, run_tool, write_json_report
from stages.lab import frame_ab, lightness_code, merge_lightness, model_input
from stream.config import ColourSettings
from stream.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_THRESHOLD = 150
PSNR_CAP_DB = 100.0
BATCH_SIZE = 8
DEFAULT_SHEET_ROWS = 12

THUMB_HEIGHT = 160
CELL_WIDTH = 240
LABEL_HEIGHT = 20
GAP = 4
SHEET_COLUMNS = ("gray input", "ours", "ground truth")
GREEN_TRUTH_A_MAX = -8.0  # a pixel's truth counts as green (vegetation, mostly) below this a* ...
GREEN_TRUTH_CHROMA_MIN = 10.0  # ... with at least this chroma (Lab units)
SHEET_BACKGROUND = (32, 32, 32)
LABEL_COLOUR = (235, 235, 235)


# ---------------------------------------------------------------- metrics

def lab_ab(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 H×W×3 → float32 H×W×2: its Lab a and b (OpenCV float Lab, about −128..127)."""
    lab = cv2.cvtColor(rgb.astype(np.float32) * np.float32(1.0 / 255.0), cv2.COLOR_RGB2LAB)
    return np.ascontiguousarray(lab[:, :, 1:])


def ab_error(predicted_ab: np.ndarray, true_ab: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean ab distance: two float H×W×2 arrays → float32 H×W, Lab units, ≥ 0."""
    diff = predicted_ab.astype(np.float32) - true_ab.astype(np.float32)
    return np.sqrt(np.einsum("hwc,hwc->hw", diff, diff))


def _threshold_buckets(err: np.ndarray, max_threshold: int) -> np.ndarray:
    """Bucket k = ceil(err), capped at max_threshold + 1, so that err ≤ t ⇔ k ≤ t for integer t."""
    return np.minimum(np.ceil(np.asarray(err, dtype=np.float64)), max_threshold + 1).astype(np.int64)


def ab_error_auc(err: np.ndarray, weights: np.ndarray | None = None,
                 max_threshold: int = MAX_THRESHOLD) -> float:
    """Area under the cumulative distribution of ab error, normalised to 0..1.

    ``err``: per-pixel ab error (any shape, Lab units, ≥ 0); ``weights``: per-pixel weights of the
    same shape (≥ 0, normalised here), or None for equal weights. The curve is the weighted share of
    pixels with ``err ≤ t`` at t = 0, 1, …, ``max_threshold``; the AuC is its mean over those
    ``max_threshold + 1`` points. So zero error scores 1, error above ``max_threshold`` scores 0,
    and a constant error e (integer, 0 ≤ e ≤ 150) scores (151 − e) / 151.
    """
    buckets = _threshold_buckets(err, max_threshold).ravel()
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    hist = np.bincount(buckets, weights=w, minlength=max_threshold + 2)
    total = hist.sum()
    if total <= 0:
        return math.nan
    return float((np.cumsum(hist)[:max_threshold + 1] / total).mean())


@lru_cache(maxsize=1)
def _nearest_bin_lut() -> np.ndarray:
    """int16 256×256: index of the nearest of the 313 bin centres for integer (a, b) = (i − 128, j − 128)."""
    centres = load_bin_centres().astype(np.float64)
    grid = np.stack(np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij"), -1)
    grid = grid.reshape(-1, 2).astype(np.float64)
    lut = np.empty(len(grid), np.int16)
    centre_norms = (centres ** 2).sum(1)
    for start in range(0, len(grid), 8192):
        chunk = grid[start:start + 8192]
        lut[start:start + 8192] = np.argmin(centre_norms[None] - 2.0 * chunk @ centres.T, axis=1)
    return lut.reshape(256, 256)


def nearest_bins(ab: np.ndarray) -> np.ndarray:
    """float H×W×2 ab → int64 H×W index (0..312) of the nearest bin centre (ab rounded to integers first)."""
    index = np.clip(np.rint(ab).astype(np.int64) + 128, 0, 255)
    return _nearest_bin_lut()[index[..., 0], index[..., 1]].astype(np.int64)


def class_rebalanced_weights(bins: np.ndarray) -> np.ndarray:
    """Per-pixel weights from ground-truth bin indices (int, any shape) → float64, same shape, sum 1.

    Each pixel is weighted by 1 / prior(its bin), the prior being the empirical distribution of
    ``bins`` itself, so every occupied bin carries the same total weight.
    """
    flat = np.asarray(bins).ravel()
    counts = np.bincount(flat, minlength=NUM_BINS).astype(np.float64)
    prior = counts / counts.sum()
    weights = 1.0 / prior[flat]
    return (weights / weights.sum()).reshape(np.shape(bins))


@dataclass
class AbErrorTally:
    """Streaming form of :func:`ab_error_auc` over many images: counts per (ground-truth bin, error bucket).

    ``auc(rebalanced=True)`` equals ``ab_error_auc(all_err, class_rebalanced_weights(all_bins))`` over
    every pixel added, with the prior taken from all of them; memory is fixed (313 × 152 counts).
    """

    max_threshold: int = MAX_THRESHOLD
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros((NUM_BINS, self.max_threshold + 2), np.int64)

    def add(self, err: np.ndarray, bins: np.ndarray) -> None:
        """Add pixels: ab error (float, ≥ 0) and their ground-truth bin index (int 0..312), same shape."""
        width = self.max_threshold + 2
        cells = np.asarray(bins, np.int64).ravel() * width + _threshold_buckets(err, self.max_threshold).ravel()
        self.counts += np.bincount(cells, minlength=NUM_BINS * width).reshape(NUM_BINS, width)

    def auc(self, rebalanced: bool = False) -> float:
        """AuC (0..1) of all pixels added so far; nan if none."""
        per_bin = self.counts.sum(axis=1).astype(np.float64)
        total = per_bin.sum()
        if total == 0:
            return math.nan
        if rebalanced:
            bin_weight = np.divide(total, per_bin, out=np.zeros_like(per_bin), where=per_bin > 0)
        else:
            bin_weight = np.ones_like(per_bin)
        curve = bin_weight @ np.cumsum(self.counts, axis=1)[:, :self.max_threshold + 1]
        return float((curve / (bin_weight @ per_bin)).mean())


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two same-shape images (uint8 RGB, peak 255); capped at PSNR_CAP_DB (identical → 100 dB)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse <= 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(peak * peak / mse))


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) colourfulness of an RGB image (uint8 H×W×3, values 0..255); ≥ 0, gray → 0.

    M = sqrt(σ_rg² + σ_yb²) + 0.3·sqrt(μ_rg² + μ_yb²) with rg = R − G and yb = (R + G)/2 − B.
    """
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


# ---------------------------------------------------------------- report

@dataclass(frozen=True)
class MethodScores:
    """Scores of one method (ours, or the grayscale baseline) over all evaluated images.

    AuC values and the colourfulness share are percentages (0..100; the share may exceed 100);
    ``psnr_db`` is the mean over images; ``colourfulness`` the mean M over images.
    """

    auc_pct: float
    auc_rebalanced_pct: float
    psnr_db: float
    colourfulness: float
    colourfulness_share_pct: float


@dataclass(frozen=True)
class ImageScores:
    """One image's scores, ours beside the grayscale baseline's (same image, a = b = 0).

    AuC values are percentages (0..100), the rebalanced one weighting each pixel by 1 / the share
    of its ground-truth bin in this image alone; PSNR in dB; colourfulness is Hasler–Süsstrunk M;
    ``delta_a`` / ``delta_b`` are the mean a* / b* of our output minus the ground truth's (Lab
    units; + is a red / yellow cast). ``green_truth_pixels`` counts the pixels whose truth is green
    (a* < GREEN_TRUTH_A_MAX, chroma ≥ GREEN_TRUTH_CHROMA_MIN) and ``green_truth_ours_a_sum`` adds up
    our a* there (before the RGB gamut).
    """

    name: str
    height: int
    width: int
    auc_pct: float
    auc_gray_pct: float
    auc_rebalanced_pct: float
    auc_rebalanced_gray_pct: float
    psnr_db: float
    psnr_gray_db: float
    colourfulness: float
    colourfulness_gray: float
    colourfulness_truth: float
    delta_a: float
    delta_b: float
    green_truth_pixels: int = 0
    green_truth_ours_a_sum: float = 0.0


@dataclass(frozen=True)
class PerImageSummary:
    """Means over images of each image's own scores (every image counts the same, whatever its size).

    Gains are ours minus the grayscale baseline's (AuC in points, PSNR in dB); ``delta_a`` /
    ``delta_b`` the mean colour cast (Lab units); ``below_gray`` the number of images whose
    rebalanced AuC is below their grayscale baseline's; ``colourfulness_share_pct`` the mean of
    ours over the mean of the ground truth's, in percent; ``green_truth_a`` our mean a* over every
    pixel whose truth is green, pooled (NaN when there is none): above 0, grass and leaves lean red,
    which is how a model paints a black-and-white film's lawns red (docs/make_gallery.py measures that).
    """

    images: int
    auc_rebalanced_pct: float
    auc_rebalanced_gray_pct: float
    auc_pct: float
    auc_gray_pct: float
    psnr_db: float
    psnr_gray_db: float
    delta_a: float
    delta_b: float
    below_gray: int
    colourfulness_share_pct: float
    green_truth_a: float = math.nan

    @classmethod
    def of(cls, scores: list[ImageScores]) -> "PerImageSummary":
        """Summarise a non-empty list of :class:`ImageScores`."""
        def mean(key: str) -> float:
            return float(np.mean([getattr(s, key) for s in scores]))
        truth = mean("colourfulness_truth")
        green = sum(s.green_truth_pixels for s in scores)
        return cls(
            images=len(scores),
            auc_rebalanced_pct=mean("auc_rebalanced_pct"), auc_rebalanced_gray_pct=mean("auc_rebalanced_gray_pct"),
            auc_pct=mean("auc_pct"), auc_gray_pct=mean("auc_gray_pct"),
            psnr_db=mean("psnr_db"), psnr_gray_db=mean("psnr_gray_db"),
            delta_a=mean("delta_a"), delta_b=mean("delta_b"),
            below_gray=sum(s.auc_rebalanced_pct < s.auc_rebalanced_gray_pct for s in scores),
            colourfulness_share_pct=100.0 * mean("colourfulness") / truth if truth > 0 else math.nan,
            green_truth_a=sum(s.green_truth_ours_a_sum for s in scores) / green if green else math.nan)

    def brief(self) -> dict:
        """The figures the quality targets are stated in, rounded, as a JSON-ready dict."""
        return {"rbauc_gain": round(self.auc_rebalanced_pct - self.auc_rebalanced_gray_pct, 2),
                "auc_gain": round(self.auc_pct - self.auc_gray_pct, 2),
                "psnr_gain": round(self.psnr_db - self.psnr_gray_db, 2),
                "delta_a": round(self.delta_a, 2), "delta_b": round(self.delta_b, 2),
                "below_gray": self.below_gray, "colourfulness_pct": round(self.colourfulness_share_pct, 1),
                "green_truth_a": round(self.green_truth_a, 2) if math.isfinite(self.green_truth_a) else None}


@dataclass(frozen=True)
class ImageQualityReport:
    """Result of :func:`evaluate_images`: pooled scores of ours and of the grayscale baseline."""

    model: str
    images_dir: str
    image_count: int
    ours: MethodScores
    grayscale: MethodScores
    colourfulness_truth: float
    per_image: PerImageSummary
    images: list[ImageScores]
    sheet_path: str | None
    sheet_rows: int
    seconds: float

    def to_json(self) -> dict:
        """A JSON-ready dict (nan → None)."""
        return json_ready(asdict(self))

    def format_table(self) -> str:
        """A readable table, ours against the grayscale baseline."""
        def cell(value: float) -> str:
            return "n/a" if not math.isfinite(value) else f"{value:.2f}"
        rows = [
            ("AuC ab error <= 0..150, plain (%)", self.ours.auc_pct, self.grayscale.auc_pct),
            ("AuC ab error <= 0..150, rebalanced (%)", self.ours.auc_rebalanced_pct,
             self.grayscale.auc_rebalanced_pct),
            ("PSNR RGB, mean over images (dB)", self.ours.psnr_db, self.grayscale.psnr_db),
            ("colourfulness, share of truth (%)", self.ours.colourfulness_share_pct,
             self.grayscale.colourfulness_share_pct),
            ("colourfulness M, mean (truth {})".format(cell(self.colourfulness_truth)),
             self.ours.colourfulness, self.grayscale.colourfulness),
        ]
        per = self.per_image
        per_rows = [
            ("per image: AuC rebalanced, mean (%)", per.auc_rebalanced_pct, per.auc_rebalanced_gray_pct),
            ("per image: AuC plain, mean (%)", per.auc_pct, per.auc_gray_pct),
            ("per image: PSNR, mean (dB)", per.psnr_db, per.psnr_gray_db),
        ]
        width = max(len(name) for name, _, _ in rows + per_rows)
        lines = [f"{Path(self.model).name} on {self.image_count} image(s) from {self.images_dir} "
                 f"({self.seconds:.1f} s)",
                 f"{'pooled over all pixels':<{width}}  {'ours':>9}  {'grayscale':>9}"]
        lines += [f"{name:<{width}}  {cell(ours):>9}  {cell(gray):>9}" for name, ours, gray in rows]
        lines += [f"{'each image on its own':<{width}}  {'ours':>9}  {'grayscale':>9}"]
        lines += [f"{name:<{width}}  {cell(ours):>9}  {cell(gray):>9}" for name, ours, gray in per_rows]
        lines.append(f"colour cast, mean of ours minus truth: a* {per.delta_a:+.2f}, b* {per.delta_b:+.2f}; "
                     f"{per.below_gray} of {per.images} images below grayscale on rebalanced AuC")
        lines.append(f"where the truth is green (a* < {GREEN_TRUTH_A_MAX:g}, chroma >= {GREEN_TRUTH_CHROMA_MIN:g}): "
                     + (f"mean a* of ours {per.green_truth_a:+.2f} (above 0: vegetation leans red)"
                        if math.isfinite(per.green_truth_a) else "no such pixel"))
        if self.sheet_path:
            lines.append(f"contact sheet: {self.sheet_path} ({self.sheet_rows} rows: "
                         f"{' | '.join(SHEET_COLUMNS)})")
        return "\n".join(lines)


# ---------------------------------------------------------------- contact sheet

def sheet_size(rows: int, columns: int = len(SHEET_COLUMNS)) -> tuple[int, int]:
    """(height, width) in pixels of a contact sheet with ``rows`` rows of ``columns`` labelled thumbnails."""
    return (rows * (LABEL_HEIGHT + THUMB_HEIGHT) + (rows + 1) * GAP,
            columns * CELL_WIDTH + (columns + 1) * GAP)


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 → RGB uint8 scaled to fit THUMB_HEIGHT × CELL_WIDTH, aspect kept."""
    height, width = rgb.shape[:2]
    scale = min(THUMB_HEIGHT / height, CELL_WIDTH / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _put_label(sheet: np.ndarray, text: str, x: int, y: int) -> None:
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1
    while len(text) > 1 and cv2.getTextSize(text, font, scale, thickness)[0][0] > CELL_WIDTH - 4:
        text = text[:-2] + "~"
    cv2.putText(sheet, text, (x + 2, y + LABEL_HEIGHT - 6), font, scale, LABEL_COLOUR, thickness, cv2.LINE_AA)


def contact_sheet(rows: list[tuple[list[str], list[np.ndarray]]]) -> np.ndarray:
    """Rows of (labels, thumbnails) → RGB uint8 sheet of :func:`sheet_size` (each thumbnail centred in its cell)."""
    columns = len(rows[0][1]) if rows else len(SHEET_COLUMNS)
    sheet = np.empty((*sheet_size(len(rows), columns), 3), np.uint8)
    sheet[:] = SHEET_BACKGROUND
    for r, (labels, thumbs) in enumerate(rows):
        top = GAP + r * (LABEL_HEIGHT + THUMB_HEIGHT + GAP)
        for c, (label, thumb) in enumerate(zip(labels, thumbs)):
            left = GAP + c * (CELL_WIDTH + GAP)
            _put_label(sheet, label, left, top)
            th, tw = thumb.shape[:2]
            y, x = top + LABEL_HEIGHT + (THUMB_HEIGHT - th) // 2, left + (CELL_WIDTH - tw) // 2
            sheet[y:y + th, x:x + tw] = thumb
    return sheet


# ---------------------------------------------------------------- evaluation

def list_images(images_dir: Path, limit: int | None = None) -> list[Path]:
    """Image files directly in ``images_dir``, sorted by name, at most ``limit``; InputError if none."""
    images_dir = Path(images_dir)
    if not images_dir.exists():
        raise InputError(f"images directory not found: {images_dir}")
    if not images_dir.is_dir():
        raise InputError(f"not a directory: {images_dir}")
    paths = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"no images ({' '.join('*' + s for s in IMAGE_SUFFIXES)}) in {images_dir}")
    return paths if limit is None else paths[:limit]


def read_rgb(path: Path) -> np.ndarray:
    """An image file → RGB uint8 H×W×3 (alpha dropped, 16-bit scaled, gray expanded); InputError if unreadable."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read image: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass
class _Totals:
    tally_ours: AbErrorTally = field(default_factory=AbErrorTally)
    tally_gray: AbErrorTally = field(default_factory=AbErrorTally)
    images: list[ImageScores] = field(default_factory=list)
    sheet_rows: list[tuple[list[str], list[np.ndarray]]] = field(default_factory=list)


_ZERO_AB = np.zeros((2, 8, 8), np.float32)


@dataclass(frozen=True)
class ScoredImage:
    """:func:`score_image`'s result: the scores, both pictures (RGB uint8 H×W×3), the per-pixel ab
    errors (float32 H×W, Lab units) of ours and of the baseline, and the ground truth's bins (int64 H×W)."""

    scores: ImageScores
    ours_rgb: np.ndarray
    gray_rgb: np.ndarray
    err_ours: np.ndarray
    err_gray: np.ndarray
    bins: np.ndarray


def score_image(name: str, rgb: np.ndarray, predicted_ab: np.ndarray,
                colour: ColourSettings = ColourSettings()) -> ScoredImage:
    """Score one colorization: ground truth RGB uint8 H×W×3 and predicted ab float32 2×h×w, put on
    the image as ``colour`` says (the ab error is that of the upsampled ab, before the RGB gamut)."""
    truth_ab = lab_ab(rgb)
    bins = nearest_bins(truth_ab)
    code = lightness_code(rgb)
    ours_ab = frame_ab(code, predicted_ab, colour)
    err_ours = ab_error(ours_ab, truth_ab)
    err_gray = ab_error(np.zeros_like(truth_ab), truth_ab)
    rebalance = class_rebalanced_weights(bins)
    height, width = rgb.shape[:2]
    ours_rgb = merge_lightness(code, predicted_ab, colour)
    gray_rgb = merge_lightness(code, _ZERO_AB)
    ours_mean_ab = lab_ab(ours_rgb).reshape(-1, 2).mean(0)
    truth_mean_ab = truth_ab.reshape(-1, 2).mean(0)
    green = (truth_ab[..., 0] < GREEN_TRUTH_A_MAX) & (np.hypot(truth_ab[..., 0], truth_ab[..., 1]) >= GREEN_TRUTH_CHROMA_MIN)
    scores = ImageScores(
        name=name, height=height, width=width,
        auc_pct=100.0 * ab_error_auc(err_ours), auc_gray_pct=100.0 * ab_error_auc(err_gray),
        auc_rebalanced_pct=100.0 * ab_error_auc(err_ours, rebalance),
        auc_rebalanced_gray_pct=100.0 * ab_error_auc(err_gray, rebalance),
        psnr_db=psnr(ours_rgb, rgb), psnr_gray_db=psnr(gray_rgb, rgb),
        colourfulness=colourfulness(ours_rgb), colourfulness_gray=colourfulness(gray_rgb),
        colourfulness_truth=colourfulness(rgb),
        delta_a=float(ours_mean_ab[0] - truth_mean_ab[0]), delta_b=float(ours_mean_ab[1] - truth_mean_ab[1]),
        green_truth_pixels=int(green.sum()), green_truth_ours_a_sum=float(ours_ab[..., 0][green].sum()))
    return ScoredImage(scores, ours_rgb, gray_rgb, err_ours, err_gray, bins)


def _score_image(name: str, rgb: np.ndarray, predicted_ab: np.ndarray, totals: _Totals, sheet_rows: int,
                 colour: ColourSettings) -> None:
    scored = score_image(name, rgb, predicted_ab, colour)
    totals.tally_ours.add(scored.err_ours, scored.bins)
    totals.tally_gray.add(scored.err_gray, scored.bins)
    totals.images.append(scored.scores)
    if len(totals.sheet_rows) < sheet_rows:
        labels = [f"{name} (L only)", f"ours  AuC {scored.scores.auc_pct:.1f}%", "ground truth"]
        totals.sheet_rows.append((labels, [thumbnail(scored.gray_rgb), thumbnail(scored.ours_rgb), thumbnail(rgb)]))


def _method_scores(tally: AbErrorTally, psnrs: list[float], colour: list[float], colour_truth: float) -> MethodScores:
    mean_colour = float(np.mean(colour))
    return MethodScores(
        auc_pct=100.0 * tally.auc(), auc_rebalanced_pct=100.0 * tally.auc(rebalanced=True),
        psnr_db=float(np.mean(psnrs)), colourfulness=mean_colour,
        colourfulness_share_pct=100.0 * mean_colour / colour_truth if colour_truth > 0 else math.nan)


def evaluate_images(model_path: Path, images_dir: Path, sheet_path: Path | None = None, limit: int | None = None,
                    sheet_rows: int = DEFAULT_SHEET_ROWS, settings: SessionSettings = SessionSettings(),
                    batch_size: int = BATCH_SIZE, colour: ColourSettings = ColourSettings()) -> ImageQualityReport:
    """Colorize every image of ``images_dir`` (first ``limit``) from its L alone and score it.

    Raises ModelError (bad model) or InputError (missing directory, no images, unreadable image,
    sheet not writable), each with a one-line message. Images are read and run ``batch_size`` at a
    time, so memory does not grow with the number of images; the sheet holds the first
    ``sheet_rows`` images.
    """
    started = time.perf_counter()
    paths = list_images(images_dir, limit)
    model = ColorModel(Path(model_path), settings)
    totals = _Totals()
    for start in range(0, len(paths), batch_size):
        batch_paths = paths[start:start + batch_size]
        images = [read_rgb(p) for p in batch_paths]
        inputs = np.stack([model_input(rgb, model.input_size) for rgb in images])
        predicted = model.predict_ab(inputs)
        for path, rgb, ab in zip(batch_paths, images, predicted):
            _score_image(path.name, rgb, ab, totals, sheet_rows, colour)

    written_sheet = None
    if sheet_path is not None and totals.sheet_rows:
        sheet_path = Path(sheet_path)
        sheet = contact_sheet(totals.sheet_rows)
        try:
            sheet_path.parent.mkdir(parents=True, exist_ok=True)
            ok = cv2.imwrite(str(sheet_path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        except (OSError, cv2.error):
            ok = False
        if not ok:
            raise InputError(f"cannot write contact sheet: {sheet_path}")
        written_sheet = str(sheet_path)

    colour_truth = float(np.mean([s.colourfulness_truth for s in totals.images]))
    return ImageQualityReport(
        model=str(model_path), images_dir=str(images_dir), image_count=len(totals.images),
        ours=_method_scores(totals.tally_ours, [s.psnr_db for s in totals.images],
                            [s.colourfulness for s in totals.images], colour_truth),
        grayscale=_method_scores(totals.tally_gray, [s.psnr_gray_db for s in totals.images],
                                 [s.colourfulness_gray for s in totals.images], colour_truth),
        colourfulness_truth=colour_truth, per_image=PerImageSummary.of(totals.images), images=totals.images,
        sheet_path=written_sheet, sheet_rows=len(totals.sheet_rows) if written_sheet else 0,
        seconds=time.perf_counter() - started)


# ---------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colorize evaluate",
        description="Score a colorization model on colour photographs: colorize each from its lightness "
                    "and compare with the original and with the grayscale baseline (AuC of ab error, "
                    "plain and class-rebalanced as in Zhang et al. 2016; PSNR; colourfulness).")
    parser.add_argument("model", type=Path, help="ONNX colorization model")
    parser.add_argument("images_dir", type=Path, help="directory of colour images (jpg, png, bmp, tif)")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG (gray input | ours | ground truth)")
    parser.add_argument("--sheet-rows", type=positive_int, default=DEFAULT_SHEET_ROWS,
                        help=f"images on the contact sheet (default {DEFAULT_SHEET_ROWS})")
    parser.add_argument("--json", type=Path, help="write the report as JSON")
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N images (sorted by name)")
    add_colour_arguments(parser)
    return parser


def saturation_value(text: str) -> float:
    """argparse type: a colour strength within ColourSettings.saturation's bounds."""
    bounds = next(f.metadata for f in dataclasses.fields(ColourSettings) if f.name == "saturation")
    low, high = bounds["min"], bounds["max"]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected a number in {low:g}..{high:g}, got '{text}'")
    return value


def add_colour_arguments(parser: argparse.ArgumentParser) -> None:
    """--saturation and --upsampling, as the pipeline's ``colour:`` settings."""
    parser.add_argument("--saturation", type=saturation_value, default=1.0,
                        help="colour strength 0..2 as in the pipeline (default 1)")
    parser.add_argument("--upsampling", choices=("bilinear", "guided"), default=ColourSettings().upsampling,
                        help=f"how ab reaches the image's size (default {ColourSettings().upsampling})")


def colour_settings(args: argparse.Namespace) -> ColourSettings:
    """The ColourSettings named by :func:`add_colour_arguments`' options."""
    return ColourSettings(saturation=args.saturation, upsampling=args.upsampling)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: prints the table, returns 0; on bad input prints ``error: <one line>`` to stderr, returns 2."""
    args = build_parser().parse_args(argv)

    def table() -> str:
        report = evaluate_images(args.model, args.images_dir, sheet_path=args.sheet, limit=args.limit,
                                 sheet_rows=args.sheet_rows, colour=colour_settings(args))
        if args.json is not None:
            write_json_report(args.json, report.to_json())
        return report.format_table()
    return run_tool(table)


if __name__ == "__main__":
    sys.exit(main())
