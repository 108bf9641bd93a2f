"""Image and mask readers/writers: every layout, every scaling rule, corrupt and unsupported files."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image

from dspseg.data.io import (ImageReadError, image_size, read_image, read_mask, read_mask_stored,
                            write_image, write_mask)

H, W = 20, 30  # non-square on purpose


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 12])
def test_write_read_tiff_roundtrip_float_exact(tmp_path, rng, channels):
    a = rng.random((channels, H, W)).astype(np.float32)
    write_image(tmp_path / "sub" / "a.tif", a)  # parent folder is created
    b = read_image(tmp_path / "sub" / "a.tif")
    assert b.dtype == np.float32 and b.shape == (channels, H, W)
    np.testing.assert_array_equal(a, b)
    assert image_size(tmp_path / "sub" / "a.tif") == (channels, H, W)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_write_read_png_roundtrip_8bit(tmp_path, rng, channels):
    a = rng.random((channels, H, W)).astype(np.float32)
    write_image(tmp_path / "a.png", a)
    b = read_image(tmp_path / "a.png")
    assert b.shape == (channels, H, W)  # RGBA keeps its 4th channel
    assert np.abs(a - b).max() <= 0.5 / 255 + 1e-6
    assert image_size(tmp_path / "a.png") == (channels, H, W)


def test_2d_array_gives_one_channel(tmp_path):
    a = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    tifffile.imwrite(tmp_path / "a.tif", a)
    out = read_image(tmp_path / "a.tif")
    assert out.shape == (1, H, W)
    assert out[0, 0, 1] == pytest.approx(1 / 65535)


def test_channels_last_rgb_tiff(tmp_path, rng):
    a = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", a, photometric="rgb")
    out = read_image(tmp_path / "rgb.tif")
    assert out.shape == (3, H, W)
    np.testing.assert_allclose(out, np.moveaxis(a, -1, 0) / 255, rtol=1e-6)
    assert image_size(tmp_path / "rgb.tif") == (3, H, W)


def test_channels_first_tiff_without_axis_names(tmp_path, rng):
    a = rng.integers(0, 256, (2, H, W), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", a, photometric="minisblack", metadata=None)
    out = read_image(tmp_path / "a.tif")
    np.testing.assert_allclose(out, a / 255, rtol=1e-6)


def test_channels_last_5_channels_by_shape(tmp_path, rng):
    a = rng.random((H, W, 5)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", a)  # stored as 20 pages of 30x5, axes unknown
    out = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(out, np.moveaxis(a, -1, 0))
    assert image_size(tmp_path / "a.tif") == (5, H, W)


def test_singleton_axes_are_dropped(tmp_path, rng):
    a = rng.random((1, 1, H, W)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", a)
    assert read_image(tmp_path / "a.tif").shape == (1, H, W)
    assert image_size(tmp_path / "a.tif") == (1, H, W)


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255), (np.uint16, 65535), (np.int16, 32767),
                                         (np.uint32, 2**32 - 1), (np.float64, 1), (np.float32, 1)])
def test_scaling_by_dtype(tmp_path, dtype, scale):
    a = np.zeros((H, W), dtype)
    a[3, 4] = 7
    tifffile.imwrite(tmp_path / "a.tif", a)
    out = read_image(tmp_path / "a.tif")
    assert out.dtype == np.float32
    assert out[0, 3, 4] == pytest.approx(7 / scale, rel=1e-6)
    assert out.sum() == pytest.approx(7 / scale, rel=1e-6)


def test_16bit_png(tmp_path):
    a = (np.arange(H * W) * 100).astype(np.uint16).reshape(H, W)
    iio.imwrite(tmp_path / "a.png", a)
    np.testing.assert_allclose(read_image(tmp_path / "a.png")[0], a / 65535, rtol=1e-6)


# ------------------------------------------------------------------------------------------ refusals


def _raises(fn, path, *words):
    with pytest.raises(ImageReadError) as info:
        fn(path)
    text = str(info.value)
    assert str(path) in text and "Fix:" in text
    for w in words:
        assert w in text, text
    return info.value


@pytest.mark.parametrize("fn", [read_image, image_size])
def test_volume_with_z_axis_refused(tmp_path, fn):
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((5, H, W), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    _raises(fn, tmp_path / "v.tif", "(5, 20, 30)", "volume", "slice")


@pytest.mark.parametrize("fn", [read_image, image_size])
def test_volume_by_shape_refused(tmp_path, fn):
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((24, 32, 32), np.uint8))
    _raises(fn, tmp_path / "v.tif", "(24, 32, 32)", "volume")


@pytest.mark.parametrize("fn", [read_image, image_size])
def test_4d_refused(tmp_path, fn):
    tifffile.imwrite(tmp_path / "v.tif", np.zeros((2, 3, H, W), np.uint8), imagej=True,
                     metadata={"axes": "ZCYX"})
    _raises(fn, tmp_path / "v.tif", "(2, 3, 20, 30)", "2D")


@pytest.mark.parametrize("fn", [read_image, image_size])
def test_one_pixel_refused(tmp_path, fn):
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((1, 1), np.uint8))
    _raises(fn, tmp_path / "p.tif", "at least 2 rows")


@pytest.mark.parametrize("fn", [read_image, image_size, read_mask])
def test_text_file_named_tif(tmp_path, fn):
    (tmp_path / "t.tif").write_text("not an image")
    _raises(fn, tmp_path / "t.tif", "corrupt")


@pytest.mark.parametrize("fn", [read_image, image_size])
@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_truncated_file(tmp_path, rng, fn, suffix):
    write_image(tmp_path / f"a{suffix}", rng.random((3, H, W)).astype(np.float32))
    data = (tmp_path / f"a{suffix}").read_bytes()
    (tmp_path / f"t{suffix}").write_bytes(data[: len(data) // 2])
    _raises(fn, tmp_path / f"t{suffix}", "truncated")


@pytest.mark.parametrize("fn", [read_image, image_size, read_mask])
def test_missing_file(tmp_path, fn):
    _raises(fn, tmp_path / "nothere.tif", "no such file")


@pytest.mark.parametrize("fn", [read_image, image_size, read_mask])
def test_unsupported_suffix(tmp_path, fn):
    (tmp_path / "a.bmp").write_bytes(b"BM")
    _raises(fn, tmp_path / "a.bmp", "unsupported", ".bmp")


def test_directory_is_not_an_image(tmp_path):
    (tmp_path / "d.tif").mkdir()
    _raises(read_image, tmp_path / "d.tif", "not a regular file")


def test_nan_image_refused(tmp_path):
    a = np.zeros((H, W), np.float32)
    a[1, 1] = np.nan
    tifffile.imwrite(tmp_path / "n.tif", a)
    _raises(read_image, tmp_path / "n.tif", "NaN")


# ------------------------------------------------------------------------------------------ masks


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_mask_roundtrip_uint8(tmp_path, rng, suffix):
    m = rng.integers(0, 5, (H, W))
    m[0, 0] = 255
    write_mask(tmp_path / f"m{suffix}", m)
    out = read_mask(tmp_path / f"m{suffix}")
    assert out.dtype == np.int64 and out.shape == (H, W)
    np.testing.assert_array_equal(out, m)
    assert read_mask_stored(tmp_path / f"m{suffix}").dtype == np.uint8


def test_mask_uint16_when_needed(tmp_path):
    m = np.zeros((H, W), np.int64)
    m[2, 3] = 300
    write_mask(tmp_path / "m.tif", m)
    assert read_mask_stored(tmp_path / "m.tif").dtype == np.uint16
    assert read_mask(tmp_path / "m.tif")[2, 3] == 300


def test_palette_png_mask_gives_indices(tmp_path):
    idx = (np.arange(H * W) % 4).astype(np.uint8).reshape(H, W)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), idx)


def test_float_mask_refused(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((H, W), np.float32))
    _raises(read_mask, tmp_path / "m.tif", "integer", "float32", "uint8")


def test_rgb_mask_refused(tmp_path):
    iio.imwrite(tmp_path / "m.png", np.zeros((H, W, 3), np.uint8))
    _raises(read_mask, tmp_path / "m.png", "one channel", "(20, 30, 3)")


def test_jpeg_mask_refused(tmp_path):
    iio.imwrite(tmp_path / "m.jpg", np.zeros((H, W), np.uint8))
    _raises(read_mask, tmp_path / "m.jpg", "lossy", "PNG or TIFF")


def test_mask_singleton_leading_axis_accepted(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.ones((1, H, W), np.uint8))
    assert read_mask(tmp_path / "m.tif").shape == (H, W)


# ------------------------------------------------------------------------------------------ writers


def test_writer_input_checks(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_image(tmp_path / "a.tif", np.zeros((2, 2, 3, 4)))
    with pytest.raises(ValueError, match=r"\.jpg"):
        write_image(tmp_path / "a.jpg", np.zeros((H, W)))
    with pytest.raises(ValueError, match="at most 4 channels"):
        write_image(tmp_path / "a.png", np.zeros((5, H, W)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_image(tmp_path / "a.png", np.full((H, W), 2.0))
    with pytest.raises(ValueError, match="integers"):
        write_mask(tmp_path / "m.tif", np.zeros((H, W), np.float32))
    with pytest.raises(ValueError, match="0..65535"):
        write_mask(tmp_path / "m.tif", np.full((H, W), -1))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        write_mask(tmp_path / "m.tif", np.zeros((2, H, W), np.uint8))
    assert not any(tmp_path.iterdir())  # nothing half-written


# ------------------------------------------------------------------- TIFF series, pages as channels


def test_multi_series_ome_tiff_reads_the_full_resolution_series(tmp_path):
    from dspseg.data.io import image_header, read_image_stored

    path = tmp_path / "two.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as w:
        w.write(np.zeros((16, 16), np.uint8))  # a thumbnail first
        w.write(np.full((64, 48), 7, np.uint8))
    notes: list[str] = []
    assert read_image_stored(path, notes).shape == (1, 64, 48) and read_image_stored(path).max() == 7
    assert len(notes) == 1 and "read series 1" in notes[0] and "(16, 16)" in notes[0]
    assert image_header(path) == ((1, 64, 48), np.dtype("uint8"))


def test_ambiguous_multi_series_tiff_is_refused_with_the_fix(tmp_path):
    from dspseg.data.io import image_size

    path = tmp_path / "fields.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as w:
        w.write(np.zeros((32, 32), np.uint8))
        w.write(np.ones((32, 32), np.uint8))
    for read in (read_image, image_size):
        with pytest.raises(ImageReadError, match="2 image series.*ambiguous.*Fix: save each series"):
            read(path)


def test_pyramid_in_one_series_reads_level_0(tmp_path):
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as w:
        w.write(np.full((64, 64), 9, np.uint8), subifds=1)
        w.write(np.zeros((32, 32), np.uint8), subfiletype=1)
    notes: list[str] = []
    assert read_image(path, notes).shape == (1, 64, 64) and notes == []


def test_pages_without_axis_names_become_channels_with_a_note(tmp_path):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as w:
        for k in range(3):
            w.write(np.full((32, 32), k, np.uint8), metadata=None)
    notes: list[str] = []
    assert read_image(path, notes).shape == (3, 32, 32)
    assert len(notes) == 1 and "3 pages" in notes[0] and "save each as its own file" in notes[0]
    named = tmp_path / "named.tif"
    write_image(named, np.zeros((3, 32, 32), np.float32))  # axes CYX: no note
    notes = []
    read_image(named, notes)
    assert notes == []
