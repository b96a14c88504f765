"""Loading an ONNX colorization model and running it with onnxruntime.

Any model with this contract runs:
  input  float32 N×1×H×W: Lab lightness minus 50 (N may be dynamic; H and W fixed, read from the model);
  output float32 N×2×h×w: ab in Lab units, or N×313×h×w: scores over the 313 quantised ab bins,
         decoded here with the annealed mean (T = 0.38) over :func:`models.load_bin_centres`.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import ANNEAL_T, NUM_BINS, embedded_model, load_bin_centres

PROVIDERS = {
    "cpu": ("CPUExecutionProvider", "onnxruntime"),
    "cuda": ("CUDAExecutionProvider", "onnxruntime-gpu with a CUDA driver and an NVIDIA GPU"),
    "npu": ("CANNExecutionProvider", "onnxruntime-cann with Ascend CANN toolkit and an Ascend NPU"),
    "openvino": ("OpenVINOExecutionProvider", "onnxruntime-openvino with Intel OpenVINO"),
}


def import_onnxruntime():
    """``import onnxruntime``, leaving nothing behind in TMPDIR.

    onnxruntime writes a telemetry session file (``.ses``, 51 bytes) into TMPDIR when it is first
    imported, and every run of ours left one there. The import runs with TMPDIR pointing at a
    private scratch folder, removed right after (the file is written only at import).
    """
    if "onnxruntime" in sys.modules:
        return sys.modules["onnxruntime"]
    scratch = tempfile.mkdtemp(prefix="colorize-ort-")
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = scratch
    try:
        import onnxruntime
    finally:
        if saved is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved
        shutil.rmtree(scratch, ignore_errors=True)
    return onnxruntime


class ModelError(Exception):
    """A model file that is missing, unreadable or does not follow the contract (one-line message)."""


def model_to_run(given: Path | None, provider: str, precision: str) -> Path:
    """``--model`` as given, else the embedded model's twin for ``provider`` and ``precision``
    (:func:`models.embedded_model`); raises ModelError when that file is not installed."""
    if given is not None:
        return given
    model = embedded_model(provider, precision)
    if not model.is_file():
        raise ModelError(f"the embedded model is missing ({model}); reinstall colorize or pass --model")
    return model


@dataclass(frozen=True)
class SessionSettings:
    """How onnxruntime runs the model: provider name (a key of PROVIDERS) and thread counts (0 = auto)."""

    provider: str = "cpu"
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    device_id: int = 0


def _dim(value) -> str:
    return str(value) if isinstance(value, int) else "N"


def annealed_mean(scores: np.ndarray, centres: np.ndarray, temperature: float = ANNEAL_T) -> np.ndarray:
    """Bin scores float32 N×313×h×w → ab float32 N×2×h×w: Σ softmax(scores/T)·centre."""
    z = scores.astype(np.float32) * np.float32(1.0 / temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    ab = np.einsum("nqhw,qc->nchw", e, centres, optimize=True)
    return (ab / e.sum(axis=1, keepdims=True)).astype(np.float32)


class ColorModel:
    """An onnxruntime session over a checked colorization model.

    ``input_size`` is (H, W) of the model's input; ``predict_ab`` takes float32 N×1×H×W (L − 50)
    and returns float32 N×2×h×w ab whatever the model's output kind.
    """

    def __init__(self, path: Path, settings: SessionSettings = SessionSettings()):
        ort = import_onnxruntime()

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        provider, needs = PROVIDERS[settings.provider]
        if provider not in ort.get_available_providers():
            raise ModelError(f"inference provider '{settings.provider}' is not available: needs {needs} "
                             f"(this onnxruntime offers {', '.join(ort.get_available_providers())})")
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        options.log_severity_level = 3
        provider_options = [{"device_id": settings.device_id}] if settings.provider in ("cuda", "npu") else [{}]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=[provider],
                                                provider_options=provider_options)
        except Exception as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load model {path}: not a valid ONNX model ({first_line[:200]})") from None
        if self.session.get_providers()[0] != provider:
            raise ModelError(f"inference provider '{settings.provider}' could not start ({provider} is installed "
                             f"but onnxruntime fell back to {self.session.get_providers()[0]}): needs {needs}")
        self.path = path
        self._check_contract()
        self._centres = load_bin_centres() if self.output_kind == "bins" else None

    def _check_contract(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelError(f"model {self.path.name} has {len(inputs)} inputs and {len(outputs)} outputs; "
                             "expected 1 input N×1×H×W and 1 output")
        shape_in = list(inputs[0].shape)
        found_in = "×".join(_dim(d) for d in shape_in)
        if (len(shape_in) != 4 or shape_in[1] != 1 or not isinstance(shape_in[2], int)
                or not isinstance(shape_in[3], int) or inputs[0].type != "tensor(float)"):
            raise ModelError(f"model {self.path.name} input '{inputs[0].name}' has shape {found_in} "
                             f"({inputs[0].type}); expected float N×1×H×W with fixed H and W")
        shape_out = list(outputs[0].shape)
        found_out = "×".join(_dim(d) for d in shape_out)
        if len(shape_out) != 4 or shape_out[1] not in (2, NUM_BINS):
            raise ModelError(f"model {self.path.name} output '{outputs[0].name}' has shape {found_out}; "
                             f"expected N×2×h×w (ab) or N×{NUM_BINS}×h×w (bin scores)")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.input_size = (int(shape_in[2]), int(shape_in[3]))
        self.output_kind = "ab" if shape_out[1] == 2 else "bins"
        self.fixed_batch = shape_in[0] if isinstance(shape_in[0], int) else None

    def predict_ab(self, l_minus_50: np.ndarray) -> np.ndarray:
        """float32 N×1×H×W (L − 50) → float32 N×2×h×w ab. Runs one frame at a time if the batch is fixed at 1."""
        if self.fixed_batch == 1 and len(l_minus_50) > 1:
            return np.concatenate([self.predict_ab(l_minus_50[i:i + 1]) for i in range(len(l_minus_50))])
        out = self.session.run([self.output_name], {self.input_name: l_minus_50})[0]
        if self.output_kind == "bins":
            out = annealed_mean(out, self._centres)
        return out.astype(np.float32, copy=False)
