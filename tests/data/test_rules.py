"""The annotation rules (data/rules.py), each on hand-drawn cases, and their agreement with the two
consumers that phrase them: validate (Problems) and rasterise (ValueError)."""

from __future__ import annotations

import numpy as np
import pytest

from dspseg.data import rules
from dspseg.data.manifest import Box, ImageRecord, Point
from dspseg.data.rasterise import rasterise


def test_box_rules():
    assert rules.box_empty((2, 1, 2, 5)) and rules.box_empty((0, 3, 4, 3)) and not rules.box_empty((0, 0, 1, 1))
    np.testing.assert_array_equal(rules.box_empty(np.array([[0, 0, 1, 1], [5, 0, 2, 2]])), [False, True])
    assert rules.box_inside((0, 0, 7, 5), h=5, w=7) and not rules.box_inside((0, 0, 8, 5), h=5, w=7)
    assert rules.box_fits_swapped((0, 0, 5, 7), h=5, w=7) and not rules.box_fits_swapped((0, 0, 7, 5), h=5, w=8)
    assert rules.box_reversed((4, 0, 2, 3)) and not rules.box_reversed((2, 2, 2, 3))
    assert rules.clip_box((-2, 1, 9, 4), h=3, w=7) == (0, 1, 7, 3)
    found = rules.box_findings([(0, 0, 1, 1), (3, 0, 3, 5), (0, 0, 8, 5)], size=(5, 7))
    assert [(f.rule, f.index, f.value) for f in found] == [(rules.BOX_EMPTY, 1, (3, 0, 3, 5)),
                                                          (rules.BOX_OUTSIDE, 2, (0, 0, 8, 5))]
    assert [f.index for f in rules.box_findings([(0, 0, 8, 5), (1, 1, 0, 0)])] == [1]  # no size: emptiness only


def test_point_rules():
    assert rules.point_inside((6, 4), h=5, w=7) and not rules.point_inside((7, 0), h=5, w=7)
    assert not rules.point_inside((0, -1), h=5, w=7)
    assert [(f.index, f.value) for f in rules.point_findings([(0, 0), (7, 0), (1, 5)], (5, 7))] == [(1, (7, 0)),
                                                                                                  (2, (1, 5))]
    twins = rules.coinciding_points([((1, 1), "a"), ((1, 1), "a"), ((2, 2), "a"), ((1, 1), "b")])
    assert [(f.rule, f.index, f.value) for f in twins] == [(rules.POINT_REPEATED, 1, (0,)),
                                                           (rules.POINT_CLASH, 3, (0,))]


@pytest.mark.parametrize("labels, weak, present, ignore, expected", [
    ({0, 2}, {1}, None, False, [1, 0, 1]),  # labels are authoritative
    (None, {1}, None, False, [0, 1, 0]),  # else the box/point classes
    (None, {1}, np.array([1, 1, 0], bool), True, [1, 1, 0]),  # ... with the classes a mask shows
    (None, None, np.array([1, 0, 1], bool), False, [1, 0, 1]),  # a full mask: its classes
    (None, None, np.array([1, 0, 0], bool), True, [1, 1, 1]),  # a partial mask: anything
    (None, None, None, False, [1, 1, 1]),  # unlabeled: anything
    (set(), None, None, False, [0, 0, 0]),  # labels == []: nothing (validate reports it)
])
def test_image_classes(labels, weak, present, ignore, expected):
    declared = rules.declared_classes(labels, weak)
    got = rules.image_classes(3, declared, labels is not None, present, ignore)
    assert got.astype(int).tolist() == expected


def test_declared_classes_is_the_claim_validate_checks():
    assert rules.declared_classes({2}, {0, 1}) == {2}
    assert rules.declared_classes(None, {0, 1}) == {0, 1}
    assert rules.declared_classes(None, set()) == set()  # boxes given but none usable: an empty claim
    assert rules.declared_classes(None, None) is None


def test_uncovered_only_when_every_class_is_boxed():
    boxes = np.array([[0, 0, 0, 3, 2], [1, 2, 1, 5, 4]])
    out = rules.uncovered(boxes, [0, 1], h=4, w=5)
    covered = np.zeros((4, 5), bool)
    covered[0:2, 0:3] = covered[1:4, 2:5] = True
    np.testing.assert_array_equal(out, ~covered)
    assert not rules.uncovered(boxes, [0, 1, 2], h=4, w=5).any()  # class 2 has no box: admissible outside
    assert rules.uncovered(np.zeros((0, 5), np.int64), [], h=2, w=3).all()  # labels == []
    assert not rules.uncovered(np.zeros((0, 5), np.int64), [1], h=2, w=3).any()


def test_mask_value_rules():
    m = np.array([[0, 1, 255], [3, -1, 2]])
    np.testing.assert_array_equal(rules.invalid_mask_values(m, 3, 255), [[False, False, False], [True, True, False]])
    np.testing.assert_array_equal(rules.class_ids(m, 3), [[True, True, False], [False, False, True]])
    assert rules.ignore_is_class(2, 3) and not rules.ignore_is_class(255, 3)
    assert rules.mask_capacity(np.dtype(np.uint8)) == 255 and rules.mask_capacity(np.dtype(bool)) == 1
    values, counts = rules.mask_value_counts(np.array([[0, 0, 7], [7, 7, 1]], np.uint16))
    assert values.tolist() == [0, 1, 7] and counts.tolist() == [2, 1, 3]
    values, counts = rules.mask_value_counts(np.array([[-3, 0], [-3, 5]]))
    assert values.tolist() == [-3, 0, 5] and counts.tolist() == [2, 1, 1]


def test_mask_agreement_rules():
    mask = np.array([[1, 1, 0, 0],
                     [0, 0, 0, 1],
                     [255, 0, 0, 0]])
    found = rules.mask_box_findings(mask, [(0, 1, 0, 0, 2, 1), (1, 1, 2, 0, 3, 1), (2, 1, 0, 2, 1, 3)], 255)
    # box 1 holds no class-1 pixel; box 2 holds only an unannotated one (fine); (1, 3) lies outside every box
    assert [(f.rule, f.index, f.value) for f in found] == [(rules.BOX_WITHOUT_CLASS, 1, (1, 2, 0, 3, 1)),
                                                           (rules.CLASS_OUTSIDE_BOXES, 1, (1,))]
    pts = rules.mask_point_findings(mask, [(0, 1, 0, 0), (1, 1, 2, 0), (2, 0, 0, 2)], 2, 255)
    assert [(f.index, f.value) for f in pts] == [(1, (2, 0, 1, 0))]


def test_rasterise_raises_on_the_rules_findings_in_entry_order():
    rec = ImageRecord(file="a.tif", boxes=[Box(cls="x", xyxy=(0, 0, 1, 1)), Box(cls="a", xyxy=(0, 0, 9, 1))])
    with pytest.raises(ValueError, match=r"boxes\[0\].class: unknown class 'x'"):
        rasterise(rec, ["a", "b"], 255, (3, 4))
    rec = ImageRecord(file="a.tif", points=[Point(cls="a", xy=(0, 0)), Point(cls="a", xy=(0, 3))])
    with pytest.raises(ValueError, match=r"points\[1\].xy: \[0, 3\] is outside the 4x3"):
        rasterise(rec, ["a", "b"], 255, (3, 4))
