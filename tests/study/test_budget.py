"""dspseg budget: the best option within a budget on the hand-made sweep, custom unit costs, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dspseg.study.budget import NothingFits, answer, best_for_budget, sweep_costs, with_costs
from dspseg.study.costs import AnnotationCosts
from dspseg.study.results import read_results
from study_common import hand_rows, write_results, study_cli

app, runner = study_cli()


def _best(rows, hours, **kw):
    return [(o["method"], o["scenario"], o["acr"]) for o in best_for_budget(rows, hours, **kw)]


def test_winner_for_a_few_budgets(hand: Path) -> None:
    rows = read_results(hand)
    assert _best(rows, 0.5) == [("dsp", "mixed", 32.0), ("basic", "mixed", 32.0), ("basic", "box", 32.0)]
    assert _best(rows, 1.0)[0] == ("dsp", "mixed", 8.0)  # 0.975 h, Dice 0.71
    assert _best(rows, 0.97)[0] == ("dsp", "mixed", 32.0)  # dsp at ACR 8 needs 0.975 h
    assert _best(rows, 0.3) == [("basic", "mixed", 32.0), ("basic", "box", 32.0)]  # 0.19975 h
    assert best_for_budget(rows, 10.0)[0]["mean_dice"] == pytest.approx(0.84)  # dsp on box at ACR 1
    assert _best(rows, 10.0, top=2) == [("dsp", "box", 1.0), ("basic", "mixed", 1.0)]
    best = best_for_budget(rows, 1.0)[0]
    assert best["rank"] == 1 and best["n"] == 2 and best["cost_hours"] == pytest.approx(0.975167, abs=1e-6)
    assert best["boxes"] == 63.0 and best["images_mask"] == 12.0 and best["labels"] == 42.0
    assert answer([best], 1.0) == ("With 1 h, the sweep's best is dsp on mixed at ACR 8: Dice 0.71 ± 0.01 over 2 "
                                   "splits for 0.975 h (12 masks, 63 boxes, 63 points, 42 image labels, "
                                   "21 unlabelled images).")


def test_nothing_fits(hand: Path) -> None:
    with pytest.raises(NothingFits, match=r"nothing in the sweep fits in 0.1 h: the cheapest option, basic on "
                                          r"mixed at ACR 32, needs 0.2 h; give at least"):
        best_for_budget(read_results(hand), 0.1)


def test_custom_costs_change_the_answer(hand: Path) -> None:
    rows = read_results(hand)
    assert _best(rows, 0.9)[0] == ("dsp", "mixed", 32.0)  # dsp at ACR 8 needs 0.975 h
    cheap_boxes = AnnotationCosts.from_items(["box=1"])
    best = best_for_budget(rows, 0.9, costs=cheap_boxes)[0]
    assert (best["method"], best["scenario"], best["acr"]) == ("dsp", "mixed", 8.0)
    assert best["cost_hours"] == pytest.approx((12 * 239.7 + 63 * 1 + 63 * 2.4 + 42 * 1) / 3600)
    slow_masks = AnnotationCosts.from_items(["mask=3600"])
    assert [r["cost_hours"] for r in with_costs(rows, slow_masks)][:3] == pytest.approx([96.0, 96.0, 12.0])
    assert _best(rows, 3.1, costs=slow_masks) == [("basic", "mixed", 32.0), ("basic", "box", 32.0)]
    with pytest.raises(NothingFits, match=r"basic on mixed at ACR 32, needs 3 h"):
        best_for_budget(rows, 2.9, costs=slow_masks)


def test_unit_costs_of_the_sweep_are_the_base(hand: Path, tmp_path: Path) -> None:
    assert sweep_costs(hand) == {}
    write_results(tmp_path, hand_rows())
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({"data": "x", "costs": {"mask": 3600.0, "box": 7.0,
                                                                                "point": 2.4, "label": 1.0}}))
    assert sweep_costs(tmp_path)["mask"] == 3600.0
    r = runner.invoke(app, ["budget", str(tmp_path), "--hours", "3.1", "--cost", "box=1"])
    assert r.exit_code == 0, r.output
    # mask 3600 s from study.yaml, box 1 s from --cost: dsp on mixed at ACR 32 = (3·3600 + 70 + 168 + 46) s
    assert "the sweep's best is dsp on mixed at ACR 32: Dice 0.63 ± 0.04 over 2 splits for 3.08 h" in r.output
    assert "hours recomputed with: mask 3600 s, box 1 s, point 2.4 s, label 1 s" in r.output


def test_budget_cli(hand: Path) -> None:
    r = runner.invoke(app, ["budget", str(hand), "--hours", "2", "--top", "2"])
    assert r.exit_code == 0, r.output
    assert "With 2 h, the sweep's best is dsp on mixed at ACR 8: Dice 0.71 ± 0.01 over 2 splits for 0.975 h" in r.output
    assert "best options within 2 h" in r.output and "0.710 ± 0.014" in r.output and "0.670 ± 0.014" in r.output
    assert "0.620" not in r.output  # --top 2
    assert "1 failed run(s)" in r.output
    r = runner.invoke(app, ["budget", str(hand), "--hours", "0.1"])
    assert r.exit_code == 2 and "error: nothing in the sweep fits in 0.1 h" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["budget", str(hand), "--hours", "1", "--cost", "lunch=5"])
    assert r.exit_code == 2 and "--cost 'lunch=5': write KIND=SECONDS" in r.output
    r = runner.invoke(app, ["budget", str(hand / "missing"), "--hours", "1"])
    assert r.exit_code == 2 and "run `dspseg sweep" in r.output and len(r.output.strip().splitlines()) <= 2
    r = runner.invoke(app, ["budget", "--help"])
    assert r.exit_code == 0 and "annotation budget" in r.output and "--cost" in r.output


def test_report_cli(hand: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["report", str(hand), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rep" / "table.md").is_file() and (tmp_path / "rep" / "dice_vs_cost.png").is_file()
    assert "24 done, 1 failed" in r.output
    rows = hand_rows()
    rows[2]["acr"] = "eight"
    write_results(tmp_path / "bad", rows)
    r = runner.invoke(app, ["report", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "line 4, column 'acr': 'eight' is not a number" in r.output
    assert "Traceback" not in r.output
