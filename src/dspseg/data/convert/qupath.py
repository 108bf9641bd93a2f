"""QuPath GeoJSON (File > Export objects as GeoJSON) → points, boxes and image-level labels.

QuPath writes a ``FeatureCollection`` (older versions: a plain list of features); each feature has a
``geometry`` in image pixels (x = column, y = row, pixel i covers [i, i+1): corner convention of
:mod:`dspseg.data.convert.common`) and ``properties.classification.name`` (the class). Rules:

* ``Point`` / ``MultiPoint`` → one point per coordinate at ``(floor x, floor y)``;
* ``Polygon`` / ``MultiPolygon`` → one box per polygon: rectangles exactly, other outlines by their
  bounding box (dspseg does not rasterise outlines);
* a rectangle covering the whole image, or a feature without geometry → an image-level label; the
  image's ``labels`` is then that set plus the classes of its boxes and points;
* unclassified objects and lines are skipped with a note.

Which image: the GeoJSON file's name starts with the image's name (``cell01.geojson``,
``cell01.tif.geojson``, ``cell01_annotations.json``); a file naming no image is reported and skipped
(``--on-unmatched fail``: refused).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dspseg.data.convert.common import Collected, ConvertError, corner_box

SUFFIXES = (".geojson", ".json")


def read_qupath(path: Path, col: Collected) -> list[Path]:
    """Add one GeoJSON file, or every ``*.geojson``/``*.json`` in a folder, to ``col``; return the files."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise ConvertError(f"{path}: no QuPath GeoJSON here (expected a .geojson file or a folder of them)")
    for f in files:
        _read_file(f, col)
    return files


def _features(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno} ({e.msg})") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        data = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        data = [data]
    if not isinstance(data, list):
        raise ConvertError(f"{path}: not GeoJSON from QuPath (expected a FeatureCollection or a list of features)")
    return data


def _class(props: dict[str, Any]) -> str | None:
    c = props.get("classification")
    if isinstance(c, dict):
        if isinstance(c.get("name"), str) and c["name"].strip():
            return c["name"].strip()
        if isinstance(c.get("names"), list) and c["names"]:
            return ": ".join(str(n) for n in c["names"])
    return None


def _xy(value: Any, where: str) -> tuple[float, float]:
    if (not isinstance(value, list) or len(value) < 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value[:2])):
        raise ConvertError(f"{where}: a coordinate must be [x, y], got {value!r}")
    return float(value[0]), float(value[1])


def _read_file(path: Path, col: Collected) -> None:
    rel = col.match_file(path)
    if rel is None:
        return
    h, w = col.index.size(rel)
    skipped = 0
    for i, feat in enumerate(_features(path)):
        where = f"{path}: feature {i}"
        if not isinstance(feat, dict):
            raise ConvertError(f"{where} must be a JSON object")
        cls = _class(feat.get("properties") or {})
        geom = feat.get("geometry")
        if cls is None:
            skipped += 1
            continue
        if geom is None:
            col.add_tag(rel, cls, where)
            continue
        kind, coords = geom.get("type"), geom.get("coordinates")
        if kind == "Point":
            x, y = _xy(coords, where)
            col.add_point(rel, cls, math.floor(x), math.floor(y), where)
        elif kind == "MultiPoint":
            for c in coords or []:
                x, y = _xy(c, where)
                col.add_point(rel, cls, math.floor(x), math.floor(y), where)
        elif kind in ("Polygon", "MultiPolygon"):
            polygons = [coords] if kind == "Polygon" else list(coords or [])
            for poly in polygons:
                if not poly or not poly[0]:
                    raise ConvertError(f"{where}: a polygon without coordinates")
                pts = [_xy(c, where) for c in poly[0]]
                box = corner_box(min(p[0] for p in pts), min(p[1] for p in pts),
                                 max(p[0] for p in pts), max(p[1] for p in pts))
                if box[0] <= 0 and box[1] <= 0 and box[2] >= w and box[3] >= h:
                    col.add_tag(rel, cls, where)  # a whole-image region: the class is somewhere in it
                else:
                    col.add_box(rel, cls, box, where)
        else:
            col.warnings.append(f"{where}: a {kind} is neither a point nor an area; skipped")
    if skipped:
        col.warnings.append(f"{path}: {skipped} unclassified object(s) skipped; assign classes in QuPath")
