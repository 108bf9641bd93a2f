"""A box of a volume as a volume of its own (``VolumeRef.region``): an annotated crop of a large array.

:class:`RegionVolume` wraps the opened array and shifts every read by the box's origin, so its
``shape``, sections, ``size`` and ``translation`` are the box's while its chunks are the array's own
(a read still decodes exactly the chunks it touches, shared through the cache with any other box of
the same array). A box that does not fit the array is one :class:`~dspseg.errors.VolumeError`::

    array z, y, x = (600, 3000, 3000), region start (100, 1200, 900), stop (300, 1600, 1300)
    -> a (200, 400, 400) volume; its section z = 0 is the array's z = 100, rows 1200..1599
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dspseg.data.volumes.base import Volume
from dspseg.data.volumes.ref import SPATIAL, VolumeRef
from dspseg.errors import VolumeError


class RegionVolume(Volume):
    """``inner`` (the whole array, opened from ``ref`` without its region) seen through ``ref.region``."""

    def __init__(self, ref: VolumeRef, inner: Volume):
        region = ref.region
        full = {a: inner.size(a) for a in SPATIAL}
        for k, a in enumerate(SPATIAL):
            if region.stop[k] > full[a]:
                raise VolumeError(ref.url, "region", f"the region {region.text()} does not fit the array's "
                                  f"{' x '.join(str(full[b]) for b in SPATIAL)} voxels (z x y x x)",
                                  f"keep stop <= {[full[b] for b in SPATIAL]} along z, y, x, at this level")
        self.inner, self.ref, self.format = inner, ref, inner.format
        self.axes, self.dtype, self.chunks, self.fixed = inner.axes, inner.dtype, inner.chunks, inner.fixed
        self.cache, self.key, self.unit, self.voxel_size = inner.cache, inner.key, inner.unit, inner.voxel_size
        self.origin = tuple(region.start[SPATIAL.index(a)] if a in SPATIAL else 0 for a in self.axes)
        self.shape = tuple((region.stop[SPATIAL.index(a)] - region.start[SPATIAL.index(a)]) if a in SPATIAL else n
                           for a, n in zip(self.axes, inner.shape))
        self.translation = tuple(t + v * s for t, v, s in zip(inner.translation, inner.voxel_size, region.start))

    def _load(self, index: tuple[int, ...]) -> np.ndarray:
        """The array's chunk at grid ``index`` (the array's grid, not the box's)."""
        return self.inner._load(index)

    def chunk(self, index: tuple[int, ...]) -> np.ndarray:
        return self.inner.chunk(index)

    def read(self, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
        """The box ``[start, stop)`` of the region (stored order), read from the array."""
        return self.inner.read([int(a) + o for a, o in zip(start, self.origin)],
                               [int(b) + o for b, o in zip(stop, self.origin)])
