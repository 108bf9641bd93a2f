"""The ``report`` and ``budget`` commands (typer functions; the CLI registers them).

Nothing heavy is imported at module level (matplotlib and torch load inside ``report``), so
``dspseg --help`` stays instant. A user's mistake (no results.csv, a damaged one, a budget nothing fits in)
ends in one sentence on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dspseg.cli_errors import guarded
from dspseg.cli_support import split_list

console = Console()


def _names(text: str | None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]``; None for no text or only commas."""
    return split_list(text) or None


def report(
    dir: Path = typer.Argument(..., help="Sweep folder made by `dspseg sweep` (holding results.csv), or the "
                               "results.csv file itself.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the figures and tables "
                                       "(default: DIR/report)."),
    fraction: float = typer.Option(0.9, "--fraction", min=0.01, max=1.0, help="Share of full supervision's Dice "
                                   "(basic-matched, else basic, at ACR 1) a method must keep for the savings table."),
    methods: Optional[str] = typer.Option(None, "--methods", "-m", help="Only these methods, in this order "
                                          "(comma-separated, as results.csv names them; default: all)."),
    scenarios: Optional[str] = typer.Option(None, "--scenarios", help="Only these scenarios (comma-separated; "
                                            "default: all)."),
    compare: list[str] = typer.Option([], "--compare", help="METHOD,BASELINE pair for the paired per-split Dice "
                                      "differences, e.g. --compare dsp,fixmatch (repeatable; default: dsp against "
                                      "every other method)."),
) -> None:
    """Draw the figures and tables of a sweep: Dice against ACR and against hours of annotation.

    Writes to DIR/report: dice_vs_acr_<scenario>.png (test Dice against the annotation compression ratio, one line per method, band = std over splits), dice_vs_cost.png (Dice against the hours of expert work the training annotations took), per_class_<scenario>.png (Dice of every class), qualitative.png (one test image, its true mask and every method's prediction) and table.md / table.csv (mean ± std over splits, best method per ACR in bold), and savings.md (each method's Dice as a share of full supervision, basic-matched (else basic) at ACR 1, and up to which ACR it keeps --fraction of it; paired per-split Dice differences of the --compare pairs). Failed runs are left out and counted. Nothing in DIR outside the report folder is changed.
    """

    def run() -> None:
        from dspseg.errors import UserError
        from dspseg.study.report import write_report

        pairs = [_names(item) for item in compare]
        for item, pair in zip(compare, pairs):
            if pair is None or len(pair) != 2:
                raise UserError(f"--compare {item!r}: write METHOD,BASELINE as results.csv names them, e.g. "
                                "--compare dsp,fixmatch or --compare dsp,dsp:variant=paper")
        write_report(dir, out=out, console=console, fraction=fraction,
                     compare=[(a, b) for a, b in pairs] or None, methods=_names(methods), scenarios=_names(scenarios))

    guarded(run)


def budget(
    dir: Path = typer.Argument(..., help="Sweep folder made by `dspseg sweep` (holding results.csv), or the "
                               "results.csv file itself.", show_default=False),
    hours: float = typer.Option(..., "--hours", min=0.0, help="Hours of annotation work you can spend.",
                                show_default=False),
    cost: list[str] = typer.Option([], "--cost", help="Your own annotation time, KIND=SECONDS with KIND mask (per "
                                   "fully drawn image), box, point (per object) or label (per class of an image), "
                                   "e.g. --cost mask=3600 (repeatable; other kinds keep the sweep's costs)."),
    top: int = typer.Option(5, "--top", min=1, help="How many of the best options to list."),
) -> None:
    """Which method, annotation scenario and ACR of a sweep give the best Dice for your annotation budget?

    Every (method, scenario, ACR) the sweep ran is an option: its annotations (masks, boxes, points, image labels) took some hours to make, and the network trained on them reached some test Dice (mean ± std over the splits). This lists the best options that fit in --hours and says which one wins. With --cost the hours are recomputed from the annotation counts with your lab's own times, e.g. --cost mask=3600 when a full organelle mask takes you an hour per image.
    """

    def run() -> None:
        from dspseg.errors import UserError
        from dspseg.study.budget import answer, best_for_budget, options_table, reference_text, sweep_costs
        from dspseg.study.costs import AnnotationCosts, costs_text
        from dspseg.study.results import failed_count, read_results, results_path

        csv_path = results_path(dir)
        costs = None
        if cost:
            try:
                costs = AnnotationCosts.from_items(cost, base=sweep_costs(csv_path.parent))
            except ValueError as e:
                raise UserError(str(e).splitlines()[0]) from None
        rows = read_results(csv_path)
        options = best_for_budget(rows, hours, top=top, costs=costs)
        console.print(options_table(options, hours))
        if costs is not None:
            console.print(f"hours recomputed with: {costs_text(costs)}", highlight=False, markup=False,
                          soft_wrap=True)
        failed = failed_count(rows)
        if failed:
            console.print(f"note: {failed} failed run(s) of {csv_path} are left out", highlight=False, markup=False,
                          soft_wrap=True)
        console.print(answer(options, hours), highlight=False, markup=False, soft_wrap=True)
        reference = reference_text(rows, hours, options[0], costs)
        if reference:
            console.print(reference, highlight=False, markup=False, soft_wrap=True)

    guarded(run)
