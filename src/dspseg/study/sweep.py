"""``dspseg sweep``: every (method, scenario, ACR, split) of a study, resumable, into one folder.

1. :func:`prepare` writes ``DIR/study.yaml`` (or checks that an existing one asks for the same data,
   training options, seed and initialisation: a sweep folder holds one comparable study) and
   simulates every (scenario, ACR, split) dataset that is not there yet.
2. :func:`run_sweep` hands the runs to a backend (:mod:`dspseg.study.schedule`), basic runs first:
   a run that starts from a basic U-Net is submitted when that run is done. A run already done is
   not run again; an interrupted one resumes from its last checkpoint; a failed run is tried once
   more, then recorded as failed (with the runs that start from it), and the sweep goes on. ``DIR/results.csv`` is rewritten (atomically) after every run.

One sweep writes a folder at a time (both steps hold ``DIR``'s lock, :mod:`dspseg.fslock`; each run
holds its run folder's). SIGTERM, SIGHUP and Ctrl-C stop the workers at once and exit 130: every
interrupted run keeps its last checkpoint and resumes when the same command runs again; a full disk
stops the sweep with one sentence (exit 1) instead of failing run after run.
"""

from __future__ import annotations

import collections
import csv
import functools
import io
from pathlib import Path
from typing import Any, Iterable

import yaml

from dspseg.cli_support import holds_anything, not_ours
from dspseg.errors import UserError
from dspseg.fslock import folder_lock
from dspseg.study import RESULT_COLUMNS
from dspseg.study.costs import annotation_hours
from dspseg.study.eta import duration_text, remaining_seconds, run_progress
from dspseg.study.plan import RunSpec, StudySpec, acr_name, data_dir
from dspseg.study.runner import payload, read_result

STUDY_FILE = "study.yaml"
RESULTS_FILE = "results.csv"
SAME = ("data", "train", "seed", "n_splits", "init_from_basic", "step_budget")  # what every run of one folder shares
# What a study.yaml written before a setting existed ran with: training options added to dspseg
# later (a folder without the key trained without the option), and the study's own settings.
ADDED_LATER = {"mask_share": 0.0}
STUDY_ADDED_LATER = {"step_budget": "added"}


def load_study(root: str | Path) -> StudySpec:
    """``DIR/study.yaml`` as a :class:`StudySpec`; UserError if it is missing or unreadable."""
    path = Path(root) / STUDY_FILE
    if not path.is_file():
        raise UserError(f"{root} holds no {STUDY_FILE}; run `dspseg sweep --out {root} ...` first")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(raw, dict):
            raw = {**STUDY_ADDED_LATER, **raw}
        return StudySpec.model_validate(raw)
    except (yaml.YAMLError, ValueError) as e:
        raise UserError(f"{path} cannot be read ({str(e).splitlines()[0]}); it is written by dspseg sweep, "
                        "restore it or use a new --out folder") from None


def with_new_defaults(train: dict[str, Any]) -> dict[str, Any]:
    """A folder's training options with every option added to dspseg since it was written set to what
    its runs used — the value that means "without the option" (:data:`ADDED_LATER`), else the option's
    default — so an upgrade does not make a sweep folder unresumable or change what it resumes with."""
    from dspseg.engine.config import TrainConfig

    missing = {k: ADDED_LATER[k] if k in ADDED_LATER else f.get_default(call_default_factory=True)
               for k, f in TrainConfig.model_fields.items()
               if k not in train and k not in ("method", "method_options", "init")}
    try:
        return TrainConfig.model_validate({**train, **missing}).model_dump(mode="json",
                                                                           include=set(train) | set(missing))
    except ValueError:  # options this dspseg no longer knows: compare them as written (and refuse)
        return {**train, **missing}


def refuse_other_options(old: Any, new: Any, keys: Iterable[str], root: Path, kind: str) -> None:
    """Refuse, naming the option and the fix, when ``new`` (a sweep's or loop's spec) differs from
    ``old`` (the one its folder ``root`` was made with) in any of ``keys``: the runs of one folder must be
    comparable. Training options are compared with the options added to dspseg since filled in
    (:func:`with_new_defaults`), so an upgrade alone does not refuse a folder."""
    old = old.model_copy(update={"train": with_new_defaults(old.train)})
    new = new.model_copy(update={"train": with_new_defaults(new.train)})
    for key in keys:
        before, now = getattr(old, key), getattr(new, key)
        if before == now:
            continue
        if key == "train":  # name each training option that differs, and its --set
            differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            what = "training options " + ", ".join(f"{k} {before.get(k)!r} (now {now.get(k)!r})" for k in differ)
            fix = "the same options as before (e.g. " + " ".join(f"--set {k}={before.get(k)}" for k in differ) + ")"
        else:
            what, fix = f"{key} {before!r} (now {now!r})", "the same options as before"
        raise UserError(f"{root} holds a {kind} with other {what}; the runs of one folder must be comparable: "
                        f"use a new --out folder, or {fix}")


def prepare(spec: StudySpec, root: str | Path, console: Any) -> StudySpec:
    """Write or check ``study.yaml``; simulate the datasets ``spec`` needs; return the folder's study:
    ``spec`` joined with the methods, scenarios, ACRs and splits of earlier sweeps there (results.csv
    and ``dspseg report`` cover all of them; a sweep command runs only its own grid)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file; give a folder for the sweep")
    with folder_lock(root):
        return _prepare(spec, root, console)


def _prepare(spec: StudySpec, root: Path, console: Any) -> StudySpec:
    from dspseg.data.acr.writer import simulate_dataset
    from dspseg.fsutil import write_text_atomic

    if (root / STUDY_FILE).is_file():
        old = load_study(root)
        refuse_other_options(old, spec, SAME, root, "sweep")
        # methods, scenarios, ACRs and splits may grow: the union is the study
        study = spec.model_copy(update={
            "methods": list(dict.fromkeys(old.methods + spec.methods)),
            "scenarios": list(dict.fromkeys(old.scenarios + spec.scenarios)),
            "acrs": sorted(set(old.acrs) | set(spec.acrs)), "splits": max(old.splits, spec.splits)})
        if study.splits > study.n_splits:
            raise UserError(f"--splits {spec.splits} is more than the {spec.n_splits} cross-validation splits this "
                            "folder was made with; use a new --out folder")
    elif holds_anything(root):
        raise not_ours(root, "holds no sweep", "give a new folder")
    else:
        study = spec
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(root / STUDY_FILE, yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False))
    for scenario, acr, split in spec.cells():
        out = data_dir(root, scenario, acr, split)
        if (out / "simulation.json").is_file():
            continue
        try:
            result = simulate_dataset(spec.data, out, acr=acr, scenario=scenario, split=split,
                                      n_splits=spec.n_splits, seed=spec.seed)
        except ValueError as e:
            raise UserError(f"cannot simulate {scenario} at ACR {acr:g}, split {split} from {spec.data}: {e}") from None
        console.print(f"simulated {out.name}: " + ", ".join(f"{k} {v}" for k, v in result.counts.items() if v),
                      highlight=False)
    return study


def _classes(spec: StudySpec, root: Path) -> list[str]:
    from dspseg.data.manifest import load_manifest

    scenario, acr, split = spec.cells()[0]
    return list(load_manifest(data_dir(root, scenario, acr, split)).classes)


def write_results(spec: StudySpec, root: Path, rows: dict[str, dict[str, Any]] | None = None) -> Path:
    """``DIR/results.csv`` for every run of the folder's study ``spec``, atomically.

    A run's row is ``rows[key]`` if given (e.g. a failure of this sweep), else its ``result.json``
    if it is done; runs with neither are left out. A shared run gives one row per scenario.
    ``cost_hours`` is computed here from the row's counts and the study's costs, so it always
    follows ``study.yaml``.
    """
    from dspseg.fsutil import write_text_atomic

    rows = dict(rows or {})
    runs = spec.runs()
    for run in runs:
        if run.key not in rows:
            done = read_result(run.run_dir(root))
            if done is not None:
                rows[run.key] = done
    classes = _classes(spec, root)
    columns = list(RESULT_COLUMNS) + [f"dice_{c}" for c in classes]
    order = {m.label: i for i, m in enumerate(spec.method_specs())}
    costs = spec.costs
    table = []
    for run in runs:
        row = rows.get(run.key)
        if row is None:
            continue
        for scenario, _ in spec.rows_for(run):
            out = {**row, "scenario": scenario, "acr": acr_name(row["acr"])}
            if row.get("status") == "done" and "boxes" in row:
                out["cost_hours"] = round(annotation_hours(row, costs), 6)
            table.append(out)
    table.sort(key=lambda r: (r["scenario"], order.get(r["method"], 99), float(r["acr"]), int(r["split"])))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in table:
        writer.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    return write_text_atomic(root / RESULTS_FILE, buf.getvalue())


def run_sweep(spec: StudySpec, root: str | Path, backend: Any, console: Any,
              study: StudySpec | None = None) -> dict[str, dict[str, Any]]:
    """Run every run of ``spec`` not yet done; return ``{run key: result row}`` for ``spec``'s runs.

    ``study`` is the folder's whole study (from :func:`prepare`; default ``spec``): results.csv
    lists all of its finished runs, also those an earlier, different sweep command made there.
    An interrupt (Ctrl-C, SIGTERM, SIGHUP) or a full disk stops the workers at once (``backend.close(stop=True)``).
    """
    root = Path(root)
    from dspseg.study.backends import stop_on_signals

    with folder_lock(root), stop_on_signals():
        return _run_sweep(spec, root, backend, console, study or spec)


def _run_sweep(spec: StudySpec, root: Path, backend: Any, console: Any, study: StudySpec) -> dict[str, dict[str, Any]]:
    from dspseg.study.schedule import Progress, run_tasks

    runs = spec.runs()
    done = {r.key: row for r in runs if (row := read_result(r.run_dir(root))) is not None}
    seconds: dict[str, list[float]] = collections.defaultdict(list)  # finished runs' seconds, per method
    for r in runs:
        if r.key in done and done[r.key].get("seconds"):
            seconds[r.method.label].append(float(done[r.key]["seconds"]))

    def done_line(r: RunSpec, row: dict[str, Any], progress: Progress[RunSpec]) -> str:
        if row.get("seconds"):
            seconds[r.method.label].append(float(row["seconds"]))
        logged = {x.key: p for x in progress.in_flight if (p := run_progress(x.run_dir(root))) is not None}
        left = remaining_seconds([x for x in runs if x.key not in progress.rows], seconds, backend.slots,
                                 progress.running_s(), spec.init_parent, progress=logged)
        eta = f", about {duration_text(left)} left" if left is not None and progress.finished < progress.todo else ""
        return (f"[{progress.finished}/{progress.todo}] {r.key}: test mean Dice "
                f"{row.get('mean_dice') or float('nan'):.3f} in {row.get('seconds', 0):.0f} s  "
                f"({duration_text(progress.elapsed_s)} so far{eta})")

    return run_tasks(runs, done, parent_of=spec.init_parent, payload=functools.partial(payload, spec, root),
                     backend=backend, console=console, done_line=done_line,
                     write=lambda rows: write_results(study, root, rows),
                     disk_full=f"the sweep stopped: finished runs are in {root / RESULTS_FILE} and interrupted ones "
                               "resume from their last checkpoint — free some space, then run the same sweep command "
                               "again")


def summary_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    """One line per failed run (for the end of the sweep)."""
    return [f"{k}: {v.get('error')}" for k, v in sorted(rows.items()) if v.get("status") != "done"]
