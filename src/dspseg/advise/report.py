"""The advisor's outputs: ``advice.csv`` (one row per request), ``advice.md`` (the ranked table with
reasons and totals) and ``advice.png`` (the top requests: image, current prediction, uncertainty).

``advice.csv`` columns (:data:`COLUMNS`), one row per request, best first::

    rank          1, 2, ...
    image         the record's "file" in dataset.json (the key to the record)
    kind          mask | box | point | image (image-level labels)
    cost_s        estimated seconds of annotation
    cumulative_s  seconds of this request and every one ranked above it
    value         what it was ranked by: estimated weighted nats per second (advisor) or mean
                  predictive entropy (uncertainty ranking)
    gain          estimated weighted nats of uncertainty the answer resolves
    objects       predicted objects on the image (what boxes and points are counted from)
    has           the record's annotation now (none, image, point, box)
    reason        one sentence

The files are written atomically (:mod:`dspseg.fsutil`); matplotlib is imported inside
:func:`write_picture`.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from dspseg.advise import Advice
from dspseg.costs import costs_text
from dspseg.fsutil import atomic_write, write_text_atomic
from dspseg.vocabulary import Kind

COLUMNS = ("rank", "image", "kind", "cost_s", "cumulative_s", "value", "gain", "objects", "has", "reason")
FILES = ("advice.csv", "advice.md", "advice.png")
#: requests shown in advice.png
TOP = 6
KIND_WORD = {Kind.MASK: "mask", Kind.BOX: "boxes", Kind.POINT: "points", Kind.IMAGE: "image labels"}


def rows(advice: Advice) -> list[dict[str, Any]]:
    """The :data:`COLUMNS` of every request, best first."""
    out, total = [], 0.0
    for rank, r in enumerate(advice.requests, 1):
        total += r.cost_s
        d = advice.details.get(r.image, {})
        out.append({"rank": rank, "image": r.image, "kind": r.kind, "cost_s": round(r.cost_s, 1),
                    "cumulative_s": round(total, 1), "value": f"{r.value:.6g}", "gain": f"{d.get('gain', 0.0):.6g}",
                    "objects": d.get("objects", ""), "has": d.get("has", ""), "reason": r.reason})
    return out


def write_csv(advice: Advice, path: Path) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows(advice))
    return write_text_atomic(path, buf.getvalue())


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(advice: Advice) -> str:
    """advice.md: what was asked, the ranked table with reasons, totals per kind."""
    budget = advice.hours * 3600.0
    ranked = ("value per second (estimated uncertainty resolved, class-weighted, kept diverse)"
              if advice.rank_by == "value" else "mean predictive entropy (uncertainty baseline)")
    lines = [f"# Annotation advice for {advice.hours:g} h", "",
             f"- run: `{advice.run}`", f"- data: `{advice.data}`",
             f"- costs: {costs_text(advice.costs)}",
             f"- ranked by: {ranked}; kinds allowed: {', '.join(KIND_WORD[k] for k in advice.kinds)}",
             f"- candidates: {advice.candidates} training image(s) that can still gain information",
             f"- model beliefs: {advice.calibration.text() if advice.calibration is not None else 'not calibrated'}", ""]
    if not advice.requests:
        lines += ["Nothing fits the budget: every allowed request costs more than "
                  f"{budget:.0f} s (raise --hours or lower --cost).", ""]
    else:
        lines += ["| # | image | request | est. cost (s) | value | reason |", "|---:|---|---|---:|---:|---|"]
        for row in rows(advice):
            lines.append(f"| {row['rank']} | `{_cell(row['image'])}` | {KIND_WORD[row['kind']]} | {row['cost_s']:.0f} | "
                         f"{float(row['value']):.3g} | {_cell(row['reason'])} |")
        lines += ["", "## Totals", "", "| request | images | est. seconds |", "|---|---:|---:|"]
        count = Counter(r.kind for r in advice.requests)
        for kind in advice.kinds:
            if count[kind]:
                secs = sum(r.cost_s for r in advice.requests if r.kind == kind)
                lines.append(f"| {KIND_WORD[kind]} | {count[kind]} | {secs:.0f} |")
        lines.append(f"| **all** | **{len(advice.requests)}** | **{advice.seconds:.0f}** |")
        lines += ["", f"Estimated {advice.seconds:.0f} s of {budget:.0f} s ({advice.seconds / 3600:.2f} h of "
                  f"{advice.hours:g} h). Costs of boxes and points are estimates from the predicted number of "
                  "objects; image labels from the expected number of classes present."]
    lines += ["", "Value: the cross-entropy of the true labels (nats, summed over pixels, rarely annotated classes "
              "weighted up) the answer is expected to remove under the current model, per second of annotation; "
              "see docs/advisor.md.", ""]
    return "\n".join(lines)


def write_picture(advice: Advice, path: Path, top: int = TOP) -> Path:
    """advice.png: one row per top request (image, current prediction, uncertainty = entropy of the
    restricted probabilities), class colours of :func:`dspseg.colours.palette`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from dspseg.advise.beliefs import beliefs, entropy
    from dspseg.colours import palette
    from dspseg.engine.predict import overlay_rgb

    shown = advice.requests[:top]
    n = max(1, len(shown))
    fig = Figure(figsize=(9, 2.8 * n + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 3, squeeze=False)
    colours = palette(len(advice.classes))
    items = [advice.details[r.image]["item"] for r in shown]
    seen = np.zeros(len(advice.classes), bool)
    if shown and advice.loaded is not None:
        for row, (r, b) in enumerate(zip(shown, beliefs(advice.loaded, advice.dataset, items, advice.calibration))):
            image = advice.dataset.window(b.index, 0, 0, *advice.dataset.items[b.index].shape)["image"]
            labels = b.probs.argmax(0)
            seen[np.unique(labels)] = True
            ax = axes[row]
            ax[0].imshow(image.mean(0), cmap="gray")
            ax[0].set_title(f"#{row + 1} {KIND_WORD[r.kind]}, {r.cost_s:.0f} s\n{r.image}", fontsize=8)
            ax[1].imshow(overlay_rgb(image, labels, len(advice.classes)))
            ax[1].set_title(f"prediction ({advice.details[r.image]['has']} now)", fontsize=8)
            shown_unc = ax[2].imshow(entropy(b.probs), cmap="magma", vmin=0.0, vmax=float(np.log(len(advice.classes))))
            ax[2].set_title("uncertainty (entropy, nats)", fontsize=8)
            fig.colorbar(shown_unc, ax=ax[2], fraction=0.046, pad=0.04)
    else:
        axes[0][1].text(0.5, 0.5, "no request fits the budget" if not shown else "no model to draw the requests with",
                        ha="center", va="center")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=colours[c] / 255.0, label=name) for c, name in enumerate(advice.classes) if seen[c]]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 if handles else 0, 1, 1))
    return atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)


def write_advice(advice: Advice, out: str | Path) -> list[Path]:
    """Write :data:`FILES` into the folder ``out`` (created); returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [write_csv(advice, out / FILES[0]), write_text_atomic(out / FILES[1], markdown(advice)),
            write_picture(advice, out / FILES[2])]
