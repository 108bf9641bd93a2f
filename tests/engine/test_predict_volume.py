"""predict_volume: a volume into an NGFF label image equal to section-by-section 2D prediction, its
metadata, the pyramid, resume after a stop, and one sentence per bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from dspseg.data.intensity import to_unit
from dspseg.data.volumes import open_volume
from dspseg.engine.checkpoint import LoadedRun, load_run
from dspseg.engine.evaluate import predict_labels
from dspseg.engine.predict import palette
from dspseg.engine.predict_volume import DONE, predict_volume
from dspseg.engine.trainer import train
from dspseg.data.volumes.pyramid import mode_downsample
from dspseg.errors import DatasetError, OutputFolderError, UserError, VolumeError
from engine_common import CLASSES, make_easy_dataset, tiny_cfg
from volume_files import SCALE, SHAPE, TRANSLATION, volume_data, write_ngff

OPTS = {"tile": 32, "block": (4, 32, 16), "levels": 2}  # sections 48 x 40: tiled, blocks cut every section


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("predvol")
    train(make_easy_dataset(root / "data", n=(4, 1, 0)), root / "run", tiny_cfg(steps=4, val_every=0))
    return root / "run", write_ngff(root / "cell.ome.zarr", volume_data("uint16"))


def _labels(out: Path, level: int = 0) -> np.ndarray:
    return np.asarray(zarr.open_group(str(out), mode="r")[f"labels/segmentation/s{level}"][...])


def test_equals_section_by_section_prediction(setup: tuple[Path, Path], tmp_path: Path) -> None:
    run, cell = setup
    out = tmp_path / "seg.ome.zarr"
    counts = predict_volume(run, str(cell), out, probabilities=True, **OPTS)
    assert counts == {"computed": 3 * 2 * 3 + 2 * 1 * 2, "skipped": 0, "levels": 2}
    loaded, data = load_run(run), volume_data("uint16")
    sections = [torch.from_numpy(loaded.normalisation.apply(to_unit(s)[None])) for s in data]
    expected = np.stack([lab.numpy() for _, lab in predict_labels(loaded.model, sections, tile=32, overlap=0.25)])
    labels = _labels(out)
    assert labels.shape == SHAPE and labels.dtype == np.uint8
    assert np.array_equal(labels, expected)
    probs = np.asarray(zarr.open_group(str(out), mode="r")["probabilities/s0"][...])
    assert probs.shape == (len(CLASSES), *SHAPE) and np.allclose(probs.sum(0), 1, atol=1e-5)
    assert np.array_equal(probs.argmax(0), labels)
    assert np.array_equal(_labels(out, 1), mode_downsample(labels, len(CLASSES)))


def test_ngff_metadata(setup: tuple[Path, Path], tmp_path: Path) -> None:
    run, cell = setup
    out = tmp_path / "seg.ome.zarr"
    predict_volume(run, str(cell), out, **OPTS)
    back = open_volume({"url": str(out), "array": "labels/segmentation"})  # the NGFF reader: scale and translation
    assert back.voxel_size == SCALE and back.translation == TRANSLATION and back.unit == "nanometer"
    coarse = open_volume({"url": str(out), "array": "labels/segmentation", "level": 1})
    assert coarse.shape == (5, 24, 20) and coarse.voxel_size == tuple(2 * v for v in SCALE)
    attrs = zarr.open_group(str(out), mode="r")["labels/segmentation"].attrs.asdict()["ome"]
    label = attrs["image-label"]
    assert [p["class"] for p in label["properties"]] == CLASSES
    assert [c["rgba"][:3] for c in label["colors"]] == palette(len(CLASSES)).tolist()
    assert [d["path"] for d in attrs["multiscales"][0]["datasets"]] == ["s0", "s1"]
    assert zarr.open_group(str(out), mode="r")["labels"].attrs.asdict()["ome"]["labels"] == ["segmentation"]


def test_resume_after_a_stop_skips_finished_blocks(setup: tuple[Path, Path], tmp_path: Path) -> None:
    run, cell = setup
    whole = tmp_path / "whole.ome.zarr"
    total = predict_volume(run, str(cell), whole, **OPTS)["computed"]
    out = tmp_path / "seg.ome.zarr"

    def stop(n: int) -> None:
        if n == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_volume(run, str(cell), out, on_block=stop, **OPTS)
    # a half-written block: its chunks scribbled on, no marker (as if killed before the marker)
    arr = zarr.open_group(str(out), mode="r+")["labels/segmentation/s0"]
    arr[4:8, 0:32, 0:16] = 2
    resumed = predict_volume(run, str(cell), out, **OPTS)
    assert resumed == {"computed": total - 5, "skipped": 5, "levels": 2}
    assert np.array_equal(_labels(out), _labels(whole)) and np.array_equal(_labels(out, 1), _labels(whole, 1))
    assert predict_volume(run, str(cell), out, **OPTS)["computed"] == 0  # all done: nothing recomputed
    assert len(list((out / DONE).rglob("*_*_*"))) == total


def test_three_orthogonal_passes(setup: tuple[Path, Path], tmp_path: Path) -> None:
    run, cell = setup
    out = tmp_path / "iso.ome.zarr"
    predict_volume(run, str(cell), out, axes="xy,xz,yz", probabilities=True, **OPTS)
    probs = np.asarray(zarr.open_group(str(out), mode="r")["probabilities/s0"][...])
    xy = tmp_path / "xy.ome.zarr"
    predict_volume(run, str(cell), xy, probabilities=True, **OPTS)
    only_xy = np.asarray(zarr.open_group(str(xy), mode="r")["probabilities/s0"][...])
    assert np.allclose(probs.sum(0), 1, atol=1e-5) and np.array_equal(probs.argmax(0), _labels(out))
    assert not np.allclose(probs, only_xy)  # the xz and yz passes were averaged in


def test_bad_inputs_one_sentence(setup: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, cell = setup
    (tmp_path / "notes.zarr").mkdir()
    with pytest.raises(VolumeError, match="notes.zarr.*Fix"):
        predict_volume(run, str(tmp_path / "notes.zarr"), tmp_path / "a.ome.zarr")
    with pytest.raises(UserError, match="--axes 'xw' .*use xy"):
        predict_volume(run, str(cell), tmp_path / "b.ome.zarr", axes="xw")
    with pytest.raises(VolumeError, match="field 'level'"):
        predict_volume(run, {"url": str(cell), "level": 5}, tmp_path / "c.ome.zarr")
    monkeypatch.setattr(LoadedRun, "in_channels", property(lambda self: 3))
    with pytest.raises(DatasetError, match="has 1 channel.*trained on 3"):
        predict_volume(run, str(cell), tmp_path / "d.ome.zarr")
    monkeypatch.undo()
    (tmp_path / "e.ome.zarr").mkdir()
    (tmp_path / "e.ome.zarr" / "mine.txt").write_text("a user's file")
    with pytest.raises(OutputFolderError, match="not empty.*--overwrite"):
        predict_volume(run, str(cell), tmp_path / "e.ome.zarr")
    assert (tmp_path / "e.ome.zarr" / "mine.txt").exists()
    shutil.rmtree(tmp_path / "e.ome.zarr")


def test_command_line_routes_a_volume(setup: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dspseg.cli import app

    run, cell = setup
    out = tmp_path / "cli.ome.zarr"
    args = ["predict", str(run), str(cell), "--out", str(out), "--tile", "32", "--block", "4,32,16", "--levels", "2"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "block 22/22 (100 %)" in r.output
    predict_volume(run, str(cell), tmp_path / "api.ome.zarr", **OPTS)
    assert np.array_equal(_labels(out), _labels(tmp_path / "api.ome.zarr"))
    r = CliRunner().invoke(app, [*args[:5], "--block", "4,x"])
    assert r.exit_code == 2 and "--block must be 3 positive sizes" in r.output
