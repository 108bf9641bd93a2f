"""The data commands: ``synth``, ``validate``, ``simulate`` and ``split`` (typer; the CLI registers them).

A dataset in, checked, reduced or split. Nothing heavy is imported at module level, so ``--help``
stays instant; a user's mistake ends in one sentence on stderr and its exit code, never a traceback.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from dspseg.cli_errors import fail, fail_with

console = Console()


# ------------------------------------------------------------------------------------------ synth


def synth(
    out: Path = typer.Argument(..., help="Folder to create; it will hold dataset.json, images/ and masks/."),
    images: int = typer.Option(256, "--images", "-n", min=1, help="Number of images (2D sections)."),
    size: int = typer.Option(128, "--size", "-s", min=32, help="Image height and width in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical files."),
    groups: int = typer.Option(8, "--groups", "-g", min=1,
                               help="Number of sub-volumes (groups sharing cell appearance, used for splits)."),
    volume: bool = typer.Option(False, "--volume", help="Write one 3D volume instead: OUT becomes an OME-Zarr "
                                "image (--depth x --size x --size voxels) with an NGFF label image."),
    depth: int = typer.Option(64, "--depth", min=16, help="With --volume: number of z sections."),
) -> None:
    """Make a synthetic FIB-SEM-like organelle dataset with full masks (the built-in default data)."""
    from dspseg.data.synthetic import write_synthetic_dataset

    if volume:
        from dspseg.data.synthetic.volume import write_synthetic_volume

        t0 = time.perf_counter()
        try:
            write_synthetic_volume(out, shape=(depth, size, size), seed=seed)
        except (ValueError, OSError) as e:
            fail_with(e)
        console.print(f"wrote a {depth}x{size}x{size} volume (OME-Zarr, labels/organelles) to {out} "
                      f"in {time.perf_counter() - t0:.1f} s")
        return
    if groups > images:
        fail(f"--groups {groups} is larger than --images {images}; use at most one group per image.")
    t0 = time.perf_counter()
    try:
        manifest = write_synthetic_dataset(out, n_images=images, size=size, seed=seed, groups=groups)
    except (ValueError, OSError) as e:
        fail_with(e)
    dt = time.perf_counter() - t0
    console.print(f"wrote {len(manifest.images)} images of {size}x{size} in {groups} groups, "
                  f"{manifest.n_classes} classes ({', '.join(manifest.classes)}) to {out} in {dt:.1f} s")


# ------------------------------------------------------------------------------------------ validate


def validate(
    data: Path = typer.Argument(..., help="Dataset folder (holding dataset.json) or the dataset.json file."),
) -> None:
    """Check every record and file of a dataset; list all problems (exit 1) or print a summary (exit 0).

    Never modifies anything.
    """
    from dspseg.data.validate import render_report, validate_dataset

    report = validate_dataset(data)
    render_report(report, console)
    if not report.ok:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------ simulate


def simulate(
    data: Path = typer.Argument(..., help="Fully masked dataset folder to reduce."),
    acr: float = typer.Option(..., "--acr", "-r", min=1.0,
                              help="Annotation Compression Ratio: keep masks on 1/ACR of the training images."),
    scenario: str = typer.Option("mixed", "--scenario",
                                 help="What the other training images get: mixed (boxes, points, image labels "
                                 "and nothing, dealt evenly), box, point or image."),
    split: int = typer.Option(0, "--split", "-k", min=0, help="Which cross-validation split (0-based)."),
    n_splits: int = typer.Option(3, "--n-splits", min=1, help="Number of cross-validation splits."),
    seed: int = typer.Option(0, "--seed", help="Seed of the splits and of the image order."),
    out: Path = typer.Option(..., "--out", "-o",
                             help="New dataset folder; image files are hard-linked, never copied or changed."),
) -> None:
    """Simulate the paper's protocol: a split by group, 1/ACR of the training masks, weak labels for the rest."""
    from dspseg.data.acr.writer import simulate_dataset
    from dspseg.data.manifest import ManifestError

    try:
        result = simulate_dataset(data, out, acr=acr, scenario=scenario, split=split,
                                  n_splits=n_splits, seed=seed)
    except ManifestError as e:
        fail(f"{data} is not a usable dataset:\n{e}\nRun `dspseg validate {data}` for the full list.", code=1)
    except (ValueError, OSError) as e:
        fail_with(e)
    _print_simulation(result)


def _print_simulation(result) -> None:
    from rich.table import Table

    table = Table(title=f"{result.out}  (ACR {result.acr:g}, {result.scenario}, split {result.split})")
    table.add_column("training annotation")
    table.add_column("images", justify="right")
    for kind, n in result.counts.items():
        table.add_row(kind, str(n))
    console.print(table)
    console.print("split sizes: " + ", ".join(f"{k} {v}" for k, v in result.split_sizes.items()))
    for w in getattr(result, "warnings", []) or []:
        console.print(f"[yellow]note:[/] {w}")


# ------------------------------------------------------------------------------------------ split


def split(
    data: Path = typer.Argument(..., help="Dataset folder (holding dataset.json) or the dataset.json file.",
                                show_default=False),
    n_splits: int = typer.Option(3, "--n-splits", min=1, help="Number of cross-validation splits (folds)."),
    split_: int = typer.Option(0, "--split", "-k", min=0, help="Which fold to write (0-based)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the group order; the same seed gives the same splits."),
) -> None:
    """Write train/val/test into every record's 'split', by group, for any dataset.

    Whole groups (sub-volumes) go to one part. Val and test each get masked images covering every class that any mask holds (only masked images can be scored); train gets every class that any record holds; groups without masks stay in train. Only the 'split' fields of dataset.json change; the file is replaced atomically.
    """
    from dspseg.cli_errors import guarded

    def run() -> None:
        from dspseg.data.splits import write_split

        done = write_split(data, n_splits, split_, seed)
        console.print(f"wrote split {done.split} of {done.n_splits} (seed {done.seed}) to {done.path}: "
                      + ", ".join(f"{p} {n} images ({m} masked, {g} groups)" for p, (n, m, g) in done.sizes.items()),
                      highlight=False, soft_wrap=True)
        if done.unused_classes:
            console.print(f"note: no mask holds {', '.join(done.unused_classes)}; val and test cannot score "
                          f"{'it' if len(done.unused_classes) == 1 else 'them'}", highlight=False)
        console.print(f"next: dspseg train {data} --method dsp --out runs/mine", highlight=False, soft_wrap=True)

    guarded(run)
