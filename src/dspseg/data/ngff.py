"""OME-NGFF 0.4 multiscale metadata: the levels of a zarr group and where one level sits in another.

A multiscale group's ``.zattrs`` gives, per level (``s0``, ``s1``, ...), a ``scale`` and a
``translation`` in physical units (nanometres for OpenOrganelle), possibly composed with a group-wide
transformation. A voxel with index ``i`` sits at ``p = scale * i + translation``; a level annotated on
the grid of another (same scale) starts at the voxel offset::

    offset = round((translation_label - translation_raw) / scale)        (voxels, per axis)

Axes may be stored in any order; :class:`Level` keeps the z, y, x values and ``order``, the stored
axis of each. Every malformed attribute raises :class:`~dspseg.errors.OpenOrganelleError` naming the
group. Used by :mod:`dspseg.data.openorganelle` (no zarr import here: it reads plain dicts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dspseg.errors import OpenOrganelleError


@dataclass(frozen=True)
class Level:
    """One array of a multiscale group: ``path`` (e.g. ``s1``), scale and translation (nm, z y x);
    ``order[k]`` is the stored array axis holding z, y, x for k = 0, 1, 2."""

    path: str
    scale: tuple[float, float, float]
    translation: tuple[float, float, float]
    order: tuple[int, int, int] = (0, 1, 2)


def _vec(value: Any, where: str, key: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 or arr.size != 3 or not np.isfinite(arr).all():
        raise OpenOrganelleError(f"{where}: '{key}' must be 3 finite numbers (z, y, x), got {value!r}")
    return arr


def read_levels(attrs: dict, where: str) -> list[Level]:
    """The levels of an OME-NGFF 0.4 ``multiscales`` attribute, in z, y, x order, finest first.

    Dataset-level transformations are composed with an optional multiscale-level one:
    ``p = s2 * (s1 * i + t1) + t2``. Raises OpenOrganelleError naming ``where`` if the metadata is
    missing, the axes are not z, y, x (in any order) or a scale is not positive.
    """
    ms = attrs.get("multiscales")
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict):
        raise OpenOrganelleError(f"{where} has no OME-NGFF 'multiscales' attribute in its .zattrs")
    ms = ms[0]
    axes = [a.get("name") if isinstance(a, dict) else a for a in ms.get("axes", ["z", "y", "x"])]
    if sorted(map(str, axes)) != ["x", "y", "z"]:
        raise OpenOrganelleError(f"{where}: expected the axes z, y, x, got {axes}")
    order = [axes.index(a) for a in ("z", "y", "x")]

    def transform(items: Any) -> tuple[np.ndarray, np.ndarray]:
        s, t = np.ones(3), np.zeros(3)
        for tr in items or []:
            if tr.get("type") == "scale":
                s = _vec(tr.get("scale"), where, "scale")[order]
            elif tr.get("type") == "translation":
                t = _vec(tr.get("translation"), where, "translation")[order]
        return s, t

    s2, t2 = transform(ms.get("coordinateTransformations"))
    levels = []
    for d in ms.get("datasets", []):
        s1, t1 = transform(d.get("coordinateTransformations"))
        scale, trans = s1 * s2, s2 * t1 + t2
        if (scale <= 0).any():
            raise OpenOrganelleError(f"{where}/{d.get('path')}: scales must be positive, got {list(scale)}")
        levels.append(Level(str(d.get("path")), tuple(scale.tolist()), tuple(trans.tolist()), tuple(order)))
    if not levels:
        raise OpenOrganelleError(f"{where}: the multiscales attribute lists no datasets")
    return sorted(levels, key=lambda lv: float(np.prod(lv.scale)))


def match_levels(raw: list[Level], label: list[Level]) -> tuple[Level, Level] | None:
    """The finest (raw, label) pair with equal scales (rtol 1e-3), or None."""
    for lab in label:
        for r in raw:
            if np.allclose(lab.scale, r.scale, rtol=1e-3, atol=0):
                return r, lab
    return None


def crop_offset(raw: Level, label: Level) -> tuple[np.ndarray, float]:
    """Voxel offset of the label's first voxel in the raw level (rounded) and the rounding residual."""
    exact = (np.asarray(label.translation) - np.asarray(raw.translation)) / np.asarray(raw.scale)
    offset = np.round(exact).astype(np.int64)
    return offset, float(np.abs(exact - offset).max())
