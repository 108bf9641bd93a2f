"""``dspseg validate``: check a dataset folder completely and report every problem, or summarise it.

:func:`validate_dataset` never raises for a user's mistake and never writes anything. It collects
:class:`~dspseg.data.manifest.Problem` s (file, record, field, message, fix) at three levels:

* manifest: JSON syntax (line/column), structure (pydantic), class list, ``ignore_index``, no images;
* record: paths inside the dataset folder, duplicates, class names (with the closest known name),
  empty boxes, labels that contradict the boxes/points, coinciding points;
* files (``check_files=True``): existence, readability, layout, boxes/points inside the image, mask
  shape, mask values, mask vs labels/boxes/points, channel counts, splits vs groups.

Images are opened for their shape only (:func:`~dspseg.data.io.image_size`); masks are read fully,
since their values are checked. Consistency rules follow DESIGN.md §1: ``labels`` is the complete set
of an image's classes; without it the box/point classes are; boxes cover every instance of their class.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dspseg.data.io import ImageReadError, image_size, read_mask_stored
from dspseg.data.manifest import (ImageRecord, Manifest, ManifestError, PathEscapeError, Problem,
                                  load_manifest, manifest_path, parse_manifest, resolve_inside)

ANNOTATION_TYPES = ("mask", "box", "point", "image", "none")
MIN_SIDE = 16  # smaller images trigger a warning: a U-Net downsamples 4 times


@dataclass
class DatasetSummary:
    """What a valid dataset holds. ``class_pixels``: mask pixels per class; ``class_images``: images
    known to contain each class (from masks, labels, boxes and points); ``sizes``: Counter of (H, W);
    ``channels``: Counter of C; ``splits``: Counter over ``train``/``val``/``test``/``none``."""

    n_images: int
    per_type: dict[str, int]
    class_pixels: dict[str, int]
    class_images: dict[str, int]
    sizes: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)
    groups: int = 0
    splits: Counter = field(default_factory=Counter)


@dataclass
class ValidationReport:
    """All problems found (errors and warnings, in discovery order) and, if the manifest could be
    read at all, the summary. ``file`` is the manifest's path."""

    problems: list[Problem]
    summary: DatasetSummary | None
    file: str = ""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when nothing makes the dataset unusable (warnings allowed)."""
        return not self.errors


def validate_dataset(data: str | Path, check_files: bool = True) -> ValidationReport:
    """Check the dataset at ``data`` (folder or ``dataset.json``); see the module docstring."""
    path = manifest_path(data)
    manifest, records, problems = _load(path, str(path))
    if manifest is None:
        return ValidationReport(problems, None, str(path))
    checker = DatasetChecker(manifest, str(path), check_files)
    checker.run(records, expect_images=not any(p.where.startswith("images[") for p in problems))
    return ValidationReport(problems + checker.problems, checker.summary(), str(path))


def _load(path: Path, file: str) -> tuple[Manifest | None, list[tuple[int, ImageRecord]], list[Problem]]:
    """Load the manifest; on structural errors keep going with the records that did parse.

    Returns the manifest (``None`` when even its top level is unusable), ``(index, record)`` pairs
    for the records to check, and the problems found so far.
    """
    try:
        manifest = load_manifest(path)
        return manifest, list(enumerate(manifest.images)), []
    except ManifestError as err:
        problems = list(err.problems)
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None, [], problems
    if not isinstance(raw, dict) or not isinstance(raw.get("images"), list):
        return None, [], problems
    try:
        manifest = parse_manifest({**raw, "images": []}, path.parent, file)
    except ManifestError:
        return None, [], problems
    records = []
    for i, rec in enumerate(raw["images"]):
        try:
            records.append((i, ImageRecord.model_validate(rec)))
        except ValidationError:
            continue  # already reported by load_manifest
    manifest.images = [r for _, r in records]
    return manifest, records, problems


# ----------------------------------------------------------------------------------------- helpers


def closest_class(name: str, classes: list[str]) -> str | None:
    """The known class a misspelt ``name`` most likely means: case-insensitive match, then a unique
    prefix either way (abbreviations), then difflib's closest match (ratio >= 0.6)."""
    lower = {c.lower(): c for c in classes}
    key = name.lower()
    if key in lower:
        return lower[key]
    prefix = [c for c in lower if min(len(c), len(key)) >= 3 and (c.startswith(key) or key.startswith(c))]
    if len(prefix) == 1:  # abbreviation or long form: 'mito' / 'mitochondria'
        return lower[prefix[0]]
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.6)
    return lower[close[0]] if close else None


def _exists(path: Path) -> bool:
    """``path.exists()`` that answers False instead of raising (e.g. for over-long names)."""
    try:
        return path.exists()
    except OSError:
        return False


def _quoted(names: list[str] | set[str], limit: int = 12) -> str:
    names = sorted(names) if isinstance(names, set) else list(names)
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _value_counts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an integer (H, W) mask and their pixel counts (bincount when small)."""
    flat = mask.ravel().astype(np.int64)
    if flat.size and flat.min() >= 0 and flat.max() < (1 << 20):
        bc = np.bincount(flat)
        values = np.flatnonzero(bc)
        return values, bc[values]
    return np.unique(flat, return_counts=True)


@dataclass
class _Box:
    k: int
    cid: int | None  # None: unknown class name (already reported)
    x0: int
    y0: int
    x1: int
    y1: int


# ----------------------------------------------------------------------------------------- checker


class DatasetChecker:
    """Runs every check over the records, collecting problems and the summary statistics."""

    def __init__(self, manifest: Manifest, file: str, check_files: bool):
        self.m, self.file, self.check_files = manifest, file, check_files
        self.problems: list[Problem] = []
        self.ids: dict[str, int] = {}
        for i, name in enumerate(manifest.classes):
            self.ids.setdefault(name, i)
        n = manifest.n_classes
        self.class_pixels = np.zeros(n, np.int64)
        self.class_images = np.zeros(n, np.int64)
        self.per_type: Counter = Counter({t: 0 for t in ANNOTATION_TYPES})
        self.sizes: Counter = Counter()
        self.channels: Counter = Counter()
        self.channel_of: list[tuple[str, str, int]] = []  # (where, image path, C)
        self.meta: list[tuple[str, str, str | None]] = []  # (where, group, split)
        self.files: dict[object, int] = {}
        self.masks: dict[object, int] = {}
        self.presence_known = True  # False once a mask's classes are unknown (unread)

    def add(self, where: str, field: str, message: str, fix: str, severity: str = "error",
            file: str | None = None) -> None:
        self.problems.append(Problem(file or self.file, where, field, message, fix, severity))  # type: ignore[arg-type]

    # -- top level ----------------------------------------------------------------------------

    def run(self, records: list[tuple[int, ImageRecord]], expect_images: bool = True) -> None:
        self._check_classes()
        if not records and expect_images:
            self.add("manifest", "images", "the dataset lists no images",
                     'add one record per image, e.g. {"file": "images/a.tif", "mask": "masks/a.tif"}')
        for i, rec in records:
            try:
                self._check_record(i, rec)
            except Exception as e:  # noqa: BLE001 - a report beats a traceback; says it is our bug
                self.add(f"images[{i}] ({rec.file})", "", f"dspseg failed while checking this record "
                         f"({type(e).__name__}: {e})", "this is a bug in dspseg: please report it with "
                         "this record; the other records were checked")
        self._check_dataset()

    def _check_classes(self) -> None:
        seen: dict[str, int] = {}
        for j, name in enumerate(self.m.classes):
            if not name.strip():
                self.add("manifest", f"classes[{j}]", "a class name is empty",
                         "give every class a name; its position in the list is its id in mask files")
            elif name in seen:
                self.add("manifest", f"classes[{j}]", f"class '{name}' is listed twice "
                         f"(classes[{seen[name]}] and classes[{j}])",
                         "give every class a unique name (the mask value of a class is its position)")
            else:
                seen[name] = j
        ii, n = self.m.ignore_index, self.m.n_classes
        if 0 <= ii < n:
            self.add("manifest", "ignore_index", f"ignore_index {ii} is also the id of class "
                     f"'{self.m.classes[ii]}' (class ids are 0..{n - 1})",
                     f"set ignore_index to a value no class uses, e.g. {255 if n <= 255 else 65535}")

    # -- one record ---------------------------------------------------------------------------

    def _path(self, where: str, field: str, rel: str) -> Path | None:
        try:
            return resolve_inside(self.m.root, rel)
        except PathEscapeError as e:
            self.add(where, field, f"the path leaves the dataset folder: {e}",
                     "keep images and masks inside the folder holding dataset.json (copy them in "
                     "rather than linking) and write paths relative to it, without '..'")
        except OSError as e:
            self.add(where, field, f"the path cannot be used ({e.strerror})", "shorten or correct the path")
        return None

    def _class_id(self, where: str, field: str, name: str) -> int | None:
        if name in self.ids:
            return self.ids[name]
        close = closest_class(name, self.m.classes)
        known = f"known classes: {_quoted(self.m.classes)}"
        fix = (f"write '{close}' (the closest class name) or append '{name}' to 'classes'; {known}" if close
               else f"use a class listed in 'classes' or append '{name}' to it; {known}")
        self.add(where, field, f"unknown class '{name}'", fix)
        return None

    def _check_record(self, i: int, rec: ImageRecord) -> None:
        where = f"images[{i}] ({rec.file})"
        self.per_type[rec.annotation_type] += 1
        self.meta.append((where, rec.group_name, rec.split))
        img = self._path(where, "file", rec.file)
        mask_p = self._path(where, "mask", rec.mask) if rec.mask is not None else None
        self._check_duplicates(i, where, rec, img, mask_p)

        boxes, boxes_ok = self._boxes(where, rec)
        points, points_ok = self._points(where, rec)
        names_ok = boxes_ok and points_ok

        declared: set[int] | None = None
        if rec.labels is not None:
            label_ids = [self._class_id(where, f"labels[{k}]", n) for k, n in enumerate(rec.labels)]
            names_ok &= None not in label_ids
            declared = {c for c in label_ids if c is not None}
            self._check_labels(where, rec, declared, boxes, points)
        elif rec.boxes or rec.points:
            declared = {b.cid for b in boxes} | {p[1] for p in points}
            declared.discard(None)
        if rec.split in ("val", "test") and rec.mask is None:
            self.add(where, "mask", f"the image is in split '{rec.split}' but has no mask, so it cannot "
                     "be scored", "give val/test images a full mask, or move the image to train", "warning")

        present = (set(declared or ()) | {b.cid for b in boxes} | {p[1] for p in points}) - {None}
        size = self._image(where, rec.file, img) if self.check_files and img is not None else None
        if size is not None:
            boxes, points = self._check_geometry(where, rec, size, boxes, points, declared, names_ok)
        if rec.mask is not None and not self.check_files:
            self.presence_known = False
        if self.check_files and mask_p is not None:
            mask = self._read_mask(where, rec.mask or "", mask_p)
            if mask is None:
                self.presence_known = False
            else:
                present |= self._check_mask(where, rec, mask, size, declared, names_ok, boxes, points)
        self.class_images[sorted(present)] += 1

    def _boxes(self, where: str, rec: ImageRecord) -> tuple[list[_Box], bool]:
        """Non-empty boxes (class id ``None`` if unknown) and whether every class name is known."""
        names_ok, boxes = True, []
        for k, b in enumerate(rec.boxes or []):
            cid = self._class_id(where, f"boxes[{k}].class", b.cls)
            names_ok &= cid is not None
            x0, y0, x1, y1 = b.xyxy
            if x1 <= x0 or y1 <= y0:
                hint = "; convert [x, y, width, height] boxes to corners" if x1 < x0 or y1 < y0 else ""
                self.add(where, f"boxes[{k}].xyxy", f"box {list(b.xyxy)} is empty: it needs x1 > x0 "
                         "and y1 > y0", "write [x0, y0, x1, y1], half-open: a one-pixel box is "
                         f"[x, y, x+1, y+1]{hint}")
            else:
                boxes.append(_Box(k, cid, x0, y0, x1, y1))
        return boxes, names_ok

    def _points(self, where: str, rec: ImageRecord) -> tuple[list[tuple[int, int | None, int, int]], bool]:
        """``(k, class id or None, x, y)`` per point, whether every name is known; flags coinciding points."""
        names_ok, points = True, []
        at: dict[tuple[int, int], tuple[int, str]] = {}
        for k, p in enumerate(rec.points or []):
            cid = self._class_id(where, f"points[{k}].class", p.cls)
            names_ok &= cid is not None
            x, y = p.xy
            if (x, y) in at and at[(x, y)][1] != p.cls:
                self.add(where, f"points[{k}]", f"point {list(p.xy)} is '{p.cls}' but points[{at[(x, y)][0]}] "
                         f"marks the same pixel as '{at[(x, y)][1]}'",
                         "a pixel has one class: move or remove one of the points")
            elif (x, y) in at:
                self.add(where, f"points[{k}]", f"point {list(p.xy)} repeats points[{at[(x, y)][0]}]",
                         "remove the duplicate point", "warning")
            at.setdefault((x, y), (k, p.cls))
            points.append((k, cid, x, y))
        return points, names_ok

    def _check_duplicates(self, i: int, where: str, rec: ImageRecord, img: Path | None,
                          mask_p: Path | None) -> None:
        key = img if img is not None else rec.file
        if key in self.files:
            self.add(where, "file", f"the image is also listed as images[{self.files[key]}]",
                     "list each image once and put all its annotations (mask, boxes, points, labels) "
                     "in that one record")
        else:
            self.files[key] = i
        if mask_p is None:
            return
        if mask_p == img:
            self.add(where, "mask", "'mask' names the image file itself",
                     "point 'mask' at the label file that holds class ids")
        elif mask_p in self.masks:
            self.add(where, "mask", f"the same mask file is also used by images[{self.masks[mask_p]}]",
                     "give every image its own mask (a copy-paste slip?)", "warning")
        else:
            self.masks[mask_p] = i

    def _check_labels(self, where: str, rec: ImageRecord, declared: set[int],
                      boxes: list[_Box], points: list[tuple[int, int | None, int, int]]) -> None:
        if rec.labels == []:
            self.add(where, "labels", "'labels' is empty, but every pixel belongs to some class",
                     "list the classes present in the image, or remove 'labels' if it is unlabeled")
        for name, n in Counter(rec.labels or []).items():
            if n > 1:
                self.add(where, "labels", f"'{name}' is listed {n} times", "list each class once", "warning")
        for b in boxes:
            if b.cid is not None and b.cid not in declared:
                name = self.m.classes[b.cid]
                self.add(where, f"boxes[{b.k}].class", f"the box is '{name}' but 'labels' does not list "
                         f"'{name}'", f"add '{name}' to 'labels' (it lists every class present) or correct the box")
        for k, cid, _, _ in points:
            if cid is not None and cid not in declared:
                name = self.m.classes[cid]
                self.add(where, f"points[{k}].class", f"the point is '{name}' but 'labels' does not list "
                         f"'{name}'", f"add '{name}' to 'labels' (it lists every class present) or correct the point")

    def _image(self, where: str, rel: str, path: Path) -> tuple[int, int, int] | None:
        if not _exists(path):
            self.add(where, "file", f"the image file does not exist (looked for {self.m.root / rel})",
                     "check the spelling; paths are relative to the folder holding dataset.json")
            return None
        try:
            c, h, w = image_size(path)
        except ImageReadError as e:
            self.add(where, "file", e.reason, e.fix, file=str(self.m.root / rel))
            return None
        self.sizes[(h, w)] += 1
        self.channels[c] += 1
        self.channel_of.append((where, str(self.m.root / rel), c))
        if min(h, w) < MIN_SIDE:
            self.add(where, "file", f"the image is only {h}x{w} pixels (rows x columns)",
                     f"use images of at least {MIN_SIDE}x{MIN_SIDE}; the U-Net halves the size 4 times",
                     "warning", str(self.m.root / rel))
        return c, h, w

    def _read_mask(self, where: str, rel: str, path: Path) -> np.ndarray | None:
        if not _exists(path):
            self.add(where, "mask", f"the mask file does not exist (looked for {self.m.root / rel})",
                     "check the spelling; paths are relative to the folder holding dataset.json")
            return None
        try:
            return read_mask_stored(path)
        except ImageReadError as e:
            self.add(where, "mask", e.reason, e.fix, file=str(self.m.root / rel))
            return None

    def _check_geometry(self, where: str, rec: ImageRecord, size: tuple[int, int, int], boxes: list[_Box],
                        points: list[tuple[int, int | None, int, int]], declared: set[int] | None,
                        names_ok: bool) -> tuple[list[_Box], list[tuple[int, int | None, int, int]]]:
        """Boxes and points inside the image (returns those that are); the all-boxed coverage warning."""
        _, h, w = size
        extent = f"the image is {w} columns (x) by {h} rows (y)"
        inside = []
        for b in boxes:
            if b.x0 >= 0 and b.y0 >= 0 and b.x1 <= w and b.y1 <= h:
                inside.append(b)
                continue
            swapped = b.y0 >= 0 and b.x0 >= 0 and b.y1 <= w and b.x1 <= h
            self.add(where, f"boxes[{b.k}].xyxy", f"box {[b.x0, b.y0, b.x1, b.y1]} reaches outside the "
                     f"image: {extent}", f"keep 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h} (half-open)"
                     + ("; it would fit with x and y swapped: x is the column" if swapped else ""))
        kept = []
        for k, cid, x, y in points:
            if 0 <= x < w and 0 <= y < h:
                kept.append((k, cid, x, y))
                continue
            swapped = 0 <= y < w and 0 <= x < h
            self.add(where, f"points[{k}].xy", f"point {[x, y]} lies outside the image: {extent}",
                     f"keep 0 <= x < {w} and 0 <= y < {h}"
                     + ("; it would fit with x and y swapped: x is the column" if swapped else ""))
        all_ok = names_ok and len(inside) == len(rec.boxes or []) and len(kept) == len(rec.points or [])
        if inside and all_ok and declared is not None and declared <= {b.cid for b in inside}:
            covered = np.zeros((h, w), bool)
            for b in inside:
                covered[b.y0:b.y1, b.x0:b.x1] = True
            n_out = int((~covered).sum())
            if n_out:
                self.add(where, "boxes", f"{n_out} pixel(s) lie outside every box although every class "
                         f"of the image ({_quoted({self.m.classes[c] for c in declared})}) is boxed, so "
                         "no class is possible there (they fall back to the image's classes)",
                         "box the remaining objects (often the background as one box), or list the "
                         "unboxed class in 'labels'", "warning")
        return inside, kept

    def _check_mask(self, where: str, rec: ImageRecord, mask: np.ndarray, size: tuple[int, int, int] | None,
                    declared: set[int] | None, names_ok: bool, boxes: list[_Box],
                    points: list[tuple[int, int | None, int, int]]) -> set[int]:
        """Values, shape and agreement with labels/boxes/points; returns the classes the mask shows."""
        mfile = str(self.m.root / (rec.mask or ""))
        n, ii, names = self.m.n_classes, self.m.ignore_index, self.m.classes
        top = 1 if mask.dtype == np.bool_ else int(np.iinfo(mask.dtype).max)
        if n - 1 > top:
            self.add(where, "mask", f"the mask is stored as {mask.dtype} (values up to {top}) but the "
                     f"dataset has {n} classes (ids up to {n - 1})", "save masks as 16-bit (uint16)", file=mfile)
        values, counts = _value_counts(mask)
        valid = (values >= 0) & (values < n)
        pix = np.zeros(n, np.int64)
        pix[values[valid]] = counts[valid]
        self.class_pixels += pix
        n_ignore = int(counts[values == ii].sum())
        bad = ~valid & (values != ii)
        if bad.any():
            listing = ", ".join(f"{v} ({c} pixel(s))" for v, c in zip(values[bad][:8], counts[bad][:8]))
            more = f" and {int(bad.sum()) - 8} more values" if bad.sum() > 8 else ""
            fix = (f"store each pixel's class id (its position in 'classes', 0..{n - 1}) or ignore_index "
                   f"{ii} for unannotated pixels")
            if set(values[bad].tolist()) == {255} and ii != 255:
                fix += "; if 255 marks unannotated pixels, set \"ignore_index\": 255"
            self.add(where, "mask", f"mask values {listing}{more} are neither a class id (0..{n - 1}) "
                     f"nor ignore_index {ii}", fix, file=mfile)
        if n_ignore == mask.size:
            self.add(where, "mask", f"every pixel is ignore_index {ii}: the mask annotates nothing",
                     "annotate some pixels or remove 'mask' from this record", "warning", mfile)
        shown = set(np.flatnonzero(pix).tolist())
        if size is not None and mask.shape != size[1:]:
            self.add(where, "mask", f"the mask is {mask.shape[0]}x{mask.shape[1]} (rows x columns) but "
                     f"the image is {size[1]}x{size[2]}", "save the mask at the image's size; check that "
                     "it belongs to this image", file=mfile)
            return shown
        if not names_ok or size is None:
            return shown
        if declared is not None:
            src = ("'labels' does not list it" if rec.labels is not None else "the image has no 'labels', so its "
                   f"boxes/points ({_quoted({names[c] for c in declared})}) are its complete class set")
            for c in sorted(shown - declared):
                self.add(where, "mask", f"the mask has {pix[c]} pixel(s) of class '{names[c]}', but {src}",
                         f"add '{names[c]}' to 'labels' (it lists every class present) or correct the mask")
            if rec.labels is not None and n_ignore == 0:
                for c in sorted(declared - shown):
                    self.add(where, "labels", f"'labels' lists '{names[c]}' but the mask, which annotates "
                             "every pixel, has none", f"remove '{names[c]}' from 'labels' or correct the mask")
        m64 = mask.astype(np.int64)
        for k, cid, x, y in points:
            v = int(m64[y, x])
            if v != cid and v != ii and 0 <= v < n:
                self.add(where, f"points[{k}]", f"the point at [{x}, {y}] is '{names[cid]}' but the mask says "
                         f"'{names[v]}' there", "move the point (x = column, y = row) or correct its class")
        valid = {b.k for b in boxes}
        broken = {self.ids.get(b.cls) for k, b in enumerate(rec.boxes or []) if k not in valid}
        for cid in sorted({b.cid for b in boxes} - broken):  # type: ignore[type-var]
            union = np.zeros(m64.shape, bool)
            for b in boxes:
                if b.cid == cid:
                    union[b.y0:b.y1, b.x0:b.x1] = True
                    region = m64[b.y0:b.y1, b.x0:b.x1]
                    if not ((region == cid) | (region == ii)).any():
                        self.add(where, f"boxes[{b.k}]", f"the mask has no '{names[cid]}' pixel inside the box",
                                 "move the box onto the object or correct its class")
            n_out = int(((m64 == cid) & ~union).sum())
            if n_out:
                self.add(where, "boxes", f"the mask has {n_out} pixel(s) of '{names[cid]}' outside every "
                         f"'{names[cid]}' box, but boxes cover every instance of their class",
                         f"add boxes around the remaining '{names[cid]}' objects or correct the mask")
        return shown

    # -- whole dataset ------------------------------------------------------------------------

    def _check_dataset(self) -> None:
        total = sum(self.channels.values())
        if len(self.channels) > 1:
            common, n_common = self.channels.most_common(1)[0]
            for where, path, c in self.channel_of:
                if c != common:
                    self.add(where, "file", f"the image has {c} channel(s) but {n_common} of {total} images "
                             f"have {common}", "the network takes a fixed number of input channels: save "
                             "every image with the same channels (e.g. grayscale as one)", file=path)
        without = [w for w, _, s in self.meta if s is None]
        if 0 < len(without) < len(self.meta):
            self.add("manifest", "images[].split", f"{len(without)} of {len(self.meta)} images have no "
                     f"'split' (e.g. {'; '.join(without[:3])})", "give every image a split (train, val or "
                     "test) or none (then `dspseg simulate` makes group-respecting splits)", "warning")
        by_group: dict[str, dict[str, list[str]]] = {}
        for where, g, s in self.meta:
            if s is not None:
                by_group.setdefault(g, {}).setdefault(s, []).append(where.split(" ")[0])
        for g, splits in by_group.items():
            if len(splits) > 1:
                parts = "; ".join(f"{s}: {', '.join(ws[:3])}" + (" ..." if len(ws) > 3 else "")
                                  for s, ws in splits.items())
                self.add("manifest", "images[].group", f"group '{g}' is cut across splits ({parts})",
                         f"put every image of group '{g}' in one split: sections of one sub-volume are "
                         "near-duplicates, so cutting it leaks test data into training")
        annotated = sum(v for t, v in self.per_type.items() if t != "none")
        if annotated and self.presence_known:
            for c, name in enumerate(self.m.classes):
                if self.class_images[c] == 0 and self.ids.get(name) == c:
                    self.add("manifest", f"classes[{c}]", f"class '{name}' occurs in no mask, label, box or "
                             "point", "annotate at least one example, or drop the class (and renumber the "
                             "masks)", "warning")

    def summary(self) -> DatasetSummary:
        names = self.m.classes
        return DatasetSummary(
            n_images=len(self.meta),
            per_type=dict(self.per_type),
            class_pixels={names[c]: int(self.class_pixels[c]) for c in range(len(names))},
            class_images={names[c]: int(self.class_images[c]) for c in range(len(names))},
            sizes=Counter(self.sizes), channels=Counter(self.channels),
            groups=len({g for _, g, _ in self.meta}),
            splits=Counter(s or "none" for _, _, s in self.meta),
        )


# ----------------------------------------------------------------------------------------- rendering


def render_report(report: ValidationReport, console: Console) -> None:
    """Print every problem (errors, then warnings), then either a failure line or the summary tables."""
    for p in report.errors + report.warnings:
        colour = "red" if p.severity == "error" else "yellow"
        loc = p.where + (f", field '{p.field}'" if p.field else "")
        console.print(Text.assemble((f"{p.severity}: ", f"bold {colour}"), (p.file, "bold"), f": {loc}"))
        console.print(Text.assemble("    ", p.message))
        console.print(Text.assemble(("    fix: ", "green"), p.fix))
    n_err, n_warn = len(report.errors), len(report.warnings)
    if not report.ok:
        console.print(Text(f"{report.file}: {n_err} error(s), {n_warn} warning(s); fix the errors and run "
                           "`dspseg validate` again.", style="bold red"))
        return
    s = report.summary
    if s is None:
        return
    console.print(Text(f"{report.file}: OK, {s.n_images} images" + (f", {n_warn} warning(s)" if n_warn else ""),
                       style="bold green"))
    total = max(s.n_images, 1)
    console.print(Text("Images per annotation type", style="bold"))
    t = Table()
    t.add_column("type")
    t.add_column("images", justify="right")
    t.add_column("%", justify="right")
    for kind in ANNOTATION_TYPES:
        n = s.per_type.get(kind, 0)
        t.add_row(kind, str(n), f"{100 * n / total:.1f}")
    console.print(t)
    pixels = max(sum(s.class_pixels.values()), 1)
    console.print(Text("Classes: pixels in masks, images known to contain the class", style="bold"))
    t = Table()
    for col, just in (("id", "right"), ("class", "left"), ("mask pixels", "right"), ("% of pixels", "right"),
                      ("images", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for c, name in enumerate(s.class_pixels):
        n = s.class_pixels[name]
        t.add_row(str(c), name, str(n), f"{100 * n / pixels:.2f}", str(s.class_images.get(name, 0)))
    console.print(t)
    console.print(Text("Image sizes", style="bold"))
    t = Table()
    for col in ("rows x columns", "images"):
        t.add_column(col, justify="right")
    for (h, w), n in sorted(s.sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        t.add_row(f"{h} x {w}", str(n))
    console.print(t)
    chans = ", ".join(f"{c} ({n} images)" for c, n in sorted(s.channels.items())) or "not checked"
    splits = ", ".join(f"{k}: {s.splits[k]}" for k in ("train", "val", "test", "none") if s.splits.get(k))
    console.print(Text(f"channels: {chans}; groups: {s.groups}; splits: {splits or '-'}"))
