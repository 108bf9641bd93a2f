"""The paper's Annotation Compression Ratio protocol (§4, §5.1): reduce a fully masked dataset.

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

import errno
import json
import math
import numbers
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from dspseg.data.manifest import MANIFEST_NAME, ImageRecord, Manifest, load_manifest, save_manifest
from dspseg.data.splits import Split, image_class_sets, make_splits

SCENARIOS = ("mixed", "box", "point", "image")
ANNOTATION_TYPES = ("mask", "box", "point", "image", "none")
MIXED_CYCLE = ("box", "point", "image", "none")


def check_options(acr: float, scenario: str, split: int, n_splits: int) -> None:
    """Raise ValueError naming the option and the fix for an unusable ACR setting."""
    if isinstance(acr, bool) or not isinstance(acr, numbers.Real) or not math.isfinite(acr) or acr < 1:
        raise ValueError(f"--acr: expected a number >= 1 (1 keeps every mask, 64 keeps 1 in 64), got {acr!r}")
    if scenario not in SCENARIOS:
        raise ValueError(f"--scenario: expected one of {', '.join(SCENARIOS)}, got {scenario!r}. Fix: use "
                         f"mixed (boxes, points, image labels and nothing dealt evenly) or one weak type")
    if n_splits < 1:
        raise ValueError(f"--n-splits: expected at least 1, got {n_splits}")
    if not 0 <= split < n_splits:
        raise ValueError(f"--split: expected 0..{n_splits - 1} for --n-splits {n_splits}, got {split}. "
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
    out = {int(i): "mask" for i in order[:m]}
    for j, i in enumerate(order[m:]):
        out[int(i)] = MIXED_CYCLE[j % 4] if scenario == "mixed" else scenario
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
    missing = [f"images[{i}] ({r.file})" for i, r in enumerate(manifest.images) if r.mask is None]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ValueError(f"field 'mask': {', '.join(missing[:3])}{more} of {len(manifest.images)} images have "
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
    """The reduced records (in manifest order) and warnings; weak labels are derived from the masks."""
    from dspseg.data.io import read_mask
    from dspseg.data.weak import derive_weak_labels

    part_of = plan.split.part_of()
    records, partial = [], []
    for i, rec in enumerate(manifest.images):
        kind = plan.assignment.get(i, "mask")
        new = ImageRecord(file=rec.file, group=rec.group, split=part_of[i])
        if kind == "mask":
            new.mask = rec.mask
        elif kind != "none":
            mask = read_mask(manifest.path(rec.mask))
            if np.any(mask == manifest.ignore_index):
                partial.append(rec.file)
            weak = derive_weak_labels(mask, manifest.classes, manifest.ignore_index, point_mode=point_mode,
                                      rng=np.random.default_rng([seed, i]))
            if kind == "box":
                new.boxes = weak.boxes
            elif kind == "point":
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
    out = Manifest(name=f"{manifest.name}-acr{acr:g}-{scenario}-split{split}", classes=list(manifest.classes),
                   ignore_index=manifest.ignore_index, images=records)
    out.root = manifest.root
    return out


# ------------------------------------------------------------------------------ writing a dataset folder

SIMULATION_FILE = "simulation.json"
SIMULATION_FORMAT = "dspseg-simulation/1"
_LINK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


@dataclass
class SimulationResult:
    """A written simulation: the reduced dataset (``manifest.root == out``) and what was done."""

    manifest: Manifest
    counts: dict[str, int]  # training images per annotation type
    split_sizes: dict[str, int]
    out: Path
    acr: float
    scenario: str
    split: int
    n_splits: int
    seed: int
    n_masked: int
    order: list[str]  # training image files, mask-keeping first
    linked: bool  # True: files are hard links to the originals; False: copies (other filesystem)
    warnings: list[str] = field(default_factory=list)


def simulate_dataset(data: str | Path, out: str | Path, acr: float, scenario: str, split: int, n_splits: int = 3,
                     seed: int = 0, point_mode: str = "interior") -> SimulationResult:
    """Write the reduced dataset of split ``split`` at ACR ``acr`` to the new folder ``out``.

    ``out`` gets ``dataset.json`` (every record with its ``split``), ``simulation.json`` (source,
    options, counts, the ordered training list) and the image and kept mask files under the same
    relative paths as in the source, as hard links (same inode, no bytes copied; copies with a
    warning when ``out`` is on another filesystem). The source dataset is never written to. A
    non-empty ``out`` is refused unless it holds a previous simulation and nothing else; that one is
    replaced by building a temporary sibling folder and swapping it in.
    """
    check_options(acr, scenario, split, n_splits)
    source = load_manifest(data)
    out = Path(out)
    _check_out(source.root, out)
    plan = plan_reduction(source, acr, scenario, split, n_splits, seed)
    records, warnings = reduce_records(source, plan, point_mode, seed)
    reduced = reduced_manifest(source, records, acr, scenario, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        _ordinary_mode(tmp, 0o777)  # mkdtemp/mkstemp make private 0700/0600 entries
        linked, why = _place_files(source, reduced, tmp)
        if not linked:
            warnings.append(f"{out} is on another filesystem than {source.root} ({why}): the files were copied")
        save_manifest(reduced, tmp)
        order = [source.images[i].file for i in plan.order]
        info = {"format": SIMULATION_FORMAT, "source": str(Path(os.path.realpath(source.root))),
                "acr": acr, "scenario": scenario, "split": split, "n_splits": n_splits, "seed": seed,
                "point_mode": point_mode, "n_masked": plan.n_masked,
                "realised_acr": len(plan.order) / plan.n_masked, "counts": plan.counts,
                "split_sizes": plan.split_sizes,
                "groups": {p: sorted({source.images[i].group_name for i in getattr(plan.split, p)})
                           for p in ("train", "val", "test")},
                "train_order": [{"file": f, "annotation": plan.assignment[i]} for f, i in zip(order, plan.order)],
                "files": "hard links to the source files (editing one in place edits the other)" if linked
                else "copies of the source files"}
        (tmp / SIMULATION_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        _ordinary_mode(tmp / MANIFEST_NAME, 0o666)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SimulationResult(load_manifest(out), plan.counts, plan.split_sizes, out, acr, scenario, split, n_splits,
                            seed, plan.n_masked, order, linked, warnings)


def _ordinary_mode(path: Path, full: int) -> None:
    """Give a file or folder we created the permissions the user's umask gives new files."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, full & ~umask)


def _check_out(source_root: Path, out: Path) -> None:
    src, dst = Path(os.path.realpath(source_root)), Path(os.path.realpath(out))
    if dst == src or src in dst.parents:
        raise ValueError(f"--out {out} is inside the input dataset {source_root}; dspseg never writes into the "
                         f"input. Fix: choose a folder outside it")
    if dst in src.parents:
        raise ValueError(f"--out {out} contains the input dataset {source_root}. Fix: choose a new folder")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file. Fix: choose a new folder")
    if out.is_dir() and any(out.iterdir()):
        _previous_simulation(out)  # raises unless it is one


def _previous_simulation(out: Path) -> None:
    """Raise ValueError unless ``out`` holds a previous simulation and nothing that it did not write."""
    fix = "choose another --out, or empty it yourself"
    try:
        info = json.loads((out / SIMULATION_FILE).read_text(encoding="utf-8"))
        if info.get("format") != SIMULATION_FORMAT:
            raise ValueError
        old = load_manifest(out)
    except (OSError, ValueError, AttributeError):
        raise ValueError(f"--out {out} is not empty and does not hold a previous dspseg simulation; dspseg "
                         f"replaces only its own folders. Fix: {fix}") from None
    expected = {MANIFEST_NAME, SIMULATION_FILE}
    for rec in old.images:
        expected.update(posixpath.normpath(p) for p in (rec.file, rec.mask) if p is not None)
    extra = []
    for folder, dirs, files in os.walk(out):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            rel = Path(folder, name).relative_to(out).as_posix()
            if rel not in expected or os.path.islink(os.path.join(folder, name)):
                extra.append(rel)
    if extra:
        raise ValueError(f"--out {out} holds a previous simulation plus files it did not write "
                         f"({', '.join(sorted(extra)[:3])}{' ...' if len(extra) > 3 else ''}); they would be "
                         f"deleted. Fix: move them away or {fix}")


def _place_files(source: Manifest, reduced: Manifest, folder: Path) -> tuple[bool, str]:
    """Hard-link (or copy) every image and kept mask of ``reduced`` into ``folder``; rewrite paths.

    Returns (linked, reason for copying). Paths keep their relative form, normalised.
    """
    linked, why, placed = True, "", {}
    for rec in reduced.images:
        for attr in ("file", "mask"):
            rel = getattr(rec, attr)
            if rel is None:
                continue
            new = posixpath.normpath(rel)
            if new in (MANIFEST_NAME, SIMULATION_FILE, "."):
                raise ValueError(f"field '{attr}' of {rel}: this name is reserved in a simulation folder. "
                                 f"Fix: rename the file in the source dataset")
            setattr(rec, attr, new)
            src = source.path(rel)
            if new in placed:
                continue
            placed[new] = src
            dst = folder / new
            dst.parent.mkdir(parents=True, exist_ok=True)
            if linked:
                try:
                    os.link(src, dst)
                    continue
                except OSError as e:
                    if e.errno not in _LINK_ERRNOS:
                        raise
                    linked, why = False, e.strerror or str(e)
            shutil.copy2(src, dst)
    return linked, why


def _swap_in(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an empty folder or a previous simulation."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(tmp, out)
        return
    _previous_simulation(out)  # re-check just before deleting anything
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rename(out, old / "previous")
    os.rename(tmp, out)
    shutil.rmtree(old)
