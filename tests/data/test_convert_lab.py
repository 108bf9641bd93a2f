"""A lab's dataset from files made the way napari and QuPath write them (tests/lab_files.py), built with
several ``dspseg convert ... --into`` calls; every failure leaves the dataset byte for byte as it was."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import typer
from typer.testing import CliRunner

from dspseg.data.manifest import load_manifest
from dspseg.data.validate import validate_dataset
from dspseg.io_commands import EXIT_SKIPPED, convert
from lab_files import CLASSES, NUCLEUS, convert_commands, write_lab_files


def run_convert(args: list[str]):
    app = typer.Typer()
    app.command()(convert)
    result = CliRunner().invoke(app, args)
    assert "Traceback" not in result.output, result.output
    return result


def tree_hash(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (hidden ones too) → the SHA-256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def lab_data(tmp_path_factory) -> tuple:
    """The lab's files and the dataset the README's four convert calls make of them."""
    root = tmp_path_factory.mktemp("lab")
    lab = write_lab_files(root / "lab")
    data = root / "data"
    outputs = []
    for args in convert_commands(lab, data):
        result = run_convert(args)
        assert result.exit_code == 0, result.output
        outputs.append(flat(result.output))
    return lab, data, outputs


def test_lab_files_look_like_the_tools_output(tmp_path: Path) -> None:
    lab = write_lab_files(tmp_path / "lab", napari_default_name=True)
    image = tifffile.imread(lab.images / "cell01_z0.tif")
    assert image.dtype == np.uint16 and image.shape == (48, 64)
    labels = tifffile.imread(lab.labels / "cell01_z0_labels.tif")
    assert labels.dtype == np.int32 and set(np.unique(labels)) <= {0, 1, 2}
    assert np.array_equal(labels, lab.truth["cell01_z0.tif"])
    ids = tifffile.imread(lab.instances / "cell01_z1_nuclei.tif")
    assert ids.dtype == np.int32 and max(np.unique(ids)) >= 7  # instance ids, not class ids
    with (lab.points / "cell02_z0_nucleus.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["index", "axis-0", "axis-1"] and "." in rows[1][1]
    gj = json.loads((lab.qupath / "cell01_z0.tif.geojson").read_text())
    assert gj["type"] == "FeatureCollection"
    names = {f["properties"]["classification"]["name"] for f in gj["features"]}
    assert names == {"Nucleus", "Cytoplasm"} and {n.lower() for n in names} < set(CLASSES)
    assert (lab.points / "Points.csv").exists()
    assert lab.masked and lab.instanced and lab.boxed and lab.pointed


def test_into_merges_every_source_into_one_valid_dataset(lab_data) -> None:
    lab, data, outputs = lab_data
    report = validate_dataset(data)
    assert report.ok and not report.warnings, [str(p) for p in report.problems]
    m = load_manifest(data)
    assert m.classes == list(CLASSES) and len(m.images) == len(lab.truth)
    rec = {r.file.removeprefix("images/"): r for r in m.images}
    assert {r.group for r in m.images} == {f"cell{g:02d}" for g in range(1, 7)}
    # one record per image, whatever the sources: mask + QuPath boxes, mask + napari points
    assert rec["cell01_z0.tif"].mask and rec["cell01_z0.tif"].boxes and not rec["cell01_z0.tif"].points
    assert rec["cell02_z0.tif"].mask and rec["cell02_z0.tif"].points
    for name in ("cell01_z0.tif", "cell02_z0.tif"):  # labels: the mask's classes, not only the boxed ones
        assert rec[name].labels == [c for i, c in enumerate(CLASSES) if (lab.truth[name] == i).any()]
    for name in lab.masked:
        assert np.array_equal(tifffile.imread(data / rec[name].mask), lab.truth[name])
    for name in lab.instanced:  # instance ids -> nucleus; between the objects: not annotated
        mask = tifffile.imread(data / rec[name].mask)
        truth = lab.truth[name]
        assert np.array_equal(mask == NUCLEUS, truth == NUCLEUS) and set(np.unique(mask)) == {NUCLEUS, 255}
    for name in lab.boxed[1:] + lab.pointed[1:]:  # box/point-only: the background joins the labels
        assert rec[name].labels == list(CLASSES) and rec[name].mask is None
    for name in lab.pointed:  # napari's centre convention: float coordinates land on the clicked pixel
        for p in rec[name].points:
            assert CLASSES[lab.truth[name][p.xy[1], p.xy[0]]] == p.cls
    assert "class 'Nucleus' taken as 'nucleus' (case ignored" in outputs[2]
    assert "class 'Cytoplasm' taken as 'cytoplasm' (case ignored" in outputs[3]
    assert "12 records" in outputs[0] and "0 new" in outputs[3]
    # the user's files are only read; the dataset's images are the same bytes
    assert (data / "images" / "cell01_z0.tif").read_bytes() == (lab.images / "cell01_z0.tif").read_bytes()


def test_running_a_conversion_again_changes_nothing(lab_data, tmp_path: Path) -> None:
    lab, data, _ = lab_data
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    before = tree_hash(copy)
    for args in convert_commands(lab, copy):
        result = run_convert(args)
        assert result.exit_code == 0, result.output
    assert tree_hash(copy) == before
    assert "already in the dataset; kept once" in flat(result.output)


def refused(args: list[str], data: Path, *phrases: str) -> str:
    """Run a conversion that must fail: exit code 2, one error naming ``phrases``, the dataset unchanged."""
    before = tree_hash(data)
    result = run_convert(args)
    text = flat(result.output)
    assert result.exit_code == 2, result.output
    assert text.startswith("error:") and "nothing was written" in text, text
    for phrase in phrases:
        assert phrase in text, text
    assert tree_hash(data) == before
    return text


def test_conflicts_leave_the_dataset_byte_identical(lab_data, tmp_path: Path) -> None:
    lab, data0, _ = lab_data
    data = tmp_path / "data"
    shutil.copytree(data0, data)
    common = ["--images", str(lab.images), "--into", str(data)]
    # a second, different mask for an image
    other = tmp_path / "other_labels"
    other.mkdir()
    mask = lab.truth["cell01_z0.tif"].astype(np.int32)
    mask[0, 0] = 2 if mask[0, 0] != 2 else 1
    tifffile.imwrite(other / "cell01_z0_labels.tif", mask)
    refused(["labels", str(other), *common, "--classes", ",".join(CLASSES)], data,
            "cell01_z0_labels.tif", "record images/cell01_z0.tif already has the mask masks/cell01_z0.tif",
            "keep one label image per image")
    # a box whose class the mask does not hold there, and a point on a pixel of another class
    truth = lab.truth["cell02_z0.tif"]
    ys, xs = np.nonzero(truth == 0)
    gj = tmp_path / "gj"
    gj.mkdir()
    x, y = int(xs[0]), int(ys[0])
    rect = [[x, y], [x + 1, y], [x + 1, y + 1], [x, y + 1], [x, y]]
    (gj / "cell02_z0.tif.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [rect]},
         "properties": {"objectType": "annotation", "classification": {"name": "Nucleus"}}}]}))
    refused(["qupath", str(gj), *common], data, "cell02_z0.tif.geojson: feature 0",
            f"the 'nucleus' box [{x}, {y}, {x + 1}, {y + 1}] of record images/cell02_z0.tif holds no 'nucleus' "
            "pixel of the mask masks/cell02_z0.tif", "correct the box's class")
    pts = tmp_path / "pts"
    pts.mkdir()
    (pts / "cell01_z0_nucleus.csv").write_text(f"index,axis-0,axis-1\n0,{float(y)},{float(x)}\n")
    refused(["napari", str(pts), *common], data, "cell01_z0_nucleus.csv, line 2",
            f"'nucleus' point [{x}, {y}]", "lies on a 'background' pixel", "move or reclassify the point")
    # a class the dataset does not have: named, with the fix
    (gj / "cell02_z0.tif.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3.5, 4.5]},
         "properties": {"objectType": "annotation", "classification": {"name": "Golgi"}}}]}))
    text = flat(run_convert(["qupath", str(gj), *common]).output)
    assert "class 'Golgi' is not in the classes of" in text and "--class-map" in text


def test_validation_errors_of_a_merge_roll_back_its_files(lab_data, tmp_path: Path) -> None:
    """A mask added to a record whose labels lack one of its classes: the mask file was already written
    when validation refused the merge; it is removed again and the dataset is byte-identical."""
    lab, data0, _ = lab_data
    data = tmp_path / "data"
    shutil.copytree(data0, data)
    manifest = json.loads((data / "dataset.json").read_text())
    for rec in manifest["images"]:
        if rec["file"] == "images/cell06_z1.tif":
            rec.update(labels=["background", "nucleus"], points=[p for p in rec["points"] if p["class"] == "nucleus"])
    (data / "dataset.json").write_text(json.dumps(manifest, indent=1))
    labels = tmp_path / "late"
    labels.mkdir()
    tifffile.imwrite(labels / "cell06_z1.tif", lab.truth["cell06_z1.tif"].astype(np.int32))
    refused(["labels", str(labels), "--images", str(lab.images), "--into", str(data), "--classes", ",".join(CLASSES)],
            data, "images/cell06_z1.tif", "cytoplasm")
    assert not (data / "masks" / "cell06_z1.tif").exists()


def test_napari_default_named_file_is_reported_and_skipped(tmp_path: Path) -> None:
    lab = write_lab_files(tmp_path / "lab", groups=2, napari_default_name=True)
    data = tmp_path / "data"
    args = ["napari", str(lab.points), "--images", str(lab.images), "--into", str(data)]
    result = run_convert(args + ["--on-unmatched", "fail"])
    assert result.exit_code == 2 and "Points.csv" in flat(result.output) and not data.exists()
    result = run_convert(args)
    text = flat(result.output)
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert "'Points' is napari's default layer name: rename the layer after its image" in text
    assert len(load_manifest(data).images) == len(lab.truth)


def test_instance_label_images_without_instances_say_so(tmp_path: Path) -> None:
    lab = write_lab_files(tmp_path / "lab", groups=2)
    result = run_convert(["labels", str(lab.instances), "--images", str(lab.images), "--into",
                          str(tmp_path / "data"), "--classes", ",".join(CLASSES)])
    text = flat(result.output)
    assert result.exit_code == 2 and "cell01_z1_nuclei.tif: values [7" in text
    assert "looks like an instance labelling (one id per object): pass --instances CLASS" in text
    assert not (tmp_path / "data").exists()


def documented_converts(doc: Path) -> list[list[str]]:
    """The ``dspseg convert ... --into`` commands of a document, continuation lines joined, as argument lists."""
    import shlex

    text = doc.read_text().replace("\\\n", " ")
    return [shlex.split(line.strip())[2:] for line in text.splitlines()
            if line.strip().startswith("dspseg convert") and "--into" in line]


@pytest.mark.parametrize("doc", ["README.md", "docs/bring-your-own-data.md"])
def test_the_docs_say_exactly_the_tested_commands(doc: str, tmp_path: Path) -> None:
    lab = write_lab_files(tmp_path / "lab", groups=1)
    root = Path(__file__).resolve().parents[2]
    tested = [[a.replace(f"{lab.root}/", "").replace(str(tmp_path / "data"), "data/").replace("data//", "data/")
               for a in args] for args in convert_commands(lab, tmp_path / "data")]
    documented = [[a.rstrip("/") if a.endswith("/") and a != "data/" else a for a in args]
                  for args in documented_converts(root / doc)]
    assert documented == tested
