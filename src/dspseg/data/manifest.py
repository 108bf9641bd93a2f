"""The dataset manifest ``dataset.json`` (format ``dspseg/1``): schema, loading, saving, safe paths.

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

This module checks the *structure* (types, required fields, JSON syntax) and turns every mistake
into a :class:`Problem` naming the file, the record, the field and the fix. Checks that need the
class list or the image files (unknown class, box outside the image, mask shape...) live in
:mod:`dspseg.data.validate`.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from dspseg.errors import ManifestError, PathEscapeError
from dspseg.fsutil import write_text_atomic

FORMAT = "dspseg/1"
MANIFEST_NAME = "dataset.json"
SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, phrased for the person who has to fix it.

    ``where`` names the record (``images[3] (images/a.tif)``) or ``manifest``; ``field`` is the JSON
    path inside it (``boxes[0].xyxy``); ``severity`` is ``error`` (unusable) or ``warning``.
    """

    file: str
    where: str
    field: str
    message: str
    fix: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        loc = f"{self.file}: {self.where}"
        if self.field:
            loc += f", field '{self.field}'"
        return f"{self.severity}: {loc}: {self.message}. Fix: {self.fix}"


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
    """One image and its (possibly empty) annotation."""

    file: str
    group: str | None = None
    split: Literal["train", "val", "test"] | None = None
    mask: str | None = None
    boxes: list[Box] | None = None
    points: list[Point] | None = None
    labels: list[str] | None = None

    @property
    def group_name(self) -> str:
        """The sub-volume the image belongs to; an image without ``group`` is its own group."""
        return self.group if self.group is not None else self.file

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
        out: dict = {"file": self.file}
        if self.group is not None:
            out["group"] = self.group
        if self.split is not None:
            out["split"] = self.split
        if self.mask is not None:
            out["mask"] = self.mask
        if self.boxes is not None:
            out["boxes"] = [b.to_json() for b in self.boxes]
        if self.points is not None:
            out["points"] = [p.to_json() for p in self.points]
        if self.labels is not None:
            out["labels"] = list(self.labels)
        return out


class Manifest(_Strict):
    """The whole dataset description. ``root`` is the folder that relative paths start from."""

    format: Literal["dspseg/1"] = FORMAT
    name: str = "dataset"
    classes: list[str] = Field(min_length=1)
    ignore_index: int = 255
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

    def to_json(self) -> dict:
        return {
            "format": self.format,
            "name": self.name,
            "classes": list(self.classes),
            "ignore_index": self.ignore_index,
            "images": [r.to_json() for r in self.images],
        }

    def records(self, split: str | None = None) -> list[ImageRecord]:
        return [r for r in self.images if split is None or r.split == split]


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


def _record_label(raw: object, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("images"), list) and index < len(raw["images"]):
        rec = raw["images"][index]
        if isinstance(rec, dict) and isinstance(rec.get("file"), str):
            return f"images[{index}] ({rec['file']})"
    return f"images[{index}]"


_FIXES = {
    "missing": "add the field",
    "literal_error": "use one of the allowed values",
    "int_parsing": "write a whole number",
    "int_from_float": "write a whole number (no decimals)",
    "int_type": "write a whole number",
    "string_type": "write a string in double quotes",
    "list_type": "write a JSON list [...]",
    "tuple_type": "write a JSON list [...]",
    "too_short": "give the required number of entries",
    "too_long": "give the required number of entries",
    "dict_type": "write a JSON object {...}",
    "model_type": "write a JSON object {...}",
}

# Fields allowed at each level, for "unknown field" messages (and spelling suggestions).
_ALLOWED = {
    "manifest": ("format", "name", "classes", "ignore_index", "images"),
    "record": ("file", "group", "split", "mask", "boxes", "points", "labels"),
    "boxes": ("class", "xyxy"),
    "points": ("class", "xy"),
}
_COORDS = {"xyxy": (4, "a box as [x0, y0, x1, y1] (half-open, x = column)"),
           "xy": (2, "a point as [x, y] (x = column, y = row)")}


def _lookup(raw: object, loc: list) -> object:
    """The raw JSON value at ``loc`` (pydantic error location), or ``None`` if it is not there."""
    for part in loc:
        if isinstance(part, int) and isinstance(raw, list) and 0 <= part < len(raw):
            raw = raw[part]
        elif isinstance(part, str) and isinstance(raw, dict) and part in raw:
            raw = raw[part]
        else:
            return None
    return raw


def _field_name(parts: list) -> str:
    field = ""
    for part in parts:
        field += f"[{part}]" if isinstance(part, int) else (("." if field else "") + str(part))
    return field


def _unknown_field_fix(loc: list) -> str:
    """Fix text for an unknown key: the allowed keys at that level and the closest spelling."""
    name = str(loc[-1])
    parent = [p for p in loc[:-1] if isinstance(p, str)]
    level = "manifest" if not parent else ("record" if parent == ["images"] else parent[-1])
    allowed = _ALLOWED.get(level, ())
    close = difflib.get_close_matches(name.lower(), allowed, n=1, cutoff=0.6)
    first = f"rename it to '{close[0]}'" if close else "remove it or correct its spelling"
    return f"{first} (allowed here: {', '.join(allowed)})"


def problems_from_validation_error(err: ValidationError, file: str, raw: object) -> list[Problem]:
    """Turn pydantic's errors into :class:`Problem` s that name record, field and fix.

    A coordinate list of the wrong length (``"xyxy": [1, 2, 3]``) gives one problem saying how many
    numbers were found, not pydantic's per-position "Field required".
    """
    out: list[Problem] = []
    seen: set[tuple[str, str, str]] = set()
    for e in err.errors():
        loc = list(e["loc"])
        if len(loc) >= 2 and loc[0] == "images" and isinstance(loc[1], int):
            where = _record_label(raw, loc[1])
            rest = loc[2:]
        else:
            where, rest = "manifest", loc
        message, fix = e["msg"], _FIXES.get(e["type"], "correct the value")
        prefix = loc[: len(loc) - len(rest)]
        # "xyxy": [1, 2, 3] fails as "missing" at xyxy[3]: report it once, on the list itself.
        if len(rest) >= 2 and isinstance(rest[-1], int) and rest[-2] in _COORDS:
            rest_coord = rest[:-1]
        else:
            rest_coord = rest
        if rest_coord and rest_coord[-1] in _COORDS and e["type"] in ("missing", "too_short", "too_long"):
            rest = rest_coord
            value = _lookup(raw, prefix + rest)
            got = f"{len(value)}" if isinstance(value, list) else repr(value)
            n, what = _COORDS[rest[-1]]
            message, fix = f"needs exactly {n} numbers, got {got}", f"write {what}"
        elif e["type"] in ("model_type", "dict_type"):
            message = "must be a JSON object {...}"
            if where != "manifest" and not rest:
                fix = 'write the image record as {"file": "images/a.tif", ...}'
        elif e["type"] == "extra_forbidden":
            message, fix = f"unknown field '{loc[-1]}'", _unknown_field_fix(loc)
        elif e["type"] == "literal_error" and "expected" in (e.get("ctx") or {}):
            fix = f"use {e['ctx']['expected']}"
        elif e["type"] in ("too_short", "too_long") and rest == ["classes"]:
            fix = 'list at least one class name, e.g. "classes": ["background", "mito"]'
        field = _field_name(rest)
        if (where, field, message) in seen:
            continue
        seen.add((where, field, message))
        out.append(Problem(file, where, field, message, fix))
    return out


def parse_manifest(raw: object, root: Path, file: str = MANIFEST_NAME) -> Manifest:
    """Build a :class:`Manifest` from already-parsed JSON; raise :class:`ManifestError` on bad structure."""
    if not isinstance(raw, dict):
        raise ManifestError([Problem(file, "manifest", "", "the top level is not a JSON object",
                                     'start the file with {"format": "dspseg/1", ...}')])
    if raw.get("format") not in (None, FORMAT):
        raise ManifestError([Problem(file, "manifest", "format", f"unknown format {raw.get('format')!r}",
                                     f'set "format": "{FORMAT}"')])
    try:
        m = Manifest.model_validate(raw)
    except ValidationError as err:
        raise ManifestError(problems_from_validation_error(err, file, raw)) from None
    m.root = root
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


def save_manifest(manifest: Manifest, data: str | Path) -> Path:
    """Write the manifest atomically (temporary file + rename) and return its path."""
    path = manifest_path(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest.to_json(), indent=1)
    write_text_atomic(path, text + "\n")
    return path
