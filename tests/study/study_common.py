"""A hand-made sweep results.csv for the report and budget tests (numbers chosen by hand).

2 methods (basic, dsp) × 2 scenarios (mixed, box) × 3 ACRs (1, 8, 32) × 2 splits, classes
``background`` and ``mito`` (Dice mean_dice + 0.1 and mean_dice − 0.1), plus one failed run.
``basic`` learns from masks only: the same numbers in both scenarios (a shared run).

Test mean Dice per split, and the annotations per split (96 training images; masks = 96 / ACR):

    basic   ACR 1: 0.80 0.84   ACR 8: 0.60 0.64   ACR 32: 0.40 0.50    masks only
    dsp mixed  1: 0.79 0.83       8: 0.70 0.72       32: 0.60 0.66    8: boxes 60|66, points 63, labels 42
                                                                     32: boxes 70, points 70, labels 46
    dsp box    1: 0.82 0.86       8: 0.66 0.68       32: 0.44 0.44    8: boxes 250; 32: boxes 280

Hours with the default unit costs (mask 239.7 s, box 7 s, point 2.4 s, label 1 s), split means:
basic 6.392 / 0.799 / 0.19975; dsp mixed 6.392 / 0.975167 / 0.395306; dsp box 6.392 / 1.285111 / 0.744194.
"""

from __future__ import annotations

import csv
from pathlib import Path

from dspseg.study import RESULT_COLUMNS
from dspseg.study.costs import AnnotationCosts, annotation_hours

CLASSES = ["background", "mito"]
DICE = {
    ("basic", "mixed"): {1: (0.80, 0.84), 8: (0.60, 0.64), 32: (0.40, 0.50)},
    ("dsp", "mixed"): {1: (0.79, 0.83), 8: (0.70, 0.72), 32: (0.60, 0.66)},
    ("basic", "box"): {1: (0.80, 0.84), 8: (0.60, 0.64), 32: (0.40, 0.50)},
    ("dsp", "box"): {1: (0.82, 0.86), 8: (0.66, 0.68), 32: (0.44, 0.44)},
}


def counts(method: str, scenario: str, acr: int, split: int) -> dict[str, int]:
    """The annotation counts of one run (see the module docstring)."""
    masks = 96 // acr
    c = {"images_mask": masks, "images_box": 0, "images_point": 0, "images_image": 0, "images_none": 0,
         "boxes": 0, "points": 0, "labels": 0}
    if method == "basic" or acr == 1:
        return c
    rest = 96 - masks
    if scenario == "box":
        c.update(images_box=rest, boxes=250 if acr == 8 else 280)
    elif acr == 8:
        c.update(images_box=21, images_point=21, images_image=21, images_none=21, boxes=(60, 66)[split],
                 points=63, labels=42)
    else:
        c.update(images_box=23, images_point=23, images_image=23, images_none=24, boxes=70, points=70, labels=46)
    return c


def hand_rows(failed: bool = True) -> list[dict[str, object]]:
    """The rows of the hand-made results.csv, in RESULT_COLUMNS + dice_<class> layout."""
    rows = []
    for (method, scenario), by_acr in DICE.items():
        for acr, values in by_acr.items():
            for split, dice in enumerate(values):
                c = counts(method, scenario, acr, split)
                run = f"runs/{'shared' if method == 'basic' else scenario}/acr{acr}/split{split}/{method}"
                rows.append({"method": method, "scenario": scenario, "acr": acr, "split": split, "status": "done",
                             "mean_dice": dice, "steps": 100, "seconds": 12.5, **c,
                             "cost_hours": round(annotation_hours(c, AnnotationCosts()), 6), "run": run,
                             "data": f"data/{scenario}-acr{acr}-split{split}", "error": "",
                             "dice_background": round(dice + 0.1, 6), "dice_mito": round(dice - 0.1, 6)})
    if failed:
        rows.append({"method": "dsp", "scenario": "mixed", "acr": 8, "split": 2, "status": "failed",
                     "run": "runs/mixed/acr8/split2/dsp", "data": "data/mixed-acr8-split2",
                     "error": "training stopped: the loss became nan at step 3"})
    return rows


def write_results(path: Path, rows: list[dict[str, object]], columns: list[str] | None = None) -> Path:
    """Write ``rows`` as a results.csv (missing cells empty) to ``path`` (a folder gets results.csv)."""
    path = path / "results.csv" if path.suffix != ".csv" else path
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = columns or [*RESULT_COLUMNS, *(f"dice_{c}" for c in CLASSES)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: r.get(c, "") for c in columns})
    return path


def study_cli():
    """A typer app with just the ``report`` and ``budget`` commands, and a CliRunner for it."""
    import typer
    from typer.testing import CliRunner

    from dspseg.study.commands import budget, report

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(report)
    app.command()(budget)
    return app, CliRunner()
