"""napari reader: a dspseg dataset folder (or its ``dataset.json``) as layers.

Every record (a 2D file, or a section of a volume in a ``dspseg/2`` manifest) is one plane of a
stack along the first axis (one record: plain 2D layers); images of different sizes are padded
at the bottom and right to the largest, with the padding left unannotated. Layers:

* ``<name>``: the images in their stored pixel type, read lazily (dask: only the planes shown are
  read, so a long volume opens at once); 3-channel 8-bit images as RGB, other multi-channel images
  as one layer per channel;
* ``<name> mask``: every record's mask as Labels (value = class id + 1; 0 = not annotated, see
  :mod:`.layers`), in memory so it can be painted; only when some record has a mask;
* ``<name> boxes``: the boxes as Shapes rectangles, ``<name> points``: the points as Points; each
  with a ``class`` feature and the class's colour.

The image layer's ``metadata["dspseg"]`` keeps the dataset folder, the classes and per plane the
record's image file (``None`` for a volume section), (H, W) and image-level labels: the
"Annotate → dataset" widget uses them to update the record of the plane shown.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dspseg.data.io import image_header, read_image_stored, read_mask
from dspseg.data.manifest import MANIFEST_NAME, ImageRecord, Manifest, load_manifest
from dspseg.data.volume_items import VolumeReader, section_mask
from dspseg.errors import DatasetError
from dspseg.napari_plugin.layers import (CLASS, box_rectangle, class_rgba, label_colours, label_features,
                                         labels_dtype, labels_from_mask, point_coords)

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """napari's reader hook: :func:`read_dataset` for a dataset folder or ``dataset.json``, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if (p.is_dir() and (p / MANIFEST_NAME).is_file()) or (p.name == MANIFEST_NAME and p.is_file()):
        return read_dataset
    return None


class _Planes:
    """Per record: (C, H, W) and pixel type from headers or volume metadata; image and mask reads."""

    def __init__(self, manifest: Manifest):
        self.manifest, self.records = manifest, manifest.images
        self.volumes = VolumeReader(manifest)
        self.shapes: list[tuple[int, int, int]] = []
        self.dtypes: list[np.dtype] = []
        for rec in self.records:
            if rec.volume is None:
                shape, dtype = image_header(manifest.path(rec.file))
            else:
                shape, dtype = (1, *self.volumes.shape(rec)), self.volumes.volume(rec.volume).dtype
            self.shapes.append(shape)
            self.dtypes.append(dtype)
        self.channels = max(s[0] for s in self.shapes)
        self.height = max(s[1] for s in self.shapes)
        self.width = max(s[2] for s in self.shapes)
        self.dtype = np.result_type(*self.dtypes)

    def image(self, i: int) -> np.ndarray:
        """(C, H_max, W_max) stored pixels of record ``i``, zero padded."""
        rec, (_, h, w) = self.records[i], self.shapes[i]
        pixels = (read_image_stored(self.manifest.path(rec.file)) if rec.volume is None
                  else self.volumes.stored(rec, (0, 0, h, w)))
        out = np.zeros((self.channels, self.height, self.width), self.dtype)
        out[:pixels.shape[0], :h, :w] = pixels
        return out

    def mask(self, i: int) -> np.ndarray | None:
        """(H, W) class ids (``ignore_index`` unannotated) of record ``i``, or None without a mask."""
        rec = self.records[i]
        if rec.mask is None:
            return None
        if rec.volume is None:
            return read_mask(self.manifest.path(rec.mask))
        return section_mask(self.manifest, rec)


def _lead(i: int, stacked: bool) -> list[float]:
    return [float(i)] if stacked else []


def _image_layers(planes: _Planes, name: str, meta: dict[str, Any], stacked: bool) -> list[LayerData]:
    import dask
    import dask.array as da

    shape = (planes.channels, planes.height, planes.width)
    stack = da.stack([da.from_delayed(dask.delayed(planes.image)(i), shape=shape, dtype=planes.dtype)
                      for i in range(len(planes.records))])  # (N, C, H, W)
    kwargs: dict[str, Any] = {"name": name, "metadata": {"dspseg": meta}}
    if planes.channels == 3 and planes.dtype == np.uint8:
        data, kwargs["rgb"] = da.moveaxis(stack, 1, -1), True
    elif planes.channels == 1:
        data = stack[:, 0]
    else:
        data, kwargs["channel_axis"] = stack, 1
        kwargs["name"] = [f"{name} channel {c}" for c in range(planes.channels)]
    return [(data if stacked else data[0], kwargs, "image")]


def _mask_layer(planes: _Planes, name: str, classes: list[str], stacked: bool) -> list[LayerData]:
    masks = [planes.mask(i) for i in range(len(planes.records))]
    if all(m is None for m in masks):
        return []
    labels = np.zeros((len(masks), planes.height, planes.width), labels_dtype(len(classes)))
    for i, m in enumerate(masks):
        if m is not None:
            labels[i, :m.shape[0], :m.shape[1]] = labels_from_mask(m, len(classes), planes.manifest.ignore_index)
    kwargs = {"name": f"{name} mask", "colormap": label_colours(classes), "features": label_features(classes)}
    return [(labels if stacked else labels[0], kwargs, "labels")]


def _box_layer(records: list[ImageRecord], name: str, classes: list[str], stacked: bool) -> list[LayerData]:
    rects, names = [], []
    for i, rec in enumerate(records):
        for b in rec.boxes or []:
            corners = box_rectangle(b.xyxy)
            rects.append(np.column_stack([np.full(4, float(i)), corners]) if stacked else corners)
            names.append(b.cls)
    if not rects:
        return []
    colours = class_rgba(classes)[[classes.index(c) for c in names]]
    kwargs = {"name": f"{name} boxes", "shape_type": "rectangle", "features": {CLASS: names},
              "edge_color": colours, "face_color": np.zeros((len(names), 4)), "edge_width": 1}
    return [(rects, kwargs, "shapes")]


def _point_layer(records: list[ImageRecord], name: str, classes: list[str], stacked: bool,
                 size: float) -> list[LayerData]:
    coords, names = [], []
    for i, rec in enumerate(records):
        for p in rec.points or []:
            coords.append(_lead(i, stacked) + list(point_coords(p.xy)))
            names.append(p.cls)
    if not coords:
        return []
    colours = class_rgba(classes)[[classes.index(c) for c in names]]
    kwargs = {"name": f"{name} points", "features": {CLASS: names}, "face_color": colours, "size": size}
    return [(np.array(coords), kwargs, "points")]


def read_dataset(path: str) -> list[LayerData]:
    """The layers of the dataset at ``path`` (see the module docstring). A bad manifest, class name or
    image raises dspseg's error with its sentence (napari shows it)."""
    manifest = load_manifest(path)
    if not manifest.images:
        raise DatasetError(f"{Path(path)} lists no image; add images with dspseg convert --into or the "
                           "Annotate → dataset widget")
    classes, records = list(manifest.classes), manifest.images
    for rec in records:  # a class name outside the list would have no colour: validate's sentence instead
        for ann in (rec.boxes or []) + (rec.points or []):
            if ann.cls not in classes:
                raise DatasetError(f"{manifest.root / MANIFEST_NAME}: record {rec.source} names the class "
                                   f"'{ann.cls}', which is not in 'classes'; run dspseg validate {manifest.root}")
    planes = _Planes(manifest)
    stacked = len(records) > 1
    meta = {"dataset": str(Path(manifest.root).resolve()), "classes": classes,
            "files": [str(manifest.path(r.file)) if r.volume is None else None for r in records],
            "shapes": [s[1:] for s in planes.shapes], "labels": [r.labels for r in records]}
    name = manifest.name
    size = max(3.0, round(max(planes.height, planes.width) / 40))
    return (_image_layers(planes, name, meta, stacked) + _mask_layer(planes, name, classes, stacked)
            + _box_layer(records, name, classes, stacked) + _point_layer(records, name, classes, stacked, size))
