"""napari layers → a :class:`~dspseg.napari_plugin.to_dataset.LayerAnnotation` for one 2D image.

The image: a plane of a dataset opened with the dspseg reader (the plane shown; its record's file,
so "Add to dataset" updates that record), a 2D or RGB layer opened from a ``.tif``/``.png`` file
(that file), or any other 2D or RGB layer (its pixels, written as ``<layer name>.tif``).
The Labels layer must be the image's size (or the reader's stack: the plane shown is taken).
Shapes: rectangles (polygons and ellipses by their bounding box; lines and paths are skipped with a
note) → boxes; Points → points. Each shape's and point's class is its ``class`` feature when the
layer has one (and it is set), else the layer's name, so a layer named ``mito`` holds mito boxes.
Coordinates are the layers' data coordinates: the layers must share the image's pixel grid.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from dspseg.errors import ConvertError
from dspseg.napari_plugin.layers import CLASS
from dspseg.napari_plugin.to_dataset import IMAGE_SUFFIXES, LayerAnnotation

BOX_SHAPES = ("rectangle", "polygon", "ellipse")


def _reader_meta(layer: Any) -> dict[str, Any] | None:
    meta = layer.metadata.get("dspseg") if isinstance(layer.metadata, dict) else None
    return meta if isinstance(meta, dict) and "files" in meta else None


def _source_file(layer: Any) -> Path | None:
    path = getattr(getattr(layer, "source", None), "path", None)
    if path and Path(path).is_file() and Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return Path(path)
    return None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"


class Plane:
    """The 2D image a set of layers annotates: ``index`` of the plane in a reader's stack (or None),
    its (H, W), and the annotation's image fields (``name``, ``file`` or ``pixels``)."""

    def __init__(self, image: Any, current_step: tuple[int, ...]):
        self.layer = image
        meta = _reader_meta(image)
        spatial = 3 if image.rgb else 2
        self.stacked = image.data.ndim > spatial
        self.index: int | None = None
        self.file: Path | None = None
        self.pixels: np.ndarray | None = None
        if meta is not None:
            self.index = int(current_step[0]) if self.stacked else None
            file = meta["files"][self.index or 0]
            if file is None:
                raise ConvertError(f"the plane {self.index or 0} of '{image.name}' is a section of a volume; volume "
                                   "records are edited in dataset.json (Annotate adds 2D images)")
            self.file, self.shape = Path(file), tuple(meta["shapes"][self.index or 0])
        elif self.stacked:
            raise ConvertError(f"the image layer '{image.name}' has {image.data.ndim} dimensions; Annotate adds 2D "
                               "(or RGB) images: open one image, or a dataset with the dspseg reader")
        else:
            self.file = _source_file(image)
            self.pixels = None if self.file is not None else np.asarray(image.data)
            self.shape = tuple(image.data.shape[:2])
        self.name = self.file.name if self.file is not None else f"{_safe_name(image.name)}.tif"

    def on_plane(self, coords: np.ndarray) -> bool:
        """Whether (n, D) layer coordinates lie on this plane (always, for a 2D image)."""
        return self.index is None or bool(np.all(np.round(coords[:, 0]) == self.index))

    def labels(self, layer: Any) -> np.ndarray:
        data = layer.data
        if self.index is not None and data.ndim == 3:
            return np.asarray(data[self.index, :self.shape[0], :self.shape[1]])
        if data.ndim != 2:
            raise ConvertError(f"the Labels layer '{layer.name}' has {data.ndim} dimensions and the image "
                               f"'{self.layer.name}' {self.layer.data.ndim}; paint the labels on a layer of the image's shape")
        return np.asarray(data)


def _classes(layer: Any) -> list[str]:
    """Per shape or point: its ``class`` feature where set, else the layer's name."""
    n = len(layer.data)
    if CLASS in layer.features and len(layer.features) == n:
        values = layer.features[CLASS].tolist()
        return [str(v) if v is not None and str(v).strip() and str(v) != "nan" else layer.name for v in values]
    return [layer.name] * n


def gather(image: Any, current_step: tuple[int, ...], labels: Any = None, shapes: Any = None, points: Any = None,
           tags: list[str] | None = None) -> tuple[LayerAnnotation, list[str]]:
    """The annotation the layers hold for the image shown, and notes on what was skipped."""
    plane = Plane(image, current_step)
    ann = LayerAnnotation(plane.name, file=plane.file, pixels=plane.pixels, tags=list(tags or []))
    notes: list[str] = []
    if labels is not None:
        ann.labels = plane.labels(labels)
    if shapes is not None:
        for k, (vertices, kind, cls) in enumerate(zip(shapes.data, shapes.shape_type, _classes(shapes))):
            if not plane.on_plane(vertices):
                continue
            where = f"Shapes layer '{shapes.name}', shape {k}"
            if kind not in BOX_SHAPES:
                notes.append(f"{where}: a {kind} is not an area; skipped")
                continue
            ann.boxes.append((cls, np.asarray(vertices)[:, -2:]))
            ann.box_where.append(where)
    if points is not None:
        coords = np.asarray(points.data)
        for k, (xy, cls) in enumerate(zip(coords, _classes(points))):
            if plane.on_plane(xy[None]):
                ann.points.append((cls, float(xy[-2]), float(xy[-1])))
                ann.point_where.append(f"Points layer '{points.name}', point {k}")
    return ann, notes
