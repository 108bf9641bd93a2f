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
    except ImportError as err:
        raise missing_package(ref, err, "") from None
    except ValueError as err:
        raise VolumeError(ref.url, "url", f"fsspec cannot open it ({err})", "fix the URL") from None


#: packages a format needs (a missing one is the format's problem, any other the URL scheme's)
FORMAT_PACKAGES = ("zarr", "h5py", "tifffile", "numcodecs", "ome_zarr_models", "fsspec")
#: libraries whose errors mean a remote store did not answer (not a bug of ours)
REMOTE_LIBRARIES = ("aiohttp", "botocore", "aiobotocore", "s3fs", "gcsfs", "requests", "urllib3")


def missing_package(ref: VolumeRef, err: ImportError, fmt: str) -> VolumeError:
    """One sentence for a missing package: the URL scheme's filesystem (``gcsfs`` for ``gs://``...),
    field ``url``; or the format's reader, field ``format``."""
    name = err.name or getattr(err.__cause__, "name", None)
    scheme = urlparse(ref.url).scheme if local_path(ref.url) is None else ""
    if scheme and (name is None or name.split(".")[0] not in FORMAT_PACKAGES):
        package = (name or _scheme_package(scheme)).split(".")[0]
        return VolumeError(ref.url, "url", f"reading {scheme}:// URLs needs the package '{package}', which is not "
                           f"installed ({err})", f"pip install {package}")
    return VolumeError(ref.url, "format", f"reading {fmt or 'this volume'} needs the package '{name}'",
                       "pip install 'dspseg[volumes]'")


def _scheme_package(scheme: str) -> str:
    import importlib

    known = importlib.import_module("fsspec.registry").known_implementations.get(scheme, {})
    return str(known.get("class", "")).split(".")[0] or f"an fsspec filesystem for {scheme}://"


def unreadable(ref: VolumeRef, err: BaseException) -> VolumeError:
    """One sentence for a store that cannot be read (no answer, no permission...)."""
    reason = str(err).splitlines()[0] if str(err) else ""
    remote = local_path(ref.url) is None
    return VolumeError(ref.url, "url", f"cannot read it ({type(err).__name__}{': ' + reason if reason else ''})",
                       "check the URL and the network (a public bucket is read anonymously; for a private one give "
                       "storage_options)" if remote else "check the path and its permissions")


def is_remote_failure(ref: VolumeRef, err: BaseException) -> bool:
    """Whether ``err`` is a remote store's failure (network, HTTP, S3 client) rather than a bug."""
    return local_path(ref.url) is None and type(err).__module__.split(".")[0] in REMOTE_LIBRARIES


#: errors of our own code, never of the stored bytes: a chunk read raising one is not reworded
BUGS = (TypeError, AttributeError, NameError, AssertionError, NotImplementedError, RecursionError)


def read_failure(ref: VolumeRef, err: Exception) -> tuple[str, str, bool] | None:
    """``(reason, fix, transient)`` of a chunk read of ``ref`` that raised ``err``, or None for a bug
    (:data:`BUGS`). Transient: the store did not deliver (a remote store's network, HTTP or client
    error, a timeout; a local disk or mount's I/O error): run again as is. Not: the chunk's file is
    missing, or its bytes do not decode (a codec error, a short read): the volume needs re-exporting."""
    first = (str(err).strip().splitlines() or [""])[0]
    what = f"{type(err).__name__}{': ' + first if first else ''}"
    remote = local_path(ref.url) is None
    if isinstance(err, FileNotFoundError):
        return (f"the chunk's file is gone ({what})", "restore the volume's files from a copy or re-export the "
                "volume (it changed after it was checked)", False)
    if isinstance(err, PermissionError):
        return (f"no permission to read it ({what})", "check that the store is readable (a private bucket needs "
                "storage_options)" if remote else "check the permissions of the volume's files", False)
    # an OSError without errno is a decoder's (gzip, bz2, HDF5 filters): the bytes, not the wire
    io = isinstance(err, (TimeoutError, ConnectionError)) or (isinstance(err, OSError) and err.errno is not None)
    if remote and (io or is_remote_failure(ref, err) or type(err).__module__.startswith("fsspec")):
        return (f"the store did not deliver it ({what})", "check the connection and that the store is readable "
                "(a private bucket needs storage_options)", True)
    if not remote and io:
        return f"cannot read it ({what})", "check the path, the disk and the network mount it is on", True
    if isinstance(err, BUGS):
        return None
    return (f"the chunk is corrupt ({what})", "re-export the volume (or restore its files from a copy)", False)


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
