"""Convert the Caffe colorization net (Zhang et al., ECCV 2016) to the pipeline's ONNX model.

    colorize convert-caffe colorization_deploy_v2.prototxt colorization_release_v2.caffemodel -o model.onnx

The ONNX model (opset 17) follows the pipeline's contract:
  input  ``l_minus_50``  float32 N×1×H×W  Lab lightness minus 50 (H, W from the prototxt, 224×224);
  output ``ab``          float32 N×2×h×w  the annealed-mean ab prediction in Lab units (56×56), exactly
                                          the Caffe net's ``class8_ab`` top.
The graph is the Caffe net's, simplified without changing its function: a BatchNorm or Scale that is
the only consumer of a (de)convolution is folded into its weights (``conv8_313_rh`` into ``conv8_313``;
the deploy net's BatchNorms follow ReLUs and stay BatchNormalization nodes), and a channel softmax
feeding a 1×1 convolution is written as exp(x − max) → conv → divide by the sum of exp (carried as one
extra output channel of the same convolution), which onnxruntime runs far faster than Softmax over
axis 1 of NCHW.

Weights are matched to prototxt layers by name. Like the released weights, a caffemodel may carry no
blobs for the ``class8_ab`` decoder (filled from the 313 ab bin centres) or for a Scale layer with a
constant filler, such as ``conv8_313_rh`` (filled with the filler value, 2.606); any other missing or
mis-shaped blob is an error.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf.message import Message

from models import BIN_CENTRES_PATH, NUM_BINS, load_bin_centres
from models.caffe.layers import (ConvGeometry, conv_geometry, deploy_layers,
                                 expected_blob_shapes, top_shape)
from models.caffe.proto import CaffeConversionError, blob_shape, blob_to_array, parse_caffemodel, parse_prototxt
from stream.checksum import file_sha256

__all__ = ["CaffeConversionError", "ConversionReport", "convert_caffe", "main"]

INPUT_NAME = "l_minus_50"
OUTPUT_NAME = "ab"
OPSET = 17
IR_VERSION = 8
DECODER_LAYER = "class8_ab"


@dataclass(frozen=True)
class ConversionReport:
    """What a conversion produced: the file, its per-image input/output shapes (C, H, W), and how the
    Caffe graph was mapped."""

    output: Path
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    caffe_layers: int
    onnx_nodes: int
    simplifications: tuple[str, ...]
    filled_defaults: tuple[str, ...]
    unused_caffemodel_layers: tuple[str, ...]

    def summary(self) -> str:
        lines = [f"wrote {self.output}: {INPUT_NAME} N×{_dims(self.input_shape, '×')} → "
                 f"{OUTPUT_NAME} N×{_dims(self.output_shape, '×')} "
                 f"({self.caffe_layers} Caffe layers → {self.onnx_nodes} ONNX nodes)"]
        lines += [f"  simplified: {item}" for item in self.simplifications]
        lines += [f"  not in caffemodel, filled: {item}" for item in self.filled_defaults]
        if self.unused_caffemodel_layers:
            lines.append(f"  caffemodel layers not in the prototxt (ignored): "
                         f"{', '.join(self.unused_caffemodel_layers)}")
        return "\n".join(lines)


def _dims(shape: Sequence[int], sep: str = "x") -> str:
    return sep.join(str(int(d)) for d in shape)


# ---- intermediate graph: one op per Caffe layer, values named by the producing layer ----

@dataclass
class ConvOp:
    """Convolution (weight O×C/g×kh×kw) or, when ``transposed``, Caffe Deconvolution (weight C×O/g×kh×kw);
    float32 arrays."""

    name: str
    input: str
    output: str
    geometry: ConvGeometry
    transposed: bool
    weight: np.ndarray
    bias: np.ndarray | None

    def scale_outputs(self, scale: np.ndarray, shift: np.ndarray) -> None:
        """Make the op compute conv(x)·scale + shift per output channel (folding done in float64)."""
        g = self.geometry.group
        weight = self.weight.astype(np.float64)
        if self.transposed:
            c_in, o_per_group = weight.shape[:2]
            grouped = weight.reshape(g, c_in // g, o_per_group, *weight.shape[2:])
            weight = grouped * scale.reshape(g, 1, o_per_group, 1, 1)
        else:
            weight = weight * scale.reshape(-1, 1, 1, 1)
        self.weight = weight.reshape(self.weight.shape).astype(np.float32)
        bias = self.bias.astype(np.float64) if self.bias is not None else np.zeros_like(scale)
        self.bias = (bias * scale + shift).astype(np.float32)


@dataclass
class BatchNormOp:
    """Inference BatchNorm: (x − mean) / sqrt(variance + eps), per channel (true mean/variance)."""

    name: str
    input: str
    output: str
    mean: np.ndarray
    variance: np.ndarray
    eps: float

    def as_affine(self) -> tuple[np.ndarray, np.ndarray]:
        scale = 1.0 / np.sqrt(self.variance + self.eps)
        return scale, -self.mean * scale


@dataclass
class ScaleOp:
    """Per-channel x·scale (+ bias)."""

    name: str
    input: str
    output: str
    scale: np.ndarray
    bias: np.ndarray | None

    def as_affine(self) -> tuple[np.ndarray, np.ndarray]:
        return self.scale, self.bias if self.bias is not None else np.zeros_like(self.scale)


@dataclass
class ReluOp:
    name: str
    input: str
    output: str
    negative_slope: float


@dataclass
class SoftmaxOp:
    """Softmax over the channel axis."""

    name: str
    input: str
    output: str


@dataclass
class SoftmaxDecodeOp:
    """Softmax over channels followed by a per-pixel linear map: weight K×C, bias K (or None)."""

    name: str
    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray | None


Op = ConvOp | BatchNormOp | ScaleOp | ReluOp | SoftmaxOp | SoftmaxDecodeOp


@dataclass
class CaffeGraph:
    """The deploy net as ops over SSA values; ``input_value`` and ``output_value`` are value names."""

    ops: list[Op]
    input_value: str
    output_value: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    filled_defaults: list[str] = field(default_factory=list)
    unused_caffemodel_layers: list[str] = field(default_factory=list)
    simplifications: list[str] = field(default_factory=list)

    def consumers(self, value: str) -> list[Op]:
        return [op for op in self.ops if op.input == value]

    def producer(self, value: str) -> Op | None:
        return next((op for op in self.ops if op.output == value), None)


def _shape_matches(expected: tuple[int, ...], found: tuple[int, ...], legacy: bool) -> bool:
    if legacy and len(expected) <= 4:
        return (1,) * (4 - len(expected)) + tuple(expected) == tuple(found)
    return tuple(expected) == tuple(found)


def _default_blobs(layer: Message, bottom: tuple[int, ...], expected: list[tuple[str, tuple[int, ...]]],
                   ) -> tuple[list[np.ndarray], str] | None:
    """Blobs Caffe would hold for a layer absent from the caffemodel, where that is intended: the
    annealed-mean decoder (bin centres) and a Scale with an explicit constant filler. Else None."""
    if layer.type == "Convolution" and layer.name == DECODER_LAYER:
        g = conv_geometry(layer)
        if g.is_pointwise and g.num_output == 2 and bottom[1] == NUM_BINS:
            arrays = [load_bin_centres().T.reshape(expected[0][1]).astype(np.float32)]
            if g.bias_term:
                arrays.append(np.zeros(2, np.float32))
            return arrays, f"{layer.name}: weights = the {NUM_BINS} ab bin centres ({BIN_CENTRES_PATH.name})"
    if layer.type == "Scale":
        p = layer.scale_param
        if p.HasField("filler") and p.filler.type == "constant":
            arrays = [np.full(expected[0][1], p.filler.value, np.float32)]
            if p.bias_term:
                if p.HasField("bias_filler") and p.bias_filler.type != "constant":
                    return None
                arrays.append(np.full(expected[1][1], p.bias_filler.value, np.float32))
            return arrays, f"{layer.name}: scale = {p.filler.value:g} (the prototxt's constant filler)"
    return None


def _layer_arrays(layer: Message, bottom: tuple[int, ...], stored: dict[str, list[Message]],
                  caffemodel: Path, prototxt: Path, filled: list[str]) -> list[np.ndarray]:
    expected = expected_blob_shapes(layer, bottom)
    if not expected:
        return []
    found = stored.get(layer.name, [])
    roles = ", ".join(f"{role} {_dims(shape)}" for role, shape in expected)
    if not found:
        default = _default_blobs(layer, bottom, expected)
        if default is None:
            raise CaffeConversionError(f"{caffemodel}: no weights for layer '{layer.name}' ({layer.type}); "
                                       f"{prototxt.name} expects {roles}")
        arrays, description = default
        filled.append(description)
        return arrays
    if len(found) != len(expected):
        raise CaffeConversionError(f"{caffemodel}: layer '{layer.name}' ({layer.type}) has {len(found)} blobs; "
                                   f"{prototxt.name} expects {len(expected)} ({roles})")
    arrays = []
    for (role, shape), blob in zip(expected, found):
        found_shape = blob_shape(blob)
        if not _shape_matches(shape, found_shape, legacy=not blob.HasField("shape")):
            raise CaffeConversionError(f"{caffemodel}: layer '{layer.name}' {role} has shape {_dims(found_shape)} "
                                       f"but {prototxt.name} expects {_dims(shape)}")
        try:
            array = blob_to_array(blob)
        except ValueError as exc:
            raise CaffeConversionError(f"{caffemodel}: layer '{layer.name}' {role} is corrupt: {exc}") from None
        if not np.isfinite(array).all():
            raise CaffeConversionError(f"{caffemodel}: layer '{layer.name}' {role} contains NaN or infinite values")
        arrays.append(array.reshape(shape))
    return arrays


def _make_op(layer: Message, value_in: str, value_out: str, arrays: list[np.ndarray], prototxt: Path) -> Op:
    kind = layer.type
    if kind in ("Convolution", "Deconvolution"):
        g = conv_geometry(layer)
        return ConvOp(layer.name, value_in, value_out, g, kind == "Deconvolution",
                      arrays[0], arrays[1] if g.bias_term else None)
    if kind == "BatchNorm":
        p = layer.batch_norm_param
        if p.HasField("use_global_stats") and not p.use_global_stats:
            raise CaffeConversionError(f"{prototxt}: BatchNorm layer '{layer.name}' has use_global_stats: false "
                                       f"(batch statistics), which cannot be converted")
        mean, variance, factor = (a.astype(np.float64) for a in arrays)
        inverse = 0.0 if factor[0] == 0 else 1.0 / factor[0]
        return BatchNormOp(layer.name, value_in, value_out, mean * inverse, variance * inverse, float(p.eps))
    if kind == "Scale":
        bias = arrays[1].astype(np.float64) if layer.scale_param.bias_term else None
        return ScaleOp(layer.name, value_in, value_out, arrays[0].astype(np.float64), bias)
    if kind == "ReLU":
        return ReluOp(layer.name, value_in, value_out, float(layer.relu_param.negative_slope))
    if kind == "Softmax":
        return SoftmaxOp(layer.name, value_in, value_out)
    raise AssertionError(f"no op for layer type {kind}")


def read_caffe_graph(prototxt: Path, caffemodel: Path) -> CaffeGraph:
    """Parse both files, check every blob against the prototxt and build the op graph."""
    net = parse_prototxt(prototxt)
    net_input, layers = deploy_layers(net, str(prototxt))
    stored = {}
    for layer in parse_caffemodel(caffemodel).layer:
        stored.setdefault(layer.name, list(layer.blobs))
    input_value = f"caffe:{net_input.name}"
    current = {net_input.name: input_value}
    shapes = {input_value: net_input.shape}
    top_of = {input_value: net_input.name}
    ops: list[Op] = []
    filled: list[str] = []
    for layer in layers:
        for bottom_name in layer.bottom:
            if bottom_name not in current:
                raise CaffeConversionError(f"{prototxt}: layer '{layer.name}' reads blob '{bottom_name}', "
                                           f"which no earlier layer produces")
        if layer.type == "Silence":
            continue
        value_in = current[layer.bottom[0]]
        bottom = shapes[value_in]
        out_shape = top_shape(layer, bottom)
        arrays = _layer_arrays(layer, bottom, stored, caffemodel, prototxt, filled)
        value_out = f"caffe:{layer.name}"
        ops.append(_make_op(layer, value_in, value_out, arrays, prototxt))
        current[layer.top[0]] = value_out
        shapes[value_out] = out_shape
        top_of[value_out] = layer.top[0]
    consumed = {op.input for op in ops}
    outputs = [op.output for op in ops if op.output not in consumed]
    if len(outputs) != 1:
        names = ", ".join(top_of[v] for v in outputs) or "none"
        raise CaffeConversionError(f"{prototxt}: the net has {len(outputs)} outputs ({names}); "
                                   f"expected exactly one, the ab prediction")
    output_value = outputs[0]
    output_shape = shapes[output_value]
    if len(output_shape) != 4 or output_shape[1] != 2:
        raise CaffeConversionError(f"{prototxt}: net output '{top_of[output_value]}' has shape "
                                   f"{_dims(output_shape)}; expected N×2×h×w (a, b)")
    deploy_names = {layer.name for layer in layers}
    unused = [name for name, blobs in stored.items() if blobs and name not in deploy_names]
    return CaffeGraph(ops, input_value, output_value, net_input.shape, output_shape, filled, unused)


def simplify(graph: CaffeGraph) -> None:
    """Fold per-channel affine layers into the convolution they follow, and fuse softmax + 1×1 conv."""
    changed = True
    while changed:
        changed = False
        for op in graph.ops:
            if not isinstance(op, (BatchNormOp, ScaleOp)):
                continue
            producer = graph.producer(op.input)
            if isinstance(producer, ConvOp) and len(graph.consumers(op.input)) == 1:
                producer.scale_outputs(*op.as_affine())
                producer.output = op.output
                graph.ops.remove(op)
                graph.simplifications.append(f"{type(op).__name__[:-2]} '{op.name}' folded into '{producer.name}'")
                changed = True
                break
    for softmax in [op for op in graph.ops if isinstance(op, SoftmaxOp)]:
        consumers = graph.consumers(softmax.output)
        if len(consumers) != 1 or not isinstance(consumers[0], ConvOp):
            continue
        conv = consumers[0]
        if conv.transposed or not conv.geometry.is_pointwise:
            continue
        graph.ops[graph.ops.index(softmax)] = SoftmaxDecodeOp(f"{softmax.name}+{conv.name}", softmax.input,
                                                              conv.output, conv.weight[:, :, 0, 0], conv.bias)
        graph.ops.remove(conv)
        graph.simplifications.append(f"Softmax '{softmax.name}' fused with 1x1 convolution '{conv.name}' "
                                     f"(normalised after the convolution)")


class _OnnxBuilder:
    """Accumulates ONNX nodes and float32 initializers."""

    def __init__(self) -> None:
        self.nodes = []
        self.initializers = []

    def constant(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output


def _channel_vector(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32).reshape(-1, 1, 1)


def _emit(builder: _OnnxBuilder, op: Op, rename: dict[str, str]) -> None:
    x = rename.get(op.input, op.input)
    y = rename.get(op.output, op.output)
    n = op.name
    if isinstance(op, ConvOp):
        g = op.geometry
        inputs = [x, builder.constant(f"{n}/weight", np.asarray(op.weight, np.float32))]
        if op.bias is not None:
            inputs.append(builder.constant(f"{n}/bias", np.asarray(op.bias, np.float32)))
        builder.node("ConvTranspose" if op.transposed else "Conv", inputs, y, n, kernel_shape=list(g.kernel),
                     strides=list(g.stride), pads=[g.pad[0], g.pad[1], g.pad[0], g.pad[1]],
                     dilations=list(g.dilation), group=g.group)
    elif isinstance(op, BatchNormOp):
        channels = op.mean.size
        builder.node("BatchNormalization",
                     [x, builder.constant(f"{n}/gamma", np.ones(channels, np.float32)),
                      builder.constant(f"{n}/beta", np.zeros(channels, np.float32)),
                      builder.constant(f"{n}/mean", op.mean.astype(np.float32)),
                      builder.constant(f"{n}/variance", op.variance.astype(np.float32))],
                     y, n, epsilon=op.eps)
    elif isinstance(op, ScaleOp):
        scaled = y if op.bias is None else f"{n}/scaled"
        builder.node("Mul", [x, builder.constant(f"{n}/scale", _channel_vector(op.scale))], scaled, f"{n}/mul")
        if op.bias is not None:
            builder.node("Add", [scaled, builder.constant(f"{n}/bias", _channel_vector(op.bias))], y, f"{n}/add")
    elif isinstance(op, ReluOp):
        if op.negative_slope == 0:
            builder.node("Relu", [x], y, n)
        else:
            builder.node("LeakyRelu", [x], y, n, alpha=op.negative_slope)
    elif isinstance(op, (SoftmaxOp, SoftmaxDecodeOp)):
        peak = builder.node("ReduceMax", [x], f"{n}/max", f"{n}/max", axes=[1], keepdims=1)
        shifted = builder.node("Sub", [x, peak], f"{n}/shifted", f"{n}/sub")
        exp = builder.node("Exp", [shifted], f"{n}/exp", f"{n}/exp")
        if isinstance(op, SoftmaxOp):
            axes = builder.constant(f"{n}/axes", np.array([1], np.int64))
            total = builder.node("ReduceSum", [exp, axes], f"{n}/sum", f"{n}/sum", keepdims=1)
            builder.node("Div", [exp, total], y, f"{n}/div")
            return
        k, c = op.weight.shape
        weights_and_ones = np.concatenate([op.weight, np.ones((1, c))]).astype(np.float32).reshape(k + 1, c, 1, 1)
        mixed = builder.node("Conv", [exp, builder.constant(f"{n}/weight_and_ones", weights_and_ones)],
                             f"{n}/weighted_and_sum", f"{n}/conv", kernel_shape=[1, 1])
        axis = builder.constant(f"{n}/channel_axis", np.array([1], np.int64))
        zero = builder.constant(f"{n}/zero", np.array([0], np.int64))
        k_start = builder.constant(f"{n}/k", np.array([k], np.int64))
        k_end = builder.constant(f"{n}/k_plus_1", np.array([k + 1], np.int64))
        weighted = builder.node("Slice", [mixed, zero, k_start, axis], f"{n}/weighted", f"{n}/slice_weighted")
        total = builder.node("Slice", [mixed, k_start, k_end, axis], f"{n}/sum", f"{n}/slice_sum")
        normalised = y if op.bias is None else f"{n}/normalised"
        builder.node("Div", [weighted, total], normalised, f"{n}/div")
        if op.bias is not None:
            builder.node("Add", [normalised, builder.constant(f"{n}/bias", _channel_vector(op.bias))], y, f"{n}/add")
    else:
        raise AssertionError(f"unhandled op {op!r}")


def to_onnx(graph: CaffeGraph, metadata: dict[str, str], doc: str) -> tuple[bytes, int]:
    """The serialized ONNX model for a (simplified) graph, checked with onnx.checker (with shape
    inference), and its number of nodes."""
    import onnx
    from onnx import TensorProto, helper

    rename = {graph.input_value: INPUT_NAME, graph.output_value: OUTPUT_NAME}
    builder = _OnnxBuilder()
    for op in graph.ops:
        _emit(builder, op, rename)
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *graph.input_shape[1:]])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", *graph.output_shape[1:]])]
    onnx_graph = helper.make_graph(builder.nodes, "colorization_caffe", inputs, outputs, builder.initializers,
                                   doc_string=doc)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="colorize convert-caffe", producer_version="1")
    model.ir_version = IR_VERSION
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    serialized = model.SerializeToString()
    try:
        onnx.checker.check_model(serialized, full_check=True)
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CaffeConversionError(f"internal error: the converted graph fails the ONNX checker: {first_line}")
    return serialized, len(builder.nodes)


def _write_atomically(data: bytes, output: Path) -> None:
    if output.is_dir():
        raise CaffeConversionError(f"output path is a directory: {output}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    except OSError as exc:
        raise CaffeConversionError(f"cannot write {output}: {exc.strerror or exc}") from None
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temp, output)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise CaffeConversionError(f"cannot write {output}: {exc.strerror or exc}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def convert_caffe(prototxt: Path, caffemodel: Path, output: Path) -> ConversionReport:
    """Convert a deploy prototxt + caffemodel into the pipeline's ONNX model at ``output``.

    The file appears only when complete (written under a temporary name, then renamed).
    Raises CaffeConversionError with a one-line message on any problem with the inputs."""
    prototxt, caffemodel, output = Path(prototxt), Path(caffemodel), Path(output)
    graph = read_caffe_graph(prototxt, caffemodel)
    caffe_layers = len(graph.ops)
    simplify(graph)
    _, _, height, width = graph.input_shape
    _, _, out_height, out_width = graph.output_shape
    metadata = {
        "converter": "colorize convert-caffe (models.caffe.convert)",
        "source_prototxt": prototxt.name,
        "source_prototxt_sha256": file_sha256(prototxt),
        "source_caffemodel": caffemodel.name,
        "source_caffemodel_sha256": file_sha256(caffemodel),
        "contract": f"{INPUT_NAME} N×1×{height}×{width} (L−50) → {OUTPUT_NAME} N×2×{out_height}×{out_width} "
                    f"(annealed-mean ab)",
        "filled_defaults": "; ".join(graph.filled_defaults) or "none",
        "simplifications": "; ".join(graph.simplifications) or "none",
    }
    doc = "Zhang et al., ECCV 2016, Colorful Image Colorization; converted from Caffe"
    serialized, node_count = to_onnx(graph, metadata, doc)
    _write_atomically(serialized, output)
    return ConversionReport(output=output, input_shape=tuple(graph.input_shape[1:]),
                            output_shape=tuple(graph.output_shape[1:]), caffe_layers=caffe_layers,
                            onnx_nodes=node_count, simplifications=tuple(graph.simplifications),
                            filled_defaults=tuple(graph.filled_defaults),
                            unused_caffemodel_layers=tuple(graph.unused_caffemodel_layers))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``colorize convert-caffe PROTOTXT CAFFEMODEL -o model.onnx``; 0 on success, 2 on error."""
    parser = argparse.ArgumentParser(
        prog="colorize convert-caffe",
        description="Convert the Caffe colorization net (deploy prototxt + caffemodel) to the pipeline's "
                    "ONNX model: l_minus_50 N×1×224×224 → ab N×2×56×56.")
    parser.add_argument("prototxt", type=Path, help="deploy network, e.g. colorization_deploy_v2.prototxt")
    parser.add_argument("caffemodel", type=Path, help="trained weights, e.g. colorization_release_v2.caffemodel")
    parser.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    args = parser.parse_args(argv)
    try:
        report = convert_caffe(args.prototxt, args.caffemodel, args.output)
    except CaffeConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory while converting", file=sys.stderr)
        return 2
    except Exception as exc:  # a converter bug must still end in one line, not a traceback
        detail = (str(exc).strip().splitlines() or [""])[0]
        print(f"error: unexpected failure converting {args.prototxt}: {type(exc).__name__}: {detail}",
              file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
