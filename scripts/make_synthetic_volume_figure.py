"""Regenerate docs/synthetic_volume.png: an xy and an xz section of `dspseg synth --volume` and their labels.

    python scripts/make_synthetic_volume_figure.py [--out docs/synthetic_volume.png]

Writes the default volume (64 x 256 x 256, seed 0) to a temporary folder, reads the two sections
back through dspseg.data.volumes (only their chunks) and draws them with the label image's colours.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dspseg.data.synthetic import SYNTH_CLASSES, write_synthetic_volume  # noqa: E402
from dspseg.data.volumes import open_volume  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "synthetic_volume.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_synthetic_volume(Path(tmp) / "cell.ome.zarr", shape=(64, 256, 256), seed=0)
        image = open_volume(str(path))
        labels = open_volume({"url": str(path), "array": "labels/organelles"})
        meta = json.loads((path / "labels" / "organelles" / "zarr.json").read_text())["attributes"]["ome"]
        rgba = np.array([c["rgba"] for c in meta["image-label"]["colors"]], np.uint8)
        z, y = 32, 128
        views = [(f"xy section (z = {z})", image.section("z", z), labels.section("z", z)),
                 (f"xz section (y = {y})", image.section("y", y), labels.section("y", y))]
        fig, axes = plt.subplots(2, 2, figsize=(10, 7.4), gridspec_kw={"height_ratios": [256, 64]})
        for row, (title, img, lab) in enumerate(views):
            axes[row, 0].imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            axes[row, 0].set_title(title)
            axes[row, 1].imshow(rgba[lab][..., :3], interpolation="nearest")
            axes[row, 1].set_title(f"labels/organelles, {title.split(' (')[0]}")
            if row == 1:
                for ax in axes[row]:
                    ax.axhline(z, color="yellow", lw=0.6, ls="--")
        for ax in axes.ravel():
            ax.set_xticks([]), ax.set_yticks([])
        handles = [plt.Rectangle((0, 0), 1, 1, color=rgba[k, :3] / 255) for k in range(len(SYNTH_CLASSES))]
        fig.legend(handles, SYNTH_CLASSES, loc="lower center", ncol=5, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
