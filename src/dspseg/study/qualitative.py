"""The report's qualitative panel, like the paper's Fig. 4: one test image, its truth, every run's prediction.

The image is the test record of the split-0 dataset named in the ``data`` column whose mask holds
the most classes (the first of equals; the same image for every panel). Top row: the image and its ground-truth mask. Then one row per method
(and scenario) and one column per ACR, each panel the prediction of that split-0 run's
``checkpoints/best.pt``. Classes use the colours of ``dspseg predict --overlay``
(:func:`dspseg.colours.palette`); pixels without truth are white. A run without a checkpoint
(or trained on other classes) gets an empty panel and a note instead of stopping the report.
torch and matplotlib are imported inside :func:`qualitative_panel`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dspseg.study.plots import new_figure, save_figure


def by_richness(masks: Iterable[np.ndarray], ignore_index: int) -> list[int]:
    """Indices of ``masks`` (read one at a time when a generator), those holding the most classes
    (ignore pixels aside) first; equals keep their order."""
    counts = [int(np.setdiff1d(np.unique(m), [ignore_index]).size) for m in masks]
    return sorted(range(len(counts)), key=lambda i: -counts[i])


def richest(masks: Iterable[np.ndarray], ignore_index: int) -> int:
    """Index of the mask holding the most classes (ignore pixels aside); the first of equals; -1 for none."""
    order = by_richness(masks, ignore_index)
    return order[0] if order else -1


def _test_record(dir: Path, data: str) -> tuple[Any, Any]:
    """(manifest holding only one test record, that record) of the dataset ``DIR/data``: the test
    record whose mask holds the most classes (:func:`richest`), so the panel shows every method on
    as many classes as one image has."""
    from dspseg.data.manifest import load_manifest
    from dspseg.data.volume_items import VolumeReader, record_mask

    manifest = load_manifest(dir / data)
    tests = [r for r in manifest.images if r.split == "test" and r.mask is not None]
    if not tests:
        raise ValueError(f"{dir / data} has no test image with a mask")
    reader = VolumeReader(manifest)  # mask files, or volume sections read one at a time
    pick = tests[richest((record_mask(manifest, r, reader) for r in tests), manifest.ignore_index)]
    single = manifest.model_copy(update={"images": [pick]})
    single.root = manifest.root
    return single, pick


def _truth(manifest: Any) -> tuple[np.ndarray, np.ndarray]:
    """(image (Cin, H, W), truth (H, W)) of the one test record, read as evaluation reads it."""
    from dspseg.data.dataset import SegmentationDataset

    item = SegmentationDataset(manifest, "test", crop_size=None, derive_weak=False).items[0]
    return item.image, item.target


def _predict(run: Path, manifest: Any) -> np.ndarray:
    """Prediction (H, W) of ``run``'s best checkpoint on the one test record (as ``evaluate_run`` does)."""
    import torch

    from dspseg.data.dataset import SegmentationDataset
    from dspseg.engine.checkpoint import load_run
    from dspseg.engine.evaluate import predict_labels

    loaded = load_run(run, "best")
    loaded.check_classes(manifest.classes, manifest.root)
    dataset = SegmentationDataset(manifest, "test", normalisation=loaded.normalisation, crop_size=None,
                                  derive_weak=False)
    item = dataset.items[0]
    [(_, labels)] = list(predict_labels(loaded.model, [torch.from_numpy(item.image)], tile=loaded.tile))
    return labels.numpy()


def _one_line(e: BaseException) -> str:
    """The last non-empty line of an error message (a manifest error lists its problems below a heading)."""
    lines = [ln.strip().removeprefix("- ").removeprefix("error: ") for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def _colour(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    rgb = np.full((*labels.shape, 3), 255, np.uint8)
    known = labels < len(colours)
    rgb[known] = colours[labels[known]]
    return rgb


def _grey(image: np.ndarray) -> np.ndarray:
    grey = image.mean(0)
    lo, hi = np.percentile(grey, [1, 99])
    return np.clip((grey - lo) / max(hi - lo, 1e-8), 0, 1)


def panel_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[tuple[str, dict[float, str]]], list[float]]:
    """Rows of the panel: ``(label, {acr: run})`` per (method, scenario) from the split-0 done rows, and the ACRs.

    A (method, scenario) whose runs are exactly those of an earlier one (``basic``, shared by all
    scenarios) is merged into it, its label naming every scenario.
    """
    runs: dict[tuple[str, str], dict[float, str]] = {}
    for r in rows:
        if r["status"] == "done" and r["split"] == 0:
            runs.setdefault((r["method"], r["scenario"]), {})[r["acr"]] = r["run"]
    merged: list[tuple[str, list[str], dict[float, str]]] = []
    for (method, scenario), by_acr in runs.items():
        same = next((m for m in merged if m[0] == method and m[2] == by_acr), None)
        if same is not None:
            same[1].append(scenario)
        else:
            merged.append((method, [scenario], by_acr))
    acrs = sorted({a for _, _, by_acr in merged for a in by_acr})
    return [(f"{m}\n{', '.join(s)}", by_acr) for m, s, by_acr in merged], acrs


def qualitative_panel(dir: str | Path, rows: Sequence[dict[str, Any]], path: str | Path,
                      notes: list[str]) -> Path | None:
    """Write the panel to ``path``; append a sentence to ``notes`` per run left out.

    Returns the PNG path, or None (with a note) when there is no split-0 done run or its dataset
    has no test image with a mask.
    """
    from matplotlib.patches import Patch

    from dspseg.errors import UserError
    from dspseg.colours import palette

    dir = Path(dir)
    table, acrs = panel_rows(rows)
    first = next((r for r in rows if r["status"] == "done" and r["split"] == 0), None)
    if first is None:
        notes.append("qualitative.png not written: no split-0 run finished")
        return None
    try:
        manifest, record = _test_record(dir, first["data"])
        image, target = _truth(manifest)
    except (UserError, ValueError, OSError) as e:
        notes.append(f"qualitative.png not written: the split-0 dataset {first['data']} cannot be used "
                     f"({_one_line(e)})")
        return None
    classes = list(manifest.classes)
    colours = palette(len(classes))
    n_cols = max(2, len(acrs))
    fig = new_figure(2.3 * n_cols + 1.2, 2.3 * (len(table) + 1) + 0.6)
    axes = fig.subplots(len(table) + 1, n_cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    for i, (label, by_acr) in enumerate(table, start=1):
        axes[i][0].set_ylabel(label, fontsize=8)
        for j, acr in enumerate(acrs):
            ax = axes[i][j]
            if i == 1:
                ax.set_title(f"ACR {acr:g}", fontsize=9)
            if acr not in by_acr:
                continue
            try:
                pred = _predict(dir / by_acr[acr], manifest)
            except (UserError, OSError, ValueError) as e:
                notes.append(f"{label.splitlines()[0]} at ACR {acr:g} left out of qualitative.png: {_one_line(e)}")
                ax.text(0.5, 0.5, "no checkpoint" if "checkpoint" in str(e) else "not shown", ha="center",
                        va="center", fontsize=8, transform=ax.transAxes)
                continue
            ax.imshow(_colour(pred, colours), interpolation="nearest")
    axes[0][0].imshow(_grey(image), cmap="gray", interpolation="nearest")
    axes[0][1].imshow(_colour(target, colours), interpolation="nearest")
    axes[0][0].set_title(f"test image {record.file or record.source}", fontsize=8)
    axes[0][1].set_title("ground truth", fontsize=9)
    handles = [Patch(color=colours[c] / 255.0, label=name) for c, name in enumerate(classes)]
    handles.append(Patch(facecolor="white", edgecolor="black", label="not annotated"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle("predictions on one test image (split 0; rows: method, scenarios; columns: ACR)", fontsize=10)
    return save_figure(fig, path)
