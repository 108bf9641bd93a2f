"""The U-Net backbone used by every method (paper §5.1; Ronneberger et al. 2015).

``levels`` resolution levels (paper: 5). Level ``i`` works at ``1 / 2**i`` of the input resolution
with ``width * 2**i`` channels (paper: width 64, so 64-128-256-512-1024)::

    encoder   x ─ DoubleConv ─ skip_0 ─ maxpool ─ DoubleConv ─ skip_1 ─ ... ─ DoubleConv (bottleneck)
    decoder   up = ConvTranspose2d(k=2, s=2);  y_i = DoubleConv(concat(skip_i, up(y_{i+1})))
    DoubleConv = (3×3 conv → BatchNorm → ReLU) × 2

The network returns the decoder features ``y_0`` of shape (B, width, H, W); a head (linear or
prototype, :mod:`dspseg.models.heads`) turns them into class logits.

Any input size works: H and W are padded at the bottom/right up to the next multiple of
``2**(levels-1)`` (reflection where the image is large enough, edge replication otherwise) and the
output is cropped back to (H, W). Weights are Xavier-uniform initialised (paper §5.1), conv biases
are zero (the 3×3 convs carry no bias: BatchNorm follows them), BatchNorm starts at identity.

Example::

    >>> net = UNet(in_channels=1, width=8)
    >>> net(torch.zeros(2, 1, 37, 45)).shape
    torch.Size([2, 8, 37, 45])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every (transposed) convolution in ``module``;
    BatchNorm layers to the identity (weight 1, bias 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class DoubleConv(nn.Sequential):
    """(3×3 conv, padding 1 → BatchNorm → ReLU) × 2: (B, cin, H, W) → (B, cout, H, W)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net returning full-resolution decoder features.

    Args:
        in_channels: channels of the input image (1 for EM, 3 for RGB).
        width: channels of the first level; level ``i`` has ``width * 2**i``. Paper: 64.
        levels: number of resolution levels including the bottleneck (paper: 5), ≥ 1.

    Attributes:
        out_channels: channels of the returned feature map (= ``width``).
        multiple: H and W are padded internally to a multiple of this (= ``2**(levels-1)``).

    Shapes: input (B, in_channels, H, W) with any H, W ≥ 1 → output (B, width, H, W).
    """

    def __init__(self, in_channels: int = 1, width: int = 64, levels: int = 5) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("levels", levels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UNet: {name} must be a positive integer, got {value!r}")
        self.in_channels = in_channels
        self.width = width
        self.levels = levels
        self.out_channels = width
        self.multiple = 2 ** (levels - 1)
        chans = [width * 2**i for i in range(levels)]
        self.encoders = nn.ModuleList(
            [DoubleConv(in_channels if i == 0 else chans[i - 1], chans[i]) for i in range(levels)]
        )
        self.ups = nn.ModuleList(
            [nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(levels - 1)]
        )
        self.decoders = nn.ModuleList([DoubleConv(2 * chans[i], chans[i]) for i in range(levels - 1)])
        xavier_init_(self)

    def _pad(self, x: Tensor) -> Tensor:
        """Pad (B, C, H, W) at the bottom/right to multiples of ``self.multiple``."""
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph == 0 and pw == 0:
            return x
        # reflection needs the pad to be smaller than the side it mirrors
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) → decoder features (B, width, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet.forward: input must have shape (B, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        y = self._pad(x)
        skips: list[Tensor] = []
        for i, enc in enumerate(self.encoders):
            if i > 0:
                y = F.max_pool2d(y, 2)
            y = enc(y)
            skips.append(y)
        y = skips.pop()
        for i in reversed(range(self.levels - 1)):
            y = self.decoders[i](torch.cat([skips[i], self.ups[i](y)], dim=1))
        if y.shape[-2:] != (h, w):
            y = y[..., :h, :w]
        return y
