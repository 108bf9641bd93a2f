"""dspseg report: results.csv reading and errors, split averages, tables, figures, the qualitative panel."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from dspseg.study import RESULT_COLUMNS
from dspseg.study.qualitative import panel_rows
from dspseg.study.report import csv_table, markdown_table, write_report
from dspseg.study.results import ResultsError, class_names, done_rows, failed_count, read_results, summarise
from study_common import CLASSES, hand_rows, write_results



def _console() -> Console:
    return Console(width=200, record=True, force_terminal=False)


def _group(groups, method, scenario, acr):
    [g] = [g for g in groups if (g["method"], g["scenario"], g["acr"]) == (method, scenario, acr)]
    return g


def test_read_results_types_the_rows(hand: Path) -> None:
    rows = read_results(hand)
    assert len(rows) == 25 and failed_count(rows) == 1 and len(done_rows(rows)) == 24
    r = rows[0]
    assert isinstance(r["acr"], float) and isinstance(r["split"], int) and isinstance(r["boxes"], int)
    assert isinstance(r["mean_dice"], float) and isinstance(r["cost_hours"], float) and r["status"] == "done"
    assert r["dice_mito"] == pytest.approx(0.70)
    failed = rows[-1]
    assert failed["status"] == "failed" and failed["mean_dice"] is None and failed["boxes"] is None
    assert class_names(rows) == CLASSES
    assert read_results(hand / "results.csv") == rows


def test_summarise_by_hand(hand: Path) -> None:
    groups = summarise(read_results(hand))
    assert len(groups) == 12  # the failed split-2 run is left out
    g = _group(groups, "basic", "mixed", 1.0)
    assert g["n"] == 2 and g["splits"] == [0, 1]
    assert g["mean_dice"] == pytest.approx(0.82) and g["mean_dice_std"] == pytest.approx(0.02 * math.sqrt(2))
    assert g["dice_background"] == pytest.approx(0.92) and g["dice_mito"] == pytest.approx(0.72)
    assert g["cost_hours"] == pytest.approx(96 * 239.7 / 3600) and g["cost_hours_std"] == 0.0
    g = _group(groups, "dsp", "mixed", 8.0)
    assert g["mean_dice"] == pytest.approx(0.71) and g["mean_dice_std"] == pytest.approx(0.01 * math.sqrt(2))
    assert g["boxes"] == pytest.approx(63.0) and g["points"] == pytest.approx(63.0) and g["images_mask"] == 12.0
    assert g["cost_hours"] == pytest.approx((12 * 239.7 + 63 * 7 + 63 * 2.4 + 42) / 3600, abs=1e-6)
    assert g["cost_hours_std"] == pytest.approx(6 * 7 / 3600 / math.sqrt(2), abs=1e-6)  # boxes 60 | 66
    g = _group(groups, "dsp", "box", 32.0)
    assert g["mean_dice"] == pytest.approx(0.44) and g["mean_dice_std"] == 0.0
    one = summarise([r for r in read_results(hand) if r["split"] == 0])
    assert all(g["n"] == 1 and g["mean_dice_std"] == 0.0 for g in one)
    assert [(g["scenario"], g["method"], g["acr"]) for g in groups[:4]] == [
        ("mixed", "basic", 1.0), ("mixed", "basic", 8.0), ("mixed", "basic", 32.0), ("mixed", "dsp", 1.0)]


def test_tables(hand: Path) -> None:
    groups = summarise(read_results(hand))
    md = markdown_table(groups)
    lines = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in md.splitlines() if line.startswith("| ")}
    assert "| ACR 1 | ACR 8 | ACR 32 |" in lines[("scenario", "method")]
    assert "**0.820 ± 0.028** · 6.39 h" in lines[("mixed", "basic")]
    assert "| 0.620 ± 0.028 · 0.80 h |" in lines[("mixed", "basic")]
    assert "**0.710 ± 0.014** · 0.98 h" in lines[("mixed", "dsp")] and "**0.630 ± 0.042** · 0.40 h" in lines[("mixed", "dsp")]
    assert "| 0.810 ± 0.028 · 6.39 h |" in lines[("mixed", "dsp")]
    assert "**0.840 ± 0.028**" in lines[("box", "dsp")] and "| 0.440 ± 0.000 · 0.74 h |" in lines[("box", "dsp")]
    assert "**0.450 ± 0.071** · 0.20 h" in lines[("box", "basic")]
    assert md.count("**") == 2 * 6  # one winner per (scenario, ACR)
    table = list(csv.DictReader(csv_table(groups, CLASSES).splitlines()))
    assert len(table) == 12
    row = next(r for r in table if (r["scenario"], r["method"], r["acr"]) == ("mixed", "dsp", "8"))
    assert float(row["mean_dice"]) == pytest.approx(0.71) and float(row["mean_dice_std"]) == pytest.approx(0.014142, abs=1e-6)
    assert float(row["boxes"]) == 63.0 and float(row["cost_hours"]) == pytest.approx(0.975167, abs=1e-6)
    assert float(row["dice_mito"]) == pytest.approx(0.61) and row["splits"] == "2"


def _png(path: Path, min_side: int = 200) -> np.ndarray:
    import matplotlib.image as mpimg

    image = mpimg.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= min_side, image.shape
    rgb = image[..., :3]
    assert rgb.std() > 0.05 and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50  # not blank
    return image


def test_report_writes_every_figure_and_table(hand: Path) -> None:
    console = _console()
    written = write_report(hand, console=console)
    expected = {"dice_vs_acr_mixed.png", "dice_vs_acr_box.png", "dice_vs_cost.png", "per_class_mixed.png",
                "per_class_box.png", "table.md", "table.csv", "savings.md"}
    assert set(written) == expected  # no dataset folders here: no qualitative panel, and a note says so
    for name, path in written.items():
        assert path == hand / "report" / name and path.is_file()
        if name.endswith(".png"):
            _png(path)
    assert (hand / "report" / "table.md").read_text() == markdown_table(summarise(read_results(hand)))
    text = console.export_text()
    assert "25 run(s)" in text and "24 done, 1 failed" in text
    assert "qualitative.png not written" in text and "data/mixed-acr1-split0" in text
    assert not list((hand / "report").glob(".*.tmp"))
    other = write_report(hand / "results.csv", out=hand / "elsewhere", console=_console())
    assert other["table.csv"] == hand / "elsewhere" / "table.csv"


def test_results_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"no results.csv in the sweep folder .*run `dspseg sweep"):
        read_results(tmp_path)
    with pytest.raises(ResultsError, match="does not exist"):
        read_results(tmp_path / "nowhere")
    columns = [c for c in [*hand_rows()[0]] if c != "cost_hours"]
    bad = write_results(tmp_path / "nocost", hand_rows(), columns=columns)
    with pytest.raises(ResultsError, match=rf"{bad} has no 'cost_hours' column"):
        read_results(bad)
    rows = hand_rows()
    rows[3]["mean_dice"] = "0.7x"
    bad = write_results(tmp_path / "number", rows)
    with pytest.raises(ResultsError, match=rf"{bad}, line 5, column 'mean_dice': '0.7x' is not a number"):
        read_results(bad)
    rows = hand_rows()
    rows[0]["boxes"] = "2.5"
    with pytest.raises(ResultsError, match=r"line 2, column 'boxes': '2.5' is not a whole number"):
        read_results(write_results(tmp_path / "whole", rows))
    rows = hand_rows()
    rows[1]["cost_hours"] = ""
    with pytest.raises(ResultsError, match=r"line 3, column 'cost_hours': empty in a done run"):
        read_results(write_results(tmp_path / "empty", rows))
    failed_only = write_results(tmp_path / "allfailed", hand_rows()[-1:])
    with pytest.raises(ResultsError, match="none of the 1 run"):
        write_report(failed_only, console=_console())


def test_panel_rows_merge_the_shared_basic_runs() -> None:
    rows, acrs = panel_rows(hand_rows())
    assert acrs == [1.0, 8.0, 32.0]
    assert [label for label, _ in rows] == ["basic\nmixed, box", "dsp\nmixed", "dsp\nbox"]
    assert rows[0][1] == {1.0: "runs/shared/acr1/split0/basic", 8.0: "runs/shared/acr8/split0/basic",
                          32.0: "runs/shared/acr32/split0/basic"}


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory) -> Path:
    """A sweep folder with 2 tiny real runs (basic, dsp) at ACR 2, split 0, and a dsp row at ACR 4
    whose run folder has no checkpoint."""
    from dspseg.data.acr import simulate_dataset
    from dspseg.data.synthetic import write_synthetic_dataset
    from dspseg.engine.config import TrainConfig
    from dspseg.engine.evaluate import evaluate_run
    from dspseg.engine.trainer import train

    root = tmp_path_factory.mktemp("real")
    write_synthetic_dataset(root / "source", n_images=30, size=48, seed=1, groups=6)
    sweep = root / "sweep"
    data = "data/mixed-acr2-split0"
    sim = simulate_dataset(root / "source", sweep / data, acr=2, scenario="mixed", split=0, n_splits=2)
    rows = []
    for method, run in (("basic", "runs/shared/acr2/split0/basic"), ("dsp", "runs/mixed/acr2/split0/dsp")):
        cfg = TrainConfig(method=method, steps=2, width=4, levels=2, batch_size=2, crop_size=32, val_every=0,
                          threads=1)
        train(sweep / data, sweep / run, cfg, console=Console(quiet=True))
        scores = evaluate_run(sweep / run, sweep / data, console=Console(quiet=True))
        rows.append({"method": method, "scenario": "mixed", "acr": 2, "split": 0, "status": "done",
                     "mean_dice": scores["mean_dice"], "images_mask": sim.counts["mask"], "boxes": 0, "points": 0,
                     "labels": 0, "images_box": 0, "images_point": 0, "images_image": 0, "images_none": 0,
                     "cost_hours": 0.5, "run": run, "data": data,
                     **{f"dice_{c}": v for c, v in scores["per_class"].items()}})
    (sweep / "runs/mixed/acr4/split0/dsp").mkdir(parents=True)
    rows.append({**rows[1], "acr": 4, "run": "runs/mixed/acr4/split0/dsp", "data": "data/mixed-acr4-split0"})
    columns = [*RESULT_COLUMNS, *(f"dice_{c}" for c in sim.manifest.classes)]
    write_results(sweep, rows, columns=columns)
    return sweep


def test_qualitative_panel_on_real_runs(real_sweep: Path) -> None:
    console = _console()
    written = write_report(real_sweep, console=console)
    assert "qualitative.png" in written and "per_class_mixed.png" in written
    image = _png(written["qualitative.png"], min_side=500)  # 3 rows (image + truth, basic, dsp) × 2 ACRs
    text = console.export_text()
    assert "dsp at ACR 4 left out of qualitative.png" in text and "checkpoints/best.pt" in text
    assert text.count("left out of qualitative.png") == 1
    assert len(read_results(real_sweep)) == 3


@pytest.mark.parametrize("count", [3, 10, 11, 20, 27])
def test_method_colours_never_repeat(count: int) -> None:
    from dspseg.study.plots import method_colours

    methods = [f"m{i}" for i in range(count)]
    colours = method_colours(methods)
    assert list(colours) == methods
    assert len({tuple(round(c, 4) for c in colour) for colour in colours.values()}) == count


def test_report_of_some_methods_and_scenarios(hand: Path, tmp_path: Path) -> None:
    from study_common import study_cli

    app, runner = study_cli()
    r = runner.invoke(app, ["report", str(hand), "--out", str(tmp_path / "some"), "--methods", "dsp,basic",
                            "--scenarios", "mixed"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "some").glob("*.png")) == [
        "dice_vs_acr_mixed.png", "dice_vs_cost.png", "per_class_mixed.png"]
    table = (tmp_path / "some" / "table.md").read_text()
    assert table.index("| mixed | dsp |") < table.index("| mixed | basic |") and "| box |" not in table
    r = runner.invoke(app, ["report", str(hand), "--out", str(tmp_path / "none"), "--methods", "dsp,fixmatch"])
    assert r.exit_code == 2 and "no finished run of fixmatch" in r.output and "it has basic, dsp" in r.output
    assert not (tmp_path / "none").exists()
