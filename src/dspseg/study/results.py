"""Reading a sweep's ``results.csv`` into typed rows, and averaging them over splits.

    rows = read_results("DIR")              # every row, typed (failed ones included)
    groups = summarise(rows)                # one entry per (method, scenario, ACR), done rows only

Column meanings are those of :data:`dspseg.study.RESULT_COLUMNS`, followed by ``dice_<class>``
columns in dataset order. Empty numeric cells become None. A mistake in the file raises
:class:`ResultsError` with one sentence naming the file (and line and column) and the fix.
This module imports neither torch nor matplotlib.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable

from dspseg.errors import ResultsError
from dspseg.study import COUNT_COLUMNS

RESULTS_NAME = "results.csv"
INT_COLUMNS = ("split", "steps", "total_steps", *COUNT_COLUMNS)
FLOAT_COLUMNS = ("acr", "mean_dice", "seconds", "cost_hours")
REQUIRED = ("method", "scenario", "acr", "split", "status", "mean_dice", *COUNT_COLUMNS, "cost_hours",
            "run", "data")
NEEDED_WHEN_DONE = ("cost_hours", *COUNT_COLUMNS)
DICE_PREFIX = "dice_"


def results_path(dir_or_csv: str | Path) -> Path:
    """``DIR/results.csv`` for a sweep folder, or the given CSV file itself."""
    p = Path(dir_or_csv)
    return p if p.suffix.lower() == ".csv" else p / RESULTS_NAME


def _number(raw: str, kind: type, path: Path, line: int, column: str) -> Any:
    text = raw.strip()
    if text == "" or text.lower() in ("nan", "none", "null"):
        return None
    try:
        value = kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ResultsError(f"{path}, line {line}, column '{column}': '{raw}' is not {what}; fix that cell "
                           "or rerun `dspseg sweep` to rewrite the file") from None
    if kind is float and math.isnan(value):
        return None
    return value


def read_results(dir_or_csv: str | Path) -> list[dict[str, Any]]:
    """Every row of ``results.csv`` (a sweep folder or the CSV path), typed.

    Returns dicts in file order with: ``acr`` float, ``split`` int, ``mean_dice`` float | None,
    ``dice_<class>`` float | None, ``steps`` and the annotation counts int (None when empty in a
    failed row), ``seconds`` and ``cost_hours`` float, the rest str. Raises :class:`ResultsError`
    for a missing file, a missing column, or a cell that is not a number.
    """
    path = results_path(dir_or_csv)
    if not path.is_file():
        where = f"the sweep folder {path.parent}" if path.parent.is_dir() else f"{path.parent} (which does not exist)"
        raise ResultsError(f"there is no {path.name} in {where}; run `dspseg sweep --out {path.parent} ...` first "
                           "(or give the folder a sweep wrote)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        for column in REQUIRED:
            if column not in header:
                raise ResultsError(f"{path} has no '{column}' column; it is not a dspseg sweep's results.csv "
                                   "(rerun `dspseg sweep` to rewrite it)")
        dice_columns = [c for c in header if c.startswith(DICE_PREFIX)]
        rows = []
        for line, raw in enumerate(reader, start=2):
            if raw.get(None):
                raise ResultsError(f"{path}, line {line}: more cells than the header's {len(header)} columns; "
                                   "fix the line or rerun `dspseg sweep`")
            row: dict[str, Any] = {k: (v or "").strip() for k, v in raw.items() if k is not None}
            for column in header:
                if column in INT_COLUMNS:
                    row[column] = _number(row[column], int, path, line, column)
                elif column in FLOAT_COLUMNS or column in dice_columns:
                    row[column] = _number(row[column], float, path, line, column)
            for column in ("acr", "split"):
                if row[column] is None:
                    raise ResultsError(f"{path}, line {line}, column '{column}': the cell is empty; every row "
                                       "names its run's ACR and split")
            if row["status"] == "done":
                for column in NEEDED_WHEN_DONE:
                    if row[column] is None:
                        raise ResultsError(f"{path}, line {line}, column '{column}': empty in a done run; "
                                           "fix that cell or rerun `dspseg sweep`")
            rows.append(row)
    return rows


def done_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows whose run finished (``status == "done"``)."""
    return [r for r in rows if r["status"] == "done"]


def failed_count(rows: Iterable[dict[str, Any]]) -> int:
    """How many rows are not done (failed runs)."""
    return sum(1 for r in rows if r["status"] != "done")


def class_names(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Class names from the ``dice_<class>`` columns, in file order (empty when there are none)."""
    for r in rows:
        return [k[len(DICE_PREFIX):] for k in r if k.startswith(DICE_PREFIX)]
    return []


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof 1; 0 for one value) of the non-None values; (None, None) if none."""
    vs = [float(v) for v in values if v is not None]
    if not vs:
        return None, None
    mean = sum(vs) / len(vs)
    if len(vs) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vs) / (len(vs) - 1))


def summarise(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Average the done rows over splits, per (method, scenario, ACR).

    Returns one dict per group, methods and scenarios in order of first appearance, ACRs ascending:
    ``method``, ``scenario``, ``acr``, ``n`` (splits), ``splits`` (sorted list), ``mean_dice`` and
    ``mean_dice_std``, ``dice_<class>`` and ``dice_<class>_std``, ``cost_hours`` and
    ``cost_hours_std`` (mean and sample std over the splits; None where no split has a value),
    and the mean of every annotation count (``images_mask`` … ``labels``, floats).
    """
    done = done_rows(rows)
    classes = class_names(done)
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for r in done:
        groups.setdefault((r["method"], r["scenario"], r["acr"]), []).append(r)
    methods = list(dict.fromkeys(k[0] for k in groups))
    scenarios = list(dict.fromkeys(k[1] for k in groups))
    out = []
    for key in sorted(groups, key=lambda k: (scenarios.index(k[1]), methods.index(k[0]), k[2])):
        members = groups[key]
        entry: dict[str, Any] = {"method": key[0], "scenario": key[1], "acr": key[2], "n": len(members),
                                 "splits": sorted(r["split"] for r in members)}
        for column in ("mean_dice", *(DICE_PREFIX + c for c in classes), "cost_hours"):
            entry[column], entry[f"{column}_std"] = mean_std(r.get(column) for r in members)
        for column in COUNT_COLUMNS:
            entry[column] = sum(r[column] for r in members) / len(members)
        out.append(entry)
    return out
