"""Where a fine-tuned run of a sweep stands against its initialisation, one split cell at a time.

    python benchmarks/baseline_cells.py STUDY --methods clsbranch,pointbranch --losers
    python benchmarks/baseline_cells.py STUDY --runs runs/point/acr8/split1/pointbranch,extra/pb-seed1
    python benchmarks/baseline_cells.py STUDY --methods clsbranch,pointbranch --summary

For every chosen run of the sweep folder STUDY (``dspseg sweep``; ``--losers``: only the runs whose
test mean Dice in ``results.csv`` is below their ``basic`` initialisation's) and the ``basic`` run
it started from (its ``init`` in ``config.yaml``), the best-validation and the last checkpoint are
scored on the split's ``val`` and ``test`` images with the study's Dice (counts pooled over the
split's pixels, per class ``2TP / (2TP + FP + FN)``, mean over the classes present, background
included: the numbers of ``results.csv``). Printed per run:

* val and test mean Dice of the initialisation, of the run's best checkpoint (the one the study
  reports) and of its last, with the step of each; and the run's validation curve;
* the paired bootstrap of ``test Dice(run best) − test Dice(init)`` over the test images (the same
  resampled images for both models, ``--boot`` resamples): its 95 % interval and the share of
  resamples below zero — whether the loss is larger than what the choice of test images alone moves;
* per class, the test Dice of both and the number of test and val images holding the class;
* per group of the test and val images (a split holds out whole groups, each of its own synthetic
  "style"), the Dice of both: val and test are different groups, so a checkpoint chosen on the val
  groups need not rank the same on the test ones.

``--summary`` prints one row per run instead (init val / test, the run's best val / test, its last
test, the two differences and the bootstrap), for the whole set of cells at once.

``--runs`` scores run folders outside STUDY too (reruns with other seeds or options, e.g. made by
``dspseg train --init STUDY/runs/shared/acr8/split1/basic``): each is paired with the init named in
its own config.yaml and scored on the dataset its ``data`` field (results.csv or ``--data``) names.

Diagnostics, not a speed benchmark: inference only, one thread; the numbers do not depend on the machine.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Scores:
    """Per-image pixel counts of one checkpoint on one split: ``tp``, ``fp``, ``fn`` (images, C), its
    step and each image's group (the sub-volume / style that splits never cut)."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    step: int
    groups: list[str]

    def per_class(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Pooled Dice per class over the images ``rows`` (all if None); nan for a class absent from both."""
        tp, fp, fn = (a if rows is None else a[rows] for a in (self.tp, self.fp, self.fn))
        tp, fp, fn = tp.sum(0), fp.sum(0), fn.sum(0)
        den = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)

    def mean(self, rows: np.ndarray | None = None) -> float:
        """The headline: nan-mean of :meth:`per_class`."""
        return float(np.nanmean(self.per_class(rows)))


def score(run: Path, which: str, data: Path, split: str) -> tuple[Scores, np.ndarray]:
    """Counts of ``run``'s ``which`` checkpoint on ``split`` of ``data``, and (images, C) class presence in the truth."""
    from dspseg.data.dataset import SegmentationDataset
    from dspseg.data.manifest import load_manifest
    from dspseg.engine.checkpoint import load_run
    from dspseg.engine.evaluate import predict_labels

    loaded = load_run(run, which, device="cpu")
    manifest = load_manifest(data)
    dataset = SegmentationDataset(manifest, split, normalisation=loaded.normalisation, crop_size=None,
                                  derive_weak=False)
    keep = [i for i, it in enumerate(dataset.items) if it.kind == "mask"]
    groups = [dataset.records[i][1].group_name for i in keep]
    c, ignore = manifest.n_classes, manifest.ignore_index
    tp, fp, fn, present = (np.zeros((len(keep), c), dtype=np.int64) for _ in range(4))
    images = [torch.from_numpy(dataset.items[i].image) for i in keep]
    for j, labels in predict_labels(loaded.model, images, tile=loaded.tile):
        truth = dataset.items[keep[j]].target.reshape(-1).astype(np.int64)
        pred = labels.numpy().reshape(-1).astype(np.int64)
        counted = truth != ignore
        truth, pred = truth[counted], pred[counted]
        hit = np.bincount(truth[truth == pred], minlength=c)
        tp[j] = hit
        fp[j] = np.bincount(pred, minlength=c) - hit
        fn[j] = np.bincount(truth, minlength=c) - hit
        present[j] = np.bincount(truth, minlength=c) > 0
    return Scores(tp, fp, fn, loaded.step, groups), present


def bootstrap(run: Scores, init: Scores, n: int, seed: int = 0) -> tuple[float, float, float]:
    """Paired bootstrap of ``run.mean − init.mean`` over images: (2.5 %, 97.5 %) quantiles and P(Δ < 0)."""
    rng = np.random.default_rng(seed)
    m = len(run.tp)
    deltas = np.array([run.mean(rows) - init.mean(rows) for rows in (rng.integers(0, m, m) for _ in range(n))])
    lo, hi = np.quantile(deltas, [0.025, 0.975])
    return float(lo), float(hi), float((deltas < 0).mean())


def val_curve(run: Path) -> str:
    """``step:val Dice`` of every validation row of ``run/metrics.csv``."""
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    return " ".join(f"{r['step']}:{float(r['val_mean_dice']):.3f}" for r in rows if r.get("val_mean_dice"))


def init_of(run: Path) -> Path:
    """The run folder ``run`` was initialised from (``init`` in its config.yaml)."""
    import yaml

    init = yaml.safe_load(open(run / "config.yaml")).get("init")
    if not init:
        raise SystemExit(f"{run}/config.yaml has no 'init': this script compares a fine-tuned run with its start")
    return Path(init)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="sweep folder (results.csv, runs/, data/)")
    parser.add_argument("--methods", default="clsbranch,pointbranch", help="methods of results.csv to score")
    parser.add_argument("--losers", action="store_true", help="only runs whose test Dice is below their init's")
    parser.add_argument("--runs", default=None, help="comma-separated run folders (relative to STUDY or absolute) "
                        "instead of results.csv's rows")
    parser.add_argument("--data", type=Path, default=None, help="dataset of --runs outside results.csv")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--summary", action="store_true", help="one row per run")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from dspseg.data.manifest import load_manifest

    rows = [r for r in csv.DictReader(open(args.study / "results.csv")) if r["status"] == "done"]
    data_of = {r["run"]: r["data"] for r in rows}
    if args.runs:
        runs = [Path(p) for p in args.runs.split(",")]
    else:
        init_dice = {(r["acr"], r["split"]): float(r["mean_dice"]) for r in rows if r["method"] == "basic"}
        runs = [Path(r["run"]) for r in rows if r["method"] in args.methods.split(",")
                and (not args.losers or float(r["mean_dice"]) < init_dice[r["acr"], r["split"]])]
    cache: dict[tuple[Path, str, str], tuple[Scores, np.ndarray]] = {}

    def cached(run: Path, which: str, data: Path, split: str) -> tuple[Scores, np.ndarray]:
        key = (run.resolve(), which, split)
        if key not in cache:
            cache[key] = score(run, which, data, split)
        return cache[key]

    if args.summary:
        print("| run | init val / test | run best: step, val / test | run last test | best − init: val, test "
              "| test 95 % (bootstrap) | P(Δ < 0) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
    for rel in runs:
        run = rel if rel.is_absolute() else args.study / rel
        data = args.data or args.study / data_of.get(str(rel), "")
        if not (data / "dataset.json").is_file():
            raise SystemExit(f"{run}: no dataset for it (results.csv has no row for it); give --data")
        init = init_of(run)
        classes = load_manifest(data).classes
        (iv, _), (it, present) = cached(init, "best", data, "val"), cached(init, "best", data, "test")
        (bv, val_present), (bt, _) = cached(run, "best", data, "val"), cached(run, "best", data, "test")
        (lv, _), (lt, _) = cached(run, "last", data, "val"), cached(run, "last", data, "test")
        lo, hi, below = bootstrap(bt, it, args.boot)
        if args.summary:
            print(f"| {rel} | {iv.mean():.3f} / {it.mean():.3f} | {bt.step}, {bv.mean():.3f} / {bt.mean():.3f} | "
                  f"{lt.mean():.3f} | {100 * (bv.mean() - iv.mean()):+.1f}, {100 * (bt.mean() - it.mean()):+.1f} | "
                  f"[{100 * lo:+.1f}, {100 * hi:+.1f}] | {below:.2f} |", flush=True)
            continue
        print(f"\n### {rel}  (init {init})\n")
        print(f"validation curve: {val_curve(run)}\n")
        print("| checkpoint | step | val Dice | test Dice | test − val |")
        print("|---|---:|---:|---:|---:|")
        for name, v, t in (("init (basic best)", iv, it), ("run best", bv, bt), ("run last", lv, lt)):
            print(f"| {name} | {t.step} | {v.mean():.3f} | {t.mean():.3f} | {100 * (t.mean() - v.mean()):+.1f} |")
        delta = 100 * (bt.mean() - it.mean())
        print(f"\nrun best − init: val {100 * (bv.mean() - iv.mean()):+.1f}, test {delta:+.1f} points; paired "
              f"bootstrap over the {len(bt.tp)} test images: 95 % [{100 * lo:+.1f}, {100 * hi:+.1f}], "
              f"P(Δ < 0) = {below:.2f}\n")
        print("| split, group | images | init Dice | run best Dice | Δ points |")
        print("|---|---:|---:|---:|---:|")
        for name, run_scores, init_scores in (("val", bv, iv), ("test", bt, it)):
            for group in sorted(set(run_scores.groups)):
                rows = np.array([g == group for g in run_scores.groups])
                a, b = init_scores.mean(rows), run_scores.mean(rows)
                print(f"| {name}, {group} | {int(rows.sum())} | {a:.3f} | {b:.3f} | {100 * (b - a):+.1f} |")
        print()
        print("| class | test images | val images | init test | run test | Δ points |")
        print("|---|---:|---:|---:|---:|---:|")
        pi, pb = it.per_class(), bt.per_class()
        for k, name in enumerate(classes):
            d = "" if math.isnan(pi[k]) or math.isnan(pb[k]) else f"{100 * (pb[k] - pi[k]):+.1f}"
            print(f"| {name} | {int(present[:, k].sum())} | {int(val_present[:, k].sum())} | "
                  f"{pi[k]:.3f} | {pb[k]:.3f} | {d} |")


if __name__ == "__main__":
    main()
