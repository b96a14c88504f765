"""Choose how the trained model's bin scores are decoded, on validation photos only.

    python -m models.choose_decoding runs/default/best.pt [--val DIR] [--json report.json]

The network is run once per validation photo; each candidate decoding (annealed-mean temperature
T, tilt β·log(prior), entropy shrink γ; :class:`models.network.Decoding`) is then scored per image
(:class:`models.evaluate.PerImageSummary`) and the upsampling ('guided' or 'bilinear') is compared
on the chosen decoding. The rule is fixed in advance, from the quality targets: a candidate must
keep plain AuC no more than 1 point and PSNR no more than 0.5 dB below grayscale, a colour cast
(|mean Δa*|, |mean Δb*|) ≤ 3, at most 1 image in 5 below grayscale on rebalanced AuC and a
colourfulness of 60–110 % of the ground truth's; among those the highest rebalanced AuC wins.
When none passes, the candidate with the smallest summed shortfall (each in units of its limit) wins.
Needs PyTorch. Prints one line per candidate and the choice; exits 0.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from models import load_bin_centres
from models.network import ColorNet, Decoding
from models.train import DEFAULT_VAL, decoded_figures, load_validation, log_prior_tensor, validation_logits
from stream.config import ColourSettings

TEMPERATURES = (0.38, 0.5, 0.6)
TILT_BETAS = (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7)  # < 0 strengthens rare, saturated colours; > 0 weakens them
CONFIDENCE_POWERS = (0.0, 0.25)


def shortfall(figures: dict, images: int) -> float:
    """How far validation figures (:meth:`PerImageSummary.brief`) are outside the hard limits; 0 = inside."""
    over = [max(0.0, -1.0 - figures["auc_gain"]) / 1.0,
            max(0.0, -0.5 - figures["psnr_gain"]) / 0.5,
            max(0.0, abs(figures["delta_a"]) - 3.0) / 3.0,
            max(0.0, abs(figures["delta_b"]) - 3.0) / 3.0,
            max(0.0, figures["below_gray"] - images / 5) / (images / 5),
            max(0.0, 60.0 - figures["colourfulness_pct"]) / 60.0,
            max(0.0, figures["colourfulness_pct"] - 110.0) / 110.0]
    return float(sum(over))


def load_weights(path: Path) -> tuple[ColorNet, np.ndarray, dict]:
    """A ColorNet with the EMA weights of a training ``best.pt`` / ``checkpoint.pt`` or shipped ``.pt``;
    returns (net, prior, info)."""
    data = torch.load(path, weights_only=False)
    weights = data.get("ema") or data["net"]
    width = data.get("width", 32)
    net = ColorNet(width)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    step = data["state"]["step"] if "state" in data else data["step"]
    return net.eval(), data["prior"], {"step": step, "width": width}


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.choose_decoding", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", type=Path, help="best.pt / checkpoint.pt of a training workdir, or shipped weights")
    ap.add_argument("--val", type=Path, default=DEFAULT_VAL, help="validation photos (default: shared CBSD68)")
    ap.add_argument("--json", type=Path, help="write every candidate's figures and the choice here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    report = choose(args.weights, args.val)
    chosen = report["chosen"]
    print(f"chosen: --temperature {chosen['temperature']} --tilt-beta {chosen['tilt_beta']} "
          f"--confidence-power {chosen['confidence_power']} (shortfall {chosen['shortfall']})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
