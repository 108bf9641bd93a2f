r"""Pooling of class scores over the positive bags of eq. 9 (paper §3.5).

Each annotation yields positives: a pooled score of one class over a bag of pixels.

=========== ============================================================ =====================
type        bag                                                          pooling
=========== ============================================================ =====================
mask        one connected component of one class                         mean of ``s_c``
point       the clicked pixel                                            ``s_c`` itself
image       the whole valid image, for each class of its label set       mean of ``s_c``
box         the box                                                      mean of the maxima of
                                                                          ``s_c`` along every
                                                                          row and every column
=========== ============================================================ =====================

All functions take the scores ``s`` (B,C,H,W) and the batch's bags in the collated layout of
:mod:`dspseg.data.dataset` (a leading batch-index column), return (P,) pooled scores and (P,)
classes, and never loop over bags in Python: the work is proportional to the pixels the bags
cover.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pool_instances(scores: Tensor, instances: Tensor, instance_classes: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of ``s_c`` over each mask component (class c = the component's class).

    Args:
        scores: (B,C,H,W).
        instances: (B,H,W) integer ids, 0 = no component, 1..M batch-unique.
        instance_classes: (M,) class of each component.

    Returns:
        pooled (M,) and classes (M,). Components with no pixel left (cropped away) are dropped.
    """
    m = instance_classes.shape[0]
    if m == 0:
        return scores.new_zeros(0), instance_classes.new_zeros(0)
    inst = instances.reshape(-1).long()
    sel = inst > 0
    ids = inst[sel] - 1
    b, c, h, w = scores.shape
    pix = torch.arange(b * h * w, device=scores.device)[sel]
    bi, rest = pix // (h * w), pix % (h * w)
    cls = instance_classes[ids]
    vals = scores.reshape(b, c, h * w)[bi, cls, rest]
    sums = scores.new_zeros(m).index_add_(0, ids, vals)
    counts = torch.bincount(ids, minlength=m)
    keep = counts > 0
    return sums[keep] / counts[keep].to(scores.dtype), instance_classes[keep]


def pool_points(scores: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """``s_c`` at each clicked pixel. points: (P,4) rows ``[b, c, row, col]``."""
    if points.shape[0] == 0:
        return scores.new_zeros(0), points.new_zeros(0)
    p = points.long()
    return scores[p[:, 0], p[:, 1], p[:, 2], p[:, 3]], p[:, 1]


def pool_images(scores: Tensor, image_labels: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of ``s_c`` over the valid pixels of the image, for each image label.

    Args:
        image_labels: (L,2) rows ``[b, c]``.
        valid: (B,H,W) bool.
    """
    if image_labels.shape[0] == 0:
        return scores.new_zeros(0), image_labels.new_zeros(0)
    lab = image_labels.long()
    maps = scores[lab[:, 0], lab[:, 1]]  # (L,H,W)
    v = valid[lab[:, 0]].to(scores.dtype)
    return (maps * v).sum(dim=(1, 2)) / v.sum(dim=(1, 2)).clamp_min(1), lab[:, 1]


def _box_pixels(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Flattened (box id, row offset, col offset) of every pixel of every box."""
    x0, y0, x1, y1 = boxes[:, 2], boxes[:, 3], boxes[:, 4], boxes[:, 5]
    hs, ws = y1 - y0, x1 - x0
    areas = hs * ws
    box_id = torch.repeat_interleave(torch.arange(boxes.shape[0], device=boxes.device), areas)
    start = torch.cumsum(areas, 0) - areas
    local = torch.arange(box_id.shape[0], device=boxes.device) - start[box_id]
    return box_id, local // ws[box_id], local % ws[box_id]


def pool_boxes(scores: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean of the row and column maxima of ``s_c`` inside each box (the tightness prior [58]).

    For a box of class c with rows ``Y`` and columns ``X``:
    ``pooled = (Σ_{y∈Y} max_{x∈X} s_c(y,x) + Σ_{x∈X} max_{y∈Y} s_c(y,x)) / (|Y| + |X|)``.

    Args:
        boxes: (Nb,6) rows ``[b, c, x0, y0, x1, y1]``, half-open, non-empty, inside the image.
    """
    if boxes.shape[0] == 0:
        return scores.new_zeros(0), boxes.new_zeros(0)
    bx = boxes.long()
    hs, ws = bx[:, 5] - bx[:, 3], bx[:, 4] - bx[:, 2]
    if bool((hs <= 0).any() or (ws <= 0).any()):
        raise ValueError("pool_boxes: every box needs x1 > x0 and y1 > y0 (empty boxes must be dropped before)")
    box_id, dy, dx = _box_pixels(bx)
    vals = scores[bx[box_id, 0], bx[box_id, 1], bx[box_id, 3] + dy, bx[box_id, 2] + dx]
    row_start = torch.cumsum(hs, 0) - hs
    col_start = torch.cumsum(ws, 0) - ws
    n_rows, n_cols = int(hs.sum()), int(ws.sum())
    fill = torch.finfo(scores.dtype).min
    row_max = scores.new_full((n_rows,), fill).scatter_reduce(0, row_start[box_id] + dy, vals, "amax")
    col_max = scores.new_full((n_cols,), fill).scatter_reduce(0, col_start[box_id] + dx, vals, "amax")
    nb = bx.shape[0]
    row_box = torch.repeat_interleave(torch.arange(nb, device=bx.device), hs)
    col_box = torch.repeat_interleave(torch.arange(nb, device=bx.device), ws)
    total = scores.new_zeros(nb).index_add_(0, row_box, row_max).index_add_(0, col_box, col_max)
    return total / (hs + ws).to(scores.dtype), bx[:, 1]
