"""How much annotation a sweep says can be saved, and by how much one method beats another.

The two questions the paper's evaluation answers (§5, Fig. 3), asked of a finished sweep:

* **Savings** — relative to full supervision: the reference is the U-Net trained on masks only at
  the sweep's smallest ACR (ACR 1 = every training image fully drawn): ``basic-matched`` when the
  sweep has it (``basic`` continued for as many steps as the fine-tuned methods, so the reference
  trained as long as they did), else ``basic``. For every
  (scenario, method, ACR) the ratio ``Dice / Dice_ref`` (mean Dice over splits), and the largest ACR
  up to which the method keeps at least ``fraction`` (default 0.9) of the reference at every ACR
  it ran: "dsp keeps ≥ 90 % of full supervision up to ACR 32" means 32 × fewer masks.
* **Paired differences** — method A against method B at one (scenario, ACR), split by split: both
  trained on the same annotations of a split, so ``Dice_A − Dice_B`` per split is the fair
  comparison; its mean ± sample std over the splits both finished, and on how many splits A won.

    ratios = savings(groups, fraction=0.9)          # groups: results.summarise(done rows)
    diffs = paired_differences(rows, "dsp", "fixmatch")

No torch, no matplotlib.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from dspseg.study.plan import BASIC, BASIC_MATCHED
from dspseg.study.results import done_rows, mean_std

REFERENCE_METHOD = BASIC.label  # the masks-only U-Net, N steps
MATCHED_REFERENCE = BASIC_MATCHED.label  # the same, continued for the fine-tuned methods' N more steps


def reference_method(groups: Iterable[dict[str, Any]]) -> str:
    """``basic-matched`` when the groups (or rows) have it, else ``basic``: the step-matched reference first."""
    return MATCHED_REFERENCE if any(g["method"] == MATCHED_REFERENCE for g in groups) else REFERENCE_METHOD


def reference_dice(groups: Sequence[dict[str, Any]], scenario: str,
                   method: str | None = None) -> tuple[float, float] | None:
    """(ACR, mean Dice) of ``method`` (default :func:`reference_method`) at its smallest ACR in ``scenario``;
    None if it has none there."""
    method = method or reference_method(groups)
    mine = [g for g in groups if g["scenario"] == scenario and g["method"] == method and g["mean_dice"] is not None]
    if not mine:
        return None
    first = min(mine, key=lambda g: g["acr"])
    return first["acr"], first["mean_dice"]


def savings(groups: Sequence[dict[str, Any]], fraction: float = 0.9,
            reference: str | None = None) -> list[dict[str, Any]]:
    """Dice ratios to the reference and the ACR each method keeps ``fraction`` of it up to.

    ``groups`` are :func:`dspseg.study.results.summarise` entries. Returns one dict per (scenario,
    method) with a reference (default :func:`reference_method`), in the groups' order: ``scenario``,
    ``method``, ``reference`` (its method), ``reference_acr``,
    ``reference_dice``, ``ratios`` ({ACR: Dice / reference Dice}) and ``keeps_up_to`` (the largest
    ACR such that the ratio is ≥ ``fraction`` at it and at every smaller ACR the method ran; None
    when it already falls short at its smallest ACR). Scenarios without the reference are skipped.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    reference = reference or reference_method(groups)
    out = []
    keys = list(dict.fromkeys((g["scenario"], g["method"]) for g in groups))
    for scenario, method in keys:
        ref = reference_dice(groups, scenario, reference)
        if ref is None or ref[1] <= 0:
            continue
        line = sorted((g for g in groups if (g["scenario"], g["method"]) == (scenario, method)
                       and g["mean_dice"] is not None), key=lambda g: g["acr"])
        ratios = {g["acr"]: g["mean_dice"] / ref[1] for g in line}
        keeps = None
        for acr, ratio in ratios.items():
            if ratio < fraction:
                break
            keeps = acr
        out.append({"scenario": scenario, "method": method, "reference": reference,
                    "reference_acr": ref[0], "reference_dice": ref[1],
                    "ratios": ratios, "keeps_up_to": keeps})
    return out


def paired_differences(rows: Iterable[dict[str, Any]], method: str, baseline: str) -> list[dict[str, Any]]:
    """``Dice(method) − Dice(baseline)`` per (scenario, ACR), over the splits both finished.

    ``rows`` are results.csv rows (failed ones are ignored). Returns dicts sorted by scenario (order
    of first appearance) and ACR: ``scenario``, ``acr``, ``method``, ``baseline``, ``n`` (paired
    splits), ``splits``, ``mean`` and ``std`` of the difference (sample std, 0 for one split),
    ``wins`` (splits where ``method`` scored higher) and ``differences`` ({split: difference}).
    """
    done = [r for r in done_rows(rows) if r["mean_dice"] is not None]
    by_key = {(r["method"], r["scenario"], r["acr"], r["split"]): r["mean_dice"] for r in done}
    scenarios = list(dict.fromkeys(r["scenario"] for r in done))
    out = []
    for scenario in scenarios:
        acrs = sorted({r["acr"] for r in done if r["scenario"] == scenario and r["method"] == method})
        for acr in acrs:
            diffs = {split: by_key[(method, scenario, acr, split)] - by_key[(baseline, scenario, acr, split)]
                     for (m, s, a, split) in by_key
                     if (m, s, a) == (method, scenario, acr) and (baseline, scenario, acr, split) in by_key}
            if not diffs:
                continue
            diffs = dict(sorted(diffs.items()))
            mean, std = mean_std(diffs.values())
            out.append({"scenario": scenario, "acr": acr, "method": method, "baseline": baseline,
                        "n": len(diffs), "splits": list(diffs), "mean": mean, "std": std,
                        "wins": sum(1 for d in diffs.values() if d > 0), "differences": diffs})
    return out


def default_comparisons(methods: Sequence[str], focus: str = "dsp") -> list[tuple[str, str]]:
    """(focus, other) for every other method of the sweep when ``focus`` ran; otherwise none."""
    return [(focus, m) for m in methods if m != focus] if focus in methods else []


def _acr(a: float) -> str:
    return f"{a:g}"


def _what(reference_acr: float) -> str:
    """"full supervision" when the reference ran at ACR 1 (every image masked), else "the reference"."""
    return "full supervision" if reference_acr == 1 else "the reference"


def savings_markdown(found: Sequence[dict[str, Any]], fraction: float) -> str:
    """Markdown: per scenario, every method's Dice ratio to full supervision at every ACR."""
    if not found:
        return (f"No savings table: the sweep has no `{REFERENCE_METHOD}` run to use as full supervision "
                "(add it with `dspseg sweep --methods basic,...`).\n")
    acrs = sorted({a for f in found for a in f["ratios"]})
    ref = found[0]
    lines = [f"Dice relative to {_what(ref['reference_acr'])} (`{ref['reference']}` at ACR {_acr(ref['reference_acr'])}, "
             f"per scenario); **bold** where a method keeps ≥ {fraction:.0%} of it. "
             f"'keeps up to' = the largest ACR with ≥ {fraction:.0%} at it and at every smaller ACR.", "",
             "| scenario | method | reference Dice | " + " | ".join(f"ACR {_acr(a)}" for a in acrs)
             + " | keeps up to |", "|---|---|---:|" + "---:|" * (len(acrs) + 1)]
    for f in found:
        cells = []
        for a in acrs:
            r = f["ratios"].get(a)
            cells.append("—" if r is None else (f"**{r:.2f}×**" if r >= fraction else f"{r:.2f}×"))
        keeps = "—" if f["keeps_up_to"] is None else f"ACR {_acr(f['keeps_up_to'])}"
        lines.append(f"| {f['scenario']} | {f['method']} | {f['reference_dice']:.3f} | " + " | ".join(cells)
                     + f" | {keeps} |")
    return "\n".join(lines) + "\n"


def differences_markdown(diffs: Sequence[dict[str, Any]]) -> str:
    """Markdown: paired Dice differences in points (× 100), mean ± std (wins/splits), per comparison."""
    if not diffs:
        return "No paired comparison: no two methods finished on the same splits.\n"
    acrs = sorted({d["acr"] for d in diffs})
    lines = ["Paired test Dice difference, in Dice points (× 100): mean ± std over the splits both methods "
             "finished, (wins / splits).", "",
             "| scenario | comparison | " + " | ".join(f"ACR {_acr(a)}" for a in acrs) + " |",
             "|---|---|" + "---:|" * len(acrs)]
    keys = list(dict.fromkeys((d["scenario"], d["method"], d["baseline"]) for d in diffs))
    by_key = {(d["scenario"], d["method"], d["baseline"], d["acr"]): d for d in diffs}
    for scenario, method, baseline in keys:
        cells = []
        for a in acrs:
            d = by_key.get((scenario, method, baseline, a))
            cells.append("—" if d is None else
                         f"{100 * d['mean']:+.1f} ± {100 * d['std']:.1f} ({d['wins']}/{d['n']})")
        lines.append(f"| {scenario} | {method} − {baseline} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def headline(found: Sequence[dict[str, Any]], fraction: float) -> list[str]:
    """One sentence per scenario: how far each method keeps ``fraction`` of full supervision."""
    lines = []
    for scenario in dict.fromkeys(f["scenario"] for f in found):
        mine = [f for f in found if f["scenario"] == scenario]
        parts = [f"{f['method']} up to ACR {_acr(f['keeps_up_to'])}" if f["keeps_up_to"] is not None
                 else f"{f['method']} at no ACR" for f in mine]
        ref = mine[0]
        lines.append(f"{scenario}: ≥ {fraction:.0%} of {_what(ref['reference_acr'])} ({ref['reference']} at ACR {_acr(ref['reference_acr'])}, "
                     f"Dice {ref['reference_dice']:.3f}): " + ", ".join(parts))
    return lines
