"""Train the embedded colorization model (Zhang et al., ECCV 2016 method), resumably, across sessions.

    python -m models.training_pack ../shared/data/train runs/pack          # once: decode the photos
    python -m models.train --pack runs/pack --workdir runs/default --minutes 150 \\
        --init-from models/default.onnx                                    # one continuation
    python -m models.train --workdir runs/default --export models/default.onnx \\
        --temperature T --tilt-beta B --confidence-power G                 # ship, decoding from choose_decoding

Method:
  * classification over the 313 in-gamut ab bins, soft-encoded targets (each pixel's ab spread
    over its 5 nearest bins with a Gaussian, σ = 5), as in the paper;
  * class rebalancing at half the paper's strength: the paper's weights (smoothed prior mixed with
    uniform, λ = 0.5, inverted) raised to ``--rebalance-power`` (0.5). Full strength tilts the
    predicted distribution toward rare, saturated bins, which showed as a red cast on validation
    (``../shared/findings/colour-decoding.md``); what is left of the tilt is undone at decoding by
    a tilt chosen on validation (``models.choose_decoding``);
  * inputs: random resized crops (35–100 % of the stored square, aspect 3:4–4:3) with flips; with
    probability ``--film-prob`` the input lightness is that of old film: recorded with a random
    orthochromatic or panchromatic film stock's sensitivity (3 in 4 of them) and degraded
    (:mod:`models.film_augment`; the target colour is always the clean photo's), and with
    probability 0.15 the crop gets black letterbox or pillarbox bars;
  * optionally a colour-balance term (``--balance-weight``, off by default; 0.05 tried): the Huber
    distance (ab units) between each crop's mean annealed-mean ab (T = 0.38) and its photo's mean
    ab, the per-image cast made a loss. It keeps the cast on training photos within ±0.7, but did
    not stop the validation cast drifting in continuations (``models/training_log.jsonl``);
  * AdamW, cosine learning-rate decay over the continuation's wall-clock budget after a 200-step
    warm-up; an exponential moving average (EMA, 0.999) of the weights is what gets validated and
    shipped. Averaged weights need batch-norm statistics of their own: before each validation
    they are estimated on 1,600 whole training photos at 224×224 (as the pipeline feeds the model;
    film degradations with ``--film-prob``), and that network is what gets scored, kept as best and
    exported (``--last`` exports the last EMA weights with the statistics of the last validation); bfloat16 autocast on CPUs with native bfloat16 (on this AVX-512 BF16 CPU a step
    takes 0.58× the float32 time; channels-last was no faster).

Resumable: ``WORKDIR/checkpoint.pt`` (weights, EMA, optimiser, sampler state, the continuation's
elapsed time) is written every few minutes and at the end; the same command resumes an interrupted
continuation where it stopped (with the ``--minutes`` given then as its whole budget). A finished continuation followed by another command starts a new one
from the EMA weights (a warm restart of the learning rate and optimiser). ``--init-from`` seeds a
fresh workdir from an exported model (the ONNX file carries its weights, prior and history:
:mod:`models.shipped_weights`), so training continues from the last committed model. Every
continuation appends its step count, hours and validation figures to ``WORKDIR/train_log.jsonl``.
``--device cuda`` trains on an NVIDIA GPU (bfloat16 autocast there too) and ``--loaders N`` cuts
crops in N worker processes, which a GPU needs to be kept busy (``models/device_train.sh`` runs
both on the device machine). Needs PyTorch (``pip install .[train]``).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models import ANNEAL_T, NUM_BINS, load_bin_centres, smoothed_histogram
from models.film_augment import FILM_STOCK_PROBABILITY, black_bars, film_lightness
from models.network import DEFAULT_WIDTH, AnnealedMean, ColorNet, Decoding, ExportedColorizer
from models.shipped_weights import (ShippedWeights, ShippedWeightsError, read_shipped_weights,
                                    store_large_floats_as_float16, training_metadata)
from models.training_pack import load_pack
from stages.lab import model_input
from stream.config import ColourSettings

SOFT_NEIGHBOURS = 5
SOFT_SIGMA = 5.0
REBALANCE_SIGMA = 5.0
REBALANCE_LAMBDA = 0.5
AB_GRID_OFFSET = 128  # LUT index = round(ab) + 128, ab in [-128, 127]
OUTPUT_STRIDE = 4
WARMUP_STEPS = 200
BARS_PROBABILITY = 0.15
EMA_DECAY = 0.999
SAVE_EVERY_S = 240
CAST_BOUND = 3.0
BN_CALIBRATION_PHOTOS = 1600
MODEL_SIDE = 224
DEFAULT_VAL = Path(__file__).resolve().parents[2] / "shared/data/val/cbsd68"


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 H×W×3 → Lab float32 (OpenCV convention: L 0..100, a and b about −128..127)."""
    return cv2.cvtColor(rgb.astype(np.float32) * np.float32(1.0 / 255.0), cv2.COLOR_RGB2LAB)


def _ab_grid() -> np.ndarray:
    grid = np.arange(-AB_GRID_OFFSET, 256 - AB_GRID_OFFSET, dtype=np.float32)
    return np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)


def soft_encoding_table(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every integer (a, b) in [−128, 127]²: its 5 nearest bins and their Gaussian weights.

    Returns (indices int64 256×256×5, weights float32 256×256×5), indexed by ab + 128.
    """
    d2 = ((_ab_grid()[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    nearest = np.argpartition(d2, SOFT_NEIGHBOURS, axis=1)[:, :SOFT_NEIGHBOURS]
    nd2 = np.take_along_axis(d2, nearest, axis=1)
    weights = np.exp(-(nd2 - nd2.min(1, keepdims=True)) / (2 * SOFT_SIGMA ** 2))
    weights /= weights.sum(1, keepdims=True)
    return (nearest.reshape(256, 256, SOFT_NEIGHBOURS).astype(np.int64),
            weights.reshape(256, 256, SOFT_NEIGHBOURS).astype(np.float32))


def nearest_bin_table(centres: np.ndarray) -> np.ndarray:
    """Nearest bin (int64) for every integer (a, b), indexed by ab + 128: 256×256."""
    d2 = ((_ab_grid()[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return d2.argmin(1).reshape(256, 256).astype(np.int64)


def ab_to_grid_index(ab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ab float (..., 2) → integer LUT coordinates (a + 128, b + 128), clipped to the table."""
    idx = np.clip(np.rint(ab).astype(np.int64) + AB_GRID_OFFSET, 0, 255)
    return idx[..., 0], idx[..., 1]


def ab_prior(photos: np.ndarray, nearest: np.ndarray, sample: int = 2000, seed: int = 0) -> np.ndarray:
    """Empirical distribution (float64, 313, sums to 1) of the photos' ab over the bins, at 1/4 scale.

    Counted on ``sample`` photos drawn without replacement (all if fewer).
    """
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(photos), size=min(sample, len(photos)), replace=False)
    counts = np.zeros(NUM_BINS, np.float64)
    for i in sorted(chosen):
        rgb = np.asarray(photos[i])
        small = cv2.resize(rgb, (rgb.shape[1] // OUTPUT_STRIDE, rgb.shape[0] // OUTPUT_STRIDE),
                           interpolation=cv2.INTER_AREA)
        ia, ib = ab_to_grid_index(rgb_to_lab(small)[..., 1:])
        counts += np.bincount(nearest[ia, ib].ravel(), minlength=NUM_BINS)
    return counts / counts.sum()


def smoothed_prior(prior: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The prior convolved with a Gaussian (σ = 5) in ab space, renormalised (float64, 313)."""
    return smoothed_histogram(prior, centres, REBALANCE_SIGMA)


def rebalancing_weights(prior: np.ndarray, centres: np.ndarray, power: float) -> np.ndarray:
    """Per-bin loss weights (float32, 313), mean 1 under the prior.

    The paper's w ∝ 1 / ((1 − λ)·p̃ + λ/Q) with λ = 0.5 and p̃ the smoothed prior, raised to
    ``power`` (1 = the paper, 0 = no rebalancing).
    """
    p_smooth = smoothed_prior(prior, centres)
    w = (1.0 / ((1 - REBALANCE_LAMBDA) * p_smooth + REBALANCE_LAMBDA / NUM_BINS)) ** power
    w /= (p_smooth * w).sum()
    return w.astype(np.float32)


class BatchSampler:
    """Random-resized crops with flips, as (L − 50 input, soft-target bins, their weights, pixel weight,
    the crop's mean ab)."""

    def __init__(self, photos: np.ndarray, crop: int, film_prob: float, tables: dict, rng: np.random.Generator):
        self.photos, self.crop, self.film_prob, self.rng = photos, crop, film_prob, rng
        self.soft_idx, self.soft_w = tables["soft_idx"], tables["soft_w"]
        self.nearest, self.bin_weights = tables["nearest"], tables["bin_weights"]

    def crop_of(self, rgb: np.ndarray) -> np.ndarray:
        side = rgb.shape[0]
        area = self.rng.uniform(0.35, 1.0) * side * side
        aspect = math.exp(self.rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = int(min(side, round(math.sqrt(area * aspect))))
        h = int(min(side, round(math.sqrt(area / aspect))))
        y0, x0 = self.rng.integers(side - h + 1), self.rng.integers(side - w + 1)
        patch = cv2.resize(rgb[y0:y0 + h, x0:x0 + w], (self.crop, self.crop), interpolation=cv2.INTER_AREA)
        patch = patch[:, ::-1] if self.rng.random() < 0.5 else patch
        return black_bars(patch, self.rng) if self.rng.random() < BARS_PROBABILITY else patch

    def whole_frames(self, batch: int, side: int) -> torch.Tensor:
        """Whole photos squeezed to side×side as the pipeline feeds the model (N×1×side×side float32,
        L − 50), flipped at random and degraded like film with the sampler's probability."""
        x = np.empty((batch, 1, side, side), np.float32)
        for i in range(batch):
            photo = self.photos[self.rng.integers(len(self.photos))]
            photo = photo[:, ::-1] if self.rng.random() < 0.5 else photo
            if self.rng.random() < self.film_prob:
                small = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
                x[i, 0] = film_lightness(small, self.rng) - 50.0
            else:
                x[i] = model_input(photo, (side, side))
        return torch.from_numpy(x)

    def sample(self, batch: int):
        c, o = self.crop, self.crop // OUTPUT_STRIDE
        x = np.empty((batch, 1, c, c), np.float32)
        idx = np.empty((batch, SOFT_NEIGHBOURS, o, o), np.int64)
        wts = np.empty((batch, SOFT_NEIGHBOURS, o, o), np.float32)
        pix_w = np.empty((batch, o, o), np.float32)
        mean_ab = np.empty((batch, 2), np.float32)
        for i in range(batch):
            rgb = np.ascontiguousarray(self.crop_of(self.photos[self.rng.integers(len(self.photos))]))
            lab = rgb_to_lab(rgb)
            lightness = film_lightness(rgb, self.rng, lab[..., 0]) if self.rng.random() < self.film_prob else lab[..., 0]
            x[i, 0] = lightness - 50.0
            ab = cv2.resize(lab[..., 1:], (o, o), interpolation=cv2.INTER_AREA)
            mean_ab[i] = ab.reshape(-1, 2).mean(0)
            ia, ib = ab_to_grid_index(ab)
            idx[i] = self.soft_idx[ia, ib].transpose(2, 0, 1)
            wts[i] = self.soft_w[ia, ib].transpose(2, 0, 1)
            pix_w[i] = self.bin_weights[self.nearest[ia, ib]]
        return (torch.from_numpy(x), torch.from_numpy(idx), torch.from_numpy(wts), torch.from_numpy(pix_w),
                torch.from_numpy(mean_ab))


class CropStream(torch.utils.data.IterableDataset):
    """Endless training batches (:meth:`BatchSampler.sample`) cut in a loader worker process from
    the memory-mapped pack; each worker draws from its own random stream, seeded by ``seed`` and
    its worker number."""

    def __init__(self, pack: Path, crop: int, film_prob: float, tables: dict, batch: int, seed: list[int]):
        super().__init__()
        self.pack, self.crop, self.film_prob, self.tables, self.batch, self.seed = pack, crop, film_prob, tables, batch, seed

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        cv2.setNumThreads(1)
        rng = np.random.default_rng([*self.seed, worker.id if worker else 0])
        sampler = BatchSampler(load_pack(self.pack), self.crop, self.film_prob, self.tables, rng)
        while True:
            yield sampler.sample(self.batch)


def crop_loader(pack: Path, crop: int, film_prob: float, tables: dict, batch: int, seed: list[int],
                workers: int, device: torch.device):
    """An iterator of training batches from ``workers`` processes, two batches ahead per worker;
    pinned for a CUDA ``device``. The workers are spawned, not forked (a fork after PyTorch's
    OpenMP threads have run can hang the child), and share the pack through the page cache.
    Resuming reseeds them from the step count, so a resumed run draws other crops than an
    uninterrupted one would."""
    return iter(torch.utils.data.DataLoader(CropStream(pack, crop, film_prob, tables, batch, seed), batch_size=None,
                                            num_workers=workers, pin_memory=device.type == "cuda", prefetch_factor=2,
                                            multiprocessing_context="spawn"))


def rebalanced_soft_ce(logits: torch.Tensor, idx: torch.Tensor, wts: torch.Tensor, pix_w: torch.Tensor) -> torch.Tensor:
    """Multinomial cross-entropy against soft targets, each pixel weighted by its bin's rarity."""
    logp = F.log_softmax(logits.float(), dim=1)
    per_pixel = -(torch.gather(logp, 1, idx) * wts).sum(1)
    return (per_pixel * pix_w).mean()


def colour_balance_loss(logits: torch.Tensor, centres: torch.Tensor, mean_ab: torch.Tensor,
                        temperature: float = ANNEAL_T) -> torch.Tensor:
    """Huber distance (ab units, δ = 1) between each image's mean annealed-mean ab and ``mean_ab``.

    ``logits``: N×313×h×w bin scores; ``centres``: float32 313×2 bin centres; ``mean_ab``: float32
    N×2, the photo's mean (a*, b*). Summed over a* and b*, averaged over images: the per-image colour
    cast that ``colorize evaluate`` reports, made differentiable.
    """
    p = torch.softmax(logits.float() / temperature, dim=1)
    predicted = torch.einsum("nkhw,kc->nc", p, centres) / (p.shape[2] * p.shape[3])
    return F.smooth_l1_loss(predicted, mean_ab, beta=1.0, reduction="sum") / len(mean_ab)


def bf16_supported() -> bool:
    """True when this CPU has native bfloat16 dot products (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# ---------------------------------------------------------------- validation

def validation_logits(net: ColorNet, images: list[np.ndarray]) -> list[torch.Tensor]:
    """Bin scores (float32 1×313×56×56) for each RGB image, through the product's model input."""
    net.eval()
    device = next(net.parameters()).device
    with torch.no_grad():
        return [net.logits(torch.from_numpy(model_input(rgb, (MODEL_SIDE, MODEL_SIDE))[None]).to(device)).float().cpu()
                for rgb in images]


def decoded_figures(logits: list[torch.Tensor], images: list[tuple[str, np.ndarray]], decode: AnnealedMean,
                    colour: ColourSettings = ColourSettings()) -> dict:
    """Per-image validation figures (:meth:`PerImageSummary.brief`) of bin scores (one per image,
    from :func:`validation_logits`) decoded by ``decode`` and put on each image as ``colour`` says."""
    from models.evaluate import PerImageSummary, score_image

    with torch.no_grad():
        scores = [score_image(name, rgb, decode(s)[0].numpy(), colour).scores for (name, rgb), s in zip(images, logits)]
    return PerImageSummary.of(scores).brief()


def validate(net: ColorNet, images: list[tuple[str, np.ndarray]], decode: AnnealedMean) -> dict:
    """Per-image validation figures of ``net`` decoded by ``decode``."""
    return decoded_figures(validation_logits(net, [rgb for _, rgb in images]), images, decode)


def log_prior_tensor(prior: np.ndarray, centres: np.ndarray) -> torch.Tensor:
    """log of the smoothed training prior (float32, 313): what a decoding tilt is a multiple of."""
    return torch.from_numpy(np.log(np.maximum(smoothed_prior(prior, centres), 1e-12)).astype(np.float32))


def cast_excess(figures: dict) -> float:
    """How far (ab units) the validation cast exceeds the issue's bound of 3 on a* and b*, summed:
    the best weights are chosen by rebalanced + plain AuC gain less this."""
    return max(0.0, abs(figures["delta_a"]) - CAST_BOUND) + max(0.0, abs(figures["delta_b"]) - CAST_BOUND)


def load_validation(folder: Path) -> list[tuple[str, np.ndarray]]:
    """(name, RGB uint8) of every image in ``folder``; empty when the folder is absent."""
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is not None:
            out.append((path.name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    return out


# ---------------------------------------------------------------- export

def export_onnx(net: ColorNet, decode: AnnealedMean, path: Path, metadata: dict[str, str]) -> None:
    """Write the network + decoding as ONNX: l_minus_50 N×1×224×224 → ab N×2×56×56, with batch norms
    unfolded and large weights stored as float16 (see models.shipped_weights), so the file also seeds
    training. It appears only when complete."""
    import onnx

    model = ExportedColorizer(copy.deepcopy(net).float().eval(), decode).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, 1, 224, 224), str(tmp), input_names=["l_minus_50"],
                          output_names=["ab"], dynamic_axes={"l_minus_50": {0: "N"}, "ab": {0: "N"}},
                          opset_version=17, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                          do_constant_folding=False, keep_initializers_as_inputs=True)
    proto = onnx.load(str(tmp))
    weights = {init.name for init in proto.graph.initializer}  # as inputs only so equal tensors keep their names
    graph_inputs = [value for value in proto.graph.input if value.name not in weights]
    del proto.graph.input[:]
    proto.graph.input.extend(graph_inputs)
    store_large_floats_as_float16(proto)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(path)


def batch_norms(net: ColorNet) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer of ``net``."""
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def batchnorm_statistics_finite(net: ColorNet) -> bool:
    """False when any batch-norm running mean or variance is inf or NaN (such a channel is a
    constant in evaluation while it varies in training)."""
    return all(bool(torch.isfinite(m.running_mean).all() and torch.isfinite(m.running_var).all())
               for m in batch_norms(net))


def estimate_batchnorm_statistics(net: ColorNet, inputs: Iterable[torch.Tensor], use_bf16: bool) -> None:
    """Replace every batch-norm running mean and variance by its plain average over the batches of
    ``inputs`` (N×1×H×W, L − 50), seen through ``net`` in training mode; weights are unchanged.

    Averaged weights need statistics of their own (as in stochastic weight averaging, Izmailov et
    al., UAI 2018): the live network's running statistics do not describe the EMA network.
    """
    norms = batch_norms(net)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = net.training
    net.train()
    with torch.no_grad():
        device = next(net.parameters()).device
        for x in inputs:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                net(x.to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    net.train(was_training)


def network_from_shipped(shipped: ShippedWeights, source: Path) -> ColorNet:
    """A float32 ColorNet of ``shipped``'s width holding its weights. Raises ShippedWeightsError naming
    ``source`` when a parameter or statistic is missing or has another shape."""
    net = ColorNet(shipped.width)
    try:
        result = net.load_state_dict({k: torch.from_numpy(v) for k, v in shipped.state_dict.items()}, strict=False)
    except RuntimeError:  # a tensor of another shape
        raise ShippedWeightsError(f"{source}: its weights do not fit ColorNet(width={net.width})") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ShippedWeightsError(f"{source}: its weights do not fit ColorNet(width={net.width}) "
                                  f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})")
    return net


# ---------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m models.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", type=Path, default=Path("runs/pack"), help="folder from models.training_pack")
    ap.add_argument("--workdir", type=Path, default=Path("runs/default"))
    ap.add_argument("--init-from", type=Path, help="an exported model (.onnx) to start a fresh workdir from")
    ap.add_argument("--val", type=Path, default=DEFAULT_VAL, help="validation photos (default: shared CBSD68)")
    ap.add_argument("--minutes", type=float, default=60.0,
                    help="wall-clock budget of this continuation (0: no training, only a validation)")
    ap.add_argument("--val-minutes", type=float, default=20.0, help="validate every so many minutes")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, help=f"network width (default: the workdir's or --init-from's, else "
                                              f"{DEFAULT_WIDTH})")
    ap.add_argument("--rebalance-power", type=float, default=0.5)
    ap.add_argument("--film-prob", type=float, default=0.5)
    ap.add_argument("--balance-weight", type=float, default=0.0,
                    help="weight of the colour-balance term (per-image mean ab, Huber, ab units)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the network trains")
    ap.add_argument("--loaders", type=int, default=0,
                    help="worker processes that cut training crops (0: the training process itself)")
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    ap.add_argument("--export", type=Path, help="export the best EMA weights to this ONNX path and exit")
    ap.add_argument("--last", action="store_true", help="with --export: the last EMA weights, not the best validated")
    ap.add_argument("--log-to", type=Path, help="with --export: append this workdir's log records not yet in this file")
    ap.add_argument("--tilt-beta", type=float, default=0.0,
                    help="with --export: decode with p·prior^β (β chosen on validation)")
    ap.add_argument("--temperature", type=float, default=ANNEAL_T, help="with --export: annealed-mean T")
    ap.add_argument("--confidence-power", type=float, default=0.0, help="with --export: entropy shrink γ")
    return ap


def append_new_lines(source: Path, target: Path) -> None:
    """Append to ``target`` the lines of ``source`` it does not hold yet (a log kept across sessions)."""
    have = set(target.read_text().splitlines()) if target.exists() else set()
    new = [line for line in source.read_text().splitlines() if line and line not in have]
    with open(target, "a") as out:
        out.writelines(line + "\n" for line in new)


def log_line(workdir: Path, record: dict) -> None:
    print(json.dumps(record), flush=True)
    with open(workdir / "train_log.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    centres = load_bin_centres()
    ckpt_path = args.workdir / "checkpoint.pt"
    best_path = args.workdir / "best.pt"

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: this PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if args.export and not (ckpt_path.exists() or best_path.exists()):
        print(f"error: --export: {args.workdir} holds no best.pt or checkpoint.pt to export", file=sys.stderr)
        return 2
    ckpt = torch.load(ckpt_path, weights_only=False, map_location="cpu") if ckpt_path.exists() else None
    shipped = seed = None
    if ckpt is not None and args.init_from and not args.export:
        print(f"note: --init-from {args.init_from} is not used: {ckpt_path} exists, so its run continues",
              file=sys.stderr)
    if ckpt is None and args.init_from and not args.export:
        try:
            shipped = read_shipped_weights(args.init_from)
            seed = network_from_shipped(shipped, args.init_from)
        except ShippedWeightsError as exc:
            print(f"error: --init-from {exc}", file=sys.stderr)
            return 2
    best_only = None if ckpt or not best_path.exists() else torch.load(best_path, weights_only=False, map_location="cpu")
    stored = (ColorNet.width_of(ckpt["net"]) if ckpt else ColorNet.width_of(best_only["ema"]) if best_only
              else shipped.width if shipped else None)
    if args.width and stored and args.width != stored:
        where = ckpt_path if ckpt else best_path if best_only else args.init_from
        print(f"error: --width {args.width}: {where} holds a width-{stored} network", file=sys.stderr)
        return 2
    args.width = args.width or stored or DEFAULT_WIDTH
    net = seed if seed is not None else ColorNet(args.width)
    state = {"step": 0, "seconds": 0.0, "rng": None, "continuations": [], "current": None, "best_val": None}
    prior = None
    if ckpt is not None:
        net.load_state_dict(ckpt["net"])
        state, prior = ckpt["state"], ckpt["prior"]
        if state["current"] is None:
            net.load_state_dict(ckpt["ema"])
    elif shipped is not None:
        prior = shipped.prior
        state.update(step=shipped.step, seconds=shipped.seconds, continuations=shipped.continuations)
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    if ckpt is not None and state["current"] is not None:
        opt.load_state_dict(ckpt["opt"])
        start_message = f"resuming continuation {len(state['continuations']) + 1} at step {state['step']}"
    elif ckpt is not None:
        start_message = f"new continuation from the EMA weights at step {state['step']}"
    elif shipped is not None:
        start_message = f"started from {args.init_from} (step {state['step']})"
    else:
        start_message = "starting from scratch"
    if not args.export:
        print(start_message, flush=True)
    ema = copy.deepcopy(net)
    if ckpt is not None and "ema" in ckpt:
        ema.load_state_dict(ckpt["ema"])

    val_images = load_validation(args.val)
    if not args.export and not val_images:
        print(f"error: --val {args.val}: no validation photos there (the folder is missing or holds no readable "
              "image); every validation, the best weights and the batch-norm estimate need them", file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.export:
        source = ckpt_path if args.last or not best_path.exists() else best_path
        best = best_only if best_only is not None and source == best_path else torch.load(source, weights_only=False,
                                                                                           map_location="cpu")
        ema.load_state_dict(best["ema"])
        ema.cpu()
        if not batchnorm_statistics_finite(ema):
            print(f"error: {source} has batch-norm statistics that are not finite (saved before they were "
                  "estimated); --minutes 0 on this workdir estimates them for its latest EMA weights, which "
                  "then become its best", file=sys.stderr)
            return 1
        decoding = Decoding(args.temperature, args.tilt_beta, args.confidence_power)
        trained = best["state"]
        done = trained["continuations"] + ([{**trained["current"], "end_step": trained["step"]}]
                                           if trained.get("current") else [])
        meta = {"architecture": f"ColorNet(width={args.width}) with global context",
                **training_metadata(args.width, best["prior"], trained["step"], trained["seconds"], done),
                "anneal_t": str(decoding.temperature),
                "tilt_beta": str(decoding.tilt_beta), "confidence_power": str(decoding.confidence_power),
                "contract": "l_minus_50 N×1×224×224 (L−50) → ab N×2×56×56"}
        export_onnx(ema, decoding.module(torch.from_numpy(centres), log_prior_tensor(best["prior"], centres)),
                    args.export, meta)
        print(f"exported step {best['state']['step']} to {args.export}")
        if args.log_to:
            append_new_lines(args.workdir / "train_log.jsonl", args.log_to)
        return 0

    t0 = time.time()
    photos = np.ascontiguousarray(load_pack(args.pack))
    soft_idx, soft_w = soft_encoding_table(centres)
    nearest = nearest_bin_table(centres)
    if prior is None:
        prior = ab_prior(photos, nearest)
    tables = {"soft_idx": soft_idx, "soft_w": soft_w, "nearest": nearest,
              "bin_weights": rebalancing_weights(prior, centres, args.rebalance_power)}
    print(f"{len(photos)} photos, {len(val_images)} validation images, ready in {time.time() - t0:.0f} s", flush=True)

    rng = np.random.default_rng(args.seed + state["step"])
    if state["rng"] is not None:
        rng.bit_generator.state = state["rng"]
    sampler = BatchSampler(photos, args.crop, args.film_prob, tables, rng)
    batches = iter(lambda: sampler.sample(args.batch), None) if args.loaders == 0 else crop_loader(
        args.pack, args.crop, args.film_prob, tables, args.batch, [args.seed, state["step"]], args.loaders, device)
    use_bf16 = args.precision == "bf16" or (args.precision == "auto" and (device.type == "cuda" or bf16_supported()))
    if state["best_val"] is not None and not state["best_val"].get("bn_estimated"):
        print(f"the best validation so far (step {state['best_val']['step']}) used the live network's batch-norm "
              "statistics, so it is not comparable; the next validation becomes the best", flush=True)
        state["best_val"] = None
    if state["current"] is None:
        state["current"] = {"index": len(state["continuations"]) + 1, "start_step": state["step"], "elapsed": 0.0,
                            "budget_s": args.minutes * 60, "batch": args.batch, "crop": args.crop,
                            "lr": args.lr, "rebalance_power": args.rebalance_power, "film_prob": args.film_prob,
                            "film_stock_prob": FILM_STOCK_PROBABILITY, "balance_weight": args.balance_weight,
                            "bf16": use_bf16}
        opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    current = state["current"]
    current["budget_s"] = args.minutes * 60  # a resumed continuation takes the budget given now
    log_line(args.workdir, {"event": "start", "continuation": current["index"], "step": state["step"],
                            "photos": len(photos), "budget_min": args.minutes, "batch": args.batch, "crop": args.crop, "lr": args.lr,
                            "rebalance_power": args.rebalance_power, "film_prob": args.film_prob,
                            "film_stock_prob": FILM_STOCK_PROBABILITY, "balance_weight": args.balance_weight,
                            "bars_prob": BARS_PROBABILITY, "bf16": use_bf16})
    plain_decoding = Decoding().module(torch.from_numpy(centres), torch.zeros(NUM_BINS))

    def checkpoint() -> None:
        state["rng"] = rng.bit_generator.state
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "state": state,
                    "prior": prior, "args": vars(args)}, tmp)
        tmp.replace(ckpt_path)

    def run_validation() -> None:
        if not val_images:
            return
        started = time.time()
        calibration = BatchSampler(photos, args.crop, args.film_prob, tables, np.random.default_rng(state["step"]))
        estimate_batchnorm_statistics(ema, (calibration.whole_frames(args.batch, MODEL_SIDE) for _ in
                                            range(math.ceil(BN_CALIBRATION_PHOTOS / args.batch))), use_bf16)
        figures = validate(ema, val_images, plain_decoding)  # best.pt, --last and the next continuation keep them
        ema.train()
        record = {"event": "validation", "continuation": current["index"], "step": state["step"],
                  "hours": round(state["seconds"] / 3600, 3), **figures, "seconds": round(time.time() - started)}
        log_line(args.workdir, record)
        score = figures["rbauc_gain"] + figures["auc_gain"] - cast_excess(figures)
        if state["best_val"] is None or score >= state["best_val"]["score"]:
            state["best_val"] = {"score": score, "step": state["step"], "bn_estimated": True, **figures}
            checkpoint()
            torch.save({"ema": ema.state_dict(), "state": copy.deepcopy(state), "prior": prior}, best_path)

    net.train()
    ema.train()
    start = last_save = last_val = time.time()
    running = running_balance = None
    centres_t = torch.from_numpy(centres).float().to(device)
    with torch.no_grad():
        ema_params = list(ema.parameters())
        net_params = list(net.parameters())
    while current["elapsed"] + (time.time() - start) < current["budget_s"]:
        progress = (current["elapsed"] + time.time() - start) / current["budget_s"]
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        lr *= min(1.0, (state["step"] - current["start_step"] + 1) / WARMUP_STEPS)
        for group in opt.param_groups:
            group["lr"] = lr
        x, idx, wts, pix_w, mean_ab = (t.to(device, non_blocking=True) for t in next(batches))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = net(x)
        loss = rebalanced_soft_ce(logits, idx, wts, pix_w)
        if args.balance_weight > 0:
            balance = colour_balance_loss(logits, centres_t, mean_ab)
            loss = loss + args.balance_weight * balance
            running_balance = balance.item() if running_balance is None else 0.98 * running_balance + 0.02 * balance.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, net_params, 1.0 - EMA_DECAY)
        state["step"] += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        now = time.time()
        if state["step"] % 100 == 0:
            print(json.dumps({"step": state["step"], "loss": round(running, 4), "lr": round(lr, 6),
                              "balance": None if running_balance is None else round(running_balance, 3),
                              "continuation_min": round((current["elapsed"] + now - start) / 60, 1)}), flush=True)
        if now - last_save > SAVE_EVERY_S or now - last_val > args.val_minutes * 60:
            current["elapsed"] += now - start
            state["seconds"] += now - start
            start = now
            if now - last_val > args.val_minutes * 60:
                run_validation()
                last_val = time.time()
                start = time.time()
            checkpoint()
            last_save = time.time()
    current["elapsed"] += time.time() - start
    state["seconds"] += time.time() - start
    run_validation()
    current["end_step"] = state["step"]
    state["continuations"].append(current)
    state["current"] = None
    log_line(args.workdir, {"event": "continuation_end", **current, "total_steps": state["step"],
                            "total_hours": round(state["seconds"] / 3600, 3), "best": state["best_val"]})
    checkpoint()
    return 0


if __name__ == "__main__":
    sys.exit(main())
