"""OME-NGFF multiscale metadata (0.4 on zarr v2, 0.5 on zarr v3): the levels of an image and where they sit.

The one reader of ``multiscales`` in dspseg: the volume reader (:mod:`.zarrs`) takes a level's voxel
size and translation from it, the OpenOrganelle import (:mod:`dspseg.data.openorganelle`) places a
ground-truth crop in the raw volume with it. A group's attributes hold ``multiscales`` (0.4: at the
top; 0.5: under ``ome``): the axes and, per level, a ``path`` and its ``coordinateTransformations``.
A voxel with index ``i`` of a level sits at::

    p = s2 * (s1 * i + t1) + t2          (s1, t1: the level's scale and translation;
                                          s2, t2: the optional multiscale-wide ones)

so the level's voxel size is ``s1 * s2`` and its translation ``s2 * t1 + t2`` (per axis). A level
annotated on the grid of another of the same scale starts at the voxel offset
``round((t_label - t_raw) / scale)`` (:func:`crop_offset`).

The metadata is validated by ``ome-zarr-models`` (the pydantic models of the NGFF specification:
transforms are one scale or a scale then a translation, one value per axis, datasets finest first,
unique axis names...), after one leniency of ours: NGFF 0.4 makes an axis's ``type`` optional (a
SHOULD), which the models require, so a missing type is inferred from the name (``x``, ``y``, ``z``
space, ``c`` channel, ``t`` time). The composition above, the z, y, x order and the checks the models
leave out (scales positive and finite) are ours. Every problem is one
:class:`~dspseg.errors.VolumeError` naming the group, the field and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dspseg.errors import VolumeError

SPATIAL = "zyx"
_TYPES = {"x": "space", "y": "space", "z": "space", "c": "channel", "t": "time"}
_FIX = "fix the image's OME-NGFF metadata (see ngff.openmicroscopy.org)"


@dataclass(frozen=True)
class Level:
    """One array of a multiscale image: its ``path`` (e.g. ``s1``), voxel size ``scale`` and
    ``translation`` along z, y, x (physical units, ``unit``), and ``order[k]``, the stored axis
    holding z, y, x for k = 0, 1, 2 (``axes``: the stored axis names, e.g. ``czyx``)."""

    path: str
    scale: tuple[float, float, float]
    translation: tuple[float, float, float]
    order: tuple[int, int, int] = (0, 1, 2)
    axes: str = SPATIAL
    unit: str | None = None


def multiscales_entry(attrs: dict) -> tuple[dict, str] | None:
    """The first ``multiscales`` entry of a group's attributes and its NGFF version (``0.4`` or
    ``0.5``), or None when the group is not a multiscale image."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and isinstance(ome.get("multiscales"), list):
        ms, version = ome["multiscales"], "0.5"
    else:
        ms, version = attrs.get("multiscales"), "0.4"
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict):
        return None
    return ms[0], version


def _with_axis_types(entry: dict) -> dict:
    """``entry`` with each axis an object with a ``type`` (0.4 allows a bare name or no type)."""
    axes = entry.get("axes")
    if not isinstance(axes, list):
        return entry
    typed = []
    for a in axes:
        a = {"name": a} if isinstance(a, str) else a
        if isinstance(a, dict) and a.get("type") is None and str(a.get("name")) in _TYPES:
            a = {**a, "type": _TYPES[str(a.get("name"))]}
        typed.append(a)
    return {**entry, "axes": typed}


def _validated(entry: dict, version: str, where: str) -> Any:
    """The entry as an ``ome-zarr-models`` Multiscale of ``version``; VolumeError when invalid."""
    import pydantic

    if version == "0.5":
        from ome_zarr_models.v05.multiscales import Multiscale
    else:
        from ome_zarr_models.v04.multiscales import Multiscale
    entry = {k: v for k, v in _with_axis_types(entry).items() if k != "version"}
    try:
        return Multiscale.model_validate(entry)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"] if p != "transforms")
        raise VolumeError(where, f"multiscales{'.' + loc if loc else ''}",
                          first["msg"].removeprefix("Value error, ").rstrip("."), _FIX) from None


def _vector(transform: Any, kind: str, n: int, where: str, field: str) -> np.ndarray:
    values = getattr(transform, kind, None)
    if values is None:
        raise VolumeError(where, field, f"the {kind} is stored in a file ('path'), which dspseg does not read",
                          f"write the {kind} values into the metadata")
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (n,) or not np.isfinite(v).all():
        raise VolumeError(where, field, f"the {kind} needs {n} finite numbers (one per axis), got {list(values)}", _FIX)
    return v


def _transform(items: Any, n: int, where: str, field: str) -> tuple[np.ndarray, np.ndarray]:
    s, t = np.ones(n), np.zeros(n)
    for tr in items or ():
        if tr.type == "scale":
            s = _vector(tr, "scale", n, where, field)
        elif tr.type == "translation":
            t = _vector(tr, "translation", n, where, field)
    return s, t


def read_levels(attrs: dict, where: str) -> list[Level]:
    """The levels of the multiscale image whose group attributes are ``attrs``, as listed (finest
    first, as NGFF requires). ``where`` names the group in messages. Raises VolumeError when there is
    no ``multiscales``, it breaks the specification, its spatial axes are not z, y and x, or a
    scale is not positive."""
    found = multiscales_entry(attrs)
    if found is None:
        raise VolumeError(where, "multiscales", "the group has no OME-NGFF 'multiscales' attribute",
                          "name an OME-Zarr image group, or the array itself")
    axes = found[0].get("axes")
    given = [str(a.get("name") if isinstance(a, dict) else a) for a in axes] if isinstance(axes, list) else []
    if sorted(a for a in given if a in SPATIAL) != sorted(SPATIAL) or any(a not in _TYPES for a in given):
        raise VolumeError(where, "multiscales.axes", f"expected the axes z, y, x (with t or c before them), got "
                          f"{given or axes!r}", "read a 3D image, or name its axes z, y and x")
    ms = _validated(*found, where)
    names = "".join(str(a.name) for a in ms.axes)
    order = tuple(names.index(a) for a in SPATIAL)
    units = [a.unit for a in ms.axes if a.type == "space" and isinstance(a.unit, str)]
    n = len(names)
    s2, t2 = _transform(ms.coordinateTransformations, n, where, "multiscales.coordinateTransformations")
    levels = []
    for k, d in enumerate(ms.datasets):
        s1, t1 = _transform(d.coordinateTransformations, n, where, f"multiscales.datasets.{k}.coordinateTransformations")
        scale, shift = (s1 * s2)[list(order)], (s2 * t1 + t2)[list(order)]
        if (scale <= 0).any():
            raise VolumeError(where, f"multiscales.datasets.{k}.coordinateTransformations",
                              f"level {d.path}: voxel sizes must be positive, got {scale.tolist()} (z, y, x)", _FIX)
        levels.append(Level(str(d.path), tuple(scale.tolist()), tuple(shift.tolist()), order, names,
                            units[0] if units else None))
    return levels


def match_levels(raw: list[Level], label: list[Level]) -> tuple[Level, Level] | None:
    """The finest (raw, label) pair with equal scales (rtol 1e-3), or None."""
    for lab in label:
        for r in raw:
            if np.allclose(lab.scale, r.scale, rtol=1e-3, atol=0):
                return r, lab
    return None


def crop_offset(raw: Level, label: Level) -> tuple[np.ndarray, float]:
    """Voxel offset (z, y, x) of the label's first voxel in the raw level (rounded) and the rounding residual."""
    exact = (np.asarray(label.translation) - np.asarray(raw.translation)) / np.asarray(raw.scale)
    offset = np.round(exact).astype(np.int64)
    return offset, float(np.abs(exact - offset).max())
