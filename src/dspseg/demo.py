"""``dspseg demo``: the paper's study in miniature on built-in synthetic data, in minutes on a laptop CPU.

    synth → validate → sweep (basic, fixmatch, dsp × mixed × ACR 1, 8, 32 × split 0, with the
          step-matched reference basic-matched) → report → budget → predict

Everything lands in one folder that explains itself::

    OUT/data/              synthetic FIB-SEM-like dataset with full masks
    OUT/study/             the sweep: study.yaml, results.csv, data/ (simulated datasets),
                           runs/ (one run folder per method × ACR), logs/
    OUT/study/report/      Dice against ACR and against annotation hours, per-class heatmap,
                           qualitative panel, table.md
    OUT/predictions/       label TIFFs and colour overlays of a few test images (best run at ACR 8)
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspseg.cli_support import not_ours

MARKER = ".dspseg-demo"
METHODS = ("basic", "fixmatch", "dsp")
ACRS = (1.0, 8.0, 32.0)


@dataclass
class DemoSettings:
    """Sizes of the demo; the defaults finish in under 10 minutes on 2 CPU cores."""

    images: int = 128
    size: int = 64
    groups: int = 8
    steps: int = 200
    batch_size: int = 8
    width: int = 16
    # The paper's lr (6e-5) suits tens of thousands of steps on GPUs; a CPU demo of 200 steps needs more.
    lr: float = 1e-3
    seed: int = 0
    workers: int | None = None  # runs at a time (default: one per CPU core, at most 3)
    threads: int | None = None  # torch threads per run (default: cores / workers)


def run_demo(out: str | Path, settings: DemoSettings, console: Any) -> dict[str, Any]:
    """Run the demo into ``out`` (must be empty, absent or a previous demo); return the sweep's rows."""
    from dspseg.data.synthetic import write_synthetic_dataset
    from dspseg.data.validate import render_report, validate_dataset
    from dspseg.engine.predict import predict_files
    from dspseg.study.backends import LocalBackend
    from dspseg.study.budget import NothingFits, answer, best_for_budget, reference_text
    from dspseg.study.plan import StudySpec
    from dspseg.study.report import write_report
    from dspseg.study.results import done_rows, read_results
    from dspseg.study.sweep import prepare, run_sweep

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise not_ours(out, "is not a previous demo", "give a new folder")
        shutil.rmtree(out)  # a previous demo's own output: safe to replace
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `dspseg demo`; the folder is replaced when the demo runs again\n")
    s = settings
    t0 = time.perf_counter()

    console.rule("1. synthetic data")
    data = out / "data"
    manifest = write_synthetic_dataset(data, n_images=s.images, size=s.size, seed=s.seed, groups=s.groups)
    console.print(f"{len(manifest.images)} images of {s.size}x{s.size}, {s.groups} groups, "
                  f"classes: {', '.join(manifest.classes)}")

    console.rule("2. validate")
    report = validate_dataset(data)
    render_report(report, console)
    if not report.ok:
        raise RuntimeError("the synthetic dataset did not validate; this is a dspseg bug")

    console.rule("3. sweep: basic, fixmatch, dsp at ACR 1, 8, 32 (mixed annotations, split 0), and the "
                 "step-matched reference basic-matched")
    workers = s.workers or max(1, min(3, os.cpu_count() or 1))
    train = {"steps": s.steps, "batch_size": s.batch_size, "crop_size": s.size, "width": s.width, "lr": s.lr,
             "seed": s.seed, "val_every": max(s.steps // 4, 1), "log_every": max(s.steps // 10, 1)}
    if s.threads:
        train["threads"] = s.threads
    spec = StudySpec(data=str(data.resolve()), methods=list(METHODS), scenarios=["mixed"], acrs=list(ACRS),
                     splits=1, seed=s.seed, train=train)
    study_dir = out / "study"
    study = prepare(spec, study_dir, console)
    run_sweep(spec, study_dir, LocalBackend(workers), console, study)

    console.rule("4. report")
    written = write_report(study_dir, console=console)
    console.print((study_dir / "report" / "table.md").read_text(encoding="utf-8"), highlight=False, markup=False)

    console.rule("5. budget")
    rows = done_rows(read_results(study_dir))
    full = max((r["cost_hours"] for r in rows), default=0.0)
    hours = round(full / 4, 2)
    try:
        options = best_for_budget(rows, hours, top=3)
        console.print(answer(options, hours), highlight=False)
        reference = reference_text(rows, hours, options[0])
        if reference:
            console.print(reference, highlight=False)
    except NothingFits as e:
        console.print(str(e), highlight=False)

    console.rule("6. predict")
    best = _best_run(rows, acr=8.0) or _best_run(rows)
    test_files = [manifest.path(r.file) for r in _richest_test_records(study_dir / best["data"], 3)] if best else []
    predicted = (predict_files(study_dir / best["run"], test_files, out / "predictions", overlay=True,
                               console=console) if test_files else [])

    console.rule("done")
    console.print(f"Dice against ACR:    {written.get('dice_vs_acr_mixed.png')}", highlight=False)
    console.print(f"Dice against hours:  {written.get('dice_vs_cost.png')}", highlight=False)
    if "qualitative.png" in written:
        console.print(f"predictions panel:   {written['qualitative.png']}", highlight=False)
    console.print(f"table:               {study_dir / 'report' / 'table.md'}", highlight=False)
    console.print(f"annotation savings:  {written.get('savings.md')}", highlight=False)
    if predicted:
        console.print(f"overlays ({best['method']}, ACR {best['acr']:g}): "
                      + ", ".join(str(p.with_name(p.stem + "_overlay.png")) for p in predicted), highlight=False)
    console.print(f"next: dspseg budget {study_dir} --hours H   (which annotation mix is best for H hours)",
                  highlight=False)
    console.print(f"total time: {time.perf_counter() - t0:.0f} s")
    return {"rows": rows, "report": written}


def _best_run(rows: list[dict[str, Any]], acr: float | None = None) -> dict[str, Any] | None:
    pool = [r for r in rows if r.get("mean_dice") is not None and (acr is None or float(r["acr"]) == acr)]
    return max(pool, key=lambda r: r["mean_dice"], default=None)


def _richest_test_records(data: Path, n: int) -> list[Any]:
    """The ``n`` test records whose masks hold the most classes (what an overlay can show)."""
    from dspseg.data.io import read_mask
    from dspseg.data.manifest import load_manifest
    from dspseg.study.qualitative import by_richness

    manifest = load_manifest(data)
    tests = [r for r in manifest.records("test") if r.mask is not None]
    order = by_richness([read_mask(manifest.path(r.mask)) for r in tests], manifest.ignore_index)
    return [tests[i] for i in order[:n]]
