"""The loop's report and picture from hand-made results: the paired tables (advisor against the others,
every strategy against the no-annotation control) and where the control is drawn."""

from __future__ import annotations

from dspseg.study.loop_plan import LoopSpec
from dspseg.study.loop_report import control_hours, curves, loop_plot, report_markdown

DICE = {  # strategy -> split -> [round 0, round 1, round 2]
    "advisor": {0: [0.60, 0.80, 0.85], 1: [0.50, 0.70, 0.72]},
    "random": {0: [0.60, 0.78, 0.80], 1: [0.50, 0.74, 0.70]},
    "none": {0: [0.60, 0.78, 0.83], 1: [0.50, 0.75, 0.75]},
}
HOURS = {"advisor": [0.0, 0.24, 0.49], "random": [0.0, 0.25, 0.50], "none": [0.0, 0.0, 0.0]}


def rows() -> list[dict]:
    return [{"strategy": s, "split": k, "round": r, "mean_dice": d, "hours_spent": HOURS[s][r], "hours_estimated":
             HOURS[s][r], "requests_mask": 0, "requests_box": 0, "requests_point": 0, "requests_image": 0,
             "requests_skipped": 0}
            for s, splits in DICE.items() for k, values in splits.items() for r, d in enumerate(values)]


def spec(strategies: list[str]) -> LoopSpec:
    return LoopSpec(data="syn", strategies=strategies, rounds=2, splits=2, train={"steps": 300})


def test_every_strategy_is_paired_with_the_control_per_split():
    md = report_markdown(spec(["advisor", "random", "none"]), rows())
    control = md.split("What the annotation added")[1]
    # advisor − none: split 0 +2.0 / +2.0, split 1 −5.0 / −3.0
    assert "| `advisor` | +2.0 / -5.0 = -1.5 (1/2 wins) | +2.0 / -3.0 = -0.5 (1/2 wins) |" in control
    assert "| `random` | +0.0 / -1.0 = -0.5 (0/2 wins) | -3.0 / -5.0 = -4.0 (0/2 wins) |" in control
    assert "| `none` |" not in control
    advisor = md.split("`advisor` against the others")[1].split("What the annotation added")[0]
    assert "| `random` | +2.0 / -4.0 = -1.0 (1/2 wins) | +5.0 / +2.0 = +3.5 (2/2 wins) |" in advisor
    assert "| `none` | +2.0 / -5.0 = -1.5 (1/2 wins) |" in advisor


def test_without_the_control_there_is_no_control_table():
    md = report_markdown(spec(["advisor", "random"]), [r for r in rows() if r["strategy"] != "none"])
    assert "What the annotation added" not in md and "`advisor` against the others" in md


def test_the_control_is_drawn_at_the_hours_the_others_reached(tmp_path):
    lines = curves(rows(), ["advisor", "random", "none"])
    assert control_hours(lines) == {0: 0.0, 1: 0.25, 2: 0.50}
    png = loop_plot(rows(), ["advisor", "random", "none"], tmp_path / "loop.png", "hand-made")
    assert png.stat().st_size > 10_000


def test_rounds_with_nothing_answered_are_named():
    made = rows()
    for r in made:
        if r["strategy"] == "random" and r["round"] > 0:
            r["requests_mask"] = 1
        if r["strategy"] == "advisor" and (r["split"], r["round"]) == (0, 1):
            r["requests_point"] = 12
    md = report_markdown(spec(["advisor", "random", "none"]), made)
    assert "Rounds with nothing answered: `advisor` split 0 round 2, split 1 round 1, split 1 round 2. " in md
    assert "`random` split" not in md and "`none` split" not in md  # the control asks for nothing by design
    for r in made:
        r["requests_mask"] = r["requests_mask"] or (r["round"] > 0 and r["strategy"] != "none")
    assert "nothing answered" not in report_markdown(spec(["advisor", "random", "none"]), made)
