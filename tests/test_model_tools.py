"""Specification of the model tools: `colorize quantize`, `bench-model`, `compare` and `devices`
(models/quantize.py, bench_model.py, compare.py, providers.py).

The models here are small ColorNet-like graphs built with onnx.helper (random weights, the pipeline's
contract: l_minus_50 N×1×224×224 → ab N×2×56×56 through 313 bin scores and the annealed mean), run on
real photographs from ../shared/data.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from models import ANNEAL_T, load_bin_centres
from models.providers import RUNTIME_PACKAGES
from models.runtime import PROVIDERS, ColorModel, ModelError, SessionSettings
from tests.conftest import save_colour_model, shared_file

LOGITS_CONV = "logits_conv"
PERTURBED_CONV = "conv2"


def build_colornet_like(path: Path, seed: int = 0) -> Path:
    """Random He-initialised net: /50 → 3 conv+ReLU (to 56×56, 16 ch) → 1×1 conv to 313 logits →
    annealed mean (Mul 1/T, ReduceMax, Sub, Exp, Conv with the bin centres, ReduceSum, Div)."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def conv(name, x, cin, cout, k, stride, relu=True):
        w = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k))
        b = rng.normal(0, 0.1, cout)
        nodes.append(helper.make_node("Conv", [x, const(f"{name}.w", w), const(f"{name}.b", b)], [f"{name}_out"],
                                      name=name, kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4))
        if not relu:
            return f"{name}_out"
        nodes.append(helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu"], name=f"{name}_relu"))
        return f"{name}_relu"

    nodes.append(helper.make_node("Div", ["l_minus_50", const("fifty", 50.0)], ["scaled"], name="scale_input"))
    x = conv("conv1", "scaled", 1, 8, 3, 2)
    x = conv(PERTURBED_CONV, x, 8, 16, 3, 2)
    x = conv("conv3", x, 16, 16, 3, 1)
    logits = conv(LOGITS_CONV, x, 16, 313, 1, 1, relu=False)
    centres = load_bin_centres().T.reshape(2, 313, 1, 1)
    nodes += [
        helper.make_node("Mul", [logits, const("inv_t", 1.0 / ANNEAL_T)], ["z"], name="anneal"),
        helper.make_node("ReduceMax", ["z"], ["z_max"], name="z_max", axes=[1], keepdims=1),
        helper.make_node("Sub", ["z", "z_max"], ["z_shift"], name="z_shift"),
        helper.make_node("Exp", ["z_shift"], ["e"], name="exp"),
        helper.make_node("Conv", ["e", const("centres", centres)], ["weighted"], name="ab_projection"),
        helper.make_node("ReduceSum", ["e", "sum_axes"], ["e_sum"], name="e_sum", keepdims=1),
        helper.make_node("Div", ["weighted", "e_sum"], ["ab"], name="normalise"),
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "sum_axes"))
    return save_colour_model(path, "colornet_like", nodes, inits)


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory) -> Path:
    return build_colornet_like(tmp_path_factory.mktemp("fp32") / "net.onnx")


@pytest.fixture(scope="module")
def train_dir() -> Path:
    return shared_file("train")


@pytest.fixture(scope="module")
def val_dir() -> Path:
    return shared_file("val", "cbsd68")


@pytest.fixture(scope="module")
def quantized(fp32_model, train_dir, tmp_path_factory):
    from models.quantize import quantize_model

    output = tmp_path_factory.mktemp("int8") / "net_int8.onnx"
    report = quantize_model(fp32_model, output, train_dir, count=8)
    return output, report


@pytest.fixture
def not_onnx(tmp_path) -> Path:
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n")
    return path


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


# ---------------------------------------------------------------- quantize

def test_calibration_images_are_spread_over_folders_deterministically(tmp_path):
    from models.quantize import spread_images

    for folder, n in (("a", 10), ("b", 2), ("c", 30)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            (tmp_path / folder / f"{i:03d}.jpg").touch()
    (tmp_path / "c" / "readme.txt").touch()
    picked = spread_images(tmp_path, 9)
    assert picked == spread_images(tmp_path, 9)
    assert len(picked) == len(set(picked)) == 9
    per_folder = {f: sum(p.parent.name == f for p in picked) for f in "abc"}
    assert per_folder == {"a": 4, "b": 2, "c": 3}  # b gives all it has; the rest share evenly
    assert [p.name for p in picked if p.parent.name == "c"] == ["005.jpg", "015.jpg", "025.jpg"]
    assert len(spread_images(tmp_path, 0)) == 42


def test_decoding_tail_is_found_by_graph_analysis_not_names(fp32_model):
    from models.quantize import float_tail

    model = onnx.load(str(fp32_model))
    for index, node in enumerate(model.graph.node):
        node.name = f"n{index}"
    logits, tail = float_tail(model)
    names = {node.name: node.op_type for node in model.graph.node}
    assert names[logits] == "Conv" and logits == "n7"
    assert sorted(names[n] for n in tail) == ["Conv", "Div", "Exp", "Mul", "ReduceMax", "ReduceSum", "Sub"]
    assert float_tail(model, include_logits=True)[1] == [logits, *tail]


def test_quantize_writes_a_qdq_int8_model_with_a_float_decoding_tail(quantized, fp32_model):
    output, report = quantized
    model = onnx.load(str(output))
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert report.quantized_ops.get("Conv", 0) == 3  # conv1..conv3; the logits conv stays float
    assert report.calibration_images == 8
    assert not list(output.parent.glob(".*partial"))  # written under a temporary name, then renamed
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type in ("Exp", "ReduceMax", "ReduceSum", "Sub", "Div") and node.name != "scale_input":
            assert all(producers.get(i) != "DequantizeLinear" for i in node.input), node.name
    logits = next(node for node in model.graph.node if node.name == LOGITS_CONV)
    assert all(producers.get(i) != "QuantizeLinear" for i in logits.output)
    assert output.stat().st_size < fp32_model.stat().st_size


def test_quantized_ab_is_close_to_fp32_on_real_images(quantized, fp32_model, val_dir):
    from models.quantize import load_l_minus_50, spread_images

    fp32, int8 = ColorModel(fp32_model), ColorModel(quantized[0])
    x = np.concatenate([load_l_minus_50(p, (224, 224)) for p in spread_images(val_dir, 6)])
    ab_fp32, ab_int8 = fp32.predict_ab(x), int8.predict_ab(x)
    assert ab_int8.shape == ab_fp32.shape == (6, 2, 56, 56)
    assert cosine(ab_int8, ab_fp32) >= 0.99
    assert np.abs(ab_int8 - ab_fp32).mean() < 2.0  # Lab units


def test_quantize_cli_reports_what_it_did(fp32_model, train_dir, tmp_path, monkeypatch, capsys):
    import shutil

    from models.quantize import main

    monkeypatch.chdir(tmp_path)
    shutil.copy(fp32_model, "net.onnx")
    output = tmp_path / "q.onnx"
    assert main(["net.onnx", "-o", "q.onnx", "--images", str(train_dir), "--count", "4",
                 "--format", "qoperator"]) == 0
    out = capsys.readouterr().out
    assert "QOperator" in out and "4 images" in out and f"'{LOGITS_CONV}'" in out
    assert "QLinearConv" in {node.op_type for node in onnx.load(str(output)).graph.node}


# ---------------------------------------------------------------- bench-model

def test_bench_model_prints_latency_percentiles_and_the_counts_asked_for(fp32_model, tmp_path, capsys):
    from models.bench_model import main

    report = tmp_path / "bench.json"
    assert main([str(fp32_model), "--loop", "7", "--warmup", "2", "--batch", "2", "--threads", "1",
                 "--json", str(report)]) == 0
    out = capsys.readouterr().out
    for label in ("inference time, mean", "inference time, p50", "inference time, p99", "frames/s"):
        assert label in out
    assert "batch 2, 2 warm-up and 7 timed inferences" in out and "[INFO]" not in out
    data = json.loads(report.read_text())
    assert (data["loop"], data["warmup"], data["batch"]) == (7, 2, 2)
    assert data["input_shape"] == [2, 1, 224, 224] and data["output_shape"] == [2, 2, 56, 56]
    assert 0 < data["p50_ms"] <= data["p99_ms"] <= data["max_ms"]
    assert data["frames_per_s"] == pytest.approx(2 * data["inferences_per_s"])


# ---------------------------------------------------------------- compare

def test_compare_of_a_model_with_itself_is_exact_on_every_node(fp32_model, val_dir):
    from models.compare import compare_models

    report = compare_models(fp32_model, fp32_model, images_dir=val_dir, count=1)
    graph_nodes = {node.name for node in onnx.load(str(fp32_model)).graph.node}
    assert {t.node for t in report.tensors} == graph_nodes
    for t in report.tensors:
        assert t.cosine == pytest.approx(1.0, abs=1e-12) and t.max_abs_error == 0.0 and t.max_rel_error == 0.0
    assert report.first_below is None
    assert report.final.cosine == pytest.approx(1.0, abs=1e-12) and report.final.max_abs_error == 0.0


def test_compare_flags_the_first_perturbed_node_by_name(fp32_model, val_dir, tmp_path, capsys):
    from models.compare import main

    model = onnx.load(str(fp32_model))
    weights = next(init for init in model.graph.initializer if init.name == f"{PERTURBED_CONV}.w")
    perturbed = numpy_helper.to_array(weights) * np.random.default_rng(1).uniform(-1, 1, weights.dims)
    weights.CopyFrom(numpy_helper.from_array(perturbed.astype(np.float32), weights.name))
    perturbed_path = tmp_path / "perturbed.onnx"
    onnx.save(model, str(perturbed_path))

    table, data = tmp_path / "nodes.csv", tmp_path / "report.json"
    assert main([str(fp32_model), str(perturbed_path), "--images", str(val_dir), "--count", "1",
                 "--csv", str(table), "--json", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"first node below 0.99: #4 '{PERTURBED_CONV}' (Conv" in out
    report = json.loads(data.read_text())
    assert report["first_below_threshold"]["node"] == PERTURBED_CONV
    rows = list(csv.DictReader(table.open()))
    assert [r["node"] for r in rows[:4]] == ["scale_input", "conv1", "conv1_relu", PERTURBED_CONV]
    assert all(float(r["cosine"]) == pytest.approx(1.0) and float(r["max_abs_error"]) == 0.0 for r in rows[:3])
    assert [r["below_threshold"] for r in rows[:4]] == ["0", "0", "0", "1"]
    assert "final ab: cosine" in out and "(Lab units)" in out


def test_compare_lines_up_qdq_tensors_with_their_float_originals(fp32_model, quantized, val_dir):
    from models.compare import compare_models

    report = compare_models(fp32_model, quantized[0], images_dir=val_dir, count=2)
    matched = {t.node for t in report.tensors}
    # the ReLUs' outputs are what the quantized convs emit; the logits reach the tail through "anneal"
    # (onnxruntime folds the 1/T Mul into the logits conv, whose own output then has no counterpart)
    assert {"conv1_relu", f"{PERTURBED_CONV}_relu", "conv3_relu", "anneal", "exp", "normalise"} <= matched
    assert all(t.cosine > 0.95 for t in report.tensors)
    assert report.final.cosine >= 0.99


# ---------------------------------------------------------------- devices and providers

def test_devices_lists_cpu_available_and_says_why_others_are_not(capsys):
    import onnxruntime as ort

    from models.providers import available_devices, main

    devices = {d.name: d for d in available_devices()}
    assert list(devices) == ["cpu", "cuda", "npu", "openvino"]
    assert devices["cpu"].available and devices["cpu"].detail
    for name in ("cuda", "npu", "openvino"):
        if PROVIDERS[name][0] not in ort.get_available_providers():
            assert not devices[name].available
            assert devices[name].detail.startswith("package missing")
            assert devices[name].detail.endswith(f"pip install {RUNTIME_PACKAGES[name]}")
            assert "\n" not in devices[name].detail
    assert main([]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["provider", "onnxruntime", "provider"]
    assert table[1].split()[:3] == ["cpu", "CPUExecutionProvider", "available"]


def test_devices_warns_when_two_onnxruntime_builds_share_the_module(tmp_path):
    """pip installs onnxruntime-gpu beside onnxruntime without complaint; both write the module
    'onnxruntime'. A second build's metadata (what pip leaves) must make `devices` say so and how to fix it."""
    import subprocess
    import sys

    from models.providers import install_command, installed_runtimes

    assert installed_runtimes() == ["onnxruntime"]
    extra = tmp_path / "site"
    info = extra / "onnxruntime_gpu-1.32.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.32.0\n")
    env = {**os.environ, "PYTHONPATH": f"{extra}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "stream.cli", "devices"], capture_output=True, text=True,
                          env=env, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "warning: onnxruntime and onnxruntime-gpu are installed side by side; they share the module "
        "'onnxruntime', so whichever was installed last is what runs. Keep one: e.g. "
        f"{install_command('onnxruntime-gpu')}")
    assert install_command("onnxruntime-gpu") == (
        "pip uninstall -y onnxruntime onnxruntime-cann onnxruntime-openvino; pip install onnxruntime-gpu")


def test_an_unavailable_provider_is_a_one_line_error_not_a_fallback(fp32_model, capsys):
    import onnxruntime as ort

    from models.bench_model import main

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA")
    with pytest.raises(ModelError) as caught:
        ColorModel(fp32_model, SessionSettings(provider="cuda"))
    assert str(caught.value).startswith("inference provider 'cuda' is not available")
    assert "\n" not in str(caught.value)
    assert main([str(fp32_model), "--provider", "cuda", "--loop", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: inference provider 'cuda' is not available")


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("tool", ["quantize", "bench_model", "compare"])
@pytest.mark.parametrize("problem", ["missing", "not_onnx"])
def test_bad_model_is_error_line_and_exit_2(tool, problem, not_onnx, fp32_model, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"models.{tool}").main
    bad = tmp_path / "absent.onnx" if problem == "missing" else not_onnx
    argv = {"quantize": [str(bad), "-o", str(tmp_path / "out.onnx"), "--count", "1"],
            "bench_model": [str(bad), "--loop", "1"],
            "compare": [str(fp32_model), str(bad), "--count", "1"]}[tool]
    assert main(argv) == 2
    captured = capsys.readouterr()
    expected = "error: model file not found" if problem == "missing" else "error: cannot load model"
    assert captured.err.startswith(expected), captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "out.onnx").exists()


def test_quantize_without_calibration_images_is_an_error(fp32_model, tmp_path, capsys):
    from models.quantize import main

    assert main([str(fp32_model), "-o", str(tmp_path / "q.onnx"), "--images", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip() == f"error: image folder not found: {tmp_path / 'none'}"
    (tmp_path / "empty").mkdir()
    assert main([str(fp32_model), "-o", str(tmp_path / "q.onnx"), "--images", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith("error: no images")
    assert not (tmp_path / "q.onnx").exists()
