"""Volume records through the dataset commands: ``simulate`` (ACR reduction), ``split`` and the summary.

A fully masked synthetic volume dataset (16 sections of a 64 x 64 OME-Zarr volume, masks from its
label volume, groups of 4 sections) is reduced as the paper's protocol reduces files: the reduced
records stay volume records (no TIFF copy), their boxes, points and labels come from the section's
mask read from the label volume one section at a time, blocks of sections never straddle train and
test, a local volume is hard-linked and a URL volume is named as it is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.data.acr import simulate_dataset
from dspseg.data.manifest import load_manifest
from dspseg.data.synthetic import SYNTH_CLASSES, write_synthetic_volume
from dspseg.data.validate import validate_dataset
from dspseg.data.volumes import ChunkCache, open_volume
from dspseg.data.volumes.base import Volume
from dspseg.data.weak import derive_weak_labels

LABELS = {"url": "cell.ome.zarr", "array": "labels/organelles"}


def _write(root: Path, url: str = "cell.ome.zarr") -> Path:
    image, labels = {"url": url}, {**LABELS, "url": url}
    records = [{"volume": image, "axis": "z", "index": k, "mask": {"volume": labels}} for k in range(16)]
    raw = {"format": "dspseg/2", "name": "cell", "classes": SYNTH_CLASSES, "ignore_index": 255, "group_every": 4,
           "images": records}
    (root / "dataset.json").write_text(json.dumps(raw))
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("volacr") / "cell"
    write_synthetic_volume(root / "cell.ome.zarr", shape=(16, 64, 64), seed=1)
    return _write(root)


def _sections(root: Path) -> np.ndarray:
    return open_volume({"url": str(root / "cell.ome.zarr"), "array": "labels/organelles"}, cache=ChunkCache())


def test_simulate_writes_volume_records_with_weak_labels_from_one_section_at_a_time(data, tmp_path, monkeypatch):
    depths = []
    read = Volume.read

    def counted(self, start, stop):  # every read the reduction makes, as (sections along z it spans)
        depths.append(stop[self.axes.index("z")] - start[self.axes.index("z")])
        return read(self, start, stop)

    monkeypatch.setattr(Volume, "read", counted)
    out = tmp_path / "acr4"
    res = simulate_dataset(data, out, acr=4, scenario="mixed", split=0, n_splits=3)
    assert depths and max(depths) == 1  # the label volume is read a section at a time, never whole
    assert res.counts == {"mask": 2, "box": 2, "point": 2, "image": 1, "none": 1}
    assert sorted(p.name for p in out.iterdir()) == ["cell.ome.zarr", "dataset.json", "simulation.json"]
    assert not list(out.rglob("*.tif"))  # volume records, not TIFF copies
    source_file = data / "cell.ome.zarr" / "zarr.json"
    assert os.stat(out / "cell.ome.zarr" / "zarr.json").st_ino == os.stat(source_file).st_ino  # hard link
    raw = json.loads((out / "dataset.json").read_text())
    assert raw["format"] == "dspseg/2" and raw["group_every"] == 4
    m = load_manifest(out)
    assert all(r.volume is not None and r.axis == "z" for r in m.images)
    labels = _sections(data)
    for i, rec in enumerate(m.images):
        if rec.annotation_type in ("box", "point", "image"):
            weak = derive_weak_labels(labels.section("z", rec.index).astype(np.int64), SYNTH_CLASSES, 255,
                                      rng=np.random.default_rng([0, i]))
            got = {"box": rec.boxes, "point": rec.points, "image": rec.labels}[rec.annotation_type]
            assert got == {"box": weak.boxes, "point": weak.points, "image": weak.labels}[rec.annotation_type]
    parts: dict[str, set[str]] = {}
    for rec in m.images:
        parts.setdefault(rec.group_name, set()).add(rec.split)
    assert len(parts) == 4 and all(len(p) == 1 for p in parts.values())  # blocks of 4 sections never cut
    info = json.loads((out / "simulation.json").read_text())
    assert info["train_order"][0]["file"].startswith("cell.ome.zarr z=")
    assert validate_dataset(out).ok
    again = simulate_dataset(data, out, acr=2, scenario="box", split=0, n_splits=3)  # replaces its own folder
    assert again.counts["box"] == 4 and load_manifest(out).images[0].volume.url == "cell.ome.zarr"


def test_simulate_names_a_url_volume_as_it_is(data, tmp_path):
    fs = fsspec.filesystem("memory")
    fs.put(str(data / "cell.ome.zarr"), "/volacr/cell.ome.zarr", recursive=True)
    root = tmp_path / "remote"
    root.mkdir()
    _write(root, "memory://volacr/cell.ome.zarr")
    out = tmp_path / "acr8"
    simulate_dataset(root, out, acr=8, scenario="point", split=1, n_splits=2)
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "simulation.json"]  # nothing to link
    m = load_manifest(out)
    assert {r.volume.url for r in m.images} == {"memory://volacr/cell.ome.zarr"}
    assert sum(r.annotation_type == "point" for r in m.images) > 0


def test_split_and_the_summary_of_a_volume_dataset(data, tmp_path):
    target = tmp_path / "split"
    shutil.copytree(data, target)
    runner = CliRunner()
    r = runner.invoke(app, ["split", str(target), "--n-splits", "2", "--split", "1"])
    assert r.exit_code == 0, r.output
    m = load_manifest(target)
    assert json.loads((target / "dataset.json").read_text())["group_every"] == 4
    parts: dict[str, set[str]] = {}
    for rec in m.images:
        parts.setdefault(rec.group_name, set()).add(rec.split)
    assert all(len(p) == 1 for p in parts.values()) and {"train", "test"} <= {s for p in parts.values() for s in p}
    summary = validate_dataset(target).summary  # the dataset statistics validate prints
    assert summary.n_images == 16 and summary.groups == 4 and summary.per_type["mask"] == 16
    assert summary.sizes == {(64, 64): 16} and sum(summary.splits.values()) == 16
    assert summary.class_pixels["cytosol"] > 0 and summary.class_images["cytosol"] == 16


def test_convert_into_a_volume_dataset_keeps_its_volume_records(data, tmp_path):
    """2D annotations added with ``convert --into`` sit beside the volume sections, which stay as they
    are (never matched by a file), and the dataset keeps its ``group_every``."""
    import tifffile

    target = tmp_path / "into"
    shutil.copytree(data, target)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "labs").mkdir()
    tifffile.imwrite(tmp_path / "imgs" / "extra.tif", np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    tifffile.imwrite(tmp_path / "labs" / "extra.tif", (np.arange(32 * 32) % 2).astype(np.uint8).reshape(32, 32))
    r = CliRunner().invoke(app, ["convert", "labels", str(tmp_path / "labs"), "--images", str(tmp_path / "imgs"),
                                 "--classes", "extracellular,cytosol", "--into", str(target)])
    assert r.exit_code == 0, r.output
    raw = json.loads((target / "dataset.json").read_text())
    assert raw["format"] == "dspseg/2" and raw["group_every"] == 4 and len(raw["images"]) == 17
    assert raw["images"][:16] == json.loads((data / "dataset.json").read_text())["images"]
    assert len({r.group_name for r in load_manifest(target).images}) == 5  # 4 blocks + the new file


def test_split_of_a_range_in_the_middle_of_the_file_splits_its_sections_by_block(tmp_path):
    """A ``sections`` range expands into one record per section: the records after it are not entry k,
    and a range spanning blocks that land in different parts is written back as one range per part."""
    target = tmp_path / "ranged"
    write_synthetic_volume(target / "cell.ome.zarr", shape=(32, 64, 64), seed=2)
    _write(target)
    raw = json.loads((target / "dataset.json").read_text())
    masked = [{**r, "index": k} for k in range(32) if k % 4 != 3 for r in raw["images"][:1]]
    ranged = {"volume": {"url": "cell.ome.zarr", "level": 0}, "sections": {"axis": "z"}}  # every other section
    raw["images"] = masked[:5] + [ranged] + masked[5:]
    (target / "dataset.json").write_text(json.dumps(raw))
    before = load_manifest(target)
    assert len(before.images) == 32  # 24 masked + 8 unlabeled: 'level': 0 and no level name the same volume
    r = CliRunner().invoke(app, ["split", str(target), "--n-splits", "2", "--split", "0"])
    assert r.exit_code == 0, r.output
    after = load_manifest(target)
    assert sorted((x.index, x.mask is not None) for x in after.images) == sorted(
        (x.index, x.mask is not None) for x in before.images)
    parts: dict[str, set[str]] = {}
    for rec in after.images:
        parts.setdefault(rec.group_name, set()).add(rec.split)
    assert all(len(p) == 1 for p in parts.values()), parts  # no block cut across parts
    assert {"train", "test"} <= {s for p in parts.values() for s in p}
    ranges = [e for e in json.loads((target / "dataset.json").read_text())["images"] if "sections" in e]
    assert len({e["split"] for e in ranges}) >= 2 and all(e["volume"]["level"] == 0 for e in ranges)
    assert CliRunner().invoke(app, ["validate", str(target)]).exit_code == 0
