"""What the supported Caffe layers mean: their parameters, output shapes and learned blob shapes.

Shapes are NCHW tuples of ints (batch first). The supported layer types are those of the
colorization deploy net: Input, Convolution, Deconvolution, ReLU, BatchNorm, Scale, Softmax, Silence.
"""
from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from models.caffe.proto import PHASE_TEST, SUPPORTED_LAYER_TYPES, CaffeConversionError, unsupported_type_message
Shape = tuple[int, ...]


@dataclass(frozen=True)
class ConvGeometry:
    """A (de)convolution's hyper-parameters, each spatial pair given as (height, width)."""

    num_output: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    group: int
    bias_term: bool

    @property
    def is_pointwise(self) -> bool:
        """A 1×1 kernel with unit stride, no padding and no groups: a per-pixel matrix product."""
        return self.kernel == (1, 1) and self.stride == (1, 1) and self.pad == (0, 0) and self.group == 1


def _spatial_pair(layer: Message, field: str, values, h_value, w_value, default: int) -> tuple[int, int]:
    has_hw = h_value is not None or w_value is not None
    if has_hw:
        if len(values):
            raise CaffeConversionError(f"layer '{layer.name}': {field} given both as {field}_size/{field} "
                                       f"and as {field}_h/{field}_w")
        if h_value is None or w_value is None:
            raise CaffeConversionError(f"layer '{layer.name}': {field}_h and {field}_w must be given together")
        return int(h_value), int(w_value)
    if len(values) == 0:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise CaffeConversionError(f"layer '{layer.name}': {len(values)} values for {field}; "
                               f"only 2-D (de)convolution is supported")


def conv_geometry(layer: Message) -> ConvGeometry:
    """Read a Convolution/Deconvolution layer's ``convolution_param`` (kernel_size / pad / stride /
    dilation as one value, one per spatial axis, or the ``_h``/``_w`` forms) with Caffe's defaults."""
    p = layer.convolution_param
    if not p.HasField("num_output") or p.num_output == 0:
        raise CaffeConversionError(f"layer '{layer.name}': convolution_param.num_output is missing")
    if p.axis != 1:
        raise CaffeConversionError(f"layer '{layer.name}': convolution over axis {p.axis} is not supported "
                                   f"(only the channel axis 1)")
    kernel = _spatial_pair(layer, "kernel", p.kernel_size,
                           p.kernel_h if p.HasField("kernel_h") else None,
                           p.kernel_w if p.HasField("kernel_w") else None, 0)
    if min(kernel) == 0:
        raise CaffeConversionError(f"layer '{layer.name}': convolution_param.kernel_size is missing")
    pad = _spatial_pair(layer, "pad", p.pad, p.pad_h if p.HasField("pad_h") else None,
                        p.pad_w if p.HasField("pad_w") else None, 0)
    stride = _spatial_pair(layer, "stride", p.stride, p.stride_h if p.HasField("stride_h") else None,
                           p.stride_w if p.HasField("stride_w") else None, 1)
    dilation = _spatial_pair(layer, "dilation", p.dilation, None, None, 1)
    if min(stride) == 0 or min(dilation) == 0 or p.group == 0:
        raise CaffeConversionError(f"layer '{layer.name}': stride, dilation and group must be positive")
    if p.num_output % p.group:
        raise CaffeConversionError(f"layer '{layer.name}': num_output {p.num_output} is not divisible "
                                   f"by group {p.group}")
    return ConvGeometry(int(p.num_output), kernel, stride, pad, dilation, int(p.group), bool(p.bias_term))


def conv_output_shape(layer: Message, geometry: ConvGeometry, bottom: Shape, transposed: bool) -> Shape:
    """NCHW output shape of a convolution (``transposed``: a Caffe Deconvolution) over ``bottom``."""
    if len(bottom) != 4:
        raise CaffeConversionError(f"layer '{layer.name}': expects a 4-D input, got shape {bottom}")
    n, c, h, w = bottom
    if c % geometry.group:
        raise CaffeConversionError(f"layer '{layer.name}': {c} input channels are not divisible by "
                                   f"group {geometry.group}")
    spatial = []
    for size, k, s, p, d in zip((h, w), geometry.kernel, geometry.stride, geometry.pad, geometry.dilation):
        extent = d * (k - 1) + 1
        out = s * (size - 1) + extent - 2 * p if transposed else (size + 2 * p - extent) // s + 1
        if out <= 0:
            raise CaffeConversionError(f"layer '{layer.name}': input {bottom} is too small for the kernel")
        spatial.append(out)
    return (n, geometry.num_output, spatial[0], spatial[1])


def expected_blob_shapes(layer: Message, bottom: Shape) -> list[tuple[str, Shape]]:
    """The learned blobs a layer holds in a caffemodel, as (role, shape), in Caffe's order."""
    channels = bottom[1]
    if layer.type in ("Convolution", "Deconvolution"):
        g = conv_geometry(layer)
        kh, kw = g.kernel
        if layer.type == "Convolution":
            weight = (g.num_output, channels // g.group, kh, kw)
        else:
            weight = (channels, g.num_output // g.group, kh, kw)
        blobs = [("weight", weight)]
        if g.bias_term:
            blobs.append(("bias", (g.num_output,)))
        return blobs
    if layer.type == "BatchNorm":
        return [("mean", (channels,)), ("variance", (channels,)), ("scale factor", (1,))]
    if layer.type == "Scale":
        check_scale_layer(layer, bottom)
        blobs = [("scale", (channels,))]
        if layer.scale_param.bias_term:
            blobs.append(("bias", (channels,)))
        return blobs
    return []


def check_scale_layer(layer: Message, bottom: Shape) -> None:
    """Only the per-channel learned Scale (one bottom, axis 1, num_axes 1) is supported."""
    p = layer.scale_param
    if len(layer.bottom) != 1:
        raise CaffeConversionError(f"layer '{layer.name}': Scale with {len(layer.bottom)} bottoms is not "
                                   f"supported (only a learned per-channel scale)")
    if p.axis not in (1, 1 - len(bottom)) or p.num_axes != 1:
        raise CaffeConversionError(f"layer '{layer.name}': Scale over axis {p.axis} with num_axes "
                                   f"{p.num_axes} is not supported (only per-channel: axis 1, num_axes 1)")


def top_shape(layer: Message, bottom: Shape) -> Shape:
    """NCHW shape of a layer's (single) top given its (single) bottom's shape."""
    if layer.type in ("Convolution", "Deconvolution"):
        return conv_output_shape(layer, conv_geometry(layer), bottom, layer.type == "Deconvolution")
    if layer.type == "Softmax":
        axis = layer.softmax_param.axis
        if axis not in (1, 1 - len(bottom)):
            raise CaffeConversionError(f"layer '{layer.name}': Softmax over axis {axis} is not supported "
                                       f"(only the channel axis 1)")
    return bottom


def included_in_test_phase(layer: Message) -> bool:
    """Caffe's include/exclude rules evaluated for a deploy net: phase TEST, level 0, no stages."""
    def rule_met(rule: Message) -> bool:
        if rule.HasField("phase") and rule.phase != PHASE_TEST:
            return False
        if rule.HasField("min_level") and 0 < rule.min_level:
            return False
        if rule.HasField("max_level") and 0 > rule.max_level:
            return False
        return not rule.stage

    if layer.include:
        return any(rule_met(rule) for rule in layer.include)
    return not any(rule_met(rule) for rule in layer.exclude)


@dataclass(frozen=True)
class NetworkInput:
    """The single input blob of a deploy net and its NCHW shape as the prototxt declares it."""

    name: str
    shape: Shape


def deploy_layers(net: Message, source: str) -> tuple[NetworkInput, list[Message]]:
    """The net's input and its computing layers (TEST phase, Input layers removed), in order.

    Raises CaffeConversionError for a net without exactly one 4-D input or with an unsupported layer."""
    inputs: list[NetworkInput] = []
    for index, name in enumerate(net.input):
        if index < len(net.input_shape):
            shape = tuple(int(d) for d in net.input_shape[index].dim)
        elif len(net.input_dim) >= 4 * (index + 1):
            shape = tuple(int(d) for d in net.input_dim[4 * index: 4 * index + 4])
        else:
            raise CaffeConversionError(f"{source}: input '{name}' has no shape (input_shape or input_dim)")
        inputs.append(NetworkInput(name, shape))
    layers: list[Message] = []
    seen_names: set[str] = set()
    for layer in net.layer:
        if not included_in_test_phase(layer):
            continue
        if layer.name in seen_names:
            raise CaffeConversionError(f"{source}: two layers are named '{layer.name}'")
        seen_names.add(layer.name)
        if layer.type not in SUPPORTED_LAYER_TYPES:
            raise CaffeConversionError(unsupported_type_message(source, layer))
        if layer.type == "Input":
            shapes = layer.input_param.shape
            for index, top in enumerate(layer.top):
                if not shapes:
                    raise CaffeConversionError(f"{source}: Input layer '{layer.name}' declares no shape")
                dims = shapes[index if len(shapes) > 1 else 0].dim
                inputs.append(NetworkInput(top, tuple(int(d) for d in dims)))
            continue
        if layer.type == "Silence":
            if not layer.bottom or layer.top:
                raise CaffeConversionError(f"{source}: Silence layer '{layer.name}' must have bottoms and no tops")
        elif len(layer.bottom) != 1 or len(layer.top) != 1:
            raise CaffeConversionError(f"{source}: layer '{layer.name}' ({layer.type}) has {len(layer.bottom)} "
                                       f"bottoms and {len(layer.top)} tops; expected 1 and 1")
        layers.append(layer)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise CaffeConversionError(f"{source}: expected exactly one network input, found {len(inputs)} ({names})")
    net_input = inputs[0]
    if len(net_input.shape) != 4 or net_input.shape[1] != 1 or min(net_input.shape) <= 0:
        raise CaffeConversionError(f"{source}: input '{net_input.name}' has shape {net_input.shape}; "
                                   f"expected N×1×H×W (the L channel)")
    return net_input, layers
