"""``dspseg validate``: check a dataset folder completely and report every problem, or summarise it.

:func:`validate_dataset` never raises for a user's mistake and never writes anything. It collects
:class:`~dspseg.data.manifest.Problem` s (file, record, field, message, fix) at three levels:

* manifest: JSON syntax (line/column), structure (pydantic), class list, ``ignore_index``, no images;
* record: paths inside the dataset folder, duplicates, class names (with the closest known name),
  empty boxes, labels that contradict the boxes/points, coinciding points;
* files (``check_files=True``, :mod:`dspseg.data.validate_files`): existence, readability, layout,
  boxes/points inside the image, mask shape, mask values, mask vs labels/boxes/points, channel
  counts, splits vs groups.

Images are opened for their shape only (:func:`~dspseg.data.io.image_size`); masks are read fully,
since their values are checked. The rules are :mod:`dspseg.data.rules`' (DESIGN.md §1): ``labels`` is
the complete set of an image's classes; without it the box/point classes are; boxes cover every
instance of their class. This module and :mod:`~dspseg.data.validate_files` phrase their findings;
:mod:`dspseg.data.validate_report` holds the report and prints it. The report also carries what was
read on the way (the parsed manifest, the image sizes, the masks when asked), so the trainer parses
and reads once.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from pathlib import Path

from dspseg.cli_support import closest_class
from dspseg.data import rules
from dspseg.data.manifest import ImageRecord, Manifest, PathEscapeError, load_partial, manifest_path, resolve_inside
from dspseg.data.volume_records import VolumeMask
from dspseg.data.validate_files import MIN_SIDE, FileChecks, Pt, _Box, _quoted
from dspseg.data.validate_report import DatasetSummary, ValidationReport, render_report
from dspseg.data.validate_volumes import VolumeChecks

__all__ = ["MIN_SIDE", "DatasetChecker", "DatasetSummary", "ValidationReport", "render_report", "validate_dataset"]


def validate_dataset(data: str | Path, check_files: bool = True, keep_masks: bool = False) -> ValidationReport:
    """Check the dataset at ``data`` (folder or ``dataset.json``); see the module docstring.

    ``keep_masks``: also return every mask read, as stored (``report.masks``), for a caller that
    would read them next (the trainer); off by default, as ``dspseg validate`` needs none of them.
    """
    path = manifest_path(data)
    manifest, records, problems = load_partial(path)
    if manifest is None:
        return ValidationReport(problems, None, str(path))
    checker = DatasetChecker(manifest, str(path), check_files, keep_masks)
    checker.run(records, expect_images=not any(p.where.startswith("images[") for p in problems))
    return ValidationReport(problems + checker.problems, checker.summary(), str(path), manifest,
                            checker.read_sizes, checker.read_masks)



class DatasetChecker(VolumeChecks, FileChecks):
    """Runs every check over the records, collecting problems and the summary statistics
    (the file-level checks and the shared state are :class:`~dspseg.data.validate_files.FileChecks`')."""

    def __init__(self, manifest: Manifest, file: str, check_files: bool, keep_masks: bool = False):
        super().__init__(manifest, file, check_files, keep_masks)
        self.meta: list[tuple[str, str, str | None]] = []  # (where, group, split)
        self.files: dict[object, int] = {}
        self.masks: dict[object, int] = {}
        self.presence_known = True  # False once a mask's classes are unknown (unread)

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
                self.add(f"images[{i}] ({rec.source})", "", f"dspseg failed while checking this record "
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
        if rules.ignore_is_class(ii, n):
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
        where = f"images[{i}] ({rec.source})"
        self.per_type[rec.annotation_type] += 1
        self.meta.append((where, rec.group_name, rec.split))
        section = mask = None
        if rec.volume is not None:  # a section of a volume (validate_volumes): metadata and the mask section
            section, mask = self._check_volume_record(where, rec) if self.check_files else (None, None)
            img = (rec.volume.key(), rec.section_axis, rec.index if rec.sections is None else str(rec.sections))
        else:
            img = self._path(where, "file", rec.file)
        mask_p = self._path(where, "mask", rec.mask) if isinstance(rec.mask, str) else None
        self._check_duplicates(i, where, rec, img, mask_p)

        boxes, boxes_ok = self._boxes(where, rec)
        points, points_ok = self._points(where, rec)
        names_ok = boxes_ok and points_ok

        labels: set[int] | None = None
        if rec.labels is not None:
            label_ids = [self._class_id(where, f"labels[{k}]", n) for k, n in enumerate(rec.labels)]
            names_ok &= None not in label_ids
            labels = {c for c in label_ids if c is not None}
        weak = ({b.cid for b in boxes} | {p[1] for p in points}) - {None} if rec.boxes or rec.points else None
        declared = rules.declared_classes(labels, weak)  # type: ignore[arg-type]
        if labels is not None:
            self._check_labels(where, rec, labels, boxes, points)
        if rec.split in ("val", "test") and rec.mask is None:
            self.add(where, "mask", f"the image is in split '{rec.split}' but has no mask, so it cannot "
                     "be scored", "give val/test images a full mask, or move the image to train", "warning")

        present = (set(declared or ()) | {b.cid for b in boxes} | {p[1] for p in points}) - {None}
        if rec.volume is not None:
            size = section
        else:
            size = self._image(where, rec.file, img) if self.check_files and img is not None else None
        if size is not None:
            boxes, points = self._check_geometry(where, rec, size, boxes, points, declared, names_ok)
        if rec.mask is not None and not self.check_files:
            self.presence_known = False
        if self.check_files and (mask_p is not None or isinstance(rec.mask, VolumeMask)):
            if mask_p is not None:
                mask = self._read_mask(where, rec.mask or "", mask_p)
            if mask is None:
                self.presence_known = False
            else:
                present |= self._check_mask(where, rec, mask, size, declared, names_ok, boxes, points)
        self.class_images[sorted(present)] += 1

    def _boxes(self, where: str, rec: ImageRecord) -> tuple[list[_Box], bool]:
        """Non-empty boxes (class id ``None`` if unknown) and whether every class name is known."""
        names_ok, boxes = True, []
        empty = {f.index for f in rules.box_findings([b.xyxy for b in rec.boxes or []])}
        for k, b in enumerate(rec.boxes or []):
            cid = self._class_id(where, f"boxes[{k}].class", b.cls)
            names_ok &= cid is not None
            if k in empty:
                hint = "; convert [x, y, width, height] boxes to corners" if rules.box_reversed(b.xyxy) else ""
                self.add(where, f"boxes[{k}].xyxy", f"box {list(b.xyxy)} is empty: it needs x1 > x0 "
                         "and y1 > y0", "write [x0, y0, x1, y1], half-open: a one-pixel box is "
                         f"[x, y, x+1, y+1]{hint}")
            else:
                boxes.append(_Box(k, cid, *b.xyxy))
        return boxes, names_ok

    def _points(self, where: str, rec: ImageRecord) -> tuple[list[Pt], bool]:
        """``(k, class id or None, x, y)`` per point, whether every name is known; flags coinciding points."""
        names_ok, points, recs = True, [], rec.points or []
        twins = {f.index: f for f in rules.coinciding_points([(p.xy, p.cls) for p in recs])}
        for k, p in enumerate(recs):
            cid = self._class_id(where, f"points[{k}].class", p.cls)
            names_ok &= cid is not None
            twin = twins.get(k)
            if twin is not None and twin.rule == rules.POINT_CLASH:
                j = twin.value[0]
                self.add(where, f"points[{k}]", f"point {list(p.xy)} is '{p.cls}' but points[{j}] "
                         f"marks the same pixel as '{recs[j].cls}'",
                         "a pixel has one class: move or remove one of the points")
            elif twin is not None:
                self.add(where, f"points[{k}]", f"point {list(p.xy)} repeats points[{twin.value[0]}]",
                         "remove the duplicate point", "warning")
            points.append((k, cid, *p.xy))
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
                      boxes: list[_Box], points: list[Pt]) -> None:
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

    # -- whole dataset ------------------------------------------------------------------------

    def _check_dataset(self) -> None:
        self._check_scales()
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
        shown = [self.m.classes[c] for c in np.flatnonzero(self.class_images)]
        if annotated and self.presence_known and self.check_files and len(shown) < 2:  # masks read: counts complete
            self.add("manifest", "images", f"the annotations name {'only ' + repr(shown[0]) if shown else 'no class'} "
                     f"(masks all ignore_index {self.m.ignore_index} or one class): `dspseg train` refuses it, as "
                     "there is nothing to tell apart", "annotate at least two classes (often the background and "
                     "one object class)", "warning")
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
