"""Pseudo-label filtering (paper §3.6): arg-max of the scores over the admissible classes only.

The paper's three rules — (i) image labels: classes outside the label set get −∞; (ii) boxes:
a boxed class gets −∞ outside its boxes; (iii) points: the point pixel takes the point's class —
and the mask rule (a mask pixel keeps its class) are all the admissible-class map ``allowed``
(:mod:`dspseg.data.rasterise`), so filtering is one masked arg-max:

    PL_j = argmax_{c ∈ A_j} s_c(f_j)

Padding pixels (``valid`` False) get ``ignore_index``. The L_PLF term of eq. 10 trains a student view
(the strong view, or the same view) towards these labels moved to it by the view's geometry:

    L_PLF = 1/|J_s| Σ_{j ∈ J_s} −log softmax(z^s_j)[move(PL)_j],   J_s = valid student pixels

(:func:`plf_loss`; FixMatch's thresholded variant keeps only the confident pixels, :func:`confident`
with :func:`dspseg.losses.ce.confident_cross_entropy`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dspseg.losses.ce import masked_cross_entropy


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
        # max(dim).indices, not argmax(dim): the same first maximal index (ties included), but on CPU
        # torch's argmax over a non-innermost dim of (B,C,H,W) is ~5x slower (16x9x96^2: 62 vs 12 ms)
        labels = masked.max(dim=1).indices
        return labels.masked_fill(~valid, ignore_index)


def confident(scores_as_logits: Tensor, allowed: Tensor, threshold: float) -> Tensor:
    """(B,H,W) bool: the filtered softmax's top probability is at least ``threshold`` (FixMatch).

    The softmax is taken over the admissible classes only, so a pixel with a single admissible class
    (a mask pixel, a point) is always confident.
    """
    with torch.no_grad():
        masked = scores_as_logits.detach().float().masked_fill(~allowed, float("-inf"))
        return torch.softmax(masked, dim=1).amax(dim=1) >= threshold


def plf_loss(teacher: Tensor, allowed: Tensor, valid: Tensor, student_logits: Tensor, student_valid: Tensor,
             ignore_index: int, move: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """L_PLF: cross-entropy of ``student_logits`` towards the filtered pseudo-labels of ``teacher``.

    Args:
        teacher: (B,C,H,W) scores or logits of the view that makes the labels (no gradient flows).
        allowed, valid: that view's (B,C,H,W) admissible classes and (B,H,W) valid pixels.
        student_logits: (B,C,H,W) logits of the view trained towards the labels; student_valid (B,H,W).
        move: the teacher → student geometry of a per-pixel map (None: the same view).

    Returns:
        scalar, the mean over the student's valid pixels (:func:`dspseg.losses.ce.masked_cross_entropy`).
    """
    pseudo = filter_pseudo_labels(teacher, allowed, valid, ignore_index)
    return masked_cross_entropy(student_logits, pseudo if move is None else move(pseudo), student_valid, ignore_index)
