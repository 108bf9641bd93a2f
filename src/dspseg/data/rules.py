"""One home per annotation rule (DESIGN §1): pure functions that say *what* is wrong, never how to say it.

Each rule takes plain values (coordinate tuples, integer tables, class-id sets, numpy masks) and
returns a verdict or a list of :class:`Finding` s; nothing here reads files, raises or phrases a
message. The consumers phrase the findings for their audience (nnU-Net's ``verify_dataset_integrity``
+ ``LabelManager`` split):

* :mod:`dspseg.data.validate` turns them into Problems (file, field, fix) and carries on;
* :mod:`dspseg.data.rasterise` and :mod:`dspseg.data.weak` raise ``ValueError`` on the first one;
* :mod:`dspseg.data.convert` clips boxes, drops what is left empty and refuses bad label images.

The rules (x = column, y = row; arrays are ``[row, col]``):

* **box** ``[x0, y0, x1, y1]`` (half-open): *empty* unless ``x1 > x0`` and ``y1 > y0``; *inside* an
  (H, W) image iff ``0 <= x0``, ``0 <= y0``, ``x1 <= W``, ``y1 <= H``.
* **point** ``[x, y]``: inside iff ``0 <= x < W`` and ``0 <= y < H``; two points on one pixel must not
  name two classes (a pixel has one class).
* **the image's classes** I: ``labels`` if given; else the classes its boxes or points name (complete
  by the manifest's contract); else, for a mask, the classes it shows if it has no unannotated pixel
  and all classes if it has one; else (unlabeled) all classes. See :func:`image_classes`.
* **coverage**: boxes cover every instance of their class, so when every class of I is boxed, a pixel
  outside every box admits no class (:func:`uncovered`), and a mask pixel of a boxed class outside its
  boxes contradicts them (:func:`mask_box_findings`).
* **mask values**: every value is a class id ``0..C-1`` or ``ignore_index``, and ``ignore_index``
  is no class id.

    >>> box_findings([(0, 0, 3, 2), (4, 1, 4, 3), (5, 0, 9, 2)], size=(4, 6))
    [Finding(rule='box_empty', index=1, value=(4, 1, 4, 3)), Finding(rule='box_outside', index=2, value=(5, 0, 9, 2))]
    >>> sorted(np.flatnonzero(image_classes(3, {1}, labels_given=False, mask_present=None)).tolist())
    [1]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from dspseg.vocabulary import BOX

#: rule names a :class:`Finding` carries
BOX_EMPTY, BOX_OUTSIDE, POINT_OUTSIDE = "box_empty", "box_outside", "point_outside"
POINT_REPEATED, POINT_CLASH = "point_repeated", "point_clash"
BOX_WITHOUT_CLASS, CLASS_OUTSIDE_BOXES, POINT_DISAGREES = "box_without_class", "class_outside_boxes", "point_disagrees"


@dataclass(frozen=True)
class Finding:
    """One broken rule: ``rule`` (a name above), ``index`` of the entry in its list (box ``k``, point
    ``k``, or the class id for per-class rules) and ``value``, the numbers a message needs."""

    rule: str
    index: int
    value: tuple[int, ...]


# ---------------------------------------------------------------------------------- boxes, points


def box_empty(xyxy: Sequence[int] | np.ndarray) -> bool | np.ndarray:
    """True where a half-open box ``[x0, y0, x1, y1]`` covers no pixel; (..., 4) in, (...) out."""
    b = np.asarray(xyxy)
    return (b[..., 2] <= b[..., 0]) | (b[..., 3] <= b[..., 1])


def box_inside(xyxy: Sequence[int], h: int, w: int) -> bool:
    """Whether the box lies in an image of ``h`` rows and ``w`` columns (emptiness is not checked)."""
    x0, y0, x1, y1 = xyxy
    return x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h


def box_fits_swapped(xyxy: Sequence[int], h: int, w: int) -> bool:
    """Whether the box would fit the (h, w) image with x and y exchanged (a row/column mix-up)."""
    x0, y0, x1, y1 = xyxy
    return y0 >= 0 and x0 >= 0 and y1 <= w and x1 <= h


def box_reversed(xyxy: Sequence[int]) -> bool:
    """Whether a corner lies before its start (``x1 < x0`` or ``y1 < y0``): likely ``[x, y, w, h]``."""
    x0, y0, x1, y1 = xyxy
    return x1 < x0 or y1 < y0


def clip_box(xyxy: Sequence[int], h: int, w: int) -> tuple[int, int, int, int]:
    """The part of a box inside the (h, w) image (possibly empty: see :func:`box_empty`)."""
    x0, y0, x1, y1 = xyxy
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)


def point_inside(xy: Sequence[int], h: int, w: int) -> bool:
    """Whether pixel ``[x, y]`` lies in an image of ``h`` rows and ``w`` columns."""
    x, y = xy
    return 0 <= x < w and 0 <= y < h


def box_findings(boxes: Sequence[Sequence[int]], size: tuple[int, int] | None = None) -> list[Finding]:
    """``box_empty`` for every empty box and, given ``size`` (H, W), ``box_outside`` for every other
    box that leaves the image; ``index`` is the box's position, ``value`` its ``(x0, y0, x1, y1)``."""
    out = []
    for k, b in enumerate(boxes):
        b = tuple(int(v) for v in b)
        if box_empty(b):
            out.append(Finding(BOX_EMPTY, k, b))
        elif size is not None and not box_inside(b, *size):
            out.append(Finding(BOX_OUTSIDE, k, b))
    return out


def point_findings(points: Sequence[Sequence[int]], size: tuple[int, int]) -> list[Finding]:
    """``point_outside`` for every ``[x, y]`` outside the (H, W) image; ``value`` is ``(x, y)``."""
    return [Finding(POINT_OUTSIDE, k, tuple(int(v) for v in p)) for k, p in enumerate(points)
            if not point_inside(p, *size)]


def coinciding_points(points: Sequence[tuple[Sequence[int], str]]) -> list[Finding]:
    """Points ``(xy, class)`` on a pixel an earlier point already marks: ``point_clash`` when the
    classes differ, ``point_repeated`` when they agree; ``value`` is ``(first point's index,)``."""
    out, first = [], {}
    for k, (xy, cls) in enumerate(points):
        key = tuple(xy)
        if key in first:
            j, cls_j = first[key]
            out.append(Finding(POINT_CLASH if cls_j != cls else POINT_REPEATED, k, (j,)))
        else:
            first[key] = (k, cls)
    return out


# ---------------------------------------------------------------------------------- the image's classes


def declared_classes(labels: set[int] | None, weak: set[int] | None) -> set[int] | None:
    """The classes a record claims are complete: ``labels`` if given, else the classes its boxes and
    points name (``weak``; ``None`` when the record has neither), else ``None`` (no claim)."""
    if labels is not None:
        return set(labels)
    return None if weak is None else set(weak)


def image_classes(n: int, declared: set[int] | None, labels_given: bool, mask_present: np.ndarray | None,
                  mask_has_ignore: bool = False) -> np.ndarray:
    """The image's classes I (DESIGN §1) as a (C,) bool vector.

    Args:
        n: number of classes C.
        declared: :func:`declared_classes` of the record.
        labels_given: whether ``declared`` came from ``labels`` (authoritative as written).
        mask_present: (C,) bool, the classes a mask on the image shows, or ``None`` without a mask.
        mask_has_ignore: whether that mask has unannotated pixels.

    Returns ``labels``; else the classes of the boxes and points together with those the mask shows
    (a consistent record's mask shows no other class, so this is §1's rule; on a record whose mask
    contradicts its boxes or points, which ``validate`` reports as an error, the mask, the stronger
    annotation, wins); else the mask's classes if it annotates every pixel; else all classes.
    """
    out = np.zeros(n, bool)
    if declared is not None:
        out[sorted(declared)] = True
        if not labels_given and mask_present is not None:
            out |= mask_present
    elif mask_present is not None and not mask_has_ignore:
        out[:] = mask_present
    else:
        out[:] = True
    return out


def uncovered(boxes: np.ndarray, classes: Iterable[int], h: int, w: int) -> np.ndarray:
    """(H, W) bool: the pixels that admit no class because every class of the image is boxed and no
    box covers them (all False as soon as one class of the image has no box).

    ``boxes`` is an (Nb, 5) :data:`~dspseg.vocabulary.BOX` table ``[class, x0, y0, x1, y1]`` of
    non-empty boxes inside the image; ``classes`` the image's class ids. Without boxes this is
    all True exactly when the image has no class (``labels == []``).
    """
    boxes = np.asarray(boxes, np.int64).reshape(-1, BOX.width)
    if not set(classes) <= set(boxes[:, BOX.c].tolist()):
        return np.zeros((h, w), bool)
    covered = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes[:, BOX.xyxy].tolist():
        covered[y0:y1, x0:x1] = True
    return ~covered


# ---------------------------------------------------------------------------------- masks


def ignore_is_class(ignore_index: int, n: int) -> bool:
    """Whether ``ignore_index`` is also a class id (classes are ``0..n-1``): a broken manifest."""
    return 0 <= ignore_index < n


def class_ids(values: np.ndarray, n: int) -> np.ndarray:
    """Elementwise: True where a mask value is a class id ``0..n-1`` (any shape in, same shape out)."""
    v = np.asarray(values)
    return (v >= 0) & (v < n)


def invalid_mask_values(values: np.ndarray, n: int, ignore_index: int) -> np.ndarray:
    """Elementwise: True where a mask value is neither a class id ``0..n-1`` nor ``ignore_index``.
    Works on a whole (H, W) mask or on its distinct values alike."""
    v = np.asarray(values)
    return ~class_ids(v, n) & (v != ignore_index)


def mask_capacity(dtype: np.dtype) -> int:
    """The largest value a mask stored as ``dtype`` can hold (1 for bool)."""
    return 1 if dtype == np.bool_ else int(np.iinfo(dtype).max)


def mask_value_counts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an integer (H, W) mask and their pixel counts, both (V,) (bincount when small)."""
    flat = mask.ravel().astype(np.int64)
    if flat.size and flat.min() >= 0 and flat.max() < (1 << 20):
        bc = np.bincount(flat)
        values = np.flatnonzero(bc)
        return values, bc[values]
    return np.unique(flat, return_counts=True)


def mask_box_findings(mask: np.ndarray, boxes: Sequence[tuple[int, int, int, int, int, int]],
                      ignore_index: int) -> list[Finding]:
    """Where an (H, W) int64 mask contradicts the boxes of the classes in ``boxes``.

    ``boxes`` rows are ``(k, class, x0, y0, x1, y1)`` (k: the box's index in the record), all inside
    the image. Per class, in ascending class order: ``box_without_class`` (index k, ``value`` the box's
    ``(class, x0, y0, x1, y1)``) for a box holding no pixel of its class nor an unannotated one, then ``class_outside_boxes`` (index = class,
    ``value = (n_pixels,)``) when the mask has pixels of the class outside every box of that class.
    """
    out = []
    for cid in sorted({b[1] for b in boxes}):
        union = np.zeros(mask.shape, bool)
        for k, c, x0, y0, x1, y1 in boxes:
            if c != cid:
                continue
            union[y0:y1, x0:x1] = True
            region = mask[y0:y1, x0:x1]
            if not ((region == cid) | (region == ignore_index)).any():
                out.append(Finding(BOX_WITHOUT_CLASS, k, (c, x0, y0, x1, y1)))
        n_out = int(((mask == cid) & ~union).sum())
        if n_out:
            out.append(Finding(CLASS_OUTSIDE_BOXES, cid, (n_out,)))
    return out


def mask_point_findings(mask: np.ndarray, points: Sequence[tuple[int, int, int, int]], n: int,
                        ignore_index: int) -> list[Finding]:
    """``point_disagrees`` for every point ``(k, class, x, y)`` on an annotated pixel of another
    class of the (H, W) mask; ``value`` is ``(x, y, point class, mask class)``."""
    out = []
    for k, cid, x, y in points:
        v = int(mask[y, x])
        if v != cid and v != ignore_index and 0 <= v < n:
            out.append(Finding(POINT_DISAGREES, k, (x, y, cid, v)))
    return out
