"""The one mapping between a dataset's annotations and napari layer data (numpy only, no napari import).

* mask ↔ Labels: class id ``c`` ↔ value ``c + 1``; the mask's ``ignore_index`` (not annotated) ↔ ``0``.
* box ``[x0, y0, x1, y1]`` (half-open pixels) ↔ a rectangle whose corners lie half a pixel outside the
  boxed pixels' centres, ``(row, col)`` = ``(y0 − ½, x0 − ½)`` … ``(y1 − ½, x1 − ½)``; back through
  :func:`dspseg.data.convert.common.centre_box` (the pixels whose centres lie inside), so a box
  survives the round trip exactly.
* point ``[x, y]`` ↔ napari ``(row, col)`` = ``(y, x)``; back by rounding.
* colours: :func:`dspseg.colours.palette`, class ``c`` in the colour of value ``c + 1``.

    >>> labels_from_mask(np.array([[0, 2], [255, 1]]), 3, 255).tolist()
    [[1, 3], [0, 2]]
    >>> box_rectangle((2, 3, 5, 7)).tolist()
    [[2.5, 1.5], [2.5, 4.5], [6.5, 4.5], [6.5, 1.5]]
    >>> rectangle_box(box_rectangle((2, 3, 5, 7)))
    (2, 3, 5, 7)
"""

from __future__ import annotations

import math

import numpy as np

from dspseg.colours import palette
from dspseg.data.convert.common import centre_box

#: a class id's Labels value is the id plus this; 0 is "not annotated"
OFFSET = 1
#: the class column of the Shapes, Points and Labels feature tables
CLASS = "class"
NOT_ANNOTATED = "(not annotated)"


def labels_dtype(n_classes: int) -> type[np.integer]:
    """uint8 when every value (0 … n_classes) fits, else uint16."""
    return np.uint8 if n_classes + OFFSET <= 255 else np.uint16


def labels_from_mask(mask: np.ndarray, n_classes: int, ignore_index: int) -> np.ndarray:
    """(H, W) Labels values of an (H, W) mask of class ids and ``ignore_index``."""
    mask = np.asarray(mask)
    out = np.where((mask == ignore_index) | (mask < 0) | (mask >= n_classes), 0, mask + OFFSET)
    return out.astype(labels_dtype(n_classes))


def labels_from_classes(class_ids: np.ndarray, n_classes: int) -> np.ndarray:
    """Labels values of a prediction (every pixel a class id)."""
    return (np.asarray(class_ids) + OFFSET).astype(labels_dtype(n_classes))


def mask_names(classes: list[str]) -> dict[int, str | None]:
    """What each Labels value means: ``{0: None (not annotated), 1: classes[0], ...}``."""
    return {0: None} | {k + OFFSET: c for k, c in enumerate(classes)}


def class_rgba(classes: list[str]) -> np.ndarray:
    """(C, 4) float RGBA in 0..1: the palette colour of each class."""
    rgb = palette(len(classes)).astype(np.float64) / 255
    return np.concatenate([rgb, np.ones((len(classes), 1))], axis=1)


def label_colours(classes: list[str]) -> dict[int | None, np.ndarray]:
    """A Labels ``colormap`` dict: value ``c + 1`` in class ``c``'s colour, ``0`` transparent."""
    clear = np.zeros(4)
    return {None: clear, 0: clear} | {k + OFFSET: rgba for k, rgba in enumerate(class_rgba(classes))}


def label_features(classes: list[str]) -> dict[str, list]:
    """A Labels feature table: the class name of every value (napari shows it under the cursor)."""
    return {"index": list(range(len(classes) + OFFSET)), CLASS: [NOT_ANNOTATED, *classes]}


def box_rectangle(xyxy: tuple[int, int, int, int]) -> np.ndarray:
    """(4, 2) ``(row, col)`` corners of the rectangle napari draws around the box's pixels."""
    x0, y0, x1, y1 = (float(v) - 0.5 for v in xyxy)
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]])


def rectangle_box(vertices: np.ndarray) -> tuple[int, int, int, int]:
    """The box ``[x0, y0, x1, y1]`` of the pixels whose centres lie inside (the last two columns of
    ``vertices`` are row, col; a polygon or ellipse counts by its bounding box)."""
    v = np.asarray(vertices, dtype=np.float64)
    rows, cols = v[:, -2], v[:, -1]
    return centre_box(cols.min(), rows.min(), cols.max(), rows.max())


def point_coords(xy: tuple[int, int]) -> tuple[float, float]:
    """napari ``(row, col)`` of a point ``[x, y]``."""
    return float(xy[1]), float(xy[0])


def coords_point(row: float, col: float) -> tuple[int, int]:
    """The pixel ``[x, y]`` nearest to a napari point (halves round up, as in ``convert --format napari``)."""
    return math.floor(col + 0.5), math.floor(row + 0.5)
