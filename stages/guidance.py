"""Colour by example: reference photos re-weight the colours, hand-coloured keyframes set them.

**References** (:class:`PaletteGuide`): the palette of one or more colour photographs guides every
frame. Each pixel's predicted ab is spread over the 313 ab bins as a distribution (a Gaussian of
σ = ``SPREAD`` around the prediction: the embedded model hands over its decoded ab, not its bin
scores), that distribution is re-weighted by (reference histogram ÷ training prior)^strength, the
re-weighting the issue and Zhang et al.'s class rebalancing both use, and decoded again by its mean.
Colours the references hold become likelier, colours they lack less likely. Re-weighting alone
moves a prediction only within its spread, so a cast the references do not share survives it
(measured: bench/bench_guidance.py); the frame's mean ab is then moved to the references' mean ab
(the mean step of Reinhard et al.'s colour transfer, 2001), by ``min(strength, 1)`` of the way.
Strength 0 is off.

**Keyframes** (:func:`build_keyframe_guides`): a colour version of one frame of the film. At that
frame the output's colour is the keyframe's ab on the frame's own lightness; from there the colour
is carried along the optical flow (the temporal smoother's, :meth:`stages.temporal.TemporalSmoother.track`)
to the following frames *and* to the preceding ones, up to ``guidance.reach_s`` seconds each way.
Files only: before the pipeline starts, a bounded second pass decodes the frames around each
keyframe at low resolution and carries its colour both ways, stopping at a cut and fading where the
flow loses track (the motion-compensated lightness error over ``TRACK_TOLERANCE_L``) or where the
content is new (uncovered at the frame's edge). The encoder blends: guide weight w → w·keyframe
colour + (1 − w)·the model's smoothed colour (:class:`KeyframeGuides`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from stream.errors import InputError

SPREAD = 12.0
"""σ (ab units) of the distribution a predicted ab is spread into for re-weighting."""
HISTOGRAM_SIGMA = 5.0
"""Both histograms are smoothed over the bins (ab units), as Zhang et al. smooth the prior."""
PRIOR_FLOOR = 1e-4
"""Added to both histograms before their ratio: bins neither side has stay neutral."""
MAX_LOG_WEIGHT = 6.0
LUT_RANGE, LUT_STEP = 128, 2.0
"""The re-weighting table covers a, b in ±128 (every value Lab takes from sRGB) in 2-unit steps."""
TRACK_TOLERANCE_L = 6.0
"""Mean motion-compensated lightness error (Lab L, 5×5 average) beyond which the flow is not trusted."""
LOST_TRACK_KEEP = 0.3
"""Share of a guide's weight kept at a pixel where the flow is not trusted (per frame)."""
FADE_PER_FRAME = 0.998
MIN_WEIGHT = 0.02
"""Carrying stops once no pixel of the guide keeps more than this weight."""


@dataclass(frozen=True)
class KeyframeSpec:
    """A ``--keyframe POSITION=IMAGE``: ``frame`` (0-based, in presentation order) or ``time_s``
    (seconds from the video's first frame), and the image."""

    text: str
    image: Path
    frame: int | None = None
    time_s: float | None = None


def parse_keyframe(text: str) -> KeyframeSpec:
    """'120=shot.png' (frame 120), '00:01:12.5=shot7.png' or '72.5=shot7.png' (a time) → spec.
    Raises InputError for anything else, or an image that is missing."""
    from stream.accounting import parse_clock

    position, separator, image = text.partition("=")
    if not separator or not position.strip() or not image.strip():
        raise InputError(f"--keyframe {text}: expected POSITION=IMAGE (a frame number or a time, then a file)")
    path = Path(image.strip())
    if not path.is_file():
        raise InputError(f"--keyframe {text}: image not found: {path}")
    position = position.strip()
    if position.isdigit():
        return KeyframeSpec(text, path, frame=int(position))
    return KeyframeSpec(text, path, time_s=parse_clock(position, f"--keyframe {text}"))


def read_colour_image(path: Path, option: str) -> np.ndarray:
    """RGB uint8 H×W×3 of an image file; InputError naming ``option`` when it cannot be read."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{option} {path}: not an image file OpenCV can read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_ab(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lab ab (float32 2×h×w) of an RGB uint8 image, area-resized to ``size`` (w, h)."""
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    return np.ascontiguousarray(lab[..., 1:].transpose(2, 0, 1))


def check_aspect(rgb: np.ndarray, width: int, height: int, option: str, path: Path) -> None:
    """InputError unless the image has the frame's aspect ratio (within 2 %)."""
    image_aspect, frame_aspect = rgb.shape[1] / rgb.shape[0], width / height
    if abs(image_aspect / frame_aspect - 1) > 0.02:
        raise InputError(f"{option} {path}: the image is {rgb.shape[1]}×{rgb.shape[0]} (aspect "
                         f"{image_aspect:.3f}), the video's frames are {width}×{height} ({frame_aspect:.3f})")


# -- references -----------------------------------------------------------------------------------

class PaletteGuide:
    """Re-weights predicted colours toward the palette of reference photos (module docstring)."""

    def __init__(self, references: list[np.ndarray], strength: float):
        """``references``: RGB uint8 images; ``strength`` ≥ 0 (1 = the full ratio)."""
        from models import load_ab_prior, load_bin_centres, smoothed_histogram

        self.centres = load_bin_centres().astype(np.float32)
        histogram = np.zeros(len(self.centres))
        pixels = []
        for rgb in references:
            scale = min(1.0, 256 / max(rgb.shape[:2]))
            ab = image_ab(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))))
            pixels.append(ab.reshape(2, -1).T)
            histogram += np.bincount(self._nearest(pixels[-1]), minlength=len(self.centres))
        self.mean_ab = np.concatenate(pixels).mean(axis=0).astype(np.float32)
        self.shift = np.float32(min(strength, 1.0))
        reference = smoothed_histogram(histogram / histogram.sum(), self.centres, HISTOGRAM_SIGMA)
        prior = smoothed_histogram(load_ab_prior(), self.centres, HISTOGRAM_SIGMA)
        log_weight = strength * (np.log(reference + PRIOR_FLOOR) - np.log(prior + PRIOR_FLOOR))
        self.log_weight = np.clip(log_weight, -MAX_LOG_WEIGHT, MAX_LOG_WEIGHT).astype(np.float32)
        steps = np.arange(-LUT_RANGE, LUT_RANGE + LUT_STEP / 2, LUT_STEP, dtype=np.float32)
        grid = np.stack(np.meshgrid(steps, steps, indexing="xy"), axis=-1).reshape(-1, 2)  # (a, b) on a grid
        self.table = self._reweighted(grid).reshape(len(steps), len(steps), 2)

    def _nearest(self, ab: np.ndarray) -> np.ndarray:
        """Index of the nearest bin centre of each ab value (float32 N×2)."""
        return (-2 * ab @ self.centres.T + (self.centres ** 2).sum(1)).argmin(axis=1)

    def _reweighted(self, pixels: np.ndarray) -> np.ndarray:
        """ab values (float32 N×2) → their re-weighted means (float32 N×2)."""
        d2 = (pixels * pixels).sum(1, keepdims=True) - 2 * pixels @ self.centres.T + (self.centres ** 2).sum(1)
        logits = -d2 / np.float32(2 * SPREAD ** 2) + self.log_weight
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return ((weights @ self.centres) / weights.sum(axis=1, keepdims=True)).astype(np.float32)

    def apply(self, ab: np.ndarray) -> np.ndarray:
        """Predicted ab (float32 2×h×w, Lab units) → re-weighted ab, same shape. The re-weighting
        of each ab value is read (bilinearly) from a table computed once on a 2-unit ab grid: 0.2 ms
        for 56×56 instead of 12–24 ms."""
        scale = np.float32(1 / LUT_STEP)
        map_a = (np.clip(ab[0], -LUT_RANGE, LUT_RANGE) + np.float32(LUT_RANGE)) * scale
        map_b = (np.clip(ab[1], -LUT_RANGE, LUT_RANGE) + np.float32(LUT_RANGE)) * scale
        out = cv2.remap(self.table, map_a, map_b, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out = out.reshape(ab.shape[1], ab.shape[2], 2).transpose(2, 0, 1)
        out = out + (self.shift * (self.mean_ab - out.reshape(2, -1).mean(axis=1)))[:, None, None]
        return np.ascontiguousarray(out, dtype=np.float32)


def palette_from_config(guidance) -> PaletteGuide | None:
    """The run's :class:`PaletteGuide` from a :class:`stream.config.GuidanceConfig`; None when off."""
    if not guidance.references or guidance.reference_strength <= 0:
        return None
    images = [read_colour_image(Path(path), "--reference") for path in guidance.references]
    return PaletteGuide(images, guidance.reference_strength)


# -- keyframes --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedKeyframe:
    """A keyframe placed on the film: its index among the frames and its timestamp (stream ticks)."""

    spec: KeyframeSpec
    index: int
    pts: int


def resolve_keyframes(specs: list[KeyframeSpec], times: list[int], time_base: Fraction) -> list[ResolvedKeyframe]:
    """Place each keyframe on the film whose sorted frame timestamps are ``times`` (ticks of
    ``time_base``): a frame number as it is, a time on the frame shown at that time (the last one
    starting at or before it; variable frame rate included). InputError for one past the end."""
    placed = []
    first = times[0]
    for spec in specs:
        if spec.frame is not None:
            if spec.frame >= len(times):
                raise InputError(f"--keyframe {spec.text}: frame {spec.frame} is past the end of the video "
                                 f"({len(times)} frames, numbered from 0)")
            index = spec.frame
        else:
            ticks = first + spec.time_s / time_base
            index = max(0, int(np.searchsorted(times, ticks + 1e-6, side="right")) - 1)
            step = times[-1] - times[-2] if len(times) > 1 else 0
            if ticks >= times[-1] + step:
                end = float((times[-1] + step - first) * time_base)
                raise InputError(f"--keyframe {spec.text}: {spec.time_s:g} s is past the end of the video ({end:.2f} s)")
        twin = next((other for other in placed if other.index == index), None)
        if twin is not None:
            raise InputError(f"--keyframe {twin.spec.text} and --keyframe {spec.text} are both on frame {index}: "
                             "keep one")
        placed.append(ResolvedKeyframe(spec, index, times[index]))
    return placed


def _low_lightness(frame, long_side: int) -> np.ndarray:
    """A decoded frame's Lab lightness code (uint16, :func:`stages.lab.lightness_code`) at about
    twice the flow's resolution (the tracker shrinks it the rest of the way)."""
    from stages.lab import lightness_code

    scale = min(1.0, 2 * long_side / max(frame.width, frame.height))
    width, height = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
    return lightness_code(frame.to_ndarray(format="rgb24", width=width, height=height))


def _carry(lightness: list[np.ndarray], start_ab: np.ndarray, config) -> list[tuple[np.ndarray, np.ndarray]]:
    """Carry ``start_ab`` (at the first frame of ``lightness``) along the flow through the others:
    (ab float32 2×h×w, weight float32 h×w) for each following frame, until a cut or the track fades."""
    from stages.temporal import TemporalSmoother

    tracker = TemporalSmoother(config)
    tracker.track(lightness[0])
    ab, weight = start_ab, np.ones(start_ab.shape[1:], np.float32)
    carried = []
    for frame in lightness[1:]:
        motion = tracker.track(frame)
        if motion is None:
            break
        flow, error, cut_score = motion
        if cut_score > config.scene_cut_threshold:
            break
        ab, inside = tracker.warp(ab, flow)
        moved, _ = tracker.warp(weight[None], flow)
        error = cv2.blur(cv2.resize(error, weight.shape[::-1], interpolation=cv2.INTER_AREA), (5, 5))
        trust = np.where(error < TRACK_TOLERANCE_L, np.float32(1.0), np.float32(LOST_TRACK_KEEP))
        weight = moved[0] * trust * inside * np.float32(FADE_PER_FRAME)
        if weight.max() < MIN_WEIGHT:
            break
        carried.append((ab, weight))
    return carried


def build_keyframe_guides(path: str, stream_index: int, specs: list[KeyframeSpec], config, reach_s: float,
                          start_s: float, widths: tuple[int, int], height: int) -> "KeyframeGuides":
    """The guides of ``specs`` for the video stream ``stream_index`` of ``path``, keyed by output
    timestamp (input ticks less ``start_s``, where ``--start`` cuts, on the input's clock);
    ``widths``: the frames' storage and display widths (an image of either aspect fits), ``height``
    theirs; ``config``: the run's :class:`stream.config.TemporalConfig`. Raises InputError for a
    keyframe image that is unreadable, of another aspect, or placed past the end."""
    import av

    from stages.decoder import open_input
    from stages.temporal import shrunk_size

    images = []
    for spec in specs:
        rgb = read_colour_image(spec.image, "--keyframe")
        if widths[1] == widths[0] or abs(rgb.shape[1] / rgb.shape[0] / (widths[1] / height) - 1) > 0.02:
            check_aspect(rgb, widths[0], height, "--keyframe", spec.image)
        images.append(rgb)
    container = open_input(path)
    try:
        stream = container.streams.video[stream_index]
        shift_ticks = round(start_s / stream.time_base) if start_s else 0
        times = sorted(p.pts for p in container.demux(stream) if p.size and p.pts is not None)
        if not times:
            raise InputError(f"--keyframe: no timestamped video frames in {path}")
        placed = resolve_keyframes(specs, times, stream.time_base)
        rate = stream.average_rate or stream.guessed_rate or 25
        reach = max(1, math.ceil(reach_s * float(rate)))
        guides = KeyframeGuides()
        for keyframe, rgb in zip(placed, images):
            first, last = max(0, keyframe.index - reach), min(len(times) - 1, keyframe.index + reach)
            wanted = set(times[first:last + 1])
            container.seek(times[first], stream=stream, backward=True)
            frames = {}
            for frame in container.decode(stream):
                if frame.pts in wanted:
                    frames[frame.pts] = _low_lightness(frame, config.flow_size)
                if frame.pts is not None and frame.pts >= times[last]:
                    break
            sequence = [frames[t] for t in times[first:last + 1] if t in frames]
            stamps = [t for t in times[first:last + 1] if t in frames]
            if keyframe.pts not in frames:
                raise InputError(f"--keyframe {keyframe.spec.text}: frame {keyframe.index} could not be decoded")
            at = stamps.index(keyframe.pts)
            low_size = shrunk_size(*frames[keyframe.pts].shape[:2], config.flow_size)
            start_ab = image_ab(rgb, low_size)
            source = specs.index(keyframe.spec)
            guides.add(keyframe.pts - shift_ticks, start_ab, np.ones(start_ab.shape[1:], np.float32), source)
            for step in (1, -1):  # the following frames, then the preceding ones
                order, order_stamps = sequence[at::step], stamps[at::step]
                for stamp, (ab, weight) in zip(order_stamps[1:], _carry(order, start_ab, config)):
                    guides.add(stamp - shift_ticks, ab, weight, source)
    except av.error.FFmpegError as exc:
        raise InputError(f"--keyframe: cannot read {path} around the keyframes ({exc})") from None
    finally:
        container.close()
    return guides


class KeyframeGuides:
    """Per output timestamp, a keyframe's carried colour, its weight and which keyframe it comes from
    (what :func:`build_keyframe_guides` made); where two keyframes reach the same frame, their
    colours are averaged by weight and the frame belongs to the one with more weight.

    A keyframe is also a reference (:class:`PaletteGuide`) for the frames it reaches: where its
    carried colour fades, the model's colour still leans toward the keyframe's palette.
    """

    def __init__(self):
        self.by_pts: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
        self.palettes: list[PaletteGuide] = []

    def add(self, pts: int, ab: np.ndarray, weight: np.ndarray, source: int) -> None:
        if pts in self.by_pts:
            other_ab, other_weight, other_source = self.by_pts[pts]
            total = np.maximum(weight + other_weight, 1e-6)
            source = source if weight.mean() >= other_weight.mean() else other_source
            ab = (ab * weight + other_ab * other_weight) / total
            weight = np.maximum(weight, other_weight)
        self.by_pts[pts] = (ab.astype(np.float32), weight.astype(np.float32), source)

    def save(self, path: Path) -> None:
        stamps = sorted(self.by_pts)
        np.savez(path, pts=np.array(stamps, np.int64),
                 ab=np.stack([np.clip(np.round(self.by_pts[t][0]), -128, 127).astype(np.int8) for t in stamps]),
                 weight=np.stack([np.round(self.by_pts[t][1] * 255).astype(np.uint8) for t in stamps]),
                 source=np.array([self.by_pts[t][2] for t in stamps], np.int16))

    @classmethod
    def load(cls, path: str, keyframes: list[str]) -> "KeyframeGuides":
        """The guides saved at ``path``; ``keyframes``: the run's ``guidance.keyframes`` (their images
        become the palettes)."""
        guides = cls()
        with np.load(path) as saved:
            for stamp, ab, weight, source in zip(saved["pts"], saved["ab"], saved["weight"], saved["source"]):
                guides.by_pts[int(stamp)] = (ab.astype(np.float32), weight.astype(np.float32) / 255, int(source))
        guides.palettes = [PaletteGuide([read_colour_image(parse_keyframe(text).image, "--keyframe")], 1.0)
                           for text in keyframes]
        return guides

    def palette(self, pts: int) -> PaletteGuide | None:
        """The palette of the keyframe that reaches the frame at ``pts``; None when none does."""
        guide = self.by_pts.get(pts)
        return self.palettes[guide[2]] if guide is not None and guide[2] < len(self.palettes) else None

    def blend(self, pts: int, ab: np.ndarray) -> np.ndarray:
        """The model's (smoothed) ab for the frame at ``pts`` (float32 2×h×w) with the guide blended
        in, at the guide's resolution; ``ab`` unchanged where no keyframe reaches this frame."""
        guide = self.by_pts.get(pts)
        if guide is None:
            return ab
        guide_ab, weight, _ = guide
        height, width = weight.shape
        model = cv2.resize(np.ascontiguousarray(ab.transpose(1, 2, 0)), (width, height), interpolation=cv2.INTER_LINEAR)
        model = model.reshape(height, width, 2).transpose(2, 0, 1)
        return (guide_ab * weight + model * (1 - weight)).astype(np.float32)
