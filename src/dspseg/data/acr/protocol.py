"""The paper's Annotation Compression Ratio protocol (§4, §5.1): which training images keep their masks
and what the others get, in memory (:mod:`dspseg.data.acr.writer` writes the reduced dataset folder).

``ACR = #total base annotations / #used base annotations`` (eq. 11). For cross-validation split
``k`` (:mod:`dspseg.data.splits`) the training images are put in a fixed order: a seeded shuffle,
then the images of a greedy set cover of the classes moved to the front, so that the first ``C``
images contain every class. The first ``n_masked(N, R) = max(1, ceil(N / R))`` images keep their
masks; the others get weaker annotation derived from their mask (:mod:`dspseg.data.weak`):

* ``mixed``: dealt in turn box, point, image, none, box, ... (counts differ by at most 1; the paper's
  "distributed uniformly", e.g. ACR 2 → 50 % masks, 12.5 % of each of the four others);
* ``box`` / ``point`` / ``image``: all of them get that type (the paper's pairs M+B, M+P, M+I).

Because the order does not depend on R and ``n_masked`` grows with ``1 / R``, the masked images at
ACR 2R are a subset of those at ACR R (the paper's "annotated images for small ACRs contain all
annotations of large ACRs"). Validation and test images always keep their full masks.

Rounding: ``ceil`` so that at least ``N / R`` masks are used; the realised ratio ``N / n_masked`` is
then at most R (e.g. N = 100, R = 64 → 2 masks, ratio 50).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dspseg.data.manifest import ImageRecord, Manifest
from dspseg.data.splits import Split, image_class_sets, make_splits
from dspseg.errors import DatasetError, OptionError
from dspseg.vocabulary import KINDS, MIXED_CYCLE, SCENARIOS, Kind

#: what a training image of a reduced dataset may get, strongest first (every kind)
ANNOTATION_TYPES = KINDS


def check_options(acr: float, scenario: str, split: int, n_splits: int) -> None:
    """Raise :class:`~dspseg.errors.OptionError` (a ValueError) naming the option and the fix for an
    unusable ACR setting."""
    if isinstance(acr, bool) or not isinstance(acr, numbers.Real) or not math.isfinite(acr) or acr < 1:
        raise OptionError(f"--acr: expected a number >= 1 (1 keeps every mask, 64 keeps 1 in 64), got {acr!r}")
    if scenario not in SCENARIOS:
        raise OptionError(f"--scenario: expected one of {', '.join(SCENARIOS)}, got {scenario!r}. Fix: use "
                         f"mixed (boxes, points, image labels and nothing dealt evenly) or one weak type")
    if n_splits < 1:
        raise OptionError(f"--n-splits: expected at least 1, got {n_splits}")
    if not 0 <= split < n_splits:
        raise OptionError(f"--split: expected 0..{n_splits - 1} for --n-splits {n_splits}, got {split}. "
                         f"Fix: pick a split below {n_splits} or raise --n-splits")


def order_for_acr(train: Sequence[int], class_sets: Sequence[frozenset[int]], n_classes: int,
                  seed: int | Sequence[int]) -> list[int]:
    """The fixed order of the training images (paper §5.1).

    A seeded shuffle of ``train``; then greedy set cover: repeatedly the first image (in shuffled
    order) holding the most classes not yet covered is moved to the front, until every class found
    in ``train`` is covered. Each pick covers at least one new class, so the first ``C`` images hold
    every class of the training part. Returns the record indices, first = keeps its mask longest.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes: expected at least 1, got {n_classes}")
    rng = np.random.default_rng(seed)
    rest = [int(train[i]) for i in rng.permutation(len(train))]
    uncovered = set().union(*(class_sets[i] for i in rest)) & set(range(n_classes))
    front: list[int] = []
    while uncovered:
        gains = [len(class_sets[i] & uncovered) for i in rest]
        best = int(np.argmax(gains))  # first maximum: earliest in the shuffle
        front.append(rest.pop(best))
        uncovered -= class_sets[front[-1]]
    return front + rest


def n_masked(n_train: int, acr: float) -> int:
    """Images keeping their masks: ``max(1, ceil(n_train / acr))`` (a 1e-9 slack absorbs float error)."""
    if n_train < 1:
        raise ValueError(f"n_train: the training part is empty (got {n_train} images)")
    check_options(acr, "mixed", 0, 1)
    return min(n_train, max(1, math.ceil(n_train / acr - 1e-9)))


def assign_annotations(order: Sequence[int], acr: float, scenario: str) -> dict[int, str]:
    """Record index → ``"mask" | "box" | "point" | "image" | "none"`` for the ordered training images.

    The first :func:`n_masked` images keep masks; the rest get ``MIXED_CYCLE`` in turn (``mixed``)
    or all the scenario's type.
    """
    check_options(acr, scenario, 0, 1)
    m = n_masked(len(order), acr)
    out = {int(i): Kind.MASK for i in order[:m]}
    for j, i in enumerate(order[m:]):
        out[int(i)] = MIXED_CYCLE[j % len(MIXED_CYCLE)] if scenario == "mixed" else scenario
    return out


@dataclass
class ReductionPlan:
    """What the reduction of one split does, before any file is read for weak labels."""

    index: int  # which cross-validation split
    split: Split
    order: list[int]  # training record indices, mask-keeping first
    assignment: dict[int, str]  # training record index → annotation type
    n_masked: int

    @property
    def counts(self) -> dict[str, int]:
        """Training images per annotation type (all five keys)."""
        values = list(self.assignment.values())
        return {t: values.count(t) for t in ANNOTATION_TYPES}

    @property
    def split_sizes(self) -> dict[str, int]:
        return {"train": len(self.split.train), "val": len(self.split.val), "test": len(self.split.test)}


def require_masks(manifest: Manifest) -> None:
    """The protocol reduces a fully masked dataset: every record needs a mask."""
    missing = [f"images[{i}] ({r.source})" for i, r in enumerate(manifest.images) if r.mask is None]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DatasetError(f"field 'mask': {', '.join(missing[:3])}{more} of {len(manifest.images)} images have "
                         f"no mask; the ACR simulation starts from a dataset with a mask on every image. Fix: "
                         f"simulate on the masked images only (drop the others from dataset.json) or annotate them")


def plan_reduction(manifest: Manifest, acr: float, scenario: str, split: int, n_splits: int, seed: int = 0,
                   class_sets: Sequence[frozenset[int]] | None = None) -> ReductionPlan:
    """Split ``split`` of ``n_splits`` (by group, seeded) and the annotation of every training image.

    ``class_sets`` (from :func:`image_class_sets`) can be passed to avoid re-reading the masks.
    """
    check_options(acr, scenario, split, n_splits)
    require_masks(manifest)
    if class_sets is None:
        class_sets = image_class_sets(manifest)
    splits = make_splits([r.group_name for r in manifest.images], class_sets, manifest.n_classes, n_splits,
                         seed=seed, class_names=manifest.classes)
    part = splits[split]
    order = order_for_acr(part.train, class_sets, manifest.n_classes, seed=(seed, split))
    assignment = assign_annotations(order, acr, scenario)
    return ReductionPlan(split, part, order, assignment, n_masked(len(order), acr))


def reduce_records(manifest: Manifest, plan: ReductionPlan, point_mode: str = "interior",
                   seed: int = 0) -> tuple[list[ImageRecord], list[str]]:
    """The reduced records (in manifest order) and warnings; weak labels are derived from the masks.

    A volume section stays a volume record (same volume, axis and index; its group the manifest's,
    ``group_every`` included); its boxes, points and labels come from its mask section, read from the
    label volume one section at a time (:func:`~dspseg.data.volume_items.record_mask`)."""
    from dspseg.data.volume_items import VolumeReader, record_mask
    from dspseg.data.weak import derive_weak_labels

    part_of = plan.split.part_of()
    records, partial = [], []
    reader = VolumeReader(manifest)
    for i, rec in enumerate(manifest.images):
        kind = plan.assignment.get(i, Kind.MASK)
        new = ImageRecord(file=rec.file, volume=rec.volume, axis=rec.axis, index=rec.index, group=rec.group,
                          split=part_of[i])
        new._group_every = manifest.group_every
        if kind == Kind.MASK:
            new.mask = rec.mask
        elif kind != Kind.NONE:
            mask = record_mask(manifest, rec, reader)
            if np.any(mask == manifest.ignore_index):
                partial.append(rec.source)
            weak = derive_weak_labels(mask, manifest.classes, manifest.ignore_index, point_mode=point_mode,
                                      rng=np.random.default_rng([seed, i]))
            if kind == Kind.BOX:
                new.boxes = weak.boxes
            elif kind == Kind.POINT:
                new.points = weak.points
            else:
                new.labels = weak.labels
        records.append(new)
    warnings = []
    if any(r.split is not None for r in manifest.images):
        warnings.append(f"the input's own 'split' fields were replaced by cross-validation split {plan.index}")
    if partial:
        warnings.append(f"{len(partial)} weakened training image(s) had unannotated (ignore) mask pixels, e.g. "
                        f"{partial[0]}; their boxes, points and labels describe only the annotated pixels")
    return records, warnings


def reduce_manifest(manifest: Manifest, acr: float, scenario: str, split: int, n_splits: int, seed: int = 0,
                    point_mode: str = "interior", class_sets: Sequence[frozenset[int]] | None = None) -> Manifest:
    """In-memory reduced dataset: same files and root as ``manifest``, every record with its ``split``.

    Val/test records keep their masks; training records keep the mask, or get the derived boxes,
    points or labels, or nothing, as :func:`plan_reduction` decides. The input is not modified.
    """
    plan = plan_reduction(manifest, acr, scenario, split, n_splits, seed, class_sets)
    records, _ = reduce_records(manifest, plan, point_mode, seed)
    return reduced_manifest(manifest, records, acr, scenario, split)


def reduced_manifest(manifest: Manifest, records: list[ImageRecord], acr: float, scenario: str,
                     split: int) -> Manifest:
    """The reduced dataset of ``records``: named after its ACR, scenario and split, at ``manifest``'s root."""
    out = Manifest(name=f"{manifest.name}-acr{acr:g}-{scenario}-split{split}", classes=list(manifest.classes),
                   ignore_index=manifest.ignore_index, group_every=manifest.group_every, images=records)
    out.root = manifest.root
    return out
