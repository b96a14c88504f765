"""Pipeline configuration: typed dataclasses, loaded from YAML and validated at load time.

Errors name the file, the line, the key and what was expected, every problem of a file at once,
one a line, e.g.::

    configs/my.yaml:12: inference.batch_size: expected an integer in 1..1024, found 'eight'
    configs/my.yaml:14: inference.batch_size: duplicate key (first on line 12)

Every number is bounded (threads and replicas to a few per core this process may use, queue depths,
batch sizes, timeouts), NaN and infinities are refused, ``cpu_affinity`` must name CPUs this process
may run on, and long values are cut short in messages.

Inside the program the dataclasses are trusted: nothing re-validates them.
"""
from __future__ import annotations

import dataclasses
import math
import os
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml


PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "configs" / "default.yaml"


class ConfigError(Exception):
    """Invalid configuration; the message is one line naming file, line and key."""


def _allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


ALLOWED_CPUS = _allowed_cpus()
MAX_THREADS = max(8, 4 * len(ALLOWED_CPUS))
"""Threads or processes per stage: a few per core this process may use. More only slows a run
(2,000 onnxruntime threads on 2 cores never got to the first frame)."""


def _cpu(value: int) -> str | None:
    if value in ALLOWED_CPUS:
        return None
    return f"expected a CPU this process may run on ({_ranges(ALLOWED_CPUS)})"


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] → '0-2, 5'."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


AUTO = "auto"
Auto = Literal["auto"]
"""A value the run chooses for the machine and the input (:func:`stream.observe.tune.fit_to_machine`)."""

THREADS = {"min": 0, "max": MAX_THREADS}
REPLICAS = {"min": 0, "max": MAX_THREADS}
QUEUE_DEPTH = {"min": 1, "max": 10_000}
AFFINITY = {"item": {"min": 0, "check": _cpu}}


def _zmq_endpoint(value: str, wildcard_host: bool) -> str | None:
    """None if ``value`` is '' or a usable ``tcp://HOST:PORT`` / ``ipc://PATH``; else what is wrong."""
    if value == "" or (value.startswith("ipc://") and len(value) > len("ipc://")):
        return None
    host, _, port = value.removeprefix("tcp://").rpartition(":")
    if not value.startswith("tcp://") or not host or not port.isdigit() or int(port) > 65535:
        return "expected tcp://HOST:PORT (port 0..65535) or ipc://PATH"
    if not wildcard_host and (host in ("*", "0.0.0.0", "[::]") or int(port) == 0):
        return "expected an address other hosts can connect to (a host name or IP and a fixed port)"
    return None


def bind_address_problem(value: str) -> str | None:
    """None if ``value`` may be bound here (a free ipc path or a socket, or a valid tcp address); else why not."""
    problem = _zmq_endpoint(value, wildcard_host=True)
    if problem is None and value.startswith("ipc://"):
        path = value[len("ipc://"):]
        try:
            mode = os.stat(path).st_mode
        except OSError:
            return None
        if not stat.S_ISSOCK(mode):
            return "expected a path that is free or a socket (something else is there, and binding would delete it)"
    return problem


def _connect_address(value: str) -> str | None:
    return _zmq_endpoint(value, wildcard_host=False)


@dataclass(frozen=True)
class ColourSettings:
    """How predicted colour is put on a frame (YAML section ``colour:``, flag ``--saturation``)."""

    saturation: float = field(default=1.0, metadata={"min": 0.0, "max": 2.0})
    """Colour strength: ab is multiplied by it (0 = the frame's own grey, 1 = the model's colour)."""
    upsampling: Literal["bilinear", "guided"] = "bilinear"
    """How the model's 56×56 ab reaches the frame's size: 'guided' by the frame's lightness
    (:func:`guided_ab`: colour edges follow the picture's edges) or plain 'bilinear'."""


@dataclass
class TemporalConfig:
    """Temporal smoothing of the predicted ab, done by the encoder (frames in presentation order)."""

    enabled: bool = True
    """False: each frame keeps its own prediction (``update`` returns it unchanged)."""
    strength: float = field(default=0.93, metadata={"min": 0.0, "max": 0.99})
    """Weight of the motion-compensated history where it is fully trusted (0 = off; 0.93 ≈ 14-frame memory)."""
    error_tolerance: float = field(default=10.0, metadata={"min": 0.1, "max": 100.0})
    """Lightness warp error (Lab L units) at which trust in the history falls to 1/e."""
    scene_cut_threshold: float = field(default=5.0, metadata={"min": 0.0, "max": 100.0})
    """Cut score (L units: motion-compensated L error + histogram distance / 3) that starts a new scene."""
    flow_size: int = field(default=160, metadata={"min": 16, "max": 1024})
    """Longer side (px) of the low-resolution lightness the optical flow is computed on."""
    flow_quality: Literal["fast", "balanced", "accurate"] = "balanced"
    """DIS optical flow settings, speed against accuracy (see FLOW_SETTINGS)."""


@dataclass
class RestartPolicy:
    """What the supervisor does when a replica of this stage dies (killed, crashed; not an error it reports).

    ``max_restarts`` 0: the run fails at once. N: dead replicas are started again, N times in all,
    and the frames they held are sent again, so the output is the same as an undisturbed run's.
    """

    max_restarts: int = field(default=0, metadata={"min": 0, "max": 10_000})


@dataclass
class WorkerPool:
    """Workers of a stage fed through a broker that leases frames and sends again what a lost worker held.

    ``listen``: an extra address the broker binds so ``colorize worker`` processes from other
    processes or hosts can join (``tcp://0.0.0.0:5560``; port 0 = any free port, printed at start).
    ``advertise``: the address those workers connect to, shown in the join hint (default: derived
    from ``listen``). A worker silent for ``heartbeat_timeout_s``, or holding a frame longer than
    ``lease_timeout_s`` (alive but not returning work), is lost. ``window``: how far (in
    frames) work may run ahead of the oldest unfinished frame, which bounds the reorder buffer.
    """

    listen: str = field(default="", metadata={"check": bind_address_problem})
    advertise: str = field(default="", metadata={"check": _connect_address})
    heartbeat_interval_s: float = field(default=1.0, metadata={"min": 0.05, "max": 60})
    heartbeat_timeout_s: float = field(default=5.0, metadata={"min": 0.2, "max": 600})
    lease_timeout_s: float = field(default=30.0, metadata={"min": 0.5, "max": 3600})
    window: int = field(default=64, metadata={"min": 4, "max": 100_000})

    def check(self) -> tuple[str, str] | None:
        if self.heartbeat_timeout_s < 2 * self.heartbeat_interval_s:
            return "heartbeat_timeout_s", "expected at least twice heartbeat_interval_s"
        if self.advertise and not self.listen:
            return "advertise", "needs listen (the address workers connect to must be bound here)"
        return None


class LeasableStage:
    """Behaviour shared by the stages that may run behind a broker (fields ``replicas``, ``restart``, ``workers``)."""

    @property
    def leased(self) -> bool:
        """True when frames reach this stage through a broker (restarts or joining workers need it)."""
        return self.restart.max_restarts > 0 or bool(self.workers.listen)

    def check(self) -> tuple[str, str] | None:
        if self.replicas == 0 and not self.workers.listen:
            return "replicas", "0 needs workers.listen (with no local replica, only joining workers can do the work)"
        return None


@dataclass
class DecoderConfig:
    """Reads the input and sends its frames (the luma plane of 8-bit 4:2:0 video, else RGB);
    ``deinterlace``: auto | on | off (see :mod:`stages.deinterlace`)."""

    threads: int = field(default=0, metadata=THREADS)
    deinterlace: Literal["auto", "on", "off"] = "auto"
    cpu_affinity: list[int] = field(default_factory=list, metadata=AFFINITY)


@dataclass
class PreprocessorConfig(LeasableStage):
    """Resizes frames to the model's input and converts them to L − 50."""

    replicas: int | Auto = field(default=AUTO, metadata=REPLICAS)
    queue_depth: int = field(default=8, metadata=QUEUE_DEPTH)
    cpu_affinity: list[int] = field(default_factory=list, metadata=AFFINITY)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    workers: WorkerPool = field(default_factory=WorkerPool)


@dataclass
class InferenceConfig(LeasableStage):
    """Runs the ONNX model with onnxruntime; batches up to ``batch_size`` frames.

    ``every_nth_frame`` k > 1 (video files): the model runs on every k-th frame and on every frame
    that may start a new shot; the frames between take the colour of the last ones carried along
    the optical flow (:meth:`stages.temporal.TemporalSmoother.carry`). The default, 4, was chosen on
    the shared colour clips by bench/bench_sparse.py (PSNR, AuC and flicker no worse than k = 1);
    1 runs the model on every frame. Live runs always run it on every frame.
    """

    replicas: int | Auto = field(default=AUTO, metadata=REPLICAS)
    queue_depth: int = field(default=8, metadata=QUEUE_DEPTH)
    batch_size: int | Auto = field(default=AUTO, metadata={"min": 1, "max": 1024})
    batch_timeout_ms: float = field(default=20.0, metadata={"min": 0, "max": 60_000})
    every_nth_frame: int = field(default=4, metadata={"min": 1, "max": 16})
    provider: Literal["cpu", "cuda", "npu", "openvino"] = "cpu"
    precision: Literal["auto", "fp32", "int8"] = "auto"
    device_id: int = field(default=0, metadata={"min": 0, "max": 1023})
    intra_op_threads: int | Auto = field(default=AUTO, metadata=THREADS)
    inter_op_threads: int = field(default=1, metadata=THREADS)
    cpu_affinity: list[int] = field(default_factory=list, metadata=AFFINITY)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    workers: WorkerPool = field(default_factory=WorkerPool)


@dataclass
class EncoderConfig:
    """Merges predicted ab with each frame's own L and encodes H.264 (libx264, yuv420p)."""

    queue_depth: int = field(default=8, metadata=QUEUE_DEPTH)
    crf: int = field(default=18, metadata={"min": 0, "max": 51})
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                    "slower", "veryslow"] = "veryfast"
    threads: int = field(default=0, metadata=THREADS)
    audio: Literal["auto", "copy", "aac", "none"] = "auto"
    audio_bitrate_kbps: int = field(default=160, metadata={"min": 8, "max": 1024})
    cpu_affinity: list[int] = field(default_factory=list, metadata=AFFINITY)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)


@dataclass
class LiveSourceConfig:
    """How a network input (rtsp://, rtmp://, http(s)://, udp://, srt://) is opened and read.

    ``analyzeduration_ms`` / ``probesize_bytes``: how much FFmpeg reads before the first frame
    (small = a fast first frame). ``open_timeout_s`` / ``read_timeout_s``: a connection that cannot
    be opened, or stays silent, this long counts as broken. ``on_end``: what an end of the stream
    means ('reconnect': the source broke, keep trying; 'stop': the run ends with the stream).
    """

    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    analyzeduration_ms: int = field(default=100, metadata={"min": 0, "max": 60_000})
    probesize_bytes: int = field(default=500_000, metadata={"min": 32, "max": 1_000_000_000})
    open_timeout_s: float = field(default=5.0, metadata={"min": 0.1, "max": 600})
    read_timeout_s: float = field(default=3.0, metadata={"min": 0.1, "max": 600})
    on_end: Literal["reconnect", "stop"] = "reconnect"


@dataclass
class ReconnectPolicy:
    """Reconnecting a live source: waits grow from ``backoff_initial_s`` doubling to ``backoff_max_s``;
    once the source has been gone ``limit_s`` seconds the run ends with what it has (0: never retry)."""

    limit_s: float = field(default=30.0, metadata={"min": 0, "max": 86_400})
    backoff_initial_s: float = field(default=0.5, metadata={"min": 0.01, "max": 600})
    backoff_max_s: float = field(default=5.0, metadata={"min": 0.01, "max": 600})

    def check(self) -> tuple[str, str] | None:
        if self.backoff_max_s < self.backoff_initial_s:
            return "backoff_max_s", "expected at least backoff_initial_s"
        return None


@dataclass
class LiveOutputConfig:
    """Outputs of a live run: files written as fragments (playable if the process is killed),
    optionally cut into ``segment_s``-second files, or published to a stream server."""

    keyframe_interval_s: float = field(default=2.0, metadata={"min": 0.04, "max": 60})
    segment_s: float = field(default=0.0, metadata={"min": 0, "max": 86_400})
    publish_rtsp_transport: Literal["tcp", "udp"] = "tcp"
    zero_latency: bool = True


@dataclass
class PreviewConfig:
    """The ``--preview`` web page: JPEG frames at most ``fps`` per second, ``width`` pixels wide."""

    fps: float = field(default=10.0, metadata={"min": 0.1, "max": 60})
    width: int = field(default=640, metadata={"min": 16, "max": 4096})
    jpeg_quality: int = field(default=80, metadata={"min": 1, "max": 100})


@dataclass
class LiveConfig:
    """Live mode (network inputs, stream outputs): frames are taken at the source's pace.

    At most ``max_in_flight`` frames are between the decoder and the encoder's output; a frame that
    arrives while the pipeline is full is handled by ``drop``: 'oldest' (the waiting frame is
    replaced by the newer one), 'newest' (the new frame is discarded) or 'none' (nothing is dropped:
    up to 250 decoded frames wait, then the source is read more slowly and latency grows with the backlog). ``timing_log``: a file that
    gets one line per frame written, ``seq pts_ticks arrived_at written_at`` (pts in 1/90000 s, times
    in wall-clock seconds), for measuring latency; '' = none.
    """

    drop: Literal["oldest", "newest", "none"] = "oldest"
    max_in_flight: int = field(default=2, metadata={"min": 1, "max": 256})
    timing_log: str = ""
    source: LiveSourceConfig = field(default_factory=LiveSourceConfig)
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    output: LiveOutputConfig = field(default_factory=LiveOutputConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)


@dataclass
class GuidanceConfig:
    """Colour by example (YAML section ``guidance:``; flags ``--keyframe``, ``--reference`` and
    ``--reference-strength``; see :mod:`stages.guidance`)."""

    keyframes: list[str] = field(default_factory=list)
    """'POSITION=IMAGE' each: a frame number (0 = the first) or a time ([HH:]MM:SS[.ms], or seconds
    written with a decimal point), and a colour version of that frame."""
    references: list[str] = field(default_factory=list)
    """Colour photographs whose palette guides the whole run."""
    reference_strength: float = field(default=1.0, metadata={"min": 0.0, "max": 4.0})
    """How far the colours lean toward the references' palette: 0 = not at all, 1 = fully."""
    reach_s: float = field(default=10.0, metadata={"min": 0.0, "max": 600.0})
    """How far (seconds) a keyframe's colour is carried along the flow each way, at most (it stops
    at a cut, and fades where the flow loses track)."""


@dataclass
class PipelineConfig:
    """The whole pipeline. ``transport``: 'ipc' (files, one host) or 'tcp' (loopback ports).

    ``queue_memory_mb``: the most memory the frames queued on one link may take; a stage's
    ``queue_depth`` is lowered for frames so large that it would not fit (see :mod:`stream.memory`).
    """

    transport: Literal["ipc", "tcp"] = "ipc"
    queue_memory_mb: int = field(default=256, metadata={"min": 1, "max": 1_048_576})
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    preprocessor: PreprocessorConfig = field(default_factory=PreprocessorConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    colour: ColourSettings = field(default_factory=ColourSettings)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    live: LiveConfig = field(default_factory=LiveConfig)


AUTO_FIELDS = (("preprocessor", "replicas"), ("inference", "replicas"), ("inference", "batch_size"),
               ("inference", "intra_op_threads"))


def auto_fields(config: PipelineConfig) -> list[str]:
    """The dotted keys of ``config`` still set to ``auto``."""
    return [f"{section}.{key}" for section, key in AUTO_FIELDS if getattr(getattr(config, section), key) == AUTO]


def with_choices(config: PipelineConfig, choices: dict[str, int]) -> PipelineConfig:
    """``config`` with each ``auto`` key in ``choices`` (dotted) replaced by its chosen value; keys
    the user set keep the user's value."""
    sections = {}
    for dotted in auto_fields(config):
        section, key = dotted.split(".")
        sections.setdefault(section, {})[key] = choices[dotted]
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **values)
                                          for section, values in sections.items()})


PLAIN_CHOICES = {"preprocessor.replicas": 1, "inference.replicas": 1, "inference.batch_size": 1,
                 "inference.intra_op_threads": 0}
"""What ``auto`` means where nothing was measured: one replica each, onnxruntime's own threads, no
batching (the lowest latency; what live runs use)."""


def load_config(path: Path | None) -> PipelineConfig:
    """Read and validate a YAML file; ``None`` gives the defaults.

    Raises ConfigError naming every problem found, one per line, each as
    ``FILE:LINE: section.key: expected …, found …``.
    """
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
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply") from None
    if root is None:
        return PipelineConfig()
    problems: list[str] = []
    config = _build(PipelineConfig, root, "", path, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def with_override(config: PipelineConfig, dotted: str, text: str, label: str) -> PipelineConfig:
    """``config`` with the key ``dotted`` (e.g. 'encoder.crf') set from a command-line value, which is
    read as a YAML scalar and checked exactly like the file's; ConfigError names ``label`` (the flag)."""
    try:
        node = yaml.compose(text)
    except (yaml.YAMLError, RecursionError):
        node = None
    if not isinstance(node, yaml.ScalarNode):
        node = yaml.ScalarNode("tag:yaml.org,2002:str", text)
    *parents, key = dotted.split(".")
    owners = [config]
    for name in parents:
        owners.append(getattr(owners[-1], name))
    field_ = next(f for f in dataclasses.fields(owners[-1]) if f.name == key)
    problems: list[str] = []
    value = _convert(typing.get_type_hints(type(owners[-1]))[key], field_.metadata, node, label, problems)
    if problems:
        raise ConfigError(problems[0])
    names = [*parents, key]  # owners[i] holds names[i]
    for i in reversed(range(len(owners))):
        value = dataclasses.replace(owners[i], **{names[i]: value})
    return value


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


MISSING = object()


def _build(cls, node: yaml.Node, prefix: str, path: Path, problems: list[str]):
    """Build ``cls`` from a mapping node; every problem is added to ``problems`` (the key keeps its default)."""
    if not isinstance(node, yaml.MappingNode):
        problems.append(f"{path}:{_line(node)}: {prefix.rstrip('.') or 'top level'}: expected a mapping of keys")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values, seen = {}, {}
    for key_node, value_node in node.value:
        key = key_node.value
        dotted = f"{prefix}{key}"
        if key in seen:
            problems.append(f"{path}:{_line(key_node)}: {dotted}: duplicate key (first on line {seen[key]})")
            continue
        seen[key] = _line(key_node)
        if key not in fields:
            known = ", ".join(fields)
            problems.append(f"{path}:{_line(key_node)}: {dotted}: unknown key (expected one of: {known})")
            continue
        where = f"{path}:{_line(value_node)}: {dotted}"
        if dataclasses.is_dataclass(hints[key]):
            values[key] = _build(hints[key], value_node, dotted + ".", path, problems)
            continue
        value = _convert(hints[key], fields[key].metadata, value_node, where, problems)
        if value is not MISSING:
            values[key] = value
    built = cls(**values)
    problem = built.check() if hasattr(built, "check") else None
    if problem:
        key, message = problem
        problems.append(f"{path}:{seen.get(key, _line(node))}: {prefix}{key}: {message}")
    return built


def _convert(hint, metadata, node: yaml.Node, where: str, problems: list[str]):
    """A field's value from its node, or MISSING after adding the problem to ``problems``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # int | Auto
        if isinstance(node, yaml.ScalarNode) and node.value == AUTO:
            return AUTO
        return _scalar(int, metadata, node, where, problems, alternative=AUTO)
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        value = node.value if isinstance(node, yaml.ScalarNode) else None
        if value not in choices:
            problems.append(f"{where}: expected one of {', '.join(choices)}, found {_shown(node)}")
            return MISSING
        return value
    if typing.get_origin(hint) is list:
        (kind,) = typing.get_args(hint)
        if not isinstance(node, yaml.SequenceNode):
            noun = "CPU numbers" if kind is int else "strings"
            problems.append(f"{where}: expected a list of {noun}, found {_shown(node)}")
            return MISSING
        items = [_scalar(kind, metadata.get("item", {"min": 0} if kind is int else {}), item, where, problems)
                 for item in node.value]
        return MISSING if MISSING in items else items
    return _scalar(hint, metadata, node, where, problems)


def _scalar(kind, metadata, node: yaml.Node, where: str, problems: list[str], alternative: str = ""):
    value = yaml.safe_load(yaml.serialize(node)) if isinstance(node, yaml.ScalarNode) else None
    noun = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[kind]
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    low, high = metadata.get("min"), metadata.get("max")
    if ok and kind is float and not math.isfinite(value):
        ok = False
    if ok and ((low is not None and value < low) or (high is not None and value > high)):
        ok = False
    if ok and metadata.get("check") and (problem := metadata["check"](value)):
        problems.append(f"{where}: {problem}, found {_shown(node)}")
        return MISSING
    if not ok:
        bounds = ""
        if low is not None and high is not None:
            bounds = f" in {low}..{high}"
        elif low is not None:
            bounds = f" >= {low}"
        problems.append(f"{where}: expected {noun}{bounds}{f' or {alternative}' if alternative else ''}, "
                        f"found {_shown(node)}")
        return MISSING
    return value


SHOWN_CHARS = 40


def _shown(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        text = node.value if len(node.value) <= SHOWN_CHARS else node.value[:SHOWN_CHARS] + "…"
        return repr(text)
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
