"""Volume-backed datasets (dataset.json dspseg/2): sections of a synthetic OME-Zarr volume with a mask
from the label volume, boxes, points and a range of unlabeled sections load, read lazily per crop
with bounded memory, validate, train and evaluate."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.data.dataset import SegmentationDataset
from dspseg.data.manifest import load_manifest, save_manifest
from dspseg.data.rasterise import rasterise
from dspseg.data.splits import image_class_sets
from dspseg.data.validate import validate_dataset
from dspseg.data.synthetic import SYNTH_CLASSES, write_synthetic_volume
from dspseg.data.volume_items import LazyItem
from dspseg.data.volumes import ChunkCache, open_volume
from dspseg.errors import ManifestError
from volume_files import volume_data, write_ngff, write_zarr3

IMAGE = {"url": "cell.ome.zarr"}
LABELS = {"url": "cell.ome.zarr", "array": "labels/organelles"}


@pytest.fixture(scope="module")
def volume_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voldata")
    write_synthetic_volume(root / "cell.ome.zarr", shape=(16, 64, 64), seed=1)
    return root


def _weak(labels: np.ndarray) -> tuple[list[dict], list[dict]]:
    """Boxes around all pixels of the two largest classes, and one point per present class."""
    ids, counts = np.unique(labels, return_counts=True)
    boxes = []
    for c in ids[np.argsort(counts)[-2:]]:
        ys, xs = np.nonzero(labels == c)
        boxes.append({"class": SYNTH_CLASSES[c], "xyxy": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]})
    points = []
    for c in ids:
        ys, xs = np.nonzero(labels == c)
        points.append({"class": SYNTH_CLASSES[c], "xy": [int(xs[len(xs) // 2]), int(ys[len(ys) // 2])]})
    return boxes, points


def _manifest(root: Path, **extra) -> dict:
    labels = open_volume({"url": str(root / "cell.ome.zarr"), "array": "labels/organelles"}, cache=ChunkCache())
    boxes, _ = _weak(labels.section("z", 2))
    _, points = _weak(labels.section("z", 5))
    masked = {"mask": {"volume": LABELS}}
    # blocks of 4 sections are the groups: train 0-7, val 8-11, test 12-15
    return {"format": "dspseg/2", "classes": SYNTH_CLASSES, "ignore_index": 255, "group_every": 4, **extra,
            "images": [
        {"volume": IMAGE, "axis": "z", "index": 1, "split": "train", **masked},
        {"volume": IMAGE, "axis": "z", "index": 2, "split": "train", "boxes": boxes},
        {"volume": IMAGE, "axis": "z", "index": 5, "split": "train", "points": points},
        {"volume": IMAGE, "axis": "z", "index": 9, "split": "val", **masked},
        {"volume": IMAGE, "axis": "z", "index": 13, "split": "test", **masked},
        {"volume": IMAGE, "axis": "z", "index": 14, "split": "test", **masked},
        {"volume": IMAGE, "sections": {"axis": "z", "stop": 8, "exclude": [0]}, "split": "train"}]}


@pytest.fixture(scope="module")
def data(volume_dir: Path) -> Path:
    (volume_dir / "dataset.json").write_text(json.dumps(_manifest(volume_dir)))
    return volume_dir


def test_a_range_is_one_entry_expanded_on_load_and_collapsed_on_save(data: Path, tmp_path: Path) -> None:
    m = load_manifest(data)
    unlabeled = [r.index for r in m.images if r.annotation_type == "none"]
    assert unlabeled == [3, 4, 6, 7]  # 0..7 but the excluded 0 and the annotated 1, 2 and 5
    assert len({r.group_name for r in m.images}) == 4  # blocks of group_every = 4 sections
    out = m.to_json()
    assert out["format"] == "dspseg/2" and len(out["images"]) == 7
    assert out["images"][-1]["sections"] == {"axis": "z", "start": 3, "stop": 8, "exclude": [5]}
    m.images[-1].split = "val"  # the last section moves: the entry splits in two
    save_manifest(m, data / "copy.json")
    again = json.loads((data / "copy.json").read_text())
    assert [e.get("sections", {}).get("stop") for e in again["images"][-2:]] == [7, 8]
    assert [r.index for r in load_manifest(data / "copy.json").images if r.split == "val"] == [9, 7]


def test_groups_default_to_the_volume_or_blocks_of_it(volume_dir: Path) -> None:
    (volume_dir / "blocks.json").write_text(json.dumps(_manifest(volume_dir, group_every=8)))
    groups = {r.index: r.group_name for r in load_manifest(volume_dir / "blocks.json").images}
    assert groups[1] == groups[7] != groups[9] == groups[14]
    (volume_dir / "whole.json").write_text(json.dumps(_manifest(volume_dir, group_every=None)))
    assert len({r.group_name for r in load_manifest(volume_dir / "whole.json").images}) == 1


def test_old_files_still_load_as_dspseg_1(tmp_path: Path) -> None:
    raw = {"format": "dspseg/1", "classes": ["a", "b"], "images": [{"file": "a.tif", "labels": ["a"]}]}
    (tmp_path / "dataset.json").write_text(json.dumps(raw))
    m = load_manifest(tmp_path)
    assert m.to_json()["format"] == "dspseg/1" and m.images[0].group_name == "a.tif"


def test_lazy_crops_match_the_whole_section_and_hold_no_volume(data: Path) -> None:
    m = load_manifest(data)
    cache = ChunkCache(max_bytes=64 << 10)
    ds = SegmentationDataset(m, "train", crop_size=32, cache=cache)
    assert all(isinstance(it, LazyItem) for it in ds.items) and ds.in_channels == 1
    assert ds.kinds() == ["mask", "box", "point", "none", "none", "none", "none"]
    for i in range(len(ds)):
        item = ds[(i, 7)]
        assert item["image"].shape == (1, 32, 32) and item["allowed"].shape == (len(SYNTH_CLASSES), 32, 32)
        assert cache.bytes <= cache.max_bytes
    arrays = [v for v in vars(ds).values() if isinstance(v, np.ndarray)]
    arrays += [v for it in ds.items for v in vars(it).values() if isinstance(v, np.ndarray)]
    assert not any(a.size > 32 * 32 for a in arrays)
    # the boxed section's crop has the allowed map of the whole section, cut
    rec = ds.records[1][1]
    labels = open_volume({"url": str(data / "cell.ome.zarr"), "array": "labels/organelles"}, cache=ChunkCache())
    whole = rasterise(rec, SYNTH_CLASSES, 255, (64, 64))
    crop = ds.window(1, 10, 20, 32, 32)
    assert np.array_equal(crop["allowed"], whole.allowed[:, 10:42, 20:52])
    masked = ds.window(0, 32, 0, 32, 32)
    assert np.array_equal(masked["target"], labels.section("z", 1)[32:, :32])


def test_validate_train_and_evaluate_a_volume_dataset(data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["validate", str(data)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", str(data), "--out", str(out), "--steps", "2", "--width", "4", "--batch-size", "4",
                            "--set", "levels=3", "--set", "crop_size=32", "--set", "log_every=1"])
    assert r.exit_code == 0, r.output
    assert "step 2/2" in r.output and (out / "checkpoints/best.pt").is_file()
    r = runner.invoke(app, ["evaluate", str(out), str(data), "--split", "test"])
    assert r.exit_code == 0, r.output
    assert "dice" in r.output.lower()


@pytest.mark.parametrize("change, field, words", [
    ({"volume": {"url": "../cell.ome.zarr"}}, "volume.url", "outside"),
    ({"volume": {"url": "missing.zarr"}}, "volume", "missing.zarr"),
    ({"sections": {"axis": "z", "start": 40}}, "sections.start", "16 sections"),
    ({"sections": {"axis": "z", "stop": 17}}, "sections.stop", "16 sections"),
    ({"sections": {"axis": "z", "start": 0, "stop": 1, "exclude": [0]}}, "sections", "no section"),
    ({"file": "a.tif"}, "file", "not both"),
    ({"sections": None, "labels": []}, "index", "either 'index'"),
])
def test_bad_range_entries_get_one_sentence(volume_dir: Path, change: dict, field: str, words: str) -> None:
    raw = _manifest(volume_dir)
    entry = {**raw["images"][-1], **change}
    raw["images"][-1] = {k: v for k, v in entry.items() if v is not None}
    (volume_dir / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError) as err:
        load_manifest(volume_dir / "bad.json")
    (p,) = err.value.problems
    assert p.field.startswith(field) and words in str(p) and p.fix and str(p).count("\n") == 0


def test_splits_read_a_label_volume_mask_section(data: Path) -> None:
    sets = image_class_sets(load_manifest(data))
    labels = open_volume({"url": str(data / "cell.ome.zarr"), "array": "labels/organelles"}, cache=ChunkCache())
    assert sets[0] == frozenset(np.unique(labels.section("z", 1)).tolist()) and sets[-1] == frozenset()


def test_a_pickled_dataset_reopens_its_volumes(data: Path) -> None:
    """DataLoader workers get a copy without open handles and reopen on their first read."""
    ds = SegmentationDataset(load_manifest(data), "train", crop_size=32, cache=ChunkCache(1 << 20))
    ds[0]
    assert ds.reader._volumes
    copy = pickle.loads(pickle.dumps(ds))
    assert not copy.reader._volumes and copy.reader.cache.max_bytes == 1 << 20
    assert np.array_equal(copy[(1, 3)]["allowed"].numpy(), ds[(1, 3)]["allowed"].numpy())


def _validate_problems(root: Path, name: str, raw: dict) -> list:
    (root / name).write_text(json.dumps(raw))
    return [p for p in validate_dataset(root / name).problems if p.severity == "error"]


@pytest.mark.parametrize("change, field, words", [
    ({"index": 16}, "index", "outside the 16 sections"),
    ({"volume": {"url": "cell.ome.zarr", "array": "nope"}}, "volume", "nope"),
    ({"volume": {"url": "../elsewhere.zarr"}}, "volume.url", "leaves the dataset folder"),
    ({"mask": {"volume": {"url": "cell.ome.zarr", "array": "labels/organelles", "level": 1}}}, "mask.volume",
     "label volume is 8 x 32 x 32"),
])
def test_validate_names_every_bad_volume_reference(volume_dir: Path, change: dict, field: str, words: str) -> None:
    raw = _manifest(volume_dir)
    raw["images"][0] = {**raw["images"][0], **change}
    (p,) = _validate_problems(volume_dir, "badref.json", raw)
    assert p.field.startswith(field) and words in str(p) and p.fix and "\n" not in str(p), str(p)


@pytest.mark.parametrize("change, field, words, fix", [
    ({"axis": "w"}, "axis", "'z', 'y' or 'x'", "use 'z', 'y' or 'x'"),
    ({"volume": {"url": "cell.ome.zarr", "axes": "zxy"}}, "volume.axes", "axes are 'zyx', not 'zxy'", "set axes"),
    ({"volume": {"url": "cell.ome.zarr", "region": {"start": [0, 0, 0], "stop": [4, 80, 8]}}}, "volume.region",
     "does not fit the array's 16 x 64 x 64", "keep stop"),
    ({"volume": {"url": "gs://bucket/cell.zarr"}}, "volume.url", "needs the package 'gcsfs'", "pip install gcsfs"),
    ({"volume": {"url": "https://127.0.0.1:1/cell.zarr"}}, "volume.url", "cannot read it", "check the URL"),
    ({"volume": {"url": "ftp://host/cell.zarr"}}, "volume.url", "ftp:// URL, which dspseg does not read", "write a path"),
    ({"mask": {"volume": LABELS, "classes": {"mito": [4]}}}, "mask.classes.mito", "not one of the dataset's classes",
     "use one of extracellular"),
    ({"mask": {"volume": LABELS, "classes": {"er": [4], "golgi": [4]}}}, "mask.classes.golgi",
     "listed for both 'er' and 'golgi'", "list each stored value"),
])
def test_validate_names_the_file_field_and_fix_of_more_bad_references(volume_dir: Path, monkeypatch, change: dict,
                                                                      field: str, words: str, fix: str) -> None:
    """Unknown axis, axes or region that do not fit, a URL scheme whose package is missing (gcsfs made
    unimportable), a URL that does not answer (a closed local port), one dspseg does not read, label
    classes the dataset lacks: each one sentence, never a crash."""
    monkeypatch.setitem(__import__("sys").modules, "gcsfs", None)
    raw = _manifest(volume_dir)
    raw["images"][0] = {**raw["images"][0], **change}
    (p,) = _validate_problems(volume_dir, "badref2.json", raw)
    assert p.field == field and words in p.message and p.fix.startswith(fix) and p.file and "\n" not in str(p), str(p)


def test_validate_names_a_label_volume_that_stops_answering(volume_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """A chunk read that fails (a connection reset by a remote store) is one sentence on the record's
    mask, not a crash or "a bug in dspseg"."""
    import shutil

    from dspseg.data.volumes.zarrs import ZarrVolume

    shutil.copytree(volume_dir / "cell.ome.zarr", tmp_path / "cell.ome.zarr")  # chunks not in the shared cache
    load = ZarrVolume._load

    def flaky(self, index):
        if "labels" in (self.ref.array or ""):
            raise ConnectionResetError("Connection reset by peer")
        return load(self, index)

    monkeypatch.setattr(ZarrVolume, "_load", flaky)
    raw = {"format": "dspseg/2", "classes": SYNTH_CLASSES, "images": [
        {"volume": IMAGE, "index": 3, "mask": {"volume": LABELS}}]}
    (p,) = _validate_problems(tmp_path, "dataset.json", raw)
    assert p.field == "mask.volume.url"
    assert "section 3, chunk (0, 0, 0): cannot read it (ConnectionResetError" in p.message
    assert p.fix.startswith("check the path") and "bug" not in str(p)


def test_a_label_volume_keeps_its_own_ids_through_classes(volume_dir: Path) -> None:
    """``mask.classes`` maps stored label values to classes; every other value is unannotated."""
    labels = open_volume({"url": str(volume_dir / "cell.ome.zarr"), "array": "labels/organelles"}, cache=ChunkCache())
    stored = labels.section("z", 3)
    raw = {"format": "dspseg/2", "classes": ["cell", "mito"], "images": [
        {"volume": IMAGE, "index": 3, "mask": {"volume": LABELS, "classes": {"cell": [1, 2], "mito": [4]}}}]}
    assert _validate_problems(volume_dir, "mapped.json", raw) == []
    m = load_manifest(volume_dir / "mapped.json")
    expect = np.select([np.isin(stored, [1, 2]), stored == 4], [0, 1], 255)
    ds = SegmentationDataset(m, "train", crop_size=32, cache=ChunkCache(1 << 20))
    assert np.array_equal(ds.window(0, 8, 16, 32, 32)["target"], expect[8:40, 16:48])


def test_validate_refuses_a_label_volume_of_another_voxel_size(tmp_path: Path) -> None:
    data = volume_data("uint8")
    write_ngff(tmp_path / "img.zarr", data)  # voxel size (8, 4, 4)
    write_zarr3(tmp_path / "lab.zarr", (data % 2).astype(np.uint8))  # same shape, voxel size 1
    raw = {"format": "dspseg/2", "classes": ["a", "b"], "images": [
        {"volume": {"url": "img.zarr", "level": 0}, "index": 3, "mask": {"volume": {"url": "lab.zarr"}}}]}
    (p,) = _validate_problems(tmp_path, "dataset.json", raw)
    assert p.field == "mask.volume" and "voxel size" in p.message and "level" in p.fix


def test_a_section_with_a_2d_mask_file(volume_dir: Path) -> None:
    import tifffile

    labels = open_volume({"url": str(volume_dir / "cell.ome.zarr"), "array": "labels/organelles"}, cache=ChunkCache())
    mask = labels.section("z", 6).astype(np.uint8)
    mask[:8] = 255  # unannotated rows
    tifffile.imwrite(volume_dir / "z006.tif", mask)
    raw = {"format": "dspseg/2", "classes": SYNTH_CLASSES, "images": [
        {"volume": IMAGE, "index": 6, "mask": "z006.tif"}]}
    assert _validate_problems(volume_dir, "filemask.json", raw) == []
    ds = SegmentationDataset(load_manifest(volume_dir / "filemask.json"), "train", crop_size=32, cache=ChunkCache(1 << 20))
    assert np.array_equal(ds.window(0, 0, 16, 32, 32)["target"].astype(np.uint8), mask[:32, 16:48])
