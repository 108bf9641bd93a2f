r"""Cross-entropy on the pixels a method may trust: masked (annotated mask pixels, pseudo-labels) and
confident (FixMatch's thresholded pseudo-labels). Every method's supervised term and every
pseudo-label term is one of these two (torch-em's ``self_training`` losses are the model).

    masked:     L = 1/|J| Σ_{j ∈ J} −log softmax(z_j)[y_j],        J = {j : valid_j, y_j ≠ ignore_index}
    confident:  L = 1/|V| Σ_{j ∈ V} 1[m_j] · −log softmax(z_j)[y_j], V = {j : valid_j}

The confident mean divides by every valid pixel (FixMatch's unmasked count), so its scale grows with
the share of confident pixels. Both run in float32 (the logits are cast) and return a zero that still
depends on the logits when no pixel counts.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def masked_cross_entropy(logits: Tensor, target: Tensor, valid: Tensor, ignore_index: int) -> Tensor:
    """Mean cross-entropy over pixels with ``valid`` and ``target != ignore_index``.

    Shapes: logits (B, C, h, w), target (B, h, w) long, valid (B, h, w) bool → scalar.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"masked_cross_entropy: logits (B, C, h, w) and target (B, h, w) expected, "
                         f"got {tuple(logits.shape)} and {tuple(target.shape)}")
    if valid.shape != target.shape:
        raise ValueError(f"masked_cross_entropy: valid must have the shape of target {tuple(target.shape)}, "
                         f"got {tuple(valid.shape)}")
    target = target.masked_fill(~valid, ignore_index)
    n = (target != ignore_index).sum()
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    return total / n.clamp_min(1)


def confident_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor, valid: Tensor,
                            ignore_index: int) -> Tensor:
    """Σ_{valid ∧ mask} CE(logits_j, target_j) / |valid| (FixMatch's masked mean).

    Shapes: logits (B, C, h, w); target (B, h, w) long; mask, valid (B, h, w) bool → scalar (0 that
    still depends on ``logits`` when nothing is confident).
    """
    if target.shape != (logits.shape[0], *logits.shape[2:]) or mask.shape != target.shape \
            or valid.shape != target.shape:
        raise ValueError(f"confident_cross_entropy: logits (B, C, h, w) with target, mask and valid (B, h, w) "
                         f"expected, got {tuple(logits.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}, "
                         f"{tuple(valid.shape)}")
    keep = mask & valid & (target != ignore_index)
    per_pixel = F.cross_entropy(logits.float(), target.masked_fill(~keep, ignore_index),
                                ignore_index=ignore_index, reduction="none")
    return per_pixel.sum() / valid.sum().clamp_min(1)
