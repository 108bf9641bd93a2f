"""HDF5 datasets (h5py), local or through an fsspec file object.

``ref.array`` is the dataset's path in the file (``/volumes/raw``); it may be left out when the file
holds exactly one dataset. Chunked datasets are read chunk by chunk on their own grid; contiguous
ones on a virtual grid of blocks of at most :data:`VIRTUAL_BLOCK` voxels per axis (h5py reads a
hyperslab of contiguous storage directly, so those blocks cost only their own bytes). Axes come from
a string attribute ``axes`` when present; the voxel size from ``element_size_um`` (z, y, x in µm,
the ilastik / Fiji convention) or ``resolution``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dspseg.data.volumes.base import Volume
from dspseg.data.volumes.cache import ChunkCache
from dspseg.data.volumes.ref import VolumeRef
from dspseg.data.volumes.stores import filesystem, local_path
from dspseg.errors import VolumeError

VIRTUAL_BLOCK = 64


def _datasets(f: Any) -> list[str]:
    import h5py

    found: list[str] = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


class HDF5Volume(Volume):
    """One dataset of an HDF5 file."""

    format = "hdf5"

    def __init__(self, ref: VolumeRef, cache: ChunkCache | None = None):
        import h5py

        local = local_path(ref.url)
        try:
            if local is not None:
                self._file = h5py.File(local, "r")
            else:
                fs, path = filesystem(ref)
                self._file = h5py.File(fs.open(path, "rb"), "r")
        except (OSError, FileNotFoundError) as err:
            raise VolumeError(ref.url, "url", f"cannot open it as HDF5 ({err})", "check the path and that it is an HDF5 file") from None
        names = _datasets(self._file)
        key = ref.array if ref.array is not None else (names[0] if len(names) == 1 else None)
        if key is None or not isinstance(self._file.get(key), h5py.Dataset):
            listed = ", ".join(names[:8]) or "none"
            what = f"no dataset '{key}'" if key is not None else f"{len(names)} datasets and no array key"
            raise VolumeError(ref.url, "array", f"the file has {what} (datasets: {listed})", "set array to one of them")
        ds = self._file[key]
        self._ds = ds
        chunks = ds.chunks or tuple(min(s, VIRTUAL_BLOCK) for s in ds.shape)
        axes = ds.attrs.get("axes")
        axes = axes.decode() if isinstance(axes, bytes) else axes
        voxel, unit = None, None
        for attr, unit_name in (("element_size_um", "micrometer"), ("resolution", None)):
            if attr in ds.attrs and np.size(ds.attrs[attr]) == 3:
                voxel, unit = [float(v) for v in np.ravel(ds.attrs[attr])], unit_name
                break
        super().__init__(ref, shape=ds.shape, chunks=chunks, dtype=ds.dtype,
                         declared_axes=axes if isinstance(axes, str) else None, voxel_size=voxel, unit=unit, cache=cache)

    @property
    def array_name(self) -> str | None:
        return self._ds.name

    def _load(self, index: tuple[int, ...]) -> np.ndarray:
        box = tuple(slice(k * c, min((k + 1) * c, s)) for k, c, s in zip(index, self.chunks, self.shape))
        return np.asarray(self._ds[box])

    def close(self) -> None:
        self._file.close()
