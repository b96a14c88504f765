"""Choose how the trained model's bin scores are decoded, on validation photos only.

    python -m models.choose_decoding runs/default/best.pt|MODEL.onnx [--val DIR] [--json report.json] [--int8]

The network is run once per validation photo; each candidate decoding (annealed-mean temperature
T, tilt β·log(prior), entropy shrink γ; :class:`models.network.Decoding`) is then scored per image
(:class:`models.evaluate.PerImageSummary`) and the upsampling ('guided' or 'bilinear') is compared
on the chosen decoding. The rule is fixed in advance, from the quality targets: a candidate must
keep plain AuC no more than 1 point and PSNR no more than 0.5 dB below grayscale, a colour cast
(|mean Δa*|, |mean Δb*|) ≤ 3, at most 1 image in 5 below grayscale on rebalanced AuC and a
colourfulness of 60–110 % of the ground truth's, and where the truth is green (vegetation) our mean
a* ≤ 0 (green or neutral, never leaning red: the issue's film target, seen on validation photos);
among those the highest rebalanced AuC wins.
When none passes, the candidate with the smallest summed shortfall (each in units of its limit) wins.
With ``--int8`` a candidate must also pass as its INT8 twin (the issue allows INT8 only where it
meets every target, and ``inference.precision: auto`` runs the twin on CPUs with 8-bit dot
products): passing candidates are exported, quantized with per-channel and with per-tensor weight
scales (:func:`models.quantize.quantize_model`, default calibration) and scored with
``colorize evaluate``'s code, best rebalanced AuC first; the first whose twin passes wins, with the
weight scaling that passed (per-channel preferred).
Needs PyTorch. Prints one line per candidate and the choice; exits 0.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from models import load_bin_centres
from models.network import ColorNet, Decoding
from models.shipped_weights import ShippedWeightsError, read_shipped_weights
from models.train import (CAST_BOUND, DEFAULT_VAL, cast_excess, decoded_figures, load_validation, log_prior_tensor,
                          network_from_shipped, validation_logits)
from stream.config import ColourSettings

TEMPERATURES = (0.38, 0.5, 0.6)
TILT_BETAS = (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7)  # < 0 strengthens rare, saturated colours; > 0 weakens them
CONFIDENCE_POWERS = (0.0, 0.25)
GREEN_TRUTH_A_LIMIT = 0.0  # our mean a* where the truth is green: above it, vegetation leans red


def shortfall(figures: dict, images: int) -> float:
    """How far validation figures (:meth:`PerImageSummary.brief`) are outside the hard limits; 0 = inside.
    A validation set without green pixels (``green_truth_a`` None) is not held to the vegetation limit."""
    green_a = figures["green_truth_a"]
    over = [max(0.0, -1.0 - figures["auc_gain"]) / 1.0,
            max(0.0, -0.5 - figures["psnr_gain"]) / 0.5,
            cast_excess(figures) / CAST_BOUND,
            max(0.0, figures["below_gray"] - images / 5) / (images / 5),
            max(0.0, 60.0 - figures["colourfulness_pct"]) / 60.0,
            max(0.0, figures["colourfulness_pct"] - 110.0) / 110.0,
            max(0.0, green_a - GREEN_TRUTH_A_LIMIT) / CAST_BOUND if green_a is not None else 0.0]
    return float(sum(over))


def load_weights(path: Path) -> tuple[ColorNet, np.ndarray, dict]:
    """A ColorNet with the EMA weights of a training ``best.pt`` / ``checkpoint.pt``, or the weights of
    an exported model (``.onnx``); returns (net, prior, info). Exits with one line when an ONNX file
    cannot seed a network (:class:`models.shipped_weights.ShippedWeightsError`)."""
    if path.suffix.lower() == ".onnx":
        try:
            shipped = read_shipped_weights(path)
            net = network_from_shipped(shipped, path)
        except ShippedWeightsError as exc:
            raise SystemExit(f"error: {exc}") from None
        return net.eval(), shipped.prior, {"step": shipped.step, "width": shipped.width}
    try:
        data = torch.load(path, weights_only=False, map_location="cpu")
    except OSError as exc:
        raise SystemExit(f"error: {path}: cannot read it ({exc.strerror or exc})") from None
    except Exception:  # pickle and zip errors: not a training file
        data = None
    if not isinstance(data, dict) or "ema" not in data:
        raise SystemExit(f"error: {path}: not a training best.pt / checkpoint.pt, nor an exported .onnx")
    width = ColorNet.width_of(data["ema"])
    net = ColorNet(width)
    net.load_state_dict(data["ema"])
    return net.eval(), data["prior"], {"step": data["state"]["step"], "width": width}


def choose(weights: Path, val_dir: Path) -> dict:
    """Score every candidate on ``val_dir``; returns {"candidates": [...], "chosen": {...}, "upsampling": [...]}."""
    net, prior, info = load_weights(weights)
    images = load_validation(val_dir)
    if not images:
        raise SystemExit(f"error: no validation images in {val_dir}")
    centres = torch.from_numpy(load_bin_centres())
    log_prior = log_prior_tensor(prior, load_bin_centres())
    logits = validation_logits(net, [rgb for _, rgb in images])

    def figures_of(decoding: Decoding, colour: ColourSettings) -> dict:
        return decoded_figures(logits, images, decoding.module(centres, log_prior), colour)

    candidates = []
    for t, beta, gamma in itertools.product(TEMPERATURES, TILT_BETAS, CONFIDENCE_POWERS):
        decoding = Decoding(t, beta, gamma)
        figures = figures_of(decoding, ColourSettings(upsampling="bilinear"))
        record = {"temperature": t, "tilt_beta": beta, "confidence_power": gamma, **figures,
                  "shortfall": round(shortfall(figures, len(images)), 3)}
        candidates.append(record)
        print(json.dumps(record), flush=True)
    passing = [c for c in candidates if c["shortfall"] == 0]
    best = (max(passing, key=lambda c: c["rbauc_gain"]) if passing
            else min(candidates, key=lambda c: (c["shortfall"], -c["rbauc_gain"])))
    decoding = Decoding(best["temperature"], best["tilt_beta"], best["confidence_power"])
    upsampling = [{"upsampling": mode, **figures_of(decoding, ColourSettings(upsampling=mode))}
                  for mode in ("bilinear", "guided")]
    for record in upsampling:
        print(json.dumps(record), flush=True)
    return {"weights": str(weights), **info, "images": len(images), "candidates": candidates,
            "chosen": best, "upsampling": upsampling}


def twin_figures(net: ColorNet, prior: np.ndarray, decoding: Decoding, val_dir: Path, work: Path,
                 per_channel: bool, calibration_dir: Path | None = None) -> dict:
    """Validation figures (:meth:`PerImageSummary.brief`) of the INT8 twin of ``net`` decoded by
    ``decoding``, quantized as ``colorize quantize`` does (``per_channel`` weight scales or one per
    tensor; calibrated on ``calibration_dir``, by default the tool's)."""
    from models.evaluate import evaluate_images
    from models.quantize import DEFAULT_CALIBRATION_DIR, QuantizeSettings, quantize_model
    from models.train import export_onnx

    centres = load_bin_centres()
    float_model, twin = work / "float.onnx", work / "int8.onnx"
    export_onnx(net, decoding.module(torch.from_numpy(centres), log_prior_tensor(prior, centres)), float_model, {})
    quantize_model(float_model, twin, calibration_dir or DEFAULT_CALIBRATION_DIR,
                   settings=QuantizeSettings(per_channel=per_channel))
    return evaluate_images(twin, val_dir).per_image.brief()


def choose_with_twin(weights: Path, val_dir: Path, report: dict, calibration_dir: Path | None = None) -> dict:
    """Re-choose among the passing candidates of ``report`` (from :func:`choose`) so that the INT8
    twin passes too; adds "int8" (the passing twin's figures and weight scaling, or None when no twin
    passes and the FP32 choice stands) and "int8_tried" (every twin scored) to the report and returns it."""
    net, prior, _ = load_weights(weights)
    images = report["images"]
    passing = sorted((c for c in report["candidates"] if c["shortfall"] == 0), key=lambda c: -c["rbauc_gain"])
    report["int8"], report["int8_tried"] = None, []
    with tempfile.TemporaryDirectory(prefix="choose-int8-") as work:
        for candidate in passing:
            decoding = Decoding(candidate["temperature"], candidate["tilt_beta"], candidate["confidence_power"])
            for per_channel in (True, False):
                figures = twin_figures(net, prior, decoding, val_dir, Path(work), per_channel, calibration_dir)
                record = {"temperature": decoding.temperature, "tilt_beta": decoding.tilt_beta,
                          "confidence_power": decoding.confidence_power,
                          "weights": "per-channel" if per_channel else "per-tensor", **figures,
                          "shortfall": round(shortfall(figures, images), 3)}
                print(json.dumps({"int8": record}), flush=True)
                report["int8_tried"].append(record)
                if record["shortfall"] == 0:
                    report["chosen"], report["int8"] = candidate, record
                    return report
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.choose_decoding", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", type=Path, help="best.pt / checkpoint.pt of a training workdir, or an exported model (.onnx)")
    ap.add_argument("--val", type=Path, default=DEFAULT_VAL, help="validation photos (default: shared CBSD68)")
    ap.add_argument("--json", type=Path, help="write every candidate's figures and the choice here")
    ap.add_argument("--int8", action="store_true", help="the INT8 twin of the chosen decoding must pass too")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    report = choose(args.weights, args.val)
    if args.int8:
        report = choose_with_twin(args.weights, args.val, report)
    chosen = report["chosen"]
    print(f"chosen: --temperature {chosen['temperature']} --tilt-beta {chosen['tilt_beta']} "
          f"--confidence-power {chosen['confidence_power']} (shortfall {chosen['shortfall']})")
    if args.int8:
        twin = report["int8"]
        print("INT8 twin: none passes; the FP32 choice stands" if twin is None else
              f"INT8 twin: quantize with {twin['weights']} weight scales"
              f"{' (--per-tensor)' if twin['weights'] == 'per-tensor' else ''}, shortfall 0")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
