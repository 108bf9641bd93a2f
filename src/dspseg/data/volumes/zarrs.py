"""Zarr arrays (v2 and v3) and OME-Zarr images (NGFF 0.4 on zarr v2, NGFF 0.5 on zarr v3).

An OME-Zarr image is a group whose attributes hold ``multiscales`` (NGFF 0.4: at the top of the
attributes; 0.5: under ``ome``): the axes (names, types, units) and per level a ``path`` and its
``coordinateTransformations``. A voxel with index ``i`` of a level sits at

    p = s2 * (s1 * i + t1) + t2          (s1, t1: the level's scale and translation;
                                          s2, t2: the optional multiscale-wide ones)

so the level's voxel size is ``s1 * s2`` and its translation ``s2 * t1 + t2`` (per axis). These few
fields are read from the attributes dict here rather than through ``ome_zarr.reader``, which builds a
dask array for every level and opens stores through its own location class; the writer side
(:mod:`dspseg.data.synthetic.volume`) uses ``ome_zarr.writer`` so the metadata we write is the
library's. Chunks are read with ``array[box]`` on the chunk's own box, so zarr decodes one chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dspseg.data.volumes.base import Volume
from dspseg.data.volumes.cache import ChunkCache
from dspseg.data.volumes.ref import SPATIAL, VolumeRef
from dspseg.errors import VolumeError


def open_zarr_node(ref: VolumeRef, path: str | None = None) -> Any:
    """The zarr group or array at ``ref.url`` (+ ``path``), read-only; v2 and v3 detected by zarr."""
    import zarr

    from dspseg.data.volumes.stores import local_path

    local = local_path(ref.url)
    try:
        if local is not None:
            return zarr.open(store=str(local), mode="r", path=path or "")
        return zarr.open(store=ref.url, mode="r", path=path or "", storage_options=ref.storage_options or None)
    except (FileNotFoundError, KeyError) as err:
        field = "array" if path else "url"
        raise VolumeError(ref.url, field, f"no zarr array or group at '{path or ref.url}' ({err.__class__.__name__})",
                          "check the path" + (" and the array key" if path else "")) from None


def ngff_multiscales(attrs: dict) -> list[dict] | None:
    """The ``multiscales`` list of an NGFF 0.4 or 0.5 group's attributes, or None."""
    ms = attrs.get("ome", {}).get("multiscales") if isinstance(attrs.get("ome"), dict) else None
    ms = ms if ms is not None else attrs.get("multiscales")
    return ms if isinstance(ms, list) and ms and isinstance(ms[0], dict) else None


def _transform(items: Any, n: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    s, t = np.ones(n), np.zeros(n)
    for tr in items or []:
        kind = tr.get("type") if isinstance(tr, dict) else None
        if kind in ("scale", "translation"):
            v = np.asarray(tr.get(kind), dtype=np.float64)
            if v.shape != (n,) or not np.isfinite(v).all():
                raise VolumeError(where, f"coordinateTransformations.{kind}",
                                  f"needs {n} finite numbers (one per axis), got {tr.get(kind)!r}", "fix the image metadata")
            s, t = (v, t) if kind == "scale" else (s, v)
    return s, t


class ZarrVolume(Volume):
    """A zarr array; with ``ngff`` (one ``multiscales`` entry) an OME-Zarr image level."""

    format = "zarr"

    def __init__(self, ref: VolumeRef, array: Any, ngff: dict | None = None, level: int = 0,
                 cache: ChunkCache | None = None):
        self._array = array
        declared, voxel, trans, unit = None, None, None, None
        if ngff is not None:
            self.format = "ome-zarr"
            axes = [a.get("name") if isinstance(a, dict) else a for a in ngff.get("axes", [])]
            declared = "".join(str(a) for a in axes) or None
            n = array.ndim
            s2, t2 = _transform(ngff.get("coordinateTransformations"), n, ref.url)
            s1, t1 = _transform(ngff["datasets"][level].get("coordinateTransformations"), n, ref.url)
            scale, shift = s1 * s2, s2 * t1 + t2
            if declared and len(declared) == n:
                idx = [declared.index(a) for a in SPATIAL if a in declared]
                if len(idx) == 3:
                    voxel, trans = scale[idx].tolist(), shift[idx].tolist()
                units = [a.get("unit") for a in ngff.get("axes", []) if isinstance(a, dict) and a.get("name") in SPATIAL]
                unit = units[0] if units else None
        else:
            names = getattr(getattr(array, "metadata", None), "dimension_names", None)
            names = names or array.attrs.get("_ARRAY_DIMENSIONS")
            if names and all(isinstance(a, str) and len(a) == 1 for a in names):
                declared = "".join(names)
        super().__init__(ref, shape=array.shape, chunks=array.chunks, dtype=array.dtype,
                         declared_axes=declared, voxel_size=voxel, translation=trans, unit=unit, cache=cache)

    def _load(self, index: tuple[int, ...]) -> np.ndarray:
        box = tuple(slice(k * c, min((k + 1) * c, s)) for k, c, s in zip(index, self.chunks, self.shape))
        return np.asarray(self._array[box])


def _pick_level(ref: VolumeRef, datasets: list[dict]) -> int:
    paths = [str(d.get("path")) for d in datasets]
    level = 0 if ref.level is None else ref.level
    if isinstance(level, int) and 0 <= level < len(paths):
        return level
    if isinstance(level, str) and level in paths:
        return paths.index(level)
    raise VolumeError(ref.url, "level", f"the image has no level {level!r} (levels {', '.join(paths)})",
                      f"use an index 0..{len(paths) - 1} or one of the paths")


def open_zarr(ref: VolumeRef, cache: ChunkCache | None = None) -> ZarrVolume:
    """A zarr array or an OME-Zarr image level (``ref.level``) at ``ref.url`` / ``ref.array``."""
    import zarr

    node = open_zarr_node(ref, ref.array)
    if isinstance(node, zarr.Array):
        if ref.level is not None:
            raise VolumeError(ref.url, "level", "a plain zarr array has no levels", "remove level")
        return ZarrVolume(ref, node, cache=cache)
    ms = ngff_multiscales(dict(node.attrs))
    if ms is None:
        names = sorted(node.array_keys())[:6] + sorted(node.group_keys())[:6]
        raise VolumeError(ref.url, "array", f"'{ref.array or '/'}' is a group without OME-NGFF multiscales "
                          f"(it holds: {', '.join(names) or 'nothing'})", "set array to the path of an array or an image group")
    level = _pick_level(ref, ms[0].get("datasets", []))
    path = str(ms[0]["datasets"][level]["path"])
    try:
        array = node[path]
    except KeyError:
        raise VolumeError(ref.url, "level", f"level '{path}' is listed in the metadata but missing",
                          "rewrite the image or pick another level") from None
    return ZarrVolume(ref, array, ngff=ms[0], level=level, cache=cache)
