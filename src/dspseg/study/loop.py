"""``dspseg study loop``: a simulated annotation loop comparing strategies that decide what to annotate.

For every split, the ACR protocol's mixed reduction of a fully masked dataset at ``start_acr`` is
the start; one model is trained on it (shared by every strategy). Then, round after round, each
strategy asks for ``hours_per_round`` hours of annotation (:mod:`dspseg.study.loop_strategies`),
the oracle answers from the full masks with exactly the kind requested and charges its actual cost
(:mod:`dspseg.study.loop_oracle`), and the model of the previous round trains on for the same
number of steps on the new dataset and is scored on the test split. Every strategy thus trains as
many steps as every other: only what it chose to annotate differs.

1. :func:`prepare` writes ``DIR/loop.yaml`` (or checks that an existing one asks for the same
   data, budget, method and training options; strategies, rounds and splits may grow) and simulates
   each split's start dataset.
2. :func:`run_loop` hands the tasks (:meth:`LoopSpec.tasks`) to a backend of the sweep
   (:mod:`dspseg.study.backends`) with the sweep's scheduler (:mod:`dspseg.study.schedule`), each
   once the one it starts from is done; finished tasks are skipped, an interrupted one resumes (its
   dataset is kept, its training continues from ``last.pt``), a failed one is tried once more, then
   recorded with its descendants.
   ``DIR/results.csv`` is rewritten (atomically) after every task, ``loop.png`` and ``report.md``
   at the end (:mod:`dspseg.study.loop_report`).

Both steps hold ``DIR``'s lock (:mod:`dspseg.fslock`). ``results.csv`` has one row per (strategy,
split, round), round 0 being the shared start (:data:`LOOP_COLUMNS`, then ``dice_<class>``).
"""

from __future__ import annotations

import csv
import functools
import io
from pathlib import Path
from typing import Any

import yaml

from dspseg.cli_support import holds_anything, not_ours
from dspseg.errors import UserError
from dspseg.fslock import folder_lock
from dspseg.study.loop_plan import LOOP_FILE, START, LoopSpec, LoopTask
from dspseg.study.loop_task import read_round
from dspseg.study.runner import read_result

RESULTS_FILE = "results.csv"
#: what the loop folder's runs must share (strategies, rounds and splits may grow)
SAME = ("data", "start_acr", "hours_per_round", "n_splits", "seed", "method", "train", "start_steps", "costs")
KIND_COLUMNS = ("requests_mask", "requests_box", "requests_point", "requests_image")
#: results.csv: which run; hours spent in the loop so far (actual costs; the strategy's estimates of the
#: answered requests; this round's), the requests answered this round by kind and those skipped; test Dice
LOOP_COLUMNS = ("strategy", "split", "round", "status", "hours_spent", "hours_estimated", "hours_round",
                *KIND_COLUMNS, "requests_skipped", "mean_dice", "steps", "total_steps", "seconds", "run", "data",
                "error")


def load_loop(root: str | Path) -> LoopSpec:
    """``DIR/loop.yaml`` as a :class:`LoopSpec`; UserError if it is missing or unreadable."""
    path = Path(root) / LOOP_FILE
    if not path.is_file():
        raise UserError(f"{root} holds no {LOOP_FILE}; run `dspseg study loop --out {root} ...` first")
    try:
        return LoopSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValueError) as e:
        raise UserError(f"{path} cannot be read ({str(e).splitlines()[0]}); it is written by dspseg study loop, "
                        "restore it or use a new --out folder") from None


def prepare(spec: LoopSpec, root: str | Path, console: Any) -> LoopSpec:
    """Write or check ``loop.yaml``, simulate every split's start; return the folder's whole loop (``spec``
    joined with the strategies, rounds and splits of earlier commands there)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file; give a folder for the loop")
    with folder_lock(root):
        return _prepare(spec, root, console)


def _prepare(spec: LoopSpec, root: Path, console: Any) -> LoopSpec:
    from dspseg.data.acr.writer import simulate_dataset
    from dspseg.data.manifest import load_manifest
    from dspseg.fsutil import write_text_atomic
    from dspseg.study.sweep import refuse_other_options

    source = load_manifest(spec.data)
    if source.has_volumes:
        raise UserError(f"{spec.data} names volume sections; the annotation loop answers from 2D mask files: "
                        "convert the sections to files first (dspseg convert)")
    if (root / LOOP_FILE).is_file():
        old = load_loop(root)
        refuse_other_options(old, spec, SAME, root, "loop")
        spec = spec.model_copy(update={"strategies": list(dict.fromkeys(spec.strategies + old.strategies)),
                                       "rounds": max(old.rounds, spec.rounds), "splits": max(old.splits, spec.splits)})
        if spec.splits > spec.n_splits:
            raise UserError(f"--splits {spec.splits} is more than the {spec.n_splits} cross-validation splits this "
                            "folder was made with; use a new --out folder")
    elif holds_anything(root):
        raise not_ours(root, "holds no annotation loop", "give a new folder")
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(root / LOOP_FILE, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    for k in range(spec.splits):
        out = LoopTask(START, k, 0).data_dir(root)
        if (out / "simulation.json").is_file():
            continue
        try:
            result = simulate_dataset(spec.data, out, acr=spec.start_acr, scenario="mixed", split=k,
                                      n_splits=spec.n_splits, seed=spec.seed)
        except ValueError as e:
            raise UserError(f"cannot simulate the mixed start at ACR {spec.start_acr:g}, split {k} from "
                            f"{spec.data}: {e}") from None
        console.print(f"start of split {k}: " + ", ".join(f"{v} {t}" for t, v in result.counts.items() if v),
                      highlight=False)
    return spec


def task_payload(spec: LoopSpec, root: str | Path, task: LoopTask, threads: int | None = None) -> dict[str, Any]:
    """The runner payload of ``task`` (:func:`dspseg.study.runner.payload`'s keys; a round adds its
    ``prepare`` step, :func:`dspseg.study.loop_task.build_round`, and what that needs)."""
    from dspseg.methods import get_method

    root = Path(root).resolve()
    train = dict(spec.train)
    if threads is not None and train.get("threads") is None:
        train["threads"] = threads
    if task.is_start and spec.start_steps is not None:
        train["steps"] = spec.start_steps
    parent = task.parent
    p: dict[str, Any] = {
        "root": str(root), "key": task.key, "method": spec.method, "method_name": spec.method, "method_options": {},
        "uses": sorted(get_method(spec.method).uses), "scenario": "mixed", "acr": spec.start_acr,
        "split": task.split, "data": str(task.data_dir(root)), "out": str(task.run_dir(root)),
        "log": str(task.log_file(root)), "init": str(parent.run_dir(root)) if parent else None, "train": train}
    if parent is not None:
        p.update(prepare="dspseg.study.loop_task:build_round", strategy=task.strategy, round=task.round,
                 prev_data=str(parent.data_dir(root)), source=str(Path(spec.data).resolve()),
                 budget_s=spec.budget_s, costs=spec.costs.model_dump(), seed=spec.seed)
    return p


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def loop_row(spec: LoopSpec, root: Path, task: LoopTask, strategy: str, row: dict[str, Any]) -> dict[str, Any]:
    """The results.csv row of ``task`` for ``strategy`` (a start stands as round 0 of every strategy),
    from the runner's ``row`` and the ``round.json`` files of the rounds up to it."""
    out = {**row, "strategy": strategy, "split": task.split, "round": task.round,
           "run": _relative(task.run_dir(root), root), "data": _relative(task.data_dir(root), root)}
    spent = estimated = 0.0
    info: dict[str, Any] | None = None
    for r in range(1, task.round + 1):
        info = read_round(LoopTask(strategy, task.split, r).data_dir(root))
        if info is None:
            break
        spent += info["spent_s"]
        estimated += info["estimated_s"]
    if info is None and task.round > 0:  # a failed round whose dataset was not written
        return {**out, **{c: None for c in ("hours_spent", "hours_estimated", "hours_round", "requests_skipped",
                                            *KIND_COLUMNS)}}
    answered = (info or {}).get("answered", {})
    return {**out, "hours_spent": round(spent / 3600, 6), "hours_estimated": round(estimated / 3600, 6),
            "hours_round": round((info or {}).get("spent_s", 0.0) / 3600, 6),
            **{f"requests_{k}": answered.get(k, 0) for k in ("mask", "box", "point", "image")},
            "requests_skipped": (info or {}).get("skipped", 0)}


def write_results(spec: LoopSpec, root: Path, rows: dict[str, dict[str, Any]] | None = None) -> Path:
    """``DIR/results.csv`` for every task of ``spec`` that is done (or whose failure is in ``rows``), atomically."""
    from dspseg.data.manifest import load_manifest
    from dspseg.fsutil import write_text_atomic

    rows = dict(rows or {})
    classes = list(load_manifest(spec.data).classes)
    columns = [*LOOP_COLUMNS, *(f"dice_{c}" for c in classes)]
    table = []
    for task in spec.tasks():
        row = rows.get(task.key) or read_result(task.run_dir(root))
        if row is None:
            continue
        for strategy in (spec.strategies if task.is_start else [task.strategy]):
            table.append(loop_row(spec, root, task, strategy, row))
    order = {s: i for i, s in enumerate(spec.strategies)}
    table.sort(key=lambda r: (order[r["strategy"]], r["split"], r["round"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in table:
        writer.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    return write_text_atomic(root / RESULTS_FILE, buf.getvalue())


def run_loop(spec: LoopSpec, root: str | Path, backend: Any, console: Any) -> dict[str, dict[str, Any]]:
    """Run every task of ``spec`` not yet done; return ``{task key: result row}``. An interrupt (Ctrl-C,
    SIGTERM, SIGHUP) or a full disk stops the workers at once (``backend.close(stop=True)``)."""
    from dspseg.study.backends import stop_on_signals

    root = Path(root)
    with folder_lock(root), stop_on_signals():
        return _run_loop(spec, root, backend, console)


def _run_loop(spec: LoopSpec, root: Path, backend: Any, console: Any) -> dict[str, dict[str, Any]]:
    from dspseg.study.schedule import Progress, run_tasks

    tasks = spec.tasks()
    done = {t.key: row for t in tasks if (row := read_result(t.run_dir(root))) is not None}
    seconds: list[float] = []  # the seconds of the tasks done in this call

    def done_line(t: LoopTask, row: dict[str, Any], progress: Progress[LoopTask]) -> str:
        seconds.append(float(row.get("seconds") or 0.0))
        finished, todo = progress.finished, progress.todo
        left = (todo - finished) * (sum(seconds) / len(seconds)) / backend.slots
        info = read_round(t.data_dir(root)) if not t.is_start else None
        spent = f", {info['spent_s'] / 3600:.3f} h annotated" if info else ""
        eta = f", about {left / 60:.0f} min left" if finished < todo else ""
        return (f"[{finished}/{todo}] {t.key}: test mean Dice {row.get('mean_dice') or float('nan'):.3f}{spent} in "
                f"{row.get('seconds', 0):.0f} s ({progress.elapsed_s / 60:.0f} min so far{eta})")

    return run_tasks(tasks, done, parent_of=lambda t: t.parent, payload=functools.partial(task_payload, spec, root),
                     backend=backend, console=console, done_line=done_line,
                     write=lambda rows: write_results(spec, root, rows),
                     disk_full=f"the loop stopped: finished rounds are in {root / RESULTS_FILE} and an interrupted "
                               "one resumes — free some space, then run the same command again")
