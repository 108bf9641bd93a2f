"""Choosing requests (dspseg.advise.rank and plan.choose) on hand-made estimates: the obvious answers,
the budget, what a record already has, diversity and the uncertainty baseline."""

from __future__ import annotations

import numpy as np
import pytest

from dspseg.advise.estimate import REQUEST_KINDS, estimate
from dspseg.advise.plan import Candidate, choose
from dspseg.advise.rank import STRENGTH, can_ask, greedy, rarity_weights
from dspseg.costs import AnnotationCosts
from dspseg.vocabulary import KINDS, Kind
from advise_common import one_hot

COSTS = AnnotationCosts()


def presence_only() -> np.ndarray:
    """Twelve confident 5 x 5 objects of class 1 on a confident background, and one 4 x 3 blob the
    model cannot tell background from class 2: its only doubt is whether class 2 is in the image."""
    labels = np.zeros((48, 48), np.int64)
    for k in range(12):
        r, c = 3 + 12 * (k // 4), 3 + 12 * (k % 4)
        labels[r:r + 5, c:c + 5] = 1
    p = one_hot(labels, 3, 0.99)
    p[:, 40:44, 20:23] = np.array([0.55, 0.0, 0.45])[:, None, None]
    return p


def extent_only() -> np.ndarray:
    """Two 10 x 10 objects of class 1 whose classes are certain but whose borders are not: a 2-pixel
    ring outside each holds class 1 with 0.4, a 2-pixel ring inside with 0.6."""
    labels = np.zeros((48, 48), np.int64)
    p = one_hot(labels, 3, 0.99)
    for r, c in ((6, 6), (28, 26)):
        p[:, r - 2:r + 12, c - 2:c + 12] = np.array([0.6, 0.4, 0.0])[:, None, None]
        p[:, r:r + 10, c:c + 10] = np.array([0.4, 0.6, 0.0])[:, None, None]
        p[:, r + 2:r + 8, c + 2:c + 8] = np.array([0.005, 0.99, 0.005])[:, None, None]
    return p


def cand(key: str, probs: np.ndarray, has: str = Kind.NONE, embedding=None) -> Candidate:
    return Candidate(key, has, estimate(probs, np.ones(probs.shape[0]), COSTS), embedding)


def test_presence_doubt_gets_image_labels_and_extent_doubt_gets_boxes():
    pool = [cand("presence.tif", presence_only()), cand("extent.tif", extent_only())]
    asked = {r.image: r.kind for r in choose(pool, REQUEST_KINDS, 30.0)}
    assert asked == {"presence.tif": Kind.IMAGE, "extent.tif": Kind.BOX}
    # a budget of one mask: still labels for the first (never a mask), and a mask is no better for the second
    asked = {r.image: r.kind for r in choose(pool, REQUEST_KINDS, COSTS.mask)}
    assert asked["presence.tif"] != Kind.MASK and asked["extent.tif"] == Kind.BOX
    assert len(choose([pool[0]], REQUEST_KINDS, 4.0)) == 1  # labels alone fit 4 s
    # the reasons say what the request resolves
    reasons = {r.image: r.reason for r in choose(pool, REQUEST_KINDS, 30.0, classes=["bg", "a", "b"])}
    assert "present" in reasons["presence.tif"] and "b 0.45" in reasons["presence.tif"]
    assert "extent" in reasons["extent.tif"]


@pytest.mark.parametrize("seed", range(5))
def test_the_budget_is_never_exceeded_and_one_request_per_image(seed):
    rng = np.random.default_rng(seed)
    n, k = 40, len(REQUEST_KINDS)
    costs = rng.uniform(1, 300, (n, k))
    values = rng.uniform(0, 100, (n, k)) * costs ** rng.uniform(0.5, 1.2)
    has = rng.choice(KINDS, n)
    allowed = np.array([[can_ask(h, kind) for kind in REQUEST_KINDS] for h in has])
    emb = rng.normal(size=(n, 8))
    for budget in (0.5, 10.0, 250.0, 900.0, 1e6):
        chosen = greedy(REQUEST_KINDS, costs, values, allowed, budget, embeddings=emb, seed=seed)
        assert sum(c.cost for c in chosen) <= budget + 1e-6
        assert len({c.index for c in chosen}) == len(chosen)
        assert all(allowed[c.index, REQUEST_KINDS.index(c.kind)] for c in chosen)
        if budget == 1e6:  # everything fits: every image that may gain something gets its most valuable request
            assert {c.index for c in chosen} == {i for i in range(n) if allowed[i].any()}


def test_never_asks_what_a_record_has_or_what_it_subsumes():
    assert [k for k in REQUEST_KINDS if can_ask(Kind.MASK, k)] == []
    assert [k for k in REQUEST_KINDS if can_ask(Kind.BOX, k)] == [Kind.MASK]
    assert [k for k in REQUEST_KINDS if can_ask(Kind.POINT, k)] == [Kind.MASK, Kind.BOX]
    assert [k for k in REQUEST_KINDS if can_ask(Kind.IMAGE, k)] == [Kind.MASK, Kind.BOX, Kind.POINT]
    probs = presence_only()
    pool = [cand(f"{h}.tif", probs, has=h) for h in KINDS]
    for budget in (5.0, 60.0, 1e5):
        for r in choose(pool, REQUEST_KINDS, budget):
            assert STRENGTH[r.kind] > STRENGTH[r.image.removesuffix(".tif")]
        for r in choose(pool, REQUEST_KINDS, budget, rank_by="uncertainty"):
            assert STRENGTH[r.kind] > STRENGTH[r.image.removesuffix(".tif")]
    assert "mask.tif" not in {r.image for r in choose(pool, REQUEST_KINDS, 1e5)}


def test_diversity_spreads_requests_over_unlike_images():
    p = extent_only()
    same, other = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    pool = [cand("a.tif", p, embedding=same), cand("a-again.tif", p, embedding=same),
            cand("b.tif", p * 0.999 + 0.001 / 3, embedding=other), cand("c.tif", p, embedding=-same - other)]
    box = pool[0].estimate.cost[Kind.BOX]
    picked = [r.image for r in choose(pool, (Kind.BOX,), 2 * box)]
    assert "b.tif" in picked or "c.tif" in picked
    assert not {"a.tif", "a-again.tif"} <= set(picked)


def test_uncertainty_baseline_asks_the_most_uncertain_images_for_the_first_allowed_kind():
    labels = np.zeros((16, 16), np.int64)
    pool = [cand(f"{c}.tif", one_hot(labels, 3, c)) for c in (0.9, 0.5, 0.99, 0.7)]
    pool.append(cand("masked.tif", one_hot(labels, 3, 0.4), has=Kind.MASK))
    asked = choose(pool, (Kind.MASK,), 3 * COSTS.mask, rank_by="uncertainty")
    assert [r.image for r in asked] == ["0.5.tif", "0.7.tif", "0.9.tif"]
    assert all(r.kind == Kind.MASK and r.cost_s == COSTS.mask for r in asked)
    assert asked[0].value > asked[1].value > asked[2].value
    boxed = choose([cand("x.tif", one_hot(labels, 3, 0.5), has=Kind.IMAGE)], (Kind.IMAGE, Kind.BOX), 1e4,
                   rank_by="uncertainty")
    assert [r.kind for r in boxed] == [Kind.BOX]  # image labels it has: the next kind allowed


def test_rarity_weights():
    sets = [np.array([1, 1, 0], bool)] * 9 + [np.array([1, 0, 1], bool)]
    w = rarity_weights(sets, 3)
    assert w.mean() == pytest.approx(1.0) and w[0] < w[1] < w[2]
