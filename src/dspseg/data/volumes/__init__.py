"""Volume sources: name an array lazily, open it, and read 2D sections chunk by chunk.

A dataset is a set of 2D sections wherever they live (DESIGN §7). This package is the reading side
of that: one :class:`VolumeRef` names an array in any of

* an OME-Zarr image (NGFF 0.4 on zarr v2, NGFF 0.5 on zarr v3; ``level`` picks the multiscale
  level; voxel size and translation come from its ``coordinateTransformations``),
* a plain zarr array (v2 or v3), an N5 dataset, an HDF5 dataset, a multi-page (OME-)TIFF stack,

by local path or fsspec URL (``file://``, ``s3://`` anonymous, ``https://``). :func:`open_volume`
reads metadata only; ``Volume.section(axis, index, window=(r0, c0, h, w))`` returns an (h, w) array
read through a bounded LRU :class:`ChunkCache` from exactly the chunks the window touches.

    >>> vol = open_volume({"url": "cell.ome.zarr", "level": 0})          # doctest: +SKIP
    >>> vol.axes, vol.shape, vol.voxel_size                              # doctest: +SKIP
    ('zyx', (64, 256, 256), (8.0, 4.0, 4.0))
    >>> vol.section("z", 10, window=(32, 0, 64, 128)).shape              # doctest: +SKIP
    (64, 128)

**How records will name sections** (the ``dataset.json`` schema is a later step; it builds on
these two models, so a record stays a few short fields):

* one section = a source + axis + index:
  ``{"volume": {"url": "cell.ome.zarr", "level": 0}, "axis": "z", "index": 120}`` — the record's
  image is ``open_volume(volume).section(axis, index)``; a mask may be the same ``axis``/``index``
  of a label volume (e.g. ``{"url": "cell.ome.zarr", "array": "labels/organelles"}``);
* a range of sections = a source + :class:`SectionRange` (``axis``, ``start``, ``stop``, ``step``,
  ``exclude``): ``{"volume": ..., "sections": {"axis": "z", "exclude": [120, 121]}}`` is every
  z-section but the two annotated ones; ``SectionRange.indices(vol.size(axis))`` expands it.

A training crop is then ``section(axis, index, window)`` with the crop's window, so memory depends
on the crop and the cache budget, never on the volume.
"""

from __future__ import annotations

from dspseg.data.volumes.base import Volume
from dspseg.data.volumes.cache import ChunkCache, shared_cache
from dspseg.data.volumes.open import open_volume
from dspseg.data.volumes.ref import SectionRange, VolumeRef

__all__ = ["ChunkCache", "SectionRange", "Volume", "VolumeRef", "open_volume", "shared_cache"]
