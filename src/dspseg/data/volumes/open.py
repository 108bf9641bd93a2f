"""``open_volume``: a :class:`~dspseg.data.volumes.ref.VolumeRef` (or a URL / dict) -> a :class:`Volume`."""

from __future__ import annotations

from typing import Any

from dspseg.data.volumes.base import Volume
from dspseg.data.volumes.cache import ChunkCache
from dspseg.data.volumes.ref import VolumeRef
from dspseg.data.volumes.stores import detect_format, is_remote_failure, missing_package, unreadable


def open_volume(ref: VolumeRef | str | dict[str, Any], cache: ChunkCache | None = None) -> Volume:
    """Open the array a reference names, reading only its metadata (no voxels).

    ``cache`` defaults to the process-wide :func:`~dspseg.data.volumes.cache.shared_cache`; a
    reference with a ``region`` is that box of the array (:mod:`~dspseg.data.volumes.region`). Raises
    :class:`~dspseg.errors.VolumeError` (one sentence: URL, field, fix) when the reference does not
    name a readable array or the store does not answer; a missing optional package (a format's reader,
    a URL scheme's filesystem) is named with its ``pip install``.
    """
    ref = ref if isinstance(ref, VolumeRef) else VolumeRef.parse(ref)
    if ref.region is not None:
        from dspseg.data.volumes.region import RegionVolume

        return RegionVolume(ref, open_volume(ref.model_copy(update={"region": None}), cache))
    fmt = ""
    try:
        fmt = detect_format(ref)
        return _open(fmt, ref, cache)
    except ImportError as err:
        raise missing_package(ref, err, fmt) from None
    except OSError as err:  # no answer, no permission (aiohttp's connection errors are OSErrors)
        raise unreadable(ref, err) from None
    except Exception as err:
        if is_remote_failure(ref, err):
            raise unreadable(ref, err) from None
        raise


def _open(fmt: str, ref: VolumeRef, cache: ChunkCache | None) -> Volume:
    if fmt in ("zarr", "ome-zarr"):
        from dspseg.data.volumes.zarrs import open_zarr

        return open_zarr(ref, cache)
    if fmt == "n5":
        from dspseg.data.volumes.n5 import N5Volume

        return N5Volume(ref, cache)
    if fmt == "hdf5":
        from dspseg.data.volumes.hdf5 import HDF5Volume

        return HDF5Volume(ref, cache)
    from dspseg.data.volumes.tiff import TiffVolume

    return TiffVolume(ref, cache)
