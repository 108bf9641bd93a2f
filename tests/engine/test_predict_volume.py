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
from dspseg.engine.predict_volume import DONE, predict_volume, read_record
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
    assert predict_volume(run, str(cell), out, **OPTS) == {"computed": 0, "skipped": total, "levels": 2}  # all done


def test_a_finished_output_holds_only_zarr_and_records_what_wrote_it(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """No block markers, marker file or lock left in the finished folder: zarr-python lists its members
    without a warning (it warns about every entry it does not know); the root group's ``dspseg``
    attribute names the run, the input and the options, and the same command finds it complete."""
    import warnings

    run, cell = setup
    out = tmp_path / "seg.ome.zarr"
    total = predict_volume(run, str(cell), out, **OPTS)["computed"]
    assert sorted(p.name for p in out.iterdir()) == ["labels", "zarr.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.ome.zarr"]  # the sibling lock is gone too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        root = zarr.open_group(str(out), mode="r")
        assert sorted(name for name, _ in root.members(max_depth=None)) == [
            "labels", "labels/segmentation", "labels/segmentation/s0", "labels/segmentation/s1"]
    record = read_record(out)
    assert record["complete"] is True and record["predict"]["run"] == str(run.resolve())
    assert record["predict"]["volume"]["url"] == str(cell) and record["predict"]["levels"] == 2
    assert predict_volume(run, str(cell), out, **OPTS) == {"computed": 0, "skipped": total, "levels": 2}
    with pytest.raises(OutputFolderError, match="not written by this command.*--overwrite"):
        predict_volume(run, str(cell), out, **{**OPTS, "levels": 1})  # other options: refused, kept
    assert read_record(out)["complete"] is True
    redone = predict_volume(run, str(cell), out, overwrite=True, **{**OPTS, "levels": 1})
    assert redone["skipped"] == 0 and read_record(out)["predict"]["levels"] == 1


def test_a_second_writer_is_refused_and_a_failed_start_leaves_no_folder(setup: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    import subprocess
    import sys

    from dspseg.errors import FolderLockedError
    from dspseg.fslock import sibling_lock_file

    run, cell = setup
    out = tmp_path / "seg.ome.zarr"
    hold = ("import sys, time\nfrom dspseg.fslock import folder_lock, sibling_lock_file\n"
            "with folder_lock(sys.argv[1], sibling_lock_file(sys.argv[1])):\n    print('held', flush=True)\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=f"pid {proc.pid}"):
            predict_volume(run, str(cell), out, **OPTS)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists()
    with pytest.raises(UserError, match="--axes"):
        predict_volume(run, str(cell), out, axes="xw", **OPTS)
    assert not out.exists() and not sibling_lock_file(out).exists()


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


def test_reopened_output_equals_2d_predict_of_each_section_file(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """The volume's label image, reopened as a viewer reads it (ome_zarr's reader), equals `dspseg predict`
    of each section written as its own 16-bit TIFF (engine/predict.py, the 2D path)."""
    import warnings

    import tifffile
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from dspseg.engine.predict import predict_files

    run, cell = setup
    out = tmp_path / "seg.ome.zarr"
    predict_volume(run, str(cell), out, **OPTS)
    sections = tmp_path / "sections"
    sections.mkdir()
    for z, section in enumerate(volume_data("uint16")):
        tifffile.imwrite(sections / f"z{z:02d}.tif", section)
    predict_files(run, [sections], tmp_path / "labels2d", tile=32)
    expected = np.stack([tifffile.imread(tmp_path / "labels2d" / f"z{z:02d}.tif") for z in range(SHAPE[0])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        (node,) = list(Reader(parse_url(str(out / "labels" / "segmentation")))())
    assert [type(s).__name__ for s in node.specs] == ["Label", "Multiscales"]
    assert [tuple(d.shape) for d in node.data] == [SHAPE, (5, 24, 20)]
    assert node.metadata["coordinateTransformations"][0] == [{"type": "scale", "scale": list(SCALE)},
                                                            {"type": "translation", "translation": list(TRANSLATION)}]
    assert np.array_equal(np.asarray(node.data[0]), expected)
    assert len(np.unique(expected)) > 1  # the comparison is not between two blank images


def _blocks_done(out: Path, level: int) -> list[Path]:
    folder = out / DONE / f"s{level}"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_resume_after_sigkill_gives_the_uninterrupted_output(setup: tuple[Path, Path], tmp_path: Path) -> None:
    """`dspseg predict` killed with SIGKILL part-way, then run again with the same command, writes the
    voxels of an uninterrupted run on every level; blocks without a marker are redone (a block
    scribbled on with no marker, and a finished one whose marker is removed)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run, cell = setup
    opts = {"tile": 32, "block": (1, 16, 40), "levels": 2}  # 30 + 10 blocks: the kill lands part-way
    whole = tmp_path / "whole.ome.zarr"
    total = predict_volume(run, str(cell), whole, **opts)["computed"]
    out = tmp_path / "seg.ome.zarr"
    command = [str(Path(sys.executable).with_name("dspseg")), "predict", str(run), str(cell), "--out", str(out),
               "--tile", "32", "--block", "1,16,40", "--levels", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the threads of this test process (conftest): same sums
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_blocks_done(out, 0)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    finished = _blocks_done(out, 0)
    assert 3 <= len(finished) < 30 and not _blocks_done(out, 1)  # killed part-way through level 0
    label = zarr.open_group(str(out), mode="r+")["labels/segmentation/s0"]

    def scribble(name: str) -> None:
        z, y, _ = (int(v) for v in name.split("_"))
        label[z:z + 1, y:y + 16, :] = 3

    scribble(next(f"{z}_0_0" for z in range(SHAPE[0]) if not (out / DONE / "s0" / f"{z}_0_0").exists()))
    scribble(finished[0].name)  # killed between a block's chunk and its marker: the chunk written, no marker
    finished[0].unlink()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{len(finished) - 1} kept from an earlier run" in again.stdout.replace("\n", " ")
    assert not (out / DONE).exists() and read_record(out)["complete"] is True  # finished: the markers removed
    for level in (0, 1):
        assert np.array_equal(_labels(out, level), _labels(whole, level)), level


def test_blocks_are_bitwise_the_same_in_any_order(setup: tuple[Path, Path]) -> None:
    """Ray workers take blocks in any order, each with its own kept tiles: every block's probabilities
    are still bit for bit those of one process going in C order (a tile always runs in the same batch)."""
    from dspseg.engine.volume_blocks import SectionPredictor, block_grid

    run, cell = setup
    loaded, vol = load_run(run), open_volume(str(cell))
    blocks = list(block_grid(SHAPE, (2, 16, 16)))  # tile 16 on 48 x 40 sections: tiles shared by blocks

    def predictor() -> SectionPredictor:
        return SectionPredictor(vol, loaded, tile=16, overlap=0.25, batch_size=4)

    one = predictor()
    ref = {lo: one.block(lo, hi, ["xy"]) for lo, hi in blocks}
    workers = [predictor(), predictor()]
    for i, (lo, hi) in enumerate(blocks[::-1]):  # backwards, alternating between two workers
        assert torch.equal(workers[i % 2].block(lo, hi, ["xy"]), ref[lo]), lo
