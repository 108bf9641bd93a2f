"""Connected components of a label mask and the weak labels an expert would have drawn on it.

Used twice: by the ACR simulation (a mask image is turned into a box, point or image-label image)
and at training time (a mask image also contributes every weaker annotation, paper §3.1).

For a mask ``m`` (H, W) with classes ``0..C-1`` and an ``ignore_index`` for unannotated pixels:

* a *component* is a maximal 8-connected set of pixels of one class (ignore pixels belong to none;
  components of different classes never merge, even when they touch);
* its *box* is the tight half-open box ``[x0, y0, x1, y1]`` = ``[min col, min row, max col + 1,
  max row + 1]`` (x = column, y = row);
* its *interior point* is ``argmax_p d(p)`` over the component's pixels, where ``d`` is the Euclidean
  distance transform, ``d(p) = min |p - q|`` over pixels ``q`` outside the component (other classes,
  other components, ignore pixels, and the ring just outside the image: the border counts as an
  edge). Ties go to the first pixel in row-major order, so the centre of a 5x5 square is chosen,
  never a corner. ``point_mode="random"`` picks a uniformly random pixel of the component instead;
* the *image labels* are the classes present (in class order).

Example::

    >>> m = np.array([[0, 0, 1],
    ...               [0, 0, 1]])
    >>> w = derive_weak_labels(m, ["bg", "mito"], ignore_index=255)
    >>> [b.xyxy for b in w.boxes], [p.xy for p in w.points], w.labels
    ([(0, 0, 2, 2), (2, 0, 3, 2)], [(0, 0), (2, 0)], ['bg', 'mito'])
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from dspseg.data.manifest import Box, Point
from dspseg.data.rules import ignore_is_class, invalid_mask_values

POINT_MODES = ("interior", "random")


def check_mask(mask: np.ndarray, n_classes: int, ignore_index: int, field: str = "mask") -> np.ndarray:
    """Validate a label mask (H, W) of integers in ``[0, n_classes) ∪ {ignore_index}``; return it as int64.

    The value rules are :mod:`dspseg.data.rules`' (:func:`~dspseg.data.rules.invalid_mask_values`);
    this raises ``ValueError`` naming ``field`` on the first one broken."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{field}: expected a 2-D label array (H, W), got shape {mask.shape}")
    if mask.dtype == bool or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"{field}: expected integer class ids, got dtype {mask.dtype}")
    if n_classes < 1:
        raise ValueError(f"n_classes: expected at least 1 class, got {n_classes}")
    if ignore_is_class(ignore_index, n_classes):
        raise ValueError(f"ignore_index: {ignore_index} is also a class id (classes are 0..{n_classes - 1})")
    m = mask.astype(np.int64, copy=False)
    bad = invalid_mask_values(m, n_classes, ignore_index)
    if bad.any():
        values = np.unique(m[bad])[:5].tolist()
        raise ValueError(f"{field}: values {values} are neither a class id (0..{n_classes - 1}) "
                         f"nor the ignore index {ignore_index}")
    return m


def connected_components(mask: np.ndarray, n_classes: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of every class of ``mask``.

    Args:
        mask: (H, W) integer class ids, ``ignore_index`` where unannotated.
        n_classes: number of classes C; valid ids are ``0..C-1``.
        ignore_index: value of unannotated pixels (never part of a component).

    Returns:
        ``instances`` (H, W) int32 with 0 for ignore pixels and ``1..M`` for the components, ordered by
        class and, within a class, by the row-major position of the component's first pixel (cc3d's
        label order); ``instance_classes`` (M,) int64, the class of component ``k`` at index ``k - 1``.
    """
    return components_of_checked(check_mask(mask, n_classes, ignore_index), n_classes, ignore_index)


def components_of_checked(m: np.ndarray, n_classes: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`connected_components` for a mask already passed through :func:`check_mask`."""
    # Shift classes to 1..C so that 0 is cc3d's background (= ignore).
    # C order, so that cc3d numbers components by their first pixel in row-major order.
    shifted = m.astype(np.uint32 if n_classes >= 65535 else np.uint16, order="C")
    shifted += 1
    shifted[m == ignore_index] = 0
    labels, n = cc3d.connected_components(shifted, connectivity=8, return_N=True)
    if n == 0:
        return np.zeros(m.shape, np.int32), np.zeros(0, np.int64)
    cls_of = np.zeros(n + 1, np.int64)
    cls_of[labels.ravel()] = shifted.ravel()  # every pixel of a component carries the same class
    classes = cls_of[1:] - 1
    order = np.argsort(classes, kind="stable")
    if np.any(order != np.arange(n)):
        new_id = np.zeros(n + 1, np.int32)
        new_id[order + 1] = np.arange(1, n + 1, dtype=np.int32)
        return new_id[labels], classes[order]
    return labels.astype(np.int32), classes


@dataclass
class WeakLabels:
    """Weak annotation derived from a mask: one box and one point per component, classes present."""

    boxes: list[Box]
    points: list[Point]
    labels: list[str]


def weak_label_arrays(mask: np.ndarray, n_classes: int, ignore_index: int, point_mode: str = "interior",
                      rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Array form of :func:`derive_weak_labels` (no pydantic objects; used in the training loop).

    Returns ``boxes`` (M, 5) int64 rows ``[class, x0, y0, x1, y1]``, ``points`` (M, 3) int64 rows
    ``[class, row, col]`` (one of each per component, in component order), and ``labels`` (L,) int64,
    the classes present, ascending.
    """
    instances, classes = connected_components(mask, n_classes, ignore_index)
    return weak_from_instances(instances, classes, point_mode, rng)


def weak_from_instances(instances: np.ndarray, instance_classes: np.ndarray, point_mode: str = "interior",
                        rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`weak_label_arrays` from the output of :func:`connected_components` (avoids recomputing it)."""
    if point_mode not in POINT_MODES:
        raise ValueError(f"point_mode: expected one of {POINT_MODES}, got {point_mode!r}")
    if point_mode == "random" and rng is None:
        rng = np.random.default_rng(0)
    n = len(instance_classes)
    boxes = np.zeros((n, 5), np.int64)
    points = np.zeros((n, 3), np.int64)
    slices = ndimage.find_objects(instances, max_label=n)
    for k, (rows, cols) in enumerate(slices):
        boxes[k] = (instance_classes[k], cols.start, rows.start, cols.stop, rows.stop)
    if point_mode == "interior":
        flat = _interior_offsets(instances, slices)
    else:
        flat = []
        for k, sl in enumerate(slices):
            idx = np.flatnonzero(instances[sl] == k + 1)
            flat.append(int(idx[rng.integers(len(idx))]))
    for k, (rows, cols) in enumerate(slices):
        dy, dx = divmod(flat[k], cols.stop - cols.start)
        points[k] = (instance_classes[k], rows.start + dy, cols.start + dx)
    return boxes, points, np.unique(instance_classes)


def _interior_offsets(instances: np.ndarray, slices: list[tuple[slice, slice]]) -> list[int]:
    """Row-major offset, inside its box, of every component's first distance-transform maximum.

    Each component's box, padded by a ring of "outside" pixels, is packed onto one canvas (shelf
    packing, tallest first) and a single Euclidean distance transform runs over it. This is exact:
    the ring lies outside the component (the box is tight), and for any pixel beyond the ring its
    projection onto the ring is at least as close, so no tile sees another; the ring also makes the
    image border count as an edge. Cost ~ one EDT over the summed box areas, not one call per component.
    """
    if not slices:
        return []
    dims = [(r.stop - r.start + 2, c.stop - c.start + 2) for r, c in slices]
    width = max(max(w for _, w in dims), int(np.ceil(np.sqrt(sum(h * w for h, w in dims)))))
    origin = [(0, 0)] * len(dims)
    x = y = shelf = 0
    for k in sorted(range(len(dims)), key=lambda i: -dims[i][0]):
        h, w = dims[k]
        if x + w > width:
            x, y, shelf = 0, y + shelf, 0
        origin[k] = (y, x)
        x, shelf = x + w, max(shelf, h)
    canvas = np.zeros((y + shelf, width), bool)
    for k, sl in enumerate(slices):
        (oy, ox), (h, w) = origin[k], dims[k]
        canvas[oy + 1:oy + h - 1, ox + 1:ox + w - 1] = instances[sl] == k + 1
    dist = ndimage.distance_transform_edt(canvas)
    # np.argmax returns the first maximum in row-major order: ties go to the top-left-most pixel.
    return [int(np.argmax(dist[oy + 1:oy + h - 1, ox + 1:ox + w - 1])) for (oy, ox), (h, w) in zip(origin, dims)]


def derive_weak_labels(mask: np.ndarray, classes: list[str], ignore_index: int, point_mode: str = "interior",
                       rng: np.random.Generator | None = None) -> WeakLabels:
    """One tight box and one point per connected component of every class; labels = classes present.

    Args:
        mask: (H, W) integer class ids (index into ``classes``), ``ignore_index`` = unannotated.
        classes: class names; background, if the dataset has one, is an ordinary class.
        ignore_index: unannotated pixels belong to no component and name no class.
        point_mode: ``"interior"`` (distance-transform maximum, ties → first in row-major order) or
            ``"random"`` (a uniformly random pixel of the component drawn from ``rng``; seeded with 0
            when ``rng`` is None, so results are reproducible).

    Returns:
        :class:`WeakLabels` with manifest :class:`Box` / :class:`Point` objects (x = column, y = row),
        components ordered by class then by first pixel, and the present class names in class order.
    """
    boxes, points, labels = weak_label_arrays(mask, len(classes), ignore_index, point_mode, rng)
    return WeakLabels(
        boxes=[Box(cls=classes[c], xyxy=(x0, y0, x1, y1)) for c, x0, y0, x1, y1 in boxes.tolist()],
        points=[Point(cls=classes[c], xy=(x, y)) for c, y, x in points.tolist()],
        labels=[classes[c] for c in labels.tolist()],
    )
