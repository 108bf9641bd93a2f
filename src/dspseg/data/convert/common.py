"""What every converter shares: finding images, collecting annotations in pixel units, checking label images.

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
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dspseg.cli_support import closest, refuse_used_folder
from dspseg.data.convert.classes import ClassNames
from dspseg.data.io import image_size, read_mask_stored
from dspseg.data.manifest import Box, Point
from dspseg.data.rules import box_empty, clip_box, invalid_mask_values, point_inside
from dspseg.errors import ConvertError

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

    def find(self, name: str, where: str) -> str | None:
        """The image named ``name`` (relative path, then unique file name, then unique stem); ``None``
        when no image has that name."""
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
        return None

    def prefix_matches(self, stem: str) -> list[str]:
        """The images whose stem ``stem`` starts with (then a separator), longest stems only.

        ``cell01_mito`` → [``cell01.tif``]; several hits mean the name is ambiguous.
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
        return best

    def rest(self, stem: str, rel: str) -> str:
        """What follows the image's name in an annotation file's name (``cell01_mito`` → ``mito``)."""
        return stem[len(Path(rel).stem):].lstrip(SEPARATORS)

    def closest_hint(self, stem: str) -> str:
        """`` (closest: 'cell01')`` for the image name ``stem`` most likely means, else ``""``."""
        close = closest(stem, [Path(r).stem for r in self.files])
        return f" (closest: '{close}')" if close else ""


@dataclass
class MaskSource:
    """A label image and what its stored values mean: ``names[value]`` is a class name, or ``None`` for
    unannotated. Values not in ``names`` do not occur (the reader checked)."""

    path: Path
    names: dict[int, str | None]

    def read(self, classes: list[str], ignore_index: int) -> np.ndarray:
        """The (H, W) int64 mask in the dataset's values: class ids of ``classes``, ``ignore_index``."""
        stored = read_mask_stored(self.path).astype(np.int64)
        values, inverse = np.unique(stored, return_inverse=True)
        lut = np.array([ignore_index if self.names.get(int(v)) is None else classes.index(self.names[int(v)])
                        for v in values], np.int64)
        return lut[inverse].reshape(stored.shape)


@dataclass
class Annotation:
    """What the input says about one image; ``*_where`` name the file (and entry) of each box and point."""

    boxes: list[Box] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    mask: MaskSource | None = None
    box_where: list[str] = field(default_factory=list)
    point_where: list[str] = field(default_factory=list)
    tag_where: str = ""


@dataclass
class Collected:
    """Annotations per image (relative path), their class names (:class:`ClassNames`), and notes.

    ``on_unmatched`` says what an annotation file or entry naming no image of ``--images`` does:
    ``skip`` (noted in ``skipped``) or ``fail`` (a :class:`ConvertError`).
    """

    index: ImageIndex
    names: ClassNames = field(default_factory=lambda: ClassNames(None))
    on_unmatched: str = "skip"
    records: dict[str, Annotation] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def image(self, rel: str) -> Annotation:
        return self.records.setdefault(rel, Annotation())

    def note_class(self, cls: str, where: str) -> str:
        """The dataset's name of the class ``cls`` (see :class:`ClassNames`)."""
        return self.names.name(cls, where)

    def unmatched(self, message: str) -> None:
        """An input that names no image: noted and skipped, or refused with ``--on-unmatched fail``."""
        if self.on_unmatched == "fail":
            raise ConvertError(f"{message}; fix the name, or pass --on-unmatched skip to leave it out")
        self.skipped.append(f"{message}; skipped")

    def match_file(self, path: Path) -> str | None:
        """The image an annotation file belongs to by name, or ``None`` (reported) when none does."""
        hits = self.index.prefix_matches(path.stem)
        if not hits:
            hint = napari_default_hint(path.stem) or "name annotation files after their image: cell01.csv, cell01_mito.csv"
            self.unmatched(f"{path}: no image in --images {self.index.root} matches this file's name"
                           f"{self.index.closest_hint(path.stem)} ({hint})")
            return None
        if len(hits) > 1:
            raise ConvertError(f"{path}: the name matches several images ({', '.join(hits[:4])}); "
                               "give the images unique names")
        return hits[0]

    def add_box(self, rel: str, cls: str, box: tuple[int, int, int, int], where: str) -> None:
        h, w = self.index.size(rel)
        clipped = clip_box(box, h, w)
        if box_empty(clipped):
            self.warnings.append(f"{where}: box {list(box)} lies outside the {w}x{h} image {rel}; dropped")
            return
        ann = self.image(rel)
        ann.boxes.append(Box(cls=self.note_class(cls, where), xyxy=clipped))
        ann.box_where.append(where)

    def add_point(self, rel: str, cls: str, x: int, y: int, where: str) -> None:
        h, w = self.index.size(rel)
        if not point_inside((x, y), h, w):
            self.warnings.append(f"{where}: point [{x}, {y}] lies outside the {w}x{h} image {rel}; dropped")
            return
        ann = self.image(rel)
        ann.points.append(Point(cls=self.note_class(cls, where), xy=(x, y)))
        ann.point_where.append(where)

    def add_tag(self, rel: str, cls: str, where: str) -> None:
        ann = self.image(rel)
        ann.tags.add(self.note_class(cls, where))
        ann.tag_where = ann.tag_where or where


#: napari's default layer names ("Points", "Shapes [1]"): a layer saved under one names no image
NAPARI_DEFAULT_NAMES = ("points", "shapes", "labels", "image")


def napari_default_hint(stem: str) -> str:
    """A hint when ``stem`` is napari's default name of a layer, else ``""``."""
    base = re.sub(r"\s*\[\d+\]$", "", stem).strip().lower()
    if base not in NAPARI_DEFAULT_NAMES:
        return ""
    return (f"'{stem}' is napari's default layer name: rename the layer after its image "
            "(e.g. cell01_nucleus) before saving it")


def looks_like_instances(values: np.ndarray, bad: list[int]) -> bool:
    """Whether a label image with distinct ``values`` whose ``bad`` ones are no class ids is more likely
    an instance labelling (0 = no object, one positive id per object) than a class-id image."""
    return bool(bad) and int(values.min()) == 0 and min(bad) > 0


def check_mask_values(path: Path, n_classes: int, ignore_index: int, size: tuple[int, int]) -> None:
    """Raise ConvertError unless ``path`` is an (H, W) mask of values 0..n_classes-1 or ignore_index."""
    mask = read_mask_stored(path)
    check_mask_shape(path, mask, size)
    values = np.unique(mask).astype(np.int64)
    bad = values[invalid_mask_values(values, n_classes, ignore_index)].tolist()
    if bad:
        hint = ("; it looks like an instance labelling (one id per object): pass --instances CLASS to give "
                "every object one class" if looks_like_instances(values, bad) else "")
        raise ConvertError(f"{path}: values {bad[:8]} are neither class ids 0..{n_classes - 1} (--classes names "
                           f"{n_classes}) nor the ignore index {ignore_index}; extend --classes or set "
                           f"--ignore-index{hint}")


def check_mask_shape(path: Path, mask: np.ndarray, size: tuple[int, int]) -> None:
    """Raise ConvertError unless the label image ``mask`` read from ``path`` has its image's (H, W) ``size``."""
    if mask.shape != size:
        raise ConvertError(f"{path}: the label image is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
                           f"{size[1]}x{size[0]}; label images must match their images pixel for pixel")


def check_out(out: Path) -> None:
    """Refuse an ``out`` that exists and is not an empty folder (nothing is ever overwritten)."""
    refuse_used_folder(out, ConvertError)
