"""The file-level half of ``dspseg validate``: images, masks, and the annotation against them.

:class:`FileChecks` holds what every check shares (the manifest, the problems found so far, the
counts the summary reports, what was read) and runs the checks that need a file opened: the image
exists and is readable (its ``(C, H, W)`` from the header only, :func:`~dspseg.data.io.image_header`),
boxes and points lie inside it, the all-boxed coverage rule, and the mask (read fully): its shape,
values, and agreement with labels, boxes and points. The rules themselves live in
:mod:`dspseg.data.rules`; this module only phrases their findings as Problems naming file, field and
fix. :class:`~dspseg.data.validate.DatasetChecker` adds the manifest- and record-level checks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dspseg.data import rules
from dspseg.data.intensity import scale_findings
from dspseg.data.io import ImageReadError, image_header, read_image, read_mask_stored
from dspseg.data.manifest import ImageRecord, Manifest, Problem
from dspseg.vocabulary import KINDS

MIN_SIDE = 16  # smaller images trigger a warning: a U-Net downsamples 4 times

#: a point as the checks see it: (index in the record, class id or None if unknown, x, y)
Pt = tuple[int, "int | None", int, int]


@dataclass
class _Box:
    """A non-empty box: ``k`` its index in the record, ``cid`` its class id (``None``: unknown name)."""

    k: int
    cid: int | None
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x1, self.y1


def _exists(path: Path) -> bool:
    """``path.exists()`` that answers False instead of raising (e.g. for over-long names)."""
    try:
        return path.exists()
    except OSError:
        return False


def _quoted(names: list[str] | set[str], limit: int = 12) -> str:
    """``'a', 'b' and 3 more``: names for a message (a set is sorted first)."""
    names = sorted(names) if isinstance(names, set) else list(names)
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class FileChecks:
    """The problems found, the summary's counts, what was read, and the checks that open files."""

    def __init__(self, manifest: Manifest, file: str, check_files: bool, keep_masks: bool = False):
        self.m, self.file, self.check_files, self.keep_masks = manifest, file, check_files, keep_masks
        self.problems: list[Problem] = []
        self.ids: dict[str, int] = {}  # class name -> id (the first position of a name listed twice)
        for i, name in enumerate(manifest.classes):
            self.ids.setdefault(name, i)
        n = manifest.n_classes
        self.class_pixels = np.zeros(n, np.int64)
        self.class_images = np.zeros(n, np.int64)
        self.per_type: Counter = Counter({t: 0 for t in KINDS})
        self.sizes: Counter = Counter()
        self.channels: Counter = Counter()
        self.channel_of: list[tuple[str, str, int]] = []  # (where, image path, C)
        self.read_sizes: dict[str, tuple[int, int, int]] = {}  # record file -> (C, H, W)
        self.read_masks: dict[str, np.ndarray] = {}  # record mask -> stored mask (keep_masks only)
        self.pixel_types: list[tuple[str, str, str]] = []  # (where, image path, stored dtype name)

    def add(self, where: str, field: str, message: str, fix: str, severity: str = "error",
            file: str | None = None) -> None:
        self.problems.append(Problem(file or self.file, where, field, message, fix, severity))  # type: ignore[arg-type]

    def _image(self, where: str, rel: str, path: Path) -> tuple[int, int, int] | None:
        """The image's (C, H, W) from its header, or ``None`` (reported) if it cannot be opened."""
        if not _exists(path):
            self.add(where, "file", f"the image file does not exist (looked for {self.m.root / rel})",
                     "check the spelling; paths are relative to the folder holding dataset.json")
            return None
        notes: list[str] = []
        try:
            (c, h, w), dtype = image_header(path, notes)
        except ImageReadError as e:
            self.add(where, "file", e.reason, e.fix, file=str(self.m.root / rel))
            return None
        for note in notes:  # the reader's choices: a TIFF series, pages read as channels
            self.add(where, "file", note.split(": ", 1)[-1], "check that this is how the image is meant; if not, "
                     "save it as a plain 2D TIFF (one series; channels named, e.g. by tifffile's axes 'CYX')",
                     "warning", str(self.m.root / rel))
        self.pixel_types.append((where, str(self.m.root / rel), dtype.name))
        self.read_sizes[rel] = (c, h, w)
        self.sizes[(h, w)] += 1
        self.channels[c] += 1
        self.channel_of.append((where, str(self.m.root / rel), c))
        if min(h, w) < MIN_SIDE:
            self.add(where, "file", f"the image is only {h}x{w} pixels (rows x columns)",
                     f"use images of at least {MIN_SIDE}x{MIN_SIDE}; the U-Net halves the size 4 times",
                     "warning", str(self.m.root / rel))
        return c, h, w

    def _check_scales(self) -> None:
        """Warn about images the intensity rule puts on another scale than the rest
        (:func:`dspseg.data.intensity.scale_findings`). Images are read only where a scale can differ:
        when the dataset mixes pixel types, or holds float images (used as stored)."""
        types = {t for _, _, t in self.pixel_types}
        if len(self.pixel_types) < 2 or (len(types) == 1 and not types.pop().startswith("float")):
            return
        maxima, kept = [], []
        for where, path, dtype in self.pixel_types:
            try:
                maxima.append((dtype, float(np.abs(read_image(path)).max())))
                kept.append((where, path))
            except ImageReadError:
                continue  # already reported by the header check, or unreadable past the header
        for f in scale_findings(maxima):
            where, path = kept[f.index]
            self.add(where, "file", f.message, f.fix, "warning", path)

    def _read_mask(self, where: str, rel: str, path: Path) -> np.ndarray | None:
        """The (H, W) mask as stored, or ``None`` (reported) if it cannot be read."""
        if not _exists(path):
            self.add(where, "mask", f"the mask file does not exist (looked for {self.m.root / rel})",
                     "check the spelling; paths are relative to the folder holding dataset.json")
            return None
        try:
            mask = read_mask_stored(path)
        except ImageReadError as e:
            self.add(where, "mask", e.reason, e.fix, file=str(self.m.root / rel))
            return None
        if self.keep_masks:
            self.read_masks[rel] = mask
        return mask

    def _check_geometry(self, where: str, rec: ImageRecord, size: tuple[int, int, int], boxes: list[_Box],
                        points: list[Pt], declared: set[int] | None, names_ok: bool) -> tuple[list[_Box], list[Pt]]:
        """Boxes and points inside the image (returns those that are); the all-boxed coverage warning."""
        _, h, w = size
        extent = f"the image is {w} columns (x) by {h} rows (y)"
        outside = {f.index for f in rules.box_findings([b.xyxy for b in boxes], (h, w))}
        for j in sorted(outside):
            b = boxes[j]
            self.add(where, f"boxes[{b.k}].xyxy", f"box {list(b.xyxy)} reaches outside the image: {extent}",
                     f"keep 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h} (half-open)"
                     + ("; it would fit with x and y swapped: x is the column" if rules.box_fits_swapped(b.xyxy, h, w)
                        else ""))
        inside = [b for j, b in enumerate(boxes) if j not in outside]
        far = {f.index for f in rules.point_findings([(x, y) for _, _, x, y in points], (h, w))}
        for j in sorted(far):
            k, _, x, y = points[j]
            self.add(where, f"points[{k}].xy", f"point {[x, y]} lies outside the image: {extent}",
                     f"keep 0 <= x < {w} and 0 <= y < {h}"
                     + ("; it would fit with x and y swapped: x is the column" if rules.point_inside((y, x), h, w)
                        else ""))
        kept = [p for j, p in enumerate(points) if j not in far]
        all_ok = names_ok and len(inside) == len(rec.boxes or []) and len(kept) == len(rec.points or [])
        if inside and all_ok and declared is not None:
            table = np.array([(b.cid, *b.xyxy) for b in inside], np.int64)
            n_out = int(rules.uncovered(table, declared, h, w).sum())
            if n_out:
                self.add(where, "boxes", f"{n_out} pixel(s) lie outside every box although every class "
                         f"of the image ({_quoted({self.m.classes[c] for c in declared})}) is boxed, so "
                         "no class is possible there (they fall back to the image's classes)",
                         "box the remaining objects (often the background as one box), or list the "
                         "unboxed class in 'labels'", "warning")
        return inside, kept

    def _check_mask_values(self, where: str, mask: np.ndarray, mfile: str) -> tuple[np.ndarray, int]:
        """Storage type and values of the mask; returns its pixels per class (C,) and its ignore pixels."""
        n, ii = self.m.n_classes, self.m.ignore_index
        top = rules.mask_capacity(mask.dtype)
        if n - 1 > top:
            self.add(where, "mask", f"the mask is stored as {mask.dtype} (values up to {top}) but the "
                     f"dataset has {n} classes (ids up to {n - 1})", "save masks as 16-bit (uint16)", file=mfile)
        values, counts = rules.mask_value_counts(mask)
        bad = rules.invalid_mask_values(values, n, ii)
        valid = rules.class_ids(values, n)
        pix = np.zeros(n, np.int64)
        pix[values[valid]] = counts[valid]
        self.class_pixels += pix
        n_ignore = int(counts[values == ii].sum())
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
        return pix, n_ignore

    def _check_mask(self, where: str, rec: ImageRecord, mask: np.ndarray, size: tuple[int, int, int] | None,
                    declared: set[int] | None, names_ok: bool, boxes: list[_Box], points: list[Pt]) -> set[int]:
        """Values, shape and agreement with labels/boxes/points; returns the classes the mask shows.
        A class with a box dropped as empty or outside the image is not checked against its boxes."""
        mfile = str(self.m.root / rec.mask) if isinstance(rec.mask, str) else rec.source
        names = self.m.classes
        pix, n_ignore = self._check_mask_values(where, mask, mfile)
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
        for f in rules.mask_point_findings(m64, points, self.m.n_classes, self.m.ignore_index):
            x, y, cid, v = f.value
            self.add(where, f"points[{f.index}]", f"the point at [{x}, {y}] is '{names[cid]}' but the mask says "
                     f"'{names[v]}' there", "move the point (x = column, y = row) or correct its class")
        kept = {b.k for b in boxes}
        broken = {self.ids.get(b.cls) for k, b in enumerate(rec.boxes or []) if k not in kept}
        checked = [(b.k, b.cid, *b.xyxy) for b in boxes if b.cid not in broken]
        for f in rules.mask_box_findings(m64, checked, self.m.ignore_index):  # type: ignore[arg-type]
            if f.rule == rules.BOX_WITHOUT_CLASS:
                self.add(where, f"boxes[{f.index}]", f"the mask has no '{names[f.value[0]]}' pixel inside the box",
                         "move the box onto the object or correct its class")
            else:
                name = names[f.index]
                self.add(where, "boxes", f"the mask has {f.value[0]} pixel(s) of '{name}' outside every "
                         f"'{name}' box, but boxes cover every instance of their class",
                         f"add boxes around the remaining '{name}' objects or correct the mask")
        return shown
