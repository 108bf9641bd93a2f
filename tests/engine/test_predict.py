"""predict_files: same H×W as the input at any size (tiled), dtype by class count, overlays, safe outputs."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from dspseg.data.io import write_image
from dspseg.errors import UserError
from dspseg.engine.predict import collect_inputs, label_dtype, overlay_rgb, palette, predict_files
from dspseg.engine.trainer import train
from engine_common import make_easy_dataset, tiny_cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pred")
    data = make_easy_dataset(root / "data", n=(4, 1, 0))
    train(data, root / "run", tiny_cfg(steps=4, val_every=0))
    return root / "run"


def test_non_square_image_larger_than_a_tile(run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_image(tmp_path / "in" / "wide.tif", rng.random((45, 70)).astype(np.float32))
    write_image(tmp_path / "in" / "small.png", (rng.random((20, 26)) * 255).astype(np.uint8))
    written = predict_files(run, [tmp_path / "in"], tmp_path / "out", overlay=True, tile=32)
    assert sorted(p.name for p in written) == ["small.tif", "wide.tif"]
    wide = tifffile.imread(tmp_path / "out" / "wide.tif")
    assert wide.shape == (45, 70) and wide.dtype == np.uint8 and wide.max() < 3
    assert tifffile.imread(tmp_path / "out" / "small.tif").shape == (20, 26)
    ov = iio.imread(tmp_path / "out" / "wide_overlay.png")
    # enlarged 6x (45 * 6 >= 256, nearest neighbour) with the class legend to its right
    assert ov.shape[0] == 45 * 6 and ov.shape[1] > 70 * 6 and ov.shape[2] == 3 and ov.dtype == np.uint8


def test_outputs_are_safe(run: Path, tmp_path: Path) -> None:
    src = tmp_path / "a.tif"
    write_image(src, np.zeros((16, 16), np.float32))
    predict_files(run, [src], tmp_path / "out")
    assert predict_files(run, [src], tmp_path / "out") == [tmp_path / "out" / "a.tif"]  # kept: same run
    with pytest.raises(UserError, match="already exists and was not written by this run's last.*--overwrite"):
        predict_files(run, [src], tmp_path / "out", checkpoint="last")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.tif").write_bytes(b"a user's file")
    with pytest.raises(UserError, match="already exists"):
        predict_files(run, [src], tmp_path / "other")
    predict_files(run, [src], tmp_path / "out", overwrite=True)
    with pytest.raises(UserError, match="would replace an input"):
        predict_files(run, [src], tmp_path, overwrite=True)
    assert tifffile.imread(src).dtype == np.float32  # the input is untouched


def test_input_errors(run: Path, tmp_path: Path) -> None:
    write_image(tmp_path / "x" / "a.tif", np.zeros((16, 16), np.float32))
    write_image(tmp_path / "y" / "a.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(UserError, match="would both be written as a.tif"):
        collect_inputs([tmp_path / "x", tmp_path / "y"])
    with pytest.raises(UserError, match="no input images"):
        collect_inputs([])
    with pytest.raises(UserError, match="does not exist"):
        collect_inputs([tmp_path / "nope.tif"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no .tif"):
        collect_inputs([tmp_path / "empty"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a TIFF or PNG"):
        collect_inputs([tmp_path / "notes.txt"])
    assert collect_inputs([tmp_path / "x", tmp_path / "x" / "a.tif"]) == ([tmp_path / "x" / "a.tif"], [])
    write_image(tmp_path / "rgb.tif", np.zeros((3, 16, 16), np.float32))
    with pytest.raises(UserError, match="3 channel.*trained on 1"):
        predict_files(run, [tmp_path / "rgb.tif"], tmp_path / "out2")


def test_label_dtype_palette_overlay() -> None:
    assert label_dtype(2) == np.uint8 and label_dtype(256) == np.uint8 and label_dtype(257) == np.uint16
    p = palette(40)
    assert p.shape == (40, 3) and p.dtype == np.uint8 and len({tuple(c) for c in p[:21]}) == 21
    # no class looks like class 0's grey (tab10's own grey differs from it by one level only)
    assert np.abs(p[1:39].astype(int) - p[0].astype(int)).max(axis=1).min() > 20
    labels = np.zeros((4, 5), np.int64)
    labels[0, 0] = 1
    rgb = overlay_rgb(np.linspace(0, 1, 20, dtype=np.float32).reshape(1, 4, 5), labels, 3)
    assert rgb.shape == (4, 5, 3) and rgb[1, 1, 0] == rgb[1, 1, 1] == rgb[1, 1, 2]  # class 0 stays grey
    assert len(set(rgb[0, 0].tolist())) > 1  # class 1 is tinted


def test_a_folder_with_bad_inputs_writes_the_good_ones_and_lists_the_bad(run: Path, tmp_path: Path) -> None:
    import os

    from dspseg.errors import InputsFailed

    folder = tmp_path / "in"
    for name in ("a", "c"):
        write_image(folder / f"{name}.tif", np.zeros((16, 16), np.float32))
    (folder / "b.tif").write_bytes(b"junk")  # unreadable
    write_image(folder / "rgb.tif", np.zeros((3, 16, 16), np.float32))  # wrong channels
    (folder / "dir.tif").mkdir()
    (folder / "gone.tif").symlink_to(tmp_path / "nowhere")
    os.mkfifo(folder / "pipe.tif")  # never opened: reading it would hang
    with pytest.raises(InputsFailed) as err:
        predict_files(run, [folder], tmp_path / "out")
    assert err.value.exit_code == 1
    reasons = dict(err.value.failures)
    assert set(reasons) == {str(folder / n) for n in ("b.tif", "rgb.tif", "dir.tif", "gone.tif", "pipe.tif")}
    assert "corrupt" in reasons[str(folder / "b.tif")] and "trained on 1" in reasons[str(folder / "rgb.tif")]
    assert "folder" in reasons[str(folder / "dir.tif")] and "broken" in reasons[str(folder / "gone.tif")]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tif")) == ["a.tif", "c.tif"]
    # the same command again, after removing the bad entries: a.tif and c.tif are kept, the rest done
    for n in ("b.tif", "rgb.tif", "gone.tif", "pipe.tif"):
        (folder / n).unlink()
    (folder / "dir.tif").rmdir()
    write_image(folder / "d.tif", np.zeros((16, 16), np.float32))
    before = (tmp_path / "out" / "a.tif").stat().st_mtime_ns
    written = predict_files(run, [folder], tmp_path / "out")
    assert [p.name for p in written] == ["a.tif", "c.tif", "d.tif"]
    assert (tmp_path / "out" / "a.tif").stat().st_mtime_ns == before
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
