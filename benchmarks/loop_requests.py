"""What each strategy of an annotation loop had annotated, and where its Dice went against the control.

    python benchmarks/loop_requests.py LOOP_DIR [--round R]

For a finished ``dspseg study loop`` folder (its ``loop.yaml``, ``results.csv`` and the rounds'
``round.json``), printed as markdown tables:

* per strategy, the answered requests of every split and round by kind, and the **pixel share of
  each class in the full masks of the images it asked masks for**, beside the same shares over the
  whole source dataset — whether a strategy's masks are typical of the data or not;
* per strategy, the **test Dice per class minus the control's** (``none``: no annotation, the same
  retraining) at round ``R`` (default: the last), mean over the splits that have both, in Dice
  points — which classes a strategy's annotation helped or hurt.

Inference-free: it reads the masks of the source dataset and the loop's CSV only (seconds).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from dspseg.data.io import read_mask
from dspseg.data.manifest import load_manifest
from dspseg.study.loop import load_loop
from dspseg.study.loop_report import CONTROL, read_rows


def class_shares(masks: list[Path], n_classes: int) -> np.ndarray:
    """(n_classes,) mean over ``masks`` of each class's pixel share (ignored pixels left out)."""
    shares = []
    for path in masks:
        m = np.asarray(read_mask(path))
        counts = np.bincount(m[m < n_classes].ravel(), minlength=n_classes)[:n_classes]
        shares.append(counts / max(1, counts.sum()))
    return np.mean(shares, axis=0) if shares else np.full(n_classes, np.nan)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("loop", type=Path, help="folder of a dspseg study loop")
    p.add_argument("--round", type=int, default=None, help="round compared with the control (default: the last)")
    args = p.parse_args(argv)
    spec = load_loop(args.loop)
    source = load_manifest(spec.data)
    classes = list(source.classes)
    mask_of = {r.file: source.root / r.mask for r in source.images if r.mask}

    print(f"# {args.loop}: requests and per-class Dice against `{CONTROL}`\n")
    print("## What was asked, and the class shares of the masked images (full masks)\n")
    print("| strategy | masks | boxes | points | labels | " + " | ".join(classes) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(classes))
    for strategy in spec.strategies:
        kinds: Counter = Counter()
        masked = []
        for info in sorted(args.loop.glob(f"data/split*/{strategy}/round*/round.json")):
            for q in json.loads(info.read_text())["requests"]:
                if q["answered"]:
                    kinds[q["kind"]] += 1
                    if q["kind"] == "mask":
                        masked.append(mask_of[q["image"]])
        shares = class_shares(masked, len(classes))
        print(f"| `{strategy}` | {kinds['mask']} | {kinds['box']} | {kinds['point']} | {kinds['image']} | "
              + " | ".join("" if np.isnan(x) else f"{100 * x:.1f} %" for x in shares) + " |")
    whole = class_shares(list(mask_of.values()), len(classes))
    print(f"| whole dataset ({len(mask_of)} masks) | | | | | " + " | ".join(f"{100 * x:.1f} %" for x in whole) + " |")

    rows = read_rows(args.loop)  # the done rows, numbers typed
    rnd = args.round if args.round is not None else max(r["round"] for r in rows)
    at = {(r["strategy"], r["split"]): r for r in rows if r["round"] == rnd}
    print(f"\n## Test Dice per class minus `{CONTROL}`'s, round {rnd} (Dice points, mean over splits)\n")
    if not any(s == CONTROL for s, _ in at):
        print(f"(no `{CONTROL}` run at round {rnd}: run the loop with the control)")
        return
    print("| strategy | splits | mean | " + " | ".join(classes) + " |")
    print("|---|---:|---:|" + "---:|" * len(classes))
    for strategy in spec.strategies:
        if strategy == CONTROL:
            continue
        splits = [k for (s, k) in at if s == strategy and (CONTROL, k) in at]
        if not splits:
            continue

        def diff(column: str) -> float:
            return 100 * float(np.mean([at[strategy, k][column] - at[CONTROL, k][column] for k in splits]))
        print(f"| `{strategy}` | {len(splits)} | {diff('mean_dice'):+.1f} | "
              + " | ".join(f"{diff('dice_' + c):+.1f}" for c in classes) + " |")


if __name__ == "__main__":
    main()
