"""Read and write 2D images (one or more channels) and label masks: TIFF via tifffile, PNG/JPEG via imageio.

Layouts (arrays are ``[row, col]``):

* image: returned as ``(C, H, W)`` float32 by the one intensity rule of :mod:`dspseg.data.intensity`
  (integers divided by their type's maximum, ``uint8 / 255``, ``uint16 / 65535``; floats as stored);
  :func:`read_image_stored` keeps the stored type. A file holds ``(H, W)`` (C = 1), ``(H, W, C)`` (channels last, PNG/JPEG and RGB TIFF) or ``(C, H, W)``
  (channels first, TIFF). Where the TIFF names its axes (ImageJ, OME, tifffile metadata) the names
  decide; otherwise a first axis of at most 8 entries, shorter than both others, is channels, else a
  last axis of at most 8 entries, shorter than both others (a *note* says so: a multi-page TIFF
  without axis names becomes channels). Axes of length 1 are dropped. Volumes (Z or T axes, or three
  long axes) are refused: dspseg works on 2D sections.
* TIFF series (:mod:`dspseg.data.tiffseries`): a file of several series is read from its largest,
  with a note naming it; several of the largest size are refused as ambiguous; a pyramid inside one
  series is read at full resolution (level 0).

Readers take an optional ``notes`` list and append to it what the caller should tell the user
(train and predict print them, ``dspseg validate`` lists them as warnings).
* mask: returned as ``(H, W)`` int64 class ids; the file must be a single-channel integer image
  (palette PNGs give their palette indices).

Every failure raises :class:`ImageReadError` naming the path, the reason and the fix.

Why one module of about 300 lines: it is the only code that knows the file formats, and reading and
writing must agree on them (``CYX`` TIFFs, palette PNGs, uint8/uint16 masks); splitting readers from
writers would put the two halves of each convention in different files.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from PIL import Image

from dspseg.data.intensity import to_unit
from dspseg.data.tiffseries import check_tiff_bytes, pick_series
from dspseg.errors import ImageReadError

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
JPEG_SUFFIXES = (".jpg", ".jpeg")
MAX_CHANNELS = 8
SLICE_FIX = "dspseg reads 2D images with one or more channels; save each section (slice) as its own file"


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    if s not in TIFF_SUFFIXES + PNG_SUFFIXES + JPEG_SUFFIXES:
        raise ImageReadError(path, f"unsupported file type '{path.suffix}'",
                             "convert it to TIFF (.tif) or PNG (.png)")
    return s


def _corrupt(path: Path, e: Exception) -> ImageReadError:  # a library could not decode the file
    return ImageReadError(path, f"the file is unreadable or corrupt ({type(e).__name__}: {e})",
                          "open it in an image viewer; export or copy it again")


def _unsupported(path: Path, dtype: object) -> ImageReadError:  # a pixel type dspseg does not read
    return ImageReadError(path, f"pixel type {dtype} is not supported",
                          "save the image as 8/16-bit integers or 32-bit floats")


def _check_exists(path: Path) -> None:
    try:
        exists, is_file = path.exists(), path.is_file()
    except OSError as e:  # e.g. a name longer than the file system allows
        raise ImageReadError(path, f"cannot access the file ({e.strerror})", "shorten or correct the path") from None
    if not exists:
        raise ImageReadError(path, "no such file", "check the path (it is relative to the dataset folder)")
    if not is_file:
        raise ImageReadError(path, "not a regular file", "point to an image file, not a folder")


def _squeeze(shape: tuple[int, ...], axes: str) -> tuple[tuple[int, ...], str]:
    """Drop length-1 axes (except named Y/X); return the new shape and axis letters."""
    keep = [i for i, (n, a) in enumerate(zip(shape, axes)) if n != 1 or a in "YX"]
    if len(keep) < 2:  # e.g. (1, 1): keep the last two so the size check below reports it
        keep = list(range(len(shape)))[-2:]
    return tuple(shape[i] for i in keep), "".join(axes[i] for i in keep)


def _layout(shape: tuple[int, ...], axes: str, path: Path, notes: list[str] | None = None) -> str:
    """Decide how ``shape`` (already squeezed) maps to (C, H, W): ``'2d'``, ``'first'`` or ``'last'``.

    ``axes`` uses tifffile's letters (Y, X, C/S = channels, Z/T = volume or time, Q/I = unknown); a
    short unnamed axis taken as channels adds a note to ``notes``.
    """
    named = set(axes) & set("CSZTR")
    found = f"found an array of shape {shape}" + (f" with axes '{axes}'" if named else "")
    if len(shape) == 2:
        layout = "2d"
    elif len(shape) != 3:
        raise ImageReadError(path, f"{found}; expected (H, W), (H, W, C) or (C, H, W)", SLICE_FIX)
    elif axes in ("CYX", "SYX"):
        layout = "first"
    elif axes in ("YXS", "YXC"):
        layout = "last"
    elif set(axes) & set("ZTR"):
        raise ImageReadError(path, f"{found}, a volume or time series", SLICE_FIX)
    elif shape[0] <= MAX_CHANNELS and shape[0] < min(shape[1], shape[2]):
        layout = "first"
    elif shape[2] <= MAX_CHANNELS and shape[2] < min(shape[0], shape[1]):
        layout = "last"
    else:
        raise ImageReadError(path, f"{found}, which looks like a volume (no axis is a short channel "
                             f"axis of at most {MAX_CHANNELS})", SLICE_FIX)
    guessed = layout != "2d" and axes not in ("CYX", "SYX", "YXS", "YXC")
    if guessed and notes is not None:
        n = shape[0] if layout == "first" else shape[2]
        what = "pages" if layout == "first" else "entries of the last axis"
        notes.append(f"{path}: the {n} {what} of the file (its axes are not named) are read as {n} channels of "
                     "one image; if they are sections or time points, save each as its own file")
    h, w = {"2d": shape, "first": shape[1:], "last": shape[:2]}[layout]
    if h < 2 or w < 2:
        raise ImageReadError(path, f"{found}: an image needs at least 2 rows and 2 columns",
                             "check that the file holds the image you meant")
    return layout


def _to_chw_shape(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    if layout == "2d":
        return (1, shape[0], shape[1])
    if layout == "first":
        return (shape[0], shape[1], shape[2])
    return (shape[2], shape[0], shape[1])


def _read_raw(path: Path, notes: list[str] | None = None) -> tuple[np.ndarray, str]:
    """The stored array and its axis letters (squeezed), with every library error made readable."""
    _check_exists(path)
    suffix = _suffix(path)
    try:
        if suffix in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                series = pick_series(tif, path, notes)
                check_tiff_bytes(series, path)
                arr, axes = series.asarray(level=0), series.axes
        else:
            arr = iio.imread(path)
            axes = "YX" if arr.ndim == 2 else ("YXS" if arr.ndim == 3 else "Q" * arr.ndim)
    except ImageReadError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - libraries raise many types for corrupt files
        raise _corrupt(path, e) from None
    shape, axes = _squeeze(arr.shape, axes)
    return arr.reshape(shape), axes


def read_image_stored(path: str | Path, notes: list[str] | None = None) -> np.ndarray:
    """Read a 2D image as ``(C, H, W)`` in its stored pixel type (layout in the module docstring).

    ImageReadError for a pixel type dspseg does not read, or float pixels that are NaN or infinite.
    """
    path = Path(path)
    arr, axes = _read_raw(path, notes)
    layout = _layout(arr.shape, axes, path, notes)
    if layout == "2d":
        arr = arr[None]
    elif layout == "last":
        arr = np.moveaxis(arr, -1, 0)
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise _unsupported(path, arr.dtype)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ImageReadError(path, f"{int((~np.isfinite(arr)).sum())} pixel(s) are NaN or infinite",
                             "replace them with finite values before training")
    return np.ascontiguousarray(arr)


def read_image(path: str | Path, notes: list[str] | None = None) -> np.ndarray:
    """Read a 2D image as ``(C, H, W)`` float32, scaled by :func:`dspseg.data.intensity.to_unit`."""
    path = Path(path)
    stored = read_image_stored(path, notes)
    try:
        return np.ascontiguousarray(to_unit(stored))
    except ValueError:
        raise _unsupported(path, stored.dtype) from None


def _palette_indices(path: Path) -> np.ndarray | None:
    """A palette PNG's (H, W) indices (the class ids, not the colours); ``None`` for other PNGs."""
    try:
        with Image.open(path) as im:
            if im.mode != "P":
                return None
        return iio.imread(path, mode="P")
    except Exception as e:  # noqa: BLE001 - libraries raise many types for corrupt files
        raise _corrupt(path, e) from None


def read_mask_stored(path: str | Path) -> np.ndarray:
    """Read a label mask as ``(H, W)`` in the integer type stored in the file (bool stays bool)."""
    path = Path(path)
    _check_exists(path)
    suffix = _suffix(path)
    if suffix in JPEG_SUFFIXES:
        raise ImageReadError(path, "JPEG compression is lossy and changes label values",
                             "save masks as PNG or TIFF")
    palette = _palette_indices(path) if suffix in PNG_SUFFIXES else None
    arr, axes = (palette, "YX") if palette is not None else _read_raw(path)
    if arr.ndim != 2:
        raise ImageReadError(path, f"a mask must have one channel, found shape {arr.shape}",
                             "save class ids as a single-channel integer image (a colour-coded mask "
                             "must first be converted to class ids)")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ImageReadError(path, f"found a mask of shape {arr.shape}",
                             "a mask needs at least 2 rows and 2 columns, like its image")
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)):
        raise ImageReadError(path, f"a mask must hold integer class ids, found pixel type {arr.dtype}",
                             "save the mask as 8- or 16-bit unsigned integers (uint8/uint16)")
    return np.ascontiguousarray(arr)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask as ``(H, W)`` int64 class ids (the ignore index is kept as stored)."""
    return read_mask_stored(path).astype(np.int64)


def image_header(path: str | Path, notes: list[str] | None = None) -> tuple[tuple[int, int, int], np.dtype]:
    """``((C, H, W), stored pixel type)`` of an image without decoding it where the format allows
    (notes as for reading).

    TIFF: shape from the page headers, plus a truncation check (every strip inside the file).
    PNG: header, plus a chunk checksum pass (no decoding). JPEG: decoded (rare in microscopy).
    Raises :class:`ImageReadError` exactly where :func:`read_image` would refuse the layout.
    """
    path = Path(path)
    _check_exists(path)
    suffix = _suffix(path)
    if suffix in JPEG_SUFFIXES:
        arr = read_image_stored(path, notes)
        return tuple(arr.shape), arr.dtype  # type: ignore[return-value]
    try:
        if suffix in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                series = pick_series(tif, path, notes)
                check_tiff_bytes(series, path)
                shape, axes, dtype = tuple(series.shape), series.axes, series.dtype
                if dtype is None or dtype.kind not in "biuf":
                    raise _unsupported(path, dtype)
        else:
            with Image.open(path) as im:
                im.verify()
            props = iio.improps(path)
            shape, dtype = tuple(props.shape), np.dtype(props.dtype)
            axes = "YX" if len(shape) == 2 else "YXS"
    except ImageReadError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _corrupt(path, e) from None
    shape, axes = _squeeze(shape, axes)
    return _to_chw_shape(shape, _layout(shape, axes, path, notes)), np.dtype(dtype)


def image_size(path: str | Path, notes: list[str] | None = None) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image (:func:`image_header` without the pixel type)."""
    return image_header(path, notes)[0]


def _prepare_path(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TIFF_SUFFIXES + PNG_SUFFIXES:
        raise ValueError(f"cannot write '{path}': use a .tif, .tiff or .png file name, got '{path.suffix}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, suffix


def write_image(path: str | Path, array: np.ndarray) -> None:
    """Write an image given as ``(H, W)`` or ``(C, H, W)``.

    TIFF keeps the dtype (float32 stays float32) and names the axes ``CYX`` so any C reads back.
    PNG holds 1–4 channels of 8/16-bit integers: floats must lie in [0, 1] and are stored as uint8
    (``round(255 v)``); use TIFF to keep floats exactly.
    """
    path, suffix = _prepare_path(path)
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ValueError(f"write_image: array must be (H, W) or (C, H, W), got shape {np.shape(array)}")
    if suffix in TIFF_SUFFIXES:
        if arr.shape[0] == 1:
            tifffile.imwrite(path, arr[0], photometric="minisblack", compression="zlib")
        else:
            tifffile.imwrite(path, arr, photometric="minisblack", planarconfig="separate",
                             metadata={"axes": "CYX"}, compression="zlib")
        return
    if arr.shape[0] > 4:
        raise ValueError(f"write_image: PNG holds at most 4 channels, got {arr.shape[0]}; use .tif")
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1 or np.isnan(arr).any()):
            raise ValueError("write_image: float values for PNG must lie in [0, 1]; use .tif for other ranges")
        arr = np.round(arr * 255).astype(np.uint8)
    elif arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_image: PNG stores uint8/uint16 or floats in [0, 1], got {arr.dtype}")
    iio.imwrite(path, arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1))


def write_mask(path: str | Path, array: np.ndarray) -> None:
    """Write an ``(H, W)`` integer mask as uint8 if all values fit in 0..255, else uint16.

    Values must be whole numbers in 0..65535 (class ids and the ignore index).
    """
    path, _ = _prepare_path(path)
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"write_mask: mask must be (H, W), got shape {arr.shape}")
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"write_mask: mask must hold integers, got {arr.dtype}")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ValueError(f"write_mask: values must lie in 0..65535, got {lo}..{hi}")
    arr = arr.astype(np.uint8 if hi <= 255 else np.uint16)
    if path.suffix.lower() in TIFF_SUFFIXES:
        tifffile.imwrite(path, arr, photometric="minisblack", compression="zlib")
    else:
        iio.imwrite(path, arr)
