"""``dspseg report DIR``: the figures and tables of a sweep, written to ``DIR/report/``.

    dice_vs_acr_<scenario>.png   test mean Dice against ACR, one line per method (paper Fig. 3)
    dice_vs_cost.png             mean Dice against hours of annotation, every method and scenario
    per_class_<scenario>.png     Dice per class for every method @ ACR (heatmap, 0..1)
    qualitative.png              one test image, its truth and every split-0 run's prediction (Fig. 4)
    table.md, table.csv          mean ± std over splits of the test mean Dice, and annotation hours;
                                 table.md says how the sweep budgeted steps (step-matched or added)
                                 and how many steps from random weights every method trained
    savings.md                   Dice relative to full supervision (basic-matched, else basic, at ACR 1) and the ACR each
                                 method keeps 90 % of it up to; paired per-split Dice differences
                                 (dsp against every other method, or the ``compare`` pairs)

Only finished runs (``status`` done) enter; failed ones are counted. Every file is written
atomically, so a report folder never holds a half-written file.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any, Sequence

from dspseg.fsutil import write_text_atomic
from dspseg.study.results import (COUNT_COLUMNS, ResultsError, class_names, done_rows, failed_count,
                                  read_results, results_path, summarise)
from dspseg.study.savings import (default_comparisons, differences_markdown, headline, paired_differences,
                                  savings, savings_markdown)

REPORT_FOLDER = "report"


def safe_name(text: str) -> str:
    """``text`` usable in a file name (anything but letters, digits, ``.``, ``-``, ``_`` becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unnamed"


def _fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _cell(v: float | None) -> str:
    return "" if v is None else str(round(float(v), 6))


def winners(groups: Sequence[dict[str, Any]]) -> set[tuple[str, str, float]]:
    """(method, scenario, acr) of the best mean Dice per (scenario, ACR), ties at 3 decimals included."""
    best: dict[tuple[str, float], float] = {}
    for g in groups:
        if g["mean_dice"] is not None:
            key = (g["scenario"], g["acr"])
            best[key] = max(best.get(key, -1.0), round(g["mean_dice"], 3))
    return {(g["method"], g["scenario"], g["acr"]) for g in groups
            if g["mean_dice"] is not None and round(g["mean_dice"], 3) == best[(g["scenario"], g["acr"])]}


def steps_line(rows: Sequence[dict[str, Any]]) -> str | None:
    """``"Steps from random weights: basic 300, basic-matched 600, dsp 600."`` from the rows'
    ``total_steps`` (None when no row has it: a results.csv written before the column existed)."""
    per_method: dict[str, set[int]] = {}
    for r in rows:
        if r.get("total_steps") is not None:
            per_method.setdefault(r["method"], set()).add(int(r["total_steps"]))
    if not per_method:
        return None
    parts = [f"{m} {'/'.join(str(n) for n in sorted(v))}" for m, v in per_method.items()]
    return "Steps from random weights: " + ", ".join(parts) + "."


def budget_sentences(dir: Path, rows: Sequence[dict[str, Any]]) -> list[str]:
    """How the sweep budgeted steps (from ``study.yaml``; a bare results.csv has none to say) and what
    the runs trained."""
    from dspseg.errors import UserError
    from dspseg.study.sweep import STUDY_FILE, load_study

    lines = []
    if (dir / STUDY_FILE).is_file():
        try:
            lines.append(load_study(dir).budget_text())
        except UserError as e:  # the tables are still right; say why the budget is not stated
            lines.append(f"(How the steps were budgeted is not stated: {e})")
    steps = steps_line(rows)
    if steps:
        lines.append(steps)
    return lines


def markdown_table(groups: Sequence[dict[str, Any]], notes: Sequence[str] = ()) -> str:
    """The Markdown table: rows (scenario, method), columns ACR, cells ``Dice mean ± std · hours``;
    ``notes`` (e.g. :func:`budget_sentences`) follow the caption."""
    acrs = sorted({g["acr"] for g in groups})
    top = winners(groups)
    splits = sorted({g["n"] for g in groups})
    n = f"{splits[0]}" if len(splits) == 1 else f"{splits[0]}–{splits[-1]}"
    lines = [f"Test mean Dice (mean ± std over {n} split(s)) · annotation hours of the training annotations, "
             "per scenario, method and ACR; the best method per scenario and ACR is in bold."
             + "".join(f" {n}" for n in notes), "",
             "| scenario | method | " + " | ".join(f"ACR {a:g}" for a in acrs) + " |",
             "|---|---|" + "---:|" * len(acrs)]
    keys = list(dict.fromkeys((g["scenario"], g["method"]) for g in groups))
    by_key = {(g["scenario"], g["method"], g["acr"]): g for g in groups}
    for scenario, method in keys:
        cells = []
        for a in acrs:
            g = by_key.get((scenario, method, a))
            if g is None:
                cells.append("—")
                continue
            dice = f"{_fmt(g['mean_dice'])} ± {_fmt(g['mean_dice_std'])}"
            if (method, scenario, a) in top:
                dice = f"**{dice}**"
            cells.append(f"{dice} · {_fmt(g['cost_hours'], 2)} h")
        lines.append(f"| {scenario} | {method.replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_table(groups: Sequence[dict[str, Any]], classes: Sequence[str]) -> str:
    """The CSV table: one line per (scenario, method, ACR) with means, stds, counts and per-class Dice."""
    per_class = [c for name in classes for c in (f"dice_{name}", f"dice_{name}_std")]
    columns = ["scenario", "method", "acr", "splits", "mean_dice", "mean_dice_std", "cost_hours",
               "cost_hours_std", *COUNT_COLUMNS, *per_class]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for g in groups:
        writer.writerow([g["scenario"], g["method"], f"{g['acr']:g}", g["n"],
                         *(_cell(g.get(c)) for c in columns[4:])])
    return buf.getvalue()


def _only(rows: list[dict[str, Any]], column: str, names: Sequence[str] | None, csv_path: Path) -> list[dict[str, Any]]:
    """The rows whose ``column`` is one of ``names``, ordered as ``names`` (all rows when None)."""
    if names is None:
        return rows
    present = list(dict.fromkeys(r[column] for r in rows))
    missing = [n for n in names if n not in present]
    if missing:
        raise ResultsError(f"--{column}s: no finished run of {', '.join(missing)} in {csv_path}; "
                           f"it has {', '.join(present)}")
    order = {n: i for i, n in enumerate(names)}
    return sorted((r for r in rows if r[column] in order), key=lambda r: order[r[column]])


def write_report(dir: str | Path, out: str | Path | None = None, console: Any = None, fraction: float = 0.9,
                 compare: Sequence[tuple[str, str]] | None = None, methods: Sequence[str] | None = None,
                 scenarios: Sequence[str] | None = None) -> dict[str, Path]:
    """Write every figure and table of the sweep in ``dir`` to ``out`` (default ``DIR/report``).

    ``methods`` / ``scenarios`` restrict the report to those (in that order; default: all of the
    sweep, in results.csv order); a name the sweep never finished a run of is a ResultsError.

    ``fraction`` is the share of full supervision's Dice the savings table asks for; ``compare``
    the (method, baseline) pairs of the paired-difference table (default: dsp against every other
    method of the sweep, when dsp ran).

    Returns ``{file name: path}`` of what was written; prints a summary (runs, failed runs, notes
    such as runs left out of the qualitative panel, paths) on ``console``. Raises
    :class:`ResultsError` for a missing or unreadable results.csv, or when no run finished.
    """
    from rich.console import Console

    console = console or Console()
    csv_path = results_path(dir)
    dir = csv_path.parent
    rows = read_results(csv_path)
    done = done_rows(rows)
    if not done:
        raise ResultsError(f"none of the {len(rows)} run(s) in {csv_path} finished; see its 'error' column, "
                           "fix the cause and rerun `dspseg sweep`")
    out = Path(out) if out is not None else dir / REPORT_FOLDER
    from dspseg.fslock import folder_lock

    with folder_lock(out):  # one writer of the report folder
        return _write_report_into(csv_path, out, console, fraction, compare, methods, scenarios, done, rows)


def _write_report_into(csv_path: Path, out: Path, console: Any, fraction: float, compare: Any, methods: Any,
                       scenarios: Any, done: list, rows: list) -> dict[str, Path]:
    """The body of :func:`write_report` once ``out`` is held."""
    dir = csv_path.parent
    from dspseg.study.plots import dice_vs_acr, dice_vs_cost, per_class_heatmap
    from dspseg.study.qualitative import qualitative_panel

    all_done = len(done)
    done = _only(done, "method", methods, csv_path)
    done = _only(done, "scenario", scenarios, csv_path)
    groups = summarise(done)
    classes = class_names(done)
    methods = list(dict.fromkeys(g["method"] for g in groups))
    scenarios = list(dict.fromkeys(g["scenario"] for g in groups))
    pairs = default_comparisons(methods) if compare is None else list(compare)
    for pair in pairs:  # checked before anything is written
        missing = [m for m in pair if m not in methods]
        if missing:
            raise ResultsError(f"--compare {pair[0]},{pair[1]}: no finished run of {', '.join(missing)} in {csv_path}; "
                               f"the methods there are {', '.join(methods)}")
    written: dict[str, Path] = {}
    notes: list[str] = []
    for scenario in scenarios:
        name = f"dice_vs_acr_{safe_name(scenario)}.png"
        written[name] = dice_vs_acr(groups, scenario, methods, out / name, fraction)
    written["dice_vs_cost.png"] = dice_vs_cost(groups, methods, scenarios, out / "dice_vs_cost.png")
    if classes:
        for scenario in scenarios:
            name = f"per_class_{safe_name(scenario)}.png"
            written[name] = per_class_heatmap(groups, scenario, classes, out / name)
    else:
        notes.append(f"{csv_path} has no dice_<class> columns: no per-class heatmaps")
    budget = budget_sentences(dir, done)
    written["table.md"] = write_text_atomic(out / "table.md", markdown_table(groups, budget))
    written["table.csv"] = write_text_atomic(out / "table.csv", csv_table(groups, classes))
    found = savings(groups, fraction)
    diffs = [d for method, baseline in pairs for d in paired_differences(done, method, baseline)]
    written["savings.md"] = write_text_atomic(out / "savings.md", savings_markdown(found, fraction) + "\n"
                                              + differences_markdown(diffs))
    panel = qualitative_panel(dir, done, out / "qualitative.png", notes)
    if panel is not None:
        written["qualitative.png"] = panel
    failed = failed_count(rows)
    left_out = " (left out; see the error column)" if failed else ""
    shown = f" ({len(done)} of them in this report)" if len(done) < all_done else ""
    console.print(f"report of {len(rows)} run(s) in {csv_path}: {all_done} done{shown}, {failed} failed{left_out}",
                  highlight=False, soft_wrap=True)
    for line in budget + headline(found, fraction):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    for note in notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for path in written.values():
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    return written
