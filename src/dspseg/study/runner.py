"""One run of a sweep, start to finish: train (or resume), evaluate on the test split, write result.json.

:func:`execute` takes a plain dict (:func:`payload`) so that any backend — a local process pool or a
Ray task on another machine — can run it; it returns the run's result row (``RESULT_COLUMNS`` plus
``dice_<class>``) and never raises for a failed training: the row then has ``status: failed`` and
the error, and the full traceback is in the run's log file.

Re-running is safe: a run whose ``result.json`` says done is returned as it is; a run with a
``checkpoints/last.pt`` continues from it (``dspseg train --resume``); a run folder left without a
checkpoint (killed before its first save) holds nothing worth keeping and is started again.

A payload may name a ``prepare`` step (``"dspseg.MODULE:FUNCTION"``, called with the payload once the
run folder is held and the run it starts from is done, before training): the annotation loop
(:mod:`dspseg.study.loop_task`) writes a round's dataset there.

The run folder has one writer: :func:`execute` holds its lock (:meth:`RunFolder.lock`) from start to
end, so a second sweep (or a worker left over from one) gets a failed row naming the holder instead
of training the run twice. A full disk gives a failed row with ``disk_full: True``, which stops the
sweep (:func:`dspseg.study.sweep.run_sweep`).
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from dspseg.engine.runfolder import RunFolder
from dspseg.fslock import entries
from dspseg.study.costs import annotation_counts
from dspseg.study.plan import RunSpec, StudySpec


def payload(spec: StudySpec, root: Path, run: RunSpec, threads: int | None = None) -> dict[str, Any]:
    """Everything :func:`execute` needs, as JSON-able values (paths absolute)."""
    root = Path(root).resolve()
    parent = spec.init_parent(run)
    train = dict(spec.train)
    if threads is not None and train.get("threads") is None:
        train["threads"] = threads
    return {"root": str(root), "key": run.key, "method": run.method.label, "method_name": run.method.name,
            "method_options": run.method.options, "uses": sorted(run.method.uses), "scenario": run.scenario,
            "acr": run.acr, "split": run.split, "data": str(spec.dataset_of(root, run)),
            "out": str(run.run_dir(root)), "log": str(run.log_file(root)),
            "init": str(parent.run_dir(root)) if parent else None, "train": train}


def read_result(out: str | Path) -> dict[str, Any] | None:
    """The finished result of a run folder, or None if it has none (or an unreadable one)."""
    path = RunFolder(out).result
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) and row.get("status") == "done" else None


def _relative(path: str | Path, root: str | Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def execute(p: dict[str, Any]) -> dict[str, Any]:
    """Run ``p`` (from :func:`payload`) to the end, holding its run folder; return its result row
    (done or failed; never raises but for an interrupt)."""
    out, root = Path(p["out"]), Path(p["root"])
    done = read_result(out)
    if done is not None:
        return {**done, "skipped": True}
    t0 = time.perf_counter()
    try:
        with RunFolder(out).lock():
            return _execute(p, out, root, t0)
    except Exception as e:  # the lock is held elsewhere, or the log or result.json cannot be written
        return _failure(p, e, root, out, t0)


def _failure(p: dict[str, Any], e: BaseException, root: Path, out: Path, t0: float, log: Any = None) -> dict[str, Any]:
    """The failed row of a run that raised ``e`` (its traceback goes to the run's log when it can)."""
    from dspseg.fsutil import is_disk_full

    full = is_disk_full(e, out if out.is_dir() else root)
    if log is not None:
        try:
            log.write(traceback.format_exc())
            log.flush()
        except OSError:
            pass  # a full disk: the row still says what happened
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    name = "DiskFullError" if full else type(e).__name__
    if full and "no space left" not in message:
        message = f"no space left on the disk while running {p['key']} ({message})"
    return result_row(p, status="failed", error=f"{name}: {message} (log: {_relative(p['log'], root)})",
                      seconds=round(time.perf_counter() - t0, 1), disk_full=full)


def _execute(p: dict[str, Any], out: Path, root: Path, t0: float) -> dict[str, Any]:
    from rich.console import Console

    from dspseg.fsutil import write_text_atomic

    log_path = Path(p["log"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        console = Console(file=log, force_terminal=False, width=120, soft_wrap=True)
        console.rule(f"{p['key']}  ({time.strftime('%Y-%m-%d %H:%M:%S')})")
        try:
            row = _train_and_evaluate(p, out, root, console)
        except Exception as e:  # every failure becomes a row; the sweep goes on (an interrupt stops it)
            return _failure(p, e, root, out, t0, log)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    write_text_atomic(RunFolder(out).result, json.dumps(row, indent=1) + "\n")
    return row


def result_row(p: dict[str, Any], **values: Any) -> dict[str, Any]:
    """The results.csv row of payload ``p``: which run, where it lives, then ``values``."""
    root = p["root"]
    base = {"method": p["method"], "scenario": p["scenario"], "acr": p["acr"], "split": p["split"],
            "status": "done", "mean_dice": None, "steps": None, "total_steps": None, "seconds": None,
            "run": _relative(p["out"], root), "data": _relative(p["data"], root), "error": ""}
    base.update(values)
    return base


def _entry(name: str) -> Any:
    """The function ``"dspseg.module:function"`` names (a payload's ``prepare`` step)."""
    import importlib

    module, _, function = name.partition(":")
    if not module.startswith("dspseg.") or not function:
        raise ValueError(f"prepare step {name!r}: expected 'dspseg.MODULE:FUNCTION'")
    return getattr(importlib.import_module(module), function)


def _train_and_evaluate(p: dict[str, Any], out: Path, root: Path, console: Any) -> dict[str, Any]:
    from dspseg.data.manifest import load_manifest
    from dspseg.engine.config import resolve_config
    from dspseg.engine.evaluate import evaluate_run
    from dspseg.engine.trainer import resolve_run_config, train

    resume = RunFolder(out).can_resume()
    for leftover in ([] if resume else entries(out)):  # killed before its first checkpoint: nothing to keep
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()  # (the lock we hold stays)
    if p["init"] and read_result(p["init"]) is None:
        raise RuntimeError(f"the run it starts from ({_relative(p['init'], root)}) has not finished")
    if p.get("prepare"):  # a step that writes the run's dataset first (the annotation loop's round)
        _entry(p["prepare"])(p)
    flags = {**p["train"], "method": p["method_name"], "method_options": p["method_options"],
             "init": p["init"]}
    cfg = resolve_run_config(out, True, None, {k: flags[k] for k in ("steps", "epochs") if flags.get(k)}) \
        if resume else resolve_config(flags=flags)
    init_steps = 0  # steps its initialisation trained from random weights
    if p["init"]:
        parent = read_result(p["init"]) or {}
        init_steps = int(parent.get("total_steps") or parent.get("steps") or 0)
    trained = train(p["data"], out, cfg, resume=resume, console=console)
    report = evaluate_run(out, p["data"], split="test", console=console)
    manifest = load_manifest(p["data"])
    counts = annotation_counts(manifest.records("train"), p["uses"])  # cost_hours: sweep.write_results
    per_class = {f"dice_{c}": report["per_class"].get(c) for c in manifest.classes}
    return result_row(p, mean_dice=report["mean_dice"], steps=trained.step, total_steps=init_steps + trained.step,
                      **counts, **per_class)
