"""A lab's own files, written the way its tools write them (for the convert tests and the README walk-through).

:func:`write_lab_files` fills a folder with what a microscopy lab brings to dspseg:

* ``images/cellGG_zK.tif`` — 16-bit TIFFs (uint16, no channel axis), non-square (48 x 64 by default):
  cells (mid-grey cytoplasm, bright nucleus) on a dark background, with noise. ``GG`` is the cell
  (the sub-volume, ``--group-pattern '^(cell\\d+)_'``), ``K`` the section.
* ``labels/cellGG_z0_labels.tif`` — class-id label images as napari saves a Labels layer (int32;
  0 background, 1 cytoplasm, 2 nucleus): one per cell, on section 0.
* ``instances/cellGG_z1_nuclei.tif`` — instance label images (int32, one id per nucleus, 0 = not a
  nucleus, ids not contiguous, as painted or as Cellpose/StarDist save them).
* ``qupath/cellGG_zK.tif.geojson`` — QuPath's "Export objects as GeoJSON": a ``FeatureCollection``
  whose features carry ``properties.classification.name`` ("Nucleus", "Cytoplasm": QuPath spells
  classes capitalised), nuclei as rectangles, cells as polygons (octagons around the cell); the
  background is never drawn.
* ``points/cellGG_zK_nucleus.csv`` and ``..._Cytoplasm.csv`` — napari Points layers saved as CSV:
  ``index,axis-0,axis-1`` (row, column) with float coordinates near pixel centres.
* with ``napari_default_name=True`` also ``points/Points.csv``: a layer saved under napari's default
  name, which names no image.

Which image gets what (``groups`` cells, 2 sections each): every section 0 has a mask (so every
group has masked images); cell 1 section 0 also gets QuPath boxes and cell 2 section 0 napari points
(merged with the mask into one record); sections 1 get instances (cells 1-2), QuPath boxes (3-4),
points (5-6), and nothing from then on (unlabeled). Classes: :data:`CLASSES`. The truth of every
image is returned, so tests can check what the converters made of it.

    >>> lab = write_lab_files(tmp_path / "lab")          # doctest: +SKIP
    >>> convert_commands(lab.root, tmp_path / "data")    # doctest: +SKIP
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

#: the dataset's classes, in id order (label images use these ids)
CLASSES = ("background", "cytoplasm", "nucleus")
BACKGROUND, CYTOPLASM, NUCLEUS = range(3)


@dataclass
class LabFiles:
    """Where :func:`write_lab_files` put everything, and the truth it drew from."""

    root: Path
    images: Path
    labels: Path
    instances: Path
    qupath: Path
    points: Path
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # image file name -> (H, W) class ids
    masked: list[str] = field(default_factory=list)  # image file names with a class-id label image
    instanced: list[str] = field(default_factory=list)
    boxed: list[str] = field(default_factory=list)
    pointed: list[str] = field(default_factory=list)


def _cells(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(H, W) class ids of 1-3 elliptic cells with a nucleus each, and each cell's (H, W) pixels."""
    yy, xx = np.mgrid[:h, :w]
    classes = np.zeros((h, w), np.int32)
    cells = []
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.15 * w, 0.85 * w)
        ry, rx = rng.uniform(0.15 * h, 0.25 * h), rng.uniform(0.12 * w, 0.2 * w)
        cell = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        cell &= classes == BACKGROUND  # cells do not overlap
        if cell.sum() < 30:
            continue
        classes[cell] = CYTOPLASM
        nucleus = cell & (((yy - cy) / (0.45 * ry)) ** 2 + ((xx - cx) / (0.45 * rx)) ** 2 <= 1)
        classes[nucleus] = NUCLEUS
        cells.append(cell)
    return classes, cells


def _image(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uint16 micrograph of the class map: dark background, grey cytoplasm, bright nucleus, noise."""
    level = np.array([2000.0, 18000.0, 42000.0])[classes]
    return np.clip(level + rng.normal(0, 2500, classes.shape), 0, 65535).astype(np.uint16)


def _pixel_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """Half-open ``[x0, y0, x1, y1]`` around the True pixels."""
    ys, xs = np.nonzero(pixels)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _feature(geometry: dict, name: str, color: list[int]) -> dict:
    return {"type": "Feature", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, name + json.dumps(geometry))),
            "geometry": geometry,
            "properties": {"objectType": "annotation", "classification": {"name": name, "color": color}}}


def _qupath(classes: np.ndarray, cells: list[np.ndarray]) -> dict:
    """QuPath's export of the image: a rectangle per nucleus, an octagon per cell (corner coordinates)."""
    features = []
    for cell in cells:
        x0, y0, x1, y1 = _pixel_box(cell)
        dx, dy = (x1 - x0) / 4, (y1 - y0) / 4
        ring = [[x0 + dx, y0], [x1 - dx, y0], [x1, y0 + dy], [x1, y1 - dy], [x1 - dx, y1], [x0 + dx, y1],
                [x0, y1 - dy], [x0, y0 + dy]]
        features.append(_feature({"type": "Polygon", "coordinates": [ring + [ring[0]]]}, "Cytoplasm", [255, 200, 0]))
        nx0, ny0, nx1, ny1 = _pixel_box(cell & (classes == NUCLEUS))
        rect = [[nx0, ny0], [nx1, ny0], [nx1, ny1], [nx0, ny1], [nx0, ny0]]
        features.append(_feature({"type": "Polygon", "coordinates": [rect]}, "Nucleus", [0, 0, 180]))
    return {"type": "FeatureCollection", "features": features}


def _points_csv(path: Path, pixels: list[tuple[int, int]], rng: np.random.Generator) -> None:
    """A napari Points layer CSV: ``index,axis-0,axis-1``, (row, column) floats within 0.3 of the centre."""
    lines = ["index,axis-0,axis-1"]
    for i, (row, col) in enumerate(pixels):
        r, c = row + rng.uniform(-0.3, 0.3), col + rng.uniform(-0.3, 0.3)
        lines.append(f"{i},{r:.4f},{c:.4f}")
    path.write_text("\n".join(lines) + "\n")


def _centre(pixels: np.ndarray) -> tuple[int, int]:
    """A pixel of the region near its centroid (inside it, also for a curved region)."""
    ys, xs = np.nonzero(pixels)
    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return int(ys[k]), int(xs[k])


def write_lab_files(root: Path, groups: int = 6, size: tuple[int, int] = (48, 64), seed: int = 0,
                    napari_default_name: bool = False) -> LabFiles:
    """Write a lab's images and annotation files below ``root`` (see the module docstring); return where."""
    root = Path(root)
    lab = LabFiles(root, root / "images", root / "labels", root / "instances", root / "qupath", root / "points")
    for folder in (lab.images, lab.labels, lab.instances, lab.qupath, lab.points):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    for g in range(1, groups + 1):
        for z in (0, 1):
            stem = f"cell{g:02d}_z{z}"
            classes, cells = _cells(rng, h, w)
            name = f"{stem}.tif"
            tifffile.imwrite(lab.images / name, _image(classes, rng))
            lab.truth[name] = classes
            if z == 0:
                tifffile.imwrite(lab.labels / f"{stem}_labels.tif", classes.astype(np.int32))
                lab.masked.append(name)
            boxes = (z == 0 and g == 1) or (z == 1 and g in (3, 4))
            points = (z == 0 and g == 2) or (z == 1 and g in (5, 6))
            if z == 1 and g in (1, 2):
                ids = np.zeros((h, w), np.int32)
                for k, cell in enumerate(cells):
                    ids[cell & (classes == NUCLEUS)] = 7 + 5 * k  # napari-style ids: not 1, 2, 3
                tifffile.imwrite(lab.instances / f"{stem}_nuclei.tif", ids)
                lab.instanced.append(name)
            if boxes:
                (lab.qupath / f"{name}.geojson").write_text(json.dumps(_qupath(classes, cells), indent=2))
                lab.boxed.append(name)
            if points:
                _points_csv(lab.points / f"{stem}_nucleus.csv",
                            [_centre(c & (classes == NUCLEUS)) for c in cells], rng)
                _points_csv(lab.points / f"{stem}_Cytoplasm.csv",
                            [_centre(c & (classes == CYTOPLASM)) for c in cells], rng)
                lab.pointed.append(name)
    if napari_default_name:
        _points_csv(lab.points / "Points.csv", [(3, 4)], rng)
    return lab


def convert_commands(lab: LabFiles, data: Path) -> list[list[str]]:
    """The ``dspseg convert`` arguments that build one dataset ``data`` from every source of ``lab``
    (README "Bring your own data"): class-id labels first (they fix the classes and the groups), then
    the instance labels, QuPath boxes and napari points, each ``--into`` the same dataset."""
    images, into = ["--images", str(lab.images)], ["--into", str(data)]
    return [
        ["labels", str(lab.labels), *images, "--classes", ",".join(CLASSES), "--group-pattern", r"^(cell\d+)_", *into],
        ["labels", str(lab.instances), *images, "--instances", "nucleus", *into],
        ["qupath", str(lab.qupath), *images, "--background", "background", *into],
        ["napari", str(lab.points), *images, "--background", "background", *into],
    ]
