"""Connected components and weak labels derived from masks (DESIGN §3), on hand-drawn non-square masks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dspseg.data.weak import connected_components, derive_weak_labels, weak_label_arrays

CLASSES = ["bg", "mito", "er"]
IGN = 255

# 5 x 7: two separate mito blobs on the right/bottom, a 2x2 mito block, an er pair touching diagonally.
MASK = np.array([[0, 0, 0, 0, 0, 0, 0],
                 [0, 1, 1, 0, 0, 2, 0],
                 [0, 1, 1, 0, 2, 0, 0],
                 [0, 0, 0, 0, 0, 0, 1],
                 [1, 0, 0, 0, 0, 0, 1]])


# ------------------------------------------------------------------------------ connected components


def test_components_hand_drawn():
    inst, cls = connected_components(MASK, 3, IGN)
    # bg = 1; mito by first pixel in row-major order: block (1,1) = 2, (3,6) = 3, (4,0) = 4; er = 5
    assert inst.tolist() == [[1, 1, 1, 1, 1, 1, 1],
                             [1, 2, 2, 1, 1, 5, 1],
                             [1, 2, 2, 1, 5, 1, 1],
                             [1, 1, 1, 1, 1, 1, 3],
                             [4, 1, 1, 1, 1, 1, 3]]
    assert cls.tolist() == [0, 1, 1, 1, 2]
    assert inst.dtype == np.int32 and cls.dtype == np.int64


def test_components_same_for_fortran_ordered_and_strided_masks():
    inst, cls = connected_components(MASK, 3, IGN)
    for view in (np.asfortranarray(MASK), np.ascontiguousarray(MASK.T).T, MASK.astype(np.uint8)):
        i2, c2 = connected_components(view, 3, IGN)
        assert (i2 == inst).all() and (c2 == cls).all()
    wide = np.zeros((5, 14), MASK.dtype)
    wide[:, ::2] = MASK
    i3, _ = connected_components(wide[:, ::2], 3, IGN)
    assert (i3 == inst).all()


def test_components_diagonal_touch_is_one_under_8_connectivity():
    m = np.array([[1, 0, 0],
                  [0, 1, 0],
                  [0, 0, 1],
                  [0, 0, 0]])
    inst, cls = connected_components(m, 2, IGN)
    assert cls.tolist() == [0, 1]  # one bg component (connected through the other diagonal), one diagonal line
    assert set(inst[m == 1].tolist()) == {2}


def test_components_never_merge_across_classes_and_skip_ignore():
    m = np.array([[1, 2, 2, 255, 1],
                  [1, 2, 255, 255, 1]])
    inst, cls = connected_components(m, 3, IGN)
    assert inst.tolist() == [[1, 3, 3, 0, 2],
                             [1, 3, 0, 0, 2]]
    assert cls.tolist() == [1, 1, 2]


def test_components_empty_and_all_ignore():
    inst, cls = connected_components(np.full((2, 3), IGN), 3, IGN)
    assert inst.tolist() == [[0, 0, 0], [0, 0, 0]] and cls.shape == (0,)


@pytest.mark.parametrize("bad, match", [
    (np.array([[0, 7]]), r"mask: values \[7\]"),
    (np.array([[0, -1]]), r"mask: values \[-1\]"),
    (np.zeros((2, 2, 2), int), r"mask: expected a 2-D"),
    (np.zeros((2, 2), float), r"mask: expected integer"),
])
def test_components_bad_mask(bad, match):
    with pytest.raises(ValueError, match=match):
        connected_components(bad, 3, IGN)


def test_ignore_index_that_is_a_class_id_is_rejected():
    with pytest.raises(ValueError, match="ignore_index: 1 is also a class id"):
        connected_components(MASK, 3, 1)


# ------------------------------------------------------------------------------ weak labels


def test_derive_hand_drawn_boxes_points_labels():
    w = derive_weak_labels(MASK, CLASSES, IGN)
    assert [(b.cls, b.xyxy) for b in w.boxes] == [
        ("bg", (0, 0, 7, 5)),
        ("mito", (1, 1, 3, 3)),  # 2x2 block at rows 1-2, cols 1-2: half-open, x = column
        ("mito", (6, 3, 7, 5)),
        ("mito", (0, 4, 1, 5)),
        ("er", (4, 1, 6, 3)),
    ]
    # Ties (every pixel of the 2x2 block is 1 from the outside) go to the first pixel in row-major order.
    assert [(p.cls, p.xy) for p in w.points][1:] == [("mito", (1, 1)), ("mito", (6, 3)), ("mito", (0, 4)),
                                                      ("er", (5, 1))]
    assert w.labels == ["bg", "mito", "er"]


def test_interior_point_is_centre_of_square_not_corner():
    m = np.zeros((7, 9), int)
    m[1:6, 2:7] = 1  # 5x5 square, rows 1-5, cols 2-6: centre row 3, col 4
    w = derive_weak_labels(m, CLASSES, IGN)
    assert [(p.cls, p.xy) for p in w.points] == [("bg", (0, 0)), ("mito", (4, 3))]


def test_interior_point_tie_goes_to_first_in_row_major_order():
    m = np.zeros((5, 8), int)
    m[1:4, 2:6] = 2  # 3x4 rectangle: (2,3) and (2,4) are both 2 from the outside
    w = derive_weak_labels(m, CLASSES, IGN)
    assert w.points[1].xy == (3, 2)


def test_image_border_counts_as_an_edge():
    # Distance to the ring around the image = min(row + 1, 5 - row, col + 1, 7 - col): its maximum, 3, is
    # reached at row 2, cols 2..4; the first of those is chosen. Without the border as an edge every
    # pixel would be infinitely far from "outside".
    w = derive_weak_labels(np.ones((5, 7), int), CLASSES, IGN)
    assert [(b.xyxy, p.xy) for b, p in zip(w.boxes, w.points)] == [((0, 0, 7, 5), (2, 2))]
    assert w.labels == ["mito"]


def test_ignore_pixels_are_no_component_and_split_components():
    m = np.array([[1, 1, 255, 1, 1, 1, 255],
                  [1, 1, 255, 1, 1, 1, 255],
                  [255, 255, 255, 255, 255, 255, 255]])
    w = derive_weak_labels(m, CLASSES, IGN)
    assert [b.xyxy for b in w.boxes] == [(0, 0, 2, 2), (3, 0, 6, 2)]
    assert w.labels == ["mito"]
    none = derive_weak_labels(np.full((3, 4), IGN), CLASSES, IGN)
    assert (none.boxes, none.points, none.labels) == ([], [], [])


def test_labels_and_components_in_class_order():
    m = np.array([[2, 2, 0, 0, 1],
                  [2, 2, 0, 0, 0]])  # er comes first in raster order, but class order wins
    w = derive_weak_labels(m, CLASSES, IGN)
    assert w.labels == ["bg", "mito", "er"]
    assert [b.cls for b in w.boxes] == ["bg", "mito", "er"]


def test_random_points_are_seeded_and_inside_their_component():
    m = np.zeros((6, 9), int)
    m[1:5, 1:8] = 1
    first = derive_weak_labels(m, CLASSES, IGN, "random", np.random.default_rng(3))
    again = derive_weak_labels(m, CLASSES, IGN, "random", np.random.default_rng(3))
    assert [p.xy for p in first.points] == [p.xy for p in again.points]
    assert [p.xy for p in derive_weak_labels(m, CLASSES, IGN, "random").points] == \
        [p.xy for p in derive_weak_labels(m, CLASSES, IGN, "random").points]  # rng=None is seeded too
    seen = set()
    for seed in range(12):
        for p in derive_weak_labels(m, CLASSES, IGN, "random", np.random.default_rng(seed)).points:
            x, y = p.xy
            assert CLASSES[m[y, x]] == p.cls
            seen.add(p.xy)
    assert len(seen) > 4  # not always the same pixel


def test_bad_point_mode():
    with pytest.raises(ValueError, match="point_mode: expected one of"):
        derive_weak_labels(MASK, CLASSES, IGN, point_mode="centre")


# ------------------------------------------------------------------------------ properties

MASKS = arrays(np.int64, st.tuples(st.integers(1, 8), st.integers(1, 9)),
               elements=st.sampled_from([0, 1, 2, 2, 1, IGN]))


def _brute_force_distance(inside: np.ndarray) -> np.ndarray:
    """Distance from every pixel of ``inside`` to the nearest pixel outside it (image ring included)."""
    h, w = inside.shape
    yy, xx = np.mgrid[-1:h + 1, -1:w + 1]
    padded = np.pad(inside, 1)
    out_y, out_x = yy[~padded], xx[~padded]
    d = np.sqrt((yy[1:-1, 1:-1, None] - out_y) ** 2 + (xx[1:-1, 1:-1, None] - out_x) ** 2).min(axis=-1)
    return np.where(inside, d, 0.0)


@settings(max_examples=80, deadline=None)
@given(MASKS)
def test_property_boxes_tight_points_interior(m):
    inst, cls = connected_components(m, 3, IGN)
    boxes, points, labels = weak_label_arrays(m, 3, IGN)
    assert len(boxes) == len(points) == len(cls)
    assert labels.tolist() == sorted(set(m[m != IGN].tolist()))
    assert np.all(np.diff(cls) >= 0)
    for k in range(len(cls)):
        inside = inst == k + 1
        assert set(m[inside].tolist()) == {cls[k]}
        rows, cols = np.nonzero(inside)
        assert boxes[k].tolist() == [cls[k], cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        c, r, col = points[k]
        assert c == cls[k] and inside[r, col]
        d = _brute_force_distance(inside)
        assert np.isclose(d[r, col], d.max())
        assert r * m.shape[1] + col == int(np.argmax(np.isclose(d, d.max()) & inside))  # first in row-major order


@settings(max_examples=40, deadline=None)
@given(MASKS, st.integers(0, 2**31))
def test_property_random_points_inside(m, seed):
    inst, _ = connected_components(m, 3, IGN)
    _, points, _ = weak_label_arrays(m, 3, IGN, "random", np.random.default_rng(seed))
    for k, (c, r, col) in enumerate(points):
        assert inst[r, col] == k + 1 and m[r, col] == c
