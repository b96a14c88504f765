"""Colorization models: the embedded default, the ab bin table, training, conversion, evaluation."""
from __future__ import annotations

from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_PATH = MODELS_DIR / "default.onnx"
DEFAULT_INT8_MODEL_PATH = MODELS_DIR / "default-int8.onnx"
"""The embedded model's INT8 twin (``colorize quantize`` defaults: QDQ, uint8 activations, int8
per-channel weights, 313-bin logits and decoding kept in float), shipped because it meets the same
validation figures as the float model (models/MODEL_CARD.md)."""
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
"""CPU features (Linux /proc/cpuinfo names) with 8-bit dot-product instructions, where onnxruntime's
INT8 kernels beat float ones (x86 VNNI and AMX, ARM dot product)."""
BIN_CENTRES_PATH = MODELS_DIR / "ab_bin_centres.txt"
AB_PRIOR_PATH = MODELS_DIR / "ab_prior.txt"
NUM_BINS = 313
ANNEAL_T = 0.38


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def embedded_model(provider: str, precision: str) -> Path:
    """The embedded model file to run: ``precision`` 'fp32' or 'int8' names a twin; 'auto' takes the
    INT8 twin on the CPU provider where the CPU has 8-bit dot products (:data:`INT8_DOT_PRODUCT_FLAGS`)
    and the file is installed, else the float model (GPUs and NPUs run float models fastest)."""
    if precision == "int8":
        return DEFAULT_INT8_MODEL_PATH
    if (precision == "auto" and provider == "cpu" and DEFAULT_INT8_MODEL_PATH.is_file()
            and cpu_flags() & INT8_DOT_PRODUCT_FLAGS):
        return DEFAULT_INT8_MODEL_PATH
    return DEFAULT_MODEL_PATH


def smoothed_histogram(histogram: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    """A distribution over the 313 ab bins (313, any float) convolved with a Gaussian of ``sigma``
    (ab units) over the bin centres (313×2) and renormalised: float64, 313, sums to 1. Zhang et al.
    smooth the training prior this way before rebalancing; colour guides compare histograms so."""
    d2 = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1).astype(np.float64)
    smooth = np.exp(-d2 / (2 * sigma ** 2)) @ np.asarray(histogram, np.float64)
    return smooth / smooth.sum()


def load_ab_prior() -> np.ndarray:
    """How often each of the 313 ab bins occurs in the embedded model's training photos (float64,
    313, sums to 1): the prior a colour guide re-weights against (:mod:`stages.guidance`)."""
    prior = np.loadtxt(AB_PRIOR_PATH, dtype=np.float64, comments="#")
    assert prior.shape == (NUM_BINS,)
    return prior


def load_bin_centres() -> np.ndarray:
    """The 313 quantised ab bin centres as a float32 array of shape (313, 2), columns (a, b)."""
    centres = np.loadtxt(BIN_CENTRES_PATH, dtype=np.float32, comments="#")
    assert centres.shape == (NUM_BINS, 2)
    return centres
