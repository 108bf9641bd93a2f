"""A sweep on a volume dataset (dataset.json dspseg/2), end to end: the simulated datasets keep volume
records, every run trains and is scored on its test sections, and the report draws its panels.

The runs execute in this process one after the other (the sweep's own runner, no worker pool to
start; dsp in eager mode, no torch.compile), on a 16 x 64 x 64 synthetic volume with a mask on every
section and groups of 4 sections.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.data.manifest import load_manifest
from dspseg.data.synthetic import SYNTH_CLASSES, write_synthetic_volume
from dspseg.study import runner
from dspseg.study.plan import StudySpec
from dspseg.study.sweep import prepare, run_sweep

TRAIN = {"steps": 2, "width": 4, "batch_size": 2, "levels": 2, "val_every": 0, "crop_size": 32, "threads": 1}


class InProcess:
    """The sweep's backend interface, running each payload here with the sweep's own runner."""

    name, slots, threads = "in-process", 1, 1

    def __init__(self):
        self.payloads: list[dict] = []

    def submit(self, p):
        self.payloads.append(p)
        return len(self.payloads) - 1

    def wait_one(self, handles):
        return handles[0], runner.execute(self.payloads[handles[0]])

    def close(self, stop: bool = False):
        """Nothing to release: the runs ran in this process."""


def test_a_sweep_on_a_volume_dataset_runs_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "cell"
    write_synthetic_volume(data / "cell.ome.zarr", shape=(16, 64, 64), seed=1)
    labels = {"url": "cell.ome.zarr", "array": "labels/organelles"}
    (data / "dataset.json").write_text(json.dumps({
        "format": "dspseg/2", "name": "cell", "classes": SYNTH_CLASSES, "group_every": 4,
        "images": [{"volume": {"url": "cell.ome.zarr"}, "index": k, "mask": {"volume": labels}} for k in range(16)]}))
    out = tmp_path / "sweep"
    spec = StudySpec(data=str(data), methods=["basic", "dsp:compile=false"], acrs=[4], splits=1, train=dict(TRAIN))
    study = prepare(spec, out, Console(quiet=True))
    reduced = load_manifest(out / "data" / "mixed-acr4-split0")
    assert all(r.volume is not None for r in reduced.images) and reduced.group_every == 4
    assert {r.annotation_type for r in reduced.images} >= {"mask", "box", "point"}
    rows = run_sweep(spec, out, InProcess(), Console(quiet=True), study)
    assert sorted(r["method"] for r in rows.values()) == ["basic", "basic-matched", "dsp:compile=false"]
    assert all(r["status"] == "done" and 0.0 <= r["mean_dice"] <= 1.0 for r in rows.values()), rows
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    dsp = next(r for r in table if r["method"].startswith("dsp"))
    assert int(dsp["images_mask"]) == 2 and int(dsp["boxes"]) > 0 and int(dsp["points"]) > 0
    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert (out / "report" / "qualitative.png").is_file() and (out / "report" / "table.md").is_file()
