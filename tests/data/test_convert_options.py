"""convert's options for a lab's names and files: --class-map, case, --instances tables, --background,
--on-unmatched and the --out/--into choice; each mistake is one sentence naming the file or option and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dspseg.data.convert import ConvertError, convert_dataset
from dspseg.data.convert.classes import parse_class_map
from dspseg.data.manifest import load_manifest
from lab_files import CLASSES, NUCLEUS, write_lab_files


@pytest.fixture()
def lab(tmp_path: Path):
    return write_lab_files(tmp_path / "lab", groups=2)


def test_class_map_and_case_are_reported(lab, tmp_path: Path) -> None:
    res = convert_dataset("qupath", lab.qupath, lab.images, into=tmp_path / "data", classes=["bg", "cyto", "nucleus"],
                          class_map="Cytoplasm=cyto,Golgi=golgi", background="BG")
    assert load_manifest(tmp_path / "data").classes == ["bg", "cyto", "nucleus"]
    notes = " ".join(res.warnings)
    assert "--class-map: 'Cytoplasm' taken as 'cyto'" in notes
    assert "class 'Nucleus' taken as 'nucleus' (case ignored" in notes
    assert "class 'BG' taken as 'bg'" in notes and "--class-map: no annotation is called 'Golgi'" in notes
    boxed = {r.file: r for r in res.manifest.images}[f"images/{lab.boxed[0]}"]
    assert boxed.labels == ["bg", "cyto", "nucleus"]  # the background joins a box-only record's labels
    with pytest.raises(ConvertError, match=r"--class-map item 'Nucleus' is not TOOL_NAME=CLASS"):
        parse_class_map("Nucleus")
    with pytest.raises(ConvertError, match="maps 'a' twice"):
        parse_class_map("a=b,a=c")


def test_instance_tables_give_objects_their_classes(lab, tmp_path: Path) -> None:
    f = lab.instances / "cell01_z1_nuclei.tif"
    ids = tifffile.imread(f)
    first = int(np.unique(ids)[1])
    (lab.instances / "cell01_z1_nuclei.csv").write_text(f"id,class\n{first},cytoplasm\n999,nucleus\n")
    (lab.instances / "cell02_z1_nuclei.json").write_text(json.dumps({"7": "Nucleus"}))
    res = convert_dataset("labels", lab.instances, lab.images, into=tmp_path / "data", instances="nucleus",
                          classes=list(CLASSES), background="background")
    mask = tifffile.imread(tmp_path / "data" / "masks" / "cell01_z1.tif")
    assert (mask[ids == first] == 1).all() and (mask[(ids > 0) & (ids != first)] == NUCLEUS).all()
    assert (mask[ids == 0] == 0).all()  # --background: between the objects
    assert any("ids [999] are not in cell01_z1_nuclei.tif" in w for w in res.warnings)
    (lab.instances / "cell02_z1_nuclei.json").write_text(json.dumps({"seven": "nucleus"}))
    with pytest.raises(ConvertError, match=r"cell02_z1_nuclei.json: instance id 'seven' is not a whole number"):
        convert_dataset("labels", lab.instances, lab.images, into=tmp_path / "d2", instances="nucleus")
    (lab.instances / "cell02_z1_nuclei.json").unlink()
    (lab.instances / "cell01_z1_nuclei.csv").write_text("object,name\n7,nucleus\n")
    with pytest.raises(ConvertError, match=r"cell01_z1_nuclei.csv: needs the columns id and class"):
        convert_dataset("labels", lab.instances, lab.images, into=tmp_path / "d3", instances="nucleus")
    assert not (tmp_path / "d2").exists() and not (tmp_path / "d3").exists()


def test_option_mistakes_are_one_sentence(lab, tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="give --out .* or --into .*, not both"):
        convert_dataset("labels", lab.labels, lab.images, tmp_path / "a", into=tmp_path / "b", classes=list(CLASSES))
    with pytest.raises(ConvertError, match="not neither"):
        convert_dataset("labels", lab.labels, lab.images, classes=list(CLASSES))
    with pytest.raises(ConvertError, match="--on-unmatched must be skip or fail"):
        convert_dataset("napari", lab.points, lab.images, into=tmp_path / "c", on_unmatched="ignore")
    with pytest.raises(ConvertError, match="--instances reads label images"):
        convert_dataset("napari", lab.points, lab.images, into=tmp_path / "c", instances="nucleus")
    with pytest.raises(ConvertError, match="needs --classes .* or --instances CLASS"):
        convert_dataset("labels", lab.labels, lab.images, into=tmp_path / "c")
    (tmp_path / "notdata").mkdir()
    (tmp_path / "notdata" / "x.txt").write_text("mine")
    with pytest.raises(ConvertError, match="--into .*notdata holds no dataset.json but is not empty"):
        convert_dataset("napari", lab.points, lab.images, into=tmp_path / "notdata")
    with pytest.raises(ConvertError, match="--ignore-index 1 is also the id of class 'cytoplasm'"):
        convert_dataset("labels", lab.labels, lab.images, into=tmp_path / "c", classes=list(CLASSES), ignore_index=1)
    assert not (tmp_path / "c").exists()


def test_label_ids_are_remapped_onto_the_dataset_by_name(lab, tmp_path: Path) -> None:
    """A second source whose label images number the classes differently joins by class name."""
    data = tmp_path / "data"
    convert_dataset("qupath", lab.qupath, lab.images, into=data, classes=list(CLASSES), background="background")
    other = tmp_path / "other"
    other.mkdir()
    name = lab.instanced[0]  # an image without a mask yet
    swapped = np.choose(lab.truth[name], [0, 2, 1]).astype(np.int32)  # ids: 0 bg, 1 nucleus, 2 cytoplasm
    tifffile.imwrite(other / name, swapped)
    convert_dataset("labels", other, lab.images, into=data, classes=["Background", "Nucleus", "Cytoplasm"])
    assert np.array_equal(tifffile.imread(data / "masks" / name), lab.truth[name])
