"""Node-by-node numerical comparison of two models on real images: ``colorize compare``.

    colorize compare MODEL_A MODEL_B [--provider-a P] [--provider-b P] [--images DIR] [--count N]
                     [--threshold 0.99] [--csv out.csv] [--json out.json]

Both models (the pipeline's contract) run on the same inputs: the L − 50 of ``count`` real photographs
(default: CBSD68 from ../shared/data/val/cbsd68), one image per run. Every intermediate float tensor is
captured by adding all node outputs as graph outputs on an in-memory copy of each model. Tensors are
matched by name: in a QDQ model, the output of a DequantizeLinear fed by QuantizeLinear(X) stands for X
(what the next node really sees); in a QOperator model, an 8-bit ``Y_quantized`` output with constant
scale and zero point is dequantized and stands for Y (or for the ReLU after Y in model A, when
quantization folded that ReLU into Y's producer). Tensors without a counterpart (weights, shapes,
fused-away nodes) are skipped. Exposing every tensor stops onnxruntime fusing across them, so a QDQ
model then runs as float ops on dequantized values with the same quantization points — numerically
the QDQ reference semantics.

Per tensor (in model A's topological order), over all images together:
  cosine similarity of A and B (1.0 when both are all zero), max |A − B|, and the max relative error
  max |A − B| / max |A|. The first tensor whose cosine is below the threshold is flagged. The final ab
  output (bin scores decoded by the annealed mean) is summarised in Lab units: cosine, max and mean
  absolute error. Exit code 0 whatever the similarity; 2 with ``error:`` on bad input.
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from models import load_bin_centres
from models.quantize import load_l_minus_50, spread_images
from models.runtime import PROVIDERS, ColorModel, ModelError, SessionSettings, annealed_mean, import_onnxruntime
from models.tool_cli import run_tool, write_json_report
from stream.errors import InputError

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared/data/val/cbsd68"
DEFAULT_COUNT = 8
DEFAULT_THRESHOLD = 0.99

# QOperator ops: (input index of the output scale, input index of the output zero point)
OUTPUT_QPARAM_INPUTS = {
    "QuantizeLinear": (1, 2), "QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QLinearAdd": (6, 7),
    "QLinearMul": (6, 7), "QLinearConcat": (1, 2), "QLinearAveragePool": (3, 4),
    "QLinearGlobalAveragePool": (3, 4), "QLinearLeakyRelu": (3, 4), "QLinearSigmoid": (3, 4),
    "QLinearSoftmax": (3, 4),
}
QUANTIZED_SUFFIX = "_quantized"


@dataclass(frozen=True)
class Tap:
    """A captured tensor: ``canonical`` (the float tensor name it stands for), the graph output that
    carries it, the node that produced the canonical tensor, and (scale, zero point) when it is 8-bit."""

    canonical: str
    output: str
    node: str
    op_type: str
    qparams: tuple[np.ndarray, np.ndarray] | None = None

    def value(self, raw: np.ndarray) -> np.ndarray:
        """The tensor as float64 (dequantized when 8-bit)."""
        if self.qparams is None:
            return raw.astype(np.float64, copy=False)
        scale, zero_point = self.qparams
        return (raw.astype(np.float64) - zero_point.astype(np.float64)) * scale.astype(np.float64)


def _constants(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def find_taps(model) -> list[Tap]:
    """The float tensors of ``model`` worth comparing, in topological (graph) order, one per canonical name."""
    constants = _constants(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    graph_inputs = {i.name for i in model.graph.input}
    taps: dict[str, Tap] = {}
    qparams: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def label(name: str, fallback) -> tuple[str, str]:
        node = producer.get(name, fallback)
        return node.name or f"{node.op_type}:{name}", node.op_type

    for node in model.graph.node:
        if node.op_type in ("Constant", "QuantizeLinear") or not node.output:
            if node.op_type == "QuantizeLinear" and len(node.input) >= 3 \
                    and node.input[1] in constants and node.input[2] in constants:
                qparams[node.output[0]] = (constants[node.input[1]], constants[node.input[2]])
            continue
        if node.op_type == "DequantizeLinear":
            source = node.input[0]
            if source in constants or source in graph_inputs:
                continue  # a weight or an 8-bit model input
            quantizer = producer.get(source)
            if quantizer is not None and quantizer.op_type == "QuantizeLinear":
                canonical = quantizer.input[0]
                if canonical in graph_inputs:
                    continue
                taps[canonical] = Tap(canonical, node.output[0], *label(canonical, quantizer))
            else:
                taps.setdefault(node.output[0], Tap(node.output[0], node.output[0], *label(node.output[0], node)))
            continue
        if node.op_type in OUTPUT_QPARAM_INPUTS:
            scale_at, zero_at = OUTPUT_QPARAM_INPUTS[node.op_type]
            if len(node.input) > zero_at and node.input[scale_at] in constants and node.input[zero_at] in constants:
                qparams[node.output[0]] = (constants[node.input[scale_at]], constants[node.input[zero_at]])
        elif node.input and node.input[0] in qparams and node.output[0].endswith(QUANTIZED_SUFFIX):
            qparams[node.output[0]] = qparams[node.input[0]]  # e.g. Resize/MaxPool on 8-bit data
        for out in node.output:
            if not out:
                continue
            if out in qparams and out.endswith(QUANTIZED_SUFFIX):
                canonical = out[:-len(QUANTIZED_SUFFIX)]
                taps.setdefault(canonical, Tap(canonical, out, node.name or node.op_type, node.op_type, qparams[out]))
            elif out not in qparams:
                taps.setdefault(out, Tap(out, out, node.name or f"{node.op_type}:{out}", node.op_type))
    return list(taps.values())


def fused_activation_aliases(reference, reference_names: set[str], taps: dict[str, Tap]) -> dict[str, str | None]:
    """Canonical names of 8-bit ``taps`` that really hold a ReLU/Clip output of ``reference``.

    QOperator quantization folds a ReLU into the producing QLinearConv's output range but keeps the
    Conv's tensor name; such a tensor stands for the ReLU's output in the float reference.
    Returns {tap canonical name: reference tensor name, or None when that ReLU output is already
    tapped (the tensor then has no honest counterpart)}.
    """
    consumers: dict[str, list] = {}
    for node in reference.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    aliases = {}
    for name, tap in taps.items():
        users = consumers.get(name, [])
        if (tap.qparams is not None and len(users) == 1 and users[0].op_type in ("Relu", "Clip")
                and users[0].output[0] in reference_names):
            aliases[name] = None if users[0].output[0] in taps else users[0].output[0]
    return aliases


def expose(model, taps: list[Tap]):
    """A copy of ``model`` whose graph outputs are its own outputs plus every tap's tensor."""
    import onnx
    from onnx import TensorProto, helper

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    try:
        typed = onnx.shape_inference.infer_shapes(model)
    except Exception:
        typed = model
    elem_types = {info.name: info.type.tensor_type.elem_type
                  for info in list(typed.graph.value_info) + list(typed.graph.output)}
    present = {out.name for out in exposed.graph.output}
    for tap in taps:
        if tap.output in present:
            continue
        elem = elem_types.get(tap.output) or (
            helper.np_dtype_to_tensor_dtype(tap.qparams[1].dtype) if tap.qparams is not None else TensorProto.FLOAT)
        exposed.graph.output.append(helper.make_tensor_value_info(tap.output, elem, None))
        present.add(tap.output)
    return exposed


@dataclass
class _Stats:
    """Running sums for one matched tensor over all images."""

    shape: tuple[int, ...]
    dot: float = 0.0
    norm_a: float = 0.0
    norm_b: float = 0.0
    max_abs_error: float = 0.0
    max_abs_a: float = 0.0
    elements: int = 0
    sum_abs_error: float = 0.0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = a.ravel(), b.ravel()
        diff = np.abs(a - b)
        self.dot += float(a @ b)
        self.norm_a += float(a @ a)
        self.norm_b += float(b @ b)
        self.max_abs_error = max(self.max_abs_error, float(diff.max(initial=0.0)))
        self.max_abs_a = max(self.max_abs_a, float(np.abs(a).max(initial=0.0)))
        self.elements += a.size
        self.sum_abs_error += float(diff.sum())

    def cosine(self) -> float:
        if self.norm_a == 0.0 and self.norm_b == 0.0:
            return 1.0
        if self.norm_a == 0.0 or self.norm_b == 0.0:
            return 0.0
        return self.dot / np.sqrt(self.norm_a * self.norm_b)

    def max_rel_error(self) -> float:
        if self.max_abs_a == 0.0:
            return 0.0 if self.max_abs_error == 0.0 else float("inf")
        return self.max_abs_error / self.max_abs_a


@dataclass(frozen=True)
class TensorComparison:
    """One matched tensor: ``index`` in model A's order (1-based), its producing node in A, and the metrics."""

    index: int
    node: str
    op_type: str
    tensor: str
    shape: tuple[int, ...]
    cosine: float
    max_abs_error: float
    max_rel_error: float
    below_threshold: bool


@dataclass(frozen=True)
class FinalComparison:
    """The decoded ab outputs (float32 N×2×h×w, Lab units) of the two models over all images."""

    cosine: float
    max_abs_error: float
    mean_abs_error: float


@dataclass
class ComparisonReport:
    """Everything ``colorize compare`` found."""

    model_a: str
    model_b: str
    provider_a: str
    provider_b: str
    images: list[str]
    threshold: float
    tensors: list[TensorComparison]
    unmatched: list[str]
    final: FinalComparison
    first_below: TensorComparison | None = field(init=False)

    def __post_init__(self) -> None:
        self.first_below = next((t for t in self.tensors if t.below_threshold), None)

    def format_table(self, width: int = 44) -> str:
        def clip(text: str) -> str:
            return text if len(text) <= width else "…" + text[-(width - 1):]

        lines = [f"compare {self.model_a} ({self.provider_a}) vs {self.model_b} ({self.provider_b}) "
                 f"on {len(self.images)} image(s); threshold cosine {self.threshold}",
                 f"{'#':>4}  {'node':<{width}}  {'op':<18}  {'cosine':>9}  {'max abs':>10}  {'max rel':>9}"]
        for t in self.tensors:
            mark = "  <" if t.below_threshold else ""
            lines.append(f"{t.index:>4}  {clip(t.node):<{width}}  {t.op_type[:18]:<18}  {t.cosine:>9.6f}  "
                         f"{t.max_abs_error:>10.4g}  {t.max_rel_error:>9.4g}{mark}")
        if self.first_below is None:
            lines.append(f"every matched tensor has cosine ≥ {self.threshold}")
        else:
            t = self.first_below
            lines.append(f"first node below {self.threshold}: #{t.index} '{t.node}' ({t.op_type}, "
                         f"tensor '{t.tensor}'), "
                         f"cosine {t.cosine:.6f}")
        f = self.final
        lines.append(f"final ab: cosine {f.cosine:.6f}, max abs error {f.max_abs_error:.3f}, "
                     f"mean abs error {f.mean_abs_error:.4f} (Lab units)")
        lines.append(f"matched {len(self.tensors)} tensor(s); {len(self.unmatched)} of model A without a counterpart "
                     "in model B skipped")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"model_a": self.model_a, "model_b": self.model_b, "provider_a": self.provider_a,
                "provider_b": self.provider_b, "images": self.images, "threshold": self.threshold,
                "first_below_threshold": None if self.first_below is None else asdict(self.first_below),
                "final_ab": asdict(self.final), "tensors": [asdict(t) for t in self.tensors],
                "unmatched_in_a": self.unmatched}

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["index", "node", "op_type", "tensor", "shape", "cosine", "max_abs_error",
                             "max_rel_error", "below_threshold"])
            for t in self.tensors:
                writer.writerow([t.index, t.node, t.op_type, t.tensor, "x".join(map(str, t.shape)),
                                 f"{t.cosine:.9f}", f"{t.max_abs_error:.9g}", f"{t.max_rel_error:.9g}",
                                 int(t.below_threshold)])


class _Instrumented:
    """A model opened twice: checked as a ColorModel, and as a session returning every tap."""

    def __init__(self, path: Path, provider: str):
        import onnx
        ort = import_onnxruntime()

        self.checked = ColorModel(path, SessionSettings(provider=provider))
        self.model = model = onnx.load(str(path))
        self.taps = find_taps(model)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        ort_name = PROVIDERS[provider][0]
        try:
            self.session = ort.InferenceSession(expose(model, self.taps).SerializeToString(), options,
                                                providers=[ort_name], enable_fallback=0)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot open {path} with every tensor exposed: {first[:200]}") from None
        if ort_name not in self.session.get_providers():
            raise ModelError(f"inference provider '{provider}' did not initialise for {path}")
        self.output_names = [out.name for out in self.session.get_outputs()]
        self.centres = load_bin_centres() if self.checked.output_kind == "bins" else None

    def run(self, l_minus_50: np.ndarray) -> dict[str, np.ndarray]:
        """float32 1×1×H×W → raw arrays by graph output name (taps and the model's own outputs)."""
        values = self.session.run(None, {self.checked.input_name: l_minus_50})
        return dict(zip(self.output_names, values))

    def ab(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        out = raw[self.checked.output_name]
        return annealed_mean(out, self.centres) if self.checked.output_kind == "bins" else out


def compare_models(model_a: Path, model_b: Path, provider_a: str = "cpu", provider_b: str = "cpu",
                   images_dir: Path = DEFAULT_IMAGES, count: int = DEFAULT_COUNT,
                   threshold: float = DEFAULT_THRESHOLD) -> ComparisonReport:
    """Run both models on ``count`` images and compare every matched tensor (see module doc).

    Raises ModelError or InputError with a one-line message on a bad model, provider or image folder.
    """
    images = spread_images(Path(images_dir), count)
    a = _Instrumented(Path(model_a), provider_a)
    b = _Instrumented(Path(model_b), provider_b)
    if a.checked.input_size != b.checked.input_size:
        raise InputError(f"input sizes differ: {a.checked.input_size} vs {b.checked.input_size}")
    b_taps = {tap.canonical: tap for tap in b.taps}
    for name, alias in fused_activation_aliases(a.model, {tap.canonical for tap in a.taps}, b_taps).items():
        tap = b_taps.pop(name)
        if alias is not None:
            b_taps[alias] = tap
    pairs = [(tap, b_taps[tap.canonical]) for tap in a.taps if tap.canonical in b_taps]
    unmatched = [tap.canonical for tap in a.taps if tap.canonical not in b_taps]
    stats: dict[str, _Stats] = {}
    final = _Stats(shape=())
    for path in images:
        x = load_l_minus_50(path, a.checked.input_size)
        raw_a, raw_b = a.run(x), b.run(x)
        for tap_a, tap_b in pairs:
            if not all(tap.qparams is not None or np.issubdtype(raw[tap.output].dtype, np.floating)
                       for tap, raw in ((tap_a, raw_a), (tap_b, raw_b))):
                continue  # shapes, indices and other non-float tensors
            value_a, value_b = tap_a.value(raw_a[tap_a.output]), tap_b.value(raw_b[tap_b.output])
            if value_a.shape != value_b.shape:
                continue
            stats.setdefault(tap_a.canonical, _Stats(shape=tuple(value_a.shape[1:]))).add(value_a, value_b)
        ab_a, ab_b = a.ab(raw_a), b.ab(raw_b)
        if ab_a.shape != ab_b.shape:
            raise InputError(f"ab outputs differ in shape: {ab_a.shape} vs {ab_b.shape}")
        final.add(ab_a.astype(np.float64), ab_b.astype(np.float64))
    tensors = []
    for tap_a, _ in pairs:
        s = stats.get(tap_a.canonical)
        if s is None:
            unmatched.append(tap_a.canonical)
            continue
        cosine = float(s.cosine())
        tensors.append(TensorComparison(index=len(tensors) + 1, node=tap_a.node, op_type=tap_a.op_type,
                                        tensor=tap_a.canonical, shape=s.shape, cosine=cosine,
                                        max_abs_error=s.max_abs_error, max_rel_error=s.max_rel_error(),
                                        below_threshold=not cosine >= threshold))
    return ComparisonReport(model_a=str(model_a), model_b=str(model_b), provider_a=provider_a,
                            provider_b=provider_b, images=[str(p) for p in images], threshold=threshold,
                            tensors=tensors, unmatched=unmatched,
                            final=FinalComparison(cosine=float(final.cosine()), max_abs_error=final.max_abs_error,
                                                  mean_abs_error=final.sum_abs_error / max(1, final.elements)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colorize compare",
        description="Compare two models tensor by tensor on real images (cosine, max abs/rel error); "
                    "flags the first node below the threshold.")
    parser.add_argument("model_a", type=Path, help="reference ONNX model (e.g. FP32)")
    parser.add_argument("model_b", type=Path, help="ONNX model to check (e.g. INT8)")
    parser.add_argument("--provider-a", choices=list(PROVIDERS), default="cpu",
                        help="inference provider that runs MODEL_A (default cpu)")
    parser.add_argument("--provider-b", choices=list(PROVIDERS), default="cpu",
                        help="inference provider that runs MODEL_B (default cpu)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                        help="images (default ../shared/data/val/cbsd68)")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT,
                        help=f"images used, evenly spaced (default {DEFAULT_COUNT}; 0 = all)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="cosine below which a node is flagged (default 0.99)")
    parser.add_argument("--csv", type=Path, help="write the per-tensor table as CSV")
    parser.add_argument("--json", type=Path, help="write the whole report as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry: prints the table, returns 0; on bad input prints ``error: <one line>`` to stderr, returns 2."""
    args = build_parser().parse_args(argv)

    def table() -> str:
        report = compare_models(args.model_a, args.model_b, args.provider_a, args.provider_b, args.images,
                                args.count, args.threshold)
        if args.csv is not None:
            try:
                report.write_csv(args.csv)
            except OSError as exc:
                raise InputError(f"cannot write {args.csv}: {exc.strerror or exc}") from None
        if args.json is not None:
            write_json_report(args.json, report.to_json())
        return report.format_table()
    return run_tool(table)


if __name__ == "__main__":
    sys.exit(main())
