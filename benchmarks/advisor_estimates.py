"""How well the advisor's estimates predict what the true answers would tell (issue 19, docs/advisor.md).

    python benchmarks/advisor_estimates.py RUN DATA FULL [--hours 0.25] [--seeds 20] [--threads 1]

RUN is a trained run, DATA its dataset with the current (reduced) annotations, FULL the fully masked
dataset DATA was simulated from (the same ``file`` keys; ``dspseg simulate``). For every candidate
training image of DATA (what ``dspseg advise`` would consider) the advisor's estimates are compared
with the truth of FULL:

1. **cost**: predicted objects N̂ against the true connected components N (what the ACR simulation
   derives one box and one point from), and the expected number of classes Σ q against the true one
   (what image labels cost);
2. **value**: the estimated gain of each allowed (image, kind) against the *realised* gain, the same
   quantity computed with the true answer: the cross-entropy of the true labels under the model's
   restricted probabilities P̃ that the answer removes (mask: all of it; image labels: the
   exclusion of the truly absent classes; points: the interior of the true objects and presence;
   boxes: points plus the exclusion of each present class outside its true boxes), class-weighted
   as the advisor weighs (rarity) and unweighted;
3. **choice**: the realised gain and the true seconds of what each strategy asks for within
   ``--hours``: the advisor, the advisor without rarity weights, without diversity, the
   uncertainty-masks baseline, masks-random and random (random images, a random allowed kind; mean
   over ``--seeds``), and the oracle (greedy on the realised gain per true second).

It checks the estimates against the effect model they assume (what each kind resolves), not that
model itself: whether resolved cross-entropy becomes test Dice is what ``dspseg study loop`` measures.
Inference only; the numbers do not depend on the machine.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from dspseg.advise.estimate import INTERIOR_RADIUS, REQUEST_KINDS, estimate, interior, objects, outside_boxes
from dspseg.advise.plan import Candidate, choose
from dspseg.advise.rank import can_ask, greedy
from dspseg.costs import AnnotationCosts
from dspseg.vocabulary import Kind


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else math.nan


def realised(p: np.ndarray, y: np.ndarray, w: np.ndarray, kind: str) -> float:
    """Weighted cross-entropy of the true labels ``y`` (H, W) under ``p`` (C, H, W) that the true
    answer of ``kind`` removes (module docstring)."""
    n = p.shape[0]
    full = w[y] * -np.log(np.clip(np.take_along_axis(p, y[None], 0)[0], 1e-12, 1.0))
    if kind == Kind.MASK:
        return float(full.sum())
    present = np.zeros(n, bool)
    present[np.unique(y)] = True

    def excluded(e: np.ndarray) -> np.ndarray:  # e (C, H, W) bool: classes the answer rules out per pixel
        m = (p * e).sum(0)
        wbar = (w[:, None, None] * p * e).sum(0) / np.maximum(m, 1e-12)
        return wbar * -np.log(np.clip(1.0 - m, 1e-6, 1.0))

    absent = np.broadcast_to(~present[:, None, None], p.shape)
    if kind == Kind.IMAGE:
        return float(excluded(absent).sum())
    inner = interior(y, INTERIOR_RADIUS)
    if kind == Kind.POINT:
        return float(full[inner].sum() + excluded(absent)[~inner].sum())
    inst, cls = objects(y, n, min_area=1)
    return float(full[inner].sum() + excluded(outside_boxes(inst, cls, n))[~inner].sum())


def true_cost(y: np.ndarray, kind: str, costs: AnnotationCosts) -> float:
    """Seconds the true answer takes: one box or point per true component, a label per class present."""
    if kind == Kind.MASK:
        return costs.mask
    if kind == Kind.IMAGE:
        return costs.label * len(np.unique(y))
    n = len(objects(y, int(y.max()) + 1, min_area=1)[1])
    return (costs.box if kind == Kind.BOX else costs.point) * n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("full")
    ap.add_argument("--hours", type=float, default=0.25)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from dspseg.advise import record_key
    from dspseg.advise.beliefs import _predicted, entropy, restrict
    from dspseg.advise.calibrate import calibrate
    from dspseg.advise.plan import candidates, class_weights, load
    from dspseg.data.io import read_mask
    from dspseg.data.manifest import load_manifest

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    costs = AnnotationCosts()
    loaded, dataset = load(args.run, args.data, "cpu")
    full = load_manifest(args.full)
    truth_of = {r.file: r.mask for r in full.images}
    items = candidates(dataset, REQUEST_KINDS, None)
    weights = class_weights(dataset)
    cal = calibrate(loaded, dataset)
    unit = np.ones_like(weights)
    rows = []
    for i, arrays, probs, emb in _predicted(loaded, dataset, items):
        key = record_key(dataset.records[i][1])
        y = read_mask(full.path(truth_of[key])).astype(np.int64)
        has = dataset.items[i].kind
        known = arrays["image_classes"].astype(bool) if has != Kind.NONE else None
        p_raw, p_cal = restrict(probs, arrays["allowed"]), restrict(cal.temper(probs), arrays["allowed"])
        ent = entropy(probs)
        est = {"w": estimate(p_cal, weights, costs, known=known, raw_entropy=ent, calibration=cal),
               "1": estimate(p_cal, unit, costs, known=known, raw_entropy=ent, calibration=cal),
               "raw": estimate(p_raw, weights, costs, known=known, raw_entropy=ent)}
        kinds = [k for k in REQUEST_KINDS if can_ask(has, k)]
        rows.append({"key": key, "has": has, "emb": emb, "est": est, "kinds": kinds,
                     "n_true": len(objects(y, len(weights), min_area=1)[1]), "classes_true": len(np.unique(y)),
                     "real": {"w": {k: realised(p_cal, y, weights, k) for k in kinds},
                              "1": {k: realised(p_cal, y, unit, k) for k in kinds},
                              "raw": {k: realised(p_raw, y, weights, k) for k in kinds}},
                     "cost_true": {k: true_cost(y, k, costs) for k in kinds}})
    print(cal.text())
    print(f"{len(rows)} candidate images of {args.data} ({time.perf_counter() - t0:.0f} s); class weights "
          + ", ".join(f"{c} {w:.2f}" for c, w in zip(dataset.classes, weights)))

    print("\n## Cost estimates\n\n| quantity | beliefs | Spearman | median relative error | mean estimated | mean true |")
    print("|---|---|---:|---:|---:|---:|")
    nt = [r["n_true"] for r in rows]
    for which, name in (("raw", "as the model says"), ("w", "calibrated")):
        nh = [r["est"][which].objects for r in rows]
        rel = np.median([abs(a - b) / b for a, b in zip(nh, nt)])
        print(f"| objects (boxes, points) | {name} | {spearman(nh, nt):.2f} | {rel:.0%} | {np.mean(nh):.1f} | {np.mean(nt):.1f} |")
    unl = [r for r in rows if r["has"] == Kind.NONE]
    qt = [r["classes_true"] for r in unl]
    for which, name in (("raw", "as the model says"), ("w", "calibrated")):
        qh = [float(r["est"][which].presence.sum()) for r in unl]
        if qh:
            rel = np.median([abs(a - b) / b for a, b in zip(qh, qt)])
            print(f"| classes present (labels), unlabeled images | {name} | {spearman(qh, qt):.2f} | {rel:.0%} | "
                  f"{np.mean(qh):.1f} | {np.mean(qt):.1f} |")

    print("\n## Value estimates against the realised gain\n")
    print("| kind | pairs | beliefs | Spearman | mean estimated / mean realised |")
    print("|---|---:|---|---:|---:|")
    pairs = [(r, k) for r in rows for k in r["kinds"]]
    for which, name in (("raw", "as the model says"), ("w", "calibrated"), ("1", "calibrated, unweighted")):
        for k in REQUEST_KINDS:
            sel = [r for r in rows if k in r["kinds"]]
            e = [r["est"][which].value[k] for r in sel]
            g = [r["real"][which][k] for r in sel]
            print(f"| {k} | {len(sel)} | {name} | {spearman(e, g):.2f} | {np.mean(e) / max(np.mean(g), 1e-9):.2f} |")
        est_ps = [r["est"][which].value[k] / r["est"][which].cost[k] for r, k in pairs]
        real_ps = [r["real"][which][k] / r["cost_true"][k] for r, k in pairs]
        print(f"| value per second, every (image, kind) | {len(pairs)} | {name} | {spearman(est_ps, real_ps):.2f} | |")

    budget = args.hours * 3600
    index = {r["key"]: i for i, r in enumerate(rows)}

    def score(picks: list[tuple[int, str]]) -> tuple[float, float, float, dict[str, int]]:
        kinds = {k: sum(1 for _, kk in picks if kk == k) for k in REQUEST_KINDS}
        return (sum(rows[i]["real"]["w"][k] for i, k in picks), sum(rows[i]["real"]["1"][k] for i, k in picks),
                sum(rows[i]["cost_true"][k] for i, k in picks), kinds)

    def advisor(which: str, diversity: bool = True, rank_by: str = "value", kinds=REQUEST_KINDS) -> list[tuple[int, str]]:
        pool = [Candidate(r["key"], r["has"], r["est"][which], r["emb"] if diversity else None) for r in rows]
        return [(index[q.image], q.kind) for q in choose(pool, kinds, budget, rank_by)]

    def randomly(seed: int, masks_only: bool) -> list[tuple[int, str]]:
        rng = np.random.default_rng(seed)
        picks, spent = [], 0.0
        for i in rng.permutation(len(rows)):
            kinds = [Kind.MASK] if masks_only else rows[i]["kinds"]
            k = kinds[int(rng.integers(len(kinds)))]
            c = rows[i]["cost_true"][k]
            if spent + c <= budget:
                picks.append((int(i), k))
                spent += c
        return picks

    def oracle() -> list[tuple[int, str]]:
        cost = np.array([[r["cost_true"].get(k, 0.0) for k in REQUEST_KINDS] for r in rows])
        value = np.array([[r["real"]["w"].get(k, 0.0) for k in REQUEST_KINDS] for r in rows])
        ok = np.array([[k in r["kinds"] for k in REQUEST_KINDS] for r in rows])
        return [(c.index, c.kind) for c in greedy(REQUEST_KINDS, cost, value, ok, budget, diversity=0.0)]

    print(f"\n## What each strategy asks for in {args.hours:g} h ({budget:.0f} s), realised on the calibrated beliefs\n")
    print("| strategy | realised gain (rarity weights) | realised gain (unweighted) | true seconds | mask / box / point / image |")
    print("|---|---:|---:|---:|---|")
    table = {"advisor": [advisor("w")], "advisor, unweighted": [advisor("1")],
             "advisor, no diversity": [advisor("w", diversity=False)],
             "advisor, uncalibrated": [advisor("raw")],
             "uncertainty-masks": [advisor("w", rank_by="uncertainty", kinds=(Kind.MASK,))],
             "masks-random": [randomly(s, True) for s in range(args.seeds)],
             "random": [randomly(s, False) for s in range(args.seeds)], "oracle": [oracle()]}
    for name, runs in table.items():
        scores = [score(p) for p in runs]
        gw, g1, secs = (np.mean([s[j] for s in scores]) for j in range(3))
        mix = " / ".join(f"{np.mean([s[3][k] for s in scores]):.3g}" for k in REQUEST_KINDS)
        more = f" (mean of {len(runs)} seeds)" if len(runs) > 1 else ""
        print(f"| {name}{more} | {gw:.0f} | {g1:.0f} | {secs:.0f} | {mix} |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
