"""The annotation loop's picture and report, from its ``results.csv``.

* ``loop.png`` — test mean Dice against the hours annotated in the loop, one line per strategy
  through its rounds (mean over splits at the mean hours spent), a band from the lowest to the
  highest split;
* ``report.md`` — the settings, the Dice of every strategy per split and round with the hours
  actually spent (and the strategy's estimate of them), the requests answered by kind, the paired
  per-split differences of ``advisor`` against every other strategy in every round, the rounds in
  which a strategy had nothing answered (nothing left to ask for) and, when the
  loop ran the control ``none`` (the same retraining with no annotation), of every strategy against
  it: what a round's annotation added beyond its training steps.

matplotlib is imported inside :func:`loop_plot`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

from dspseg.study.costs import costs_text
from dspseg.study.loop_plan import LoopSpec

FOCUS = "advisor"
CONTROL = "none"  # no annotation: the same steps of retraining
REQUESTS = ("requests_mask", "requests_box", "requests_point", "requests_image")  # answered, by kind


def read_rows(root: str | Path) -> list[dict[str, Any]]:
    """The done rows of ``DIR/results.csv``, numbers typed."""
    with open(Path(root) / "results.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        if r["status"] != "done":
            continue
        typed: dict[str, Any] = dict(r)
        for k, v in r.items():
            if k in ("split", "round", "steps", "total_steps", "requests_skipped") or k.startswith("requests_"):
                typed[k] = int(v) if v != "" else None
            elif k in ("hours_spent", "hours_estimated", "hours_round", "mean_dice", "seconds") or k.startswith("dice_"):
                typed[k] = float(v) if v != "" else None
        out.append(typed)
    return out


def curves(rows: Sequence[dict[str, Any]], strategies: Sequence[str]) -> dict[str, list[dict[str, float]]]:
    """Per strategy, per round with every split's row: mean hours spent, mean, lowest and highest Dice."""
    out: dict[str, list[dict[str, float]]] = {}
    for s in strategies:
        mine = [r for r in rows if r["strategy"] == s and r["mean_dice"] is not None]
        splits = {r["split"] for r in mine}
        points = []
        for rnd in sorted({r["round"] for r in mine}):
            at = [r for r in mine if r["round"] == rnd]
            if {r["split"] for r in at} != splits:
                continue  # a round not finished on every split yet
            dice = [r["mean_dice"] for r in at]
            points.append({"round": rnd, "hours": sum(r["hours_spent"] for r in at) / len(at),
                           "mean": sum(dice) / len(dice), "low": min(dice), "high": max(dice), "n": len(dice)})
        out[s] = points
    return out


def control_hours(lines: dict[str, list[dict[str, float]]]) -> dict[int, float]:
    """Round → where the control's point of that round is drawn: it spends no hours, so at the most
    hours any other strategy had spent by the same round (beside the points it is compared with)."""
    out: dict[int, float] = {}
    for s, points in lines.items():
        for p in points:
            if s != CONTROL:
                out[p["round"]] = max(out.get(p["round"], 0.0), p["hours"])
    return out


def loop_plot(rows: Sequence[dict[str, Any]], strategies: Sequence[str], path: str | Path, title: str) -> Path:
    """Dice against hours annotated, one line per strategy, band = range over splits; written to ``path``."""
    from dspseg.study.plots import method_colours, new_figure, save_figure

    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    colours = method_colours(list(strategies))
    lines = curves(rows, strategies)
    round_hours = control_hours(lines)
    for s, points in lines.items():
        if not points:
            continue
        x = [p["hours"] for p in points]
        if s == CONTROL:
            x = [round_hours.get(p["round"], 0.0) for p in points]
            ax.plot(x, [p["mean"] for p in points], marker="s", linestyle="--", color="0.35",
                    label=f"{s}: no annotation, same retraining ({points[-1]['n']} splits)")
            continue
        ax.plot(x, [p["mean"] for p in points], marker="o", color=colours[s], label=f"{s} ({points[-1]['n']} splits)")
        ax.fill_between(x, [p["low"] for p in points], [p["high"] for p in points], color=colours[s], alpha=0.15)
    ax.set_xlabel("hours annotated in the loop (actual cost, mean over splits)")
    ax.set_ylabel("test mean Dice (mean; band: range over splits)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def paired(rows: Sequence[dict[str, Any]], method: str, baseline: str, rnd: int) -> list[tuple[int, float]]:
    """(split, Dice points of ``method`` − ``baseline``) at round ``rnd``, splits where both are done."""
    a = {r["split"]: r["mean_dice"] for r in rows if r["strategy"] == method and r["round"] == rnd}
    b = {r["split"]: r["mean_dice"] for r in rows if r["strategy"] == baseline and r["round"] == rnd}
    return [(k, 100 * (a[k] - b[k])) for k in sorted(set(a) & set(b)) if a[k] is not None and b[k] is not None]


def report_markdown(spec: LoopSpec, rows: Sequence[dict[str, Any]], picture: str = "loop.png") -> str:
    """The loop's report (see the module docstring)."""
    start = "the same steps" if spec.start_steps is None else f"{spec.start_steps} steps"
    lines = [f"# Annotation loop: {', '.join(spec.strategies)}", "",
             f"Data `{spec.data}`; start: the mixed ACR protocol at ACR {spec.start_acr:g} per split; {spec.rounds} "
             f"round(s) of {spec.hours_per_round:g} h per strategy; {spec.splits} split(s); method `{spec.method}`, "
             f"{spec.train.get('steps')} steps per round from the previous round's weights (the start model: {start} "
             f"from random weights); costs: {costs_text(spec.costs)}.", "", f"![Dice against hours]({picture})", ""]
    rounds = sorted({r["round"] for r in rows})
    for k in sorted({r["split"] for r in rows}):
        lines += [f"## Split {k}", "", "| strategy | " + " | ".join(f"round {r}" for r in rounds) + " |",
                  "|---|" + "---:|" * len(rounds)]
        for s in spec.strategies:
            cells = []
            for rnd in rounds:
                r = next((x for x in rows if x["strategy"] == s and x["split"] == k and x["round"] == rnd), None)
                cells.append("" if r is None else f"{_f(r['mean_dice'])} ({_f(r['hours_spent'], 3)} h)")
            lines.append(f"| `{s}` | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Cells: test mean Dice (hours annotated in the loop so far, actual cost).", "",
              "## Requests answered, all splits and rounds", "",
              "| strategy | masks | boxes | points | image labels | skipped | hours spent, mean per split | "
              "strategy's estimate of them |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    last = max(rounds) if rounds else 0
    for s in spec.strategies:
        mine = [r for r in rows if r["strategy"] == s and r["round"] > 0]
        total = {c: sum(r[c] or 0 for r in mine) for c in (*REQUESTS, "requests_skipped")}
        ends = [r for r in rows if r["strategy"] == s and r["round"] == last]
        spent = sum(r["hours_spent"] for r in ends) / max(1, len(ends))
        est = sum(r["hours_estimated"] for r in ends) / max(1, len(ends))
        lines.append(f"| `{s}` | {total['requests_mask']} | {total['requests_box']} | {total['requests_point']} | "
                     f"{total['requests_image']} | {total['requests_skipped']} | {spent:.3f} | {est:.3f} |")
    lines += _nothing_answered(rows, spec.strategies)
    later = [r for r in rounds if r > 0]
    if FOCUS in spec.strategies and later:
        lines += ["", f"## `{FOCUS}` against the others, paired per split (Dice points)", "",
                  *_paired_table(rows, later, "baseline", [(s, FOCUS, s) for s in spec.strategies if s != FOCUS]),
                  "", "Cells: splits in order, then their mean and the splits where the advisor is above."]
    if CONTROL in spec.strategies and later:
        lines += ["", f"## What the annotation added: every strategy against `{CONTROL}`, paired per split (Dice points)",
                  "", f"`{CONTROL}` retrains the same steps from the same weights with no annotation, so a strategy's "
                  "difference from it is what its hours added beyond the training steps (one run each: compare it "
                  "with the spread of training seeds before reading a difference as real).", "",
                  *_paired_table(rows, later, "strategy", [(s, s, CONTROL) for s in spec.strategies if s != CONTROL]),
                  "", f"Cells: splits in order, then their mean and the splits where the strategy is above `{CONTROL}`."]
    return "\n".join(lines) + "\n"


def _nothing_answered(rows: Sequence[dict[str, Any]], strategies: Sequence[str]) -> list[str]:
    """Report lines naming the rounds in which a strategy (the control aside) had no request answered:
    nothing it asks for was left within the round's hours — on a small dataset, every training image
    already holds what it would ask — so the round only retrained."""
    idle = {s: sorted((r["split"], r["round"]) for r in rows if r["strategy"] == s and r["round"] > 0
                      and not any(r[c] for c in REQUESTS))
            for s in strategies if s != CONTROL}
    idle = {s: v for s, v in idle.items() if v}
    if not idle:
        return []
    named = "; ".join(f"`{s}` " + ", ".join(f"split {k} round {r}" for k, r in v) for s, v in idle.items())
    return ["", f"Rounds with nothing answered: {named}. Nothing the strategy asks for was left within the round's "
            "hours (on a small dataset: every training image already annotated as it would ask), so these rounds "
            "only retrained; strategies that have masked every training image train on the same annotations "
            "from then on."]


def _paired_table(rows: Sequence[dict[str, Any]], rounds: Sequence[int], header: str,
                  pairs: Sequence[tuple[str, str, str]]) -> list[str]:
    """A markdown table, one row per ``(name, method, baseline)``: per round the per-split differences
    ``method − baseline`` (Dice points), their mean and the splits ``method`` wins."""
    lines = [f"| {header} | " + " | ".join(f"round {r}" for r in rounds) + " |", "|---|" + "---:|" * len(rounds)]
    for name, method, baseline in pairs:
        cells = []
        for rnd in rounds:
            values = [v for _, v in paired(rows, method, baseline, rnd)]
            cells.append(" / ".join(f"{v:+.1f}" for v in values) + f" = {sum(values) / len(values):+.1f} "
                         f"({sum(v > 0 for v in values)}/{len(values)} wins)" if values else "")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines


def write_loop_report(spec: LoopSpec, root: str | Path) -> tuple[Path, Path]:
    """Write ``DIR/loop.png`` and ``DIR/report.md`` from ``DIR/results.csv``."""
    from dspseg.fsutil import write_text_atomic

    root = Path(root)
    rows = read_rows(root)
    title = (f"{Path(spec.data).name}: mixed start at ACR {spec.start_acr:g}, {spec.hours_per_round:g} h per round")
    png = loop_plot(rows, spec.strategies, root / "loop.png", title)
    md = write_text_atomic(root / "report.md", report_markdown(spec, rows))
    return png, md
