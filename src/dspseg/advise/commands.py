"""``dspseg advise RUN DATA --hours H``: which images to annotate next, and how (typer function; the CLI registers it).

Nothing heavy is imported at module level (torch and matplotlib load inside the command). A user's
mistake (no such run, hours ≤ 0, an unknown --cost key, a dataset that is not the run's) ends in one
sentence on stderr and its exit code, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dspseg.cli_errors import guarded

console = Console()


def advise(
    run: Path = typer.Argument(..., help="Run folder of a trained model (dspseg train --out).", show_default=False),
    data: Path = typer.Argument(..., help="Its dataset folder, with the annotations you have now.", show_default=False),
    hours: float = typer.Option(..., "--hours", help="Hours of annotation work to plan.", show_default=False),
    cost: list[str] = typer.Option([], "--cost", help="Your annotation time, KIND=SECONDS with KIND mask (per image), "
                                   "box, point (per object) or label (per class of an image), e.g. --cost mask=3600 "
                                   "(repeatable; defaults: mask 239.7, box 7, point 2.4, label 1)."),
    out: Path = typer.Option(Path("advice"), "--out", "-o", help="Folder for advice.csv, advice.md and advice.png "
                             "(new, empty, or holding an earlier advice)."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Only these annotation types, comma-separated from "
                                        "mask, box, point, image (default: all)."),
    rank_by: str = typer.Option("value", "--rank-by", help="value: the advisor (uncertainty each type resolves per "
                                "second); uncertainty: images by mean predictive entropy, first allowed type."),
    seed: int = typer.Option(0, "--seed", help="Seed of the order that breaks ties."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for PyTorch."),
) -> None:
    """Which images to annotate next, and with which type (mask, boxes, points or image labels), within --hours.

    Predicts every training image that can still gain information, estimates the cost of each annotation type on it (boxes and points from the predicted number of objects, labels from the classes present, masks per image) and the uncertainty it would resolve, and picks the most value per second that fits the budget, at most one request per image and never what an image already has. Writes OUT/advice.csv, OUT/advice.md (the ranked table with reasons and totals) and OUT/advice.png (the top requests: image, current prediction, uncertainty).
    """

    def go() -> None:
        from dspseg.advise import RANKINGS, advise_run
        from dspseg.advise.report import FILES, write_advice
        from dspseg.cli_support import not_ours, parse_list
        from dspseg.costs import AnnotationCosts
        from dspseg.errors import OptionError
        from dspseg.fslock import folder_lock

        if not hours > 0:
            raise OptionError(f"--hours: expected a positive number of hours of annotation, got {hours:g}")
        if rank_by not in RANKINGS:
            raise OptionError(f"--rank-by: expected one of {', '.join(RANKINGS)}, got {rank_by!r}")
        try:
            costs = AnnotationCosts.from_items(cost)
        except ValueError as e:
            raise OptionError(str(e).splitlines()[0]) from None
        wanted = parse_list(kinds, "kinds", "mask,box") if kinds else None
        if out.exists() and not out.is_dir():
            raise OptionError(f"--out {out} is a file; give a folder for the advice")
        if out.is_dir() and any(p.name not in FILES and not p.name.startswith(".") for p in out.iterdir()):
            raise not_ours(out, "holds files other than an earlier advice", "give a new or empty folder")
        with folder_lock(out):
            advice = advise_run(run, data, hours, costs, kinds=wanted, rank_by=rank_by, seed=seed, threads=threads)
            paths = write_advice(advice, out)
        for r in advice.requests[:10]:
            console.print(f"{r.kind:>5}  {r.cost_s:6.0f} s  {r.image}", highlight=False, markup=False)
        if len(advice.requests) > 10:
            console.print(f"... {len(advice.requests) - 10} more in {paths[0]}", highlight=False, markup=False)
        console.print(f"{len(advice.requests)} request(s), estimated {advice.seconds:.0f} s of {hours * 3600:.0f} s, "
                      f"from {advice.candidates} candidate image(s); wrote {', '.join(str(p) for p in paths)}",
                      highlight=False, markup=False, soft_wrap=True)

    guarded(go)
