"""Savings relative to full supervision and paired per-split differences, on the hand-made sweep
(numbers in tests/study/study_common.py), through the report and its CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from dspseg.study.results import read_results, summarise
from dspseg.study.savings import (default_comparisons, differences_markdown, headline, paired_differences,
                                  savings, savings_markdown)
from study_common import hand_rows, study_cli

app, runner = study_cli()


def _find(found, scenario, method):
    [f] = [f for f in found if (f["scenario"], f["method"]) == (scenario, method)]
    return f


def test_savings_by_hand(hand: Path) -> None:
    groups = summarise(read_results(hand))
    found = savings(groups)  # reference: basic at ACR 1 = (0.80 + 0.84) / 2 = 0.82 in both scenarios
    dsp = _find(found, "mixed", "dsp")
    assert dsp["reference_acr"] == 1 and dsp["reference_dice"] == pytest.approx(0.82)
    assert dsp["ratios"] == pytest.approx({1: 0.81 / 0.82, 8: 0.71 / 0.82, 32: 0.63 / 0.82})
    assert dsp["keeps_up_to"] == 1  # 0.866 at ACR 8 < 0.9
    assert _find(found, "mixed", "basic")["ratios"][8] == pytest.approx(0.62 / 0.82)
    assert _find(savings(groups, fraction=0.85), "mixed", "dsp")["keeps_up_to"] == 8  # 0.768 at ACR 32
    assert _find(savings(groups, fraction=0.5), "box", "dsp")["keeps_up_to"] == 32
    assert _find(savings(groups, fraction=0.99), "mixed", "dsp")["keeps_up_to"] is None  # 0.988 at ACR 1
    assert savings([g for g in groups if g["method"] != "basic"]) == []  # no full-supervision reference
    with pytest.raises(ValueError, match="fraction"):
        savings(groups, fraction=0)
    text = savings_markdown(found, 0.9)
    assert "| mixed | dsp | 0.820 | **0.99×** | 0.87× | 0.77× | ACR 1 |" in text
    assert "no `basic` run" in savings_markdown([], 0.9)
    [line] = [x for x in headline(found, 0.9) if x.startswith("mixed")]
    assert "Dice 0.820" in line and "dsp up to ACR 1" in line and "basic up to ACR 1" in line


def test_paired_differences_by_hand(hand: Path) -> None:
    diffs = paired_differences(read_results(hand), "dsp", "basic")  # the failed dsp split 2 is ignored
    mixed = {d["acr"]: d for d in diffs if d["scenario"] == "mixed"}
    assert set(mixed) == {1, 8, 32}
    assert mixed[8]["n"] == 2 and mixed[8]["splits"] == [0, 1] and mixed[8]["wins"] == 2
    assert mixed[8]["mean"] == pytest.approx(0.09) and mixed[8]["std"] == pytest.approx(0.02 ** 0.5 / 10)
    assert mixed[1]["mean"] == pytest.approx(-0.01) and mixed[1]["wins"] == 0
    assert mixed[32]["differences"] == pytest.approx({0: 0.20, 1: 0.16})
    box = {d["acr"]: d for d in diffs if d["scenario"] == "box"}
    assert box[32]["differences"] == pytest.approx({0: 0.04, 1: -0.06}) and box[32]["wins"] == 1
    one = [r for r in hand_rows(failed=False) if not (r["method"] == "basic" and r["split"] == 1)]
    [d8] = [d for d in paired_differences(one, "dsp", "basic") if (d["scenario"], d["acr"]) == ("mixed", 8)]
    assert d8["n"] == 1 and d8["std"] == 0.0 and d8["mean"] == pytest.approx(0.10)  # only split 0 pairs
    assert paired_differences(read_results(hand), "dsp", "nobody") == []
    text = differences_markdown(diffs)
    assert "| mixed | dsp − basic | -1.0 ± 0.0 (0/2) | +9.0 ± 1.4 (2/2) | +18.0 ± 2.8 (2/2) |" in text
    assert "No paired comparison" in differences_markdown([])
    assert default_comparisons(["basic", "fixmatch", "dsp"]) == [("dsp", "basic"), ("dsp", "fixmatch")]
    assert default_comparisons(["basic", "fixmatch"]) == []


def test_report_writes_savings_and_cli_options(hand: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["report", str(hand), "--out", str(tmp_path / "rep"), "--fraction", "0.85",
                            "--compare", "basic,dsp"])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "rep" / "savings.md").read_text()
    assert "keeps ≥ 85% of it" in text and "| mixed | dsp | 0.820 | **0.99×** | **0.87×** | 0.77× | ACR 8 |" in text
    assert "| mixed | basic − dsp | +1.0 ± 0.0 (2/2) | -9.0 ± 1.4 (0/2) |" in text and "dsp − basic" not in text
    assert "mixed: ≥ 85% of full supervision" in r.output and "dsp up to ACR 8" in r.output
    r = runner.invoke(app, ["report", str(hand), "--out", str(tmp_path / "rep2")])
    assert r.exit_code == 0 and "| box | dsp − basic |" in (tmp_path / "rep2" / "savings.md").read_text()
    for bad, message in (("dsp", "write METHOD,BASELINE"), ("dsp,fixmatch", "no finished run of fixmatch")):
        r = runner.invoke(app, ["report", str(hand), "--out", str(tmp_path / "rep3"), "--compare", bad])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(app, ["report", str(hand), "--fraction", "1.5"])
    assert r.exit_code == 2
