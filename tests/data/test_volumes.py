"""Volume sources: every format read lazily and voxel for voxel equal to numpy; bad references."""

from __future__ import annotations

import itertools
import json

import fsspec
import numpy as np
import pytest

from dspseg.data.volumes import ChunkCache, SectionRange, VolumeRef, open_volume
from dspseg.errors import VolumeError
from volume_files import (SCALE, TRANSLATION, volume_data, write_hdf5, write_n5, write_ngff, write_ome_tiff,
                          write_zarr3)

DATA = volume_data()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("volumes")
    return {
        "ngff04": {"url": str(write_ngff(d / "a.ome.zarr", DATA, "0.4"))},
        "ngff05": {"url": str(write_ngff(d / "b.ome.zarr", DATA, "0.5")), "level": "s0"},
        "zarr3": {"url": "file://" + str(write_zarr3(d / "c.zarr", DATA))},
        "n5": {"url": str(write_n5(d / "d.n5", "em/raw", DATA)), "array": "em/raw"},
        "hdf5": {"url": str(write_hdf5(d / "e.h5", "volumes/raw", DATA)), "array": "volumes/raw"},
        "tiff": {"url": str(write_ome_tiff(d / "f.ome.tif", DATA))},
        "tiff_zlib": {"url": str(write_ome_tiff(d / "g.ome.tif", DATA, compressed=True))},
    }


FORMATS = ["ngff04", "ngff05", "zarr3", "n5", "hdf5", "tiff", "tiff_zlib"]
KIND = {"ngff04": "ome-zarr", "ngff05": "ome-zarr", "zarr3": "zarr", "n5": "n5", "hdf5": "hdf5",
        "tiff": "tiff", "tiff_zlib": "tiff"}


def touched(vol, start, stop) -> int:
    """Number of chunks of ``vol`` the box [start, stop) overlaps (the brute-force count)."""
    return len(list(itertools.product(*[range(a // c, (b - 1) // c + 1)
                                        for a, b, c in zip(start, stop, vol.chunks)])))


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_agrees_with_numpy(files, name):
    vol = open_volume(files[name], cache=ChunkCache())
    assert (vol.format, vol.axes, vol.shape, vol.dtype) == (KIND[name], "zyx", DATA.shape, DATA.dtype)
    for axis, sl in (("z", np.s_[3]), ("y", np.s_[:, 17]), ("x", np.s_[:, :, 39])):
        np.testing.assert_array_equal(vol.section(axis, {"z": 3, "y": 17, "x": 39}[axis]), DATA[sl])
    np.testing.assert_array_equal(vol.section("z", 9, window=(14, 10, 30, 7)), DATA[9, 14:44, 10:17])
    np.testing.assert_array_equal(vol.section("x", 0, window=(2, 40, 8, 8)), DATA[2:10, 40:48, 0])
    if name != "zarr3":  # the plain zarr array carries no physical metadata
        size = np.array(SCALE) / (1000 if name in ("hdf5", "tiff", "tiff_zlib") else 1)
        np.testing.assert_allclose(vol.voxel_size, size)
    if name.startswith("ngff"):
        assert vol.translation == TRANSLATION and vol.unit == "nanometer"


@pytest.mark.parametrize("name", FORMATS)
def test_a_window_reads_only_its_chunks(files, name):
    cache = ChunkCache()
    vol = open_volume(files[name], cache=cache)
    assert cache.misses == 0  # opening reads metadata only
    vol.section("z", 5, window=(14, 10, 6, 12))
    expected = touched(vol, (5, 14, 10), (6, 20, 22))
    assert cache.misses == expected == (4 if vol.chunks == (4, 16, 16) else 1)
    vol.section("z", 5, window=(15, 11, 4, 4))  # same chunks again: served from the cache
    assert cache.misses == expected and cache.hits >= 1


def test_levels_carry_their_own_scale_and_translation(files):
    vol = open_volume({**files["ngff04"], "level": 1}, cache=ChunkCache())
    assert vol.shape == (10, 24, 20) and vol.voxel_size == (8.0, 8.0, 8.0)
    assert vol.translation == (80.0, 14.0, -2.0)
    np.testing.assert_array_equal(vol.section("z", 4), DATA[4, ::2, ::2])


def test_fsspec_urls_read_like_local_paths(files):
    mem = fsspec.filesystem("memory")
    for name in ("ngff05", "n5", "hdf5", "tiff"):
        src = files[name]["url"]
        mem.put(src, f"/vol/{name}/" + src.rsplit("/", 1)[1], recursive=True)
        ref = {**files[name], "url": f"memory://vol/{name}/" + src.rsplit("/", 1)[1]}
        np.testing.assert_array_equal(open_volume(ref, cache=ChunkCache()).section("y", 5), DATA[:, 5])


def test_cache_stays_within_its_byte_budget(files):
    cache = ChunkCache(max_bytes=3 * 4 * 16 * 16 * 2)  # three full uint16 chunks (a section spans 9)
    vol = open_volume(files["ngff04"], cache=cache)
    for z in (0, 1):
        vol.section("z", z)
        assert 0 < cache.bytes <= cache.max_bytes
    assert cache.misses == 18  # cycling through 9 chunks in LRU order that hold < 9: every read misses
    big = ChunkCache(max_bytes=1 << 20)
    vol = open_volume(files["ngff04"], cache=big)
    vol.section("z", 0), vol.section("z", 1)
    assert (big.misses, big.hits) == (9, 9)


def test_non_spatial_axes_need_a_selection(tmp_path):
    data = np.stack([DATA, DATA + 1])
    url = str(write_zarr3(tmp_path / "c.zarr", data, axes="czyx"))
    with pytest.raises(VolumeError, match=r"field 'select.c'.*Fix: set select"):
        open_volume(url)
    vol = open_volume({"url": url, "select": {"c": 1}}, cache=ChunkCache())
    np.testing.assert_array_equal(vol.section("y", 3), DATA[:, 3] + 1)


@pytest.mark.parametrize(("change", "field", "fix"), [
    ({"array": "em/nothing"}, "array", "set array"),
    ({"level": 5}, "level", "use an index 0..1"),
    ({"axes": "xyz"}, "axes", "set axes to 'zyx'"),
    ({"colour": "red"}, "colour", "remove it"),
    ({"format": "png"}, "format", "use one of"),
])
def test_bad_references_are_one_sentence(files, change, field, fix):
    ref = {**files["ngff04"], **change} if "array" not in change else {**files["n5"], **change}
    with pytest.raises(VolumeError) as err:
        open_volume(ref)
    text = str(err.value)
    assert f"field '{field}'" in text and f"Fix: {fix}" in text and ref["url"] in text and "\n" not in text


def test_bad_sections_name_the_field(files):
    vol = open_volume(files["hdf5"], cache=ChunkCache())
    with pytest.raises(VolumeError, match=r"field 'index': section 10 is outside the 10 sections along z"):
        vol.section("z", 10)
    with pytest.raises(VolumeError, match=r"field 'window'.*48 x 40 section"):
        vol.section("z", 0, window=(40, 0, 9, 4))
    with pytest.raises(VolumeError, match=r"field 'axis'"):
        vol.section("c", 0)
    with pytest.raises(VolumeError, match=r"field 'array'.*datasets: volumes/raw"):
        open_volume({"url": files["hdf5"]["url"], "array": "raw"})


def test_section_ranges_expand_and_check():
    assert SectionRange(axis="z", exclude=(1, 3)).indices(5) == [0, 2, 4]
    assert SectionRange(start=2, stop=9, step=3).indices(10) == [2, 5, 8]
    with pytest.raises(VolumeError, match="field 'stop'"):
        SectionRange(stop=12).indices(10)
    ref = VolumeRef.parse("s3://bucket/cell.zarr")
    assert json.loads(ref.model_dump_json())["url"] == "s3://bucket/cell.zarr"


@pytest.mark.parametrize("name", ["ngff05", "n5", "hdf5"])
def test_a_region_is_a_box_of_the_array(files, name):
    """``region``: sections, sizes and translation are the box's; chunks are the array's, shared in the cache."""
    cache = ChunkCache()
    box = {"start": [2, 17, 5], "stop": [7, 41, 30]}
    vol = open_volume({**files[name], "region": box}, cache=cache)
    assert vol.shape == (5, 24, 25) and vol.section_shape("z") == (24, 25) and vol.size("x") == 25
    np.testing.assert_array_equal(vol.section("z", 1), DATA[3, 17:41, 5:30])
    np.testing.assert_array_equal(vol.section("y", 4, window=(1, 3, 2, 9)), DATA[3:5, 21, 8:17])
    if name == "ngff05":
        assert vol.translation == tuple(t + s * b for t, s, b in zip(TRANSLATION, SCALE, box["start"]))
    misses = cache.misses
    open_volume(files[name], cache=cache).section("z", 3, window=(17, 5, 24, 25))  # the same voxels, whole array
    assert cache.misses == misses and cache.hits >= touched(vol, (3, 17, 5), (4, 41, 30))
    with pytest.raises(VolumeError, match=r"field 'region': the region z2:12,y17:41,x5:30 does not fit .* 10 x 48 x 40"):
        open_volume({**files[name], "region": {**box, "stop": [12, 41, 30]}})
    assert VolumeRef.parse({**files[name], "region": box}).key() != VolumeRef.parse(files[name]).key()


def _rewrite_attrs(path, edit) -> None:
    attrs = json.loads((path / ".zattrs").read_text())
    edit(attrs["multiscales"][0])
    (path / ".zattrs").write_text(json.dumps(attrs))


def test_ngff_metadata_is_validated_and_untyped_axes_are_read(tmp_path):
    """The one NGFF reader (data/volumes/ngff.py): a 0.4 image whose axes carry no type (allowed by 0.4)
    is read with its voxel size; metadata that breaks the specification is one sentence."""
    path = write_ngff(tmp_path / "a.ome.zarr", DATA, "0.4")
    _rewrite_attrs(path, lambda ms: [a.pop("type") for a in ms["axes"]])
    vol = open_volume({"url": str(path), "level": 1}, cache=ChunkCache())
    assert vol.voxel_size == (8.0, 8.0, 8.0) and vol.format == "ome-zarr"
    _rewrite_attrs(path, lambda ms: ms["datasets"][1]["coordinateTransformations"][0].update(scale=[8, 8]))
    with pytest.raises(VolumeError, match=r"field 'multiscales.datasets.1.coordinateTransformations': .*"
                                          r"dimensionality.*Fix: fix the image's OME-NGFF metadata"):
        open_volume(str(path))
    _rewrite_attrs(path, lambda ms: (ms["datasets"][1]["coordinateTransformations"][0].update(scale=[8, 8, 8]),
                                     ms["datasets"][0]["coordinateTransformations"][0].update(scale=[8, -4, 4])))
    with pytest.raises(VolumeError, match=r"voxel sizes must be positive"):
        open_volume(str(path))
    _rewrite_attrs(path, lambda ms: ms.update(axes=[{"name": a} for a in "cyx"]))
    with pytest.raises(VolumeError, match=r"field 'multiscales.axes': expected the axes z, y, x"):
        open_volume(str(path))
