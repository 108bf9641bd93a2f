"""dspseg sweep: the grid, both backends, skip/resume on re-run, retry-once, failures that never stop it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.data.synthetic import write_synthetic_dataset
from dspseg.study import RESULT_COLUMNS
from dspseg.study import runner as runner_module
from dspseg.study.costs import AnnotationCosts
from dspseg.study.plan import MethodSpec, StudySpec
from dspseg.study.sweep import prepare, run_sweep

TINY = ["--steps", "2", "--width", "4", "--batch-size", "2", "--set", "levels=2", "--set", "val_every=0",
        "--set", "crop_size=48", "--set", "threads=1"]
TRAIN = {"steps": 2, "width": 4, "batch_size": 2, "levels": 2, "val_every": 0, "crop_size": 48, "threads": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweepdata") / "syn"
    write_synthetic_dataset(root, n_images=30, size=48, seed=1, groups=6)
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def sweep(out: Path, data: Path, *extra: str, backend: str = "local"):
    args = ["sweep", "--data", str(data), "--out", str(out), "--methods", "basic,fixmatch", "--acrs", "1,4",
            "--splits", "1", "--backend", backend, "--workers", "2", *TINY, *extra]
    return CliRunner().invoke(app, args)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "ray"])
def test_tiny_sweep_writes_every_row_then_skips_on_rerun(tmp_path, data, backend):
    out = tmp_path / "sweep"
    result = sweep(out, data, backend=backend)
    assert result.exit_code == 0, result.output
    assert "[1/6]" in result.output and "left)" in result.output  # progress with the time still to go
    rows = read_csv(out / "results.csv")
    header = list(rows[0])
    assert header[:len(RESULT_COLUMNS)] == list(RESULT_COLUMNS)
    assert header[len(RESULT_COLUMNS):] == [f"dice_{c}" for c in json.loads((data / "dataset.json").read_text())["classes"]]
    # step-matched budgets (the default): basic is also continued for fixmatch's steps, as basic-matched
    assert sorted((r["method"], r["acr"]) for r in rows) == [("basic", "1"), ("basic", "4"), ("basic-matched", "1"),
                                                             ("basic-matched", "4"), ("fixmatch", "1"), ("fixmatch", "4")]
    for r in rows:
        assert r["status"] == "done" and 0.0 <= float(r["mean_dice"]) <= 1.0 and r["steps"] == "2"
        assert r["total_steps"] == ("2" if r["method"] == "basic" else "4")  # steps from random weights
        assert (out / r["run"] / "checkpoints" / "best.pt").is_file()
        assert (out / r["run"] / "eval" / "test.json").is_file()
    fix4 = next(r for r in rows if r["method"] == "fixmatch" and r["acr"] == "4")
    basic4 = next(r for r in rows if r["method"] == "basic" and r["acr"] == "4")
    # fixmatch also learns from the images without masks; basic only from the masks (3 of 10 at ACR 4)
    assert int(basic4["images_mask"]) == 3 and int(basic4["images_box"]) == 0
    assert int(fix4["images_mask"]) == 3 and int(fix4["images_box"]) > 0 and int(fix4["boxes"]) > 0
    costs = AnnotationCosts()
    expected = (3 * costs.mask + int(fix4["boxes"]) * costs.box + int(fix4["points"]) * costs.point
                + int(fix4["labels"]) * costs.label) / 3600
    assert float(fix4["cost_hours"]) == pytest.approx(expected, rel=1e-5)
    assert float(basic4["cost_hours"]) == pytest.approx(3 * costs.mask / 3600, rel=1e-5)
    # fixmatch started from basic's weights of the same ACR and split (paper §5.2)
    cfg = (out / fix4["run"] / "config.yaml").read_text()
    assert "runs/shared/acr4/split0/basic" in cfg
    matched4 = next(r for r in rows if r["method"] == "basic-matched" and r["acr"] == "4")
    assert matched4["run"] == "runs/shared/acr4/split0/basic-matched" and int(matched4["images_box"]) == 0
    matched_cfg = yaml.safe_load((out / matched4["run"] / "config.yaml").read_text())
    assert matched_cfg["method"] == "basic" and matched_cfg["init"].endswith("runs/shared/acr4/split0/basic")
    stamps = {r["run"]: (out / r["run"] / "result.json").stat().st_mtime_ns for r in rows}

    again = sweep(out, data, backend=backend)
    assert again.exit_code == 0, again.output
    assert "6 already done, 0 to run" in again.output
    assert {r["run"]: (out / r["run"] / "result.json").stat().st_mtime_ns for r in rows} == stamps
    assert read_csv(out / "results.csv") == rows


class InlineBackend:
    """Runs payloads in this process, one at a time (lets a test patch the runner)."""

    name, slots, threads = "inline", 1, 1

    def __init__(self):
        self.submitted: list[str] = []
        self.payloads: dict[int, dict] = {}

    def submit(self, p):
        self.submitted.append(p["key"])
        self.payloads[len(self.submitted)] = p
        return len(self.submitted)

    def wait_one(self, handles):
        return handles[0], runner_module.execute(self.payloads.pop(handles[0]))

    def close(self):
        """Nothing to release: the runs ran in this process."""


def spec_for(data: Path, methods=("basic", "fixmatch"), acrs=(1, 4)) -> StudySpec:
    return StudySpec(data=str(data), methods=list(methods), acrs=list(acrs), splits=1, train=dict(TRAIN))


def test_failed_run_is_retried_once_then_recorded_and_the_sweep_goes_on(tmp_path, data, monkeypatch):
    real = runner_module._train_and_evaluate
    calls: list[str] = []

    def flaky(p, out, root, console):
        calls.append(p["key"])
        if p["key"] == "shared/acr4/split0/basic":
            raise RuntimeError("disk on fire")
        if p["key"] == "shared/acr1/split0/basic" and calls.count(p["key"]) == 1:
            raise RuntimeError("transient")
        return real(p, out, root, console)

    monkeypatch.setattr(runner_module, "_train_and_evaluate", flaky)
    spec = spec_for(data)
    out = tmp_path / "sweep"
    study = prepare(spec, out, Console(quiet=True))
    backend = InlineBackend()
    rows = run_sweep(spec, out, backend, Console(quiet=True), study)
    assert calls.count("shared/acr1/split0/basic") == 2  # failed once, then done
    assert rows["shared/acr1/split0/basic"]["status"] == "done"
    assert calls.count("shared/acr4/split0/basic") == 2  # tried twice, then recorded
    assert rows["shared/acr4/split0/basic"]["status"] == "failed"
    assert "disk on fire" in rows["shared/acr4/split0/basic"]["error"]
    # its dependent never ran, and says why; the other cell finished
    assert "mixed/acr4/split0/fixmatch" not in calls
    assert "starts from (shared/acr4/split0/basic) failed" in rows["mixed/acr4/split0/fixmatch"]["error"]
    assert rows["mixed/acr1/split0/fixmatch"]["status"] == "done"
    table = {(r["method"], r["acr"]): r for r in read_csv(out / "results.csv")}
    assert table[("basic", "4")]["status"] == "failed" and table[("basic", "4")]["mean_dice"] == ""
    assert table[("fixmatch", "1")]["status"] == "done"
    log = (out / "logs" / "shared_acr4_split0_basic.log").read_text()
    assert "Traceback" in log and "disk on fire" in log


def test_interrupted_runs_resume_and_empty_leftovers_restart(tmp_path, data):
    spec = spec_for(data, methods=("basic",), acrs=(1,))
    out = tmp_path / "sweep"
    study = prepare(spec, out, Console(quiet=True))
    run_sweep(spec, out, InlineBackend(), Console(quiet=True), study)
    run_dir = out / "runs" / "shared" / "acr1" / "split0" / "basic"
    metrics = (run_dir / "metrics.csv").read_text()
    (run_dir / "result.json").unlink()  # as if killed after the last checkpoint, before the result
    backend = InlineBackend()
    rows = run_sweep(spec, out, backend, Console(quiet=True), study)
    assert backend.submitted == ["shared/acr1/split0/basic"]
    assert rows["shared/acr1/split0/basic"]["status"] == "done"
    assert (run_dir / "metrics.csv").read_text() == metrics  # resumed at its end: nothing retrained
    # a folder killed before its first checkpoint holds nothing worth keeping: started again
    for p in run_dir.rglob("*"):
        if p.is_file():
            p.unlink()
    (run_dir / "config.yaml").write_text("half written")
    rows = run_sweep(spec, out, InlineBackend(), Console(quiet=True), study)
    assert rows["shared/acr1/split0/basic"]["status"] == "done"
    assert (run_dir / "checkpoints" / "last.pt").is_file()


def test_a_later_sweep_in_the_same_folder_adds_its_runs_and_lists_all(tmp_path, data):
    out = tmp_path / "sweep"
    first = spec_for(data, methods=("basic",), acrs=(1,))
    run_sweep(first, out, InlineBackend(), Console(quiet=True), prepare(first, out, Console(quiet=True)))
    second = spec_for(data, methods=("basic:augment=false",), acrs=(1,))
    backend = InlineBackend()
    run_sweep(second, out, backend, Console(quiet=True), prepare(second, out, Console(quiet=True)))
    # basic itself was done; a method fine-tuned from it brings the step-matched reference along
    assert sorted(backend.submitted) == ["shared/acr1/split0/basic+augment=false", "shared/acr1/split0/basic-matched"]
    assert sorted(r["method"] for r in read_csv(out / "results.csv")) == ["basic", "basic-matched",
                                                                          "basic:augment=false"]
    other = StudySpec(**{**first.model_dump(), "train": {**TRAIN, "steps": 3}})
    with pytest.raises(Exception, match=r"other training options steps 2 \(now 3\).*--set steps=2"):
        prepare(other, out, Console(quiet=True))


def test_a_folder_from_an_older_dspseg_stays_resumable(tmp_path, data):
    import yaml

    from dspseg.errors import UserError

    out = tmp_path / "sweep"
    full = {**TRAIN, "mask_share": 0.0}
    spec = StudySpec(data=str(data), methods=["basic"], acrs=[1], splits=1, train=full)
    prepare(spec, out, Console(quiet=True))
    written = yaml.safe_load((out / "study.yaml").read_text())
    del written["train"]["mask_share"]  # as a sweep made before the option existed wrote it
    (out / "study.yaml").write_text(yaml.safe_dump(written))
    prepare(spec, out, Console(quiet=True))  # the missing option is what the runs used: no mask share
    asked = StudySpec(**{**spec.model_dump(), "train": {**full, "mask_share": 0.25}})
    with pytest.raises(UserError, match="other training options mask_share 0.0 \\(now 0.25\\)"):
        prepare(asked, out, Console(quiet=True))
    # a study.yaml from before step budgets existed ran the paper's added budgets
    del written["step_budget"]
    (out / "study.yaml").write_text(yaml.safe_dump(written))
    fine_tuned = StudySpec(**{**spec.model_dump(), "methods": ["basic", "fixmatch"]})
    with pytest.raises(UserError, match="other step_budget 'added' \\(now 'matched'\\)"):
        prepare(fine_tuned, out, Console(quiet=True))
    added = StudySpec(**{**fine_tuned.model_dump(), "step_budget": "added"})
    assert prepare(added, out, Console(quiet=True)).reference == "basic"
    assert "basic-matched" not in [m.label for m in added.method_specs()]


def test_method_specs_and_the_grid():
    spec = MethodSpec.parse("dsp:variant=reference:tau=0.5:lambdas.box=0.2")
    assert spec.name == "dsp" and spec.options == {"variant": "reference", "tau": 0.5, "lambdas": {"box": 0.2}}
    assert spec.folder == "dsp+variant=reference+tau=0.5+lambdas.box=0.2"
    with pytest.raises(ValueError, match="did you mean 'dsp'"):
        MethodSpec.parse("dps")
    with pytest.raises(ValueError, match="bad option for dsp"):
        MethodSpec.parse("dsp:tua=0.5")
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        MethodSpec.parse("dsp:tau")
    study = StudySpec(data="d", methods=["fixmatch", "dsp"], scenarios=["mixed", "box"], acrs=[8, 1], splits=2)
    keys = [r.key for r in study.runs()]
    # basic is added (it initialises the others), trained once per ACR and split, and comes first
    assert keys[:4] == ["shared/acr1/split0/basic", "shared/acr1/split1/basic", "shared/acr8/split0/basic",
                        "shared/acr8/split1/basic"]
    # the step-matched reference: basic continued from its own weights, once per ACR and split
    assert [k for k in keys if k.endswith("basic-matched")] == [
        "shared/acr1/split0/basic-matched", "shared/acr1/split1/basic-matched", "shared/acr8/split0/basic-matched",
        "shared/acr8/split1/basic-matched"]
    matched = next(r for r in study.runs() if r.method.label == "basic-matched")
    assert study.init_parent(matched).key == "shared/acr1/split0/basic" and study.reference == "basic-matched"
    assert len(keys) == 4 + 4 + 2 * 2 * 2 * 2
    added = StudySpec(data="d", methods=["fixmatch"], acrs=[1], splits=1, step_budget="added")
    assert [r.key for r in added.runs()] == ["shared/acr1/split0/basic", "mixed/acr1/split0/fixmatch"]
    assert added.reference == "basic" and "Added budgets" in added.budget_text()
    alone = StudySpec(data="d", methods=["basic"], acrs=[1], splits=1)  # nothing fine-tuned: nothing to match
    assert [r.key for r in alone.runs()] == ["shared/acr1/split0/basic"]
    scratch = StudySpec(data="d", methods=["fixmatch"], acrs=[1], splits=1, init_from_basic=False)
    assert [r.key for r in scratch.runs()] == ["mixed/acr1/split0/fixmatch"]


def test_cli_errors_are_one_sentence(tmp_path, data):
    r = CliRunner()
    bad_method = r.invoke(app, ["sweep", "--data", str(data), "--out", str(tmp_path / "a"), "--methods", "basic,fixmach"])
    assert bad_method.exit_code == 2 and "did you mean 'fixmatch'" in bad_method.output
    bad_scenario = r.invoke(app, ["sweep", "--data", str(data), "--out", str(tmp_path / "b"), "--scenarios", "boxes"])
    assert bad_scenario.exit_code == 2 and "unknown scenario 'boxes'" in bad_scenario.output
    method_set = r.invoke(app, ["sweep", "--data", str(data), "--out", str(tmp_path / "c"),
                                "--set", "method_options.tau=0.1"])
    assert method_set.exit_code == 2 and "give method options in --methods" in method_set.output
    bad_acr = r.invoke(app, ["sweep", "--data", str(data), "--out", str(tmp_path / "d"), "--acrs", "1,x"])
    assert bad_acr.exit_code == 2 and "must be a number" in bad_acr.output
    bad_cost = r.invoke(app, ["sweep", "--data", str(data), "--out", str(tmp_path / "e"), "--cost", "mask"])
    assert bad_cost.exit_code == 2 and "KIND=SECONDS" in bad_cost.output
    not_sweep = tmp_path / "f"
    not_sweep.mkdir()
    (not_sweep / "mine.txt").write_text("keep me")
    busy = r.invoke(app, ["sweep", "--data", str(data), "--out", str(not_sweep)])
    assert busy.exit_code == 2 and "holds no sweep" in busy.output
    assert (not_sweep / "mine.txt").read_text() == "keep me"
    assert not any((tmp_path / x).exists() for x in "abcde")


def test_time_left_is_estimated_from_finished_runs_per_method():
    from dspseg.study.sweep import duration_text, remaining_seconds

    study = StudySpec(data="d", methods=["basic", "dsp"], acrs=[1, 8], splits=1, step_budget="added")
    runs = study.runs()  # basic × 2, dsp × 2
    assert remaining_seconds(runs, {}, 2) is None
    # dsp has no finished run yet: basic's mean times dsp's two network passes per step (weak and strong views)
    assert remaining_seconds(runs, {"basic": [100.0, 140.0]}, 1) == pytest.approx(2 * 120.0 + 2 * 240.0)
    assert remaining_seconds(runs, {"basic": [120.0], "dsp": [300.0, 360.0]}, 2) == pytest.approx((2 * 120 + 2 * 330) / 2)
    assert duration_text(20) == "under a minute" and duration_text(300) == "5 min"
    assert duration_text(3725) == "1 h 02 min"
