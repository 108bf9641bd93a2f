"""The annotation loop's oracle and random strategies on a hand-made dataset (no training).

Two 16² masks with classes bg / mito / er, drawn so the answers are known by hand::

    a.tif: bg everywhere, mito squares rows 2-4 x cols 2-4 and rows 9-12 x cols 10-13, er none
    b.tif: bg, one er bar rows 0-1 x cols 0-15 (touching the border), one mito pixel at (8, 8)
"""

from __future__ import annotations

import numpy as np
import pytest

from dspseg.data.io import write_image, write_mask
from dspseg.data.manifest import ImageRecord, Manifest, load_manifest, save_manifest
from dspseg.errors import DatasetError
from dspseg.study.costs import AnnotationCosts
from dspseg.study.loop_oracle import LoopRequest, Oracle, has_kind, spend, stronger_kinds
from dspseg.study.loop_strategies import random_requests, requests_for, strategy_seed

CLASSES = ["bg", "mito", "er"]
COSTS = AnnotationCosts(mask=100.0, box=7.0, point=2.0, label=1.0)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle")
    a = np.zeros((16, 16), np.uint8)
    a[2:5, 2:5] = 1
    a[9:13, 10:14] = 1
    b = np.zeros((16, 16), np.uint8)
    b[0:2, :] = 2
    b[8, 8] = 1
    records = []
    for name, mask in (("a", a), ("b", b)):
        write_image(root / "images" / f"{name}.tif", np.full((16, 16), 128, np.uint8))
        write_mask(root / "masks" / f"{name}.tif", mask)
        records.append(ImageRecord(file=f"images/{name}.tif", mask=f"masks/{name}.tif"))
    save_manifest(Manifest(name="hand", classes=CLASSES, images=records), root)
    return load_manifest(root)


def test_a_box_request_gets_the_boxes_of_the_mask_components_and_costs_them(source):
    oracle = Oracle(source, COSTS)
    boxes = oracle.annotation("images/a.tif", "box").boxes
    # background is one component (8-connected around the squares), then the two mito squares
    assert sorted((b.cls, b.xyxy) for b in boxes) == [("bg", (0, 0, 16, 16)), ("mito", (2, 2, 5, 5)),
                                                        ("mito", (10, 9, 14, 13))]
    answer = oracle.annotation("images/a.tif", "box")
    assert answer.mask is None and answer.points is None and answer.labels is None  # exactly what was asked
    assert oracle.cost_s("images/a.tif", "box") == pytest.approx(3 * 7.0)
    b_boxes = sorted((b.cls, b.xyxy) for b in oracle.annotation("images/b.tif", "box").boxes)
    assert b_boxes == [("bg", (0, 2, 16, 16)), ("er", (0, 0, 16, 2)), ("mito", (8, 8, 9, 9))]


def test_points_labels_and_masks_are_exactly_what_was_asked(source):
    oracle = Oracle(source, COSTS)
    points = oracle.annotation("images/a.tif", "point").points
    assert sorted((p.cls, p.xy) for p in points if p.cls == "mito") == [("mito", (3, 3)), ("mito", (11, 10))]
    assert len(points) == 3 and oracle.cost_s("images/a.tif", "point") == pytest.approx(3 * 2.0)
    labels = oracle.annotation("images/b.tif", "image")
    assert labels.labels == ["bg", "mito", "er"] and labels.boxes is None and labels.points is None
    assert oracle.annotation("images/a.tif", "image").labels == ["bg", "mito"]  # er is absent from a
    assert oracle.cost_s("images/a.tif", "image") == pytest.approx(2 * 1.0)
    mask = oracle.annotation("images/a.tif", "mask")
    assert mask.mask == "masks/a.tif" and mask.boxes is None
    assert oracle.cost_s("images/b.tif", "mask") == 100.0
    with pytest.raises(DatasetError, match="no masked image 'images/c.tif'"):
        oracle.cost_s("images/c.tif", "box")


def _reduced(kinds: dict[str, str], source) -> list[ImageRecord]:
    """Training records of a and b holding ``kinds`` (file stem → kind) answered by the oracle."""
    oracle = Oracle(source, COSTS)
    out = []
    for stem, kind in kinds.items():
        rec = ImageRecord(file=f"images/{stem}.tif", split="train")
        out.append(rec if kind == "none" else oracle.answer(rec, kind))
    return out


def test_spend_never_goes_over_the_budget_and_skips_what_cannot_be_answered(source):
    oracle = Oracle(source, COSTS)
    records = _reduced({"a": "image", "b": "none"}, source)
    requests = [LoopRequest("images/a.tif", "image", 2.0),  # a already has image labels
                LoopRequest("images/a.tif", "mask", 90.0),  # actual 100: over a 30 s budget
                LoopRequest("images/b.tif", "box", 21.0),  # actual 21: fits
                LoopRequest("images/b.tif", "point", 6.0),  # b was already asked about this round
                LoopRequest("images/x.tif", "box", 1.0)]  # not an image of the dataset
    answers, new = spend(requests, records, oracle, budget_s=30.0)
    assert [a.answered for a in answers] == [False, False, True, False, False]
    assert "already has image" in answers[0].note and "over the budget" in answers[1].note
    assert answers[1].actual_s == 100.0 and answers[2].actual_s == pytest.approx(21.0)
    assert "already asked" in answers[3].note and "not a training image" in answers[4].note
    assert sum(a.actual_s for a in answers if a.answered) <= 30.0
    assert new[0] is records[0]  # a unchanged
    assert new[1].boxes is not None and new[1].points is None and new[1].annotation_type == "box"
    # what the image held is kept when a stronger kind is answered
    upgraded = oracle.answer(records[0], "box")
    assert upgraded.labels == ["bg", "mito"] and len(upgraded.boxes) == 3 and has_kind(upgraded, "image")


def test_random_strategies_are_seeded_and_ask_only_for_stronger_kinds_within_the_budget(source):
    oracle = Oracle(source, COSTS)
    records = _reduced({"a": "point", "b": "none"}, source)
    assert stronger_kinds(records[0]) == ["mask", "box"]
    assert stronger_kinds(records[1]) == ["mask", "box", "point", "image"]
    seed = strategy_seed(0, 1, 2, "random")
    assert seed == strategy_seed(0, 1, 2, "random") and seed != strategy_seed(0, 1, 2, "masks-random")
    seen = set()
    for k in range(12):
        rng = np.random.default_rng(strategy_seed(k, 0, 1, "random"))
        asked = random_requests(records, oracle, 150.0, rng)
        again = random_requests(records, oracle, 150.0, np.random.default_rng(strategy_seed(k, 0, 1, "random")))
        assert asked == again  # reproducible
        assert sum(r.estimate_s for r in asked) <= 150.0
        for r in asked:
            rec = next(x for x in records if x.file == r.image)
            assert r.kind in stronger_kinds(rec) and r.estimate_s == oracle.cost_s(r.image, r.kind)
        seen.add(tuple((r.image, r.kind) for r in asked))
    assert len(seen) > 1  # the seed matters
    masks = random_requests(records, oracle, 150.0, np.random.default_rng(0), kinds=["mask"])
    assert [r.kind for r in masks] == ["mask"]  # one 100 s mask fits in 150 s, two do not
    for strategy, kind, images in (("boxes-random", "box", 2), ("points-random", "point", 1),
                                   ("labels-random", "image", 1)):  # a has points: no points or labels for it
        asked = requests_for(strategy, records, oracle, 150.0, run="", data="", seed=[0], threads=None)
        assert {r.kind for r in asked} == {kind} and len(asked) == images
    # the control asks for nothing, however much time is left; a round answered with nothing keeps its records
    assert requests_for("none", records, oracle, 1e6, run="", data="", seed=[0], threads=None) == []
    answers, kept = spend([], records, oracle, 150.0)
    assert answers == [] and [r.to_json() for r in kept] == [r.to_json() for r in records]
