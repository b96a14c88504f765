"""Pipeline configuration: typed dataclasses, loaded from YAML and validated at load time.

Errors name the file, the line, the key and what was expected, e.g.::

    configs/my.yaml:12: inference.batch_size: expected an integer >= 1, found 'eight'

Inside the program the dataclasses are trusted: nothing re-validates them.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "configs" / "default.yaml"


class ConfigError(Exception):
    """Invalid configuration; the message is one line naming file, line and key."""


def _min(value: float) -> dict:
    return {"min": value}


@dataclass
class DecoderConfig:
    """Reads the input and sends RGB frames."""

    threads: int = field(default=0, metadata=_min(0))
    cpu_affinity: list[int] = field(default_factory=list)


@dataclass
class PreprocessorConfig:
    """Resizes frames to the model's input and converts them to L − 50."""

    replicas: int = field(default=1, metadata=_min(1))
    queue_depth: int = field(default=8, metadata=_min(1))
    cpu_affinity: list[int] = field(default_factory=list)


@dataclass
class InferenceConfig:
    """Runs the ONNX model with onnxruntime; batches up to ``batch_size`` frames."""

    replicas: int = field(default=1, metadata=_min(1))
    queue_depth: int = field(default=8, metadata=_min(1))
    batch_size: int = field(default=1, metadata=_min(1))
    batch_timeout_ms: float = field(default=20.0, metadata=_min(0))
    provider: Literal["cpu", "cuda", "npu", "openvino"] = "cpu"
    device_id: int = field(default=0, metadata=_min(0))
    intra_op_threads: int = field(default=0, metadata=_min(0))
    inter_op_threads: int = field(default=1, metadata=_min(0))
    cpu_affinity: list[int] = field(default_factory=list)


@dataclass
class EncoderConfig:
    """Merges predicted ab with each frame's own L and encodes H.264 (libx264, yuv420p)."""

    queue_depth: int = field(default=8, metadata=_min(1))
    crf: int = field(default=18, metadata={"min": 0, "max": 51})
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                    "slower", "veryslow"] = "veryfast"
    threads: int = field(default=0, metadata=_min(0))
    audio: Literal["auto", "copy", "aac", "none"] = "auto"
    audio_bitrate_kbps: int = field(default=160, metadata=_min(8))
    cpu_affinity: list[int] = field(default_factory=list)


@dataclass
class PipelineConfig:
    """The whole pipeline. ``transport``: 'ipc' (files, one host) or 'tcp' (loopback ports)."""

    transport: Literal["ipc", "tcp"] = "ipc"
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    preprocessor: PreprocessorConfig = field(default_factory=PreprocessorConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)


def load_config(path: Path | None) -> PipelineConfig:
    """Read and validate a YAML file; ``None`` gives the defaults. Raises ConfigError."""
    if path is None:
        return PipelineConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if root is None:
        return PipelineConfig()
    return _build(PipelineConfig, root, "", path)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _build(cls, node: yaml.Node, prefix: str, path: Path):
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:{_line(node)}: {prefix.rstrip('.') or 'top level'}: expected a mapping of keys")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key_node, value_node in node.value:
        key = key_node.value
        dotted = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(fields)
            raise ConfigError(f"{path}:{_line(key_node)}: {dotted}: unknown key (expected one of: {known})")
        values[key] = _convert(hints[key], fields[key].metadata, value_node, dotted, path)
    return cls(**values)


def _convert(hint, metadata, node: yaml.Node, dotted: str, path: Path):
    where = f"{path}:{_line(node)}: {dotted}"
    if dataclasses.is_dataclass(hint):
        return _build(hint, node, dotted + ".", path)
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        value = node.value if isinstance(node, yaml.ScalarNode) else None
        if value not in choices:
            raise ConfigError(f"{where}: expected one of {', '.join(choices)}, found {_shown(node)}")
        return value
    if typing.get_origin(hint) is list:
        if not isinstance(node, yaml.SequenceNode):
            raise ConfigError(f"{where}: expected a list of integers, found {_shown(node)}")
        return [_scalar(int, {"min": 0}, item, f"{path}:{_line(item)}: {dotted}") for item in node.value]
    return _scalar(hint, metadata, node, where)


def _scalar(kind, metadata, node: yaml.Node, where: str):
    value = yaml.safe_load(yaml.serialize(node)) if isinstance(node, yaml.ScalarNode) else None
    noun = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind]
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    low, high = metadata.get("min"), metadata.get("max")
    if ok and ((low is not None and value < low) or (high is not None and value > high)):
        ok = False
    if not ok:
        bounds = ""
        if low is not None and high is not None:
            bounds = f" in {low}..{high}"
        elif low is not None:
            bounds = f" >= {low}"
        raise ConfigError(f"{where}: expected {noun}{bounds}, found {_shown(node)}")
    return value


def _shown(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
