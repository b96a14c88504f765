"""Specification of the training tools: the decoded photo pack, film degradations, and a training run
that resumes where it stopped, continues from shipped weights, and exports a model the pipeline runs."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.film_augment import DEGRADATIONS, black_bars, degrade_like_film, film_lightness, film_stock_lightness
from models.training_pack import build_pack, load_pack

torch = pytest.importorskip("torch", reason="training needs PyTorch (pip install .[train])")


def write_photos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = (120, 180) if i % 2 else (200, 150)
        bgr = np.zeros((h, w, 3), np.uint8)
        bgr[: h // 2] = rng.integers(0, 256, 3)
        bgr[h // 2:] = rng.integers(0, 256, 3)
        assert cv2.imwrite(str(folder / f"photo_{i}.{'jpg' if i % 2 else 'png'}"), bgr)
    (folder / "notes.txt").write_text("not a photo")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_pack_holds_every_readable_photo_as_a_centred_square(tmp_path):
    source = write_photos(tmp_path / "photos", 5)
    path = build_pack(source, tmp_path / "pack", side=64)
    photos = load_pack(tmp_path / "pack")
    assert path.name == "photos.npy" and photos.shape == (5, 64, 64, 3) and photos.dtype == np.uint8
    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    assert manifest["count"] == 5 and manifest["skipped"] == ["broken.jpg"]
    # photo_0 is 150 wide, 200 high, top half one colour: the centred square keeps both halves
    first = cv2.cvtColor(cv2.imread(str(source / "photo_0.png")), cv2.COLOR_BGR2RGB)
    assert np.abs(photos[0, 5].astype(int) - first[30, 75].astype(int)).max() <= 2
    assert np.abs(photos[0, 58].astype(int) - first[170, 75].astype(int)).max() <= 2


def test_pack_of_several_folders_names_each_photo_by_its_folder(tmp_path):
    first, second = write_photos(tmp_path / "shared", 3), write_photos(tmp_path / "extra", 2)
    build_pack([first, second], tmp_path / "pack", side=32)
    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    assert load_pack(tmp_path / "pack").shape == (5, 32, 32, 3)
    assert manifest["photos"][0] == "shared/photo_0.png" and manifest["photos"][-1] == "extra/photo_1.jpg"
    assert manifest["skipped"] == ["shared/broken.jpg", "extra/broken.jpg"]


@pytest.mark.parametrize("degradation", [d for d, _ in DEGRADATIONS], ids=lambda d: d.__name__)
def test_each_film_degradation_changes_lightness_and_keeps_its_shape(degradation):
    rng = np.random.default_rng(3)
    lightness = np.random.default_rng(1).uniform(10, 90, (64, 96)).astype(np.float32)  # texture, so blur shows
    changed = np.clip(degradation(lightness.copy(), rng), 0, 100)
    assert changed.shape == lightness.shape and changed.dtype == np.float32
    for seed in range(5):  # random strengths: at least one of a few draws must visibly change the picture
        if np.abs(np.clip(degradation(lightness.copy(), np.random.default_rng(seed)), 0, 100) - lightness).mean() > 0.2:
            break
    else:
        pytest.fail(f"{degradation.__name__} left the lightness as it was")
    out = degrade_like_film(lightness.copy(), rng)
    assert out.min() >= 0.0 and out.max() <= 100.0


def test_film_stock_keeps_white_and_black_and_records_red_darker_than_the_eye_on_orthochromatic_stock():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [200, 30, 30], [60, 120, 40], [120, 170, 230]]], np.uint8)
    eye = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)[0, :, 0]  # 100, 0, 43, 45, 68
    stocks = np.stack([film_stock_lightness(rgb, np.random.default_rng(seed))[0] for seed in range(40)])
    assert stocks.dtype == np.float32 and np.allclose(stocks[:, :2], [100.0, 0.0], atol=0.01)
    red, lawn, sky = stocks[:, 2], stocks[:, 3], stocks[:, 4]
    assert red.min() < eye[2] - 12 and red.max() > eye[2]  # near black on orthochromatic, lighter on some panchromatic
    assert lawn.max() < eye[3]  # every stock records this green darker than the eye sees it
    assert sky.mean() > eye[4] and sky.max() > eye[4] + 8  # blue skies burn out toward white on most stocks
    degraded = film_lightness(np.repeat(np.repeat(rgb, 20, axis=0), 20, axis=1), np.random.default_rng(0))
    assert degraded.shape == (20, 100) and degraded.min() >= 0.0 and degraded.max() <= 100.0


def test_black_bars_blacken_both_edges_and_leave_the_middle():
    rgb = np.full((100, 160, 3), 200, np.uint8)
    seen = set()
    for seed in range(20):
        out = black_bars(rgb, np.random.default_rng(seed))
        assert (out[50, 80] == 200).all() and (rgb == 200).all()
        if (out[:, 0] == 0).all() and (out[:, -1] == 0).all():
            seen.add("pillarbox")
        if (out[0] == 0).all() and (out[-1] == 0).all():
            seen.add("letterbox")
    assert seen == {"pillarbox", "letterbox"}


def train(*args: str) -> None:
    from models.train import main
    assert main([*args, "--threads", "1"]) == 0


def tiny_run(tmp_path: Path, photos: int = 6) -> list[str]:
    """Writes ``photos`` training photos (packed at 96 px) and 2 validation photos under ``tmp_path``;
    returns the training options of a tiny network on them."""
    build_pack(write_photos(tmp_path / "photos", photos), tmp_path / "pack", side=96)
    val = write_photos(tmp_path / "val", 2)
    return ["--pack", str(tmp_path / "pack"), "--val", str(val), "--batch", "2", "--crop", "64", "--width", "8",
            "--precision", "fp32"]


def log_records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "train_log.jsonl").read_text().splitlines()]


def test_training_resumes_continues_from_shipped_weights_and_exports_a_runnable_model(tmp_path):
    from models.runtime import ColorModel
    from models.shipped_weights import read_shipped_weights

    common = tiny_run(tmp_path)
    workdir = tmp_path / "run"
    train(*common, "--workdir", str(workdir), "--minutes", "0.05")
    first = log_records(workdir)
    assert first[-1]["event"] == "continuation_end" and first[-1]["index"] == 1
    steps_one = first[-1]["total_steps"]
    validations = [r for r in first if r["event"] == "validation"]
    assert first[0]["event"] == "start" and first[0]["step"] == 0 and steps_one > 0 and validations
    assert {"rbauc_gain", "auc_gain", "psnr_gain", "delta_a", "delta_b", "below_gray"} <= set(validations[0])

    train(*common, "--workdir", str(workdir), "--minutes", "0.05")  # a second continuation, same workdir
    second = log_records(workdir)[-1]
    assert second["index"] == 2 and second["start_step"] == steps_one and second["total_steps"] > steps_one

    onnx_path, kept_log = tmp_path / "model.onnx", tmp_path / "training_log.jsonl"
    for _ in range(2):  # exporting twice keeps each record once
        train("--workdir", str(workdir), "--export", str(onnx_path),
              "--tilt-beta", "0.2", "--confidence-power", "0.5", "--log-to", str(kept_log))
    assert kept_log.read_text().splitlines() == (workdir / "train_log.jsonl").read_text().splitlines()
    model = ColorModel(onnx_path)
    ab = model.predict_ab(np.zeros((2, 1, 224, 224), np.float32))
    assert model.input_size == (224, 224) and ab.shape == (2, 2, 56, 56) and np.isfinite(ab).all()

    fresh = tmp_path / "next_session"  # the exported model is what the next session continues from
    train(*common, "--workdir", str(fresh), "--init-from", str(onnx_path), "--minutes", "0.05")
    shipped = read_shipped_weights(onnx_path)
    records = log_records(fresh)
    assert shipped.width == 8 and shipped.step >= steps_one and len(shipped.continuations) in (1, 2)
    assert records[-1]["index"] == len(shipped.continuations) + 1
    assert records[-1]["start_step"] == shipped.step and records[-1]["total_steps"] > shipped.step


def test_colour_balance_term_is_the_per_image_cast_in_ab_units():
    from models import load_bin_centres
    from models.train import colour_balance_loss

    centres = torch.from_numpy(load_bin_centres()).float()
    target_bin = int(torch.argmin((centres - torch.tensor([20.0, 10.0])).norm(dim=1)))
    logits = torch.full((1, len(centres), 4, 4), -30.0)
    logits[:, target_bin] = 30.0  # a confident prediction of one bin everywhere
    predicted = centres[target_bin]
    exact = colour_balance_loss(logits, centres, predicted[None])
    cast = colour_balance_loss(logits, centres, (predicted - torch.tensor([6.0, 0.0]))[None])
    assert float(exact) == pytest.approx(0.0, abs=1e-4)
    assert float(cast) == pytest.approx(6.0 - 0.5, abs=1e-3)  # Huber with δ = 1 beyond the quadratic zone


def test_extra_photos_are_rebuilt_from_clones_and_a_missing_one_is_named(tmp_path):
    from models.extra_photos import rebuild

    clone = tmp_path / "clones" / "weather" / "data" / "cloudy"
    clone.mkdir(parents=True)
    assert cv2.imwrite(str(clone / "c1.jpg"), np.full((400, 640, 3), 120, np.uint8))
    listing = tmp_path / "list.tsv"
    listing.write_text("folder/name\trepository\tcommit\tpath\n"
                       f"sky/mwd_c1.jpg\tsomeone/weather\t{'a' * 40}\tdata/cloudy/c1.jpg\n")
    assert rebuild(tmp_path / "clones", tmp_path / "out", listing) == 1
    assert cv2.imread(str(tmp_path / "out" / "sky" / "mwd_c1.jpg")).shape == (200, 320, 3)
    listing.write_text(listing.read_text() + f"sky/gone.jpg\tsomeone/weather\t{'b' * 40}\tdata/gone.jpg\n")
    with pytest.raises(SystemExit, match=r"cannot read .*data/gone.jpg \(clone someone/weather at bbbbbbbbbbbb\)"):
        rebuild(tmp_path / "clones", tmp_path / "out", listing)


def test_decoding_rule_refuses_vegetation_leaning_red_and_counts_each_limit_in_its_own_units():
    from models.choose_decoding import shortfall

    inside = {"auc_gain": 0.2, "psnr_gain": 0.1, "delta_a": 2.0, "delta_b": -2.5, "below_gray": 13,
              "colourfulness_pct": 70.0, "green_truth_a": -0.5}
    assert shortfall(inside, images=68) == 0.0
    assert shortfall({**inside, "green_truth_a": 1.5}, images=68) == pytest.approx(0.5)  # red lawns: 1.5 / 3
    assert shortfall({**inside, "green_truth_a": None}, images=68) == 0.0  # no green pixel to judge
    assert shortfall({**inside, "below_gray": 17, "delta_a": 4.5}, images=68) == pytest.approx(
        (17 - 13.6) / 13.6 + 1.5 / 3)


def test_decoding_choice_with_int8_tries_each_passing_decoding_until_its_twin_passes(tmp_path):
    from models.choose_decoding import choose_with_twin

    common, val = tiny_run(tmp_path, photos=4), tmp_path / "val"
    workdir = tmp_path / "run"
    train(*common, "--balance-weight", "0.05", "--workdir", str(workdir), "--minutes", "0.03")
    start = log_records(workdir)[0]
    assert start["event"] == "start" and start["balance_weight"] == 0.05 and start["photos"] == 4
    for folder in (val, tmp_path / "photos"):  # quantization and evaluation refuse unreadable images
        (folder / "broken.jpg").unlink()
    passing = [{"temperature": 0.38, "tilt_beta": beta, "confidence_power": 0.0, "rbauc_gain": gain,
                "shortfall": 0.0} for beta, gain in ((0.0, 1.0), (-0.1, 2.0))]
    report = {"images": 2, "candidates": passing + [{**passing[0], "tilt_beta": 0.5, "shortfall": 0.4}],
              "chosen": passing[1]}
    report = choose_with_twin(workdir / "best.pt", val, report, calibration_dir=tmp_path / "photos")
    tried = [(r["tilt_beta"], r["weights"]) for r in report["int8_tried"]]
    passed = [r for r in report["int8_tried"] if r["shortfall"] == 0]
    if passed:  # the first twin that passes decides, trying the best rebalanced AuC first
        assert report["int8"] == passed[0] and tried[-1] == (passed[0]["tilt_beta"], passed[0]["weights"])
        assert report["chosen"]["tilt_beta"] == passed[0]["tilt_beta"]
    else:  # no twin passes: every passing FP32 decoding was tried both ways, the FP32 choice stands
        assert tried == [(-0.1, "per-channel"), (-0.1, "per-tensor"), (0.0, "per-channel"), (0.0, "per-tensor")]
        assert report["int8"] is None and report["chosen"] == passing[1]
    assert all({"rbauc_gain", "delta_a", "below_gray", "shortfall"} <= set(r) for r in report["int8_tried"])


def export_for_test(net, path: Path, step: int = 7) -> Path:
    """``net`` exported as the training exports it (plain decoding, a uniform prior)."""
    from models import load_bin_centres
    from models.network import Decoding
    from models.shipped_weights import training_metadata
    from models.train import export_onnx

    centres = torch.from_numpy(load_bin_centres()).float()
    metadata = training_metadata(net.width, np.full(313, 1 / 313), step, 1.0, [{"index": 1, "end_step": step}])
    export_onnx(net, Decoding().module(centres, torch.zeros(313)), path, metadata)
    return path


def test_exported_model_runs_like_the_network_and_gives_its_weights_back(tmp_path):
    import onnx
    import onnxruntime as ort
    from models.network import ColorNet, ExportedColorizer, Decoding
    from models import load_bin_centres
    from models.shipped_weights import read_shipped_weights

    net = ColorNet(8)
    with torch.no_grad():
        for i, norm in enumerate(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
        net.context[0][1].running_var.fill_(1.0e5)  # float16 ends at 65,504
    path = export_for_test(net.eval(), tmp_path / "model.onnx")
    stored = {i.name: i.data_type for i in onnx.load(str(path)).graph.initializer}
    assert stored["net.context.0.0.weight.float16"] == onnx.TensorProto.FLOAT16  # large weights: float16
    assert stored["net.context.0.1.running_var"] == onnx.TensorProto.FLOAT  # statistics: float32

    shipped = read_shipped_weights(path)
    assert shipped.width == 8 and shipped.step == 7 and shipped.continuations == [{"index": 1, "end_step": 7}]
    assert np.array_equal(shipped.state_dict["context.0.1.running_var"], net.context[0][1].running_var.numpy())
    weight = net.context[0][0].weight.detach().numpy()
    assert np.array_equal(shipped.state_dict["context.0.0.weight"], weight.astype(np.float16).astype(np.float32))
    from models.choose_decoding import load_weights  # the decoding choice starts from the same file
    loaded, prior, info = load_weights(path)
    assert info == {"step": 7, "width": 8} and prior == pytest.approx(np.full(313, 1 / 313), rel=1e-5)
    assert torch.equal(loaded.context[0][1].running_var, net.context[0][1].running_var)

    x = np.random.default_rng(0).uniform(-50, 50, (2, 1, 224, 224)).astype(np.float32)
    centres = torch.from_numpy(load_bin_centres()).float()
    with torch.no_grad():
        expected = ExportedColorizer(net, Decoding().module(centres, torch.zeros(313)))(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"l_minus_50": x})[0]
    assert got.shape == (2, 2, 56, 56) and np.abs(got - expected).max() < 0.5


def test_a_model_that_cannot_seed_training_is_refused_in_one_line(tmp_path, capsys):
    from models.network import ColorNet
    from models.train import main

    common = [*tiny_run(tmp_path), "--workdir", str(tmp_path / "run"), "--minutes", "0"]
    wider = export_for_test(ColorNet(16).eval(), tmp_path / "wider.onnx")
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("not a model")
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Conv2d(1, 2, 3).eval(), torch.zeros(1, 1, 8, 8), str(foreign), dynamo=False)
    expected = {
        wider: f"error: --width 8: {wider} holds a width-16 network",
        not_onnx: f"error: --init-from {not_onnx}: not an ONNX model",
        foreign: (f"error: --init-from {foreign}: it cannot seed training: it lacks the metadata width, "
                  "training_prior, steps, train_seconds, continuations (only a model exported by python -m "
                  "models.train --export can)"),
        tmp_path / "absent.onnx": f"error: --init-from {tmp_path / 'absent.onnx'}: cannot read it (No such file or "
                                  "directory)"}
    for source, message in expected.items():
        capsys.readouterr()
        assert main([*common, "--init-from", str(source)]) == 2
        assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "run").exists()

    assert main([*common, "--val", str(tmp_path / "no_such_folder")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --val {tmp_path / 'no_such_folder'}: no validation photos there (the folder is missing or holds no "
        "readable image); every validation, the best weights and the batch-norm estimate need them")
    assert main(["--workdir", str(tmp_path / "run"), "--export", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --export: {tmp_path / 'run'} holds no best.pt or checkpoint.pt to export"
    assert not (tmp_path / "run").exists() and not (tmp_path / "m.onnx").exists()


def test_a_workdir_holding_only_best_weights_exports_at_their_width(tmp_path):
    from models.network import ColorNet
    from models.shipped_weights import read_shipped_weights

    workdir = tmp_path / "from_device"  # what comes back from the device machine: best.pt alone
    workdir.mkdir()
    state = {"step": 9, "seconds": 2.0, "continuations": [], "current": None}
    torch.save({"ema": ColorNet(16).state_dict(), "state": state, "prior": np.full(313, 1 / 313)}, workdir / "best.pt")
    train("--workdir", str(workdir), "--export", str(tmp_path / "m.onnx"))
    assert read_shipped_weights(tmp_path / "m.onnx").width == 16


def test_validation_gives_the_averaged_weights_batch_norm_statistics_of_their_own(tmp_path, capsys):
    from models.network import ColorNet
    from models.train import batchnorm_statistics_finite, main

    broken = ColorNet(8)
    broken.dec2[1].running_var[3] = float("inf")  # what float16 once made of a variance above 65,504
    export_for_test(broken, tmp_path / "broken.onnx", step=5)
    workdir = tmp_path / "run"
    common = [*tiny_run(tmp_path), "--workdir", str(workdir)]
    train(*common, "--init-from", str(tmp_path / "broken.onnx"), "--minutes", "0")
    records = log_records(workdir)
    assert [r["event"] for r in records] == ["start", "validation", "continuation_end"]
    assert records[1]["step"] == 5 and records[-1]["total_steps"] == 5 and np.isfinite(records[1]["auc_gain"])
    net = ColorNet(8)
    net.load_state_dict(torch.load(workdir / "best.pt", weights_only=False)["ema"])
    assert batchnorm_statistics_finite(net)
    assert not torch.equal(net.dec2[1].running_mean, broken.dec2[1].running_mean)

    checkpoint = torch.load(workdir / "checkpoint.pt", weights_only=False)
    checkpoint["state"]["best_val"] = {"score": 99.0, "step": 5}  # as validated before statistics were estimated
    torch.save(checkpoint, workdir / "checkpoint.pt")
    capsys.readouterr()
    train(*common, "--minutes", "0")
    assert ("the best validation so far (step 5) used the live network's batch-norm statistics, so it is not "
            "comparable; the next validation becomes the best") in capsys.readouterr().out
    assert torch.load(workdir / "checkpoint.pt", weights_only=False)["state"]["best_val"]["score"] < 99.0

    best = torch.load(workdir / "best.pt", weights_only=False)
    best["ema"]["dec2.1.running_var"][3] = float("inf")
    torch.save(best, workdir / "best.pt")
    assert main(["--workdir", str(workdir), "--export", str(tmp_path / "m.onnx")]) == 1
    assert not (tmp_path / "m.onnx").exists()
    assert capsys.readouterr().err.strip() == (
        f"error: {workdir / 'best.pt'} has batch-norm statistics that are not finite (saved before they were "
        "estimated); --minutes 0 on this workdir estimates them for its latest EMA weights, which then become "
        "its best")


def test_training_with_loader_processes_runs_resumes_and_refuses_a_missing_gpu(tmp_path, capsys):
    from models.train import main

    common = [*tiny_run(tmp_path), "--workdir", str(tmp_path / "run"), "--loaders", "2"]
    train(*common, "--minutes", "0.05")
    train(*common, "--minutes", "0.05")
    ends = [r for r in log_records(tmp_path / "run") if r["event"] == "continuation_end"]
    assert [e["index"] for e in ends] == [1, 2] and ends[1]["total_steps"] > ends[0]["total_steps"] > 0

    if not torch.cuda.is_available():
        capsys.readouterr()
        assert main([*common, "--device", "cuda", "--minutes", "0.05"]) == 2
        assert capsys.readouterr().err.strip() == (
            "error: --device cuda: this PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)")


def test_device_carry_fits_the_device_tree_and_the_device_script_trains_from_it(tmp_path):
    import os
    import subprocess

    from models.device_carry import write_carry

    repo = Path(__file__).resolve().parents[1]
    pack = tmp_path / "pack"
    build_pack(write_photos(tmp_path / "photos", 6), pack, side=96)
    work = tmp_path / "checkout"
    written = write_carry(pack, write_photos(tmp_path / "val", 2), work / "carry", side=80, quality=75)
    assert len(list((work / "carry/train").glob("*.webp"))) == 6 and len(list((work / "carry/val").glob("*.webp"))) == 2
    assert written == sum(p.stat().st_size for p in (work / "carry").rglob("*.webp"))

    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "DEVICE": "cpu", "MINUTES": "0.05", "BATCH": "2", "LOADERS": "1", "INIT": "",
           "PYTHONPATH": str(repo)}
    run = subprocess.run(["bash", str(repo / "models/device_train.sh"), "--crop", "64", "--width", "8",
                          "--precision", "fp32", "--threads", "1"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert {"best.pt", "train_log.jsonl"} <= {p.name for p in (out / "run").iterdir()} and (out / "stdout.log").exists()
    records = log_records(out / "run")
    assert records[-1]["event"] == "continuation_end" and records[-1]["total_steps"] > 0
    assert np.load(work / "runs/pack/photos.npy").shape == (6, 80, 80, 3)
