"""One image's annotation from napari layers into a dataset folder, through ``convert --into``'s merge.

:func:`add_to_dataset` stages the image (a hard link to its file, or its pixels written as a TIFF when
it came from no file) and the Labels as a label image in a temporary folder beside the dataset, collects the boxes, points
and image-level classes as a conversion does (:class:`~dspseg.data.convert.common.Collected`: boxes
clipped, points outside dropped, class names matched ignoring case), and hands them to
:func:`~dspseg.data.convert.merge_collected`: the image gets its record ``images/<name>`` (or joins
the record that already holds it, matched by name or by being the same file), boxes and points are
appended (repeats kept once), a mask is added when the record has none, the whole dataset is
validated and nothing is written when a record this adds or changes has a problem.

    >>> ann = LayerAnnotation("cell01.tif", pixels=image, labels=labels, boxes=[("mito", (3.5, 2.5, 9.5, 7.5))])  # doctest: +SKIP
    >>> add_to_dataset(ann, "data/", classes=["bg", "mito"]).report.problems                                    # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dspseg.cli_support import closest_class
from dspseg.data.convert import ConvertResult, merge_collected
from dspseg.data.convert.classes import ClassNames
from dspseg.data.convert.common import Collected, ImageIndex, MaskSource
from dspseg.data.convert.merge import existing_dataset
from dspseg.data.io import write_image, write_mask
from dspseg.errors import ConvertError
from dspseg.napari_plugin.layers import coords_point, mask_names, rectangle_box

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass
class LayerAnnotation:
    """What the layers say about one 2D image.

    ``name``: the image's file name in the dataset (``images/<name>``); ``file``: the file it was
    opened from (linked, never changed), else ``pixels`` ((H, W) or (H, W, C)) are written as
    ``<name>``; ``labels``: (H, W) Labels values (0 not annotated, k = class k − 1) or None;
    ``boxes``: ``(class, (row, col) vertices)``; ``points``: ``(class, row, col)``; ``tags``: the
    classes ticked as present (all of them: a record's ``labels`` list every class of the image);
    ``where``: the layer each box/point came from, for messages.
    """

    name: str
    file: Path | None = None
    pixels: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: list[tuple[str, np.ndarray]] = field(default_factory=list)
    points: list[tuple[str, float, float]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    box_where: list[str] = field(default_factory=list)
    point_where: list[str] = field(default_factory=list)


def _check_class(name: str, known: list[str], where: str, data: Path) -> None:
    """ConvertError naming the layer when ``name`` is no class of ``known`` (case ignored)."""
    if name.strip().lower() in {k.lower() for k in known}:
        return
    close = closest_class(name, known)
    hint = f" (did you mean '{close}'?)" if close else ""
    raise ConvertError(f"{where}: class '{name}' is not a class of {data} ({', '.join(known)}){hint}; rename the "
                       "layer, or set the shape's or point's 'class' feature to one of them")


def _staging(data: Path) -> tempfile.TemporaryDirectory:
    """A temporary folder beside ``data`` (its file system: images hard-link through it), else in /tmp."""
    try:
        return tempfile.TemporaryDirectory(prefix=f".{data.name}.napari-", dir=data.parent)
    except OSError:
        return tempfile.TemporaryDirectory(prefix="dspseg-napari-")


def _stage_image(ann: LayerAnnotation, folder: Path) -> str:
    """Put the image into ``folder`` as ``ann.name``: a link to its file, else its pixels as a TIFF."""
    if ann.file is not None:
        name = ann.name if Path(ann.name).suffix.lower() in IMAGE_SUFFIXES else ann.name + ann.file.suffix
        try:  # a hard link: the record that holds this very file is found (same inode)
            os.link(ann.file.resolve(), folder / name)
        except OSError:  # another file system: a copy (merged by name and content)
            shutil.copy2(ann.file, folder / name)
        return name
    if ann.pixels is None:
        raise ConvertError(f"the image '{ann.name}' has neither a file nor pixels")
    name = str(Path(ann.name).with_suffix(".tif"))
    pixels = np.asarray(ann.pixels)
    write_image(folder / name, np.moveaxis(pixels, -1, 0) if pixels.ndim == 3 else pixels)
    return name


def _stage_mask(labels: np.ndarray, classes: list[str], folder: Path, rel: str, size: tuple[int, int]) -> MaskSource:
    """The Labels as a label image in ``folder``; ConvertError for a value that names no class."""
    labels = np.asarray(labels)
    if labels.shape != size:
        raise ConvertError(f"the Labels layer is {labels.shape[1]}x{labels.shape[0]} (WxH) but the image {rel} is "
                           f"{size[1]}x{size[0]}; paint the labels on a layer of the image's size")
    names = mask_names(classes)
    bad = sorted(set(np.unique(labels).tolist()) - set(names))
    if bad:
        raise ConvertError(f"the Labels layer holds the value {bad[0]}, which names no class: values 1..{len(classes)} "
                           f"mark {', '.join(classes)} and 0 marks unannotated pixels; repaint those pixels")
    path = folder / f"{Path(rel).stem}.tif"
    write_mask(path, labels.astype(np.uint16 if labels.max(initial=0) > 255 else np.uint8))
    return MaskSource(path, names)


def add_to_dataset(ann: LayerAnnotation, data: str | Path, classes: list[str] | None = None) -> ConvertResult:
    """Write or update ``ann``'s record in the dataset folder ``data`` (a new or empty folder makes a
    new dataset with ``classes``; an existing one keeps its classes). Raises ConvertError (a
    UserError) naming the layer or record and the fix; then nothing was written."""
    data = Path(data)
    existing = existing_dataset(data)
    known = list(existing.classes) if existing is not None else list(classes or [])
    if not known:
        raise ConvertError(f"{data} holds no dataset yet: name its classes (the first class is Labels value 1)")
    if existing is None and len(set(known)) != len(known):
        raise ConvertError(f"the classes {known} name a class twice; give distinct names")
    for (cls, _), where in zip(ann.boxes, ann.box_where):
        _check_class(cls, known, where, data)
    for (cls, _, _), where in zip(ann.points, ann.point_where):
        _check_class(cls, known, where, data)
    for cls in ann.tags:
        _check_class(cls, known, "the classes ticked", data)
    with _staging(data) as tmp:
        images, masks = Path(tmp) / "image", Path(tmp) / "labels"
        images.mkdir()
        rel = _stage_image(ann, images)
        col = Collected(ImageIndex(images), ClassNames(known), on_unmatched="fail")
        record = col.image(rel)  # an image without annotation joins as unlabeled
        if ann.labels is not None and np.asarray(ann.labels).any():
            record.mask = _stage_mask(ann.labels, known, masks, rel, col.index.size(rel))
        for (cls, vertices), where in zip(ann.boxes, ann.box_where):
            col.add_box(rel, cls, rectangle_box(vertices), where)
        for (cls, row, col_), where in zip(ann.points, ann.point_where):
            col.add_point(rel, cls, *coords_point(row, col_), where)
        for cls in ann.tags:
            col.add_tag(rel, cls, "the classes ticked")
        ignore = existing.ignore_index if existing is not None else 255
        return merge_collected(col, data, existing, known, data.name, ignore)
