"""The compact colorization network we train and ship (``models/default.onnx``).

Contract (same as the converted reference model):
  input  ``l_minus_50``: float32 N×1×224×224, Lab lightness minus 50 (range −50..50);
  output ``ab``:         float32 N×2×56×56, a and b in Lab units (≈ −110..110),
                         the annealed mean (T = 0.38) of the 313-bin distribution.

Training uses :meth:`ColorNet.logits` (N×313×56×56 bin scores); the exported graph ends
in :class:`AnnealedMean` so the pipeline only ever sees ab. The decoding settings chosen on
validation (a tilt of the distribution by the training prior, the temperature) are baked into that
last step, so they cost nothing at inference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

NUM_BINS = 313
ANNEAL_T = 0.38
DEFAULT_WIDTH = 32


def conv_block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3×3 convolution → batch norm → ReLU (BN is folded into the conv at export)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class GlobalContext(nn.Module):
    """Whole-picture context: average-pooled features → per-channel scale and shift (FiLM).

    A 3×3 network at 14×14 sees only part of the picture, so one object can get two hues and a flat
    sky a blotch; pooling over the whole frame and modulating every position with it gives each
    pixel the scene's gist (the global branch of Iizuka et al., SIGGRAPH 2016, fused by FiLM,
    Perez et al., AAAI 2018). Costs two small matrix products per picture.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True),
                                 nn.Linear(channels, 2 * channels))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.mlp(x.mean(dim=(2, 3))).chunk(2, dim=1)
        return x * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]


class ColorNet(nn.Module):
    """Encoder (224→14, strides 2), global context, dilated context, U-Net style decoder to 56×56.

    Widths ``w`` scale every stage; the default gives about 3.3 M parameters.
    """

    def __init__(self, w: int = DEFAULT_WIDTH):
        super().__init__()
        self.width = w
        self.enc1 = nn.Sequential(conv_block(1, w, 2), conv_block(w, w * 2, 2))          # 56
        self.enc2 = nn.Sequential(conv_block(w * 2, w * 4, 2), conv_block(w * 4, w * 4))  # 28
        self.enc3 = nn.Sequential(conv_block(w * 4, w * 8, 2), conv_block(w * 8, w * 8))  # 14
        self.global_context = GlobalContext(w * 8)
        self.context = nn.Sequential(
            conv_block(w * 8, w * 8, dilation=2), conv_block(w * 8, w * 8, dilation=2),
            conv_block(w * 8, w * 8))
        self.lat3 = nn.Conv2d(w * 8, w * 4, 1)
        self.dec2 = conv_block(w * 4, w * 4)                                               # 28
        self.lat2 = nn.Conv2d(w * 4, w * 2, 1)
        self.dec1 = conv_block(w * 2, w * 2)                                               # 56
        self.head = nn.Conv2d(w * 2, NUM_BINS, 1)

    @staticmethod
    def width_of(state_dict: dict) -> int:
        """The width ``w`` of the ColorNet whose state dict (or EMA weights) this is."""
        return int(state_dict["enc1.0.0.weight"].shape[0])

    def logits(self, l_minus_50: torch.Tensor) -> torch.Tensor:
        """N×1×H×W (L − 50) → N×313×H/4×W/4 unnormalised bin scores."""
        x = l_minus_50 / 50.0
        s1 = self.enc1(x)
        s2 = self.enc2(s1)
        s3 = self.context(self.global_context(self.enc3(s2)))
        u2 = F.interpolate(self.lat3(s3), scale_factor=2.0, mode="bilinear", align_corners=False)
        d2 = self.dec2(u2 + s2)
        u1 = F.interpolate(self.lat2(d2), scale_factor=2.0, mode="bilinear", align_corners=False)
        d1 = self.dec1(u1 + s1)
        return self.head(d1)

    def forward(self, l_minus_50: torch.Tensor) -> torch.Tensor:
        return self.logits(l_minus_50)


class AnnealedMean(nn.Module):
    """Bin scores N×313×h×w → ab N×2×h×w: Σ softmax((scores + tilt) / T) · bin centre.

    ``tilt`` (float, 313; default zeros) is added to the log-probabilities before annealing, i.e.
    the distribution p becomes p·exp(tilt). With tilt = β·log(prior) it undoes (β > 0) or
    strengthens (β < 0) the pull toward rare, saturated bins that class rebalancing teaches.
    ``confidence_power`` γ > 0 scales ab by (1 − H(p)/log 313)^γ, H the entropy of the tilted
    distribution before annealing: where the model does not know (a flat p), the colour shrinks
    toward neutral instead of committing to a vivid guess. 0 leaves ab as is (and costs nothing).
    """

    def __init__(self, bin_centres: torch.Tensor, temperature: float = ANNEAL_T,
                 tilt: torch.Tensor | None = None, confidence_power: float = 0.0):
        super().__init__()
        self.register_buffer("centres", bin_centres.float().t().contiguous().view(2, NUM_BINS, 1, 1))
        self.register_buffer("tilt", (torch.zeros(NUM_BINS) if tilt is None else tilt.float()).view(1, NUM_BINS, 1, 1))
        self.inv_t = 1.0 / temperature
        self.confidence_power = confidence_power

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        # Written out rather than torch.softmax(dim=1): onnxruntime's channel-axis Softmax
        # transposes NCHW and costs ~6x more than this on CPU.
        tilted = scores + self.tilt
        z = tilted * self.inv_t
        e = torch.exp(z - z.amax(dim=1, keepdim=True))
        ab = F.conv2d(e, self.centres) / e.sum(dim=1, keepdim=True)
        if self.confidence_power > 0:
            logp = tilted - torch.logsumexp(tilted, dim=1, keepdim=True)
            entropy = -(logp.exp() * logp).sum(dim=1, keepdim=True)
            confidence = (1.0 - entropy / math.log(NUM_BINS)).clamp(min=0.0)
            ab = ab * confidence ** self.confidence_power
        return ab


@dataclass(frozen=True)
class Decoding:
    """How bin scores become ab in the exported graph; chosen on validation (``models.choose_decoding``).

    ``temperature``: annealed-mean T (0.38 in the paper); ``tilt_beta``: β of the tilt β·log(prior),
    prior the training set's smoothed ab distribution; ``confidence_power``: γ of the entropy shrink.
    """

    temperature: float = ANNEAL_T
    tilt_beta: float = 0.0
    confidence_power: float = 0.0

    def module(self, bin_centres: torch.Tensor, log_prior: torch.Tensor) -> AnnealedMean:
        """The :class:`AnnealedMean` for these settings (``log_prior``: float, 313)."""
        return AnnealedMean(bin_centres, self.temperature, self.tilt_beta * log_prior.float(), self.confidence_power)


class ExportedColorizer(nn.Module):
    """What goes into the ONNX file: network + annealed-mean decoding (temperature and tilt as chosen)."""

    def __init__(self, net: ColorNet, decode: AnnealedMean):
        super().__init__()
        self.net = net
        self.decode = decode

    def forward(self, l_minus_50: torch.Tensor) -> torch.Tensor:
        return self.decode(self.net.logits(l_minus_50))


def count_parameters_and_macs(net: nn.Module, size: int = 224) -> tuple[int, int]:
    """(parameters, multiply-accumulates of the convolutions) for one 1×1×size×size input."""
    macs = 0

    def on_conv(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        macs += output.numel() * per_output

    hooks = [m.register_forward_hook(on_conv) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 1, size, size))
    for hook in hooks:
        hook.remove()
    return sum(p.numel() for p in net.parameters()), macs
