"""The annotation core (DESIGN §1): admissible classes, CE target, instances and bags, hand-drawn.

Every image is 5 x 7 (H x W, non-square). ``allowed`` is shown as one bit set per pixel:
B = bg, M = mito, E = er, and sums of them (BM = bg or mito, A = any class).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dspseg.data.manifest import Box, ImageRecord, Point
from dspseg.data.rasterise import rasterise
from dspseg.data.weak import derive_weak_labels

CLASSES = ["bg", "mito", "er"]
IGN = 255
SHAPE = (5, 7)
B, M, E = 1, 2, 4
BM, BE, ME, A = B | M, B | E, M | E, B | M | E
_ = IGN  # in literal masks


def rec(**kw) -> ImageRecord:
    if "boxes" in kw:
        kw["boxes"] = [b if isinstance(b, Box) else Box(cls=b[0], xyxy=b[1]) for b in kw["boxes"]]
    if "points" in kw:
        kw["points"] = [p if isinstance(p, Point) else Point(cls=p[0], xy=p[1]) for p in kw["points"]]
    return ImageRecord(file="img.tif", **kw)


def run(record: ImageRecord, mask=None, **kw):
    return rasterise(record, CLASSES, IGN, SHAPE, None if mask is None else np.array(mask), **kw)


def bits(a) -> list[list[int]]:
    """allowed (C, H, W) → (H, W) bit sets, to compare against the literal tables."""
    return (a.allowed * (1 << np.arange(len(CLASSES)))[:, None, None]).sum(0).tolist()


def full(v):
    return [[v] * SHAPE[1] for _ in range(SHAPE[0])]


def assert_no_mask_outputs(a):
    assert a.target.tolist() == full(IGN) and a.target.dtype == np.int64
    assert a.instances.tolist() == full(0) and a.instance_classes.shape == (0,)


# ------------------------------------------------------------------------------ weak-only records


def test_unlabeled():
    a = run(rec())
    assert a.kind == "none" and a.allowed.shape == (3, 5, 7) and a.allowed.dtype == bool
    assert bits(a) == full(A)
    assert a.image_classes.tolist() == [True, True, True] and a.conflicts == 0
    assert a.points.shape == (0, 3) and a.boxes.shape == (0, 5) and a.image_labels.shape == (0,)
    assert_no_mask_outputs(a)


def test_image_labels():
    a = run(rec(labels=["mito", "bg"]))
    assert a.kind == "image" and bits(a) == full(BM)
    assert a.image_labels.tolist() == [0, 1] and a.image_classes.tolist() == [True, True, False]
    assert a.conflicts == 0
    assert_no_mask_outputs(a)


def test_overlapping_boxes_of_different_classes_all_boxed():
    a = run(rec(boxes=[("bg", [0, 0, 7, 5]), ("mito", [1, 0, 4, 3]), ("er", [3, 2, 6, 5])]))
    assert a.kind == "box"
    assert bits(a) == [[B, BM, BM, BM, B, B, B],
                       [B, BM, BM, BM, B, B, B],
                       [B, BM, BM, A, BE, BE, B],
                       [B, B, B, BE, BE, BE, B],
                       [B, B, B, BE, BE, BE, B]]
    assert a.boxes.tolist() == [[0, 0, 0, 7, 5], [1, 1, 0, 4, 3], [2, 3, 2, 6, 5]]
    assert a.image_classes.tolist() == [True, True, True] and a.conflicts == 0
    assert a.image_labels.shape == (0,)  # only explicit labels without derive_weak
    assert_no_mask_outputs(a)


def test_class_with_two_boxes_and_unboxed_labelled_background():
    a = run(rec(boxes=[("mito", [0, 0, 2, 2]), ("mito", [5, 3, 7, 5])], labels=["bg", "mito"]))
    assert bits(a) == [[BM, BM, B, B, B, B, B],
                       [BM, BM, B, B, B, B, B],
                       [B, B, B, B, B, B, B],
                       [B, B, B, B, B, BM, BM],
                       [B, B, B, B, B, BM, BM]]
    assert a.image_labels.tolist() == [0, 1] and a.conflicts == 0


def test_labels_with_an_unboxed_class():
    a = run(rec(boxes=[("mito", [2, 1, 5, 4])], labels=["bg", "mito", "er"]))
    assert bits(a) == [[BE, BE, BE, BE, BE, BE, BE],
                       [BE, BE, A, A, A, BE, BE],
                       [BE, BE, A, A, A, BE, BE],
                       [BE, BE, A, A, A, BE, BE],
                       [BE, BE, BE, BE, BE, BE, BE]]
    assert a.conflicts == 0


def test_all_boxed_pixel_outside_every_box_falls_back_and_counts():
    # No labels: the image's classes are the boxed ones, {mito, er}; row 4, cols 4-6 lie in no box.
    a = run(rec(boxes=[("mito", [0, 0, 4, 5]), ("er", [4, 0, 7, 4])]))
    assert bits(a) == [[M, M, M, M, E, E, E],
                       [M, M, M, M, E, E, E],
                       [M, M, M, M, E, E, E],
                       [M, M, M, M, E, E, E],
                       [M, M, M, M, ME, ME, ME]]
    assert a.conflicts == 3
    assert a.image_classes.tolist() == [False, True, True]


def test_points_without_labels():
    a = run(rec(points=[("mito", [2, 1]), ("er", [5, 3])]))  # xy: x = column
    assert a.kind == "point"
    assert bits(a) == [[ME, ME, ME, ME, ME, ME, ME],
                       [ME, ME, M, ME, ME, ME, ME],
                       [ME, ME, ME, ME, ME, ME, ME],
                       [ME, ME, ME, ME, ME, E, ME],
                       [ME, ME, ME, ME, ME, ME, ME]]
    assert a.points.tolist() == [[1, 1, 2], [2, 3, 5]]  # [class, row, col]
    assert a.conflicts == 0 and a.image_labels.shape == (0,)
    assert_no_mask_outputs(a)


def test_point_with_labels():
    a = run(rec(points=[("mito", [0, 4])], labels=["bg", "mito", "er"]))
    expected = full(A)
    expected[4][0] = M
    assert bits(a) == expected and a.conflicts == 0 and a.image_labels.tolist() == [0, 1, 2]


def test_point_contradicting_labels_wins_and_counts():
    a = run(rec(points=[("mito", [6, 0])], labels=["bg"]))
    expected = full(B)  # labels are authoritative; the point's own pixel keeps its class and is counted
    expected[0][6] = M
    assert bits(a) == expected and a.conflicts == 1 and a.image_classes.tolist() == [True, False, False]


def test_points_of_two_classes_on_one_pixel_admit_both_and_count():
    a = run(rec(points=[("mito", [3, 2]), ("er", [3, 2]), ("er", [0, 0])]))
    assert a.allowed[:, 2, 3].tolist() == [False, True, True] and a.conflicts == 1


def test_empty_labels_contradict_every_pixel():
    a = run(rec(labels=[]))
    assert bits(a) == full(A) and a.conflicts == 35


def test_boxes_and_points_together():
    a = run(rec(boxes=[("mito", [0, 0, 3, 3])], points=[("mito", [1, 1]), ("bg", [6, 4])], labels=["bg", "mito"]))
    assert bits(a) == [[BM, BM, BM, B, B, B, B],
                       [BM, M, BM, B, B, B, B],
                       [BM, BM, BM, B, B, B, B],
                       [B, B, B, B, B, B, B],
                       [B, B, B, B, B, B, B]]
    assert a.conflicts == 0


# ------------------------------------------------------------------------------ masks

FULL = [[0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 2, 0],
        [0, 1, 1, 0, 2, 0, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [1, 0, 0, 0, 0, 0, 1]]

PARTIAL = [[0, 0, _, _, _, _, _],
           [0, 1, 1, _, _, _, _],
           [_, 1, 1, _, _, _, _],
           [_, _, _, _, _, _, 1],
           [_, _, _, _, _, _, 1]]


def test_full_mask():
    a = run(rec(mask="m.tif"), FULL)
    assert a.kind == "mask"
    assert bits(a) == [[B, B, B, B, B, B, B],
                       [B, M, M, B, B, E, B],
                       [B, M, M, B, E, B, B],
                       [B, B, B, B, B, B, M],
                       [M, B, B, B, B, B, M]]
    assert a.target.tolist() == FULL and a.target.dtype == np.int64
    # mito blobs separated → three instances; the er pair touching diagonally → one instance.
    assert a.instances.tolist() == [[1, 1, 1, 1, 1, 1, 1],
                                    [1, 2, 2, 1, 1, 5, 1],
                                    [1, 2, 2, 1, 5, 1, 1],
                                    [1, 1, 1, 1, 1, 1, 3],
                                    [4, 1, 1, 1, 1, 1, 3]]
    assert a.instance_classes.tolist() == [0, 1, 1, 1, 2]
    assert a.image_classes.tolist() == [True, True, True] and a.conflicts == 0
    assert a.boxes.shape == (0, 5) and a.points.shape == (0, 3) and a.image_labels.shape == (0,)


def test_full_mask_missing_a_class_names_only_its_classes():
    a = run(rec(mask="m.tif"), np.where(np.array(FULL) == 2, 0, FULL))
    assert a.image_classes.tolist() == [True, True, False]


def test_partial_mask_without_labels_gaps_allow_everything():
    a = run(rec(mask="m.tif"), PARTIAL)
    assert bits(a) == [[B, B, A, A, A, A, A],
                       [B, M, M, A, A, A, A],
                       [A, M, M, A, A, A, A],
                       [A, A, A, A, A, A, M],
                       [A, A, A, A, A, A, M]]
    assert a.target.tolist() == PARTIAL
    assert a.instances.tolist() == [[1, 1, 0, 0, 0, 0, 0],
                                    [1, 2, 2, 0, 0, 0, 0],
                                    [0, 2, 2, 0, 0, 0, 0],
                                    [0, 0, 0, 0, 0, 0, 3],
                                    [0, 0, 0, 0, 0, 0, 3]]
    assert a.instance_classes.tolist() == [0, 1, 1]
    assert a.image_classes.tolist() == [True, True, True] and a.conflicts == 0


def test_partial_mask_with_labels_gaps_allow_the_labels():
    a = run(rec(mask="m.tif", labels=["bg", "mito"]), PARTIAL)
    assert bits(a) == [[B, B, BM, BM, BM, BM, BM],
                       [B, M, M, BM, BM, BM, BM],
                       [BM, M, M, BM, BM, BM, BM],
                       [BM, BM, BM, BM, BM, BM, M],
                       [BM, BM, BM, BM, BM, BM, M]]
    assert a.image_classes.tolist() == [True, True, False] and a.image_labels.tolist() == [0, 1]


def test_mask_class_missing_from_labels_wins_and_counts():
    a = run(rec(mask="m.tif", labels=["bg", "mito"]), FULL)  # the mask shows er at (1,5) and (2,4)
    assert a.allowed[:, 1, 5].tolist() == [False, False, True] and a.conflicts == 2
    assert a.image_classes.tolist() == [True, True, False]


def test_partial_mask_and_boxes():
    # Boxes name mito only (complete for mito); the mask shows bg too, so the image's classes are {bg, mito}:
    # gaps inside the mito box admit bg or mito, gaps outside it only bg.
    a = run(rec(mask="m.tif", boxes=[("mito", [1, 1, 3, 3]), ("mito", [6, 3, 7, 5])]), PARTIAL)
    assert bits(a) == [[B, B, B, B, B, B, B],
                       [B, M, M, B, B, B, B],
                       [B, M, M, B, B, B, B],
                       [B, B, B, B, B, B, M],
                       [B, B, B, B, B, B, M]]
    assert a.image_classes.tolist() == [True, True, False] and a.conflicts == 0
    # A mito pixel outside every mito box contradicts the boxes: the mask wins, the pixel is counted.
    b = run(rec(mask="m.tif", boxes=[("mito", [1, 1, 3, 3])]), PARTIAL)
    assert b.allowed[:, 3, 6].tolist() == [False, True, False] and b.conflicts == 2


def test_partial_mask_and_points():
    # Point on a gap → exactly its class; point agreeing with the mask → fine;
    # point disagreeing with an annotated pixel → the mask wins and the pixel is counted.
    a = run(rec(mask="m.tif", points=[("er", [4, 2]), ("mito", [1, 1]), ("er", [0, 0])]), PARTIAL)
    assert bits(a)[2] == [A, M, M, A, E, A, A]
    assert bits(a)[0][0] == B and bits(a)[1][1] == M
    assert a.image_classes.tolist() == [True, True, True]  # bg and mito from the mask, er from the points
    assert a.conflicts == 1
    assert a.points.tolist() == [[2, 2, 4], [1, 1, 1], [2, 0, 0]]


def test_mask_boxes_points_labels_compose():
    a = run(rec(mask="m.tif", boxes=[("mito", [1, 1, 3, 3]), ("mito", [6, 3, 7, 5])],
                points=[("mito", [6, 3]), ("bg", [4, 4])], labels=["bg", "mito", "er"]), PARTIAL)
    assert bits(a) == [[B, B, BE, BE, BE, BE, BE],
                       [B, M, M, BE, BE, BE, BE],
                       [BE, M, M, BE, BE, BE, BE],
                       [BE, BE, BE, BE, BE, BE, M],
                       [BE, BE, BE, BE, B, BE, M]]
    assert a.conflicts == 0


def test_derive_weak_adds_every_weaker_annotation_to_the_bags():
    plain = run(rec(mask="m.tif"), FULL)
    a = run(rec(mask="m.tif"), FULL, derive_weak=True)
    np.testing.assert_array_equal(a.allowed, plain.allowed)  # bags only; allowed is unchanged
    assert a.boxes.tolist() == [[0, 0, 0, 7, 5], [1, 1, 1, 3, 3], [1, 6, 3, 7, 5], [1, 0, 4, 1, 5], [2, 4, 1, 6, 3]]
    assert a.points[1:].tolist() == [[1, 1, 1], [1, 3, 6], [1, 4, 0], [2, 1, 5]]
    assert a.image_labels.tolist() == [0, 1, 2]
    # A partial mask only names what it shows; explicit annotation comes first in the bags.
    p = run(rec(mask="m.tif", points=[("er", [4, 2])]), PARTIAL, derive_weak=True)
    assert p.points[0].tolist() == [2, 2, 4] and len(p.points) == 4 and len(p.boxes) == 3
    assert p.image_labels.tolist() == [0, 1, 2]
    q = run(rec(mask="m.tif"), PARTIAL, derive_weak=True)
    assert q.image_labels.tolist() == [0, 1]
    np.testing.assert_array_equal(q.allowed, run(rec(mask="m.tif"), PARTIAL).allowed)


def test_derive_weak_on_box_and_point_images_adds_their_class_set():
    a = run(rec(boxes=[("er", [0, 0, 2, 2])], points=[("mito", [5, 4])]), derive_weak=True)
    assert a.image_labels.tolist() == [1, 2] and len(a.boxes) == 1 and len(a.points) == 1
    b = run(rec(boxes=[("er", [0, 0, 2, 2])], labels=["bg", "er"]), derive_weak=True)
    assert b.image_labels.tolist() == [0, 2]
    assert run(rec(), derive_weak=True).image_labels.shape == (0,)


# ------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize("record, mask, match", [
    (rec(mask="m.tif"), np.zeros((7, 5), int), r"mask: shape \(7, 5\) differs from the image shape \(5, 7\)"),
    (rec(mask="m.tif"), np.full((5, 7), 3), r"mask: values \[3\]"),
    (rec(mask="m.tif"), None, "mask: the record names mask file 'm.tif'"),
    (rec(), np.zeros((5, 7), int), "mask: an array was given but the record 'img.tif' has no 'mask'"),
    (rec(labels=["bg", "golgi"]), None, r"labels\[1\]: unknown class 'golgi'"),
    (rec(boxes=[("nucleus", [0, 0, 1, 1])]), None, r"boxes\[0\].class: unknown class 'nucleus'"),
    (rec(points=[("bg", [0, 0]), ("ER", [1, 1])]), None, r"points\[1\].class: unknown class 'ER'"),
    (rec(boxes=[("bg", [0, 0, 8, 5])]), None, r"boxes\[0\].xyxy: \[0, 0, 8, 5\] is empty or outside"),
    (rec(boxes=[("bg", [3, 0, 3, 5])]), None, r"boxes\[0\].xyxy: \[3, 0, 3, 5\] is empty"),
    (rec(points=[("bg", [7, 0])]), None, r"points\[0\].xy: \[7, 0\] is outside the 7x5"),
    (rec(points=[("bg", [0, -1])]), None, r"points\[0\].xy: \[0, -1\] is outside"),
])
def test_input_checks(record, mask, match):
    with pytest.raises(ValueError, match=match):
        run(record, mask)


def test_bad_shape_and_classes():
    with pytest.raises(ValueError, match="shape: expected"):
        rasterise(rec(), CLASSES, IGN, (5,))
    with pytest.raises(ValueError, match="classes: expected a non-empty list of distinct names"):
        rasterise(rec(), ["bg", "bg"], IGN, SHAPE)


def test_mask_array_is_copied_not_aliased():
    m = np.array(FULL)
    a = run(rec(mask="m.tif"), m)
    a.target[0, 0] = 2
    assert m[0, 0] == 0


# ------------------------------------------------------------------------------ properties

MASKS = arrays(np.int64, st.tuples(st.integers(1, 7), st.integers(1, 9)),
               elements=st.sampled_from([0, 1, 2, 1, 2, IGN]))


@settings(max_examples=60, deadline=None)
@given(MASKS, st.booleans(), st.integers(0, 2**31))
def test_property_true_class_always_admissible(m, with_labels, seed):
    """Any consistent combination (mask + boxes/points/labels derived from it) admits the true class."""
    w = derive_weak_labels(m, CLASSES, IGN, "random", np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    # keep every box of a class or none (boxes cover every instance of their class)
    boxed = {c for c in CLASSES if rng.random() < 0.5}
    record = rec(mask="m.tif", labels=w.labels if with_labels else None)
    record.boxes = [b for b in w.boxes if b.cls in boxed] or None
    record.points = [p for p in w.points if rng.random() < 0.5] or None
    a = rasterise(record, CLASSES, IGN, m.shape, m)
    ys, xs = np.nonzero(m != IGN)
    assert a.allowed[m[ys, xs], ys, xs].all()
    assert (a.allowed.sum(0)[ys, xs] == 1).all()
    assert a.allowed.any(axis=0).all()
    assert (a.target == m).all()
    if (m != IGN).all():
        assert a.conflicts == 0


@settings(max_examples=60, deadline=None)
@given(MASKS, st.sampled_from(["interior", "random"]))
def test_property_weak_labels_from_a_mask_admit_every_mask_pixel(m, mode):
    """Boxes, points and labels derived from a mask, rasterised without it, admit each mask pixel's class."""
    w = derive_weak_labels(m, CLASSES, IGN, mode)
    ys, xs = np.nonzero(m != IGN)
    for record in (rec(boxes=w.boxes, labels=w.labels), rec(points=w.points, labels=w.labels),
                   rec(labels=w.labels), rec(boxes=w.boxes, points=w.points)):
        record.boxes = record.boxes or None
        record.points = record.points or None
        a = rasterise(record, CLASSES, IGN, m.shape)
        assert a.allowed[m[ys, xs], ys, xs].all()
        if (m != IGN).all():
            assert a.conflicts == 0
    for p in w.points:
        a = rasterise(rec(points=[p]), CLASSES, IGN, m.shape)
        assert a.allowed[:, p.xy[1], p.xy[0]].tolist() == [c == p.cls for c in CLASSES]
