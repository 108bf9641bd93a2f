"""The ``dspseg`` command line: one command per step of the workflow.

    dspseg synth OUT            make the built-in synthetic FIB-SEM-like dataset
    dspseg validate DATA        check a dataset folder and summarise it
    dspseg simulate DATA ...    the paper's ACR protocol: keep 1/R of the masks, weaken the rest
    dspseg split DATA ...       train/val/test by group for any dataset (val and test get masks)
    dspseg sweep ...            the paper's study: methods x scenarios x ACRs x splits
    dspseg report DIR           its plots and tables; dspseg budget DIR --hours H
    dspseg advise RUN DATA ...  which images to annotate next, and how, within --hours
    dspseg study loop ...       simulated annotation rounds: which strategy of what to annotate wins
    dspseg demo                 a mini-study on synthetic data, end to end

Heavy libraries (torch, matplotlib) are imported inside the commands so that ``--help`` is instant.
User mistakes end in one sentence on stderr and exit code 1 (bad dataset) or 2 (bad option),
never in a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from dspseg import __version__
from dspseg.cli_errors import fail_with
from dspseg.engine.config import train_option
from dspseg.study.costs import AnnotationCosts, costs_text

app = typer.Typer(
    name="dspseg",
    help="Train segmentation networks from masks, boxes, points, image labels and unlabeled images "
    "(Decoupled Semantic Prototypes, CVPR 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _version(value: bool) -> None:
    if value:
        console.print(f"dspseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
) -> None:
    """dspseg: semi-weakly supervised segmentation for microscopy."""


# ------------------------------------------------------------------------------------------ data

from dspseg.data_commands import simulate, split, synth, validate  # noqa: E402  (no torch at import time)

app.command()(synth)
app.command()(validate)
app.command()(simulate)
app.command()(split)


# ------------------------------------------------------------------------------------------ train etc.

from dspseg.engine.commands import evaluate, predict, train  # noqa: E402  (no torch at import time)

app.command()(train)
app.command()(evaluate)
app.command()(predict)

from dspseg.io_commands import convert, export, import_app  # noqa: E402  (no torch at import time)

app.add_typer(import_app, name="import")
app.command()(convert)
app.command()(export)


# ------------------------------------------------------------------------------------------ sweep


@app.command()
def sweep(
    data: Path = typer.Option(..., "--data", "-d", help="Fully masked dataset folder to study (e.g. from dspseg synth).",
                              show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Sweep folder; run the same command again to resume it.",
                             show_default=False),
    methods: str = typer.Option("basic,fixmatch,dsp", "--methods", "-m",
                                help="Comma-separated methods; NAME:KEY=VALUE sets a method option, e.g. "
                                "dsp:variant=paper:tau=0.5, so variants can be compared."),
    scenarios: str = typer.Option("mixed", "--scenarios", help="What the images without masks get: mixed, box, "
                                  "point, image (comma-separated)."),
    acrs: str = typer.Option("1,2,4,8,16,32,64", "--acrs", help="Annotation Compression Ratios: keep masks on 1 in "
                             "ACR training images (comma-separated)."),
    splits: int = typer.Option(3, "--splits", min=1, help="Cross-validation splits to run (0 .. N-1)."),
    n_splits: int = typer.Option(3, "--n-splits", min=1, help="Splits the data is divided into (train/val/test "
                                 "sizes follow from it)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the splits and the image order."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Train every method from random weights (default: "
                                      "start each from the basic U-Net of its ACR and split, as the paper does)."),
    step_budget: str = typer.Option("matched", "--step-budget", help="matched: basic is also trained on for the "
                                    "steps the other methods train on top of it (basic-matched), so the reference "
                                    "has trained as long as they have; added: the paper's protocol, where the "
                                    "reference basic has half their steps."),
    backend: str = typer.Option("local", "--backend", help="local: a process pool on this machine; ray: Ray tasks "
                                "(one GPU each where there are GPUs) on a Ray cluster or a local Ray instance."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Runs at the same time (local processes, or CPUs "
                                "of a local Ray instance)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (e.g. auto or HEAD:6379)."),
    cost: list[str] = typer.Option([], "--cost", help="Annotation seconds, KIND=SECONDS with KIND mask (per image), "
                                   "box, point (per object) or label (per class); repeatable. Defaults: "
                                   f"{costs_text(AnnotationCosts(), unit='')} (see dspseg budget --help)."),
    steps: Optional[int] = train_option("steps", "--steps", help="Training steps of every run (default: {default})."),
    batch_size: Optional[int] = train_option("batch_size", "--batch-size", "-b",
                                             help="Images per step (default: {default})."),
    width: Optional[int] = train_option("width", "--width", help="U-Net width (default: {default}; the paper uses 64)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file of training options."),
    set_: list[str] = typer.Option([], "--set", help="Any training option, e.g. --set lr=1e-3 (repeatable); method "
                                   "options go in --methods."),
) -> None:
    """Run the paper's study: every method x scenario x ACR x split, trained and scored on the test split.

    Writes DIR/results.csv (one row per run: Dice per class, steps, seconds, annotations used and their cost in hours), the run folders under DIR/runs/ and the simulated datasets under DIR/data/. Runs already finished are skipped, interrupted ones resume, a failed run is tried once more and recorded; the sweep never stops for one run.

    Then: dspseg report DIR, and dspseg budget DIR --hours H.
    """
    from dspseg.cli_errors import guarded

    def run() -> None:
        from dspseg.cli_support import parse_list
        from dspseg.engine.config import resolve_config
        from dspseg.errors import UserError
        from dspseg.study.backends import make_backend
        from dspseg.study.costs import AnnotationCosts
        from dspseg.study.plan import StudySpec
        from dspseg.study.sweep import prepare, run_sweep, summary_lines, write_results

        if any(s.split("=", 1)[0].strip().startswith("method") for s in set_):
            raise UserError("--set method/method_options does not apply to a sweep of several methods; give method "
                            "options in --methods, e.g. --methods basic,dsp:tau=0.5")
        flags = {"steps": steps, "batch_size": batch_size, "width": width}
        base = resolve_config(config, flags, set_).model_dump(mode="json", exclude={"method", "method_options", "init"})
        try:
            spec = StudySpec(data=str(data.resolve()), methods=parse_list(methods, "methods", "basic,fixmatch,dsp"),
                             scenarios=parse_list(scenarios, "scenarios", "mixed,box"),
                             acrs=parse_list(acrs, "acrs", "1,8,32", float), splits=splits,
                             n_splits=max(n_splits, splits), seed=seed, init_from_basic=not from_scratch,
                             step_budget=step_budget, train=base, costs=AnnotationCosts.from_items(cost))
        except ValueError as e:
            errors = getattr(e, "errors", None)
            msg = "; ".join(str(x["msg"]).removeprefix("Value error, ") for x in errors()) if errors else str(e)
            raise UserError(msg) from None
        from dspseg.fslock import folder_lock

        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; give a folder for the sweep")
        with folder_lock(out):  # one writer from the first file to results.csv (prepare and run_sweep re-enter it)
            study = prepare(spec, out, console)
            rows = run_sweep(spec, out, make_backend(backend, workers, address, base.get("threads")), console, study)
            results = write_results(study, out, rows)
        failed = summary_lines(rows)
        console.print(f"results: {results}  ({len(rows) - len(failed)} done, {len(failed)} failed)", highlight=False)
        for line in failed:
            console.print(f"[red]failed:[/] {line}", highlight=False)
        console.print(f"next: dspseg report {out}", highlight=False)

    guarded(run, interrupted="interrupted; run the same command again to resume the sweep")


from dspseg.study.commands import budget, report  # noqa: E402  (no torch or matplotlib at import time)

app.command()(report)
app.command()(budget)

from dspseg.advise.commands import advise  # noqa: E402  (no torch or matplotlib at import time)

app.command()(advise)

from dspseg.study.commands import study_app  # noqa: E402  (no torch or matplotlib at import time)

app.add_typer(study_app, name="study")


# ------------------------------------------------------------------------------------------ demo


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", "-o",
                             help="Folder for everything the demo makes (replaced if it holds a previous demo)."),
    steps: int = typer.Option(200, "--steps", min=1, help="Training steps of every run."),
    images: int = typer.Option(128, "--images", min=16, help="Synthetic images to make."),
    size: int = typer.Option(64, "--size", min=32, help="Synthetic image side, pixels (training crops are whole images)."),
    width: int = typer.Option(16, "--width", min=2, help="U-Net width (channels at full resolution)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data, the splits and the training."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1,
                                          help="Runs at the same time (default: one per CPU core, at most 3)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads of each run."),
) -> None:
    """A mini-study on synthetic EM data: basic, fixmatch and dsp at ACR 1, 8 and 32, with plots and a table.

    Makes the data, checks it, runs the sweep (each method trained and scored on the test split), writes the report (Dice against ACR and against annotation hours, per-class Dice, predictions panel), answers a budget question and segments a few test images. A few minutes on 2 CPU cores with the defaults.
    """
    from dspseg.demo import DemoSettings, run_demo
    from dspseg.errors import UserError

    settings = DemoSettings(images=images, size=size, steps=steps, width=width, seed=seed, workers=workers,
                            threads=threads)
    try:
        run_demo(out, settings, console)
    except (UserError, ValueError, OSError) as e:
        fail_with(e)


if __name__ == "__main__":  # pragma: no cover
    app()
