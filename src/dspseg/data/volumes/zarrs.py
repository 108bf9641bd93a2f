"""Zarr arrays (v2 and v3) and OME-Zarr images (NGFF 0.4 on zarr v2, NGFF 0.5 on zarr v3).

An OME-Zarr image is a group whose attributes hold ``multiscales``; its levels, voxel sizes and
translations are read by :mod:`.ngff` (the one NGFF metadata reader), not through ``ome_zarr.reader``,
which builds a dask array for every level and opens stores through its own location class; the writer
side (:mod:`dspseg.data.synthetic.volume`) uses ``ome_zarr.writer`` so the metadata we write is the
library's. Chunks are read with ``array[box]`` on the chunk's own box, so zarr decodes one chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dspseg.data.volumes.base import Volume
from dspseg.data.volumes.cache import ChunkCache
from dspseg.data.volumes.ngff import Level, multiscales_entry, read_levels
from dspseg.data.volumes.ref import VolumeRef
from dspseg.errors import VolumeError


def open_zarr_node(ref: VolumeRef, path: str | None = None) -> Any:
    """The zarr group or array at ``ref.url`` (+ ``path``), read-only; v2 and v3 detected by zarr."""
    import zarr

    from dspseg.data.volumes.stores import local_path, storage_options

    local = local_path(ref.url)
    try:
        if local is not None:
            return zarr.open(store=str(local), mode="r", path=path or "")
        return zarr.open(store=ref.url, mode="r", path=path or "", storage_options=storage_options(ref) or None)
    except (FileNotFoundError, KeyError) as err:
        field = "array" if path else "url"
        raise VolumeError(ref.url, field, f"no zarr array or group at '{path or ref.url}' ({err.__class__.__name__})",
                          "check the path" + (" and the array key" if path else "")) from None


class ZarrVolume(Volume):
    """A zarr array; with ``level`` (:class:`~.ngff.Level`) that level of an OME-Zarr image."""

    format = "zarr"

    def __init__(self, ref: VolumeRef, array: Any, level: Level | None = None, cache: ChunkCache | None = None):
        self._array = array
        declared, voxel, trans, unit = None, None, None, None
        if level is not None:
            self.format = "ome-zarr"
            declared, voxel, trans, unit = level.axes, level.scale, level.translation, level.unit
            if len(declared) != array.ndim:
                raise VolumeError(ref.url, "level", f"level '{level.path}' has {array.ndim} dimensions but the image "
                                  f"names {len(declared)} axes ({declared})", "rewrite the image's metadata or pick another level")
        else:
            names = getattr(getattr(array, "metadata", None), "dimension_names", None)
            names = names or array.attrs.get("_ARRAY_DIMENSIONS")
            if names and all(isinstance(a, str) and len(a) == 1 for a in names):
                declared = "".join(names)
        super().__init__(ref, shape=array.shape, chunks=array.chunks, dtype=array.dtype,
                         declared_axes=declared, voxel_size=voxel, translation=trans, unit=unit, cache=cache)

    @property
    def array_name(self) -> str | None:
        return getattr(self._array, "path", None) or self.ref.array

    def _load(self, index: tuple[int, ...]) -> np.ndarray:
        box = tuple(slice(k * c, min((k + 1) * c, s)) for k, c, s in zip(index, self.chunks, self.shape))
        return np.asarray(self._array[box])


def _pick_level(ref: VolumeRef, levels: list[Level]) -> Level:
    paths = [lv.path for lv in levels]
    level = 0 if ref.level is None else ref.level
    if isinstance(level, int) and 0 <= level < len(paths):
        return levels[level]
    if isinstance(level, str) and level in paths:
        return levels[paths.index(level)]
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
    attrs = dict(node.attrs)
    if multiscales_entry(attrs) is None:
        names = sorted(node.array_keys())[:6] + sorted(node.group_keys())[:6]
        raise VolumeError(ref.url, "array", f"'{ref.array or '/'}' is a group without OME-NGFF multiscales "
                          f"(it holds: {', '.join(names) or 'nothing'})", "set array to the path of an array or an image group")
    level = _pick_level(ref, read_levels(attrs, ref.url + (f"[{ref.array}]" if ref.array else "")))
    try:
        array = node[level.path]
    except KeyError:
        raise VolumeError(ref.url, "level", f"level '{level.path}' is listed in the metadata but missing",
                          "rewrite the image or pick another level") from None
    return ZarrVolume(ref, array, level=level, cache=cache)
