"""Random but well-behaved weights for a deploy prototxt, written as a binary ``.caffemodel``.

For testing the converter without the released weights: every blob has the shape Caffe expects;
convolutions get He-initialised weights and small biases. When calibrated, each BatchNorm gets the
channel mean and variance it actually sees on a random L image (jittered, and stored multiplied by a
Caffe-like scale factor), so activations stay of order one through the whole net, and the logits
layer feeding the softmax is scaled to a standard deviation of ``logit_std``, so the annealed softmax
is neither uniform nor one-hot. Uncalibrated weights (BatchNorm mean 0, variance 1) are instant and
good enough for tests that only need the right blob shapes.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf.message import Message

from models import NUM_BINS, load_bin_centres
from models.caffe import reference
from models.caffe.layers import conv_geometry, deploy_layers, expected_blob_shapes, top_shape
from models.caffe.proto import NetParameter, array_to_blob, parse_prototxt

BN_SCALE_FACTOR = 999.982
"""Caffe's moving-average normaliser after long training: BatchNorm's mean and variance blobs are
stored multiplied by it."""
RESCALED_SOFTMAX_FACTOR = 2.606
"""The deploy net's softmax sharpening (``conv8_313_rh``), about 1 / T for T = 0.38."""


@dataclass(frozen=True)
class SyntheticWeights:
    """Blobs by layer name, in Caffe order, as float32 arrays of the shapes Caffe expects."""

    blobs: dict[str, list[np.ndarray]]

    def write(self, path: Path, net_name: str = "synthetic", omit: Collection[str] = ()) -> None:
        """Write a binary caffemodel with these blobs; layers named in ``omit`` are stored without blobs."""
        net = NetParameter(name=net_name)
        for name, arrays in self.blobs.items():
            layer = net.layer.add(name=name)
            if name not in omit:
                layer.blobs.extend(array_to_blob(a) for a in arrays)
        Path(path).write_bytes(net.SerializeToString())


def _initial_blobs(rng: np.random.Generator, layer: Message, bottom: tuple[int, ...]) -> list[np.ndarray]:
    shapes = [shape for _, shape in expected_blob_shapes(layer, bottom)]
    if not shapes:
        return []
    if layer.type in ("Convolution", "Deconvolution"):
        g = conv_geometry(layer)
        kh, kw = g.kernel
        if layer.name == "class8_ab" and bottom[1] == NUM_BINS and g.num_output == 2:
            centres = load_bin_centres().astype(np.float64)
            arrays = [(centres.T * rng.uniform(0.9, 1.1, centres.T.shape)).reshape(shapes[0])]
        else:
            if layer.type == "Convolution":
                fan_in = shapes[0][1] * kh * kw
            else:
                fan_in = shapes[0][0] / g.group * kh * kw / (g.stride[0] * g.stride[1])
            arrays = [rng.standard_normal(shapes[0], dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))]
        if g.bias_term:
            arrays.append(rng.normal(0.0, 0.05, shapes[1]))
        return arrays
    if layer.type == "BatchNorm":
        channels = shapes[0]
        return [np.zeros(channels), np.full(channels, BN_SCALE_FACTOR), np.array([BN_SCALE_FACTOR])]
    arrays = [RESCALED_SOFTMAX_FACTOR * rng.uniform(0.8, 1.2, shapes[0])]
    if len(shapes) > 1:
        arrays.append(rng.normal(0.0, 0.1, shapes[1]))
    return arrays


def _logits_layers(layers: list[Message]) -> set[str]:
    """Names of convolutions whose top feeds a Softmax, directly or through one Scale layer."""
    softmax_inputs = {layer.bottom[0] for layer in layers if layer.type == "Softmax"}
    scaled_into_softmax = {layer.bottom[0] for layer in layers
                           if layer.type == "Scale" and layer.top[0] in softmax_inputs}
    return {layer.name for layer in layers if layer.type in ("Convolution", "Deconvolution")
            and layer.top[0] in softmax_inputs | scaled_into_softmax}


def random_weights(prototxt: Path, seed: int = 0, calibrate: bool = True, logit_std: float = 1.0,
                   ) -> SyntheticWeights:
    """Random blobs for every parameterised layer of ``prototxt`` (see the module docstring).

    A ``class8_ab`` decoder gets jittered bin centres and a small bias, and a Scale layer a per-channel
    scale near 2.606, so a test can tell them from the defaults the converter fills in when their blobs
    are absent. Calibration runs the NumPy reference (float32) on one random L image of the
    prototxt's input size (the statistics depend on the size)."""
    rng = np.random.default_rng(seed)
    net = parse_prototxt(prototxt)
    net_input, layers = deploy_layers(net, str(prototxt))
    blobs: dict[str, list[np.ndarray]] = {}
    if not calibrate:
        shapes = {net_input.name: net_input.shape}
        for layer in layers:
            bottom = shapes[layer.bottom[0]]
            if layer.type != "Silence":
                shapes[layer.top[0]] = top_shape(layer, bottom)
            arrays = _initial_blobs(rng, layer, bottom)
            if arrays:
                blobs[layer.name] = [np.asarray(a, dtype=np.float32) for a in arrays]
        return SyntheticWeights(blobs)

    logits = _logits_layers(layers)

    def calibrate_layer(layer: Message, bottom: np.ndarray) -> None:
        arrays = _initial_blobs(rng, layer, bottom.shape)
        if layer.type == "BatchNorm":
            variance = bottom.var(axis=(0, 2, 3)) * rng.uniform(0.8, 1.25, bottom.shape[1]) + 1e-3
            mean = bottom.mean(axis=(0, 2, 3)) + rng.normal(0.0, 0.1, bottom.shape[1]) * np.sqrt(variance)
            arrays = [mean * BN_SCALE_FACTOR, variance * BN_SCALE_FACTOR, np.array([BN_SCALE_FACTOR])]
        elif layer.name in logits:
            spread = reference.run_layer(layer, bottom, [a.astype(np.float32) for a in arrays]).std()
            arrays = [a * (logit_std / spread) for a in arrays]
        if arrays:
            blobs[layer.name] = [np.asarray(a, dtype=np.float32) for a in arrays]

    image = rng.uniform(-50.0, 50.0, (1, *net_input.shape[1:])).astype(np.float32)
    reference.forward(net, blobs, image, dtype=np.float32, before_layer=calibrate_layer)
    return SyntheticWeights(blobs)


def write_random_caffemodel(prototxt: Path, output: Path, seed: int = 0, calibrate: bool = True,
                            omit: Collection[str] = ()) -> SyntheticWeights:
    """Write random weights for ``prototxt`` to ``output`` (layers in ``omit`` without blobs); return them."""
    weights = random_weights(prototxt, seed=seed, calibrate=calibrate)
    weights.write(output, net_name=parse_prototxt(prototxt).name or "synthetic", omit=omit)
    return weights
