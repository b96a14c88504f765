"""A plain-NumPy forward pass of a Caffe deploy net, written from Caffe's layer definitions.

It is the ground truth the converted ONNX model is tested against, so it shares nothing with the
converter beyond reading the files and the layer parameters: no folding, no rewritten softmax,
every layer computed as Caffe computes it, in float64 by default.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from google.protobuf.message import Message

from models.caffe.layers import conv_geometry, deploy_layers
from models.caffe.proto import blob_to_array, parse_caffemodel

LayerWeights = Mapping[str, Sequence[np.ndarray]]


def load_weights(caffemodel: Path) -> dict[str, list[np.ndarray]]:
    """Every layer's blobs in a caffemodel, by layer name, as float32 arrays of their stored shapes."""
    return {layer.name: [blob_to_array(b) for b in layer.blobs]
            for layer in parse_caffemodel(caffemodel).layer if layer.blobs}


def _window_views(padded: np.ndarray, kernel, stride, dilation, out_hw) -> np.ndarray:
    """(N, C, kh, kw, Ho, Wo) view: the input sample under each kernel tap for each output pixel."""
    n, c = padded.shape[:2]
    sn, sc, sh, sw = padded.strides
    shape = (n, c, kernel[0], kernel[1], out_hw[0], out_hw[1])
    strides = (sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1])
    return np.lib.stride_tricks.as_strided(padded, shape, strides, writeable=False)


def convolution(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, pad, dilation,
                group: int) -> np.ndarray:
    """Caffe Convolution: x (N, C, H, W), weight (O, C/group, kh, kw), bias (O,) → (N, O, Ho, Wo)."""
    n, c, h, w = x.shape
    o, c_per_group, kh, kw = weight.shape
    out_hw = tuple((size + 2 * p - (d * (k - 1) + 1)) // s + 1
                   for size, p, d, k, s in zip((h, w), pad, dilation, (kh, kw), stride))
    padded = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    windows = _window_views(padded, (kh, kw), stride, dilation, out_hw)
    o_per_group = o // group
    out = np.empty((n, o) + out_hw, dtype=np.result_type(x, weight))
    for g in range(group):
        cols = windows[:, g * c_per_group:(g + 1) * c_per_group]
        kernel = weight[g * o_per_group:(g + 1) * o_per_group]
        out[:, g * o_per_group:(g + 1) * o_per_group] = np.einsum("nckluv,ockl->nouv", cols, kernel,
                                                                  optimize=True)
    if bias is not None:
        out += bias.reshape(1, o, 1, 1)
    return out


def deconvolution(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, pad, dilation,
                  group: int) -> np.ndarray:
    """Caffe Deconvolution (the adjoint of Convolution): x (N, C, H, W), weight (C, O/group, kh, kw),
    bias (O,) → (N, O, s·(H−1) + d·(k−1) + 1 − 2·pad, …)."""
    n, c, h, w = x.shape
    _, o_per_group, kh, kw = weight.shape
    c_per_group = c // group
    full_hw = tuple(s * (size - 1) + d * (k - 1) + 1 for size, s, d, k in zip((h, w), stride, dilation, (kh, kw)))
    full = np.zeros((n, o_per_group * group) + full_hw, dtype=np.result_type(x, weight))
    for g in range(group):
        taps = np.einsum("nchw,cokl->noklhw", x[:, g * c_per_group:(g + 1) * c_per_group],
                         weight[g * c_per_group:(g + 1) * c_per_group], optimize=True)
        target = full[:, g * o_per_group:(g + 1) * o_per_group]
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dilation[0], j * dilation[1]
                target[:, :, r0:r0 + stride[0] * (h - 1) + 1:stride[0],
                       c0:c0 + stride[1] * (w - 1) + 1:stride[1]] += taps[:, :, i, j]
    out = full[:, :, pad[0]:full_hw[0] - pad[0], pad[1]:full_hw[1] - pad[1]]
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(out)


def batch_norm(x: np.ndarray, mean_sum: np.ndarray, variance_sum: np.ndarray, scale_factor: float,
               eps: float) -> np.ndarray:
    """Caffe BatchNorm with global statistics: the stored mean and variance are divided by the
    stored scale factor (0 when the factor is 0), then (x − mean) / sqrt(variance + eps)."""
    factor = 0.0 if scale_factor == 0 else 1.0 / scale_factor
    mean = mean_sum.reshape(-1) * factor
    variance = variance_sum.reshape(-1) * factor
    return (x - mean.reshape(1, -1, 1, 1)) / np.sqrt(variance.reshape(1, -1, 1, 1) + eps)


def softmax_channels(x: np.ndarray) -> np.ndarray:
    """Softmax over axis 1."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run_layer(layer: Message, bottom: np.ndarray, blobs: Sequence[np.ndarray]) -> np.ndarray | None:
    """One layer's top for its bottom and learned blobs (None for Silence)."""
    dtype = bottom.dtype
    kind = layer.type
    if kind in ("Convolution", "Deconvolution"):
        g = conv_geometry(layer)
        weight = np.asarray(blobs[0], dtype=dtype).reshape(blobs[0].shape[-4:])
        bias = np.asarray(blobs[1], dtype=dtype).reshape(-1) if g.bias_term else None
        op = convolution if kind == "Convolution" else deconvolution
        return op(bottom, weight, bias, g.stride, g.pad, g.dilation, g.group)
    if kind == "ReLU":
        slope = layer.relu_param.negative_slope
        return np.where(bottom > 0, bottom, bottom * dtype.type(slope))
    if kind == "BatchNorm":
        mean, variance, factor = (np.asarray(b, dtype=np.float64) for b in blobs[:3])
        return batch_norm(bottom, mean, variance, float(factor.reshape(-1)[0]),
                          float(layer.batch_norm_param.eps)).astype(dtype)
    if kind == "Scale":
        scale = np.asarray(blobs[0], dtype=dtype).reshape(1, -1, 1, 1)
        out = bottom * scale
        if layer.scale_param.bias_term:
            out = out + np.asarray(blobs[1], dtype=dtype).reshape(1, -1, 1, 1)
        return out
    if kind == "Softmax":
        return softmax_channels(bottom)
    if kind == "Silence":
        return None
    raise ValueError(f"layer '{layer.name}': no reference implementation for type '{kind}'")


def forward(net: Message, weights: LayerWeights, l_minus_50: np.ndarray | None, dtype=np.float64,
            before_layer: Callable[[Message, np.ndarray], None] | None = None,
            resume_from: tuple[str, Mapping[str, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """Run the deploy net on ``l_minus_50`` (N×1×H×W, any H, W the net accepts).

    ``weights`` maps layer name → its blobs in Caffe order (all layers with parameters must be present).
    ``before_layer(layer, bottom)`` is called before each layer runs (for calibration).
    ``resume_from=(layer_name, blobs)`` skips the layers before ``layer_name`` and starts from ``blobs``
    (as returned by an earlier pass; ``l_minus_50`` is then unused), to rerun only the net's head.
    Returns every blob by its Caffe name after the pass (in-place layers leave the last value).
    """
    net_input, layers = deploy_layers(net, "prototxt")
    if resume_from is None:
        blobs_by_name = {net_input.name: np.asarray(l_minus_50, dtype=dtype)}
    else:
        first_layer, earlier = resume_from
        start = next(i for i, layer in enumerate(layers) if layer.name == first_layer)
        layers = layers[start:]
        blobs_by_name = {name: np.asarray(value, dtype=dtype) for name, value in earlier.items()}
    for layer in layers:
        bottom = blobs_by_name[layer.bottom[0]]
        if before_layer is not None:
            before_layer(layer, bottom)
        top = run_layer(layer, bottom, weights.get(layer.name, ()))
        if top is not None:
            blobs_by_name[layer.top[0]] = top
    return blobs_by_name
