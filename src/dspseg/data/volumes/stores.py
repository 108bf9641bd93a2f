"""Where a volume lives: local paths and fsspec URLs, and which format a reference names.

``file://`` URLs and plain paths are local; any other scheme goes through fsspec (``s3://`` is read
anonymously unless ``storage_options`` say otherwise; ``https://`` as is). ``format: auto`` is
decided from the URL and, for a directory store, from its marker files:

    *.h5 *.hdf5 *.hdf -> hdf5     *.tif *.tiff -> tiff     *.n5 or an N5 attributes.json -> n5
    anything else -> zarr (an OME-Zarr image when the group carries NGFF multiscales)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dspseg.data.volumes.ref import VolumeRef
from dspseg.errors import VolumeError


def local_path(url: str) -> Path | None:
    """The local path of a plain path or ``file://`` URL; None for remote URLs."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme in ("", "local") or (len(parsed.scheme) == 1 and url[1:3] in (":\\", ":/")):
        return Path(url)
    return None


def storage_options(ref: VolumeRef) -> dict[str, Any]:
    """fsspec options: the reference's own, or anonymous access for ``s3://``."""
    if ref.storage_options:
        return dict(ref.storage_options)
    return {"anon": True} if ref.url.startswith("s3://") else {}


def filesystem(ref: VolumeRef) -> tuple[Any, str]:
    """(fsspec filesystem, root path) of ``ref.url``."""
    import fsspec

    local = local_path(ref.url)
    if local is not None:
        return fsspec.filesystem("file"), str(local.resolve())
    try:
        return fsspec.core.url_to_fs(ref.url, **storage_options(ref))
    except (ImportError, ValueError) as err:
        raise VolumeError(ref.url, "url", f"fsspec cannot open it ({err})",
                          "install the filesystem's package (s3fs for s3://, aiohttp for https://) or fix the URL") from None


def read_json(fs: Any, path: str) -> dict | None:
    """A JSON file of the store, or None if it does not exist."""
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def detect_format(ref: VolumeRef) -> str:
    """The format ``ref`` names: its own, or one decided from the URL suffix and the store."""
    if ref.format != "auto":
        return ref.format
    name = urlparse(ref.url).path.rstrip("/").lower() if local_path(ref.url) is None else ref.url.rstrip("/").lower()
    for suffixes, fmt in (((".h5", ".hdf5", ".hdf"), "hdf5"), ((".tif", ".tiff"), "tiff"), ((".n5",), "n5")):
        if name.endswith(suffixes):
            return fmt
    fs, root = filesystem(ref)
    attrs = read_json(fs, f"{root}/attributes.json")
    if attrs is not None and ("n5" in attrs or "dimensions" in attrs):
        return "n5"
    return "zarr"
