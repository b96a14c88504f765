"""Degradations of old film and tape, applied to the training input's lightness only.

The model is trained on digital photos but mostly sees old film: grain, softness, crushed or lifted
tone curves, vignetting, frame-to-frame brightness flicker, scratches and dust. Showing it such
inputs (while the target colour stays the clean photo's) keeps film from falling outside what it
has learnt. Every degradation takes and returns L as float32 H×W in Lab units (0..100).

The lightness itself is what the eye sees (CIE Y) only for a digital photo. Film records light with
its own spectral sensitivity: orthochromatic stock (most film before the mid-1920s) is blind to red
and renders green darker and blue sky lighter than the eye does; panchromatic stock sees red but
weighs the channels differently again. :func:`film_stock_lightness` imitates that from the photo's
RGB, so the model does not learn that a lawn's grey level is the eye's.
"""
from __future__ import annotations

import cv2
import numpy as np

from stages.lab import full_lightness


_SRGB_TO_LINEAR = np.where(np.arange(256) / 255.0 <= 0.04045, np.arange(256) / 255.0 / 12.92,
                           ((np.arange(256) / 255.0 + 0.055) / 1.055) ** 2.4).astype(np.float32)
ORTHOCHROMATIC_SHARE = 0.5


def stock_sensitivity(rng: np.random.Generator) -> np.ndarray:
    """Random weights (float32, 3, summing to 1) of linear R, G, B in a film stock's exposure:
    orthochromatic with probability ``ORTHOCHROMATIC_SHARE`` (R 0–0.08, G 0.35–0.6, the rest blue),
    else panchromatic (R 0.2–0.4, G 0.4–0.65, the rest blue; the eye's, Rec. 709, is 0.21, 0.72, 0.07).
    Ranges are rough readings of published spectral sensitivity curves, not measurements."""
    if rng.random() < ORTHOCHROMATIC_SHARE:
        red, green = rng.uniform(0.0, 0.08), rng.uniform(0.35, 0.6)
    else:
        red, green = rng.uniform(0.2, 0.4), rng.uniform(0.4, 0.65)
    return np.array([red, green, max(0.0, 1.0 - red - green)], np.float32)


def film_stock_lightness(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 H×W×3 → float32 H×W lightness (CIE L*, 0..100) of the scene as a film stock with
    :func:`stock_sensitivity` would record it: the weighted sum of linear RGB (sRGB decoding, IEC
    61966-2-1) put through the L* formula of CIE 1976 in place of luminance Y. White stays 100 and
    black 0; a pure red is near black on orthochromatic stock."""
    linear = _SRGB_TO_LINEAR[rgb]
    exposure = linear @ stock_sensitivity(rng)
    return np.where(exposure > 216 / 24389, 116.0 * np.cbrt(exposure) - 16.0,
                    exposure * (24389 / 27)).astype(np.float32)


def tone_curve(l: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma 0.7–1.6, contrast 0.7–1.5 about mid-grey (old prints are often hard, with crushed
    blacks and burnt-out whites), brightness shift ±6 (flicker)."""
    x = np.clip(l, 0.0, 100.0) / 100.0
    x = np.power(x, np.float32(rng.uniform(0.7, 1.6)))
    x = (x - 0.5) * np.float32(rng.uniform(0.7, 1.5)) + 0.5
    return x * 100.0 + np.float32(rng.uniform(-6.0, 6.0))


def soften(l: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with σ 0.5–1.6 pixels (soft optics, generation loss)."""
    return cv2.GaussianBlur(l, (0, 0), float(rng.uniform(0.5, 1.6)))


def grain(l: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Film grain: Gaussian noise of σ 1–5 L, sometimes clumped by a small blur."""
    noise = rng.standard_normal(l.shape, dtype=np.float32) * np.float32(rng.uniform(1.0, 5.0))
    if rng.random() < 0.5:
        noise = cv2.GaussianBlur(noise, (0, 0), 0.7) * np.float32(1.8)
    return l + noise


def vignette(l: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darker corners: L × (1 − s·r²), r the distance from the centre (1 at the corners), s 0.1–0.45."""
    h, w = l.shape
    yy, xx = np.ogrid[-1.0:1.0:complex(0, h), -1.0:1.0:complex(0, w)]
    r2 = ((yy ** 2 + xx ** 2) / 2.0).astype(np.float32)
    return l * (1.0 - np.float32(rng.uniform(0.1, 0.45)) * r2)


def scratches_and_dust(l: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A few thin vertical scratches and specks of dust, bright or dark."""
    out = l.copy()
    h, w = l.shape
    for _ in range(int(rng.integers(0, 3))):
        x = int(rng.integers(0, w))
        out[:, x:x + int(rng.integers(1, 3))] = np.float32(rng.choice([5.0, 95.0]))
    for _ in range(int(rng.integers(0, 12))):
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        cv2.circle(out, (cx, cy), int(rng.integers(1, 3)), float(rng.choice([3.0, 97.0])), -1)
    return out


DEGRADATIONS = ((tone_curve, 0.6), (soften, 0.35), (grain, 0.5), (vignette, 0.3), (scratches_and_dust, 0.2))


def degrade_like_film(l: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each degradation applied independently with its probability; result clipped to 0..100."""
    for degradation, probability in DEGRADATIONS:
        if rng.random() < probability:
            l = degradation(l, rng)
    return np.clip(l, 0.0, 100.0).astype(np.float32, copy=False)


FILM_STOCK_PROBABILITY = 0.75


def film_lightness(rgb: np.ndarray, rng: np.random.Generator, eye_lightness: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 H×W×3 → float32 H×W L (0..100) as old film would show the scene: recorded with a
    random film stock's sensitivity (:func:`film_stock_lightness`, with probability
    ``FILM_STOCK_PROBABILITY``; else the eye's lightness, ``eye_lightness`` when the caller already
    has it) and then :func:`degrade_like_film`."""
    if rng.random() < FILM_STOCK_PROBABILITY:
        lightness = film_stock_lightness(rgb, rng)
    else:
        lightness = full_lightness(rgb) if eye_lightness is None else eye_lightness
    return degrade_like_film(lightness, rng)


def black_bars(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Letterbox or pillarbox: black bars of 5–16 % of the side on both edges (a 4:3 film in a 16:9
    transfer, a widescreen film on a 4:3 tape). Applied to the RGB crop, so the target there is
    black with no colour, as in a real transfer. Returns a new array."""
    out = rgb.copy()
    h, w = out.shape[:2]
    if rng.random() < 0.5:
        bar = int(w * rng.uniform(0.05, 0.16))
        out[:, :bar] = 0
        out[:, w - bar:] = 0
    else:
        bar = int(h * rng.uniform(0.05, 0.16))
        out[:bar] = 0
        out[h - bar:] = 0
    return out
