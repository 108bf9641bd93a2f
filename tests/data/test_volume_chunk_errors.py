"""A chunk that cannot be read is one sentence, in every format: a corrupt chunk (permanent: re-export),
a store that stops answering over HTTP (transient: check the connection, run again); bugs and
MemoryError stay as they are; the error pickles whole (DataLoader workers, Ray tasks)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from dspseg.data.volumes import ChunkCache, open_volume
from dspseg.data.volumes.stores import BUGS
from dspseg.data.volumes.zarrs import ZarrVolume
from dspseg.errors import ImageReadError, VolumeError, VolumeReadError
from volume_files import serve_http, volume_data, write_hdf5, write_n5, write_ngff, write_ome_tiff

DATA = volume_data()


def _garble(path: Path, offset: int = 0, size: int | None = None) -> None:
    """Overwrite ``size`` bytes at ``offset`` of ``path`` (the whole file when None) with garbage."""
    if size is None:
        path.write_bytes(b"not a chunk " * 8)
        return
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write((b"\x00garbage" * (size // 8 + 1))[:size])


def _corrupt_z5(name: str, root: Path) -> dict:
    """A volume of ``DATA`` in format ``name`` whose chunk holding section z = 5 is garbage; its reference."""
    if name in ("ngff04", "ngff05"):
        url = write_ngff(root / "a.ome.zarr", DATA, "0.4" if name == "ngff04" else "0.5")
        chunk = url / ("s0/1/0/0" if name == "ngff04" else "s0/c/1/0/0")
        assert chunk.is_file()
        _garble(chunk)
        return {"url": str(url)}
    if name == "n5":
        url = write_n5(root / "d.n5", "em/raw", DATA)
        _garble(url / "em/raw/0/0/1")  # N5 order x/y/z
        return {"url": str(url), "array": "em/raw"}
    if name == "hdf5":
        import h5py

        url = write_hdf5(root / "e.h5", "volumes/raw", DATA)
        with h5py.File(url, "r") as f:
            info = f["volumes/raw"].id.get_chunk_info_by_coord((4, 0, 0))
        _garble(url, info.byte_offset, info.size)
        return {"url": str(url), "array": "volumes/raw"}
    import tifffile

    url = write_ome_tiff(root / "g.ome.tif", DATA, compressed=True)
    with tifffile.TiffFile(url) as t:
        offset, size = t.pages[5].dataoffsets[0], t.pages[5].databytecounts[0]
    _garble(url, offset, size)
    return {"url": str(url)}


@pytest.mark.parametrize("name", ["ngff04", "ngff05", "n5", "hdf5", "tiff_zlib"])
def test_a_corrupt_chunk_is_one_sentence_in_every_format(name: str, tmp_path: Path) -> None:
    ref = _corrupt_z5(name, tmp_path)
    vol = open_volume(ref, cache=ChunkCache())
    np.testing.assert_array_equal(vol.section("z", 1), DATA[1])  # the other chunks still read
    with pytest.raises(VolumeReadError) as info:
        vol.section("z", 5, window=(0, 0, 8, 8))
    e = info.value
    assert not e.transient and e.where == ref["url"] and e.section == "z=5"
    assert e.chunk == ((5, 0, 0) if name == "tiff_zlib" else (1, 0, 0))
    text = str(e)
    assert text.startswith(f"cannot read volume {ref['url']}") and "section z=5, chunk (" in text
    assert "the chunk is corrupt (" in text and "Fix: re-export the volume" in text and "\n" not in text, text
    if "array" in ref:
        assert f"array '{ref['array']}'" in text or f"array '/{ref['array']}'" in text


def test_a_truncated_chunk_is_corrupt(tmp_path: Path) -> None:
    url = write_ngff(tmp_path / "a.ome.zarr", DATA, "0.5")
    chunk = url / "s0/c/2/1/0"
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])  # a short write
    with pytest.raises(VolumeReadError, match=r"array 's0', section z=9, chunk \(2, 1, 0\): the chunk is corrupt"):
        open_volume(str(url), cache=ChunkCache()).section("z", 9)


@pytest.mark.parametrize("failure", ["500", "close"])
def test_a_store_that_stops_answering_is_transient(failure: str, tmp_path: Path) -> None:
    """Over HTTP: metadata and the first chunks answer, then every chunk request fails (an HTTP 500,
    or the server closing the connection): one sentence naming the URL and the connection fix."""
    write_ngff(tmp_path / "a.ome.zarr", DATA, "0.5")
    with serve_http(tmp_path) as server:
        url = f"{server.url}/a.ome.zarr"
        vol = open_volume(url, cache=ChunkCache())
        np.testing.assert_array_equal(vol.section("z", 1), DATA[1])
        server.fail = failure
        with pytest.raises(VolumeReadError) as info:
            vol.section("z", 9)
    e = info.value
    assert e.transient and e.where == url and e.section == "z=9" and e.chunk is not None
    text = str(e)
    assert text.startswith(f"cannot read volume {url}, array 's0', section z=9, chunk (2, ")
    assert "the store did not deliver it (" in text and "Fix: check the connection" in text
    assert "then run the same command again" in text and "\n" not in text, text


@pytest.mark.parametrize("raised", [MemoryError, KeyboardInterrupt, *BUGS])  # every error kept as it is
def test_memory_errors_interrupts_and_bugs_stay_as_they_are(raised: type, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url = write_ngff(tmp_path / "a.ome.zarr", DATA, "0.5")
    vol = open_volume(str(url), cache=ChunkCache())

    def load(self, index):
        raise raised("from _load")

    monkeypatch.setattr(ZarrVolume, "_load", load)
    with pytest.raises(raised, match="from _load"):
        vol.section("z", 3)


def test_user_errors_pickle_whole() -> None:
    """What a DataLoader worker or a Ray task sends back is the same error, fields and sentence."""
    errors = [VolumeReadError("s3://b/cell.zarr", "s0", (1, 0, 0), "the store did not deliver it (TimeoutError)",
                              "check the connection", True, section="z=5"),
              VolumeError("cell.zarr", "level", "no level 3", "use 0..1"),
              ImageReadError("a.tif", "truncated", "re-save it")]
    for e in errors:
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.__dict__ == e.__dict__
