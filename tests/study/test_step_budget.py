"""Step-matched budgets: the `basic-matched` reference in savings, report and budget (hand-made numbers).

The hand-made sweep of tests/study/study_common.py gets a `basic-matched` run per (ACR, split): `basic`
continued for the 100 steps `dsp` trains on top of it (200 steps from random weights, like `dsp`).

    basic-matched   ACR 1: 0.86 0.90   ACR 8: 0.66 0.70   ACR 32: 0.50 0.54    masks only
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rich.console import Console

from dspseg.study.plan import StudySpec
from dspseg.study.report import markdown_table, steps_line, write_report
from dspseg.study.results import read_results, summarise
from dspseg.study.savings import reference_method, savings
from study_common import counts, hand_rows, study_cli, write_results

MATCHED = {1: (0.86, 0.90), 8: (0.66, 0.70), 32: (0.50, 0.54)}


def matched_rows() -> list[dict[str, object]]:
    rows = [{**r, "total_steps": 200 if r["method"] != "basic" else 100} for r in hand_rows(failed=False)]
    for scenario in ("mixed", "box"):
        for acr, values in MATCHED.items():
            for split, dice in enumerate(values):
                base = next(r for r in rows if (r["method"], r["scenario"], r["acr"], r["split"])
                            == ("basic", scenario, acr, split))
                rows.append({**base, "method": "basic-matched", "mean_dice": dice, "total_steps": 200,
                             **counts("basic", scenario, acr, split),
                             "run": f"runs/shared/acr{acr}/split{split}/basic-matched",
                             "dice_background": round(dice + 0.1, 6), "dice_mito": round(dice - 0.1, 6)})
    return rows


@pytest.fixture()
def matched(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    write_results(root, matched_rows())
    spec = StudySpec(data="d", methods=["basic", "dsp"], scenarios=["mixed", "box"], acrs=[1, 8, 32], splits=2,
                     train={"steps": 100})
    (root / "study.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return root


def test_savings_use_the_step_matched_reference(matched: Path) -> None:
    groups = summarise(read_results(matched))
    assert reference_method(groups) == "basic-matched"
    found = {(f["scenario"], f["method"]): f for f in savings(groups, 0.9)}
    dsp = found[("mixed", "dsp")]
    assert dsp["reference"] == "basic-matched" and dsp["reference_dice"] == pytest.approx(0.88)
    assert dsp["ratios"][1.0] == pytest.approx(0.81 / 0.88) and dsp["ratios"][8.0] == pytest.approx(0.71 / 0.88)
    assert dsp["keeps_up_to"] == 1.0  # 0.920× at ACR 1, 0.807× at ACR 8
    # against the undertrained basic (0.82 at ACR 1) the same Dice looks like a larger share
    short = {(f["scenario"], f["method"]): f for f in savings(groups, 0.9, reference="basic")}[("mixed", "dsp")]
    assert short["reference"] == "basic" and short["ratios"][8.0] == pytest.approx(0.71 / 0.82)


def test_report_says_how_steps_were_budgeted(matched: Path) -> None:
    console = Console(record=True, width=200)
    written = write_report(matched, console=console)
    table = written["table.md"].read_text()
    assert "Step-matched budgets" in table and "`basic-matched` is the reference" in table
    assert "Steps from random weights: basic 100, dsp 200, basic-matched 200." in table
    assert "| mixed | basic-matched | **0.880 ± 0.028** · 6.39 h |" in table
    assert "Dice relative to full supervision (`basic-matched` at ACR 1" in written["savings.md"].read_text()
    text = console.export_text()
    assert "Step-matched budgets" in text and "(basic-matched at ACR 1, Dice 0.880)" in text
    assert steps_line([{"method": "basic", "total_steps": None}]) is None  # a results.csv from before the column
    (matched / "study.yaml").write_text("methods: [")  # unreadable: the report still draws, and says why
    table = write_report(matched, console=Console(quiet=True))["table.md"].read_text()
    assert "(How the steps were budgeted is not stated:" in table and "study.yaml cannot be read" in table
    # without ACR 1 the smallest ACR's reference is no "full supervision", and the report says so
    no_full = [g for g in summarise(read_results(matched)) if g["acr"] > 1]
    from dspseg.study.savings import headline
    assert headline(savings(no_full, 0.9), 0.9)[0].startswith("mixed: ≥ 90% of the reference (basic-matched at ACR 8")


def test_added_budgets_are_reported_as_such(matched: Path) -> None:
    spec = yaml.safe_load((matched / "study.yaml").read_text())
    spec["step_budget"] = "added"
    (matched / "study.yaml").write_text(yaml.safe_dump(spec))
    groups = summarise(read_results(matched))
    assert "Added budgets (the paper's protocol)" in markdown_table(groups, ["Added budgets (the paper's protocol)"])
    written = write_report(matched, console=Console(quiet=True))
    assert "Added budgets (the paper's protocol): the fine-tuned methods train 100 steps on top of the 100-step " \
           "`basic`, 200 from random weights, while the reference `basic` has trained 100." in written["table.md"].read_text()


def test_budget_names_the_reference_and_the_gain_over_it(matched: Path) -> None:
    app, runner = study_cli()
    result = runner.invoke(app, ["budget", str(matched), "--hours", "1"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "the sweep's best is dsp on mixed at ACR 8" in text
    # basic-matched at ACR 8 (0.799 h, Dice 0.68) is the best masks-only option within 1 h
    assert ("The reference, the step-matched masks-only U-Net (basic-matched), reaches Dice 0.68 within that budget "
            "(ACR 8, 0.799 h): the best option is +3.0 Dice points above it.") in text
    tight = runner.invoke(app, ["budget", str(matched), "--hours", "0.1"])
    assert tight.exit_code != 0 and "nothing in the sweep fits in 0.1 h" in " ".join(tight.output.split())
