"""Shared helpers for the method tests: the tiny mixed dataset, methods, models, batches, training,
and :class:`MethodTester`, the tests every method shares (smp's ``BaseModelTester`` pattern)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from dspseg.data.acr import reduce_manifest
from dspseg.data.batch import Bags, Batch, collate
from dspseg.data.dataset import SegmentationDataset
from dspseg.data.synthetic import write_synthetic_dataset
from dspseg.methods import get_method
from dspseg.models import build_model
from dspseg.vocabulary import KINDS

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


def batch_of(ds: SegmentationDataset, kinds: set[str], n: int = 8, key: int = 0) -> Batch:
    """The first ``n`` items of the given kinds, cropped with seed ``key``, collated."""
    idx = ds.indices_of_kinds(kinds)[:n]
    assert idx, f"no items of kinds {kinds}"
    return collate([ds[(i, key)] for i in idx], ignore_index=IGNORE)


def train_steps(method, model, batch: Batch, steps: int = 20, lr: float = 3e-3,
                forward=None, augmented: bool = False) -> list[dict[str, float]]:
    """``steps`` AdamW steps on one fixed batch: ``method.loss(forward(batch), batch)`` (no
    augmentation), or with ``augmented`` the method's own ``step`` (its weak/strong views)."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    forward = forward or (lambda b: model(b.image))
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
               valid: torch.Tensor | None = None, allowed: torch.Tensor | None = None, points=(), boxes=(),
               image_labels=(), image_classes: torch.Tensor | None = None) -> Batch:
    """A batch written by hand (rows of points/boxes/labels as lists; no mask components)."""
    b = image.shape[0]
    bags = Bags(instances=torch.zeros(target.shape, dtype=torch.long), instance_classes=torch.zeros(0, dtype=torch.long),
                points=torch.tensor(list(points), dtype=torch.long).reshape(-1, 4),
                boxes=torch.tensor(list(boxes), dtype=torch.long).reshape(-1, 6),
                image_labels=torch.tensor(list(image_labels), dtype=torch.long).reshape(-1, 2))
    return Batch(image=image, target=target,
                 allowed=torch.ones(b, n_classes, *target.shape[1:], dtype=torch.bool) if allowed is None else allowed,
                 valid=torch.ones(target.shape, dtype=torch.bool) if valid is None else valid,
                 image_classes=torch.ones(b, n_classes, dtype=torch.bool) if image_classes is None else image_classes,
                 bags=bags, kinds=list(kinds))


def batch_per_kind(ds: SegmentationDataset, kinds, per_kind: int = 2, key: int = 5) -> Batch:
    """``per_kind`` items of each kind in ``kinds`` (in that order), cropped with seed ``key``, collated."""
    picked = [i for k in kinds for i in ds.indices_of_kinds({k})[:per_kind]]
    return collate([ds[(i, key)] for i in picked], ignore_index=IGNORE)


def linear_model(n_classes: int, seed: int = 0):
    """A seeded tiny U-Net (width 4, 2 levels) with a linear head."""
    torch.manual_seed(seed)
    return build_model(1, n_classes, width=4, levels=2, head="linear")


def whole_batch(ds: SegmentationDataset, key: int) -> Batch:
    """Every item of ``ds``, cropped with seed ``key``, collated."""
    return collate([ds[(i, key)] for i in range(len(ds))], ignore_index=IGNORE)


def admitted(labels: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """(B, h, w) bool: ``allowed`` (B, C, h, w) admits the class ``labels`` (B, h, w) gives each pixel
    (labels past the classes, e.g. ``ignore_index``, read the last class)."""
    return allowed.gather(1, labels.clamp(max=allowed.shape[1] - 1).unsqueeze(1)).squeeze(1)


class MethodTester:
    """The tests every method shares; a method's test class sets these attributes (smp's
    ``BaseModelTester``)."""

    name: ClassVar[str] = ""
    uses: ClassVar[frozenset[str]] = frozenset(KINDS)
    head: ClassVar[str] = "linear"
    options: ClassVar[dict[str, Any]] = {}  # for every test of the class
    bad_options: ClassVar[list[tuple[dict[str, Any], str]]] = []  # (options, the error's pattern)

    def make(self, n_classes: int, **opts: Any):
        return make_method(self.name, n_classes, **{**self.options, **opts})

    def test_registered(self):
        cls = get_method(self.name)
        assert cls.uses == frozenset(self.uses) and cls.head == self.head

    def test_options_are_validated(self):
        cls = get_method(self.name)
        for bad, match in self.bad_options:
            with pytest.raises(ValueError, match=match):
                cls.Options.model_validate(bad)


class EveryKindTester(MethodTester):
    """Shared tests of the linear-head methods that learn from every kind (fixmatch, pseudolabel,
    con2r): ``kinds`` and ``opts`` are parametrised from ``kinds_cases`` and ``opts_cases``
    (tests/methods/conftest.py)."""

    terms: ClassVar[set[str]] = set()
    step_options: ClassVar[dict[str, Any]] = {}  # added for test_terms_finite_and_driven_by_the_right_annotations
    kinds_cases: ClassVar[list[tuple[str, ...]]] = [("none",), ("mask",), ("image", "box"), ("point",), KINDS]
    opts_cases: ClassVar[list[dict[str, Any]]] = [{}]

    def model(self, n_classes: int):
        """The seeded tiny linear-head U-Net (:func:`linear_model`)."""
        return linear_model(n_classes)

    def test_terms_finite_and_driven_by_the_right_annotations(self, mixed, kinds, opts):
        method = self.make(mixed.n_classes, **self.step_options, **opts)
        model = self.model(mixed.n_classes)
        terms = method.step(model, batch_per_kind(mixed, kinds))
        assert set(terms) == self.terms
        total = sum(terms.values())
        total.backward()
        assert torch.isfinite(total)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        assert (terms["ce"].item() > 0) == ("mask" in kinds)  # only masks drive CE
        assert all(terms[k].item() > 0 for k in self.terms - {"ce"})  # every image drives the others

    def test_loss_decreases(self, mixed, opts):
        method = self.make(mixed.n_classes, **opts)
        history = train_steps(method, self.model(mixed.n_classes), whole_batch(mixed, 0), augmented=True)
        history = [sum(h.values()) for h in history]
        assert sum(history[-3:]) < 0.9 * sum(history[:3])
