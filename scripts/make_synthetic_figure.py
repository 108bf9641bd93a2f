"""Render docs/synthetic.png: synthetic sections from six groups of the default dataset and their masks.

Usage: python scripts/make_synthetic_figure.py [--out docs/synthetic.png] [--seed 0]

The images are exactly those that ``dspseg synth OUT --images 256 --size 128 --seed 0 --groups 8``
writes; from each of the first six groups the section showing the most classes is shown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from dspseg.data.synthetic import SYNTH_CLASSES, iter_synthetic  # noqa: E402

COLOURS = {
    "extracellular": "#f2f2f2",
    "cytosol": "#cdbb95",
    "plasma_membrane": "#2ca02c",
    "nucleus": "#1f77b4",
    "mitochondrion": "#d62728",
    "er": "#ff7f0e",
    "golgi": "#9467bd",
    "vesicle": "#e377c2",
    "lipid_droplet": "#17becf",
}


def pick(seed: int, n_groups: int, shown: int) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Per group, the first image with the most classes present (ties: earliest)."""
    best: dict[int, tuple[int, int, np.ndarray, np.ndarray]] = {}
    score: dict[int, int] = {}
    for i, g, image, mask in iter_synthetic(256, 128, seed, n_groups):
        if g >= shown:
            break
        k = len(np.unique(mask))
        if k > score.get(g, -1):
            best[g], score[g] = (i, g, image, mask), k
    return [best[g] for g in sorted(best)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "synthetic.png")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    chosen = pick(args.seed, 8, 6)
    cmap = ListedColormap([COLOURS[c] for c in SYNTH_CLASSES])
    fig, axes = plt.subplots(2, len(chosen), figsize=(2.6 * len(chosen), 6.0))
    for col, (i, g, image, mask) in enumerate(chosen):
        axes[0, col].imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[0, col].set_title(f"group g{g:02d}, image {i}", fontsize=9)
        axes[1, col].imshow(mask, cmap=cmap, vmin=-0.5, vmax=len(SYNTH_CLASSES) - 0.5, interpolation="nearest")
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(facecolor=COLOURS[c], edgecolor="black", linewidth=0.5, label=f"{k} {c}")
               for k, c in enumerate(SYNTH_CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles) // 2 + 1, fontsize=9, frameon=False)
    fig.suptitle("dspseg synthetic FIB-SEM-like sections (128 x 128, seed 0) and their class masks", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
