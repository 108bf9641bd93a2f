"""dspseg study loop end to end on tiny data: every strategy, the rounds' bookkeeping, resume.

One loop (30 synthetic 48² images, 1 split, 2 rounds, width 4, 2 steps a run) is run once through
the CLI and then interrupted by hand in the states a killed loop leaves behind; the same command
finishes it to the very same results.csv.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.data.io import read_mask
from dspseg.data.manifest import load_manifest
from dspseg.data.synthetic import write_synthetic_dataset
from dspseg.data.weak import derive_weak_labels

STRATEGIES = ["advisor", "random", "masks-random", "uncertainty-masks"]
HOURS = 0.03  # 108 s a round: with masks at 50 s, two masks, or a mix of weaker kinds
ARGS = ["--start-acr", "4", "--rounds", "2", "--hours-per-round", str(HOURS), "--splits", "1",
        "--strategies", ",".join(STRATEGIES), "--cost", "mask=50", "--steps", "2", "--width", "4",
        "--batch-size", "2", "--set", "levels=2", "--set", "val_every=0", "--set", "crop_size=48",
        "--set", "threads=1"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def loop(data: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["study", "loop", "--data", str(data), "--out", str(out), *ARGS, *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path, list[dict[str, str]]]:
    root = tmp_path_factory.mktemp("loop")
    data = root / "syn"
    write_synthetic_dataset(data, n_images=30, size=48, seed=1, groups=6)
    out = root / "loop"
    result = loop(data, out)
    assert result.exit_code == 0, result.output
    return data, out, read_csv(out / "results.csv")


def test_every_strategy_runs_every_round_from_one_start(finished):
    data, out, rows = finished
    assert [(r["strategy"], r["round"]) for r in rows] == [(s, str(k)) for s in STRATEGIES for k in range(3)]
    assert all(r["status"] == "done" and 0.0 <= float(r["mean_dice"]) <= 1.0 for r in rows)
    starts = [r for r in rows if r["round"] == "0"]
    assert {r["run"] for r in starts} == {"runs/split0/start"} and {r["hours_spent"] for r in starts} == {"0.0"}
    for r in rows:  # each round trains the same steps on top of the previous round's weights
        assert r["steps"] == "2" and r["total_steps"] == str(2 * (int(r["round"]) + 1))
        if r["round"] != "0":
            previous = "split0/start" if r["round"] == "1" else f"split0/{r['strategy']}/round1"
            assert f"runs/{previous}" in (out / r["run"] / "config.yaml").read_text()
    assert (out / "loop.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| `advisor` |" in report and "`advisor` against the others, paired per split" in report


def test_hours_never_exceed_the_budget_and_the_oracle_answers_what_was_asked(finished):
    data, out, rows = finished
    source = load_manifest(data)
    by_file = {r.file: r for r in source.images}
    budget = HOURS * 3600
    for strategy in STRATEGIES:
        spent = 0.0
        for k in (1, 2):
            info = json.loads((out / f"data/split0/{strategy}/round{k}/round.json").read_text())
            answered = [q for q in info["requests"] if q["answered"]]
            assert info["spent_s"] == pytest.approx(sum(q["actual_s"] for q in answered)) and info["spent_s"] <= budget
            spent += info["spent_s"]
            row = next(r for r in rows if r["strategy"] == strategy and r["round"] == str(k))
            assert float(row["hours_round"]) <= HOURS and float(row["hours_spent"]) == pytest.approx(spent / 3600, abs=1e-6)
            before = {r.file: r for r in load_manifest(out / info["previous"]).images}
            after = {r.file: r for r in load_manifest(out / f"data/split0/{strategy}/round{k}").images}
            asked = {q["image"]: q["kind"] for q in answered}
            assert sum(int(row[f"requests_{kind}"]) for kind in ("mask", "box", "point", "image")) == len(asked)
            for file, rec in after.items():
                if file not in asked:  # nothing asked, nothing changed
                    assert rec.to_json() == before[file].to_json()
                    continue
                kind, truth = asked[file], by_file[file]
                weak = derive_weak_labels(read_mask(source.path(truth.mask)), source.classes, source.ignore_index)
                expected = {"mask": truth.mask, "box": weak.boxes, "point": weak.points, "image": weak.labels}[kind]
                field = {"mask": "mask", "box": "boxes", "point": "points", "image": "labels"}[kind]
                assert getattr(rec, field) == expected and getattr(before[file], field) is None
                assert rec.split == "train" and before[file].annotation_type != "mask"
            if strategy in ("masks-random", "uncertainty-masks"):
                assert set(asked.values()) <= {"mask"} and len(asked) == 2  # 2 masks of 50 s fit in 108 s
    random_rows = [r for r in rows if r["strategy"] == "random" and r["round"] != "0"]
    assert sum(float(r["hours_round"]) for r in random_rows) > 0  # the random strategy did annotate


def test_an_interrupted_loop_resumes_to_the_same_results(finished):
    data, out, rows = finished
    before = {k: (out / "runs" / k / "result.json").stat().st_mtime_ns
              for k in ("split0/start", "split0/advisor/round1", "split0/random/round1")}
    # killed while writing random's round 2 dataset: no dataset (a temporary sibling left), no run
    shutil.rmtree(out / "runs/split0/random/round2")
    shutil.rmtree(out / "data/split0/random/round2")
    (out / "data/split0/random/.round2.round.leftover").mkdir()
    # killed while training advisor's round 2: its dataset and last checkpoint stay, no result
    (out / "runs/split0/advisor/round2/result.json").unlink()
    shutil.rmtree(out / "runs/split0/advisor/round2/eval")
    # killed before masks-random's round 2 saved anything
    run = out / "runs/split0/masks-random/round2"
    for p in run.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    result = loop(data, out)
    assert result.exit_code == 0, result.output
    assert "9 runs: 6 already done, 3 to run" in result.output
    again = read_csv(out / "results.csv")
    drop = lambda table: [{k: v for k, v in r.items() if k != "seconds"} for r in table]  # noqa: E731
    assert drop(again) == drop(rows)
    for k, mtime in before.items():  # finished runs were not touched
        assert (out / "runs" / k / "result.json").stat().st_mtime_ns == mtime


def test_bad_options_are_one_sentence(tmp_path, finished):
    data, out, _ = finished
    r = loop(data, tmp_path / "x", "--strategies", "advisor,randomm")
    assert r.exit_code == 2 and "unknown strategy 'randomm'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["study", "loop", "--data", str(data), "--out", str(out), *ARGS[:-2], "--set", "lr=1"])
    assert r.exit_code == 2 and "holds a loop with other training options lr 6e-05 (now 1.0)" in r.output
    r = loop(data, out, "--start-steps", "3")
    assert r.exit_code == 2 and "holds a loop with other start_steps None (now 3)" in r.output
    r = CliRunner().invoke(app, ["study", "loop", "--data", str(tmp_path), "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "holds no dataset.json" in r.output
    r = loop(data, tmp_path / "x", "--hours-per-round", "0")
    assert r.exit_code == 2 and "--hours-per-round must be above 0 hours" in r.output
    r = loop(data, tmp_path / "z", "--method", "basic")
    assert r.exit_code == 2 and "does not learn from box, point, image" in r.output
    assert np.all([not (tmp_path / n).exists() for n in ("x", "z")])


def test_the_start_can_train_longer_than_the_rounds(tmp_path, finished):
    data, _, _ = finished
    out = tmp_path / "long"
    args = [a for a in ARGS]
    args[args.index("--strategies") + 1] = "none"
    args[args.index("--rounds") + 1] = "1"
    r = CliRunner().invoke(app, ["study", "loop", "--data", str(data), "--out", str(out), *args, "--start-steps", "3"])
    assert r.exit_code == 0, r.output
    rows = {(x["strategy"], x["round"]): x for x in read_csv(out / "results.csv")}
    assert (rows["none", "0"]["steps"], rows["none", "0"]["total_steps"]) == ("3", "3")
    assert (rows["none", "1"]["steps"], rows["none", "1"]["total_steps"]) == ("2", "5")
    assert "the start model: 3 steps from random weights" in (out / "report.md").read_text()
