"""Multi-page TIFF and OME-TIFF stacks (tifffile), never loaded whole.

The first series of the file is the volume; its axes come from tifffile (``ZYX``, ``CZYX``...;
tifffile's ``I``/``Q`` for pages of unknown meaning are read as ``z``; ``S`` samples as ``c``).
Pages are the last two (``YX``) or three (``YXS``) axes. Uncompressed, contiguous local stacks are
memory-mapped (``tifffile.memmap``) and read on a virtual grid of blocks (one page deep, at most
:data:`TILE` pixels on a side); any other stack is read page by page (one chunk = one page, decoded
by ``page.asarray()``). OME-TIFF's ``Pixels`` element gives the voxel size (``PhysicalSizeZ/Y/X``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from dspseg.data.volumes.base import Volume
from dspseg.data.volumes.cache import ChunkCache
from dspseg.data.volumes.ref import VolumeRef
from dspseg.data.volumes.stores import filesystem, local_path
from dspseg.errors import VolumeError

TILE = 256
_AXIS = {"i": "z", "q": "z", "s": "c"}


def ome_voxel_size(xml: str | None) -> tuple[list[float] | None, str | None]:
    """(z, y, x) physical voxel size and its unit from OME-XML, or (None, None)."""
    if not xml:
        return None, None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    pixels = next((e for e in root.iter() if e.tag.endswith("Pixels")), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return None, None
    size = [float(pixels.attrib.get(f"PhysicalSize{a}", 1.0)) for a in "ZYX"]
    return size, pixels.attrib.get("PhysicalSizeXUnit", "µm")


class TiffVolume(Volume):
    """The first series of a (OME-)TIFF file."""

    format = "tiff"

    def __init__(self, ref: VolumeRef, cache: ChunkCache | None = None):
        import tifffile

        local = local_path(ref.url)
        try:
            self._tif = tifffile.TiffFile(local if local is not None else filesystem(ref)[0].open(filesystem(ref)[1], "rb"))
        except (OSError, tifffile.TiffFileError) as err:
            raise VolumeError(ref.url, "url", f"cannot open it as TIFF ({err})", "check the path and that it is a TIFF file") from None
        series = self._tif.series[0]
        self._pages: Any = series.pages
        declared = "".join(_AXIS.get(a, a) for a in series.axes.lower())
        page_dims = 3 if declared.endswith("c") and series.axes[-1] == "S" else 2
        self._lead = tuple(series.shape[:-page_dims])
        self._memmap = None
        if local is not None and series.dataoffset is not None:
            self._memmap = tifffile.memmap(str(local), series=0, mode="r")
        if self._memmap is not None:
            chunks = [1] * len(self._lead) + [min(s, TILE) for s in series.shape[len(self._lead):]]
        else:
            chunks = [1] * len(self._lead) + list(series.shape[len(self._lead):])
        voxel, unit = ome_voxel_size(self._tif.ome_metadata)
        if declared.count("z") != 1:
            declared = None  # e.g. two unknown page axes: let ref.axes name them
        super().__init__(ref, shape=series.shape, chunks=chunks, dtype=series.dtype, declared_axes=declared,
                         voxel_size=voxel, unit=unit, cache=cache)

    def _load(self, index: tuple[int, ...]) -> np.ndarray:
        box = tuple(slice(k * c, min((k + 1) * c, s)) for k, c, s in zip(index, self.chunks, self.shape))
        if self._memmap is not None:
            return np.array(self._memmap[box])
        lead = index[:len(self._lead)]
        page = self._pages[int(np.ravel_multi_index(lead, self._lead)) if self._lead else 0]
        return page.asarray().reshape((1,) * len(self._lead) + tuple(self.shape[len(self._lead):]))

    def close(self) -> None:
        self._tif.close()
