"""Train the embedded colorization model with the reference method of Zhang et al. (ECCV 2016).

    python -m models.train --data ../shared/data/train --workdir runs/default --minutes 90
    python -m models.train --workdir runs/default --export models/default.onnx   # export only

Method, as in the paper:
  * classification over the 313 in-gamut ab bins;
  * soft-encoded targets: each pixel's ab spread over its 5 nearest bins with a Gaussian (σ = 5);
  * class rebalancing: the empirical bin distribution of the training set, smoothed with a
    Gaussian (σ = 5) and mixed with uniform (λ = 0.5), inverted and normalised to mean 1;
  * decoded with the annealed mean (T = 0.38) inside the exported ONNX graph.

Deterministic from ``--seed`` (data order, crops, initial weights). A checkpoint is written to
``WORKDIR/checkpoint.pt`` every few minutes and at the end; running the same command again resumes
from it, so a long training can span sessions. Needs PyTorch (``pip install .[train]``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models import ANNEAL_T, NUM_BINS, load_bin_centres
from models.network import ColorNet, ExportedColorizer

SOFT_NEIGHBOURS = 5
SOFT_SIGMA = 5.0
REBALANCE_SIGMA = 5.0
REBALANCE_LAMBDA = 0.5
AB_GRID_OFFSET = 128  # LUT index = round(ab) + 128, ab in [-128, 127]
STORE_SHORT_SIDE = 256
OUTPUT_STRIDE = 4


def load_training_images(data_dir: Path, short_side: int = STORE_SHORT_SIDE) -> list[np.ndarray]:
    """All colour images under ``data_dir`` as RGB uint8, resized so the shorter side is ``short_side``."""
    paths = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not paths:
        raise SystemExit(f"error: no training images (*.jpg, *.png) under {data_dir}")
    images = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        h, w = bgr.shape[:2]
        scale = short_side / min(h, w)
        bgr = cv2.resize(bgr, (max(short_side, round(w * scale)), max(short_side, round(h * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return images


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 H×W×3 → Lab float32 (OpenCV convention: L 0..100, a and b about −128..127)."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def soft_encoding_table(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every integer (a, b) in [−128, 127]²: its 5 nearest bins and their Gaussian weights.

    Returns (indices int64 256×256×5, weights float32 256×256×5), indexed by ab + 128.
    """
    grid = np.arange(-AB_GRID_OFFSET, 256 - AB_GRID_OFFSET, dtype=np.float32)
    ab = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    d2 = ((ab[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    nearest = np.argpartition(d2, SOFT_NEIGHBOURS, axis=1)[:, :SOFT_NEIGHBOURS]
    nd2 = np.take_along_axis(d2, nearest, axis=1)
    weights = np.exp(-(nd2 - nd2.min(1, keepdims=True)) / (2 * SOFT_SIGMA ** 2))
    weights /= weights.sum(1, keepdims=True)
    return (nearest.reshape(256, 256, SOFT_NEIGHBOURS).astype(np.int64),
            weights.reshape(256, 256, SOFT_NEIGHBOURS).astype(np.float32))


def nearest_bin_table(centres: np.ndarray) -> np.ndarray:
    """Nearest bin (int64) for every integer (a, b), indexed by ab + 128: 256×256."""
    grid = np.arange(-AB_GRID_OFFSET, 256 - AB_GRID_OFFSET, dtype=np.float32)
    ab = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    d2 = ((ab[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return d2.argmin(1).reshape(256, 256).astype(np.int64)


def ab_to_grid_index(ab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ab float (..., 2) → integer LUT coordinates (a + 128, b + 128), clipped to the table."""
    idx = np.clip(np.rint(ab).astype(np.int64) + AB_GRID_OFFSET, 0, 255)
    return idx[..., 0], idx[..., 1]


def rebalancing_weights(images: list[np.ndarray], centres: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """Per-bin loss weights (float32, 313) from the training set's smoothed ab distribution."""
    counts = np.zeros(NUM_BINS, dtype=np.float64)
    for rgb in images:
        small = cv2.resize(rgb, (rgb.shape[1] // OUTPUT_STRIDE, rgb.shape[0] // OUTPUT_STRIDE),
                           interpolation=cv2.INTER_AREA)
        ia, ib = ab_to_grid_index(rgb_to_lab(small)[..., 1:])
        counts += np.bincount(nearest[ia, ib].ravel(), minlength=NUM_BINS)
    p = counts / counts.sum()
    d2 = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    kernel = np.exp(-d2 / (2 * REBALANCE_SIGMA ** 2))
    p_smooth = kernel @ p
    p_smooth /= p_smooth.sum()
    w = 1.0 / ((1 - REBALANCE_LAMBDA) * p_smooth + REBALANCE_LAMBDA / NUM_BINS)
    w /= (p_smooth * w).sum()
    return w.astype(np.float32)


class BatchSampler:
    """Random-resized crops with horizontal flips, as (L − 50 input, soft target, pixel weight)."""

    def __init__(self, images, crop: int, soft_idx, soft_w, nearest, bin_weights, rng: np.random.Generator):
        self.images, self.crop, self.rng = images, crop, rng
        self.soft_idx, self.soft_w, self.nearest, self.bin_weights = soft_idx, soft_w, nearest, bin_weights

    def sample(self, batch: int):
        c, o = self.crop, self.crop // OUTPUT_STRIDE
        x = np.empty((batch, 1, c, c), np.float32)
        idx = np.empty((batch, SOFT_NEIGHBOURS, o, o), np.int64)
        wts = np.empty((batch, SOFT_NEIGHBOURS, o, o), np.float32)
        pix_w = np.empty((batch, o, o), np.float32)
        for i in range(batch):
            rgb = self.images[self.rng.integers(len(self.images))]
            h, w = rgb.shape[:2]
            side = int(self.rng.uniform(0.55, 1.0) * min(h, w))
            y0, x0 = self.rng.integers(h - side + 1), self.rng.integers(w - side + 1)
            patch = cv2.resize(rgb[y0:y0 + side, x0:x0 + side], (c, c), interpolation=cv2.INTER_AREA)
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            lab = rgb_to_lab(np.ascontiguousarray(patch))
            x[i, 0] = lab[..., 0] - 50.0
            ab_small = cv2.resize(lab[..., 1:], (o, o), interpolation=cv2.INTER_AREA)
            ia, ib = ab_to_grid_index(ab_small)
            idx[i] = self.soft_idx[ia, ib].transpose(2, 0, 1)
            wts[i] = self.soft_w[ia, ib].transpose(2, 0, 1)
            pix_w[i] = self.bin_weights[self.nearest[ia, ib]]
        return torch.from_numpy(x), torch.from_numpy(idx), torch.from_numpy(wts), torch.from_numpy(pix_w)


def rebalanced_soft_ce(logits: torch.Tensor, idx: torch.Tensor, wts: torch.Tensor, pix_w: torch.Tensor) -> torch.Tensor:
    """Multinomial cross-entropy against soft targets, each pixel weighted by its bin's rarity."""
    logp = F.log_softmax(logits, dim=1)
    per_pixel = -(torch.gather(logp, 1, idx) * wts).sum(1)
    return (per_pixel * pix_w).mean()


def export_onnx(net: ColorNet, centres: np.ndarray, path: Path, metadata: dict[str, str]) -> None:
    """Write the network + annealed mean as ONNX: l_minus_50 N×1×224×224 → ab N×2×56×56."""
    import onnx

    model = ExportedColorizer(net, torch.from_numpy(centres)).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(model, torch.zeros(1, 1, 224, 224), str(tmp), input_names=["l_minus_50"],
                      output_names=["ab"], dynamic_axes={"l_minus_50": {0: "N"}, "ab": {0: "N"}},
                      opset_version=17, dynamo=False)
    proto = onnx.load(str(tmp))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    tmp.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data/train")
    ap.add_argument("--workdir", type=Path, default=Path("runs/default"))
    ap.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this invocation")
    ap.add_argument("--steps", type=int, default=30000, help="planned total steps (sets the LR schedule)")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--crop", type=int, default=176)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--export", type=Path, help="export the checkpoint to this ONNX path and exit")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    centres = load_bin_centres()
    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.workdir / "checkpoint.pt"

    net = ColorNet(args.width)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    state = {"step": 0, "seconds": 0.0, "rng": None, "log": []}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        net.load_state_dict(ckpt["net"])
        opt.load_state_dict(ckpt["opt"])
        state = ckpt["state"]
        print(f"resumed from {ckpt_path} at step {state['step']}", flush=True)

    if args.export:
        net.eval()
        meta = {"architecture": f"ColorNet(width={args.width})", "steps": str(state["step"]),
                "train_seconds": f"{state['seconds']:.0f}", "anneal_t": str(ANNEAL_T),
                "contract": "l_minus_50 N×1×224×224 (L−50) → ab N×2×56×56"}
        export_onnx(net, centres, args.export, meta)
        print(f"exported step {state['step']} to {args.export}")
        return 0

    t0 = time.time()
    images = load_training_images(args.data)
    soft_idx, soft_w = soft_encoding_table(centres)
    nearest = nearest_bin_table(centres)
    weights_file = args.workdir / "bin_weights.npy"
    if weights_file.exists():
        bin_weights = np.load(weights_file)
    else:
        bin_weights = rebalancing_weights(images, centres, nearest)
        np.save(weights_file, bin_weights)
    print(f"{len(images)} images loaded, tables ready in {time.time() - t0:.0f} s", flush=True)

    rng = np.random.default_rng(args.seed)
    if state["rng"] is not None:
        rng.bit_generator.state = state["rng"]
    sampler = BatchSampler(images, args.crop, soft_idx, soft_w, nearest, bin_weights, rng)

    def save() -> None:
        state["rng"] = rng.bit_generator.state
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "state": state, "args": vars(args)}, tmp)
        tmp.replace(ckpt_path)

    net.train()
    run_start = start = last_save = time.time()
    running = None
    while state["step"] < args.steps and time.time() - run_start < args.minutes * 60:
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, state["step"] / args.steps)))
        warm = min(1.0, (state["step"] + 1) / 300)
        for group in opt.param_groups:
            group["lr"] = lr * warm
        x, idx, wts, pix_w = sampler.sample(args.batch)
        loss = rebalanced_soft_ce(net(x), idx, wts, pix_w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if state["step"] % 50 == 0:
            elapsed = state["seconds"] + time.time() - start
            state["log"].append((state["step"], round(elapsed), round(running, 4)))
            print(json.dumps({"step": state["step"], "loss": round(running, 4), "lr": round(lr, 6),
                              "minutes": round(elapsed / 60, 1)}), flush=True)
        if time.time() - last_save > 180:
            state["seconds"] += time.time() - start
            start = time.time()
            save()
            last_save = time.time()
    state["seconds"] += time.time() - start
    save()
    print(f"stopped at step {state['step']} after {state['seconds'] / 60:.1f} min of training", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
