"""Colour math of the pipeline: RGB frames to the model's L input, and predicted ab back onto a frame.

Conventions (OpenCV's float Lab): RGB uint8 is scaled to [0, 1], L is in 0..100, a and b are in
Lab units (about −128..127). The model sees ``L − 50`` at its own input size; its ab prediction,
at a lower resolution, is resized to the frame and merged with the frame's own full-resolution L.
"""
from __future__ import annotations

import cv2
import numpy as np


def model_input(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 H×W×3 → float32 1×h×w holding L − 50 (−50..50) at ``size`` = (h, w).

    The frame is resized first (area interpolation, which anti-aliases downscaling), then
    converted to Lab, matching the reference recipe.
    """
    h, w = size
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small.astype(np.float32) * np.float32(1.0 / 255.0), cv2.COLOR_RGB2LAB)
    return (lab[:, :, 0] - np.float32(50.0))[None]


def full_lightness(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 H×W×3 → float32 H×W Lab lightness in 0..100."""
    lab = cv2.cvtColor(rgb.astype(np.float32) * np.float32(1.0 / 255.0), cv2.COLOR_RGB2LAB)
    return lab[:, :, 0]


def resize_ab(ab: np.ndarray, height: int, width: int) -> np.ndarray:
    """ab float32 2×h×w → float32 H×W×2 (bilinear), the layout cv2's Lab conversion expects."""
    return cv2.resize(np.ascontiguousarray(ab.transpose(1, 2, 0)), (width, height),
                      interpolation=cv2.INTER_LINEAR)


MERGE_ROWS = 256


def merge_ab(rgb: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """Colorize a frame: its own L with the predicted ab (float32 2×h×w) → RGB uint8 H×W×3.

    The Lab conversions run on strips of ``MERGE_ROWS`` rows: the result is the same as converting
    the whole frame at once (they are per pixel), but the float working set stays a few MB instead
    of 16 bytes a pixel (1.6 GB for an 8K frame), and the conversions run 2–3× faster in cache.
    """
    height, width = rgb.shape[:2]
    ab_full = resize_ab(ab, height, width)
    out = np.empty((height, width, 3), np.uint8)
    lab = np.empty((min(MERGE_ROWS, height), width, 3), np.float32)
    for top in range(0, height, MERGE_ROWS):
        rows = slice(top, min(top + MERGE_ROWS, height))
        strip = lab[: rows.stop - top]
        strip[:, :, 0] = full_lightness(rgb[rows])
        strip[:, :, 1:] = ab_full[rows]
        strip_rgb = cv2.cvtColor(strip, cv2.COLOR_LAB2RGB)
        out[rows] = np.clip(strip_rgb * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    return out
