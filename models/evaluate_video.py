"""Video evaluation of a colorization model: per-frame colorization against temporally smoothed.

    colorize evaluate-video MODEL VIDEO [--max-frames N] [--json report.json] [--sample side.mp4]
                            [--no-temporal] [--strength S] [--scene-cut-threshold T] ...

Each frame (PyAV, RGB) is desaturated to its own lightness (the colorizer sees only L anyway),
colorized (``model_input`` → ``predict_ab`` → optionally :class:`stages.temporal.TemporalSmoother`
→ ``merge_lightness``), and scored:

* flicker: mean ab change (Euclidean, Lab units) between consecutive output frames over the pixels
  whose lightness the motion explains. Flow is estimated on the frames' lightness (shared by both
  outputs) at FLICKER_SIZE px on the longer side; the previous output is warped along it and only
  pixels with |L − warp(L_prev)| < FLICKER_L_TOLERANCE are kept, the same pixels for both methods;
* against the original frames, when they have colour (mean chroma ≥ GRAY_CHROMA, else n/a):
  PSNR of the RGB result (mean over frames) and AuC of the per-pixel ab error CDF over thresholds
  0..150 (plain and class-rebalanced, the definitions of :mod:`models.evaluate`);
* throughput: seconds per frame of the colorization path (model input, inference, merge) without
  and with the smoother, and of the smoother alone.

``--sample`` writes an H.264 MP4 with per-frame | temporal side by side for a person to look at.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
import typing
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import cv2
import numpy as np

from models.evaluate import AbErrorTally, ab_error, add_colour_arguments, colour_settings, nearest_bins, psnr
from models.runtime import ColorModel, SessionSettings
from models.tool_cli import json_ready, positive_int, run_tool, write_json_report
from stages.lab import lightness_code, merge_lightness, model_input
from stages.temporal import ModelCadence, TemporalSmoother
from stream.config import ColourSettings, TemporalConfig
from stream.errors import InputError

FLICKER_SIZE = 320
FLICKER_L_TOLERANCE = 2.0
GRAY_CHROMA = 0.5
SAMPLE_CRF = 20
LABEL_COLOUR = (255, 255, 255)


# ---------------------------------------------------------------- frames and colour

def read_video(path: Path, max_frames: int | None = None) -> tuple[Iterator[np.ndarray], Fraction]:
    """Open a video: (iterator of RGB uint8 H×W×3 frames of its first video stream, frame rate).

    Raises InputError if the file is missing or has no decodable video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise InputError(f"cannot open video {path}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"no video stream in {path}")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)

    def frames() -> Iterator[np.ndarray]:
        try:
            for count, frame in enumerate(container.decode(stream)):
                if max_frames is not None and count >= max_frames:
                    break
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise InputError(f"cannot decode video {path}: {exc}") from None
        finally:
            container.close()

    return frames(), Fraction(rate)


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 H×W×3 → float32 H×W×3 Lab (OpenCV float: L 0..100, a and b about −128..127)."""
    return cv2.cvtColor(rgb.astype(np.float32) * np.float32(1.0 / 255.0), cv2.COLOR_RGB2LAB)


def desaturate(rgb: np.ndarray, lab: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 H×W×3 → RGB uint8 H×W×3 gray with the same Lab lightness (a = b = 0).

    ``lab``: the frame's :func:`to_lab`, if already computed.
    """
    gray_lab = np.zeros((*rgb.shape[:2], 3), np.float32)
    gray_lab[:, :, 0] = (to_lab(rgb) if lab is None else lab)[:, :, 0]
    gray = cv2.cvtColor(gray_lab, cv2.COLOR_LAB2RGB)
    return np.clip(gray * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)


def _small_size(height: int, width: int, longer: int) -> tuple[int, int]:
    scale = min(1.0, longer / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return image if image.shape[1::-1] == size else cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class FlickerMeter:
    """Motion-compensated flicker between consecutive frames of one or more outputs of the same video.

    ``pair(lightness)`` is called once per frame with the frame's lightness (float32 h×w at the
    meter's size; the original's, which every output shares); it estimates the flow to the previous
    frame and the stable-pixel mask. Then ``change(name, lab)`` for each output gives that output's
    mean ab change over the mask (Lab units; nan for the first frame or an empty mask) and
    accumulates it.
    """

    def __init__(self, l_tolerance: float = FLICKER_L_TOLERANCE):
        self.l_tolerance = l_tolerance
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._prev_l: np.ndarray | None = None
        self._maps: tuple[np.ndarray, np.ndarray] | None = None
        self._mask: np.ndarray | None = None
        self._prev_ab: dict[str, np.ndarray] = {}
        self.sums: dict[str, float] = {}
        self.pixels = 0

    def pair(self, lightness: np.ndarray) -> float:
        """Next frame's lightness (float32 h×w, 0..100) → share (0..1) of its pixels in the stable mask."""
        current = np.clip(lightness * np.float32(2.55) + np.float32(0.5), 0, 255).astype(np.uint8)
        previous, self._prev_l = self._prev_l, current
        if previous is None or previous.shape != current.shape:
            self._mask = None
            return 0.0
        flow = self._dis.calc(current, previous, None)
        h, w = current.shape
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
        self._maps = (map_x, map_y)
        warped = cv2.remap(previous, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        diff = np.abs(current.astype(np.float32) - warped.astype(np.float32)) * np.float32(100.0 / 255.0)
        inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        self._mask = inside & (diff < self.l_tolerance)
        self.pixels += int(self._mask.sum())
        return float(self._mask.mean())

    def change(self, name: str, lab: np.ndarray) -> float:
        """One output's Lab (float32 h×w×3 at the meter's size) → its mean ab change over the mask."""
        ab = np.ascontiguousarray(lab[:, :, 1:])
        previous, self._prev_ab[name] = self._prev_ab.get(name), ab
        if previous is None or self._mask is None or previous.shape != ab.shape or not self._mask.any():
            return math.nan
        warped = cv2.remap(previous, *self._maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        delta = np.sqrt(np.square(ab - warped).sum(axis=2))[self._mask]
        self.sums[name] = self.sums.get(name, 0.0) + float(delta.sum())
        return float(delta.mean())

    def mean(self, name: str) -> float:
        """Pixel-weighted mean ab change of one output over every frame pair so far (nan if none)."""
        return self.sums.get(name, 0.0) / self.pixels if self.pixels else math.nan


# ---------------------------------------------------------------- report

@dataclass(frozen=True)
class VideoMethodScores:
    """Scores of one method over the clip.

    ``flicker``: mean motion-compensated ab change between consecutive frames (Lab units, ≥ 0).
    ``psnr_db``, ``auc_pct``, ``auc_rebalanced_pct``: against the original colour (nan if none).
    ``delta_a`` / ``delta_b``: colour cast, the mean a* / b* of the output minus the original's over
    all frames (Lab units; nan without colour). ``seconds_per_frame``: the colorization path
    (model input, inference, [smoother], merge).
    """

    flicker: float
    psnr_db: float
    auc_pct: float
    auc_rebalanced_pct: float
    delta_a: float
    delta_b: float
    seconds_per_frame: float


@dataclass(frozen=True)
class FrameScores:
    """One frame: flicker against the previous frame (nan for the first), PSNR (dB, nan without colour),
    ``ab_gap`` (mean ab distance between the temporal and the per-frame prediction on the model grid,
    Lab units), ``scene_cut`` (the smoother dropped its history here), ``stable_share`` (0..1)."""

    index: int
    flicker_per_frame: float
    flicker_temporal: float
    psnr_per_frame_db: float
    psnr_temporal_db: float
    ab_gap: float
    scene_cut: bool
    stable_share: float


@dataclass(frozen=True)
class VideoQualityReport:
    """Result of :func:`evaluate_video`; ``temporal`` and ``temporal_config`` are None when not evaluated.
    ``grayscale`` scores the frames' own lightness with no colour (the baseline a colorizer must beat)."""

    model: str
    video: str
    frame_count: int
    height: int
    width: int
    has_colour: bool
    per_frame: VideoMethodScores
    temporal: VideoMethodScores | None
    grayscale: VideoMethodScores
    temporal_config: dict | None
    smoother_seconds_per_frame: float
    scene_cuts: list[int]
    frames: list[FrameScores]
    sample_path: str | None
    seconds: float

    @property
    def flicker_reduction_pct(self) -> float:
        """How much lower the temporal flicker is, in % of the per-frame flicker (nan if not evaluated)."""
        if self.temporal is None or not self.per_frame.flicker > 0:
            return math.nan
        return 100.0 * (1.0 - self.temporal.flicker / self.per_frame.flicker)

    @property
    def smoother_overhead_pct(self) -> float:
        """Smoother time in % of the per-frame colorization path's time (nan if not evaluated)."""
        if self.temporal is None or not self.per_frame.seconds_per_frame > 0:
            return math.nan
        return 100.0 * self.smoother_seconds_per_frame / self.per_frame.seconds_per_frame

    def to_json(self) -> dict:
        """A JSON-ready dict (nan → None), with the derived figures added."""
        data = asdict(self)
        data["flicker_reduction_pct"] = self.flicker_reduction_pct
        data["smoother_overhead_pct"] = self.smoother_overhead_pct
        return json_ready(data)

    def format_table(self) -> str:
        """A readable table, per-frame against temporal."""
        def cell(value: float, digits: int = 2) -> str:
            return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"

        ms = 1000.0
        rows = [("flicker, motion-compensated mean Δab (Lab)", self.per_frame.flicker,
                 self.temporal and self.temporal.flicker, 3),
                ("PSNR RGB, mean over frames (dB)", self.per_frame.psnr_db,
                 self.temporal and self.temporal.psnr_db, 2),
                ("AuC ab error <= 0..150, plain (%)", self.per_frame.auc_pct,
                 self.temporal and self.temporal.auc_pct, 2),
                ("AuC ab error <= 0..150, rebalanced (%)", self.per_frame.auc_rebalanced_pct,
                 self.temporal and self.temporal.auc_rebalanced_pct, 2),
                ("colour cast, mean a* minus original's", self.per_frame.delta_a,
                 self.temporal and self.temporal.delta_a, 2),
                ("colour cast, mean b* minus original's", self.per_frame.delta_b,
                 self.temporal and self.temporal.delta_b, 2),
                ("colorization path (ms/frame)", self.per_frame.seconds_per_frame * ms,
                 self.temporal and self.temporal.seconds_per_frame * ms, 2)]
        width = max(len(r[0]) for r in rows)
        lines = [f"{Path(self.model).name} on {Path(self.video).name}: {self.frame_count} frames "
                 f"{self.width}×{self.height}{'' if self.has_colour else ' (no colour: flicker only)'} "
                 f"({self.seconds:.1f} s)",
                 f"{'metric':<{width}}  {'per-frame':>10}  {'temporal':>10}  {'change':>9}"]
        for name, base, temporal, digits in rows:
            change = "" if temporal is None or not math.isfinite(base) or not math.isfinite(temporal) \
                else f"{temporal - base:+.{digits}f}"
            lines.append(f"{name:<{width}}  {cell(base, digits):>10}  "
                         f"{cell(temporal, digits) if temporal is not None else '-':>10}  {change:>9}")
        if self.has_colour:
            gray = self.grayscale
            lines.append(f"grayscale baseline (no colour): PSNR {cell(gray.psnr_db)} dB, AuC {cell(gray.auc_pct)} %, "
                         f"rebalanced {cell(gray.auc_rebalanced_pct)} %")
        if self.temporal is not None:
            cuts = ", ".join(str(i) for i in self.scene_cuts[:12]) + (" …" if len(self.scene_cuts) > 12 else "")
            lines.append(f"flicker {cell(self.flicker_reduction_pct, 1)} % lower with temporal smoothing; "
                         f"smoother {cell(self.smoother_seconds_per_frame * ms, 3)} ms/frame "
                         f"({cell(self.smoother_overhead_pct, 1)} % of the colorization path)")
            lines.append(f"scene cuts (history dropped, first frame excluded): {len(self.scene_cuts)}"
                         + (f" at frames {cuts}" if cuts else ""))
        if self.sample_path:
            lines.append(f"side-by-side sample: {self.sample_path} (per-frame | temporal)")
        return "\n".join(lines)


# ---------------------------------------------------------------- sample video

class SideBySideWriter:
    """Writes labelled panels side by side (RGB uint8, all the same size) to an H.264 MP4 (yuv420p)."""

    def __init__(self, path: Path, rate: Fraction, labels: list[str]):
        self.path, self.rate, self.labels = Path(path), rate, labels
        self.container = None
        self.stream = None

    def write(self, panels: list[np.ndarray]) -> None:
        frame = np.concatenate(panels, axis=1)
        frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
        panel_width = panels[0].shape[1]
        for i, label in enumerate(self.labels):
            cv2.putText(frame, label, (i * panel_width + 8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3,
                        cv2.LINE_AA)
            cv2.putText(frame, label, (i * panel_width + 8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, LABEL_COLOUR, 1,
                        cv2.LINE_AA)
        if self.container is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.container = av.open(str(self.path), mode="w", format="mp4")
            except (OSError, av.error.FFmpegError) as exc:
                raise InputError(f"cannot write sample video {self.path}: {exc}") from None
            self.stream = self.container.add_stream("libx264", rate=self.rate)
            self.stream.width, self.stream.height = frame.shape[1], frame.shape[0]
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": str(SAMPLE_CRF), "preset": "veryfast"}
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            self.container.close()
            self.container = None


# ---------------------------------------------------------------- evaluation

@dataclass
class _Method:
    tally: AbErrorTally = field(default_factory=AbErrorTally)
    psnrs: list[float] = field(default_factory=list)
    ab_shift: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, rgb: np.ndarray, out_ab: np.ndarray, original: np.ndarray, true_ab: np.ndarray,
            true_bins: np.ndarray | None) -> float:
        """Score one output frame against the original; returns its PSNR."""
        value = psnr(rgb, original)
        self.psnrs.append(value)
        if true_bins is not None:
            self.tally.add(ab_error(out_ab, true_ab), true_bins)
            self.ab_shift.append(out_ab.reshape(-1, 2).mean(0) - true_ab.reshape(-1, 2).mean(0))
        return value

    def scores(self, flicker: float, frames: int, has_colour: bool) -> VideoMethodScores:
        shift = np.mean(self.ab_shift, axis=0) if has_colour and self.ab_shift else (math.nan, math.nan)
        return VideoMethodScores(
            flicker=flicker,
            psnr_db=float(np.mean(self.psnrs)) if has_colour and self.psnrs else math.nan,
            auc_pct=100.0 * self.tally.auc() if has_colour else math.nan,
            auc_rebalanced_pct=100.0 * self.tally.auc(rebalanced=True) if has_colour else math.nan,
            delta_a=float(shift[0]), delta_b=float(shift[1]),
            seconds_per_frame=self.seconds / frames if frames else math.nan)


def evaluate_frames(model: ColorModel, frames: Iterable[np.ndarray], temporal: TemporalConfig | None,
                    *, name: str = "frames", has_colour: bool | None = None,
                    sample: SideBySideWriter | None = None,
                    colour: ColourSettings = ColourSettings(), every_nth_frame: int = 1) -> VideoQualityReport:
    """Evaluate colour (or gray) RGB uint8 frames given in presentation order; see the module docstring.

    ``every_nth_frame`` k > 1: the temporal output is sparse inference as the pipeline runs it
    (:class:`stages.temporal.ModelCadence` picks the frames the model sees; the others get
    :meth:`stages.temporal.TemporalSmoother.carry`); needs ``temporal``.

    ``has_colour``: whether the frames are ground truth for PSNR/AuC; None decides from their mean
    chroma (≥ GRAY_CHROMA Lab units). ``sample``, if given, receives per-frame | temporal panels
    (closed by the caller). Raises InputError if there are no frames.
    """
    started = time.perf_counter()
    smoother = TemporalSmoother(temporal) if temporal is not None else None
    cadence = ModelCadence(every_nth_frame, temporal)
    per_frame, smoothed, grayscale = _Method(), _Method(), _Method()
    meter = FlickerMeter()
    frame_scores: list[FrameScores] = []
    smoother_seconds, chroma_sum, count, height, width = 0.0, 0.0, 0, 0, 0
    for index, original in enumerate(frames):
        height, width = original.shape[:2]
        true_lab = to_lab(original)
        gray = desaturate(original, true_lab)
        t0 = time.perf_counter()
        ab = model.predict_ab(model_input(gray, model.input_size)[None])[0]
        lightness = lightness_code(gray)
        t1 = time.perf_counter()
        out_plain = merge_lightness(lightness, ab, colour)
        t2 = time.perf_counter()
        prep_infer, merge = t1 - t0, t2 - t1
        per_frame.seconds += prep_infer + merge
        outputs = {"per_frame": out_plain}
        ab_gap, cut = math.nan, False
        if smoother is not None:
            t3 = time.perf_counter()
            if cadence.every > 1 and not cadence.wants_model(cv2.cvtColor(gray, cv2.COLOR_RGB2GRAY)):
                ab_smooth = smoother.carry(lightness)
            else:
                ab_smooth = smoother.update(lightness, ab)
            t4 = time.perf_counter()
            out_smooth = merge_lightness(lightness, ab_smooth, colour)
            t5 = time.perf_counter()
            smoother_seconds += t4 - t3
            smoothed.seconds += prep_infer + (t4 - t3) + (t5 - t4)
            outputs["temporal"] = out_smooth
            ab_gap = float(np.sqrt(np.square(ab_smooth - ab).sum(axis=0)).mean())
            cut = smoother.last_step.scene_cut and index > 0

        size = _small_size(height, width, FLICKER_SIZE)
        true_lab_small = _shrink(true_lab, size)
        chroma_sum += float(np.sqrt(np.square(true_lab_small[:, :, 1:]).sum(axis=2)).mean())
        stable = meter.pair(true_lab_small[:, :, 0])
        flickers, psnrs = {}, {}
        true_ab = np.ascontiguousarray(true_lab[:, :, 1:])
        true_bins = nearest_bins(true_ab) if has_colour is not False else None
        for key, rgb in outputs.items():
            out_lab = to_lab(rgb)
            flickers[key] = meter.change(key, _shrink(out_lab, size))
            method = per_frame if key == "per_frame" else smoothed
            psnrs[key] = method.add(rgb, np.ascontiguousarray(out_lab[:, :, 1:]), original, true_ab, true_bins)
        grayscale.add(gray, np.zeros_like(true_ab), original, true_ab, true_bins)
        frame_scores.append(FrameScores(
            index=index, flicker_per_frame=flickers["per_frame"], flicker_temporal=flickers.get("temporal", math.nan),
            psnr_per_frame_db=psnrs["per_frame"], psnr_temporal_db=psnrs.get("temporal", math.nan),
            ab_gap=ab_gap, scene_cut=cut, stable_share=stable))
        if sample is not None:
            sample.write([outputs["per_frame"], outputs.get("temporal", gray)])
        count += 1
    if count == 0:
        raise InputError(f"no frames decoded from {name}")
    if has_colour is None:
        has_colour = chroma_sum / count >= GRAY_CHROMA
    if not has_colour:
        frame_scores = [dataclasses.replace(s, psnr_per_frame_db=math.nan, psnr_temporal_db=math.nan)
                        for s in frame_scores]
    return VideoQualityReport(
        model=str(model.path), video=name, frame_count=count, height=height, width=width, has_colour=has_colour,
        per_frame=per_frame.scores(meter.mean("per_frame"), count, has_colour),
        temporal=smoothed.scores(meter.mean("temporal"), count, has_colour) if smoother is not None else None,
        grayscale=grayscale.scores(0.0, count, has_colour),
        temporal_config=asdict(temporal) if temporal is not None else None,
        smoother_seconds_per_frame=smoother_seconds / count if smoother is not None else math.nan,
        scene_cuts=[s.index for s in frame_scores if s.scene_cut],
        frames=frame_scores, sample_path=str(sample.path) if sample is not None else None,
        seconds=time.perf_counter() - started)


def evaluate_video(model_path: Path, video_path: Path, temporal: TemporalConfig | None,
                   max_frames: int | None = None, *, sample_path: Path | None = None,
                   has_colour: bool | None = None, settings: SessionSettings = SessionSettings(),
                   colour: ColourSettings = ColourSettings()) -> VideoQualityReport:
    """Colorize the first ``max_frames`` frames (all if None) of a video from their lightness, per frame and
    (unless ``temporal`` is None) temporally smoothed with that config, and score both.

    Raises ModelError for a bad model, InputError for an unreadable video or sample path.
    """
    model = ColorModel(Path(model_path), settings)
    frames, rate = read_video(Path(video_path), max_frames)
    labels = ["per-frame", "temporal"] if temporal is not None else ["per-frame", "gray input"]
    sample = SideBySideWriter(sample_path, rate, labels) if sample_path is not None else None
    try:
        return evaluate_frames(model, frames, temporal, name=str(video_path), has_colour=has_colour, sample=sample,
                               colour=colour)
    finally:
        if sample is not None:
            sample.close()


# ---------------------------------------------------------------- CLI

def _bounded(kind: type, metadata: dict):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        low, high = metadata.get("min"), metadata.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colorize evaluate-video",
        description="Score a colorization model on a video: colorize each frame from its lightness, per frame "
                    "and with temporal smoothing, and compare flicker (motion-compensated ab change), PSNR and "
                    "AuC of ab error against the original colour, and speed.")
    parser.add_argument("model", type=Path, help="ONNX colorization model")
    parser.add_argument("video", type=Path, help="video file (colour for PSNR/AuC; any for flicker)")
    parser.add_argument("--max-frames", type=positive_int, help="evaluate only the first N frames")
    parser.add_argument("--json", type=Path, help="write the report as JSON")
    parser.add_argument("--sample", type=Path, help="write an H.264 MP4 with per-frame | temporal side by side")
    parser.add_argument("--no-temporal", action="store_true", help="score the per-frame colorization only")
    add_colour_arguments(parser)
    hints = typing.get_type_hints(TemporalConfig)
    for f in dataclasses.fields(TemporalConfig):
        if f.name == "enabled":
            continue
        option = "--" + f.name.replace("_", "-")
        choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else None
        if choices:
            parser.add_argument(option, choices=choices, default=f.default, help=f"smoother {f.name} "
                                f"(default {f.default})")
        else:
            parser.add_argument(option, type=_bounded(hints[f.name], f.metadata), default=f.default,
                                help=f"smoother {f.name} (default {f.default})")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry: prints the table, returns 0; on bad input prints ``error: <one line>`` to stderr, returns 2."""
    args = build_parser().parse_args(argv)
    temporal = None if args.no_temporal else TemporalConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(TemporalConfig) if f.name != "enabled"})

    def table() -> str:
        report = evaluate_video(args.model, args.video, temporal, args.max_frames, sample_path=args.sample,
                                colour=colour_settings(args))
        if args.json is not None:
            write_json_report(args.json, report.to_json())
        return report.format_table()
    return run_tool(table)


if __name__ == "__main__":
    sys.exit(main())
