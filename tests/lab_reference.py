"""An independent NumPy implementation of the pipeline's colour math, used to pin it down.

sRGB (D65) ↔ CIE Lab with the constants OpenCV documents for its float conversion.
"""
from __future__ import annotations

import cv2
import numpy as np

RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                       [0.212671, 0.715160, 0.072169],
                       [0.019334, 0.119193, 0.950227]])
WHITE = np.array([0.950456, 1.0, 1.088754])
EPSILON = 0.008856


def rgb_to_lab(rgb01: np.ndarray) -> np.ndarray:
    """float RGB in [0, 1], ...×3 → Lab (L 0..100)."""
    linear = np.where(rgb01 <= 0.04045, rgb01 / 12.92, ((rgb01 + 0.055) / 1.055) ** 2.4)
    xyz = linear @ RGB_TO_XYZ.T / WHITE
    f = np.where(xyz > EPSILON, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lightness = np.where(xyz[..., 1] > EPSILON, 116 * f[..., 1] - 16, 903.3 * xyz[..., 1])
    return np.stack([lightness, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Lab → float RGB in [0, 1] (clipped), ...×3."""
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200
    f = np.stack([fx, fy, fz], axis=-1)
    xyz = np.where(f > 6 / 29, f ** 3, (f - 16 / 116) / 7.787) * WHITE
    linear = np.clip(xyz @ np.linalg.inv(RGB_TO_XYZ).T, 0, 1)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def colorize_reference(rgb: np.ndarray, predict_ab, size=(224, 224)) -> np.ndarray:
    """The recipe: resize → [0, 1] → Lab → L − 50 → model → ab → resize → merge with full L → RGB uint8."""
    small = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    l_input = rgb_to_lab(small / 255.0)[..., 0] - 50
    ab = predict_ab(l_input[None, None].astype(np.float32))[0]
    ab_full = cv2.resize(ab.transpose(1, 2, 0), (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    lab = np.concatenate([rgb_to_lab(rgb / 255.0)[..., :1], ab_full], axis=-1)
    return np.clip(np.rint(lab_to_rgb(lab) * 255), 0, 255).astype(np.uint8)
