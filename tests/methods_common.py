"""Shared helpers for the method tests: the tiny mixed dataset, methods, models, batches, training."""

from __future__ import annotations

from typing import Any

import torch

from dspseg.data.acr import reduce_manifest
from dspseg.data.dataset import SegmentationDataset, collate
from dspseg.data.synthetic import write_synthetic_dataset
from dspseg.methods import get_method
from dspseg.models import build_model

IGNORE = 255


def mixed_dataset(root) -> SegmentationDataset:
    """30 synthetic 48² images at ACR 2, mixed: masks, boxes, points, image labels, unlabeled."""
    manifest = write_synthetic_dataset(root / "syn", n_images=30, size=48, seed=1, groups=6)
    reduced = reduce_manifest(manifest, acr=2, scenario="mixed", split=0, n_splits=2, seed=0)
    reduced.root = manifest.root
    return SegmentationDataset(reduced, "train", crop_size=40)


def make_method(name: str, n_classes: int, **opts: Any):
    cls = get_method(name)
    return cls(cls.Options.model_validate(opts), n_classes=n_classes, ignore_index=IGNORE)


def tiny_model(method, n_classes: int, width: int = 4, levels: int = 2):
    return build_model(1, n_classes, width=width, levels=levels, head=method.head, aux_heads=method.aux_heads,
                       **method.head_kwargs())


def batch_of(ds: SegmentationDataset, kinds: set[str], n: int = 8, key: int = 0) -> dict[str, Any]:
    """The first ``n`` items of the given kinds, cropped with seed ``key``, collated."""
    idx = ds.indices_of_kinds(kinds)[:n]
    assert idx, f"no items of kinds {kinds}"
    return collate([ds[(i, key)] for i in idx], ignore_index=IGNORE)


def train_steps(method, model, batch: dict[str, Any], steps: int = 20, lr: float = 3e-3,
                forward=None, augmented: bool = False) -> list[dict[str, float]]:
    """``steps`` AdamW steps on one fixed batch: ``method.loss(forward(batch), batch)`` (no
    augmentation), or with ``augmented`` the method's own ``step`` (its weak/strong views)."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    forward = forward or (lambda b: model(b["image"]))
    history = []
    for _ in range(steps):
        terms = method.step(model, batch) if augmented else method.loss(forward(batch), batch)
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    return history


def hand_batch(image: torch.Tensor, target: torch.Tensor, kinds: list[str], n_classes: int, *,
               valid: torch.Tensor | None = None, points=(), boxes=(), image_labels=(),
               image_classes: torch.Tensor | None = None) -> dict[str, Any]:
    """A collated-layout batch written by hand (rows of points/boxes/labels as lists)."""
    b = image.shape[0]
    return {
        "image": image, "target": target,
        "valid": torch.ones(target.shape, dtype=torch.bool) if valid is None else valid,
        "allowed": torch.ones(b, n_classes, *target.shape[1:], dtype=torch.bool),
        "points": torch.tensor(list(points), dtype=torch.long).reshape(-1, 4),
        "boxes": torch.tensor(list(boxes), dtype=torch.long).reshape(-1, 6),
        "image_labels": torch.tensor(list(image_labels), dtype=torch.long).reshape(-1, 2),
        "image_classes": torch.ones(b, n_classes, dtype=torch.bool) if image_classes is None else image_classes,
        "kinds": kinds,
    }


KINDS = ("mask", "box", "point", "image", "none")


def batch_per_kind(ds: SegmentationDataset, kinds, per_kind: int = 2, key: int = 5) -> dict[str, Any]:
    """``per_kind`` items of each kind in ``kinds`` (in that order), cropped with seed ``key``, collated."""
    picked = [i for k in kinds for i in ds.indices_of_kinds({k})[:per_kind]]
    return collate([ds[(i, key)] for i in picked], ignore_index=IGNORE)


def linear_model(n_classes: int, seed: int = 0):
    """A seeded tiny U-Net (width 4, 2 levels) with a linear head."""
    torch.manual_seed(seed)
    return build_model(1, n_classes, width=4, levels=2, head="linear")
