"""HDR sources (HDR10/PQ and HLG, BT.2020) rendered to SDR BT.709 before colorization.

Read as if they were SDR, PQ code values make a dim, flat picture (a PQ signal puts SDR's whole
range in its lower half). Each HDR frame is therefore tone-mapped to an 8-bit BT.709 R'G'B' frame:

1. Y'CbCr (limited range, BT.2020 non-constant-luminance matrix; ITU-R BT.2020 Table 4) → R'G'B';
2. the transfer undone to display light in cd/m²: PQ by the SMPTE ST 2084 EOTF; HLG by the
   ITU-R BT.2100 inverse OETF and OOTF (system gamma 1.2, 1000 cd/m² peak);
3. BT.2020 → BT.709 primaries in linear light (the 3×3 matrix of ITU-R BT.2087), out-of-gamut
   values clipped;
4. tone mapping with HDR reference white (203 cd/m², ITU-R BT.2408) at SDR white: an extended
   Reinhard curve, x·(1 + x/w²)/(1 + x) with w the source peak over reference white (1000 cd/m²
   assumed: the common HDR10 mastering peak), so highlights roll off instead of clipping;
5. BT.1886 display gamma (2.4) inverted to 8-bit R'G'B'.

The lightness the model sees is that of the SDR rendering, and the output is tagged BT.709.
"""
from __future__ import annotations

import cv2
import numpy as np

PQ_TRC, HLG_TRC = 16, 18  # AVColorTransferCharacteristic: SMPTE ST 2084, ARIB STD-B67
BT709 = 1  # AVColorPrimaries / AVColorTransferCharacteristic BT.709: what the rendering is
REFERENCE_WHITE = 203.0
ASSUMED_PEAK = 1000.0
SDR_GAMMA = 2.4

# ST 2084 constants
M1, M2 = 2610 / 16384, 2523 / 4096 * 128
C1, C2, C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
# BT.2100 HLG constants
HLG_A, HLG_B, HLG_C = 0.17883277, 0.28466892, 0.55991073

BT2020_TO_BT709 = np.float32([[1.6605, -0.5876, -0.0728],
                              [-0.1246, 1.1329, -0.0083],
                              [-0.0182, -0.1006, 1.1187]])
BT2020_LUMA = (0.2627, 0.6780, 0.0593)


def is_hdr(frame) -> bool:
    """Whether a decoded frame is signalled PQ or HLG."""
    return int(frame.color_trc or 0) in (PQ_TRC, HLG_TRC)


def describe(frame) -> str:
    return "HDR10 (PQ)" if int(frame.color_trc) == PQ_TRC else "HLG"


def _rgb_prime(frame) -> np.ndarray:
    """The frame's non-linear R'G'B' (float32 H×W×3, 0..1) from limited-range BT.2020 Y'CbCr."""
    yuv = frame.reformat(format="yuv444p16le")  # chroma brought to full size; values scaled to 16 bits
    planes = yuv.to_ndarray().astype(np.float32) / np.float32(1 << 8)  # H×W×3, back to 8-bit units
    y = (planes[..., 0] - 16.0) / 219.0
    cb = (planes[..., 1] - 128.0) / 224.0
    cr = (planes[..., 2] - 128.0) / 224.0
    kr, kg, kb = BT2020_LUMA
    r = y + 2 * (1 - kr) * cr
    b = y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / kg
    return np.clip(cv2.merge((r, g, b)), 0.0, 1.0)


def _display_light(rgb_prime: np.ndarray, trc: int) -> np.ndarray:
    """Non-linear R'G'B' → linear display light in cd/m²."""
    if trc == PQ_TRC:
        e = np.power(rgb_prime, np.float32(1 / M2))
        return np.float32(10000.0) * np.power(np.maximum(e - C1, 0) / (C2 - C3 * e), np.float32(1 / M1))
    scene = np.where(rgb_prime <= 0.5, rgb_prime * rgb_prime / 3.0,
                     (np.exp((rgb_prime - HLG_C) / HLG_A) + HLG_B) / 12.0).astype(np.float32)
    luminance = cv2.transform(scene, np.float32([BT2020_LUMA]))
    return np.float32(ASSUMED_PEAK) * scene * np.power(np.maximum(luminance, 1e-6), np.float32(0.2))[..., None]


def sdr_rgb(frame) -> np.ndarray:
    """An HDR frame (PQ or HLG, any bit depth) → 8-bit BT.709 SDR RGB, uint8 H×W×3."""
    light = _display_light(_rgb_prime(frame), int(frame.color_trc))
    bt709 = np.maximum(cv2.transform(light, BT2020_TO_BT709), 0)
    x = bt709 / np.float32(REFERENCE_WHITE)
    w2 = np.float32((ASSUMED_PEAK / REFERENCE_WHITE) ** 2)
    mapped = np.clip(x * (1 + x / w2) / (1 + x), 0.0, 1.0)
    return cv2.convertScaleAbs(np.power(mapped, np.float32(1 / SDR_GAMMA)), alpha=255.0)
