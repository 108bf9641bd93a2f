"""Volume fixtures written in the real layouts, by the libraries that write them in the wild.

* NGFF 0.4 (zarr v2) and NGFF 0.5 (zarr v3) images: ``ome_zarr.writer.write_multiscale`` with two
  levels, each with its own scale and translation;
* a zarr v3 array with ``dimension_names``: zarr;
* an N5 dataset (gzip blocks; ``attributes.json`` with dimensions/blockSize/dataType/compression,
  block files ``x/y/z`` in N5's reversed axis order): tensorstore's ``n5`` driver;
* an HDF5 dataset (chunked, with ``element_size_um``): h5py;
* an OME-TIFF stack (one page per z, PhysicalSize* in the OME-XML): tifffile, uncompressed
  (memory-mapped on reading) or zlib-compressed (read page by page).

``volume_data`` is the reference array (z, y, x) every fixture stores; :func:`serve_http` serves a
folder over HTTP (a remote store on 127.0.0.1) that can be made to fail its chunk requests.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

SHAPE = (10, 48, 40)  # z, y, x: non-square sections
CHUNKS = (4, 16, 16)
SCALE = (8.0, 4.0, 4.0)  # nm, z y x
TRANSLATION = (80.0, 12.0, -4.0)


def volume_data(dtype: str = "uint16", seed: int = 0) -> np.ndarray:
    """The reference volume (z, y, x): random values of ``dtype``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, SHAPE, dtype=dtype)


def write_ngff(path: Path, data: np.ndarray, version: str = "0.4") -> Path:
    """An OME-Zarr image (levels s0 and s1 = 2x in y, x), NGFF 0.4 on zarr v2 or 0.5 on zarr v3."""
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_multiscale

    fmt = FormatV04() if version == "0.4" else FormatV05()
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    s1 = data[:, ::2, ::2]
    transforms = [[{"type": "scale", "scale": list(SCALE)}, {"type": "translation", "translation": list(TRANSLATION)}],
                  [{"type": "scale", "scale": [SCALE[0], 2 * SCALE[1], 2 * SCALE[2]]},
                   {"type": "translation", "translation": [TRANSLATION[0], TRANSLATION[1] + 2, TRANSLATION[2] + 2]}]]
    axes = [{"name": "z", "type": "space", "unit": "nanometer"}, {"name": "y", "type": "space", "unit": "nanometer"},
            {"name": "x", "type": "space", "unit": "nanometer"}]
    with warnings.catch_warnings():  # ome-zarr prefers `scale`, which cannot express a translation
        warnings.simplefilter("ignore", DeprecationWarning)
        write_multiscale([data, s1], group, fmt=fmt, axes=axes, coordinate_transformations=transforms,
                         storage_options={"chunks": CHUNKS})
    return path


def write_zarr3(path: Path, data: np.ndarray, axes: str = "zyx") -> Path:
    """A plain zarr v3 array with ``dimension_names``."""
    import zarr

    chunks = (1,) * (data.ndim - 3) + CHUNKS
    arr = zarr.create_array(str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, zarr_format=3,
                            dimension_names=list(axes))
    arr[...] = data
    return path


def write_n5(path: Path, key: str, data: np.ndarray) -> Path:
    """An N5 container with the dataset ``key`` (gzip blocks), as Java N5 / BigDataViewer write it.

    N5 lists dimensions fastest-first (``[X, Y, Z]``) and tensorstore's ``n5`` driver keeps that order
    as its own, so tensorstore is handed the transposed (x, y, z) view; the blocks then land at
    ``key/ix/iy/iz``. ``axes`` and ``pixelResolution`` (N5-viewer's attributes) are added as a Java
    writer adds custom attributes: to the same ``attributes.json``.
    """
    import tensorstore as ts

    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(path / key)},
            "metadata": {"dimensions": list(data.shape[::-1]), "blockSize": list(CHUNKS[::-1]),
                         "dataType": str(data.dtype), "compression": {"type": "gzip"}},
            "create": True, "delete_existing": True}
    store = ts.open(spec).result()
    store[...].write(data.T).result()
    (path / "attributes.json").write_text(json.dumps({"n5": "4.0.0"}))
    attrs_file = path / key / "attributes.json"
    attrs = json.loads(attrs_file.read_text())
    attrs.update(axes=["x", "y", "z"], pixelResolution={"dimensions": list(SCALE[::-1]), "unit": "nm"})
    attrs_file.write_text(json.dumps(attrs))
    return path


def write_hdf5(path: Path, key: str, data: np.ndarray) -> Path:
    """An HDF5 file with a chunked, gzip-compressed dataset ``key`` and ``element_size_um``."""
    import h5py

    with h5py.File(path, "w") as f:
        ds = f.create_dataset(key, data=data, chunks=CHUNKS, compression="gzip")
        ds.attrs["element_size_um"] = [s / 1000 for s in SCALE]
    return path


def write_ome_tiff(path: Path, data: np.ndarray, compressed: bool = False) -> Path:
    """An OME-TIFF stack (Z pages of Y x X) with physical sizes in µm."""
    import tifffile

    meta = {"axes": "ZYX", "PhysicalSizeZ": SCALE[0] / 1000, "PhysicalSizeY": SCALE[1] / 1000,
            "PhysicalSizeX": SCALE[2] / 1000}
    tifffile.imwrite(path, data, ome=True, metadata=meta, compression="zlib" if compressed else None)
    return path


class _Server:
    """A running :func:`serve_http`: its ``url``; set ``fail`` to ``"500"`` (answer HTTP 500) or
    ``"close"`` (close the connection unanswered) for requests whose path contains ``only``."""

    def __init__(self, url: str) -> None:
        self.url, self.fail, self.only = url, None, "/c/"  # zarr v3 chunk keys: <array>/c/<z>/<y>/<x>


@contextmanager
def serve_http(folder: Path) -> Iterator[_Server]:
    """Serve ``folder`` at ``http://127.0.0.1:<free port>`` in a thread while the block runs."""
    import functools
    import http.server
    import socket
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            """Say nothing: a test's output is not the server's request log."""

        def do_GET(self) -> None:
            if server.fail and server.only in self.path:
                if server.fail == "500":
                    self.send_error(500)
                    return
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    httpd.daemon_threads = True
    server = _Server(f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
