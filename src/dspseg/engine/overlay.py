"""The overlay picture ``dspseg predict --overlay`` writes: the tinted image, enlarged, beside a class legend.

Microscopy crops are often 64 × 64 pixels: shown as they are, a viewer scales them blurrily or not at
all, and nothing says which colour is which class. :func:`overlay_picture` enlarges the tinted image
by a whole factor (nearest neighbour: every pixel becomes a k × k block, no blending of classes)
until its shorter side is at least ``min_side`` pixels, and puts a legend to its right: one
colour square and the class name per class, in the colours of
:func:`dspseg.colours.palette`. matplotlib draws the legend's text (imported inside).

    >>> rgb = np.zeros((64, 48, 3), np.uint8)
    >>> colours = np.array([[128, 128, 128], [31, 119, 180]], np.uint8)
    >>> overlay_picture(rgb, np.zeros((64, 48), int), ["background", "mito"], colours).shape[:2]
    (384, 398)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: the enlarged image's shorter side is at least this many pixels (unless that would pass MAX_SIDE)
MIN_SIDE = 256
#: the enlargement never makes the longer side larger than this
MAX_SIDE = 4096
#: legend rows: at most this many classes are listed; beyond, the classes present in the image
LEGEND_ALL_UP_TO = 16


def enlarge_factor(height: int, width: int, min_side: int = MIN_SIDE) -> int:
    """The whole factor k ≥ 1 making ``min(H, W)·k ≥ min_side``, capped so that ``max(H, W)·k ≤ MAX_SIDE``."""
    k = max(1, math.ceil(min_side / max(1, min(height, width))))
    return max(1, min(k, MAX_SIDE // max(1, max(height, width))))


def legend_classes(labels: np.ndarray, n_classes: int) -> list[int]:
    """Class ids the legend lists: every class up to :data:`LEGEND_ALL_UP_TO` classes, else those present."""
    if n_classes <= LEGEND_ALL_UP_TO:
        return list(range(n_classes))
    return [int(c) for c in np.unique(labels) if 0 <= c < n_classes]


def legend_rgb(names: Sequence[str], colours: np.ndarray, height: int) -> np.ndarray:
    """(height, W, 3) uint8 white strip: one colour square and name per row, in as many columns as needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    row = 18  # pixels per legend row
    per_column = max(1, (height - 8) // row)
    columns = max(1, math.ceil(len(names) / per_column))
    col_width = 16 + 7 * max((len(n) for n in names), default=4) + 12
    width = columns * col_width + 8
    fig = Figure(figsize=(width / 100, height / 100), dpi=100, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for i, (name, colour) in enumerate(zip(names, colours)):
        x, y = 6 + (i // per_column) * col_width, 6 + (i % per_column) * row
        ax.add_patch(Rectangle((x, y), 12, 12, facecolor=np.asarray(colour) / 255, edgecolor="black", linewidth=0.5))
        ax.text(x + 16, y + 6, name, fontsize=8, va="center", ha="left", color="black")
    fig.canvas.draw()
    strip = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    out = np.full((height, width, 3), 255, np.uint8)
    h, w = min(height, strip.shape[0]), min(width, strip.shape[1])
    out[:h, :w] = strip[:h, :w]
    return out


def overlay_picture(rgb: np.ndarray, labels: np.ndarray, classes: Sequence[str], colours: np.ndarray,
                    min_side: int = MIN_SIDE) -> np.ndarray:
    """(H·k, W·k + legend, 3) uint8: the overlay ``rgb`` (H, W, 3) enlarged k× by nearest neighbour
    (:func:`enlarge_factor`) and the legend of ``classes`` in ``colours`` (C, 3) to its right.

    ``labels`` (H, W) picks the legend's classes when there are many (:func:`legend_classes`).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != labels.shape:
        raise ValueError(f"overlay_picture: expected rgb (H, W, 3) and labels (H, W), got {rgb.shape} and {labels.shape}")
    k = enlarge_factor(*labels.shape, min_side=min_side)
    big = np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)
    shown = legend_classes(labels, len(classes))
    strip = legend_rgb([classes[c] for c in shown], colours[shown], big.shape[0])
    gap = np.full((big.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([big, gap, strip], axis=1)
