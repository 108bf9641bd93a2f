"""Converters: hand-written COCO, napari, QuPath and label-image files → manifest; x/y checked on non-square images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import typer
from typer.testing import CliRunner

from dspseg.data.convert import ConvertError, convert_dataset
from dspseg.data.io import write_image, write_mask
from dspseg.data.manifest import load_manifest
from dspseg.data.validate import validate_dataset
from dspseg.io_commands import convert

H, W = 40, 64  # non-square: x (column) runs to 63, y (row) to 39


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    write_image(d / "cell01.tif", rng.random((H, W)).astype(np.float32))
    write_image(d / "cell02.png", (rng.random((H, W)) * 255).astype(np.uint8))
    write_image(d / "cell03.tif", rng.random((48, 32)).astype(np.float32))
    return d


def records(data: Path) -> dict:
    m = load_manifest(data)
    out = {}
    for r in m.images:
        out[r.file] = {"boxes": sorted((b.cls, b.xyxy) for b in r.boxes or []),
                       "points": sorted((p.cls, p.xy) for p in r.points or []), "labels": r.labels, "mask": r.mask}
    return out


def check_valid(data: Path) -> None:
    report = validate_dataset(data)
    assert report.ok, [str(p) for p in report.problems]


def test_coco_boxes_points_tags(images: Path, tmp_path: Path) -> None:
    coco = {
        "images": [{"id": 1, "file_name": "cell01.tif", "width": W, "height": H},
                   {"id": 2, "file_name": "sub/cell02.png", "width": W, "height": H},
                   {"id": 3, "file_name": "cell03.tif", "width": 32, "height": 48}],
        "categories": [{"id": 3, "name": "nucleus"}, {"id": 1, "name": "mito"}, {"id": 2, "name": "er"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 10, 20, 8]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30.5, 20.2, 3.1, 4.0]},
            {"id": 3, "image_id": 1, "category_id": 2, "keypoints": [50, 30, 2, 7, 3, 0, 60.7, 35.2, 1]},
            {"id": 4, "image_id": 1, "category_id": 3, "bbox": [33, 12, 1, 1]},
            {"id": 5, "image_id": 2, "category_id": 3},
            {"id": 6, "image_id": 2, "category_id": 2, "bbox": [58, 0, 10, 5]},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    res = convert_dataset("coco", tmp_path / "ann.json", images, tmp_path / "data")
    assert res.manifest.classes == ["mito", "er", "nucleus"]  # category-id order
    assert res.linked
    got = records(tmp_path / "data")
    assert got["images/cell01.tif"] == {
        "boxes": [("mito", (5, 10, 25, 18)), ("mito", (30, 20, 34, 25))],
        "points": [("er", (50, 30)), ("er", (60, 35)), ("nucleus", (33, 12))], "labels": None, "mask": None}
    assert got["images/cell02.png"] == {"boxes": [("er", (58, 0, 64, 5))], "points": [],  # clipped at x = 64
                                        "labels": ["er", "nucleus"], "mask": None}
    assert got["images/cell03.tif"] == {"boxes": [], "points": [], "labels": None, "mask": None}  # unlabeled
    check_valid(tmp_path / "data")
    assert (tmp_path / "data" / "images" / "cell01.tif").read_bytes() == (images / "cell01.tif").read_bytes()

    coco["images"][0].update(width=H, height=W)
    (tmp_path / "bad.json").write_text(json.dumps(coco))
    with pytest.raises(ConvertError, match=r"images\[0\].*swapped"):
        convert_dataset("coco", tmp_path / "bad.json", images, tmp_path / "data2")
    with pytest.raises(ConvertError, match="class 'er' is not in --classes"):
        convert_dataset("coco", tmp_path / "ann.json", images, tmp_path / "data3", classes=["mito", "nucleus"])
    (tmp_path / "broken.json").write_text('{"images": [1,]}')
    with pytest.raises(ConvertError, match="line 1, column"):
        convert_dataset("coco", tmp_path / "broken.json", images, tmp_path / "data4")
    assert not (tmp_path / "data2").exists() and not (tmp_path / "data3").exists()


def test_napari_points_and_rectangles_row_first(images: Path, tmp_path: Path) -> None:
    csvs = tmp_path / "layers"
    csvs.mkdir()
    # points: axis-0 = row (y), axis-1 = column (x); pixel centres at integers
    (csvs / "cell01_er.csv").write_text("index,axis-0,axis-1\n0,30.0,50.0\n1,2.4,10.6\n")
    (csvs / "cell02.csv").write_text("index,axis-0,axis-1,label\n0,5.0,60.4,mito\n1,39.0,0.0,er\n")
    # rectangle around pixels x 5..24, y 10..17 (edges half a pixel outside the centres), plus a line
    (csvs / "cell01_mito.csv").write_text(
        "index,shape-type,vertex-index,axis-0,axis-1\n"
        "0,rectangle,0,9.5,4.5\n0,rectangle,1,9.5,24.5\n0,rectangle,2,17.5,24.5\n0,rectangle,3,17.5,4.5\n"
        "1,line,0,1.0,1.0\n1,line,1,3.0,8.0\n"
        "2,polygon,0,30.0,40.0\n2,polygon,1,35.2,44.0\n2,polygon,2,33.0,47.7\n")
    res = convert_dataset("napari", csvs, images, tmp_path / "data", classes=["bg", "mito", "er"])
    got = records(tmp_path / "data")
    assert got["images/cell01.tif"]["points"] == [("er", (11, 2)), ("er", (50, 30))]
    assert got["images/cell01.tif"]["boxes"] == [("mito", (5, 10, 25, 18)), ("mito", (40, 30, 48, 36))]
    assert got["images/cell02.png"]["points"] == [("er", (0, 39)), ("mito", (60, 5))]
    assert got["images/cell03.tif"] == {"boxes": [], "points": [], "labels": None, "mask": None}
    assert any("line" in w for w in res.warnings) and any("unlabeled" in w for w in res.warnings)
    check_valid(tmp_path / "data")

    (csvs / "cell03_mito.csv").write_text("index,axis-0,axis-1,axis-2\n0,0,3,4\n1,2,3,4\n")
    with pytest.raises(ConvertError, match="line 3: axis-0 = 2; this layer spans several planes"):
        convert_dataset("napari", csvs / "cell03_mito.csv", images, tmp_path / "d2", classes=["mito"])
    (csvs / "cell03.csv").write_text("index,axis-0,axis-1\n0,3,4\n")
    with pytest.raises(ConvertError, match="no class"):
        convert_dataset("napari", csvs / "cell03.csv", images, tmp_path / "d3")
    (csvs / "other.csv").write_text("index,axis-0,axis-1\n0,3,4\n")
    with pytest.raises(ConvertError, match="no input names an image.*other.csv: no image .* matches"):
        convert_dataset("napari", csvs / "other.csv", images, tmp_path / "d4")
    with pytest.raises(ConvertError, match="other.csv: no image .* matches.*--on-unmatched skip"):
        convert_dataset("napari", csvs / "other.csv", images, tmp_path / "d4", on_unmatched="fail")
    assert not (tmp_path / "d4").exists()


def test_qupath_geojson(images: Path, tmp_path: Path) -> None:
    def feat(geometry, cls):
        props = {"objectType": "annotation"}
        if cls:
            props["classification"] = {"name": cls, "color": [255, 0, 0]}
        return {"type": "Feature", "geometry": geometry, "properties": props}

    rect = {"type": "Polygon", "coordinates": [[[5, 10], [25, 10], [25, 18], [5, 18], [5, 10]]]}
    whole = {"type": "Polygon", "coordinates": [[[0, 0], [W, 0], [W, H], [0, H], [0, 0]]]}
    tri = {"type": "Polygon", "coordinates": [[[40, 30], [47.5, 31], [44, 36.2], [40, 30]]]}
    fc = {"type": "FeatureCollection", "features": [
        feat(rect, "mito"), feat(tri, "mito"), feat(whole, "nucleus"),
        feat({"type": "MultiPoint", "coordinates": [[50.5, 30.5], [10, 2]]}, "er"),
        feat({"type": "Point", "coordinates": [63.9, 39.9]}, "er"),
        feat({"type": "Point", "coordinates": [1, 1]}, None),
        feat({"type": "LineString", "coordinates": [[1, 1], [5, 5]]}, "er")]}
    gj = tmp_path / "gj"
    gj.mkdir()
    (gj / "cell01.tif.geojson").write_text(json.dumps(fc))
    (gj / "cell02.geojson").write_text(json.dumps([feat(None, "mito")]))  # older QuPath: a list
    res = convert_dataset("qupath", gj, images, tmp_path / "data", classes=["er", "mito", "nucleus"])
    got = records(tmp_path / "data")
    assert got["images/cell01.tif"] == {"boxes": [("mito", (5, 10, 25, 18)), ("mito", (40, 30, 48, 37))],
                                        "points": [("er", (10, 2)), ("er", (50, 30)), ("er", (63, 39))],
                                        "labels": ["er", "mito", "nucleus"], "mask": None}
    assert got["images/cell02.png"]["labels"] == ["mito"]
    assert any("unclassified" in w for w in res.warnings) and any("LineString" in w for w in res.warnings)
    check_valid(tmp_path / "data")


def test_label_images(images: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    mask = np.zeros((H, W), np.uint16)
    mask[5:10, 40:60] = 1
    mask[30:, :8] = 2
    mask[0, 0] = 255
    write_mask(labels / "cell01_mask.tif", mask)
    res = convert_dataset("labels", labels, images, tmp_path / "data", classes=["bg", "mito", "er"],
                          group_pattern=r"^(cell)\d+")
    rec = {r.file: r for r in res.manifest.images}
    assert rec["images/cell01.tif"].mask == "masks/cell01.tif" and rec["images/cell02.png"].mask is None
    assert rec["images/cell01.tif"].group == "cell"
    assert np.array_equal(tifffile.imread(tmp_path / "data" / "masks" / "cell01.tif"), mask)
    check_valid(tmp_path / "data")

    with pytest.raises(ConvertError, match="needs --classes"):
        convert_dataset("labels", labels, images, tmp_path / "d2")
    with pytest.raises(ConvertError, match=r"values \[2\] are neither class ids 0..1"):
        convert_dataset("labels", labels, images, tmp_path / "d3", classes=["bg", "mito"])
    write_mask(labels / "cell03.tif", np.zeros((H, W), np.uint8))
    with pytest.raises(ConvertError, match="label images must match their images"):
        convert_dataset("labels", labels, images, tmp_path / "d4", classes=["bg", "mito", "er"])
    with pytest.raises(ConvertError, match="unknown format 'cvat'"):
        convert_dataset("cvat", labels, images, tmp_path / "d5")
    with pytest.raises(ConvertError, match="exists and is not an empty folder"):
        convert_dataset("coco", labels, images, tmp_path / "data")


def test_cli_convert(images: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(convert)
    (tmp_path / "cell01_er.csv").write_text("index,axis-0,axis-1\n0,30.0,50.0\n")
    ok = CliRunner().invoke(app, ["napari", str(tmp_path / "cell01_er.csv"), "--images", str(images),
                                  "--out", str(tmp_path / "data")])
    assert ok.exit_code == 0, ok.output
    assert "wrote 3 records" in " ".join(ok.output.split())
    bad = CliRunner().invoke(app, ["napari", str(tmp_path / "cell01_er.csv"), "--images", str(tmp_path / "nope"),
                                   "--out", str(tmp_path / "d2")])
    assert bad.exit_code == 2 and "is not a folder" in bad.output and "Traceback" not in bad.output
