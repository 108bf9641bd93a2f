"""Merge what one conversion collected into a dataset: one record per image, whatever the sources.

``dspseg convert ... --into DATA`` runs once per source (label images, QuPath, napari); the
annotations of one image land in one record. An image is the same image when its name under
``--images`` is the record's (``images/<name>``) or when the dataset's file is a hard link to it.

Per record (existing annotation first, then this conversion's):

* **mask**: at most one. A second, different label image for the image is a conflict; the same
  mask again changes nothing.
* **boxes, points**: appended; one already in the record (same class and pixels) is kept once, so
  running a conversion twice changes nothing.
* **labels** (the complete set of classes of the image): an existing list stays and must hold every
  class this conversion adds (else a conflict); otherwise image-level tags, or ``--background``
  on a record without a mask, give the record ``labels`` = the tags, the background, and the classes
  of all its boxes and points; a record with a mask and boxes or points gets ``labels`` = the classes
  the mask shows and theirs (boxes and points alone would claim to name every class of the image).
* **mask against boxes and points** (:func:`dspseg.data.rules.mask_box_findings`,
  :func:`~dspseg.data.rules.mask_point_findings`): a box holding no pixel of its class, mask pixels of
  a boxed class outside its boxes, a point on a pixel of another class — conflicts.

Conflicts are collected for every record (each names the file, the record and the fix) before
anything is written; :mod:`dspseg.data.convert.write` writes the plan only when there is none.
"""

from __future__ import annotations

import filecmp
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dspseg.data.convert.common import Annotation, Collected, ConvertError, MaskSource
from dspseg.data.io import read_mask
from dspseg.data.manifest import MANIFEST_NAME, ImageRecord, Manifest, load_manifest
from dspseg.data.rules import BOX_WITHOUT_CLASS, CLASS_OUTSIDE_BOXES, mask_box_findings, mask_point_findings


@dataclass
class Plan:
    """The dataset after the merge and the files to add to make it so."""

    records: list[ImageRecord]
    links: list[tuple[Path, str]] = field(default_factory=list)  # user's image -> path in the dataset
    masks: list[tuple[MaskSource, str]] = field(default_factory=list)  # label image -> mask path to write
    touched: set[str] = field(default_factory=set)  # record files added or changed
    conflicts: list[str] = field(default_factory=list)
    added: int = 0
    merged: int = 0
    repeated: int = 0  # boxes and points already in their record


def existing_dataset(data: Path) -> Manifest | None:
    """The dataset in ``--into`` ``data``, or ``None`` when the folder is absent or empty."""
    if not data.exists():
        return None
    if not data.is_dir():
        raise ConvertError(f"--into {data} is a file; give a dataset folder, or a new or empty folder")
    if (data / MANIFEST_NAME).is_file():
        return load_manifest(data)
    if any(data.iterdir()):
        raise ConvertError(f"--into {data} holds no {MANIFEST_NAME} but is not empty; give a dataset folder, "
                           "or a new or empty folder")
    return None


def _group(stem: str, pattern: re.Pattern | None) -> str | None:
    m = pattern.search(stem) if pattern is not None else None
    if m is None:
        return None
    return m.group(1) if m.groups() else m.group(0)


class Merger:
    """Builds a :class:`Plan` from a dataset (or none) and one conversion's :class:`Collected`."""

    def __init__(self, data: Path, existing: Manifest | None, classes: list[str], ignore_index: int,
                 group_pattern: str | None, background: str | None):
        try:
            self.pattern = re.compile(group_pattern) if group_pattern else None
        except re.error as e:
            raise ConvertError(f"--group-pattern '{group_pattern}' is not a regular expression ({e})") from None
        self.data, self.classes, self.ignore, self.background = data, classes, ignore_index, background
        self.records = list(existing.images) if existing else []
        self.by_file = {r.file: i for i, r in enumerate(self.records) if r.file is not None}
        self.by_inode: dict[tuple[int, int], int] = {}
        for i, r in enumerate(self.records):
            if r.file is None:
                continue  # a volume section (dspseg/2): kept as it is, never matched by a file
            try:
                st = os.stat(data / r.file)
                self.by_inode[(st.st_dev, st.st_ino)] = i
            except OSError:
                continue  # validate reports missing files

    def plan(self, col: Collected) -> Plan:
        plan = Plan(self.records)
        for rel in sorted(col.records):
            src = col.index.files[rel]
            st = os.stat(src)
            i = self.by_file.get(f"images/{rel}", self.by_inode.get((st.st_dev, st.st_ino)))
            if i is None:
                rec = ImageRecord(file=f"images/{rel}", group=_group(Path(rel).stem, self.pattern))
                plan.links.append((src, rec.file))
                plan.records.append(rec)
                self.by_file[rec.file] = len(plan.records) - 1
                plan.touched.add(rec.file)
                plan.added += 1
                i = len(plan.records) - 1
            else:
                rec = plan.records[i]
                if not _same_file(src, self.data / rec.file):
                    plan.conflicts.append(f"{src}: record {rec.file} of {self.data} holds a different image of that "
                                          "name; rename the image, or convert into another dataset")
                    continue
                plan.merged += 1
            new = self._merge(rec, col.records[rel], plan)
            if new is not None:
                plan.records[i] = new
                plan.touched.add(new.file)
        return plan

    def _merge(self, rec: ImageRecord, ann: Annotation, plan: Plan) -> ImageRecord | None:
        """``rec`` with ``ann`` merged in (conflicts go to ``plan``); ``None`` when nothing changes."""
        where_rec = f"record {rec.file}"
        mask_src, mask, new_mask = rec.mask, None, False
        if ann.mask is not None:
            mask = ann.mask.read(self.classes, self.ignore)
            if rec.mask is not None:
                if not np.array_equal(mask, read_mask(self.data / rec.mask)):
                    plan.conflicts.append(f"{ann.mask.path}: {where_rec} already has the mask {rec.mask}, and an "
                                          "image has one mask; keep one label image per image (remove this one "
                                          "from the input, or convert into another dataset)")
                    return None
            else:
                mask_src, new_mask = f"masks/{Path(rec.file[len('images/'):]).with_suffix('.tif').as_posix()}", True
                plan.masks.append((ann.mask, mask_src))
        old_boxes = {(b.cls, tuple(b.xyxy)) for b in rec.boxes or []}
        old_points = {(p.cls, tuple(p.xy)) for p in rec.points or []}
        boxes = [(b, w) for b, w in zip(ann.boxes, ann.box_where) if (b.cls, tuple(b.xyxy)) not in old_boxes]
        points = [(p, w) for p, w in zip(ann.points, ann.point_where) if (p.cls, tuple(p.xy)) not in old_points]
        plan.repeated += len(ann.boxes) - len(boxes) + len(ann.points) - len(points)
        all_boxes = [(b, f"{where_rec}, boxes[{k}]") for k, b in enumerate(rec.boxes or [])] + boxes
        all_points = [(p, f"{where_rec}, points[{k}]") for k, p in enumerate(rec.points or [])] + points
        weak_new = {b.cls for b, _ in boxes} | {p.cls for p, _ in points}
        bg = {self.background} if self.background and weak_new and mask_src is None else set()
        claims = set(ann.tags) | weak_new | bg
        labels = rec.labels
        if rec.labels is not None:
            extra = [c for c in self.classes if c in claims - set(rec.labels)]
            if extra:
                plan.conflicts.append(f"{ann.tag_where or (boxes + points)[0][1]}: adds {extra} to {where_rec}, whose "
                                      f"labels {rec.labels} claim to list every class of the image; add them to the "
                                      f"record's labels in {self.data / MANIFEST_NAME}, or map them with --class-map")
                return None
        elif ann.tags or bg:
            present = claims | {b.cls for b, _ in all_boxes} | {p.cls for p, _ in all_points}
            labels = [c for c in self.classes if c in present]
        if not (new_mask or boxes or points or labels != rec.labels):
            return None
        if mask_src is not None and (new_mask or boxes or points):
            if mask is None:
                mask = read_mask(self.data / mask_src)
            found = self._mask_conflicts(mask, mask_src if not new_mask else str(ann.mask.path), where_rec,
                                         all_boxes, all_points)
            if found:
                plan.conflicts.extend(found)
                return None
            if labels is None and (all_boxes or all_points):
                labels = self._mask_labels(mask, {b.cls for b, _ in all_boxes} | {p.cls for p, _ in all_points})
        return rec.model_copy(update={"mask": mask_src, "labels": labels,
                                      "boxes": [b for b, _ in all_boxes] or None,
                                      "points": [p for p, _ in all_points] or None})

    def _mask_labels(self, mask: np.ndarray, weak: set[str]) -> list[str]:
        """``labels`` of a record with a mask and boxes or points: the classes the mask shows and theirs
        (boxes and points alone would claim to name every class), plus ``--background`` when the mask
        has unannotated pixels (a complete mask says whether the background is there)."""
        shown = {self.classes[v] for v in np.unique(mask).tolist() if 0 <= v < len(self.classes)}
        if self.background and (mask == self.ignore).any():
            shown.add(self.background)
        return [c for c in self.classes if c in shown | weak]

    def _mask_conflicts(self, mask: np.ndarray, mask_name: str, where_rec: str, boxes: list, points: list) -> list[str]:
        cid = self.classes.index
        out = []
        rows = [(k, cid(b.cls), *b.xyxy) for k, (b, _) in enumerate(boxes)]
        for f in mask_box_findings(mask, rows, self.ignore):
            if f.rule == BOX_WITHOUT_CLASS:
                b, where = boxes[f.index]
                out.append(f"{where}: the '{b.cls}' box {list(b.xyxy)} of {where_rec} holds no '{b.cls}' pixel of "
                           f"the mask {mask_name}; correct the box's class (or --class-map it) or the label image")
            elif f.rule == CLASS_OUTSIDE_BOXES:
                cls = self.classes[f.index]
                first = next(w for b, w in boxes if b.cls == cls)
                out.append(f"{first}: the mask {mask_name} of {where_rec} has {f.value[0]} '{cls}' pixel(s) outside "
                           f"every '{cls}' box, but boxes cover every object of their class; box every '{cls}' "
                           "object or correct the label image")
        rows = [(k, cid(p.cls), *p.xy) for k, (p, _) in enumerate(points)]
        for f in mask_point_findings(mask, rows, len(self.classes), self.ignore):
            p, where = points[f.index]
            out.append(f"{where}: the '{p.cls}' point {list(p.xy)} of {where_rec} lies on a "
                       f"'{self.classes[f.value[3]]}' pixel of the mask {mask_name}; move or reclassify the point, "
                       "or correct the label image")
        return out


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths hold the same image (one file, or identical bytes)."""
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False
