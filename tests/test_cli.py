"""The command line: synth, validate, simulate, split and demo end to end, and clean errors."""

from __future__ import annotations

import csv
import json

import numpy as np
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.data.io import read_mask

runner = CliRunner()


def test_synth_validate_simulate(tmp_path):
    data = tmp_path / "syn"
    r = runner.invoke(app, ["synth", str(data), "--images", "24", "--size", "64", "--groups", "8"])
    assert r.exit_code == 0, r.output
    assert "wrote 24 images" in r.output
    r = runner.invoke(app, ["validate", str(data)])
    assert r.exit_code == 0, r.output
    assert "mask" in r.output and "64 x 64" in r.output
    r = runner.invoke(app, ["simulate", str(data), "--acr", "4", "--scenario", "mixed", "--split", "1",
                            "--n-splits", "2", "--out", str(tmp_path / "sim")])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "sim" / "dataset.json").read_text())
    kinds = {k: 0 for k in ("mask", "box", "point", "image", "none")}
    for rec in manifest["images"]:
        if rec["split"] != "train":
            assert "mask" in rec
            continue
        kind = ("mask" if "mask" in rec else "box" if "boxes" in rec else "point" if "points" in rec
                else "image" if "labels" in rec else "none")
        kinds[kind] += 1
    for kind, n in kinds.items():
        assert f"{kind}" in r.output
    assert kinds["mask"] == -(-sum(kinds.values()) // 4)  # ceil(N / ACR)


def test_validate_reports_problems_without_traceback(tmp_path):
    data = tmp_path / "bad"
    data.mkdir()
    (data / "dataset.json").write_text('{"format": "dspseg/1", "classes": ["a", "b"], "images": [\n'
                                       '  {"file": "missing.tif", "boxes": [{"class": "c", "xyxy": [0, 0, 4, 4]}]}\n]}')
    r = runner.invoke(app, ["validate", str(data)])
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert "missing.tif" in r.output and "'c'" in r.output
    (data / "dataset.json").write_text('{"format": "dspseg/1",\n "classes": ["a",]}')
    r = runner.invoke(app, ["validate", str(data)])
    assert r.exit_code == 1 and "line 2" in r.output


def test_simulate_bad_option_is_one_sentence(tmp_path):
    r = runner.invoke(app, ["synth", str(tmp_path / "s"), "--images", "16", "--size", "48", "--groups", "4"])
    assert r.exit_code == 0
    r = runner.invoke(app, ["simulate", str(tmp_path / "s"), "--acr", "2", "--scenario", "scribble",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert "scenario" in r.output and "Traceback" not in r.output


def test_split_writes_parts_and_refuses_in_one_sentence(tmp_path):
    data = tmp_path / "s"
    assert runner.invoke(app, ["synth", str(data), "--images", "24", "--size", "48", "--groups", "6"]).exit_code == 0
    raw = json.loads((data / "dataset.json").read_text())
    for rec in raw["images"][1::2]:  # half the images keep only image labels: they can be trained on, not scored
        present = np.unique(read_mask(data / rec.pop("mask")))
        rec["labels"] = [raw["classes"][c] for c in present if c < len(raw["classes"])]
    (data / "dataset.json").write_text(json.dumps(raw))
    r = runner.invoke(app, ["split", str(data), "--n-splits", "2", "--split", "1", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "wrote split 1 of 2 (seed 3)" in r.output and f"next: dspseg train {data}" in r.output
    after = json.loads((data / "dataset.json").read_text())["images"]
    assert {rec["split"] for rec in after} == {"train", "val", "test"}
    for part in ("val", "test"):  # whole groups move, so a part may hold unmasked images too, but never only those
        assert any("mask" in rec for rec in after if rec["split"] == part)
        assert f"{part} " in r.output and " masked, " in r.output
    assert [{k: v for k, v in rec.items() if k != "split"} for rec in after] == raw["images"]
    before = (data / "dataset.json").read_bytes()
    r = runner.invoke(app, ["split", str(data), "--n-splits", "2", "--split", "2"])
    assert r.exit_code == 2 and "--split: expected 0..1" in r.output and "Traceback" not in r.output
    assert (data / "dataset.json").read_bytes() == before
    for rec in raw["images"][4::2]:  # masks in 1 group only: val and test cannot both get one
        del rec["mask"]
        rec["labels"] = ["cytosol"]
    (data / "dataset.json").write_text(json.dumps(raw))
    r = runner.invoke(app, ["split", str(data)])
    assert r.exit_code == 1 and "in the masks of 1 group(s)" in r.output and "Fix:" in r.output
    assert "Traceback" not in r.output
    assert json.loads((data / "dataset.json").read_text()) == raw  # left as it was


def test_demo_runs_end_to_end_and_reruns(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--images", "24", "--size", "64", "--steps", "2", "--width", "4",
            "--workers", "2", "--threads", "1"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "study" / "results.csv").open()))
    assert sorted((row["method"], row["acr"]) for row in rows) == sorted(
        (m, a) for m in ("basic", "basic-matched", "fixmatch", "dsp") for a in ("1", "8", "32"))
    assert all(row["status"] == "done" for row in rows)
    # the step-matched reference trained as many steps from random weights as the fine-tuned methods
    assert {row["method"]: row["total_steps"] for row in rows if row["acr"] == "8"} == {
        "basic": "2", "basic-matched": "4", "fixmatch": "4", "dsp": "4"}
    assert "| mixed | basic-matched |" in r.output and "Step-matched budgets" in r.output
    for f in ("dice_vs_acr_mixed.png", "dice_vs_cost.png", "table.md", "savings.md", "qualitative.png"):
        assert (out / "study" / "report" / f).is_file(), f
    assert "| dsp" in r.output and "dice_vs_acr_mixed.png" in r.output  # the table and the plot's path
    assert "mixed: ≥ 90% of full supervision" in r.output and "savings.md" in r.output
    run = out / "study" / "runs" / "mixed" / "acr8" / "split0" / "dsp"
    for f in ("config.yaml", "env.json", "metrics.csv", "progress.png", "eval/test.json", "checkpoints/best.pt"):
        assert (run / f).is_file(), f
    assert list((out / "predictions").glob("*_overlay.png"))
    r = runner.invoke(app, args)  # a previous demo folder is replaced, anything else refused
    assert r.exit_code == 0, r.output
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    r = runner.invoke(app, ["demo", "--out", str(other), "--steps", "1"])
    assert r.exit_code == 2 and (other / "keep.txt").read_text() == "user data"
