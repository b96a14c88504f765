"""The exported ONNX file as the one shipped artefact: the pipeline runs it and the next training starts from it.

Why one file: model files may add at most 25 MB to the repository per release, and an FP32 model
beside a separate PyTorch copy of the same weights (and its INT8 twin) no longer fits once the
network is wider. So the ONNX file

- keeps every batch norm as its own ``BatchNormalization`` node, with its parameters and running
  statistics under their PyTorch names; onnxruntime folds them into the convolutions when a session
  loads (basic graph optimisation), so inference costs the same as with folded weights;
- stores each float tensor of at least :data:`FLOAT16_STORAGE_MIN_ELEMENTS` elements (convolution and
  linear weights) as float16 with a ``Cast`` to float32 in front, folded at load the same way: the
  arithmetic stays float32 and the file halves. Training kept these parameters as float16 before
  (the former ``default_weights.pt``); on 10 CBSD68 photos the ab output moves by 0.005–0.013 on
  average against full-precision weights, and ``colorize evaluate``'s figures do not move.
  Batch-norm statistics stay float32 (variances here reach 1e5, beyond float16's 65,504);
- carries in its metadata what continuing training needs (:data:`TRAINING_METADATA_KEYS`): the
  width, the training prior over the 313 ab bins, the step count, the training seconds and the list
  of continuations.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import NUM_BINS

FLOAT16_STORAGE_MIN_ELEMENTS = 1024
FLOAT16_SUFFIX = ".float16"
NETWORK_PREFIX = "net."
TRAINING_METADATA_KEYS = ("width", "training_prior", "steps", "train_seconds", "continuations")


class ShippedWeightsError(ValueError):
    """An ONNX file that cannot seed training; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class ShippedWeights:
    """What ``python -m models.train --init-from MODEL.onnx`` starts from.

    ``state_dict``: PyTorch name → float32 array (parameters and batch-norm running statistics;
    ``num_batches_tracked`` is not kept); ``width``: the ColorNet width; ``prior``: float64 (313,),
    sums to 1; ``step``: optimiser steps so far; ``seconds``: training seconds so far;
    ``continuations``: one dict per earlier continuation, as the training log records them.
    """
    state_dict: dict[str, np.ndarray]
    width: int
    prior: np.ndarray
    step: int
    seconds: float
    continuations: list[dict]


def training_metadata(width: int, prior: np.ndarray, step: int, seconds: float,
                      continuations: list[dict]) -> dict[str, str]:
    """The metadata entries (string → string, as ONNX stores them) that :func:`read_shipped_weights` reads."""
    return {"width": str(width), "training_prior": json.dumps([float(f"{p:.6g}") for p in np.asarray(prior)]),
            "steps": str(step), "train_seconds": f"{seconds:.0f}", "continuations": json.dumps(continuations)}


def store_large_floats_as_float16(proto) -> int:
    """Rewrite ``proto`` (an ``onnx.ModelProto``) in place: each float32 initializer of at least
    FLOAT16_STORAGE_MIN_ELEMENTS elements whose name has no ``running_`` becomes a float16 initializer
    named ``NAME.float16`` plus a ``Cast`` node that gives ``NAME`` back as float32. Returns the count."""
    from onnx import TensorProto, helper, numpy_helper

    kept, casts = [], []
    for init in proto.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype == np.float32 and values.size >= FLOAT16_STORAGE_MIN_ELEMENTS and "running_" not in init.name:
            kept.append(numpy_helper.from_array(values.astype(np.float16), init.name + FLOAT16_SUFFIX))
            casts.append(helper.make_node("Cast", [init.name + FLOAT16_SUFFIX], [init.name], to=TensorProto.FLOAT,
                                          name=f"float16_storage/{init.name}"))
        else:
            kept.append(init)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(casts + nodes)
    return len(casts)


def read_shipped_weights(path: Path) -> ShippedWeights:
    """The network weights and training history inside an ONNX file this project exported.

    Raises ShippedWeightsError when the file cannot be read as ONNX, or lacks the training metadata or
    the unfolded batch-norm weights (a file exported before they were kept, or another model).
    """
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    path = Path(path)
    try:
        proto = onnx.load(str(path))
    except OSError as exc:
        raise ShippedWeightsError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except DecodeError:
        raise ShippedWeightsError(f"{path}: not an ONNX model") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in proto.graph.node):
        raise ShippedWeightsError(f"{path}: it is an 8-bit model; start from the float model it was quantized from")
    missing = [k for k in TRAINING_METADATA_KEYS if k not in meta]
    has_norms = any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    if missing or not has_norms:
        lacks = "the metadata " + ", ".join(missing) if missing else "unfolded batch norms"
        raise ShippedWeightsError(f"{path}: it cannot seed training: it lacks {lacks} (only a model exported by "
                                  "python -m models.train --export can)")
    state = {}
    for init in proto.graph.initializer:
        name = init.name.removesuffix(FLOAT16_SUFFIX)
        if name.startswith(NETWORK_PREFIX):
            state[name[len(NETWORK_PREFIX):]] = numpy_helper.to_array(init).astype(np.float32)
    try:
        prior = np.asarray(json.loads(meta["training_prior"]), np.float64)
        width, step, seconds = int(meta["width"]), int(meta["steps"]), float(meta["train_seconds"])
        continuations = list(json.loads(meta["continuations"]))
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        raise ShippedWeightsError(f"{path}: its training metadata is malformed ({exc})") from None
    if prior.shape != (NUM_BINS,) or not np.isfinite(prior).all() or prior.min() < 0 or prior.sum() <= 0:
        raise ShippedWeightsError(f"{path}: its training prior is not {NUM_BINS} non-negative numbers")
    return ShippedWeights(state, width, prior / prior.sum(), step, seconds, continuations)
