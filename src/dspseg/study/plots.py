"""The report's figures from :func:`dspseg.study.results.summarise` groups (matplotlib, Agg canvas).

* :func:`dice_vs_acr` — the paper's Fig. 3 for one scenario: test mean Dice against ACR (log2 axis,
  ticks at the sweep's ACRs), one line per method, mean ± std over splits as a band.
* :func:`dice_vs_cost` — mean Dice against annotation hours (log axis): colour = method, marker =
  scenario, each point labelled with its ACR, so Dice per hour of expert work can be read off.
* :func:`per_class_heatmap` — Dice per class (columns) for every method @ ACR (rows), values written
  in the cells, colour scale 0..1.

Every figure is written with :func:`dspseg.fsutil.atomic_write`. matplotlib is imported inside the
functions (never at module import).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from dspseg.fsutil import atomic_write

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib Figure on an Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically; returns the path."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight"), binary=True)


def method_colours(methods: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """A distinct colour per method, in the given order, the same in every figure of a report.

    tab10 up to 10 methods, tab20 (dark shades first) up to 20, evenly spaced ``turbo`` beyond: no two methods
    ever share a colour (a sweep comparing variants easily has more than 10 lines).
    """
    from matplotlib import colormaps

    n = len(methods)
    if n <= 10:
        return {m: colormaps["tab10"](i) for i, m in enumerate(methods)}
    if n <= 20:  # tab20 pairs a dark and a light shade: the 10 dark ones first, then the light ones
        order = [*range(0, 20, 2), *range(1, 20, 2)]
        return {m: colormaps["tab20"](order[i]) for i, m in enumerate(methods)}
    return {m: colormaps["turbo"](i / (n - 1)) for i, m in enumerate(methods)}


def _value(v: float | None) -> float:
    return math.nan if v is None else float(v)


def dice_vs_acr(groups: list[dict[str, Any]], scenario: str, methods: Sequence[str], path: str | Path,
                fraction: float | None = 0.9) -> Path:
    """Plot test mean Dice against ACR for ``scenario`` (one line per method); returns the PNG path.

    With a reference run in the scenario (``basic-matched``, else ``basic``) and a ``fraction``, a
    dotted grey line marks ``fraction`` × the Dice of full supervision (the reference at the
    smallest ACR): the level the savings table asks for.
    """
    import numpy as np

    from dspseg.study.savings import reference_dice, reference_method

    colours = method_colours(methods)
    mine = [g for g in groups if g["scenario"] == scenario]
    acrs = sorted({g["acr"] for g in mine})
    splits = sorted({g["n"] for g in mine})
    fig = new_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    for i, method in enumerate(m for m in methods if any(g["method"] == m for g in mine)):
        line = sorted((g for g in mine if g["method"] == method), key=lambda g: g["acr"])
        x = np.array([g["acr"] for g in line])
        y = np.array([_value(g["mean_dice"]) for g in line])
        s = np.array([_value(g["mean_dice_std"]) for g in line])
        ax.plot(x, y, marker=MARKERS[i % len(MARKERS)], color=colours[method], label=method, linewidth=1.8)
        ax.fill_between(x, y - s, y + s, color=colours[method], alpha=0.18, linewidth=0)
    ref = reference_dice(groups, scenario) if fraction else None
    if ref is not None:
        ax.axhline(fraction * ref[1], color="0.45", linestyle=":", linewidth=1.2,
                   label=f"{fraction:.0%} of {reference_method(groups)} @ ACR {ref[0]:g}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(acrs)
    ax.set_xticklabels([f"{a:g}" for a in acrs])
    ax.minorticks_off()
    ax.set_xlabel("ACR: training images per full mask (log scale)")
    ax.set_ylabel("test mean Dice")
    n = f"{splits[0]}" if len(splits) == 1 else f"{splits[0]}–{splits[-1]}"
    ax.set_title(f"{scenario}: test mean Dice vs ACR (mean ± std over {n} split{'s' if splits[-1] > 1 else ''})")
    ax.grid(True, alpha=0.3)
    if len(ax.get_legend_handles_labels()[1]) > 6:  # many lines: the legend goes beside the axes
        ax.legend(title="method", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(title="method", fontsize=8)
    return save_figure(fig, path)


def dice_vs_cost(groups: list[dict[str, Any]], methods: Sequence[str], scenarios: Sequence[str],
                 path: str | Path) -> Path:
    """Plot mean Dice against mean annotation hours for every group; returns the PNG path."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    colours = method_colours(methods)
    fig = new_figure(7.2, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    for si, scenario in enumerate(scenarios):
        for method in methods:
            line = sorted((g for g in groups if g["method"] == method and g["scenario"] == scenario
                           and g["mean_dice"] is not None), key=lambda g: g["cost_hours"])
            if not line:
                continue
            x = [g["cost_hours"] for g in line]
            y = [g["mean_dice"] for g in line]
            ax.errorbar(x, y, yerr=[g["mean_dice_std"] for g in line], color=colours[method],
                        marker=MARKERS[si % len(MARKERS)], linestyle="-", linewidth=0.8, markersize=6, capsize=2)
            for g in line:
                ax.annotate(f"{g['acr']:g}", (g["cost_hours"], g["mean_dice"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=colours[method])
    costs = [g["cost_hours"] for g in groups if g["mean_dice"] is not None]
    positive = [c for c in costs if c > 0]
    if positive and len(positive) == len(costs):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif positive:
        ax.set_xscale("symlog", linthresh=min(positive))
    ax.set_xlabel("annotation time of the training annotations, hours (log scale)")
    ax.set_ylabel("test mean Dice")
    ax.set_title("Dice per hour of annotation (numbers: ACR; bars: std over splits)")
    ax.grid(True, which="both", alpha=0.3)
    method_handles = [Line2D([], [], color=colours[m], marker="o", linestyle="-", label=m) for m in methods]
    scenario_handles = [Line2D([], [], color="black", marker=MARKERS[i % len(MARKERS)], linestyle="", label=s)
                        for i, s in enumerate(scenarios)]
    first = ax.legend(handles=method_handles, title="method", fontsize=8, loc="lower right")
    ax.add_artist(first)
    ax.legend(handles=scenario_handles, title="scenario", fontsize=8, loc="upper left")
    return save_figure(fig, path)


def per_class_heatmap(groups: list[dict[str, Any]], scenario: str, classes: Sequence[str],
                      path: str | Path) -> Path:
    """Heatmap of mean Dice per class (columns) for each method @ ACR (rows) of ``scenario``."""
    import numpy as np
    from matplotlib import colormaps

    mine = [g for g in groups if g["scenario"] == scenario]
    values = np.array([[_value(g.get(f"dice_{c}")) for c in classes] for g in mine], dtype=float)
    values = values.reshape(len(mine), len(classes))
    fig = new_figure(2.2 + 0.95 * len(classes), 1.4 + 0.38 * len(mine))
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            ax.text(j, i, "—" if math.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if math.isnan(v) or v > 0.6 else "white")
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(classes, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(mine)))
    ax.set_yticklabels([f"{g['method']} @ ACR {g['acr']:g}" for g in mine], fontsize=8)
    ax.set_title(f"{scenario}: test Dice per class (mean over splits; — absent)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="Dice")
    return save_figure(fig, path)
