"""A folder of label images → records with masks: class-id images, or instance images with ``--instances``.

Each label image is named after its image (``cell01.tif``, ``cell01_mask.png``, ``cell01-labels.tif``;
the longest image name it starts with wins; a file naming no image is reported and skipped, or
refused with ``--on-unmatched fail``) and must have the image's height and width.

* **Class ids** (default): values are class ids ``0 .. len(classes) - 1`` (``--classes`` names them in
  order) or ``--ignore-index`` for unannotated pixels; anything else is refused (with a hint when the
  image looks like an instance labelling).
* **Instances** (``--instances CLASS``, as napari, Cellpose and StarDist save them): each positive
  value is one object, of class CLASS unless a table next to the label image says otherwise:
  ``<label image stem>.csv`` with columns ``id,class`` or ``<label image stem>.json`` holding
  ``{"7": "nucleus", "12": "cytoplasm"}``. Value 0 (no object) becomes the ``--background`` class
  when given, else unannotated: an instance image says nothing about the pixels between its objects.

Masks are rewritten as TIFF in the dataset's class ids (uint8, or uint16 above 255).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from dspseg.data.convert.common import Collected, ConvertError, MaskSource, check_mask_shape, check_mask_values
from dspseg.data.io import read_mask_stored

LABEL_SUFFIXES = (".tif", ".tiff", ".png")


def label_files(path: Path) -> list[Path]:
    """The label images in the folder ``path`` (not recursive), sorted."""
    if not path.is_dir():
        raise ConvertError(f"{path}: the labels format needs a folder of label images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise ConvertError(f"{path} holds no .tif, .tiff or .png label image")
    return files


def read_labels(path: Path, col: Collected, classes: list[str], ignore_index: int,
                instances: str | None = None, background: str | None = None) -> None:
    """Attach every label image in ``path`` to its image in ``col`` after checking shape and values.

    ``classes`` name the ids of class-id images; ``instances`` (a class name) reads them as instance
    images instead (see the module docstring).
    """
    names = [col.note_class(c, "--classes") for c in classes]
    for f in label_files(path):
        rel = col.match_file(f)
        if rel is None:
            continue
        ann = col.image(rel)
        if ann.mask is not None:
            raise ConvertError(f"{f} and {ann.mask.path} both belong to the image {rel}; keep one label image "
                               "per image")
        if instances is None:
            check_mask_values(f, len(classes), ignore_index, col.index.size(rel))
            ann.mask = MaskSource(f, {**{i: n for i, n in enumerate(names)}, ignore_index: None})
        else:
            ann.mask = _instances(f, col, instances, background, col.index.size(rel))


def _instances(f: Path, col: Collected, default: str, background: str | None, size: tuple[int, int]) -> MaskSource:
    mask = read_mask_stored(f)
    check_mask_shape(f, mask, size)
    ids = np.unique(mask).astype(np.int64)
    if ids.size and ids[0] < 0:
        raise ConvertError(f"{f}: value {int(ids[0])} is negative; instance ids are 0 (no object) and positive "
                           "numbers, one per object")
    table = _table(f)
    unknown = sorted(set(table) - set(ids.tolist()))
    if unknown:
        col.warnings.append(f"{_table_file(f)}: ids {unknown[:8]} are not in {f.name}; ignored")
    where = str(_table_file(f) or f)
    default = col.note_class(default, "--instances")
    names: dict[int, str | None] = {0: col.note_class(background, "--background") if background else None}
    for i in ids.tolist():
        if i:
            names[i] = col.note_class(table[i], f"{where}, id {i}") if i in table else default
    return MaskSource(f, names)


def _table_file(f: Path) -> Path | None:
    """The id → class table of the label image ``f`` (``<stem>.csv`` or ``<stem>.json``), if there is one."""
    for suffix in (".csv", ".json"):
        if f.with_suffix(suffix).is_file():
            return f.with_suffix(suffix)
    return None


def _table(f: Path) -> dict[int, str]:
    """The instance id → class name table next to ``f`` (empty without one)."""
    path = _table_file(f)
    if path is None:
        return {}
    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text(encoding="utf-8-sig"))
            if not isinstance(raw, dict):
                raise ConvertError(f"{path}: expected a JSON object of instance id -> class, e.g. "
                                   '{"7": "nucleus", "12": "cytoplasm"}')
            pairs = list(raw.items())
        else:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                header = {h.strip().lower(): h for h in reader.fieldnames or []}
                if "id" not in header or "class" not in header:
                    raise ConvertError(f"{path}: needs the columns id and class (one row per object); found "
                                       f"{', '.join(header) or 'none'}")
                pairs = [(row[header["id"]], row[header["class"]]) for row in reader]
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno} ({e.msg})") from None
    out: dict[int, str] = {}
    for key, cls in pairs:
        try:
            out[int(str(key).strip())] = str(cls)
        except ValueError:
            raise ConvertError(f"{path}: instance id {key!r} is not a whole number; write the label image's "
                               "value of the object") from None
    return out
