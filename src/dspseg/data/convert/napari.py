"""napari layer CSVs (File > Save Selected Layers) → points and boxes.

napari writes a Points layer as ``index,axis-0,axis-1[,property columns]`` and a Shapes layer as
``index,shape-type,vertex-index,axis-0,axis-1`` (one row per vertex). napari is row-first:
``axis-0`` is the row (y) and ``axis-1`` the column (x); with more axes the last two are (y, x) and
the leading ones must be 0 (one 2D image per file). Pixel centres sit at integer coordinates
(centre convention of :mod:`dspseg.data.convert.common`):

* a point → pixel ``(round x, round y)``;
* a ``rectangle`` (also ``polygon`` and ``ellipse``, by their vertices' bounding box) → the box of the
  pixels whose centres lie inside; ``line`` and ``path`` shapes are skipped with a note.

Which image: the CSV's name starts with the image's name (``cell01.csv``, ``cell01_mito.csv``); a file
that names no image (``Points.csv``: a layer saved under napari's default name) is reported and
skipped, or refused with ``--on-unmatched fail``.
Which class: the column ``--class-column`` (default: a ``class``, ``label`` or ``category`` column),
else the rest of the file name after the image name (``cell01_mito.csv`` → ``mito``).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from dspseg.data.convert.common import Collected, ConvertError, centre_box

CLASS_COLUMNS = ("class", "label", "category")
BOX_SHAPES = ("rectangle", "polygon", "ellipse")


def _float(row: dict[str, str], key: str, where: str) -> float:
    try:
        value = float(row[key])
    except (TypeError, ValueError):
        raise ConvertError(f"{where}: column '{key}' must be a number, got {row.get(key)!r}") from None
    if not math.isfinite(value):
        raise ConvertError(f"{where}: column '{key}' is not finite ({row[key]})")
    return value


def _class_column(header: list[str], wanted: str | None, path: Path) -> str | None:
    if wanted is not None:
        if wanted not in header:
            raise ConvertError(f"{path}: no column '{wanted}' (--class-column); columns: {', '.join(header)}")
        return wanted
    lower = {h.lower(): h for h in header}
    return next((lower[c] for c in CLASS_COLUMNS if c in lower), None)


def read_napari(path: Path, col: Collected, class_column: str | None = None) -> list[Path]:
    """Add the points/boxes of one CSV, or of every ``*.csv`` in a folder, to ``col``; return the files read."""
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise ConvertError(f"{path}: no napari layer CSV here (expected a .csv file or a folder of them)")
    for f in files:
        _read_file(f, col, class_column)
    return files


def _read_file(path: Path, col: Collected, class_column: str | None) -> None:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        rows = list(reader)
    axes = sorted((h for h in header if re.fullmatch(r"axis-\d+", h)), key=lambda h: int(h[5:]))
    if len(axes) < 2:
        raise ConvertError(f"{path}: not a napari layer CSV (needs columns axis-0 and axis-1; found "
                           f"{', '.join(header) or 'none'})")
    rel = col.match_file(path)
    if rel is None:
        return
    rest = col.index.rest(path.stem, rel)
    cls_col = _class_column(header, class_column, path)
    if cls_col is None and not rest:
        raise ConvertError(f"{path}: no class: add a class column or name the file <image>_<class>.csv")
    shapes = "shape-type" in header
    groups: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{path}, line {line}"
        for lead in axes[:-2]:
            if _float(row, lead, where) != 0:
                raise ConvertError(f"{where}: {lead} = {row[lead]}; this layer spans several planes, but dspseg "
                                   "needs one CSV per 2D image (project or split the layer)")
        if shapes:
            groups.setdefault(row.get("index", ""), []).append((line, row))
            continue
        cls = row.get(cls_col, "") if cls_col else rest
        y, x = _float(row, axes[-2], where), _float(row, axes[-1], where)
        col.add_point(rel, cls, math.floor(x + 0.5), math.floor(y + 0.5), where)
    for index, vertices in groups.items():
        line, first = vertices[0]
        where = f"{path}, shape {index} (line {line})"
        kind = first.get("shape-type", "").strip().lower()
        if kind not in BOX_SHAPES:
            col.warnings.append(f"{where}: a {kind or 'shape'} is not an area; skipped")
            continue
        ys = [_float(r, axes[-2], where) for _, r in vertices]
        xs = [_float(r, axes[-1], where) for _, r in vertices]
        cls = first.get(cls_col, "") if cls_col else rest
        col.add_box(rel, cls, centre_box(min(xs), min(ys), max(xs), max(ys)), where)
