"""Colorization models: the embedded default, the ab bin table, training, conversion, evaluation."""
from __future__ import annotations

from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_PATH = MODELS_DIR / "default.onnx"
BIN_CENTRES_PATH = MODELS_DIR / "ab_bin_centres.txt"
NUM_BINS = 313
ANNEAL_T = 0.38


def load_bin_centres() -> np.ndarray:
    """The 313 quantised ab bin centres as a float32 array of shape (313, 2), columns (a, b)."""
    centres = np.loadtxt(BIN_CENTRES_PATH, dtype=np.float32, comments="#")
    assert centres.shape == (NUM_BINS, 2)
    return centres
