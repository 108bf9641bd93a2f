"""Auxiliary training heads on the backbone features (:attr:`SegmentationModel.aux`).

Each maps ``(features (B, F, H, W), valid (B, H, W) bool or None)`` to one tensor; ``valid`` marks
real pixels (None: all of them). They are trained beside the segmentation head and never used for
inference.

* :class:`ClassificationBranch` — image-level class logits (Mlynarski et al. 2019, mixed pooling)::

      g = [ mean_{j valid} f_j ,  max_{j valid} f_j ]                     (B, 2F)
      logits = W_2 · LeakyReLU(W_1 · g + b_1) + b_2                      (B, C)

* :class:`DistanceBranch` — one map per class in (0, 1) (``pointbranch``'s normalised distances)::

      out = sigmoid(conv1x1_C(LeakyReLU(conv3x3_F(f))))                  (B, C, H, W)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _check(owner: str, feats: Tensor, in_channels: int, valid: Tensor | None) -> None:
    if feats.ndim != 4 or feats.shape[1] != in_channels:
        raise ValueError(f"{owner}: features must have shape (B, {in_channels}, H, W), got {tuple(feats.shape)}")
    if valid is not None and valid.shape != (feats.shape[0], *feats.shape[2:]):
        raise ValueError(f"{owner}: valid must have shape {(feats.shape[0], *feats.shape[2:])}, got {tuple(valid.shape)}")


def _positive(owner: str, **values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{owner}: {name} must be a positive integer, got {v!r}")


def _xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class ClassificationBranch(nn.Module):
    """Masked global average + max pooling of the features, then a two-layer MLP → (B, C) logits.

    Args:
        in_channels: F, backbone feature channels.
        n_classes: C.
        hidden: width of the hidden layer.
    """

    def __init__(self, in_channels: int, n_classes: int, hidden: int = 64) -> None:
        super().__init__()
        _positive("ClassificationBranch", in_channels=in_channels, n_classes=n_classes, hidden=hidden)
        self.in_channels = in_channels
        self.mlp = nn.Sequential(nn.Linear(2 * in_channels, hidden), nn.LeakyReLU(), nn.Linear(hidden, n_classes))
        _xavier(self)

    def forward(self, feats: Tensor, valid: Tensor | None = None) -> Tensor:
        """(B, F, H, W), valid (B, H, W) | None → (B, C) logits; pooling only over valid pixels."""
        _check("ClassificationBranch", feats, self.in_channels, valid)
        f = feats.float()
        if valid is None:
            mean, peak = f.mean(dim=(2, 3)), f.amax(dim=(2, 3))
        else:
            v = valid.unsqueeze(1)
            n = v.sum(dim=(2, 3)).clamp_min(1)
            mean = (f * v).sum(dim=(2, 3)) / n
            peak = f.masked_fill(~v, float("-inf")).amax(dim=(2, 3))
            peak = torch.where(v.any(dim=(2, 3)), peak, torch.zeros_like(peak))  # an image without pixels
        return self.mlp(torch.cat([mean, peak], dim=1))


class DistanceBranch(nn.Module):
    """3×3 conv → LeakyReLU → 1×1 conv → sigmoid: (B, F, H, W) → (B, C, H, W) in (0, 1)."""

    def __init__(self, in_channels: int, n_classes: int) -> None:
        super().__init__()
        _positive("DistanceBranch", in_channels=in_channels, n_classes=n_classes)
        self.in_channels = in_channels
        self.net = nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.LeakyReLU(),
                                 nn.Conv2d(in_channels, n_classes, 1))
        _xavier(self)

    def forward(self, feats: Tensor, valid: Tensor | None = None) -> Tensor:
        """(B, F, H, W) → (B, C, H, W) predicted normalised distance maps; ``valid`` is not needed."""
        _check("DistanceBranch", feats, self.in_channels, valid)
        return torch.sigmoid(self.net(feats))
