"""COCO JSON (``images``, ``annotations``, ``categories``) → boxes, points and image-level labels.

Rules, per annotation (class = its category's ``name``; coordinates in the corner convention of
:mod:`dspseg.data.convert.common`, x = column):

1. ``keypoints`` ``[x1, y1, v1, x2, y2, v2, ...]`` with some ``v > 0`` → one point per visible keypoint
   at ``(floor x, floor y)`` (the annotation's bbox, derived from the points, is not used);
2. else a ``bbox`` ``[x, y, w, h]`` of at most 1 x 1 pixel → a point at ``(floor x, floor y)``;
3. else a ``bbox`` → the box ``[floor x, floor y, ceil(x + w), ceil(y + h)]``;
4. else polygon ``segmentation`` → the box around the polygon (outlines are not rasterised);
5. else (no geometry at all) → an image-level label.

An image with at least one image-level label gets ``labels`` = those tags plus the classes of its
boxes and points (the complete set of classes present); otherwise ``labels`` stays unset. Every image
listed in ``images`` becomes a record (unlabeled if nothing refers to it); an image not found in
``--images`` is reported and skipped with its annotations (``--on-unmatched fail``: refused). The
``width``/``height`` of an image must match its file, which catches swapped x/y.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dspseg.data.convert.common import Collected, ConvertError, corner_box


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConvertError(f"{path}: no such COCO JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno} ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path}: cannot read the file ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ConvertError(f"{path}: not a COCO file (a JSON object with an 'images' list is expected)")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise ConvertError(f"{path}: '{key}' must be a list")
    return data


def _numbers(value: Any, where: str, field: str) -> list[float]:
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
        raise ConvertError(f"{where}: '{field}' must be a list of numbers, got {value!r}")
    return [float(v) for v in value]


def read_coco(path: Path, col: Collected) -> None:
    """Add the annotations of the COCO file ``path`` to ``col`` (see the module docstring for the rules)."""
    data = _load(path)
    categories: dict[Any, str] = {}
    for i, cat in enumerate(data.get("categories", [])):
        if not isinstance(cat, dict) or "id" not in cat or not str(cat.get("name", "")).strip():
            raise ConvertError(f"{path}: categories[{i}] needs an 'id' and a 'name'")
        categories[cat["id"]] = str(cat["name"]).strip()
    for cid in sorted(categories, key=lambda c: (0, c, "") if isinstance(c, int) else (1, 0, str(c))):
        col.note_class(categories[cid], f"{path}: categories")  # class order = category ids
    images: dict[Any, str] = {}
    skipped: set[Any] = set()
    for i, img in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise ConvertError(f"{where} needs an 'id' and a 'file_name'")
        rel = col.index.find(img["file_name"], where)
        if rel is None:
            col.unmatched(f"{where}: no image '{img['file_name']}' in --images {col.index.root}"
                          f"{col.index.closest_hint(Path(img['file_name']).stem)} (check --images)")
            skipped.add(img["id"])
            continue
        h, w = col.index.size(rel)
        if "width" in img and "height" in img and (img["width"], img["height"]) != (w, h):
            swap = " (swapped: x must be the column, y the row)" if (img["width"], img["height"]) == (h, w) else ""
            raise ConvertError(f"{where}: width x height is {img['width']} x {img['height']} but {rel} is "
                               f"{w} x {h}{swap}; fix the entry or point --images at the right files")
        images[img["id"]] = rel
        col.image(rel)
    for i, ann in enumerate(data.get("annotations", [])):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise ConvertError(f"{where} must be a JSON object")
        if ann.get("image_id") in skipped:
            continue  # its image is not in --images: reported once, above
        if ann.get("image_id") not in images:
            raise ConvertError(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in categories:
            raise ConvertError(f"{where}: category_id {ann.get('category_id')!r} is not in 'categories'")
        _add(ann, images[ann["image_id"]], categories[ann["category_id"]], col, where)


def _add(ann: dict[str, Any], rel: str, cls: str, col: Collected, where: str) -> None:
    kps = ann.get("keypoints")
    if kps:
        values = _numbers(kps, where, "keypoints")
        if len(values) % 3:
            raise ConvertError(f"{where}: 'keypoints' must hold x, y, visibility triples, got {len(values)} numbers")
        visible = [(x, y) for x, y, v in zip(values[0::3], values[1::3], values[2::3]) if v > 0]
        if not visible:
            col.warnings.append(f"{where}: no visible keypoint; skipped")
        for x, y in visible:
            col.add_point(rel, cls, math.floor(x), math.floor(y), where)
        return
    bbox = ann.get("bbox")
    if bbox:
        x, y, w, h = _bbox(bbox, where)
        if w <= 1 and h <= 1:
            col.add_point(rel, cls, math.floor(x), math.floor(y), where)
        else:
            col.add_box(rel, cls, corner_box(x, y, x + w, y + h), where)
        return
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg and all(isinstance(p, list) for p in seg):
        coords = [c for poly in seg for c in _numbers(poly, where, "segmentation")]
        if len(coords) >= 2:
            xs, ys = coords[0::2], coords[1::2]
            col.add_box(rel, cls, corner_box(min(xs), min(ys), max(xs), max(ys)), where)
            return
    if seg:
        col.warnings.append(f"{where}: a run-length segmentation without bbox cannot be used; skipped")
        return
    col.add_tag(rel, cls, where)


def _bbox(bbox: Any, where: str) -> tuple[float, float, float, float]:
    values = _numbers(bbox, where, "bbox")
    if len(values) != 4 or values[2] < 0 or values[3] < 0:
        raise ConvertError(f"{where}: 'bbox' must be [x, y, width, height] with width, height >= 0, got {bbox!r}")
    return values[0], values[1], values[2], values[3]
