"""The cost and value estimates of one image, on hand-made predictions (dspseg.advise.estimate)."""

from __future__ import annotations

import numpy as np
import pytest

from dspseg.advise.estimate import estimate, interior, objects, outside_boxes, presence
from dspseg.costs import AnnotationCosts
from dspseg.vocabulary import Kind
from advise_common import one_hot

COSTS = AnnotationCosts()


def scene() -> np.ndarray:
    """32 x 32, class 0 around two 6 x 6 squares of class 1, a disc of class 2 and a 2-pixel speck of class 2."""
    labels = np.zeros((32, 32), np.int64)
    labels[2:8, 2:8] = 1
    labels[20:26, 4:10] = 1
    yy, xx = np.mgrid[:32, :32]
    labels[(yy - 12) ** 2 + (xx - 22) ** 2 <= 9] = 2
    labels[30, 30:32] = 2  # 2 pixels: below MIN_AREA, not an object to box or click
    return labels


def test_costs_follow_the_predicted_objects_and_classes():
    est = estimate(one_hot(scene(), 3), np.ones(3), COSTS)
    assert est.objects == 4  # the background, two squares, the disc (the speck is too small)
    assert est.cost[Kind.BOX] == pytest.approx(4 * COSTS.box)
    assert est.cost[Kind.POINT] == pytest.approx(4 * COSTS.point)
    assert est.cost[Kind.MASK] == pytest.approx(COSTS.mask)
    assert est.cost[Kind.IMAGE] == pytest.approx(3 * COSTS.label, rel=0.02)  # three classes, each present with >= 0.98
    # a record that states its classes: presence is what it says
    known = estimate(one_hot(scene(), 4), np.ones(4), COSTS, known=np.array([True, True, True, False]))
    assert known.presence.tolist() == [1, 1, 1, 0] and known.cost[Kind.IMAGE] == pytest.approx(3 * COSTS.label)
    cheap = AnnotationCosts.from_items(["box=1", "point=0.5", "mask=60", "label=2"])
    est = estimate(one_hot(scene(), 3), np.ones(3), cheap)
    assert (est.cost[Kind.BOX], est.cost[Kind.POINT], est.cost[Kind.MASK]) == pytest.approx((4, 2, 60))


def test_presence_objects_interior_and_boxes():
    labels = scene()
    p = one_hot(labels, 3)
    p[:, 0, 20:30] = [[0.6], [0.1], [0.3]]  # ten pixels that may be class 2
    q = presence(p, min_area=5)
    assert q[0] == pytest.approx(1.0) and q[1] > 0.98 and q[2] >= 0.98  # seen surely, in many pixels
    q = presence(np.where(labels == 2, 0.01, p), min_area=5)  # no class-2 object left: only the ten 0.3 pixels
    assert q[2] == pytest.approx(0.3)
    spread = np.full((3, 32, 32), 0.01)
    spread[0] = 0.98
    assert presence(spread, min_area=5)[1] == pytest.approx(0.01)  # a little everywhere is noise, not a sighting
    inst, classes = objects(labels, 3, min_area=5)
    assert sorted(classes.tolist()) == [0, 1, 1, 2] and inst[30, 31] == 0
    inner = interior(labels, radius=1)
    assert inner[4, 4] and not inner[2, 2] and not inner[8, 4]  # a square's centre, its corner, just outside it
    out = outside_boxes(inst, classes, 3)
    assert not out[1, 3, 3] and out[1, 15, 15] and not out[2, 12, 22] and out[2, 30, 31]


def test_each_type_values_what_it_resolves():
    labels = scene()
    confident = estimate(one_hot(labels, 3, 0.999), np.ones(3), COSTS)
    assert max(confident.value.values()) < 0.01 * labels.size  # nothing left to learn: < 0.01 nats per pixel
    vals = confident.value
    assert vals[Kind.IMAGE] <= vals[Kind.POINT] <= vals[Kind.BOX] <= vals[Kind.MASK]
    # no class-2 object, but a 4 x 3 blob that may be class 2: whether it is in the image is the doubt
    p = one_hot(np.where(labels == 2, 0, labels), 3, 0.999)
    p[:, 26:30, 20:23] = np.array([0.55, 0.0, 0.45])[:, None, None]
    presence_only = estimate(p, np.ones(3), COSTS)
    assert presence_only.presence[2] == pytest.approx(0.45)
    per_second = {k: presence_only.value[k] / presence_only.cost[k] for k in presence_only.value}
    assert per_second[Kind.IMAGE] > 10 * per_second[Kind.MASK] and per_second[Kind.IMAGE] > per_second[Kind.BOX]
    # the same doubt counts more for a class weighted up (rare in the current annotations)
    rare = estimate(p, np.array([0.5, 0.5, 2.0]), COSTS)
    assert rare.value[Kind.IMAGE] > 1.5 * presence_only.value[Kind.IMAGE]
