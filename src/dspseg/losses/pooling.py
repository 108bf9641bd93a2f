r"""Pooling of class scores over the positive bags of eq. 9 (paper §3.5).

Each annotation yields positives: a pooled score of one class over a bag of pixels.

=========== ================================================ ==========================================
type        bag                                              pooling
=========== ================================================ ==========================================
mask        one connected component of one class              mean of ``s_c``
point       the clicked pixel                                 ``s_c`` itself
image       the whole valid image, for each labelled class    mean of ``s_c``
box         the box                                           mean of the maxima of ``s_c`` along every
                                                              row and every column of the box
=========== ================================================ ==========================================

Box pooling, for a box of class c with rows ``Y`` and columns ``X`` (the tightness prior [58]):
``(Σ_{y∈Y} max_{x∈X} s_c(y,x) + Σ_{x∈X} max_{y∈Y} s_c(y,x)) / (|Y| + |X|)``.

Implementation: every bag is turned into flat indices into ``scores.view(-1)`` plus segment ids;
:func:`pool_all` gathers the values of *all* bags with one indexing operation (so backward
scatters into one gradient buffer, not one per bag type) and reduces each segment with
``index_add_`` (means) or ``scatter_reduce`` (maxima). Nothing loops over bags in Python; the
work is proportional to the pixels the bags cover. Bags come in the collated layout of
:mod:`dspseg.data.dataset` (a leading batch-index column).
"""

from __future__ import annotations

import torch
from torch import Tensor

POSITIVE_TYPES = ("mask", "box", "point", "image")


def _instance_index(shape, instances: Tensor, instance_classes: Tensor):
    """Flat indices of every component pixel of its own class, and the component id of each."""
    b, c, h, w = shape
    inst = instances.reshape(-1).long()
    pix = torch.nonzero(inst > 0).flatten()
    ids = inst[pix] - 1
    bi, rest = pix // (h * w), pix % (h * w)
    flat = (bi * c + instance_classes[ids]) * (h * w) + rest
    return flat, ids


def _point_index(shape, points: Tensor):
    b, c, h, w = shape
    p = points.long()
    return ((p[:, 0] * c + p[:, 1]) * h + p[:, 2]) * w + p[:, 3]


def _image_index(shape, image_labels: Tensor, valid: Tensor):
    """Flat indices of every valid pixel of each labelled (image, class), and the label id of each."""
    b, c, h, w = shape
    lab = image_labels.long()
    per_label = valid[lab[:, 0]].reshape(lab.shape[0], h * w)  # (L, h*w)
    seg, rest = torch.nonzero(per_label, as_tuple=True)
    flat = (lab[seg, 0] * c + lab[seg, 1]) * (h * w) + rest
    return flat, seg


def _box_index(shape, boxes: Tensor):
    """Flat indices of every pixel of every box, with its (row bucket, column bucket)."""
    b, c, h, w = shape
    bx = boxes.long()
    hs, ws = bx[:, 5] - bx[:, 3], bx[:, 4] - bx[:, 2]
    if bool((hs <= 0).any() or (ws <= 0).any()):
        raise ValueError("box pooling: every box needs x1 > x0 and y1 > y0 (drop empty boxes before)")
    areas = hs * ws
    box_id = torch.repeat_interleave(torch.arange(bx.shape[0], device=bx.device), areas)
    local = torch.arange(box_id.shape[0], device=bx.device) - (torch.cumsum(areas, 0) - areas)[box_id]
    dy, dx = local // ws[box_id], local % ws[box_id]
    flat = ((bx[box_id, 0] * c + bx[box_id, 1]) * h + bx[box_id, 3] + dy) * w + bx[box_id, 2] + dx
    row_bucket = (torch.cumsum(hs, 0) - hs)[box_id] + dy
    col_bucket = (torch.cumsum(ws, 0) - ws)[box_id] + dx
    return flat, row_bucket, col_bucket, hs, ws


def _segment_mean(values: Tensor, seg: Tensor, n: int) -> tuple[Tensor, Tensor]:
    sums = values.new_zeros(n).index_add_(0, seg, values)
    counts = torch.bincount(seg, minlength=n)
    return sums / counts.clamp_min(1).to(values.dtype), counts


def _box_reduce(values: Tensor, row_bucket: Tensor, col_bucket: Tensor, hs: Tensor, ws: Tensor) -> Tensor:
    fill = torch.finfo(values.dtype).min
    row_max = values.new_full((int(hs.sum()),), fill).scatter_reduce(0, row_bucket, values, "amax")
    col_max = values.new_full((int(ws.sum()),), fill).scatter_reduce(0, col_bucket, values, "amax")
    nb = hs.shape[0]
    ids = torch.arange(nb, device=hs.device)
    total = values.new_zeros(nb).index_add_(0, torch.repeat_interleave(ids, hs), row_max)
    total = total.index_add_(0, torch.repeat_interleave(ids, ws), col_max)
    return total / (hs + ws).to(values.dtype)


def pool_all(scores: Tensor, instances: Tensor, instance_classes: Tensor, points: Tensor, boxes: Tensor,
             image_labels: Tensor, valid: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """Pool ``scores`` over every bag of the batch with a single gather.

    Args:
        scores: (B,C,H,W) per-pixel class scores (or probabilities).
        instances: (B,H,W) batch-unique component ids, 0 = none; instance_classes: (M,).
        points: (P,4) ``[b, c, row, col]``; boxes: (Nb,6) ``[b, c, x0, y0, x1, y1]`` half-open,
            non-empty, inside the image; image_labels: (L,2) ``[b, c]``; valid: (B,H,W) bool.

    Returns:
        ``{type: (pooled (P_t,), classes (P_t,))}`` for ``mask``, ``box``, ``point``, ``image``.
        Components with no pixel left (e.g. cropped away) are dropped.
    """
    shape = tuple(scores.shape)
    m = instance_classes.shape[0]
    inst_flat, inst_seg = _instance_index(shape, instances, instance_classes) if m else (None, None)
    pt_flat = _point_index(shape, points)
    im_flat, im_seg = _image_index(shape, image_labels, valid)
    box_flat, row_b, col_b, hs, ws = _box_index(shape, boxes)
    parts = [x for x in (inst_flat, pt_flat, im_flat, box_flat) if x is not None]
    values = scores.reshape(-1)[torch.cat(parts)] if parts else scores.new_zeros(0)
    sizes = [0 if inst_flat is None else inst_flat.numel(), pt_flat.numel(), im_flat.numel(), box_flat.numel()]
    inst_v, pt_v, im_v, box_v = torch.split(values, sizes)

    out = {}
    if m:
        pooled, counts = _segment_mean(inst_v, inst_seg, m)
        out["mask"] = (pooled[counts > 0], instance_classes[counts > 0])
    else:
        out["mask"] = (scores.new_zeros(0), instance_classes.new_zeros(0))
    out["point"] = (pt_v, points[:, 1].long())
    out["image"] = (_segment_mean(im_v, im_seg, image_labels.shape[0])[0], image_labels[:, 1].long())
    out["box"] = (_box_reduce(box_v, row_b, col_b, hs, ws) if boxes.shape[0] else scores.new_zeros(0),
                  boxes[:, 1].long())
    return out


def pool_boxes(scores: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Box pooling alone (see the module docstring): (pooled (Nb,), classes (Nb,))."""
    if boxes.shape[0] == 0:
        return scores.new_zeros(0), boxes.new_zeros(0)
    flat, row_b, col_b, hs, ws = _box_index(tuple(scores.shape), boxes)
    return _box_reduce(scores.reshape(-1)[flat], row_b, col_b, hs, ws), boxes[:, 1].long()
