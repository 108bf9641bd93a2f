"""``dspseg budget DIR --hours H``: which method, scenario and ACR of a sweep gives the best Dice for a budget.

Every (method, scenario, ACR) of the sweep is one option: its annotation mix (masks, boxes,
points, image labels, unlabelled images, averaged over splits) costs ``cost_hours`` of expert work
and reached a test mean Dice (mean ± std over splits). :func:`best_for_budget` ranks the options
whose mean cost fits the budget, best mean Dice first (cheaper first on a tie).

Costs are the sweep's own (``results.csv``'s ``cost_hours``) unless other unit costs are given:
then every run's cost is recomputed from its annotation counts with
:func:`dspseg.study.costs.annotation_hours`, kinds not given keeping the sweep's unit costs
(``study.yaml``'s ``costs``, else the defaults of :class:`~dspseg.study.costs.AnnotationCosts`).
This module imports neither torch nor matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from dspseg.errors import NothingFits
from dspseg.study.costs import COST_KEYS, AnnotationCosts, annotation_hours
from dspseg.study.results import done_rows, summarise

STUDY_NAME = "study.yaml"
MIX = (("images_mask", "mask", "masks"), ("boxes", "box", "boxes"), ("points", "point", "points"),
       ("labels", "image label", "image labels"), ("images_none", "unlabelled image", "unlabelled images"))


def sweep_costs(dir: str | Path) -> dict[str, float]:
    """The unit costs recorded in ``DIR/study.yaml`` (``costs``), or ``{}`` when there are none."""
    import yaml

    path = Path(dir) / STUDY_NAME
    if not path.is_file():
        return {}
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    costs = spec.get("costs") if isinstance(spec, dict) else None
    if not isinstance(costs, dict):
        return {}
    return {k: float(v) for k, v in costs.items() if k in COST_KEYS and isinstance(v, (int, float))}


def with_costs(rows: Iterable[dict[str, Any]], costs: AnnotationCosts) -> list[dict[str, Any]]:
    """Copies of the done rows with ``cost_hours`` recomputed from their counts under ``costs``."""
    return [{**r, "cost_hours": annotation_hours(r, costs)} for r in done_rows(rows)]


def _options(rows: Iterable[dict[str, Any]], costs: AnnotationCosts | None) -> list[dict[str, Any]]:
    rows = with_costs(rows, costs) if costs is not None else done_rows(rows)
    return [g for g in summarise(rows) if g["mean_dice"] is not None]


def best_for_budget(rows: Iterable[dict[str, Any]], hours: float, top: int = 5,
                    costs: AnnotationCosts | None = None) -> list[dict[str, Any]]:
    """The ``top`` options whose mean cost is at most ``hours``, best mean Dice first.

    Each option is a :func:`~dspseg.study.results.summarise` group (``method``, ``scenario``,
    ``acr``, ``n``, ``mean_dice``, ``mean_dice_std``, ``cost_hours``, the mean counts
    ``images_mask`` … ``labels``) plus ``rank`` (1 = best). ``costs``: recompute every run's cost
    with these unit costs first. Raises :class:`NothingFits` naming the cheapest option's cost
    when none fits, and ValueError for a negative budget.
    """
    if hours < 0:
        raise ValueError(f"--hours must be zero or more, got {hours}")
    options = _options(rows, costs)
    if not options:
        raise NothingFits("the sweep has no finished run with a test Dice; run `dspseg sweep` (see the error "
                          "column of results.csv for failed runs)")
    fits = [g for g in options if g["cost_hours"] <= hours + 1e-12]
    if not fits:
        cheapest = min(options, key=lambda g: (g["cost_hours"], -g["mean_dice"]))
        raise NothingFits(f"nothing in the sweep fits in {hours_text(hours)} h: the cheapest option, "
                          f"{describe(cheapest)}, needs {hours_text(cheapest['cost_hours'])} h; give at least "
                          "that many --hours, or your own unit costs with --cost")
    fits.sort(key=lambda g: (-g["mean_dice"], g["cost_hours"]))
    return [{**g, "rank": i} for i, g in enumerate(fits[:max(top, 1)], start=1)]


def reference_text(rows: Iterable[dict[str, Any]], hours: float, best: dict[str, Any],
                   costs: AnnotationCosts | None = None) -> str | None:
    """One sentence on the masks-only reference (``basic-matched`` when the sweep has it, else ``basic``)
    within ``hours``: its best option and how far ``best`` (the answer) is above it. None when the sweep
    has no reference run or the answer is the reference itself."""
    from dspseg.study.savings import MATCHED_REFERENCE, reference_method

    options = _options(rows, costs)
    reference = reference_method(options)
    mine = [g for g in options if g["method"] == reference]
    if not mine or best["method"] == reference:
        return None
    kind = "the step-matched masks-only U-Net" if reference == MATCHED_REFERENCE else "the masks-only U-Net"
    fits = [g for g in mine if g["cost_hours"] <= hours + 1e-12]
    if not fits:
        cheapest = min(mine, key=lambda g: g["cost_hours"])
        return (f"The reference, {kind} ({reference}), does not fit in {hours_text(hours)} h: its cheapest option, "
                f"ACR {cheapest['acr']:g}, needs {hours_text(cheapest['cost_hours'])} h.")
    ref = max(fits, key=lambda g: (g["mean_dice"], -g["cost_hours"]))
    return (f"The reference, {kind} ({reference}), reaches Dice {ref['mean_dice']:.2f} within that budget (ACR "
            f"{ref['acr']:g}, {hours_text(ref['cost_hours'])} h): the best option is "
            f"{100 * (best['mean_dice'] - ref['mean_dice']):+.1f} Dice points above it.")


def hours_text(h: float) -> str:
    """Hours in 3 significant digits (``1.6``, ``0.0333``, ``240``), whole hours from 1000 up."""
    return f"{h:,.0f}" if h >= 1000 else f"{h:.3g}"


def _count(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 0.05 else f"{v:.1f}"


def mix_text(g: dict[str, Any]) -> str:
    """``"20 masks, 410 boxes, 120 unlabelled images"`` (kinds with a zero count left out)."""
    parts = [f"{_count(g[k])} {one if _count(g[k]) == '1' else many}" for k, one, many in MIX if g[k] > 0]
    return ", ".join(parts) if parts else "no annotations"


def describe(g: dict[str, Any]) -> str:
    """``"dsp on mixed at ACR 8"``."""
    return f"{g['method']} on {g['scenario']} at ACR {g['acr']:g}"


def answer(options: Sequence[dict[str, Any]], hours: float) -> str:
    """The one-sentence answer for the best of ``options`` (from :func:`best_for_budget`)."""
    g = options[0]
    splits = f" over {g['n']} splits" if g["n"] > 1 else " (1 split)"
    return (f"With {hours_text(hours)} h, the sweep's best is {describe(g)}: Dice {g['mean_dice']:.2f} ± "
            f"{g['mean_dice_std']:.2f}{splits} for {hours_text(g['cost_hours'])} h ({mix_text(g)}).")


def options_table(options: Sequence[dict[str, Any]], hours: float) -> Any:
    """A rich Table of the ranked options: Dice, hours and the annotations (mean per split)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    splits = sorted({g["n"] for g in options})
    n = f"{splits[0]}" if len(splits) == 1 else f"{splits[0]}–{splits[-1]}"
    table = Table(title=f"best options within {hours_text(hours)} h of annotation", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0),
                  caption=f"Dice: test mean Dice, mean ± std over {n} split(s). Annotations, mean per split: "
                  "mask images, boxes, points, image labels, unlabelled (none) images")
    for name in ("method", "scenario", "ACR", "Dice", "hours", "mask", "box", "point", "label", "none"):
        table.add_column(name, justify="left" if name in ("method", "scenario") else "right",
                         no_wrap=name in ("method", "scenario", "Dice", "hours"))
    for g in options:
        table.add_row(escape(g["method"]), escape(g["scenario"]), f"{g['acr']:g}",
                      f"{g['mean_dice']:.3f} ± {g['mean_dice_std']:.3f}", hours_text(g["cost_hours"]),
                      *(_count(g[k]) for k, _, _ in MIX))
    return table
