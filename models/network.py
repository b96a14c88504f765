"""The compact colorization network we train and ship (``models/default.onnx``).

Contract (same as the converted reference model):
  input  ``l_minus_50``: float32 N×1×224×224, Lab lightness minus 50 (range −50..50);
  output ``ab``:         float32 N×2×56×56, a and b in Lab units (≈ −110..110),
                         the annealed mean (T = 0.38) of the 313-bin distribution.

Training uses :meth:`ColorNet.logits` (N×313×56×56 bin scores); the exported graph ends
in :class:`AnnealedMean` so the pipeline only ever sees ab.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

NUM_BINS = 313
ANNEAL_T = 0.38


def conv_block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3×3 convolution → batch norm → ReLU (BN is folded into the conv at export)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ColorNet(nn.Module):
    """Encoder (224→14, strides 2) with dilated context, U-Net style decoder back to 56×56.

    Widths ``w`` scale every stage; the default gives about 3 M parameters.
    """

    def __init__(self, w: int = 32):
        super().__init__()
        self.enc1 = nn.Sequential(conv_block(1, w, 2), conv_block(w, w * 2, 2))          # 56
        self.enc2 = nn.Sequential(conv_block(w * 2, w * 4, 2), conv_block(w * 4, w * 4))  # 28
        self.enc3 = nn.Sequential(conv_block(w * 4, w * 8, 2), conv_block(w * 8, w * 8))  # 14
        self.context = nn.Sequential(
            conv_block(w * 8, w * 8, dilation=2), conv_block(w * 8, w * 8, dilation=2),
            conv_block(w * 8, w * 8))
        self.lat3 = nn.Conv2d(w * 8, w * 4, 1)
        self.dec2 = conv_block(w * 4, w * 4)                                               # 28
        self.lat2 = nn.Conv2d(w * 4, w * 2, 1)
        self.dec1 = conv_block(w * 2, w * 2)                                               # 56
        self.head = nn.Conv2d(w * 2, NUM_BINS, 1)

    def logits(self, l_minus_50: torch.Tensor) -> torch.Tensor:
        """N×1×H×W (L − 50) → N×313×H/4×W/4 unnormalised bin scores."""
        x = l_minus_50 / 50.0
        s1 = self.enc1(x)
        s2 = self.enc2(s1)
        s3 = self.context(self.enc3(s2))
        u2 = F.interpolate(self.lat3(s3), scale_factor=2.0, mode="bilinear", align_corners=False)
        d2 = self.dec2(u2 + s2)
        u1 = F.interpolate(self.lat2(d2), scale_factor=2.0, mode="bilinear", align_corners=False)
        d1 = self.dec1(u1 + s1)
        return self.head(d1)

    def forward(self, l_minus_50: torch.Tensor) -> torch.Tensor:
        return self.logits(l_minus_50)


class AnnealedMean(nn.Module):
    """Bin scores N×313×h×w → ab N×2×h×w: softmax(scores / T) weighted sum of bin centres."""

    def __init__(self, bin_centres: torch.Tensor, temperature: float = ANNEAL_T):
        super().__init__()
        self.register_buffer("centres", bin_centres.float().t().contiguous().view(2, NUM_BINS, 1, 1))
        self.inv_t = 1.0 / temperature

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        # Written out rather than torch.softmax(dim=1): onnxruntime's channel-axis Softmax
        # transposes NCHW and costs ~6x more than this on CPU.
        z = scores * self.inv_t
        e = torch.exp(z - z.amax(dim=1, keepdim=True))
        return F.conv2d(e, self.centres) / e.sum(dim=1, keepdim=True)


class ExportedColorizer(nn.Module):
    """What goes into the ONNX file: network + annealed-mean decoding."""

    def __init__(self, net: ColorNet, bin_centres: torch.Tensor):
        super().__init__()
        self.net = net
        self.decode = AnnealedMean(bin_centres)

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
