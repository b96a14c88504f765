"""Specification of the Caffe → ONNX converter (``colorize convert-caffe PROTOTXT CAFFEMODEL -o OUT``).

The released Zhang et al. weights are not needed: a caffemodel with random, calibrated weights is
generated for the real deploy prototxt, converted, run with onnxruntime and compared with an
independent NumPy forward pass of the Caffe net (float64, no folding, Caffe's softmax).

Tolerance: the ONNX model computes in float32 through 24 convolutions, and the random net amplifies
the rounding: at the worst of the 2×56×56 outputs it reaches about 3e-3 ab units (ab spans about
±100; a float32 NumPy pass of the Caffe net is off by as much), and about 3e-4 on average. The bounds
are 1e-2 at worst and 1e-3 on average. A conversion bug (a transposed kernel, a wrong pad or
BatchNorm statistic, a missed scale) changes ab by whole units.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import load_bin_centres
from models.caffe import reference
from models.caffe.convert import convert_caffe, main
from models.caffe.proto import NetParameter, array_to_blob, parse_prototxt
from models.caffe.synthetic import SyntheticWeights, random_weights, write_random_caffemodel

PROTOTXT = Path(__file__).resolve().parents[2] / "shared/data/zhang/colorization_deploy_v2.prototxt"
HEAD_LAYERS_THE_RELEASE_OMITS = ("class8_ab", "conv8_313_rh")
AB_MAX_ABS_ERROR = 1e-2
AB_MEAN_ABS_ERROR = 1e-3
SMALL_NET_MAX_ABS_ERROR = 1e-4


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def random_l(seed: int, batch: int = 1, size: int = 224) -> np.ndarray:
    """Random Lab lightness minus 50, float32 N×1×size×size, uniform in −50..50."""
    return np.random.default_rng(seed).uniform(-50.0, 50.0, (batch, 1, size, size)).astype(np.float32)


# ---------------------------------------------------------------- the reference net, random weights

@pytest.fixture(scope="module")
def prototxt() -> Path:
    if not PROTOTXT.is_file():
        pytest.skip(f"reference prototxt not found at {PROTOTXT} (shared data beside the repository)")
    return PROTOTXT


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("caffe")


@pytest.fixture(scope="module")
def weights(prototxt) -> SyntheticWeights:
    return random_weights(prototxt, seed=0)


@pytest.fixture(scope="module")
def caffemodels(weights, workdir) -> dict[str, Path]:
    """Two caffemodels with the same weights: every layer's blobs, and (like the released model)
    none for class8_ab and conv8_313_rh."""
    paths = {"all blobs": workdir / "all_blobs.caffemodel", "release-like": workdir / "release_like.caffemodel"}
    weights.write(paths["all blobs"])
    weights.write(paths["release-like"], omit=HEAD_LAYERS_THE_RELEASE_OMITS)
    return paths


@pytest.fixture(scope="module")
def conversions(prototxt, caffemodels, workdir):
    return {kind: convert_caffe(prototxt, path, workdir / f"{path.stem}.onnx") for kind, path in caffemodels.items()}


@pytest.fixture(scope="module")
def sessions(conversions):
    return {kind: ort_session(report.output) for kind, report in conversions.items()}


@pytest.fixture(scope="module")
def l_input() -> np.ndarray:
    return random_l(seed=1)


@pytest.fixture(scope="module")
def expected_ab(prototxt, weights, l_input) -> dict[str, np.ndarray]:
    """The Caffe net's class8_ab top by the NumPy reference, for each caffemodel. Without blobs,
    Caffe's demo sets class8_ab to the bin centres (weight[c, q] = centre[q, c]) and conv8_313_rh
    keeps its constant filler, 2.606."""
    net = parse_prototxt(prototxt)
    with_blobs = reference.forward(net, weights.blobs, l_input)
    release_defaults = dict(weights.blobs)
    release_defaults["class8_ab"] = [load_bin_centres().T.reshape(2, 313, 1, 1), np.zeros(2)]
    release_defaults["conv8_313_rh"] = [np.full(313, 2.606, np.float32)]
    head = reference.forward(net, release_defaults, None, resume_from=("conv8_313_rh", with_blobs))
    return {"all blobs": with_blobs["class8_ab"], "release-like": head["class8_ab"]}


@pytest.fixture(scope="module")
def onnx_ab(sessions, l_input) -> dict[str, np.ndarray]:
    return {kind: session.run(["ab"], {"l_minus_50": l_input})[0] for kind, session in sessions.items()}


@pytest.mark.parametrize("kind", ["all blobs", "release-like"])
def test_converted_model_computes_the_caffe_net(kind, onnx_ab, expected_ab):
    ab, expected = onnx_ab[kind], expected_ab[kind]
    assert ab.dtype == np.float32 and ab.shape == (1, 2, 56, 56)
    assert np.abs(expected).max() > 20, "the random net must produce saturated colours, not a grey image"
    error = np.abs(ab - expected)
    print(f"{kind}: max abs error {error.max():.2e}, mean {error.mean():.2e} (ab units)")
    assert error.max() <= AB_MAX_ABS_ERROR
    assert error.mean() <= AB_MEAN_ABS_ERROR


def test_the_two_caffemodels_really_differ_in_the_head(expected_ab):
    assert np.abs(expected_ab["all blobs"] - expected_ab["release-like"]).max() > 1.0


def test_model_follows_the_pipeline_contract(conversions):
    model = onnx.load(str(conversions["all blobs"].output))
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]

    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    assert (graph_input.name, dims(graph_input)) == ("l_minus_50", ["N", 1, 224, 224])
    assert (graph_output.name, dims(graph_output)) == ("ab", ["N", 2, 56, 56])
    assert graph_input.type.tensor_type.elem_type == graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["source_prototxt"] == "colorization_deploy_v2.prototxt"
    assert metadata["source_caffemodel"] == "all_blobs.caffemodel"
    assert re.fullmatch(r"[0-9a-f]{64}", metadata["source_caffemodel_sha256"])
    assert "convert-caffe" in metadata["converter"]


def test_softmax_is_not_an_onnx_softmax_over_channels(conversions):
    """onnxruntime runs Softmax(axis=1) on NCHW about 6× slower than exp / sum, so it is rewritten."""
    op_types = {node.op_type for node in onnx.load(str(conversions["all blobs"].output)).graph.node}
    assert "Softmax" not in op_types
    assert {"ReduceMax", "Exp", "Div"} <= op_types


def test_report_says_what_was_folded_and_filled(conversions):
    complete, release_like = conversions["all blobs"], conversions["release-like"]
    assert complete.filled_defaults == ()
    assert [item.split(":")[0] for item in release_like.filled_defaults] == ["conv8_313_rh", "class8_ab"]
    assert "Scale 'conv8_313_rh' folded into 'conv8_313'" in complete.simplifications
    assert (complete.input_shape, complete.output_shape) == ((1, 224, 224), (2, 56, 56))


def test_batch_dimension_is_dynamic(sessions, onnx_ab, l_input):
    session = sessions["release-like"]
    other = random_l(seed=2)
    (batch,) = session.run(["ab"], {"l_minus_50": np.concatenate([l_input, other])})
    (other_alone,) = session.run(["ab"], {"l_minus_50": other})
    assert batch.shape == (2, 2, 56, 56)
    assert np.abs(batch[0] - onnx_ab["release-like"][0]).max() <= AB_MAX_ABS_ERROR
    assert np.abs(batch[1] - other_alone[0]).max() <= AB_MAX_ABS_ERROR


# ---------------------------------------------------------------- a small net: every layer option

SMALL_PROTOTXT = """
name: "small"
input: "data_l"
input_shape { dim: 1 dim: 1 dim: 20 dim: 16 }
layer { name: "conv1" type: "Convolution" bottom: "data_l" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "up" type: "Deconvolution" bottom: "conv1" top: "up"
        convolution_param { num_output: 6 kernel_size: 4 pad: 1 stride: 2 dilation: 2 group: 2 } }
layer { name: "scale_up" type: "Scale" bottom: "up" top: "up" scale_param { bias_term: true } }
layer { name: "relu2" type: "ReLU" bottom: "up" top: "up" }
layer { name: "bn2" type: "BatchNorm" bottom: "up" top: "up_norm" batch_norm_param { eps: 0.001 } }
layer { name: "conv3" type: "Convolution" bottom: "up_norm" top: "conv3"
        convolution_param { num_output: 12 kernel_h: 3 kernel_w: 5 pad_h: 2 pad_w: 4 dilation: 2 group: 3
                            stride_h: 1 stride_w: 1 } }
layer { name: "train_only" type: "Dropout" bottom: "conv3" top: "conv3" include { phase: TRAIN } }
layer { name: "prob" type: "Softmax" bottom: "conv3" top: "prob" }
layer { name: "class8_ab" type: "Convolution" bottom: "prob" top: "class8_ab"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "silence" type: "Silence" bottom: "class8_ab" }
"""


@pytest.fixture
def small_net(tmp_path) -> tuple[Path, Path, SyntheticWeights]:
    """The small prototxt and a calibrated random caffemodel for it."""
    prototxt = tmp_path / "small.prototxt"
    prototxt.write_text(SMALL_PROTOTXT)
    weights = random_weights(prototxt, seed=4)
    caffemodel = tmp_path / "small.caffemodel"
    weights.write(caffemodel)
    return prototxt, caffemodel, weights


def test_small_net_with_every_layer_option_matches_the_reference(small_net, tmp_path):
    """Strided, grouped, dilated, rectangular convolutions; grouped, dilated deconvolution; in-place
    BatchNorm and Scale folded into the (de)convolution before them; a BatchNorm after a ReLU kept;
    leaky ReLU; a TRAIN-only layer dropped; legacy ``input``/``input_shape``."""
    prototxt, caffemodel, weights = small_net
    report = convert_caffe(prototxt, caffemodel, tmp_path / "small.onnx")
    assert report.simplifications[:3] == ("BatchNorm 'bn1' folded into 'conv1'", "Scale 'scale1' folded into 'conv1'",
                                          "Scale 'scale_up' folded into 'up'")
    op_types = [node.op_type for node in onnx.load(str(report.output)).graph.node]
    assert op_types.count("BatchNormalization") == 1 and "ConvTranspose" in op_types

    l_input = np.ascontiguousarray(random_l(seed=5, batch=2)[:, :, :20, :16])
    (ab,) = ort_session(report.output).run(["ab"], {"l_minus_50": l_input})
    expected = reference.forward(parse_prototxt(prototxt), weights.blobs, l_input)["class8_ab"]
    assert ab.shape == expected.shape == (2, 2, 23, 19)
    assert np.abs(ab - expected).max() <= SMALL_NET_MAX_ABS_ERROR


def test_legacy_4d_blob_dims_are_accepted(small_net, tmp_path):
    """Old caffemodels give blob shapes as num/channels/height/width (a bias of 8 is 1×1×1×8)."""
    prototxt, caffemodel, weights = small_net
    legacy_model = NetParameter(name="small")
    for name, arrays in weights.blobs.items():
        layer = legacy_model.layer.add(name=name)
        for array in arrays:
            blob = array_to_blob(array)
            blob.ClearField("shape")
            blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
            layer.blobs.append(blob)
    legacy = tmp_path / "legacy.caffemodel"
    legacy.write_bytes(legacy_model.SerializeToString())
    convert_caffe(prototxt, caffemodel, tmp_path / "modern.onnx")
    convert_caffe(prototxt, legacy, tmp_path / "legacy.onnx")
    l_input = np.ascontiguousarray(random_l(seed=7)[:, :, :20, :16])
    (modern_ab,) = ort_session(tmp_path / "modern.onnx").run(["ab"], {"l_minus_50": l_input})
    (legacy_ab,) = ort_session(tmp_path / "legacy.onnx").run(["ab"], {"l_minus_50": l_input})
    np.testing.assert_array_equal(legacy_ab, modern_ab)


# ---------------------------------------------------------------- bad input: one line, exit 2, no file

def run_cli(capsys, *args: Path | str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def output_dir(tmp_path) -> Path:
    directory = tmp_path / "out"
    directory.mkdir()
    return directory


def assert_failed_cleanly(result: tuple[int, str, str], expected_message: str, output_dir: Path) -> None:
    code, out, err = result
    assert (code, out, err) == (2, "", f"error: {expected_message}\n")
    assert list(output_dir.iterdir()) == [], "no output (and no temporary file) may be left behind"


def test_a_jpeg_is_not_a_prototxt(capsys, tmp_path, output_dir, caffemodels):
    jpeg = tmp_path / "photo.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(200) + b"\xff\xd9")
    result = run_cli(capsys, jpeg, caffemodels["all blobs"], "-o", output_dir / "model.onnx")
    assert_failed_cleanly(result, f"{jpeg} is not a Caffe prototxt (not UTF-8 text)", output_dir)


def test_random_bytes_are_not_a_prototxt(capsys, tmp_path, output_dir, caffemodels):
    noise = tmp_path / "noise.prototxt"
    noise.write_bytes(np.random.default_rng(6).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    result = run_cli(capsys, noise, caffemodels["all blobs"], "-o", output_dir / "model.onnx")
    assert_failed_cleanly(result, f"{noise} is not a Caffe prototxt (not UTF-8 text)", output_dir)


def test_text_that_is_not_a_net_names_the_unknown_field(capsys, tmp_path, output_dir, caffemodels):
    config = tmp_path / "config.prototxt"
    config.write_text('name: "x"\nlearning_rate: 0.1\n')
    result = run_cli(capsys, config, caffemodels["all blobs"], "-o", output_dir / "model.onnx")
    assert_failed_cleanly(result, f'{config} is not a valid Caffe prototxt: 2:1 : Message type '
                                  f'"caffe.NetParameter" has no field named "learning_rate".', output_dir)


def test_a_text_file_is_not_a_caffemodel(capsys, prototxt, output_dir):
    result = run_cli(capsys, prototxt, prototxt, "-o", output_dir / "model.onnx")
    assert_failed_cleanly(result, f"{prototxt} is not a Caffe weights file (binary NetParameter with layers "
                                  f"expected)", output_dir)


def test_weights_of_a_different_net_name_layer_and_shapes(capsys, prototxt, tmp_path, output_dir):
    modified = tmp_path / "narrower.prototxt"
    text = prototxt.read_text()
    conv1_2 = text.index('name: "conv1_2"')
    modified.write_text(text[:conv1_2] + text[conv1_2:].replace("num_output: 64", "num_output: 32", 1))
    caffemodel = tmp_path / "narrower.caffemodel"
    write_random_caffemodel(modified, caffemodel, calibrate=False)
    result = run_cli(capsys, prototxt, caffemodel, "-o", output_dir / "model.onnx")
    assert_failed_cleanly(result, f"{caffemodel}: layer 'conv1_2' weight has shape 32x64x3x3 but "
                                  f"colorization_deploy_v2.prototxt expects 64x64x3x3", output_dir)


def test_missing_blobs_of_an_ordinary_layer(capsys, prototxt, weights, tmp_path, output_dir):
    caffemodel = tmp_path / "no_conv4_2.caffemodel"
    weights.write(caffemodel, omit=("conv4_2",))
    result = run_cli(capsys, prototxt, caffemodel, "-o", output_dir / "model.onnx")
    assert_failed_cleanly(result, f"{caffemodel}: no weights for layer 'conv4_2' (Convolution); "
                                  f"colorization_deploy_v2.prototxt expects weight 512x512x3x3, bias 512", output_dir)


@pytest.mark.parametrize("replacement", ['type: "PReLU"', 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 }'])
def test_unknown_layer_type_names_layer_and_type(replacement, capsys, prototxt, tmp_path, output_dir, caffemodels):
    modified = tmp_path / "modified.prototxt"
    modified.write_text(prototxt.read_text().replace('type: "ReLU"', replacement, 1))
    layer_type = replacement.split('"')[1]
    result = run_cli(capsys, modified, caffemodels["all blobs"], "-o", output_dir / "model.onnx")
    assert_failed_cleanly(result, f"{modified}: layer 'relu1_1' has unsupported type '{layer_type}' (supported: "
                                  f"Input, Convolution, Deconvolution, ReLU, BatchNorm, Scale, Softmax, Silence)",
                          output_dir)


def test_missing_input_files(capsys, prototxt, tmp_path, output_dir, caffemodels):
    absent = tmp_path / "absent.caffemodel"
    result = run_cli(capsys, prototxt, absent, "-o", output_dir / "model.onnx")
    assert_failed_cleanly(result, f"caffemodel file not found: {absent}", output_dir)
    absent = tmp_path / "absent.prototxt"
    result = run_cli(capsys, absent, caffemodels["all blobs"], "-o", output_dir / "model.onnx")
    assert_failed_cleanly(result, f"prototxt file not found: {absent}", output_dir)


def test_cli_success_prints_a_summary(capsys, small_net, output_dir):
    prototxt, caffemodel, _ = small_net
    code, out, err = run_cli(capsys, prototxt, caffemodel, "-o", output_dir / "model.onnx")
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote {output_dir / 'model.onnx'}: l_minus_50 N×1×20×16 → ab N×2×23×19")
    assert [p.name for p in output_dir.iterdir()] == ["model.onnx"]
