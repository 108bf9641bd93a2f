"""OpenOrganelle import against a local zarr v2 / OME-NGFF 0.4 store written by hand in the public layout.

The store (see :func:`write_store`) has a raw volume at 6 x 4 x 4 nm (s0) plus a decoy 12 x 8 x 8 nm
level (s1); ground truth at 3 x 2 x 2 nm (s0) and 6 x 4 x 4 nm (s1), so only label s1 matches a raw
level. Crops sit at known raw-voxel offsets, given to the store only as nanometre translations. Raw
voxels carry a position code, and a bright marker block sits exactly under crop1's mitochondrion.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

import zarr  # noqa: F401,E402  (the openorganelle extra is part of [dev]: missing = failure)

from dspseg.data import openorganelle as oo  # noqa: E402
from dspseg.data.cosem_classes import CLASSES, COSEM_LABELS, MERGE  # noqa: E402
from dspseg.data.manifest import load_manifest  # noqa: E402
from dspseg.data.validate import validate_dataset  # noqa: E402
from dspseg.io_commands import import_app  # noqa: E402

DS = "jrc_hela-2"
RAW_SCALE = np.array([6.0, 4.0, 4.0])  # z, y, x nm
MARKER = 250
# crop name -> (offset in raw s0 voxels, shape at label s1 = raw s0 resolution)
CROPS = {"crop1": ((1, 3, 2), (3, 16, 20)), "crop2": ((3, 6, 10), (2, 16, 16)), "crop3": ((4, 12, 14), (2, 12, 14))}


def write_array(path: Path, data: np.ndarray, chunks: tuple[int, ...], compress: bool, sep: str) -> None:
    """A zarr v2 array: .zarray + C-order chunks (zlib-compressed or raw), keys joined by ``sep``."""
    path.mkdir(parents=True)
    meta = {"zarr_format": 2, "shape": list(data.shape), "chunks": list(chunks), "dtype": data.dtype.str,
            "compressor": {"id": "zlib", "level": 1} if compress else None, "fill_value": 0, "order": "C",
            "filters": None, "dimension_separator": sep}
    (path / ".zarray").write_text(json.dumps(meta))
    grid = [math.ceil(s / c) for s, c in zip(data.shape, chunks)]
    for idx in np.ndindex(*grid):
        block = np.zeros(chunks, data.dtype)
        part = data[tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks))]
        block[tuple(slice(0, n) for n in part.shape)] = part
        raw = block.tobytes(order="C")
        key = path / sep.join(map(str, idx))
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(zlib.compress(raw, 1) if compress else raw)


def write_group(path: Path, levels: list[tuple[str, list[float], list[float]]] | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    if levels is not None:
        axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
        datasets = [{"path": p, "coordinateTransformations": [{"type": "scale", "scale": s},
                                                              {"type": "translation", "translation": t}]}
                    for p, s, t in levels]
        (path / ".zattrs").write_text(json.dumps({"multiscales": [{"version": "0.4", "name": path.name,
                                                                   "axes": axes, "datasets": datasets}]}))


def raw_volume() -> np.ndarray:
    z, y, x = np.mgrid[:6, :24, :28]
    raw = (20 + (7 * z + 5 * y + 3 * x) % 200).astype(np.uint8)  # a position code
    raw[1:4, 5:9, 5:11] = MARKER  # exactly under crop1's mito block (offset (1, 3, 2) + [:, 2:6, 3:9])
    return raw


def crop_ids() -> dict[str, np.ndarray]:
    """Atomic COSEM ids at label s1 (= raw s0 resolution), z y x."""
    out = {}
    c1 = np.full(CROPS["crop1"][1], 35, np.uint8)  # cytosol
    c1[:, 2:6, 3:9] = 3        # mito_mem
    c1[:, 10:13, 2:5] = 16     # er_mem (er only in 2 crops -> ignored)
    c1[:, 12:16, 12:20] = 24   # heterochromatin -> nucleus
    c1[0, 0:2, :] = 0          # not annotated
    c1[2, 8:10, 15:18] = 61    # actin -> not mapped
    out["crop1"] = c1
    c2 = np.full(CROPS["crop2"][1], 35, np.uint8)
    c2[:, 4:8, 4:8] = 4        # mito_lum
    c2[:, 0:3, 10:14] = 19     # eres_lum -> er
    c2[:, 10:16, 0:6] = 28     # nucleoplasm -> nucleus
    c2[:, 12:16, 12:16] = 1    # ecs, in one crop only -> ignored
    out["crop2"] = c2
    c3 = np.full(CROPS["crop3"][1], 35, np.uint8)
    c3[:, 1:4, 1:5] = 5        # mito_ribo -> mito
    c3[:, 6:9, 6:12] = 20      # nuclear envelope membrane -> nucleus
    out["crop3"] = c3
    return out


def write_store(root: Path) -> Path:
    """``root/jrc_hela-2/jrc_hela-2.zarr/recon-1/...`` in the public layout; returns ``root``."""
    z = root / DS / f"{DS}.zarr"
    write_group(z)
    write_group(z / "recon-1")
    write_group(z / "recon-1" / "em")
    em = z / "recon-1" / "em" / "fibsem-uint8"
    write_group(em, [("s0", RAW_SCALE.tolist(), [0.0, 0.0, 0.0]),
                     ("s1", (2 * RAW_SCALE).tolist(), (RAW_SCALE / 2).tolist())])
    raw = raw_volume()
    write_array(em / "s0", raw, (4, 8, 8), compress=True, sep="/")
    write_array(em / "s1", raw[::2, ::2, ::2].copy(), (4, 8, 8), compress=False, sep=".")
    gt = z / "recon-1" / "labels" / "groundtruth"
    write_group(z / "recon-1" / "labels")
    write_group(gt)
    for name, ids in crop_ids().items():
        offset, _ = CROPS[name]
        t1 = np.asarray(offset) * RAW_SCALE            # label s1 voxel centres on raw s0 voxel centres
        t0 = t1 - RAW_SCALE / 4                         # label s0: half the voxel size, same outer edge
        levels = [("s0", (RAW_SCALE / 2).tolist(), t0.tolist()), ("s1", RAW_SCALE.tolist(), t1.tolist())]
        up = ids.repeat(2, 0).repeat(2, 1).repeat(2, 2)
        write_group(gt / name)
        write_group(gt / name / "all", levels)
        write_array(gt / name / "all" / "s0", up, (8, 16, 16), compress=True, sep="/")
        write_array(gt / name / "all" / "s1", ids, (8, 16, 16), compress=True, sep="/")
        write_group(gt / name / "mito", levels)  # per-class arrays exist in the layout; the importer uses 'all'
        write_array(gt / name / "mito" / "s1", np.isin(ids, (3, 4, 5)).astype(np.uint8), (8, 8, 8), False, "/")
    write_group(gt / "crop4")  # a crop without 'all': skipped with a warning
    write_group(gt / "crop4" / "mito", [("s0", RAW_SCALE.tolist(), [0.0, 0.0, 0.0])])
    write_array(gt / "crop4" / "mito" / "s0", np.ones((2, 4, 4), np.uint8), (2, 4, 4), False, "/")
    return root


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, oo.ImportResult]:
    root = tmp_path_factory.mktemp("oo")
    source = write_store(root / "src")
    result = oo.import_openorganelle(DS, root / "data", source=str(source))
    return root / "data", result


def test_class_merging_rare_classes_and_groups(imported) -> None:
    data, result = imported
    m = load_manifest(data)
    assert m.classes == ["cytosol", "mito", "nucleus"]  # er (2 crops) and ecs (1 crop) are rare
    assert result.dropped == {"ecs": 1, "er": 2}
    assert m.ignore_index == 255
    assert len(m.images) == 3 + 2 + 2
    assert [r.group for r in m.images] == ["crop1"] * 3 + ["crop2"] * 2 + ["crop3"] * 2
    assert any("crop4" in w and "'all'" in w for w in result.warnings)
    expect = {35: 0, 3: 1, 4: 1, 5: 1, 24: 2, 28: 2, 20: 2, 16: 255, 19: 255, 1: 255, 0: 255, 61: 255}
    for name, ids in crop_ids().items():
        for k in range(ids.shape[0]):
            mask = tifffile.imread(data / "masks" / f"{name}_z{k:04d}.tif")
            assert mask.shape == ids.shape[1:]
            assert np.array_equal(mask, np.vectorize(expect.get)(ids[k]))


def test_raw_alignment_by_nanometre_translation(imported) -> None:
    data, result = imported
    raw = raw_volume()
    for name, (offset, shape) in CROPS.items():
        (z0, y0, x0), (_, h, w) = offset, shape
        for k in range(shape[0]):
            image = tifffile.imread(data / "images" / f"{name}_z{k:04d}.tif")
            assert image.dtype == np.uint8 and image.shape == (h, w)  # non-square, label s1 = raw s0
            assert np.array_equal(image, raw[z0 + k, y0:y0 + h, x0:x0 + w])
    info = {c.name: c for c in result.crops}
    assert info["crop1"].raw_level == "s0" and info["crop1"].label_level == "s1"
    assert info["crop1"].offset == (1, 3, 2) and info["crop1"].scale_nm == (6.0, 4.0, 4.0)
    # the bright marker placed at crop1's mitochondrion in nm lands exactly under its mito pixels
    for k in range(3):
        image = tifffile.imread(data / "images" / f"crop1_z{k:04d}.tif")
        mask = tifffile.imread(data / "masks" / f"crop1_z{k:04d}.tif")
        assert np.array_equal(image == MARKER, mask == 1)


def test_validate_accepts_the_import(imported) -> None:
    data, _ = imported
    report = validate_dataset(data)
    assert report.ok, [str(p) for p in report.problems]
    prov = json.loads((data / "openorganelle.json").read_text())
    assert prov["crops_per_class"]["mito"] == 3 and prov["dropped_rare_classes"] == {"ecs": 1, "er": 2}


def test_options_and_errors(tmp_path: Path, monkeypatch) -> None:
    source = write_store(tmp_path / "src")
    res = oo.import_openorganelle(DS, tmp_path / "one", source=str(source), crops=["1", "crop3"], min_crops=2,
                                  z_step=2)
    assert [c.name for c in res.crops] == ["crop1", "crop3"] and res.manifest.classes == ["cytosol", "mito", "nucleus"]
    assert [r.file for r in res.manifest.images] == ["images/crop1_z0000.tif", "images/crop1_z0002.tif",
                                                     "images/crop3_z0000.tif"]
    with pytest.raises(oo.OpenOrganelleError, match="jrc_hela-2, jrc_hela-3, jrc_jurkat-1, jrc_macrophage-2"):
        oo.import_openorganelle("jrc_hela-9", tmp_path / "x", source=str(source))
    with pytest.raises(oo.OpenOrganelleError, match="has no jrc_jurkat-1/jrc_jurkat-1.zarr"):
        oo.import_openorganelle("jrc_jurkat-1", tmp_path / "x", source=str(source))
    with pytest.raises(oo.OpenOrganelleError, match="exists and is not an empty folder"):
        oo.import_openorganelle(DS, tmp_path / "one", source=str(source))
    with pytest.raises(oo.OpenOrganelleError, match="there is no crop9"):
        oo.import_openorganelle(DS, tmp_path / "x", source=str(source), crops=["9"])
    with pytest.raises(oo.OpenOrganelleError, match="no class occurs in at least 4"):
        oo.import_openorganelle(DS, tmp_path / "x", source=str(source), min_crops=4)
    assert not (tmp_path / "x").exists()

    def offline(url: str, remote: bool):
        raise OSError("Could not connect to the endpoint URL")

    monkeypatch.setattr(oo, "_open_group", offline)
    with pytest.raises(oo.OpenOrganelleError) as err:
        oo.import_openorganelle(DS, tmp_path / "x", source="s3://janelia-cosem-datasets")
    msg = str(err.value)
    assert "cannot read s3://janelia-cosem-datasets/jrc_hela-2/jrc_hela-2.zarr" in msg
    assert "--source LOCAL" in msg and "\n" not in msg


def test_metadata_helpers() -> None:
    # NGFF 0.4 axes in any order, without their (optional) type; datasets finest first
    attrs = {"multiscales": [{"axes": [{"name": "x"}, {"name": "z"}, {"name": "y"}],
                              "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [4, 6, 4]}]},
                                           {"path": "s1", "coordinateTransformations": [
                                  {"type": "scale", "scale": [8, 12, 8]}, {"type": "translation", "translation": [2, 3, 2]}]}]}]}
    levels = oo.read_levels(attrs, "here")
    assert [lv.path for lv in levels] == ["s0", "s1"]
    assert levels[1].scale == (12.0, 8.0, 8.0) and levels[1].translation == (3.0, 2.0, 2.0)
    assert levels[0].order == (1, 2, 0)
    coarse_first = {"multiscales": [{**attrs["multiscales"][0], "datasets": attrs["multiscales"][0]["datasets"][::-1]}]}
    with pytest.raises(oo.OpenOrganelleError, match=r"here: Dataset 0 has a lower resolution.*field 'multiscales.datasets'"):
        oo.read_levels(coarse_first, "here")
    with pytest.raises(oo.OpenOrganelleError, match="expected the axes z, y, x"):
        oo.read_levels({"multiscales": [{"axes": ["c", "y", "x"], "datasets": [{"path": "s0"}]}]}, "here")
    with pytest.raises(oo.OpenOrganelleError, match="no OME-NGFF 'multiscales'"):
        oo.read_levels({}, "here")
    lut = oo.merge_lut()
    assert oo.apply_lut(np.array([0, 3, 4, 5, 50, 300, -1]), lut).tolist() == [255, 3, 3, 3, 3, 255, 255]
    assert len(CLASSES) == 17 and set(t for t in MERGE.values() if t) == set(CLASSES)
    assert [i for i, *_ in COSEM_LABELS] == list(range(1, 78))


def test_cli_help_explains_sources_and_class_map() -> None:
    result = CliRunner().invoke(import_app, ["openorganelle", "--help"], terminal_width=120)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for needle in ("s3://janelia-cosem-datasets", "LOCAL", "jrc_macrophage-2", "mito_mem(3)", "min-crops",
                   "ignore"):
        assert needle in text, needle


def test_cli_import_and_errors(tmp_path: Path) -> None:
    source = write_store(tmp_path / "src")
    runner = CliRunner()
    ok = runner.invoke(import_app, ["openorganelle", "--dataset", DS, "--source", str(source), "--out",
                                    str(tmp_path / "data")], terminal_width=200)
    assert ok.exit_code == 0, ok.output
    text = " ".join(ok.output.split())
    assert "wrote 7 images from 3 crops" in text and "ecs (1 crop), er (2 crops)" in text
    bad = runner.invoke(import_app, ["openorganelle", "--dataset", "hela", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown dataset 'hela'" in bad.output and "Traceback" not in bad.output


# --------------------------------------------------------------------------- --as-volumes: references, no copies


@pytest.fixture
def fake_s3(tmp_path: Path, monkeypatch) -> tuple[Path, list]:
    """``s3://BUCKET/KEY`` read from ``tmp_path/buckets/BUCKET/KEY`` through fsspec, as s3fs would serve
    it (same URLs, same layout; the network is never used). Returns the buckets folder and the list of
    the ``anon`` flags the filesystem was opened with."""
    import importlib

    from fsspec.implementations.local import LocalFileSystem

    buckets, opened = tmp_path / "buckets", []

    class LocalS3(LocalFileSystem):
        protocol = ("s3", "s3a")
        cachable = False

        def __init__(self, anon: bool = False, **kwargs):
            super().__init__()
            opened.append(anon)

        @classmethod
        def _strip_protocol(cls, path):
            path = str(path)
            if path.startswith(str(buckets)):
                return path.rstrip("/")
            return f"{buckets}/{path.split('://', 1)[-1]}".rstrip("/")

    monkeypatch.setitem(importlib.import_module("fsspec.registry")._registry, "s3", LocalS3)
    return buckets, opened


def _same_sections(volumes: Path, copies: Path) -> int:
    """Every volume record of ``volumes`` reads the pixels and mask of the TIFF import ``copies``
    (the same crops, z planes and classes); returns the number of sections compared."""
    from dspseg.data.volume_items import VolumeReader, record_mask

    m, c = load_manifest(volumes), load_manifest(copies)
    assert m.classes == c.classes and len(m.images) == len(c.images)
    reader = VolumeReader(m)
    for rec, copy in zip(m.images, c.images):
        assert rec.group == copy.group and copy.file.endswith(f"{rec.group}_z{rec.index:04d}.tif")
        image = reader.stored(rec, (0, 0, *reader.shape(rec)))[0]
        assert np.array_equal(image, tifffile.imread(c.path(copy.file)))
        assert np.array_equal(record_mask(m, rec, reader), tifffile.imread(c.path(copy.mask)))
    return len(m.images)


def test_as_volumes_references_the_bucket_without_copies(imported, fake_s3, tmp_path: Path) -> None:
    copies, _ = imported
    buckets, opened = fake_s3
    write_store(buckets / "janelia-cosem-datasets")
    out = tmp_path / "vol"
    result = oo.import_openorganelle(DS, out, source="s3://janelia-cosem-datasets", as_volumes=True)
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "openorganelle.json"]  # no images/, masks/
    raw = json.loads((out / "dataset.json").read_text())
    first = raw["images"][0]
    url = f"s3://janelia-cosem-datasets/{DS}/{DS}.zarr"
    assert raw["format"] == "dspseg/2" and first["volume"] == {
        "url": url, "array": "recon-1/em/fibsem-uint8", "level": "s0", "region": {"start": [1, 3, 2], "stop": [4, 19, 22]}}
    assert first["mask"]["volume"] == {"url": url, "array": "recon-1/labels/groundtruth/crop1/all", "level": "s1"}
    assert first["mask"]["classes"] == {"cytosol": [35], "mito": [3, 4, 5], "nucleus": [20, 24, 28]}
    assert (first["axis"], first["index"], first["group"]) == ("z", 0, "crop1")
    assert result.manifest.classes == ["cytosol", "mito", "nucleus"] and result.dropped == {"ecs": 1, "er": 2}
    assert _same_sections(out, copies) == 7
    report = validate_dataset(out)
    assert report.ok, [str(p) for p in report.problems]
    assert opened and all(opened)  # every read of the bucket anonymous


def test_as_volumes_with_a_local_copy_inside_the_dataset(imported, tmp_path: Path) -> None:
    """The user's way: a local copy of the bucket's layout in the dataset folder; import, validate, train."""
    copies, _ = imported
    data = tmp_path / "hela"
    write_store(data)
    runner = CliRunner()
    ok = runner.invoke(import_app, ["openorganelle", "--dataset", DS, "--source", str(data), "--out", str(data),
                                    "--as-volumes"], terminal_width=200)
    assert ok.exit_code == 0, ok.output
    assert "wrote 7 volume sections (references, no copies) from 3 crops" in " ".join(ok.output.split())
    assert json.loads((data / "dataset.json").read_text())["images"][0]["volume"]["url"] == f"{DS}/{DS}.zarr"
    assert not (data / "images").exists() and _same_sections(data, copies) == 7
    from dspseg.cli import app

    r = runner.invoke(app, ["validate", str(data)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "run"), "--steps", "1", "--width", "4",
                            "--batch-size", "2", "--set", "levels=2", "--set", "crop_size=16"])
    assert r.exit_code == 0, r.output
    again = runner.invoke(import_app, ["openorganelle", "--dataset", DS, "--source", str(data), "--out", str(data),
                                       "--as-volumes"])
    assert again.exit_code == 2 and "already holds dataset.json" in again.output


def test_as_volumes_refuses_a_local_source_outside_the_dataset(tmp_path: Path) -> None:
    source = write_store(tmp_path / "src")
    with pytest.raises(oo.OpenOrganelleError) as err:
        oo.import_openorganelle(DS, tmp_path / "data", source=str(source), as_volumes=True)
    msg = str(err.value)
    assert "is not inside --out" in msg and "--source DATA --out DATA" in msg and "\n" not in msg
    assert not (tmp_path / "data").exists()
