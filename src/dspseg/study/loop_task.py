"""One round of one strategy on one split: the dataset it trains on.

A round is an ordinary run of the sweep's runner (:func:`dspseg.study.runner.execute`: it holds the
run folder, resumes from ``last.pt``, scores the test split and writes ``result.json`` last; a
failure is a failed row). Its payload (:func:`dspseg.study.loop.task_payload`) names
:func:`build_round` as its ``prepare`` step, which the runner calls once the run folder is held and
the previous round is done, before training: unless the round's dataset is already written, it asks
the strategy for the round's hours of requests (from the previous round's dataset and model),
answers them from the full masks (:func:`dspseg.study.loop_oracle.spend`: actual costs, never over
the budget) and writes the new dataset folder in one rename (:func:`dspseg.fsutil.new_folder`;
images and masks hard-linked from the source, as ``dspseg simulate`` does), with ``round.json``
recording every request. A round re-run after an interrupt reuses its dataset, so a resumed
training run sees the very dataset it started on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dspseg.study.loop_plan import ROUND_FILE

ROUND_FORMAT = "dspseg-loop-round/1"


def read_round(data: str | Path) -> dict[str, Any] | None:
    """The ``round.json`` of a round's dataset folder, or None when it has none (not written yet)."""
    try:
        info = json.loads((Path(data) / ROUND_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == ROUND_FORMAT else None


def build_round(p: dict[str, Any]) -> dict[str, Any]:
    """Write round ``p``'s dataset folder (unless it exists); return its ``round.json``."""
    from dspseg.data.acr.writer import _place_files
    from dspseg.data.manifest import Manifest, load_manifest, save_manifest
    from dspseg.fsutil import new_folder, write_text_atomic
    from dspseg.study.costs import AnnotationCosts
    from dspseg.study.loop_oracle import Oracle, spend
    from dspseg.study.loop_strategies import ESTIMATING, REFILLS, cheapest_s, requests_for, strategy_seed

    out = Path(p["data"])
    done = read_round(out)
    if done is not None:
        return done
    source, previous = load_manifest(p["source"]), load_manifest(p["prev_data"])
    oracle = Oracle(source, AnnotationCosts(**p["costs"]), seed=p["seed"])
    t0 = time.perf_counter()
    ask = {"run": p["init"], "data": p["prev_data"], "threads": p["train"].get("threads")}
    seed = strategy_seed(p["seed"], p["split"], p["round"], p["strategy"])
    requests = requests_for(p["strategy"], previous.images, oracle, p["budget_s"], seed=seed, **ask)
    answers, records = spend(requests, previous.images, oracle, p["budget_s"])
    passes = 1
    while p["strategy"] in ESTIMATING and passes <= REFILLS:
        left = p["budget_s"] - sum(a.actual_s for a in answers if a.answered)
        asked = {a.request.image for a in answers}
        images = [r.file for r in previous.images if r.split == "train" and r.file not in asked]
        if left < cheapest_s(p["strategy"], oracle.costs) or not images:
            break
        more = requests_for(p["strategy"], previous.images, oracle, left, seed=[*seed, passes], images=images, **ask)
        if not more:
            break
        extra, records = spend(more, records, oracle, left)
        answers += extra
        passes += 1
    asked_s = time.perf_counter() - t0
    manifest = Manifest(name=f"{source.name}-loop-{p['strategy']}-split{p['split']}-round{p['round']}",
                        classes=list(source.classes), ignore_index=source.ignore_index,
                        group_every=source.group_every, images=records)
    manifest.root = source.root
    taken = [a for a in answers if a.answered]
    info = {"format": ROUND_FORMAT, "strategy": p["strategy"], "split": p["split"], "round": p["round"],
            "budget_s": p["budget_s"], "spent_s": round(sum(a.actual_s for a in taken), 6),
            "estimated_s": round(sum(a.request.estimate_s for a in taken), 6),
            "requested_estimate_s": round(sum(a.request.estimate_s for a in answers), 6),
            "answered": {k: sum(1 for a in taken if a.request.kind == k) for k in ("mask", "box", "point", "image")},
            "skipped": len(answers) - len(taken), "passes": passes, "strategy_seconds": round(asked_s, 2),
            "previous": str(Path(p["prev_data"]).relative_to(p["root"])), "model": str(Path(p["init"]).relative_to(p["root"])),
            "requests": [a.to_json() for a in answers]}
    with new_folder(out, "round") as tmp:
        _place_files(source, manifest, tmp)
        save_manifest(manifest, tmp)
        write_text_atomic(tmp / ROUND_FILE, json.dumps(info, indent=1) + "\n")
    return info
