"""The opened volume: shape, dtype, axes, voxel size, translation, and chunk-aware reads.

Every format (:mod:`.zarrs`, :mod:`.n5`, :mod:`.hdf5`, :mod:`.tiff`) is a :class:`Volume` that knows
its stored chunk grid and how to decode one chunk (``_load``); everything else lives here once.
A read of a region asks the shared :class:`~.cache.ChunkCache` for exactly the chunks the region
touches (chunk ``k`` along an axis of chunk size ``s`` covers ``[k s, (k + 1) s)``), so its cost and
its memory are those of the window, never of the volume. A chunk that cannot be read or decoded
(the network drops, a corrupt or vanished file) is one :class:`~dspseg.errors.VolumeReadError`
naming the volume, array, section and chunk (:meth:`Volume.chunk`, the one place all reads pass).

Axes are letters of ``tczyx`` in stored order (``czyx``...). The spatial axes ``z, y, x`` are the
volume; every other stored axis is fixed at one index (``VolumeRef.select``, or 0 when its size is
1). A *section* along spatial axis ``a`` at ``index`` is the 2D plane of the two other spatial
axes in stored order: rows = the first of them, columns = the second (for ``zyx`` and ``a = z``:
rows ``y``, columns ``x``; for ``a = y``: rows ``z``, columns ``x``).
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from dspseg.data.volumes.cache import ChunkCache, shared_cache
from dspseg.data.volumes.ref import SPATIAL, VolumeRef
from dspseg.data.volumes.stores import missing_package, read_failure
from dspseg.errors import UserError, VolumeError, VolumeReadError


def resolve_axes(ref: VolumeRef, declared: str | None, ndim: int) -> str:
    """The stored axes: those the store declares, checked against ``ref.axes``; else ``ref.axes``;
    else ``zyx`` for a 3D array. A mismatch or a missing declaration is a VolumeError."""
    if declared is not None:
        declared = declared.lower()
        if ref.axes is not None and ref.axes != declared:
            raise VolumeError(ref.url, "axes", f"the array's axes are '{declared}', not '{ref.axes}'",
                              f"set axes to '{declared}' or leave it out")
        axes = declared
    elif ref.axes is not None:
        axes = ref.axes
    elif ndim == 3:
        axes = SPATIAL
    else:
        raise VolumeError(ref.url, "axes", f"the array has {ndim} dimensions and names none of them",
                          "set axes to the stored order, e.g. 'czyx'")
    if len(axes) != ndim or sorted(set(axes) & set(SPATIAL)) != sorted(SPATIAL):
        raise VolumeError(ref.url, "axes", f"axes '{axes}' do not match the array's {ndim} dimensions",
                          f"give {ndim} letters of 'tczyx' including z, y and x")
    return axes


class Volume(ABC):
    """A lazily read array. Subclasses set ``shape``, ``chunks``, ``dtype`` (stored order) and
    implement ``_load(index)``: the chunk at grid ``index`` as an array clipped to ``shape``."""

    format = ""

    def __init__(self, ref: VolumeRef, *, shape: Sequence[int], chunks: Sequence[int], dtype: np.dtype,
                 declared_axes: str | None = None, voxel_size: Sequence[float] | None = None,
                 translation: Sequence[float] | None = None, unit: str | None = None,
                 cache: ChunkCache | None = None):
        self.ref = ref
        self.shape = tuple(int(s) for s in shape)
        self.chunks = tuple(max(1, min(int(c), max(s, 1))) for c, s in zip(chunks, self.shape))
        self.dtype = np.dtype(dtype)
        self.axes = resolve_axes(ref, declared_axes, len(self.shape))
        self.voxel_size = tuple(float(v) for v in (voxel_size or (1.0, 1.0, 1.0)))
        self.translation = tuple(float(v) for v in (translation or (0.0, 0.0, 0.0)))
        self.unit = unit
        self.cache = cache if cache is not None else shared_cache()
        self.key = ref.key()
        self.fixed = self._fixed_indices()

    def _fixed_indices(self) -> dict[int, int]:
        fixed = {}
        for d, a in enumerate(self.axes):
            if a in SPATIAL:
                continue
            index = self.ref.select.get(a, 0 if self.shape[d] == 1 else None)
            if index is None or index >= self.shape[d]:
                raise VolumeError(self.ref.url, f"select.{a}", f"axis '{a}' has {self.shape[d]} entries"
                                  + ("" if index is None else f" and {index} is out of range"),
                                  f"set select to {{\"{a}\": i}} with 0 <= i < {self.shape[d]}")
            fixed[d] = index
        for a in self.ref.select:
            if a not in self.axes:
                raise VolumeError(self.ref.url, f"select.{a}", f"the array has no axis '{a}' (axes '{self.axes}')",
                                  f"remove '{a}' from select")
        return fixed

    # ---------------------------------------------------------------------------- geometry
    @property
    def spatial_axes(self) -> str:
        """The spatial axes in stored order (e.g. ``zyx``)."""
        return "".join(a for a in self.axes if a in SPATIAL)

    def size(self, axis: str) -> int:
        """Number of voxels along spatial ``axis`` (``z``, ``y`` or ``x``)."""
        return self.shape[self._dim(axis)]

    def section_shape(self, axis: str) -> tuple[int, int]:
        """(rows, cols) of a section along ``axis``."""
        rows, cols = [a for a in self.spatial_axes if a != axis]
        return self.size(rows), self.size(cols)

    def _dim(self, axis: str) -> int:
        if not isinstance(axis, str) or axis not in SPATIAL:
            raise VolumeError(self.ref.url, "axis", f"{axis!r} is not a spatial axis", "use 'z', 'y' or 'x'")
        return self.axes.index(axis)

    # ---------------------------------------------------------------------------- reading
    @abstractmethod
    def _load(self, index: tuple[int, ...]) -> np.ndarray:
        """The chunk at grid ``index`` (stored order), clipped to the array's shape."""

    @property
    def array_name(self) -> str | None:
        """The array's path inside the store, as the user's errors name it (the format's own when it knows it)."""
        return self.ref.array

    def chunk(self, index: tuple[int, ...]) -> np.ndarray:
        """One chunk through the cache (read-only array).

        The one place every format's chunk reads go through: an error while reading or decoding it
        becomes a :class:`~dspseg.errors.VolumeReadError` naming the volume, the array and the chunk,
        transient (the store did not deliver) or not (corrupt or missing bytes; see
        :func:`~.stores.read_failure`); MemoryError and errors of our own code stay as they are.
        """
        try:
            return self.cache.get((self.key, index), lambda: self._load(index))
        except (MemoryError, UserError):
            raise
        except ImportError as err:  # a codec's optional package
            raise missing_package(self.ref, err, self.format) from None
        except Exception as err:
            failure = read_failure(self.ref, err)
            if failure is None:
                raise
            reason, fix, transient = failure
            raise VolumeReadError(self.ref.url, self.array_name, tuple(int(k) for k in index), reason, fix,
                                  transient) from None

    def read(self, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
        """The box ``[start, stop)`` in stored order (every dimension), assembled from the chunks it
        touches only. Returns an array of shape ``stop - start`` and the volume's dtype."""
        start, stop = [int(v) for v in start], [int(v) for v in stop]
        out = np.empty([b - a for a, b in zip(start, stop)], dtype=self.dtype)
        grids = [range(a // c, (b - 1) // c + 1) for a, b, c in zip(start, stop, self.chunks)]
        for index in itertools.product(*grids):
            chunk = self.chunk(tuple(index))
            lo = [k * c for k, c in zip(index, self.chunks)]
            src = tuple(slice(max(a, l) - l, min(b, l + n) - l) for a, b, l, n in zip(start, stop, lo, chunk.shape))
            dst = tuple(slice(max(a, l) - a, min(b, l + n) - a) for a, b, l, n in zip(start, stop, lo, chunk.shape))
            out[dst] = chunk[src]
        return out

    def section(self, axis: str, index: int, window: Sequence[int] | None = None) -> np.ndarray:
        """The 2D section at ``index`` along ``axis``, or only ``window = (r0, c0, h, w)`` of it.

        Returns (h, w) (or the whole section's (rows, cols)); reads only the chunks the window
        touches. An index or window outside the volume is a VolumeError naming the field.
        """
        d = self._dim(axis)
        if not 0 <= int(index) < self.shape[d]:
            raise VolumeError(self.ref.url, "index", f"section {index} is outside the {self.shape[d]} sections along {axis}",
                              f"use 0 <= index < {self.shape[d]}")
        rows, cols = (self.axes.index(a) for a in self.spatial_axes if a != axis)
        r0, c0, h, w = (0, 0, self.shape[rows], self.shape[cols]) if window is None else (int(v) for v in window)
        if h <= 0 or w <= 0 or r0 < 0 or c0 < 0 or r0 + h > self.shape[rows] or c0 + w > self.shape[cols]:
            raise VolumeError(self.ref.url, "window", f"window {tuple(window)} does not fit the "
                              f"{self.shape[rows]} x {self.shape[cols]} section", "keep r0 + h <= rows, c0 + w <= cols, h, w > 0")
        start = [self.fixed.get(k, 0) for k in range(len(self.shape))]
        stop = [s + 1 for s in start]
        start[d], stop[d] = int(index), int(index) + 1
        start[rows], stop[rows] = r0, r0 + h
        start[cols], stop[cols] = c0, c0 + w
        try:
            return self.read(start, stop).reshape(h, w)
        except VolumeReadError as err:
            raise err.but(section=f"{axis}={int(index)}") from None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.ref.url!r}, axes={self.axes!r}, shape={self.shape}, "
                f"dtype={self.dtype}, chunks={self.chunks}, voxel_size={self.voxel_size})")
