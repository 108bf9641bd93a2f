"""The dataset manifest ``dataset.json`` (formats ``dspseg/1`` and ``dspseg/2``): schema, loading, saving, safe paths.

A dataset is a folder holding ``dataset.json`` and the files it names. The manifest lists every image
with whatever annotation the expert could afford::

    {
      "format": "dspseg/1",
      "name": "hela-2",
      "classes": ["cytosol", "mito", "er"],        // position = class id used in mask files
      "ignore_index": 255,                         // mask value meaning "not annotated"
      "images": [
        {"file": "images/c1_z012.tif",             // relative to the manifest, inside its folder
         "group": "crop1",                          // sub-volume: splits never cut a group
         "split": "train",                          // optional: train | val | test
         "mask": "masks/c1_z012.tif",               // optional; class ids, ignore_index = unannotated
         "boxes":  [{"class": "mito", "xyxy": [12, 40, 30, 61]}],  // half-open, x = column
         "points": [{"class": "mito", "xy": [20, 50]}],
         "labels": ["mito", "er"]}                  // the complete set of classes present
      ]
    }

Format ``dspseg/2`` adds records that name a section of a volume instead of a file (``volume``,
``axis``, ``index``; a ``mask`` from a label volume; ``sections`` ranges of unlabeled sections) and
the top-level ``group_every``; they are described in :mod:`dspseg.data.volume_records`. A
``dspseg/1`` file loads unchanged; a manifest is saved as ``dspseg/2`` only when it has volume records.

This module holds the schema and checks the *structure* (types, required fields, JSON syntax);
:mod:`dspseg.data.problems` turns every mistake pydantic finds into a :class:`Problem` naming the
file, the record, the field and the fix. Checks that need the class list or the image files (unknown
class, box outside the image, mask shape...) live in :mod:`dspseg.data.validate`.

(Over 300 lines: the record schema with its volume fields and its JSON round trip are one unit;
the volume rules and the range expansion live in :mod:`dspseg.data.volume_records`.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from dspseg.data.problems import Problem, problems_from_validation_error
from dspseg.data.volume_records import (RangeOrigin, VolumeMask, collapse_sections, expand_sections,
                                        structure_problems)
from dspseg.data.volumes import SectionRange, VolumeRef
from dspseg.errors import ManifestError, PathEscapeError
from dspseg.fsutil import write_text_atomic

FORMAT = "dspseg/1"
FORMAT_VOLUMES = "dspseg/2"
MANIFEST_NAME = "dataset.json"
SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------- schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=False)


class Box(_Strict):
    """Half-open pixel box ``[x0, y0, x1, y1]`` (x = column, y = row) around instances of ``cls``."""

    cls: str = Field(alias="class")
    xyxy: tuple[int, int, int, int]

    def to_json(self) -> dict:
        return {"class": self.cls, "xyxy": list(self.xyxy)}


class Point(_Strict):
    """One clicked pixel ``[x, y]`` (x = column, y = row) of class ``cls``."""

    cls: str = Field(alias="class")
    xy: tuple[int, int]

    def to_json(self) -> dict:
        return {"class": self.cls, "xy": list(self.xy)}


class ImageRecord(_Strict):
    """One image (a ``file``, or a section of a ``volume``) and its (possibly empty) annotation."""

    file: str | None = None
    volume: VolumeRef | None = None
    axis: Literal["z", "y", "x"] | None = None
    index: int | None = Field(None, ge=0)
    sections: SectionRange | None = None
    group: str | None = None
    split: Literal["train", "val", "test"] | None = None
    mask: str | VolumeMask | None = None
    boxes: list[Box] | None = None
    points: list[Point] | None = None
    labels: list[str] | None = None
    _origin: RangeOrigin | None = PrivateAttr(default=None)  # set when expanded from a ``sections`` entry
    _group_every: int | None = PrivateAttr(default=None)  # the manifest's group_every

    @property
    def section_axis(self) -> str:
        """The axis of a volume record's section (``z`` when not given)."""
        return self.sections.axis if self.sections is not None else (self.axis or "z")

    @property
    def source(self) -> str:
        """What the record shows, for messages: the file, or ``url[array] z=12`` (plus ``{region}``)."""
        if self.volume is None:
            return str(self.file)
        at = f"{self.section_axis}={self.index}" if self.index is not None else f"sections along {self.section_axis}"
        return f"{self.volume.name()} {at}"

    @property
    def group_name(self) -> str:
        """The sub-volume the image belongs to: ``group``; else, for a volume section, the volume (its
        region if it names one; or its block of ``group_every`` sections along the axis); else the file
        (its own group)."""
        if self.group is not None:
            return self.group
        if self.volume is None:
            return str(self.file)
        name = self.volume.name()
        if self._group_every and self.index is not None:
            name += f" {self.section_axis}{self.index // self._group_every}"
        return name

    @property
    def annotation_type(self) -> str:
        """The strongest annotation present: ``mask``, ``box``, ``point``, ``image`` or ``none``."""
        if self.mask is not None:
            return "mask"
        if self.boxes:
            return "box"
        if self.points:
            return "point"
        if self.labels is not None:
            return "image"
        return "none"

    def to_json(self) -> dict:
        out: dict = {"file": self.file} if self.volume is None else {"volume": self.volume.model_dump(mode="json", exclude_defaults=True)}
        if self.volume is not None:
            if self.sections is not None:
                out["sections"] = self.sections.model_dump(mode="json", exclude_defaults=True) | {"axis": self.sections.axis}
            else:
                out.update(axis=self.section_axis, index=self.index)
        if self.group is not None:
            out["group"] = self.group
        if self.split is not None:
            out["split"] = self.split
        if self.mask is not None:
            out["mask"] = self.mask if isinstance(self.mask, str) else self.mask.to_json()
        if self.boxes is not None:
            out["boxes"] = [b.to_json() for b in self.boxes]
        if self.points is not None:
            out["points"] = [p.to_json() for p in self.points]
        if self.labels is not None:
            out["labels"] = list(self.labels)
        return out


class Manifest(_Strict):
    """The whole dataset description. ``root`` is the folder that relative paths start from."""

    format: Literal["dspseg/1", "dspseg/2"] = FORMAT
    name: str = "dataset"
    classes: list[str] = Field(min_length=1)
    ignore_index: int = 255
    group_every: int | None = Field(None, ge=1)  # volume sections: a group per block of this many
    images: list[ImageRecord]
    # Not a JSON field: a manifest must not choose where its files are read from.
    _root: Path = PrivateAttr(default=Path("."))

    @property
    def root(self) -> Path:
        """The dataset folder (the manifest's parent); relative paths start here."""
        return self._root

    @root.setter
    def root(self, value: str | Path) -> None:
        self._root = Path(value)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def class_id(self, name: str) -> int:
        return self.classes.index(name)

    def path(self, relative: str) -> Path:
        """Absolute path of a file named in the manifest (see :func:`resolve_inside`)."""
        return resolve_inside(self.root, relative)

    @property
    def has_volumes(self) -> bool:
        """Whether some record names a volume section (the file is then ``dspseg/2``)."""
        return any(r.volume is not None for r in self.images)

    def to_json(self) -> dict:
        out = {"format": FORMAT_VOLUMES if self.has_volumes else self.format, "name": self.name,
               "classes": list(self.classes), "ignore_index": self.ignore_index}
        if self.group_every is not None:
            out["group_every"] = self.group_every
        out["images"] = collapse_sections(self.images)
        return out

    def records(self, split: str | None = None) -> list[ImageRecord]:
        return [r for r in self.images if split is None or r.split == split]


#: the JSON keys allowed at each level (for "unknown field" messages and their spelling suggestions)
FIELDS: dict[str, tuple[str, ...]] = {
    level: tuple(f.alias or name for name, f in model.model_fields.items())
    for level, model in (("manifest", Manifest), ("record", ImageRecord), ("boxes", Box), ("points", Point))
}


# ----------------------------------------------------------------------------------------- paths


def resolve_inside(root: Path, relative: str) -> Path:
    """Resolve ``relative`` against ``root`` and refuse anything that leaves ``root``.

    Absolute paths, ``..`` components that climb out and symlinks that point elsewhere are all
    refused with :class:`PathEscapeError`, so a manifest can never make dspseg read (or write next
    to) files outside its own folder.
    """
    if "\x00" in relative:
        raise PathEscapeError(f"{relative!r} contains a NUL character")
    if not relative or relative.strip() != relative:
        raise PathEscapeError(f"'{relative}' is empty or has leading/trailing spaces")
    if os.path.isabs(relative) or relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        raise PathEscapeError(f"'{relative}' is absolute; paths must be relative to the manifest's folder")
    root_real = Path(os.path.realpath(root))
    target = Path(os.path.realpath(root_real / relative))
    if target != root_real and root_real not in target.parents:
        raise PathEscapeError(f"'{relative}' resolves to {target}, outside the dataset folder {root_real}")
    return target


def manifest_path(data: str | Path) -> Path:
    """Accept either a dataset folder or the ``dataset.json`` file itself."""
    p = Path(data)
    return p / MANIFEST_NAME if p.is_dir() else p


# ----------------------------------------------------------------------------------------- loading


def parse_manifest(raw: object, root: Path, file: str = MANIFEST_NAME) -> Manifest:
    """Build a :class:`Manifest` from already-parsed JSON; raise :class:`ManifestError` on bad structure."""
    if not isinstance(raw, dict):
        raise ManifestError([Problem(file, "manifest", "", "the top level is not a JSON object",
                                     'start the file with {"format": "dspseg/1", ...}')])
    if raw.get("format") not in (None, FORMAT, FORMAT_VOLUMES):
        raise ManifestError([Problem(file, "manifest", "format", f"unknown format {raw.get('format')!r}",
                                     f'set "format": "{FORMAT_VOLUMES if "volume" in str(raw) else FORMAT}"')])
    try:
        m = Manifest.model_validate(raw)
    except ValidationError as err:
        raise ManifestError(problems_from_validation_error(err, file, raw, FIELDS)) from None
    m.root = root
    problems = [p for i, r in enumerate(m.images) for p in structure_problems(i, r, file)]
    if not problems:
        problems = expand_sections(m, file)
    if problems:
        raise ManifestError(problems)
    for r in m.images:
        r._group_every = m.group_every
    return m


def load_manifest(data: str | Path) -> Manifest:
    """Read ``dataset.json`` (or the folder holding it); structure only, files are not opened.

    Raises :class:`ManifestError` with the line and column of a JSON syntax error, or with every
    structural problem found.
    """
    path = manifest_path(data)
    file = str(path)
    if not path.exists():
        raise ManifestError([Problem(file, "manifest", "", "no such file",
                                     f"point dspseg at a folder containing {MANIFEST_NAME} or at the file itself")])
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a BOM (Windows editors)
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError([Problem(file, "manifest", "", f"cannot read the file ({e})",
                                     "save it as UTF-8 text and check its permissions")]) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError([Problem(file, f"line {e.lineno}, column {e.colno}", "",
                                     f"malformed JSON: {e.msg}",
                                     "fix the syntax there (trailing commas, comments and single quotes are not JSON)")]) from None
    return parse_manifest(raw, path.parent, file)


def load_partial(data: str | Path) -> tuple[Manifest | None, list[tuple[int, ImageRecord]], list[Problem]]:
    """Load the manifest; on structural errors keep going with the records that did parse (for
    ``dspseg validate``, which reports every problem rather than the first).

    Returns the manifest (``None`` when even its top level is unusable), ``(index, record)`` pairs
    for the records to check, and the problems found so far.
    """
    path = manifest_path(data)
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
        manifest = parse_manifest({**raw, "images": []}, path.parent, str(path))
    except ManifestError:
        return None, [], problems
    records = []
    for i, rec in enumerate(raw["images"]):
        try:
            record = ImageRecord.model_validate(rec)
        except ValidationError:
            continue  # already reported by load_manifest
        if not structure_problems(i, record, str(path)):
            record._group_every = manifest.group_every  # groups as a whole load would make them
            records.append((i, record))
    manifest.images = [r for _, r in records]
    return manifest, records, problems


def save_manifest(manifest: Manifest, data: str | Path) -> Path:
    """Write the manifest atomically (temporary file + rename) and return its path."""
    path = manifest_path(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest.to_json(), indent=1)
    write_text_atomic(path, text + "\n")
    return path
