"""One round of an annotation loop retrained with other training seeds: how much of a strategy's
difference is one run's noise.

    python benchmarks/loop_seeds.py LOOP_DIR --out SEEDS_DIR [--round R] [--seeds 1,2]
        [--strategies advisor,random,masks-random,none] [--jobs 2]

For every split and strategy of a finished ``dspseg study loop`` folder, round ``R``'s dataset
(``LOOP_DIR/data/splitK/STRATEGY/roundR``) is trained again with ``dspseg train --config`` of that
round's run (so from the same previous-round weights, the same steps and options) and ``--seed S``,
then scored with ``dspseg evaluate --split test`` (the best checkpoint, as the loop scores it). The
loop's own run is seed 0. Runs go to ``SEEDS_DIR/splitK-STRATEGY-seedS``; a run with its
``eval/test.json`` is kept, one without it is trained again, so an interrupted call resumes. Printed as markdown: test mean Dice per
cell and seed with the mean and the spread, then ``advisor`` − every other strategy on the seed means
per split, and over all seed pairs (mean, standard deviation, standard error, pairs above).

The noise measured is the last round's only: the earlier rounds are the loop's single runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dspseg.study.loop import load_loop
from dspseg.study.loop_report import FOCUS, read_rows


def retrain(loop: Path, out: Path, split: int, strategy: str, rnd: int, seed: int) -> Path:
    """Train and score one cell with ``seed`` (kept if scored already); returns its ``eval/test.json``."""
    run = out / f"split{split}-{strategy}-seed{seed}"
    scores = run / "eval" / "test.json"
    if scores.is_file():
        return scores
    data = loop / "data" / f"split{split}" / strategy / f"round{rnd}"
    config = loop / "runs" / f"split{split}" / strategy / f"round{rnd}" / "config.yaml"
    dspseg = str(Path(sys.executable).with_name("dspseg"))
    shutil.rmtree(run, ignore_errors=True)  # this script's own unfinished run: trained again whole
    with open(out / f"{run.name}.log", "w", encoding="utf-8") as log:
        for command in ([dspseg, "train", str(data), "--config", str(config), "--out", str(run), "--seed", str(seed)],
                        [dspseg, "evaluate", str(run), str(data), "--split", "test"]):
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("loop", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--round", type=int, default=None, help="the round to retrain (default: the last)")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--strategies", default="advisor,random,masks-random,none")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at a time")
    args = ap.parse_args()
    spec, rows = load_loop(args.loop), read_rows(args.loop)
    rnd = spec.rounds if args.round is None else args.round
    seeds = [int(s) for s in args.seeds.split(",")]
    strategies = [s for s in args.strategies.split(",") if s in spec.strategies]
    splits = sorted({r["split"] for r in rows if r["round"] == rnd})
    args.out.mkdir(parents=True, exist_ok=True)
    cells = [(k, s, seed) for seed in seeds for k in splits for s in strategies]
    with ThreadPoolExecutor(args.jobs) as pool:
        files = list(pool.map(lambda c: retrain(args.loop, args.out, c[0], c[1], rnd, c[2]), cells))
    dice = {(r["split"], r["strategy"], 0): r["mean_dice"] for r in rows if r["round"] == rnd}
    for (k, s, seed), f in zip(cells, files):
        dice[(k, s, seed)] = json.loads(f.read_text())["mean_dice"]
    all_seeds = [0, *seeds]

    print(f"# {args.loop}: round {rnd} retrained with seeds {', '.join(map(str, seeds))} (seed 0: the loop's run)\n")
    print("| strategy | split | " + " | ".join(f"seed {s}" for s in all_seeds) + " | mean | spread (points) |")
    print("|---|---:|" + "---:|" * (len(all_seeds) + 2))
    means = {}
    for s in strategies:
        for k in splits:
            v = [dice[(k, s, seed)] for seed in all_seeds]
            means[(k, s)] = statistics.mean(v)
            print(f"| `{s}` | {k} | " + " | ".join(f"{x:.3f}" for x in v)
                  + f" | {means[(k, s)]:.3f} | {100 * (max(v) - min(v)):.1f} |")
    print("| **mean over splits** | | " + " | ".join("" for _ in all_seeds) + " | | |")
    for s in strategies:
        print(f"| `{s}` | | " + " | ".join(f"{statistics.mean(dice[(k, s, seed)] for k in splits):.3f}"
                                         for seed in all_seeds)
              + f" | {statistics.mean(means[(k, s)] for k in splits):.3f} | |")
    if FOCUS not in strategies:
        return
    print(f"\n| `{FOCUS}` − | on the seed means, per split | mean | over all seed pairs: mean ± sd (se) | pairs above |")
    print("|---|---|---:|---|---:|")
    for b in (s for s in strategies if s != FOCUS):
        per_split = [100 * (means[(k, FOCUS)] - means[(k, b)]) for k in splits]
        pairs = [100 * (dice[(k, FOCUS, seed)] - dice[(k, b, seed)]) for k in splits for seed in all_seeds]
        sd = statistics.stdev(pairs) if len(pairs) > 1 else float("nan")
        print(f"| `{b}` | " + " / ".join(f"{x:+.1f}" for x in per_split) + f" | {statistics.mean(per_split):+.1f} | "
              f"{statistics.mean(pairs):+.1f} ± {sd:.1f} ({sd / len(pairs) ** 0.5:.1f}) | "
              f"{sum(x > 0 for x in pairs)}/{len(pairs)} |")


if __name__ == "__main__":
    main()
