"""Volume-backed records of ``dataset.json`` (format ``dspseg/2``): sections of volumes instead of files.

A record names a 2D section of a volume (:class:`~dspseg.data.volumes.VolumeRef`) by ``axis`` and
``index``; its ``mask`` is a 2D file or the same section of a label volume (:class:`VolumeMask`);
boxes, points and labels are in the section's pixels as for files::

    {"volume": {"url": "cell.ome.zarr"}, "axis": "z", "index": 5,
     "mask": {"volume": {"url": "cell.ome.zarr", "array": "labels/organelles"}, "ignore": 255}}
    {"volume": {"url": "cell.ome.zarr"}, "axis": "z", "index": 9, "boxes": [...]}
    {"volume": {"url": "cell.ome.zarr"}, "sections": {"axis": "z", "exclude": [0]}}
    {"volume": {"url": "s3://bucket/cell.zarr", "array": "em", "level": "s1",
                "region": {"start": [10, 200, 300], "stop": [30, 456, 556]}}, "axis": "z", "index": 0,
     "mask": {"volume": {"url": "s3://bucket/cell.zarr", "array": "labels/crop1", "level": "s0"},
              "classes": {"mito": [3, 4, 5], "er": [16, 17]}}}

The third entry is a :class:`~dspseg.data.volumes.SectionRange` of unlabeled sections: when the
manifest is loaded it is expanded (:func:`expand_sections`, volume metadata only) into one record per
section, leaving out ``exclude`` and every section that another record of the same volume and axis
names (the annotated ones). Saving collapses them back (:func:`collapse_sections`): consecutive
sections of one entry with the same ``split`` and ``group`` become one entry again.

The last entry names a box (``region``) of a large remote volume, an annotated crop (its section
``index`` counts from the box's first z), and a label volume that keeps its own ids, mapped to the
dataset's classes by ``classes`` (every other value is unannotated).

A local ``url`` is relative to ``dataset.json`` and must stay inside its folder
(:func:`~dspseg.data.manifest.resolve_inside`); ``s3://``, ``gs://``, ``http(s)://`` and
``memory://`` URLs are read as they are; ``file://`` is refused (it could name any file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

from dspseg.data.problems import Problem
from dspseg.data.volumes import SectionRange, VolumeRef
from dspseg.errors import PathEscapeError, VolumeError

if TYPE_CHECKING:
    from dspseg.data.manifest import ImageRecord, Manifest

REMOTE = ("s3://", "gs://", "http://", "https://", "memory://")
#: fields a volume record may not have with ``sections`` (a range is unlabeled)
_RANGE_FORBIDS = ("mask", "boxes", "points", "labels", "index")


class VolumeMask(BaseModel):
    """A mask that is the record's section of a label volume: label value k = class k, ``ignore``
    (default: the manifest's ``ignore_index``) = unannotated. With ``classes`` (class name -> the
    stored label values of that class, e.g. ``{"mito": [3, 4, 5, 50]}``) the label volume keeps its
    own ids (a public atlas's): each listed value is its class, every other value is unannotated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    volume: VolumeRef
    ignore: int | None = None
    classes: dict[str, list[int]] | None = None

    def to_json(self) -> dict:
        out: dict = {"volume": self.volume.model_dump(mode="json", exclude_defaults=True)}
        if self.ignore is not None:
            out["ignore"] = self.ignore
        if self.classes is not None:
            out["classes"] = {k: list(v) for k, v in self.classes.items()}
        return out

    def class_problems(self, classes: list[str]) -> list[tuple[str, str, str]]:
        """(field, reason, fix) for each name of ``classes`` the dataset lacks and each value listed twice."""
        if self.classes is None:
            return []
        out, seen = [], {}
        for name, values in self.classes.items():
            if name not in classes:
                out.append((f"mask.classes.{name}", f"'{name}' is not one of the dataset's classes",
                            f"use one of {', '.join(classes)}, or add it to \"classes\""))
            for v in values:
                if v in seen and seen[v] != name:
                    out.append((f"mask.classes.{name}", f"label value {v} is listed for both '{seen[v]}' and '{name}'",
                                "list each stored value under one class"))
                seen.setdefault(v, name)
        return out

    def class_ids(self, stored: np.ndarray, classes: list[str], ignore_index: int) -> np.ndarray:
        """The stored label values of a section (any shape) as int64 class ids, ``ignore_index`` where
        unannotated: ``classes`` applied, or ``ignore`` replaced by ``ignore_index``."""
        if self.classes is None:
            ids = stored.astype(np.int64)
            if self.ignore is not None and self.ignore != ignore_index:
                ids[ids == self.ignore] = ignore_index
            return ids
        problems = self.class_problems(classes)
        if problems:
            field, reason, fix = problems[0]
            raise VolumeError(self.volume.url, field, reason, fix)
        pairs = sorted((v, classes.index(name)) for name, values in self.classes.items() for v in values)
        if not pairs:
            return np.full(stored.shape, ignore_index, np.int64)
        keys = np.array([v for v, _ in pairs])
        ids = np.array([c for _, c in pairs], np.int64)
        at = np.clip(np.searchsorted(keys, stored), 0, len(keys) - 1)
        return np.where(keys[at] == stored, ids[at], ignore_index)


@dataclass(frozen=True)
class RangeOrigin:
    """Private mark of a record expanded from a ``sections`` entry: which entry, and its step."""

    entry: int
    step: int


def resolve_ref(root: Path, ref: VolumeRef) -> VolumeRef:
    """``ref`` with a local ``url`` made absolute inside ``root``; PathEscapeError when it leaves it."""
    from dspseg.data.manifest import resolve_inside

    if ref.url.startswith(REMOTE):
        return ref
    if "://" in ref.url:
        raise PathEscapeError(f"'{ref.url}' is a {ref.url.split('://')[0]}:// URL; give a path relative to the "
                              f"manifest's folder or one of {', '.join(REMOTE)}")
    return ref.model_copy(update={"url": str(resolve_inside(root, ref.url))})


def structure_problems(index: int, rec: ImageRecord, file: str) -> list[Problem]:
    """Cross-field rules of one record (file xor volume; a range is unlabeled...), as Problems."""
    where = f"images[{index}]" + (f" ({rec.source})" if rec.file is not None or rec.volume is not None else "")
    p = []
    if rec.file is None and rec.volume is None:
        p.append(Problem(file, where, "file", "Field required (or a 'volume' section instead)", "add the field"))
    elif rec.file is not None and rec.volume is not None:
        p.append(Problem(file, where, "file", "a record names either an image 'file' or a 'volume' section, "
                         "not both", 'keep one of "file" and "volume"'))
    if rec.volume is None:
        for field in ("axis", "index", "sections"):
            if getattr(rec, field) is not None:
                p.append(Problem(file, where, field, "only a volume record has this field",
                                 f'remove "{field}" or add "volume": {{"url": ...}}'))
        if isinstance(rec.mask, VolumeMask):
            p.append(Problem(file, where, "mask", "a label-volume mask needs a volume record",
                             'name the mask file as a string, e.g. "mask": "masks/a.tif"'))
        return p
    if (rec.index is None) == (rec.sections is None):
        p.append(Problem(file, where, "index", "a volume record needs either 'index' (one section) or "
                         "'sections' (a range)", 'add e.g. "axis": "z", "index": 12 or "sections": {"axis": "z"}'))
    if rec.sections is not None:
        for field in _RANGE_FORBIDS:
            if getattr(rec, field) is not None:
                p.append(Problem(file, where, field, "a 'sections' range is unlabeled",
                                 f'remove "{field}" or write the annotated section as its own record with "index"'))
        if rec.axis is not None and rec.axis != rec.sections.axis:
            p.append(Problem(file, where, "axis", f"'axis' {rec.axis!r} differs from sections.axis "
                             f"{rec.sections.axis!r}", 'remove "axis" (the range names its own)'))
    return p


def expand_sections(manifest: Manifest, file: str) -> list[Problem]:
    """Replace every ``sections`` entry of ``manifest.images`` by its records (module docstring);
    returns one Problem per entry whose volume cannot be opened or whose range is empty."""
    from dspseg.data.volumes import open_volume

    named: dict[tuple[str, str], set[int]] = {}
    for r in manifest.images:
        if r.volume is not None and r.index is not None:
            named.setdefault((r.volume.key(), r.section_axis), set()).add(r.index)
    out, problems = [], []
    for i, r in enumerate(manifest.images):
        if r.sections is None:
            out.append(r)
            continue
        where = f"images[{i}] ({r.source})"
        try:
            size = open_volume(resolve_ref(manifest.root, r.volume)).size(r.sections.axis)
            keep = [k for k in r.sections.indices(size, r.volume.url)
                    if k not in named.get((r.volume.key(), r.sections.axis), set())]
        except (VolumeError, PathEscapeError) as e:
            field = f"volume.{e.field}" if isinstance(e, VolumeError) else "volume.url"
            fix = e.fix if isinstance(e, VolumeError) else "keep the volume inside the dataset folder or use a URL"
            reason = e.reason if isinstance(e, VolumeError) else str(e)
            if isinstance(e, VolumeError) and e.field in ("start", "stop"):
                field = f"sections.{e.field}"
            problems.append(Problem(file, where, field, reason, fix))
            continue
        if not keep:
            problems.append(Problem(file, where, "sections", "the range holds no section once 'exclude' and the "
                                    "annotated sections are left out", "widen start/stop or remove the entry"))
        for k in keep:
            rec = r.model_copy(update={"sections": None, "axis": r.sections.axis, "index": k})
            rec._origin = RangeOrigin(entry=i, step=r.sections.step)
            out.append(rec)
    manifest.images = out
    return problems


def collapse_sections(records: list[ImageRecord]) -> list[dict]:
    """The JSON entries of ``records``: runs of consecutive expanded records of one ``sections`` entry
    with the same split and group become one ``sections`` entry (``exclude`` lists the gaps)."""
    out: list[dict] = []
    run: list[ImageRecord] = []

    def flush() -> None:
        if not run:
            return
        first, step = run[0], run[0]._origin.step
        start, stop = first.index, run[-1].index + 1
        have = {r.index for r in run}
        gaps = [k for k in range(start, stop, step) if k not in have]
        rng = SectionRange(axis=first.section_axis, start=start, stop=stop, step=step, exclude=tuple(gaps))
        entry = first.to_json()
        entry.pop("axis"), entry.pop("index")
        entry["sections"] = rng.model_dump(mode="json", exclude_defaults=True) | {"axis": rng.axis}
        out.append(entry)
        run.clear()

    for r in records:
        o = r._origin
        if run and (o is None or o.entry != run[0]._origin.entry or r.split != run[0].split
                    or r.group != run[0].group or r.index <= run[-1].index):
            flush()
        if o is None:
            out.append(r.to_json())
        else:
            run.append(r)
    flush()
    return out
