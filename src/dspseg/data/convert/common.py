"""What every converter shares: finding images, collecting annotations in pixel units, writing the dataset.

Pixel conventions (arrays are ``[row, col]``; x = column, y = row):

* dspseg boxes are half-open integer boxes ``[x0, y0, x1, y1]``; points are pixels ``[x, y]``.
* Corner convention (COCO, QuPath): pixel i covers [i, i+1). A point (x, y) is pixel (floor x, floor y);
  a box from (xa, ya) to (xb, yb) covers ``[floor xa, floor ya, ceil xb, ceil yb]``.
* Centre convention (napari): pixel i covers [i-0.5, i+0.5). A point is pixel (round x, round y); a
  rectangle covers the pixels whose centres lie inside it: ``[ceil xa, ceil ya, floor xb + 1, floor yb + 1]``.

Boxes are clipped to the image; a box left empty and a point outside the image are dropped with a note
(the box and point rules are :mod:`dspseg.data.rules`').
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from dspseg.cli_support import closest, refuse_used_folder
from dspseg.data.io import image_size, read_mask_stored, write_mask
from dspseg.data.manifest import Box, ImageRecord, Manifest, Point, save_manifest
from dspseg.data.rules import box_empty, clip_box, invalid_mask_values, point_inside
from dspseg.errors import ConvertError
from dspseg.fsutil import new_folder

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
SEPARATORS = "_-. "


def corner_box(xa: float, ya: float, xb: float, yb: float) -> tuple[int, int, int, int]:
    """Half-open pixel box of a box given by corner coordinates (pixel i covers [i, i+1))."""
    return (math.floor(min(xa, xb)), math.floor(min(ya, yb)), math.ceil(max(xa, xb)), math.ceil(max(ya, yb)))


def centre_box(xa: float, ya: float, xb: float, yb: float) -> tuple[int, int, int, int]:
    """Half-open pixel box of the pixels whose centres lie in the rectangle (pixel i covers [i-.5, i+.5))."""
    return (math.ceil(min(xa, xb)), math.ceil(min(ya, yb)), math.floor(max(xa, xb)) + 1, math.floor(max(ya, yb)) + 1)


class ImageIndex:
    """The image files below ``root`` (recursively), by relative POSIX path, with cached sizes."""

    def __init__(self, root: Path, exclude: set[Path] | None = None):
        if not root.is_dir():
            raise ConvertError(f"--images {root} is not a folder; give the folder holding the images")
        skip = {p.resolve() for p in (exclude or set())}
        self.root = root
        self.files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                      and p.resolve() not in skip}
        if not self.files:
            raise ConvertError(f"--images {root} holds no .tif, .tiff, .png or .jpg image")
        self._sizes: dict[str, tuple[int, int]] = {}

    def size(self, rel: str) -> tuple[int, int]:
        """(H, W) of an image (header only)."""
        if rel not in self._sizes:
            _, h, w = image_size(self.files[rel])
            self._sizes[rel] = (h, w)
        return self._sizes[rel]

    def find(self, name: str, where: str) -> str:
        """The image named ``name`` (relative path, then unique file name, then unique stem)."""
        name = name.replace("\\", "/")
        while name.startswith("./"):
            name = name[2:]
        if name in self.files:
            return name
        for key in (lambda r: r.rsplit("/", 1)[-1], lambda r: Path(r).stem):
            target = key(name)
            hits = [r for r in self.files if key(r) == target]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise ConvertError(f"{where}: '{name}' matches several images ({', '.join(hits[:4])}); "
                                   "give unique file names")
        raise ConvertError(f"{where}: no image '{name}' in --images {self.root}"
                           f"{self._closest(Path(name).stem)}; check --images")

    def match_prefix(self, stem: str, where: str) -> tuple[str, str]:
        """The image whose stem ``stem`` starts with (longest first, then a separator) and the rest.

        ``cell01_mito`` → (``cell01.tif``, ``mito``); ``cell01`` → (``cell01.tif``, ``""``).
        """
        best: list[str] = []
        best_len = -1
        for rel in self.files:
            s = Path(rel).stem
            if stem == s or (stem.startswith(s) and stem[len(s)] in SEPARATORS):
                if len(s) > best_len:
                    best, best_len = [rel], len(s)
                elif len(s) == best_len:
                    best.append(rel)
        if not best:
            raise ConvertError(f"{where}: no image in --images {self.root} matches this file's name{self._closest(stem)}; "
                               "name annotation files after their image (cell01.csv, cell01_mito.csv)")
        if len(best) > 1:
            raise ConvertError(f"{where}: the name matches several images ({', '.join(best[:4])}); "
                               "give the images unique names")
        return best[0], stem[best_len:].lstrip(SEPARATORS)

    def _closest(self, stem: str) -> str:
        close = closest(stem, [Path(r).stem for r in self.files])
        return f" (closest: '{close}')" if close else ""


@dataclass
class Annotation:
    boxes: list[Box] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    mask: Path | None = None


@dataclass
class Collected:
    """Annotations per image (relative path), classes in order of first appearance, and notes."""

    index: ImageIndex
    records: dict[str, Annotation] = field(default_factory=dict)
    class_order: list[str] = field(default_factory=list)
    first_seen: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def image(self, rel: str) -> Annotation:
        return self.records.setdefault(rel, Annotation())

    def note_class(self, cls: str, where: str) -> str:
        cls = str(cls).strip()
        if not cls:
            raise ConvertError(f"{where}: the class name is empty; give every annotation a class")
        if cls not in self.first_seen:
            self.first_seen[cls] = where
            self.class_order.append(cls)
        return cls

    def add_box(self, rel: str, cls: str, box: tuple[int, int, int, int], where: str) -> None:
        h, w = self.index.size(rel)
        clipped = clip_box(box, h, w)
        if box_empty(clipped):
            self.warnings.append(f"{where}: box {list(box)} lies outside the {w}x{h} image {rel}; dropped")
            return
        self.image(rel).boxes.append(Box(cls=self.note_class(cls, where), xyxy=clipped))

    def add_point(self, rel: str, cls: str, x: int, y: int, where: str) -> None:
        h, w = self.index.size(rel)
        if not point_inside((x, y), h, w):
            self.warnings.append(f"{where}: point [{x}, {y}] lies outside the {w}x{h} image {rel}; dropped")
            return
        self.image(rel).points.append(Point(cls=self.note_class(cls, where), xy=(x, y)))

    def add_tag(self, rel: str, cls: str, where: str) -> None:
        self.image(rel).tags.add(self.note_class(cls, where))


def resolve_classes(col: Collected, classes: list[str] | None) -> list[str]:
    """``classes`` if given (every class used must be in it), else the classes in order of appearance."""
    if classes is None:
        if not col.class_order:
            raise ConvertError("the annotations name no class; pass --classes")
        return list(col.class_order)
    if len(set(classes)) != len(classes) or not classes:
        raise ConvertError(f"--classes must list distinct names, got {classes}")
    for cls in col.class_order:
        if cls not in classes:
            close = closest(cls, classes)
            hint = f" (did you mean '{close}'?)" if close else ""
            raise ConvertError(f"{col.first_seen[cls]}: class '{cls}' is not in --classes{hint}; add it to --classes")
    return list(classes)


def check_mask_values(path: Path, n_classes: int, ignore_index: int, size: tuple[int, int]) -> None:
    """Raise ConvertError unless ``path`` is an (H, W) mask of values 0..n_classes-1 or ignore_index."""
    import numpy as np

    mask = read_mask_stored(path)
    if mask.shape != size:
        raise ConvertError(f"{path}: the label image is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
                           f"{size[1]}x{size[0]}; label images must match their images pixel for pixel")
    values = np.unique(mask).astype(np.int64)
    bad = values[invalid_mask_values(values, n_classes, ignore_index)].tolist()
    if bad:
        raise ConvertError(f"{path}: values {bad[:8]} are neither class ids 0..{n_classes - 1} (--classes names "
                           f"{n_classes}) nor the ignore index {ignore_index}; extend --classes or set --ignore-index")


def _group(stem: str, pattern: re.Pattern | None) -> str | None:
    if pattern is None:
        return None
    m = pattern.search(stem)
    if m is None:
        return None
    return m.group(1) if m.groups() else m.group(0)


def check_out(out: Path) -> None:
    """Refuse an ``out`` that exists and is not an empty folder (nothing is ever overwritten)."""
    refuse_used_folder(out, ConvertError)


def write_dataset(col: Collected, out: Path, classes: list[str], name: str, ignore_index: int,
                  group_pattern: str | None) -> tuple[Manifest, bool]:
    """Write ``out`` (must be new or empty): images hard-linked (copied across file systems), masks as
    TIFF, ``dataset.json``. Returns the manifest and whether the images are hard links."""
    try:
        pattern = re.compile(group_pattern) if group_pattern else None
    except re.error as e:
        raise ConvertError(f"--group-pattern '{group_pattern}' is not a regular expression ({e})") from None
    check_out(out)
    linked = True
    with new_folder(out, "convert") as tmp:
        records = []
        for rel in sorted(col.records):
            ann = col.records[rel]
            dst = tmp / "images" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if linked:
                try:
                    os.link(col.index.files[rel], dst)
                except OSError:
                    linked = False
            if not linked:
                shutil.copy2(col.index.files[rel], dst)
            mask = None
            if ann.mask is not None:
                mask = f"masks/{Path(rel).with_suffix('.tif').as_posix()}"
                write_mask(tmp / mask, read_mask_stored(ann.mask))
            labels = None
            if ann.tags:
                present = ann.tags | {b.cls for b in ann.boxes} | {p.cls for p in ann.points}
                labels = [c for c in classes if c in present]
            records.append(ImageRecord(file=f"images/{rel}", group=_group(Path(rel).stem, pattern), mask=mask,
                                       boxes=ann.boxes or None, points=ann.points or None, labels=labels))
        manifest = Manifest(name=name, classes=classes, ignore_index=ignore_index, images=records)
        save_manifest(manifest, tmp)
    manifest.root = out
    return manifest, linked
