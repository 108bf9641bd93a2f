"""The ``report`` and ``budget`` commands and the ``study`` group (``dspseg study loop``) (typer functions;
the CLI registers them).

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
from dspseg.engine.config import train_option
from dspseg.study.costs import AnnotationCosts, costs_text

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


# ------------------------------------------------------------------------------------- study loop

study_app = typer.Typer(help="Studies beyond the sweep: the simulated annotation loop.", no_args_is_help=True,
                        add_completion=False, pretty_exceptions_enable=False)


@study_app.command()
def loop(
    data: Path = typer.Option(..., "--data", "-d", help="Fully masked dataset folder: the start is simulated from "
                              "it and the simulated expert answers from its masks.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Loop folder; run the same command again to resume it.",
                             show_default=False),
    start_acr: float = typer.Option(32.0, "--start-acr", min=1.0, help="ACR of the mixed start: masks on 1 in ACR "
                                    "training images, boxes, points, image labels and nothing on the others."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Annotation rounds."),
    hours_per_round: float = typer.Option(0.25, "--hours-per-round", min=0.0, help="Hours of annotation each "
                                          "strategy may spend per round (actual cost of the answers)."),
    strategies: str = typer.Option("advisor,random,masks-random,uncertainty-masks,none", "--strategies",
                                   help="Comma-separated: advisor (dspseg advise), random (random images, random "
                                   "kinds), masks-random (random images, masks), uncertainty-masks (masks on the "
                                   "most uncertain images); diagnostics: boxes-random, points-random, labels-random "
                                   "(random images, one weak kind); none: no annotation, the same retraining — the control every "
                                   "other strategy is read against."),
    splits: int = typer.Option(3, "--splits", min=1, help="Cross-validation splits to run (0 .. N-1)."),
    n_splits: int = typer.Option(3, "--n-splits", min=1, help="Splits the data is divided into."),
    seed: int = typer.Option(0, "--seed", help="Seed of the splits, the image order and the random strategies."),
    method: str = typer.Option("dsp", "--method", "-m", help="Training method of every run; it must learn from "
                               "masks, boxes, points and image labels."),
    cost: list[str] = typer.Option([], "--cost", help="Annotation seconds, KIND=SECONDS with KIND mask (per image), "
                                   "box, point (per object) or label (per class); repeatable. Defaults: "
                                   f"{costs_text(AnnotationCosts(), unit='')}."),
    backend: str = typer.Option("local", "--backend", help="local: a process pool on this machine; ray: Ray tasks."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Runs at the same time."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (e.g. auto or HEAD:6379)."),
    steps: Optional[int] = train_option("steps", "--steps", help="Training steps of the start model and of every "
                                        "round (default: {default})."),
    start_steps: Optional[int] = typer.Option(None, "--start-steps", min=1, help="Training steps of the start "
                                              "model only (default: --steps). More lets the start converge, so that "
                                              "what a round gains is its annotation rather than its extra steps."),
    batch_size: Optional[int] = train_option("batch_size", "--batch-size", "-b",
                                             help="Images per step (default: {default})."),
    width: Optional[int] = train_option("width", "--width", help="U-Net width (default: {default})."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file of training options."),
    set_: list[str] = typer.Option([], "--set", help="Any training option, e.g. --set lr=1e-3 (repeatable)."),
) -> None:
    """Simulate annotation rounds and compare strategies that decide what to annotate next.

    Per split: the mixed ACR protocol at --start-acr is the start, and one model is trained on it (--start-steps steps; default --steps). Then every round each strategy asks for --hours-per-round hours of annotation; a simulated expert answers from the full masks with exactly the kind asked for (boxes and points as the ACR simulation derives them) and charges its actual cost, never more than the budget; the previous round's model trains on for --steps steps on the new dataset and is scored on the test split; the strategy none annotates nothing and trains the same steps, the control that shows what the other strategies' hours added. Writes DIR/results.csv (one row per strategy, split and round: hours spent, requests by kind, test Dice per class), DIR/loop.png (Dice against hours, one line per strategy) and DIR/report.md; the datasets of every round under DIR/data/ (round.json lists every request, its estimated and actual cost) and the runs under DIR/runs/. Finished rounds are skipped when the same command runs again; an interrupted one resumes.
    """
    def run() -> None:
        from dspseg.cli_support import parse_list
        from dspseg.engine.config import resolve_config
        from dspseg.errors import UserError
        from dspseg.fslock import folder_lock
        from dspseg.study.backends import make_backend
        from dspseg.study.loop import prepare, run_loop, write_results
        from dspseg.study.loop_plan import LoopSpec
        from dspseg.study.loop_report import write_loop_report

        if any(s.split("=", 1)[0].strip() in ("method", "method_options", "init") for s in set_):
            raise UserError("--set method/method_options/init does not apply to the loop; give --method, the loop "
                            "chains the rounds' weights itself")
        flags = {"steps": steps, "batch_size": batch_size, "width": width}
        base = resolve_config(config, flags, set_).model_dump(mode="json", exclude={"method", "method_options", "init"})
        if not (data / "dataset.json").is_file() and not (data.is_file() and data.suffix == ".json"):
            raise UserError(f"--data {data} holds no dataset.json; give a fully masked dataset folder "
                            "(e.g. from dspseg synth)")
        if hours_per_round <= 0:
            raise UserError("--hours-per-round must be above 0 hours")
        try:
            spec = LoopSpec(data=str(data.resolve()), start_acr=start_acr, rounds=rounds,
                            hours_per_round=hours_per_round,
                            strategies=parse_list(strategies, "strategies", "advisor,random"), splits=splits,
                            n_splits=max(n_splits, splits), seed=seed, method=method, train=base,
                            start_steps=start_steps, costs=AnnotationCosts.from_items(cost))
        except ValueError as e:
            errors = getattr(e, "errors", None)
            msg = "; ".join(str(x["msg"]).removeprefix("Value error, ") for x in errors()) if errors else str(e)
            raise UserError(msg) from None
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; give a folder for the loop")
        with folder_lock(out):
            spec = prepare(spec, out, console)
            rows = run_loop(spec, out, make_backend(backend, workers, address, base.get("threads")), console)
            results = write_results(spec, out, rows)
            png, md = write_loop_report(spec, out)
        failed = [f"{k}: {v.get('error')}" for k, v in sorted(rows.items()) if v.get("status") != "done"]
        console.print(f"results: {results}  ({len(rows) - len(failed)} runs done, {len(failed)} failed); "
                      f"plot: {png}; report: {md}", highlight=False)
        for line in failed:
            console.print(f"[red]failed:[/] {line}", highlight=False)

    guarded(run, interrupted="interrupted; run the same command again to resume the loop")
