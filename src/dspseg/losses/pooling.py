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
:class:`dspseg.data.batch.Bags` (the :mod:`dspseg.vocabulary` tables ``BATCH_POINT``, ``BATCH_BOX``,
``BATCH_LABEL``: a leading batch-index column).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dspseg.vocabulary import BATCH_BOX as BX
from dspseg.vocabulary import BATCH_LABEL as LB
from dspseg.vocabulary import BATCH_POINT as PT


def _instance_index(shape, instances: Tensor, instance_classes: Tensor):
    """Flat indices of every pixel of the images that have components (pixel of no component:
    index of class 0, segment ``M`` = discarded), and the segment (component id) of each."""
    b, c, h, w = shape
    hw = h * w
    inst = instances.reshape(b, hw).long()
    images = torch.nonzero((inst > 0).any(dim=1)).flatten()  # only images with components
    inst = inst[images]  # (Bm, hw)
    m = instance_classes.shape[0]
    seg = torch.where(inst > 0, inst - 1, m)  # component id, m = none
    cls = torch.cat([instance_classes.long(), instance_classes.new_zeros(1)])[seg]
    flat = (images.unsqueeze(1) * c + cls) * hw + torch.arange(hw, device=inst.device)
    return flat.reshape(-1), seg.reshape(-1)


def _point_index(shape, points: Tensor):
    b, c, h, w = shape
    p = points.long()
    return ((p[:, PT.b] * c + p[:, PT.c]) * h + p[:, PT.row]) * w + p[:, PT.col]


def _image_index(shape, image_labels: Tensor):
    """Flat indices of every pixel of each labelled (image, class) map: (L, h*w)."""
    b, c, h, w = shape
    lab = image_labels.long()
    base = (lab[:, LB.b] * c + lab[:, LB.c]) * (h * w)
    return (base.unsqueeze(1) + torch.arange(h * w, device=lab.device)).reshape(-1)


def _buckets(sizes: Tensor) -> Tensor:
    """Power-of-two bucket of each size (1, 2, 4, ...): padding within a bucket at most doubles it."""
    return torch.ceil(torch.log2(sizes.clamp_min(1).double())).long()


def box_sizes(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Heights ``y1 − y0`` and widths ``x1 − x0`` of (Nb,6) :data:`~dspseg.vocabulary.BATCH_BOX` rows."""
    bx = boxes.long()
    return bx[:, BX.y1] - bx[:, BX.y0], bx[:, BX.x1] - bx[:, BX.x0]


def _box_index(shape, boxes: Tensor):
    """Boxes grouped by (height, width) power-of-two bucket; per group the flat indices of a padded
    (n, H_k, W_k) window (padding points at the box's first pixel) and its in-box mask."""
    b, c, h, w = shape
    bx = boxes.long()
    hs, ws = box_sizes(bx)
    if bool((hs <= 0).any() or (ws <= 0).any()):
        raise ValueError("box pooling: every box needs x1 > x0 and y1 > y0 (drop empty boxes before)")
    key = _buckets(hs) * 64 + _buckets(ws)
    base_all = ((bx[:, BX.b] * c + bx[:, BX.c]) * h + bx[:, BX.y0]) * w + bx[:, BX.x0]
    # group on the host: a handful of boxes, and per-group tensor ops (nonzero, max) cost more than the windows
    hs_l, ws_l, members = hs.tolist(), ws.tolist(), {}
    for i, k in enumerate(key.tolist()):
        members.setdefault(k, []).append(i)
    groups = []
    for k in sorted(members):
        ids_l = members[k]
        ids = torch.tensor(ids_l, dtype=torch.long, device=bx.device)
        hk, wk = max(hs_l[i] for i in ids_l), max(ws_l[i] for i in ids_l)
        dy = torch.arange(hk, device=bx.device).view(1, hk, 1)
        dx = torch.arange(wk, device=bx.device).view(1, 1, wk)
        inside = (dy < hs[ids].view(-1, 1, 1)) & (dx < ws[ids].view(-1, 1, 1))
        flat = base_all[ids].view(-1, 1, 1) + (dy * w + dx) * inside  # padding: the box's first pixel
        groups.append((ids, flat, inside))
    return groups


def _segment_mean(values: Tensor, seg: Tensor, n: int) -> tuple[Tensor, Tensor]:
    sums = values.new_zeros(n).index_add_(0, seg, values)
    counts = torch.bincount(seg, minlength=n)[:n]
    return sums / counts.clamp_min(1).to(values.dtype), counts


def _box_reduce(groups, values_per_group: list[Tensor], hs: Tensor, ws: Tensor, nb: int) -> Tensor:
    """Mean of row and column maxima per box from the padded windows."""
    out = None
    for (ids, _, inside), vals in zip(groups, values_per_group):
        v = vals.masked_fill(~inside, float("-inf"))
        row = v.amax(dim=2).masked_fill(~inside.any(dim=2), 0.0).sum(dim=1)  # Σ_y max_x
        col = v.amax(dim=1).masked_fill(~inside.any(dim=1), 0.0).sum(dim=1)  # Σ_x max_y
        pooled = (row + col) / (hs[ids] + ws[ids]).to(vals.dtype)
        out = (vals.new_zeros(nb) if out is None else out).index_add(0, ids, pooled)
    return out


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
    b, c, h, w = shape
    m = instance_classes.shape[0]
    inst_flat, inst_seg = _instance_index(shape, instances, instance_classes) if m else (None, None)
    pt_flat = _point_index(shape, points)
    im_flat = _image_index(shape, image_labels)
    box_groups = _box_index(shape, boxes) if boxes.shape[0] else []
    parts = [x for x in (inst_flat, pt_flat, im_flat) if x is not None] + [g[1].reshape(-1) for g in box_groups]
    flat = torch.cat(parts) if parts else scores.new_zeros(0, dtype=torch.long)
    values = scores.reshape(-1).gather(0, flat)  # one gather; its backward is one scatter-add
    sizes = [0 if inst_flat is None else inst_flat.numel(), pt_flat.numel(), im_flat.numel()]
    inst_v, pt_v, im_v, box_v = torch.split(values, sizes + [values.numel() - sum(sizes)])

    out = {}
    if m:
        pooled, counts = _segment_mean(inst_v, inst_seg, m + 1)  # segment m collects non-component pixels
        pooled, counts = pooled[:m], counts[:m]
        out["mask"] = (pooled[counts > 0], instance_classes[counts > 0])
    else:
        out["mask"] = (scores.new_zeros(0), instance_classes.new_zeros(0))
    out["point"] = (pt_v, points[:, PT.c].long())
    lab = image_labels.long()
    v = valid[lab[:, LB.b]].reshape(lab.shape[0], h * w).to(scores.dtype)  # (L, h*w)
    im_mean = (im_v.reshape(-1, h * w) * v).sum(dim=1) / v.sum(dim=1).clamp_min(1)
    out["image"] = (im_mean, lab[:, LB.c])
    if box_groups:
        hs, ws = box_sizes(boxes)
        per_group = list(torch.split(box_v, [g[1].numel() for g in box_groups]))
        per_group = [vals.view(g[1].shape) for vals, g in zip(per_group, box_groups)]
        out["box"] = (_box_reduce(box_groups, per_group, hs, ws, boxes.shape[0]), boxes[:, BX.c].long())
    else:
        out["box"] = (scores.new_zeros(0), boxes[:, BX.c].long())
    return out


def pool_boxes(scores: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Box pooling alone (see the module docstring): (pooled (Nb,), classes (Nb,))."""
    b = scores.shape[0]
    empty = torch.zeros(0, dtype=torch.long)
    pooled = pool_all(scores, torch.zeros(b, *scores.shape[2:], dtype=torch.long), empty, empty.view(0, 4),
                      boxes, empty.view(0, 2), torch.ones(b, *scores.shape[2:], dtype=torch.bool))
    return pooled["box"]
