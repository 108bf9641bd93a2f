"""README "Bring your own data", command for command, on a lab's own files (tests/lab_files.py).

The commands are read from the README itself (and must be the same in docs/bring-your-own-data.md):
convert (label images, instance labels, QuPath GeoJSON, napari points CSVs, each ``--into`` one
dataset) → validate → split → train → evaluate on ``test`` → predict new 16-bit, non-square images.
The only change: ``--steps 2000`` becomes a few steps of a tiny network. ``export`` (the README's
last line) is left to tests/engine/test_export.py.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import tifffile
from typer.testing import CliRunner

from dspseg.cli import app
from lab_files import CLASSES, write_lab_files

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--steps", "4", "--width", "4", "--batch-size", "2", "--threads", "1", "--val-every", "2",
        "--set", "levels=3", "--set", "crop_size=32"]


def documented(text: str, start: str, stop: str) -> list[list[str]]:
    """The ``dspseg`` commands between the headings ``start`` and ``stop`` (continuations joined), as
    argument lists without the leading ``dspseg``; comments dropped."""
    part = text[text.index(start): text.index(stop)].replace("\\\n", " ")
    return [shlex.split(line.strip(), comments=True)[1:] for line in part.splitlines()
            if line.strip().startswith("dspseg ")]


def readme_walk() -> list[list[str]]:
    commands = documented((ROOT / "README.md").read_text(), "## Bring your own data", "## What a run folder holds")
    return [c for c in commands if c[0] != "export"]


def test_readme_and_guide_say_the_same_commands():
    guide = documented((ROOT / "docs" / "bring-your-own-data.md").read_text(), "## 2. Convert", "## 5. Export")
    # the guide's asides: OpenOrganelle, and convert examples writing a dataset of their own (--out)
    guide = [c for c in guide if c[0] != "import" and (c[0] != "convert" or "--into" in c)]
    assert guide == readme_walk()
    assert [c[0] for c in readme_walk()] == ["convert"] * 4 + ["validate", "split", "train", "evaluate", "predict"]


def test_bring_your_own_data_walk(tmp_path, monkeypatch):
    lab = write_lab_files(tmp_path / "lab")
    monkeypatch.chdir(lab.root)  # the README's relative folders: labels/, images/, data/, runs/, ...
    (lab.root / "new_images").mkdir()
    shutil.copy(lab.images / "cell06_z1.tif", lab.root / "new_images" / "cell06_z1.tif")  # uint16, 48 x 64
    runner = CliRunner()
    outputs = {}
    for args in readme_walk():
        if args[0] == "train":
            assert args[-2:] == ["--steps", "2000"]
            args = args[:-2] + TINY
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert "Traceback" not in result.output
        outputs[args[0]] = result.output

    manifest = json.loads((lab.root / "data" / "dataset.json").read_text())
    assert manifest["classes"] == list(CLASSES)
    by_file = {}
    for rec in manifest["images"]:
        by_file.setdefault(rec["file"], []).append(rec)
    assert all(len(recs) == 1 for recs in by_file.values())  # one record per image across four sources
    merged = by_file["images/cell01_z0.tif"][0]
    assert "mask" in merged and merged.get("boxes")  # label image + QuPath boxes of one image
    parts = {p: [r for r in manifest["images"] if r["split"] == p] for p in ("train", "val", "test")}
    for p in ("val", "test"):
        assert any("mask" in r for r in parts[p]), p
    groups = [{r["group"] for r in parts[p]} for p in parts]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])

    assert "next: dspseg evaluate runs/mine data --split test" in outputs["train"].replace("\n", " ")
    assert "wrote split 0 of 3" in outputs["split"] and "Dice on test" in outputs["evaluate"]
    report = json.loads((lab.root / "runs" / "mine" / "eval" / "test.json").read_text())
    assert report["split"] == "test" and report["images"] >= 1 and set(report["per_class"]) == set(CLASSES)
    labels = tifffile.imread(lab.root / "predictions" / "cell06_z1.tif")
    assert labels.shape == (48, 64) and labels.max() < len(CLASSES)
    overlay = lab.root / "predictions" / "cell06_z1_overlay.png"
    assert overlay.is_file()
    import imageio.v3 as iio

    assert iio.imread(overlay).shape[0] == 48 * 6  # enlarged to >= 256 px, with its legend beside it
    assert np.array_equal(tifffile.imread(lab.images / "cell06_z1.tif"),
                          tifffile.imread(lab.root / "new_images" / "cell06_z1.tif"))  # inputs untouched
