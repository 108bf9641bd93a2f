"""Pseudo-label filtering (paper §3.6): arg-max of the scores over the admissible classes only.

The paper's three rules — (i) image labels: classes outside the label set get −∞; (ii) boxes:
a boxed class gets −∞ outside its boxes; (iii) points: the point pixel takes the point's class —
and the mask rule (a mask pixel keeps its class) are all the admissible-class map ``allowed``
(:mod:`dspseg.data.rasterise`), so filtering is one masked arg-max:

    PL_j = argmax_{c ∈ A_j} s_c(f_j)

Padding pixels (``valid`` False) get ``ignore_index``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def filter_pseudo_labels(scores: Tensor, allowed: Tensor, valid: Tensor, ignore_index: int) -> Tensor:
    """Filtered hard pseudo-labels.

    Args:
        scores: (B,C,H,W) class scores or logits (any monotone transform gives the same labels).
        allowed: (B,C,H,W) bool admissible classes; every valid pixel must admit at least one class.
        valid: (B,H,W) bool.
        ignore_index: label written on invalid pixels.

    Returns:
        (B,H,W) long pseudo-labels (no gradient).
    """
    if allowed.shape != scores.shape:
        raise ValueError(f"allowed must have the shape of scores {tuple(scores.shape)}, got {tuple(allowed.shape)}")
    with torch.no_grad():
        masked = scores.detach().masked_fill(~allowed, float("-inf"))
        labels = masked.argmax(dim=1)
        return labels.masked_fill(~valid, ignore_index)


def confident(scores_as_logits: Tensor, allowed: Tensor, threshold: float) -> Tensor:
    """(B,H,W) bool: the filtered softmax's top probability is at least ``threshold`` (FixMatch).

    The softmax is taken over the admissible classes only, so a pixel with a single admissible class
    (a mask pixel, a point) is always confident.
    """
    with torch.no_grad():
        masked = scores_as_logits.detach().float().masked_fill(~allowed, float("-inf"))
        return torch.softmax(masked, dim=1).amax(dim=1) >= threshold
