"""Dice of a model on a dataset split (DESIGN §3) and ``dspseg evaluate RUN DATA``.

Inference is on whole images: an image no larger than ``tile`` in both sides goes through the
model in one piece (images of equal shape are batched); a larger one through
:func:`dspseg.engine.tiling.predict_tiled` (overlapping tiles, Gaussian blending, bounded memory).
The prediction is ``argmax_c logits`` (``argmax_c`` of the blended probabilities for tiles).

Dice is accumulated over all evaluated pixels of all images (:class:`DiceAccumulator`): per class
``2 TP / (2 TP + FP + FN)``, nan for a class absent from prediction and truth, headline = nan-mean
over classes. By default every class, background included, enters the mean; the table and the JSON
say so. Pixels whose truth is the ignore index are not counted; images without a mask are skipped.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dspseg.engine.metrics import DiceAccumulator, DiceResult
from dspseg.engine.tiling import predict_tiled


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    return out["logits"] if isinstance(out, dict) else out


def _stack(images: list[Tensor]) -> Tensor:
    """torch.stack, done by numpy for CPU tensors (single-threaded: no stalls when cores are busy)."""
    if all(t.device.type == "cpu" for t in images):
        return torch.from_numpy(np.stack([t.numpy() for t in images]))
    return torch.stack(images)


def predict_labels(model: nn.Module, images: list[Tensor], tile: int = 256, batch_size: int = 4,
                   overlap: float = 0.25, autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                   ) -> Iterable[tuple[int, Tensor]]:
    """Yield ``(i, labels (H_i, W_i) long on the CPU)`` for normalised images (Cin, H_i, W_i).

    Small images (both sides ≤ ``tile``) of equal shape are run ``batch_size`` at a time, in one
    piece; larger ones tile by tile. The model is run in eval mode and restored afterwards.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            if im.ndim != 3:
                raise ValueError(f"predict_labels: images[{i}] must be (Cin, H, W), got {tuple(im.shape)}")
            if im.shape[-2] <= tile and im.shape[-1] <= tile:
                groups.setdefault(tuple(im.shape), []).append(i)
            else:
                with autocast():
                    probs = predict_tiled(model, im, tile=tile, overlap=overlap, batch_size=batch_size, device=device)
                yield i, probs.argmax(0).cpu()
        with torch.no_grad():
            for idx in groups.values():
                for k in range(0, len(idx), batch_size):
                    chunk = idx[k : k + batch_size]
                    x = _stack([images[i] for i in chunk]).to(device)
                    with autocast():
                        labels = _logits(model, x).argmax(1).cpu()
                    yield from zip(chunk, labels)
    finally:
        model.train(was_training)


def dice_on_dataset(model: nn.Module, dataset: Any, tile: int = 256, batch_size: int = 4,
                    include_background: bool = True, background: int | None = None,
                    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                    ) -> DiceResult:
    """Dice over the mask images of ``dataset`` (a whole-image :class:`SegmentationDataset`)."""
    acc = DiceAccumulator(dataset.n_classes, dataset.ignore_index, background=background,
                          include_background=include_background)
    keep = [i for i, it in enumerate(dataset.items) if it.kind == "mask"]
    images = [torch.from_numpy(dataset.items[i].image) for i in keep]
    for j, labels in predict_labels(model, images, tile=tile, batch_size=batch_size, autocast=autocast):
        acc.update(labels, torch.from_numpy(dataset.items[keep[j]].target))
    return acc.compute()


# ------------------------------------------------------------------------------------------- evaluate


def dice_table(result: DiceResult, classes: list[str], title: str) -> Any:
    """A rich Table: one row per class (``—`` for a class absent from prediction and truth) and the mean."""
    from rich.table import Table

    table = Table(title=title, min_width=len(title) + 2)
    table.add_column("class")
    table.add_column("Dice", justify="right")
    for name, v in zip(classes, result.per_class):
        table.add_row(name, "—" if np.isnan(v) else f"{v:.3f}")
    mean = "—" if math.isnan(result.mean) else f"{result.mean:.3f}"
    table.add_section()
    table.add_row("[bold]mean[/]", f"[bold]{mean}[/]")
    return table


def evaluate_run(run: str | Path, data: str | Path, split: str = "test", json_path: str | Path | None = None,
                 console: Any = None, tile: int | None = None, batch_size: int = 4) -> dict[str, Any]:
    """Evaluate ``RUN/checkpoints/best.pt`` on ``split`` of ``data``; print the table; write the JSON.

    Returns (and writes to ``json_path`` or ``RUN/eval/<split>.json``)::

        {"mean_dice": float | None, "per_class": {class: float | None}, "images": int,
         "split": str, "checkpoint": str, "include_background": True, "step": int}

    Raises :class:`~dspseg.errors.UserError` subclasses for a missing run or checkpoint, a
    dataset whose classes differ from the run's, or a split without mask images.
    """
    from rich.console import Console

    from dspseg.data.dataset import SegmentationDataset
    from dspseg.data.manifest import load_manifest
    from dspseg.data.splits import missing_split_fix
    from dspseg.engine.checkpoint import load_run
    from dspseg.errors import DatasetError
    from dspseg.fsutil import write_text_atomic

    console = console or Console()
    loaded = load_run(run, "best")
    manifest = load_manifest(data)
    loaded.check_classes(manifest.classes, data)
    dataset = SegmentationDataset(manifest, split, normalisation=loaded.normalisation, crop_size=None,
                                  derive_weak=False)
    n_masked = sum(1 for it in dataset.items if it.kind == "mask")
    if n_masked == 0:
        fix = missing_split_fix(manifest, data, split) or "give another --split"
        raise DatasetError(f"{data} has no {split} images with a mask ({len(dataset)} {split} image(s) in all). "
                           f"Fix: {fix}")
    result = dice_on_dataset(loaded.model, dataset, tile=tile or loaded.tile, batch_size=batch_size)
    console.print(dice_table(result, manifest.classes, f"Dice on {split} ({n_masked} images, step {loaded.step})"))
    console.print(f"background included in the mean: yes (mean over the {manifest.n_classes} classes, "
                  "leaving out classes absent from both prediction and truth)")
    if n_masked < len(dataset):
        console.print(f"note: {len(dataset) - n_masked} {split} image(s) without a mask were skipped")
    d = result.to_dict(manifest.classes)
    report = {"mean_dice": d["mean_dice"], "per_class": d["per_class"], "images": n_masked, "split": split,
              "checkpoint": str(loaded.path), "include_background": True, "step": loaded.step}
    out = Path(json_path) if json_path is not None else loaded.folder.eval_json(split)
    write_text_atomic(out, json.dumps(report, indent=1) + "\n")
    console.print(f"wrote {out}")
    return report
