"""Turn any manifest record into the arrays every method consumes (DESIGN §1).

For an image of shape (H, W) and C classes, :func:`rasterise` returns an :class:`Annotation` with

* ``allowed`` (C, H, W) bool — the admissible classes A_j of every pixel j (paper eq. 8);
* ``target`` (H, W) int64 — the cross-entropy target (mask ids, ``ignore_index`` elsewhere);
* the positive bags of eq. 9: mask ``instances`` (8-connected components), ``points``, ``boxes`` and
  ``image_labels``.

**The image's classes** ``I`` (``image_classes``), by :func:`dspseg.data.rules.image_classes` (the
one home of every annotation rule used here): ``labels`` if given (authoritative); else the classes
its boxes or points name (complete by the manifest's contract), together with the classes a mask on
the same image shows; else, for a mask, the classes it contains when it has no ignore pixel and all
classes when it has one; else (unlabeled) all classes.

**Admissible classes**, applied in order of increasing strength:

1. weak map ``W``: without boxes ``W[c, j] = c ∈ I``. With boxes,
   ``W[c, j] = (some box of class c covers j) or (c ∈ I and c has no box)``: boxes cover every
   instance of their class, so a boxed class cannot occur outside its boxes;
2. a pixel with ``W[:, j]`` empty contradicts the annotation (outside every box of an all-boxed image,
   or ``labels == []``): it falls back to ``I`` (all classes if ``I`` is empty) and is a *conflict*;
3. point pixel → exactly the point's class (the union, if points of several classes share a pixel);
4. mask pixel (value ≠ ``ignore_index``) → exactly its class. Ignore pixels keep what 1–3 allow.

``conflicts`` counts the pixels where the annotation contradicts itself: step 2's fallbacks, point
pixels whose class step 1 excluded (or with points of two classes), and mask pixels whose class steps
1–3 excluded; in the last two cases the stronger annotation wins. Consistent annotations give 0.

**Bags**: ``instances`` / ``instance_classes`` from the mask, ``points`` (P, 3) rows
``[class, row, col]``, ``boxes`` (Nb, 5) rows ``[class, x0, y0, x1, y1]`` (half-open, x = column),
``image_labels`` = the explicit ``labels``. With ``derive_weak=True`` (paper §3.1: a masked image also
has every weaker annotation) the mask's derived boxes and points (:mod:`dspseg.data.weak`) are
appended to the bags, and ``image_labels`` also gets every class shown by the mask, the boxes or the
points (so a box/point image without ``labels`` gets its class set). ``allowed`` does not change: boxes
derived from a partial mask do not cover the instances hidden in its gaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dspseg.data import rules
from dspseg.data.manifest import ImageRecord
from dspseg.data.weak import check_mask, components_of_checked, weak_from_instances
from dspseg.vocabulary import BOX, POINT


@dataclass
class Annotation:
    """Everything a method needs to know about one image's annotation: the annotation fields of
    :class:`dspseg.data.batch.Batch` for one image, under the same names (their shapes, dtypes and
    meaning are declared there, once; the dataset copies them by name), plus its kind and conflicts.
    Tables use the record layouts :data:`~dspseg.vocabulary.POINT` and :data:`~dspseg.vocabulary.BOX`;
    ``image_labels`` is ascending; ``instances`` may be int32 here (the batch casts)."""

    allowed: np.ndarray
    target: np.ndarray
    instances: np.ndarray
    instance_classes: np.ndarray
    points: np.ndarray
    boxes: np.ndarray
    image_labels: np.ndarray
    image_classes: np.ndarray
    kind: str  # record.annotation_type (dspseg.vocabulary.KINDS)
    conflicts: int  # pixels where the annotation contradicted itself and fell back


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape: expected (H, W), got {shape!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"shape: expected positive (H, W), got {(h, w)}")
    return h, w


def _class_id(name: str, index: dict[str, int], field: str) -> int:
    if name not in index:
        raise ValueError(f"{field}: unknown class {name!r}; the dataset's classes are {list(index)}")
    return index[name]


def _boxes_array(record: ImageRecord, index: dict[str, int], h: int, w: int) -> np.ndarray:
    """The record's boxes as a (Nb, 5) :data:`~dspseg.vocabulary.BOX` table; raises on the first box
    that is empty, leaves the (h, w) image (:func:`~dspseg.data.rules.box_findings`) or names an
    unknown class, in box order."""
    xyxy = [b.xyxy for b in record.boxes or []]
    broken = {f.index: f for f in rules.box_findings(xyxy, (h, w))}
    out = np.zeros((len(xyxy), BOX.width), np.int64)
    for i, b in enumerate(record.boxes or []):
        if i in broken:
            raise ValueError(f"boxes[{i}].xyxy: {list(b.xyxy)} is empty or outside the {w}x{h} (W x H) image; "
                             "need 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H (half-open)")
        out[i] = (_class_id(b.cls, index, f"boxes[{i}].class"), *b.xyxy)
    return out


def _points_array(record: ImageRecord, index: dict[str, int], h: int, w: int) -> np.ndarray:
    """The record's points as a (P, 3) :data:`~dspseg.vocabulary.POINT` table ``[class, row, col]``;
    raises on the first point outside the (h, w) image or with an unknown class, in point order."""
    outside = {f.index for f in rules.point_findings([p.xy for p in record.points or []], (h, w))}
    out = np.zeros((len(record.points or []), POINT.width), np.int64)
    for i, p in enumerate(record.points or []):
        x, y = p.xy
        if i in outside:
            raise ValueError(f"points[{i}].xy: {list(p.xy)} is outside the {w}x{h} (W x H) image")
        out[i] = (_class_id(p.cls, index, f"points[{i}].class"), y, x)
    return out


def _image_classes(record: ImageRecord, n: int, labels: np.ndarray, named: set[int],
                   mask_present: np.ndarray | None, mask_has_ignore: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return (I, shown), both (C,) bool: the image's classes (:func:`~dspseg.data.rules.image_classes`)
    and the classes a box, point (``named``: their class ids) or mask pixel shows."""
    declared = rules.declared_classes(set(labels.tolist()) if record.labels is not None else None,
                                      named if named else None)
    image = rules.image_classes(n, declared, record.labels is not None, mask_present, mask_has_ignore)
    shown = np.zeros(n, bool)
    shown[sorted(named)] = True
    if mask_present is not None:
        shown |= mask_present
    return image, shown


def _weak_allowed(image_classes: np.ndarray, boxes: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1–2: the weak map W (C, H, W) and the fallback conflict map (H, W)
    (:func:`~dspseg.data.rules.uncovered`: the pixels no class is admissible at)."""
    n = len(image_classes)
    if len(boxes) == 0:
        allowed = np.repeat(image_classes[:, None, None], h * w, axis=1).reshape(n, h, w)
    else:
        allowed = np.zeros((n, h, w), bool)
        boxed = np.zeros(n, bool)
        for c, x0, y0, x1, y1 in boxes.tolist():
            allowed[c, y0:y1, x0:x1] = True
            boxed[c] = True
        allowed[image_classes & ~boxed] = True
    empty = rules.uncovered(boxes, np.flatnonzero(image_classes).tolist(), h, w)
    if empty.any():
        fallback = image_classes if image_classes.any() else np.ones(n, bool)
        allowed[:, empty] = fallback[:, None]
    return allowed, empty


def _apply_points(allowed: np.ndarray, conflict: np.ndarray, points: np.ndarray) -> None:
    """Step 3, in place: point pixels admit exactly their point class(es)."""
    if len(points) == 0:
        return
    cls, row, col = points.T
    excluded = ~allowed[cls, row, col]
    conflict[row[excluded], col[excluded]] = True
    pixel_class = np.unique(np.stack([row, col, cls], axis=1), axis=0)
    pixels, counts = np.unique(pixel_class[:, :2], axis=0, return_counts=True)
    multi = pixels[counts > 1]
    conflict[multi[:, 0], multi[:, 1]] = True
    allowed[:, row, col] = False
    allowed[cls, row, col] = True


def rasterise(record: ImageRecord, classes: list[str], ignore_index: int, shape: tuple[int, int],
              mask: np.ndarray | None = None, derive_weak: bool = False, point_mode: str = "interior",
              rng: np.random.Generator | None = None, window: Sequence[int] | None = None) -> Annotation:
    """Rasterise one record onto its (H, W) grid, or only onto ``window`` of it (rules in the module
    docstring; windows in :func:`clip_boxes`).

    Args:
        record: the manifest record (its ``mask`` field says whether ``mask`` must be given).
        classes: the dataset's class names; ids are positions in this list.
        ignore_index: mask value of unannotated pixels (not a class id).
        shape: (H, W) of the image.
        mask: (H, W) integer mask array, required iff ``record.mask`` is set.
        derive_weak: also put the mask's derived boxes/points and every shown class into the bags.
        point_mode, rng: how derived points are chosen (see :func:`dspseg.data.weak.derive_weak_labels`).
        window: ``(r0, c0, h, w)`` inside the (H, W) image: every array is then (h, w) (``mask`` too:
            the window's mask), the tables are moved into the window (boxes clipped, points outside
            dropped) and a class boxed anywhere in the image stays excluded outside its boxes.

    Raises:
        ValueError naming the field and the value: shape mismatch, mask values that are neither a
        class nor ``ignore_index``, unknown class names, empty or out-of-image boxes, out-of-image points.
    """
    h, w = _check_shape(shape)
    n = len(classes)
    index = {name: i for i, name in enumerate(classes)}
    if n == 0 or len(index) != n:
        raise ValueError(f"classes: expected a non-empty list of distinct names, got {classes!r}")
    labels = np.array(sorted({_class_id(name, index, f"labels[{i}]") for i, name in enumerate(record.labels or [])}),
                      np.int64)
    boxes = _boxes_array(record, index, h, w)
    points = _points_array(record, index, h, w)
    named = set(boxes[:, BOX.c].tolist()) | set(points[:, POINT.c].tolist())  # of the whole image
    if window is not None:
        r0, c0, h, w = _check_window(window, h, w)
        boxes = clip_boxes(boxes, r0, c0, h, w)  # empty ones kept: their class is still boxed
        points = shift_points(points, r0, c0, h, w)

    if record.mask is not None and mask is None:
        raise ValueError(f"mask: the record names mask file {record.mask!r} but no mask array was given")
    if record.mask is None and mask is not None:
        raise ValueError(f"mask: an array was given but the record {record.file!r} has no 'mask' field")
    m = None if mask is None else check_mask(mask, n, ignore_index)
    if m is not None and np.shares_memory(m, mask):
        m = m.copy()  # the target must not alias the caller's array
    if m is not None and m.shape != (h, w):
        raise ValueError(f"mask: shape {m.shape} differs from the image shape {(h, w)}")

    annotated = onehot = present = None
    if m is not None:
        annotated = m != ignore_index
        ids = m.astype(np.uint8 if n < 255 else np.int64)  # small ids make the one-hot cheap
        ids[~annotated] = n
        onehot = ids[None] == np.arange(n, dtype=ids.dtype)[:, None, None]  # (C, H, W); False at ignore
        present = onehot.any(axis=(1, 2))
    image_classes, shown = _image_classes(record, n, labels, named, present,
                                          bool(m is not None and not annotated.all()))
    allowed, conflict = _weak_allowed(image_classes, boxes, h, w)
    boxes = boxes[~rules.box_empty(boxes[:, BOX.xyxy])]
    _apply_points(allowed, conflict, points)

    if m is None:
        target = np.full((h, w), ignore_index, np.int64)
        instances, instance_classes = np.zeros((h, w), np.int32), np.zeros(0, np.int64)
    else:
        target = m
        if len(boxes) == 0 and len(points) == 0:
            # W is I everywhere: a mask pixel contradicts it iff its class is outside I.
            excluded = present & ~image_classes
            if excluded.any():
                conflict |= onehot[excluded].any(axis=0)
        else:
            conflict |= annotated & ~np.logical_and(onehot, allowed).any(axis=0)  # allowed[m[j], j] is False
        allowed &= ~annotated[None]
        allowed |= onehot
        instances, instance_classes = components_of_checked(m, n, ignore_index)

    image_labels = labels
    if derive_weak:
        if m is not None:
            wboxes, wpoints, _ = weak_from_instances(instances, instance_classes, point_mode, rng)
            boxes = np.concatenate([boxes, wboxes])
            points = np.concatenate([points, wpoints])
        image_labels = np.flatnonzero(shown | np.isin(np.arange(n), labels)).astype(np.int64)

    return Annotation(allowed=allowed, target=target, instances=instances, instance_classes=instance_classes,
                      points=points, boxes=boxes, image_labels=image_labels, image_classes=image_classes,
                      kind=record.annotation_type, conflicts=int(conflict.sum()))


def _check_window(window: Sequence[int], h: int, w: int) -> tuple[int, int, int, int]:
    r0, c0, wh, ww = (int(v) for v in window)
    if r0 < 0 or c0 < 0 or wh < 1 or ww < 1 or r0 + wh > h or c0 + ww > w:
        raise ValueError(f"window: {tuple(window)} (r0, c0, h, w) does not fit the {w}x{h} (W x H) image")
    return r0, c0, wh, ww


def crop_instances(window: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instance ids (1..M) of a window renumbered 1..m over those present; their classes (m,)."""
    if classes.size == 0:
        return window, classes
    present = np.unique(window)
    present = present[present > 0]
    lut = np.zeros(classes.size + 1, dtype=np.int64)
    lut[present] = np.arange(1, present.size + 1)
    return lut[window], classes[present - 1]


def shift_points(points: np.ndarray, r0: int, c0: int, vh: int, vw: int) -> np.ndarray:
    """(P, 3) :data:`~dspseg.vocabulary.POINT` rows → moved by (-r0, -c0), keeping those inside
    [0, vh) × [0, vw)."""
    p = points.copy()
    p[:, POINT.row] -= r0
    p[:, POINT.col] -= c0
    keep = (p[:, POINT.row] >= 0) & (p[:, POINT.row] < vh) & (p[:, POINT.col] >= 0) & (p[:, POINT.col] < vw)
    return p[keep]


def clip_boxes(boxes: np.ndarray, r0: int, c0: int, vh: int, vw: int) -> np.ndarray:
    """(Nb, 5) :data:`~dspseg.vocabulary.BOX` rows (half-open, x = column) → moved by (-c0, -r0) and
    clipped to [0, vw] × [0, vh]; boxes left empty are kept (a window's W map needs their class)."""
    b = boxes.copy()
    xs, ys = [BOX.x0, BOX.x1], [BOX.y0, BOX.y1]
    b[:, xs] = (b[:, xs] - c0).clip(0, vw)
    b[:, ys] = (b[:, ys] - r0).clip(0, vh)
    return b


def shift_boxes(boxes: np.ndarray, r0: int, c0: int, vh: int, vw: int) -> np.ndarray:
    """:func:`clip_boxes`, dropping the boxes left empty."""
    b = clip_boxes(boxes, r0, c0, vh, vw)
    return b[~rules.box_empty(b[:, BOX.xyxy])]
