"""Which image of a TIFF dspseg reads, and whether its bytes are all there.

An OME-TIFF may hold several *series*: the image plus a thumbnail, a label or macro picture, or
reduced resolutions saved as their own series; or several fields of view. :func:`pick_series` reads
the series with the largest plane (Y × X), names it in a note, and refuses a file whose largest size
is shared by several series (several fields of view: which one is meant cannot be told). A pyramid
stored inside one series (SubIFDs) is one series; the reader takes its level 0 (full resolution).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from dspseg.errors import ImageReadError


def plane(series: tifffile.TiffPageSeries) -> int:
    """Pixels of one plane (Y × X) of a series."""
    dims = dict(zip(series.axes, series.shape))
    if "Y" in dims and "X" in dims:
        return int(dims["Y"]) * int(dims["X"])
    return int(np.prod(series.shape[-2:])) if len(series.shape) >= 2 else 0


def pick_series(tif: tifffile.TiffFile, path: Path, notes: list[str] | None = None) -> tifffile.TiffPageSeries:
    """The series to read: the only one, or the largest (notes say which); ambiguous files are refused."""
    series = list(tif.series)
    if not series:
        raise ImageReadError(path, "the TIFF holds no image data", "re-export the image")
    if len(series) == 1:
        return series[0]
    sizes = [plane(s) for s in series]
    top = max(sizes)
    largest = [i for i, n in enumerate(sizes) if n == top]
    listing = ", ".join(f"series {i}: {tuple(s.shape)}" for i, s in enumerate(series[:6]))
    if len(largest) > 1:
        raise ImageReadError(path, f"the TIFF holds {len(series)} image series and {len(largest)} of them have the "
                             f"largest size ({listing}), so which image is meant is ambiguous",
                             "save each series (field of view) as its own file, e.g. Fiji: Bio-Formats Importer "
                             "with 'open all series', then File > Save As > Tiff per series")
    k = largest[0]
    if notes is not None:
        notes.append(f"{path}: the TIFF holds {len(series)} image series ({listing}); read series {k}, the "
                     "full-resolution one (the others are smaller: thumbnails or reduced resolutions)")
    return series[k]


def check_tiff_bytes(series: tifffile.TiffPageSeries, path: Path) -> None:
    """Cheap truncation test: every strip/tile of the series must lie inside the file."""
    size = os.path.getsize(path)
    for page in series.pages:
        if page is None:
            continue
        for off, n in zip(page.dataoffsets, page.databytecounts):
            if off + n > size:
                raise ImageReadError(path, f"the file is truncated (data up to byte {off + n}, file has "
                                     f"{size} bytes)", "copy or export the file again")
