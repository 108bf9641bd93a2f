"""What each strategy of the annotation loop asks for in one round, given the current dataset and model.

* ``advisor`` — :func:`dspseg.advise.advise` (value-ranked images and kinds, estimated costs);
* ``uncertainty-masks`` — the same advisor limited to masks, ranked by model uncertainty alone
  (MONAI Label's question, "which image next", without annotation kinds);
* ``random`` — training images in a seeded random order, each with a kind drawn at random from the
  kinds stronger than what it holds (an image with points may get a box or a mask; ``mask > box >
  point > image``), taken when its cost still fits the round's budget, else passed over (no second
  draw: that would favour the cheap kinds), until every image has been looked at;
* ``masks-random`` — the same with masks only; ``boxes-random``, ``points-random`` and
  ``labels-random`` likewise with one weak kind (diagnostics: what an hour of each kind buys);
* ``none`` — asks for nothing: the round retrains on the unchanged dataset (the control: how much of a
  round's gain is its extra training steps rather than its annotations).

The random strategies price a request with the oracle's own rule (:meth:`Oracle.cost_s`), so their
estimate is the actual cost. The advisor estimates costs from its prediction (the number of objects
it expects), so its answers may cost less than it asked for, or more (then the request is skipped):
it is asked again, at most :data:`REFILLS` times, for the budget left, among the images not asked
about yet, as a user with time left would ask it again. Their seed is ``(loop seed, split, round, strategy)``: a round asks for
the same requests whenever it is run.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np

from dspseg.data.manifest import ImageRecord
from dspseg.study.loop_oracle import REQUEST_KINDS, LoopRequest, Oracle, stronger_kinds
from dspseg.vocabulary import Kind


def strategy_seed(seed: int, split: int, round: int, strategy: str) -> list[int]:
    """The seed sequence of one strategy's round (stable across processes: no ``hash()``)."""
    return [int(seed), int(split), int(round), zlib.crc32(strategy.encode())]


def random_requests(records: Sequence[ImageRecord], oracle: Oracle, budget_s: float, rng: np.random.Generator,
                    kinds: Sequence[str] = REQUEST_KINDS, label: str = "random") -> list[LoopRequest]:
    """Random training images, each with a random stronger kind from ``kinds``, while the costs fit."""
    candidates = [r for r in records if r.split == "train" and stronger_kinds(r, kinds)]
    out: list[LoopRequest] = []
    spent = 0.0
    for j in rng.permutation(len(candidates)):
        rec = candidates[int(j)]
        options = stronger_kinds(rec, kinds)
        kind = options[int(rng.integers(len(options)))]
        cost = oracle.cost_s(rec.file, kind)
        if spent + cost <= budget_s + 1e-9:
            out.append(LoopRequest(rec.file, kind, cost, f"{label}: drawn at random (image held "
                                                         f"{rec.annotation_type})"))
            spent += cost
    return out


def advisor_requests(run: str, data: str, budget_s: float, costs: Any, *, uncertainty_masks: bool,
                     seed: int, threads: int | None, images: Sequence[str] | None = None) -> list[LoopRequest]:
    """The advisor's requests for ``budget_s`` seconds (``uncertainty_masks``: masks by uncertainty),
    among ``images`` (default: every training image)."""
    from dspseg.advise import advise

    options: dict[str, Any] = {"kinds": [Kind.MASK], "rank_by": "uncertainty"} if uncertainty_masks else {}
    found = advise(run, data, budget_s / 3600.0, costs, seed=seed, threads=threads, images=images, **options)
    return [LoopRequest(r.image, r.kind, float(r.cost_s), r.reason) for r in found]


#: the strategies that estimate costs before the answer (their requests may cost more or less than asked)
ESTIMATING = ("advisor", "uncertainty-masks")
#: the most times an estimating strategy is asked again, for the budget its answers left
REFILLS = 2


#: the strategies that ask for random images with one kind
ONE_KIND = {"masks-random": Kind.MASK, "boxes-random": Kind.BOX, "points-random": Kind.POINT,
            "labels-random": Kind.IMAGE}


def cheapest_s(strategy: str, costs: Any) -> float:
    """The least a single request of ``strategy`` can cost (below it, asking again is pointless)."""
    return float(costs.mask) if strategy in ("uncertainty-masks", "masks-random") else \
        float(min(costs.mask, costs.box, costs.point, costs.label))


def requests_for(strategy: str, records: Sequence[ImageRecord], oracle: Oracle, budget_s: float, *, run: str,
                 data: str, seed: list[int], threads: int | None,
                 images: Sequence[str] | None = None) -> list[LoopRequest]:
    """What ``strategy`` asks for, given the current ``records`` (at ``data``) and model ``run``
    (``images``: only these may be asked about; the random strategies draw from every image)."""
    if strategy == "none":
        return []
    if strategy == "random":
        return random_requests(records, oracle, budget_s, np.random.default_rng(seed))
    if strategy in ONE_KIND:
        return random_requests(records, oracle, budget_s, np.random.default_rng(seed), kinds=[ONE_KIND[strategy]],
                               label=strategy)
    if strategy in ("advisor", "uncertainty-masks"):
        return advisor_requests(run, data, budget_s, oracle.costs, uncertainty_masks=strategy == "uncertainty-masks",
                                seed=int(np.random.default_rng(seed).integers(2**31)), threads=threads, images=images)
    raise ValueError(f"unknown strategy '{strategy}'")
