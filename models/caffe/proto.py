"""The subset of Caffe's ``caffe.proto`` needed to read the colorization model, built at import time.

No protoc and no Caffe are needed: the message types are declared here as a ``FileDescriptorProto``
whose field names, numbers, types and defaults are those of BVLC Caffe's ``src/caffe/proto/caffe.proto``,
so real ``.prototxt`` files parse with :func:`parse_prototxt` and real binary ``.caffemodel`` files
with :func:`parse_caffemodel`. Fields outside the subset are a parse error in a prototxt (the message
names the field) and are skipped in a binary model. The legacy V1 ``layers`` format is not supported.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import DecodeError, Message

FieldProto = descriptor_pb2.FieldDescriptorProto

_SCALAR_TYPES = {
    "string": FieldProto.TYPE_STRING,
    "bytes": FieldProto.TYPE_BYTES,
    "bool": FieldProto.TYPE_BOOL,
    "float": FieldProto.TYPE_FLOAT,
    "double": FieldProto.TYPE_DOUBLE,
    "int32": FieldProto.TYPE_INT32,
    "int64": FieldProto.TYPE_INT64,
    "uint32": FieldProto.TYPE_UINT32,
}

# message name -> [(label, type, field name, number, default or None, packed)]
# label: "optional" | "repeated"; type: a scalar name above, a message name, or "enum:<Name>".
_ENUMS: dict[str, list[tuple[str, int]]] = {
    "Phase": [("TRAIN", 0), ("TEST", 1)],
    "VarianceNorm": [("FAN_IN", 0), ("FAN_OUT", 1), ("AVERAGE", 2)],
    "DimCheckMode": [("STRICT", 0), ("PERMISSIVE", 1)],
    "Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)],
}
# Nested enums are declared at file level with the same value names; text and wire formats only
# see value names and numbers, so this is indistinguishable to a parser.

_MESSAGES: dict[str, list[tuple[str, str, str, int, str | None, bool]]] = {
    "BlobShape": [
        ("repeated", "int64", "dim", 1, None, True),
    ],
    "BlobProto": [
        ("optional", "BlobShape", "shape", 7, None, False),
        ("repeated", "float", "data", 5, None, True),
        ("repeated", "float", "diff", 6, None, True),
        ("repeated", "double", "double_data", 8, None, True),
        ("repeated", "double", "double_diff", 9, None, True),
        ("optional", "int32", "num", 1, "0", False),
        ("optional", "int32", "channels", 2, "0", False),
        ("optional", "int32", "height", 3, "0", False),
        ("optional", "int32", "width", 4, "0", False),
    ],
    "FillerParameter": [
        ("optional", "string", "type", 1, "constant", False),
        ("optional", "float", "value", 2, "0", False),
        ("optional", "float", "min", 3, "0", False),
        ("optional", "float", "max", 4, "1", False),
        ("optional", "float", "mean", 5, "0", False),
        ("optional", "float", "std", 6, "1", False),
        ("optional", "int32", "sparse", 7, "-1", False),
        ("optional", "enum:VarianceNorm", "variance_norm", 8, "FAN_IN", False),
    ],
    "NetState": [
        ("optional", "enum:Phase", "phase", 1, "TEST", False),
        ("optional", "int32", "level", 2, "0", False),
        ("repeated", "string", "stage", 3, None, False),
    ],
    "NetStateRule": [
        ("optional", "enum:Phase", "phase", 1, None, False),
        ("optional", "int32", "min_level", 2, None, False),
        ("optional", "int32", "max_level", 3, None, False),
        ("repeated", "string", "stage", 4, None, False),
        ("repeated", "string", "not_stage", 5, None, False),
    ],
    "ParamSpec": [
        ("optional", "string", "name", 1, None, False),
        ("optional", "enum:DimCheckMode", "share_mode", 2, None, False),
        ("optional", "float", "lr_mult", 3, "1", False),
        ("optional", "float", "decay_mult", 4, "1", False),
    ],
    "InputParameter": [
        ("repeated", "BlobShape", "shape", 1, None, False),
    ],
    "ConvolutionParameter": [
        ("optional", "uint32", "num_output", 1, None, False),
        ("optional", "bool", "bias_term", 2, "true", False),
        ("repeated", "uint32", "pad", 3, None, False),
        ("repeated", "uint32", "kernel_size", 4, None, False),
        ("repeated", "uint32", "stride", 6, None, False),
        ("repeated", "uint32", "dilation", 18, None, False),
        ("optional", "uint32", "pad_h", 9, "0", False),
        ("optional", "uint32", "pad_w", 10, "0", False),
        ("optional", "uint32", "kernel_h", 11, None, False),
        ("optional", "uint32", "kernel_w", 12, None, False),
        ("optional", "uint32", "stride_h", 13, None, False),
        ("optional", "uint32", "stride_w", 14, None, False),
        ("optional", "uint32", "group", 5, "1", False),
        ("optional", "FillerParameter", "weight_filler", 7, None, False),
        ("optional", "FillerParameter", "bias_filler", 8, None, False),
        ("optional", "enum:Engine", "engine", 15, "DEFAULT", False),
        ("optional", "int32", "axis", 16, "1", False),
        ("optional", "bool", "force_nd_im2col", 17, "false", False),
    ],
    "BatchNormParameter": [
        ("optional", "bool", "use_global_stats", 1, None, False),
        ("optional", "float", "moving_average_fraction", 2, "0.999", False),
        ("optional", "float", "eps", 3, "1e-05", False),
    ],
    "ScaleParameter": [
        ("optional", "int32", "axis", 1, "1", False),
        ("optional", "int32", "num_axes", 2, "1", False),
        ("optional", "FillerParameter", "filler", 3, None, False),
        ("optional", "bool", "bias_term", 4, "false", False),
        ("optional", "FillerParameter", "bias_filler", 5, None, False),
    ],
    "SoftmaxParameter": [
        ("optional", "enum:Engine", "engine", 1, "DEFAULT", False),
        ("optional", "int32", "axis", 2, "1", False),
    ],
    "ReLUParameter": [
        ("optional", "float", "negative_slope", 1, "0", False),
        ("optional", "enum:Engine", "engine", 2, "DEFAULT", False),
    ],
    "LayerParameter": [
        ("optional", "string", "name", 1, None, False),
        ("optional", "string", "type", 2, None, False),
        ("repeated", "string", "bottom", 3, None, False),
        ("repeated", "string", "top", 4, None, False),
        ("optional", "enum:Phase", "phase", 10, None, False),
        ("repeated", "float", "loss_weight", 5, None, False),
        ("repeated", "ParamSpec", "param", 6, None, False),
        ("repeated", "BlobProto", "blobs", 7, None, False),
        ("repeated", "bool", "propagate_down", 11, None, False),
        ("repeated", "NetStateRule", "include", 8, None, False),
        ("repeated", "NetStateRule", "exclude", 9, None, False),
        ("optional", "BatchNormParameter", "batch_norm_param", 139, None, False),
        ("optional", "ConvolutionParameter", "convolution_param", 106, None, False),
        ("optional", "InputParameter", "input_param", 143, None, False),
        ("optional", "ReLUParameter", "relu_param", 123, None, False),
        ("optional", "ScaleParameter", "scale_param", 142, None, False),
        ("optional", "SoftmaxParameter", "softmax_param", 125, None, False),
    ],
    "NetParameter": [
        ("optional", "string", "name", 1, None, False),
        ("repeated", "string", "input", 3, None, False),
        ("repeated", "BlobShape", "input_shape", 8, None, False),
        ("repeated", "int32", "input_dim", 4, None, False),
        ("optional", "bool", "force_backward", 5, "false", False),
        ("optional", "NetState", "state", 6, None, False),
        ("optional", "bool", "debug_info", 7, "false", False),
        ("repeated", "LayerParameter", "layer", 100, None, False),
    ],
}

LEGACY_V1_LAYERS_FIELD = 2
"""Field number of NetParameter's deprecated ``layers`` (V1LayerParameter), which is not declared."""


SUPPORTED_LAYER_TYPES = ("Input", "Convolution", "Deconvolution", "ReLU", "BatchNorm", "Scale", "Softmax",
                         "Silence")
"""The layer types of the colorization deploy net, whose parameters this subset declares."""


class CaffeConversionError(Exception):
    """A Caffe input that cannot be converted; the message is one line naming file, layer and shapes."""


def _build_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file_proto = descriptor_pb2.FileDescriptorProto(name="colorize_caffe_subset.proto", package="caffe",
                                                    syntax="proto2")
    for enum_name, values in _ENUMS.items():
        enum = file_proto.enum_type.add(name=enum_name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
    for message_name, fields in _MESSAGES.items():
        message = file_proto.message_type.add(name=message_name)
        for label, type_name, field_name, number, default, packed in fields:
            field = message.field.add(name=field_name, number=number)
            field.label = FieldProto.LABEL_REPEATED if label == "repeated" else FieldProto.LABEL_OPTIONAL
            if type_name in _SCALAR_TYPES:
                field.type = _SCALAR_TYPES[type_name]
            elif type_name.startswith("enum:"):
                field.type = FieldProto.TYPE_ENUM
                field.type_name = f".caffe.{type_name[5:]}"
            else:
                field.type = FieldProto.TYPE_MESSAGE
                field.type_name = f".caffe.{type_name}"
            if default is not None:
                field.default_value = default
            if packed:
                field.options.packed = True
    return file_proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_build_file_descriptor())


def _message_class(name: str) -> type[Message]:
    descriptor = _POOL.FindMessageTypeByName(f"caffe.{name}")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(_POOL).GetPrototype(descriptor)


NetParameter = _message_class("NetParameter")
LayerParameter = _message_class("LayerParameter")
BlobProto = _message_class("BlobProto")
BlobShape = _message_class("BlobShape")
PHASE_TEST = 1


def unsupported_type_message(source: Path | str, layer: Message) -> str:
    return (f"{source}: layer '{layer.name}' has unsupported type '{layer.type}' "
            f"(supported: {', '.join(SUPPORTED_LAYER_TYPES)})")


def parse_prototxt(path: Path) -> Message:
    """Read a text-format NetParameter (a deploy ``.prototxt``); raises CaffeConversionError."""
    path = Path(path)
    raw = _read_bytes(path, "prototxt")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CaffeConversionError(f"{path} is not a Caffe prototxt (not UTF-8 text)") from None
    if "\x00" in text:
        raise CaffeConversionError(f"{path} is not a Caffe prototxt (not UTF-8 text)")
    net = NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        detail = " ".join(str(exc).split())
        if 'no field named "layers"' in detail:
            raise CaffeConversionError(f"{path} uses the legacy V1 'layers' format; upgrade it with Caffe's "
                                       f"upgrade_net_proto_text first") from None
        layer_field = re.search(r'Message type "caffe\.LayerParameter" has no field named "(\w+)"', detail)
        if layer_field:
            lenient = NetParameter()
            try:
                text_format.Parse(text, lenient, allow_unknown_field=True)
            except text_format.ParseError:
                pass
            unsupported = next((layer for layer in lenient.layer if layer.type not in SUPPORTED_LAYER_TYPES), None)
            if unsupported is not None:
                raise CaffeConversionError(unsupported_type_message(path, unsupported)) from None
            raise CaffeConversionError(f"{path}:{exc.GetLine()}: layer field '{layer_field.group(1)}' is not "
                                       f"supported") from None
        raise CaffeConversionError(f"{path} is not a valid Caffe prototxt: {detail}") from None
    if not net.layer:
        raise CaffeConversionError(f"{path} is not a Caffe prototxt: it declares no layers")
    return net


def parse_caffemodel(path: Path) -> Message:
    """Read a binary NetParameter with weights (a ``.caffemodel``); raises CaffeConversionError."""
    path = Path(path)
    raw = _read_bytes(path, "caffemodel")
    not_a_model = f"{path} is not a Caffe weights file (binary NetParameter with layers expected)"
    net = NetParameter()
    try:
        net.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError):
        raise CaffeConversionError(not_a_model) from None
    if not net.layer:
        if _has_unknown_field(net, LEGACY_V1_LAYERS_FIELD):
            raise CaffeConversionError(f"{path} uses the legacy V1 'layers' format, which is not supported")
        raise CaffeConversionError(not_a_model)
    if any(not layer.name for layer in net.layer):
        raise CaffeConversionError(not_a_model)
    return net


def _read_bytes(path: Path, kind: str) -> bytes:
    if not path.exists():
        raise CaffeConversionError(f"{kind} file not found: {path}")
    if not path.is_file():
        raise CaffeConversionError(f"{kind} path is not a file: {path}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CaffeConversionError(f"cannot read {kind} file {path}: {exc.strerror or exc}") from None


def _has_unknown_field(message: Message, number: int) -> bool:
    try:
        from google.protobuf import unknown_fields
    except ImportError:
        return False
    return any(field.field_number == number for field in unknown_fields.UnknownFieldSet(message))


def blob_shape(blob: Message) -> tuple[int, ...]:
    """The shape a BlobProto declares: ``shape.dim`` or, for old files, the legacy (num, channels, height, width)."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)


def blob_to_array(blob: Message) -> np.ndarray:
    """A BlobProto's values as a float32 array of its declared shape (``data`` or ``double_data``)."""
    shape = blob_shape(blob)
    if len(blob.data):
        values = np.array(blob.data, dtype=np.float32)
    else:
        values = np.array(blob.double_data, dtype=np.float64).astype(np.float32)
    if values.size != int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"blob holds {values.size} values but declares shape {shape}")
    return values.reshape(shape)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def array_to_blob(array: np.ndarray) -> Message:
    """A BlobProto with ``shape`` and packed float32 ``data`` holding ``array`` (fast for large arrays)."""
    values = np.ascontiguousarray(array, dtype="<f4")
    blob = BlobProto()
    blob.shape.dim.extend(int(d) for d in values.shape)
    payload = values.tobytes()
    data_tag = (5 << 3) | 2
    blob.MergeFromString(_varint(data_tag) + _varint(len(payload)) + payload)
    return blob
