"""A lab's dataset from files made the way napari and QuPath write them (tests/lab_files.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import tifffile

from lab_files import CLASSES, write_lab_files


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
