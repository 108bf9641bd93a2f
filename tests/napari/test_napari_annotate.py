"""Annotate → dataset, driven as a user: open an image file, make a Labels layer with the button, paint
part of it, draw a rectangle on a Shapes layer named after its class, click points with a class feature,
tick the classes present, Add; then the same again (nothing changes), a conflicting mask and a
misspelt class (refused with one sentence, the dataset untouched), and a record updated from the
reader's stack."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from dspseg.data.io import read_mask, write_image
from dspseg.data.validate import validate_dataset
from dspseg.napari_plugin.annotate import AnnotateWidget


def test_layers_become_a_record_and_every_outcome_shows_in_the_widget(make_napari_viewer, easy_data: Path,
                                                                     tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (24, 32), dtype=np.uint8)
    write_image(tmp_path / "cell01.tif", image)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "cell01.tif"))
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    data = tmp_path / "data"
    widget.dataset.value = data
    widget.classes.value = "bg, rect, disc"
    labels = widget.make_labels_layer()
    assert labels.data.shape == (24, 32) and widget.labels_layer.value is labels
    labels.data[0:10, 0:12] = 1      # bg
    labels.data[12:20, 4:14] = 2     # rect; the rest stays 0: not annotated
    labels.refresh()
    shapes = viewer.add_shapes([np.array([[11.5, 3.5], [11.5, 13.5], [19.5, 13.5], [19.5, 3.5]])],
                               shape_type="rectangle", name="rect")
    points = viewer.add_points(np.array([[2.2, 3.9], [15.0, 8.0]]), features={"class": ["BG", "rect"]})
    widget.reset_choices()
    widget.shapes.value, widget.points.value = shapes, points
    widget.tags.value = ["bg", "rect"]
    result = widget.add_to_dataset()
    assert result is not None, widget.output.value
    [rec] = json.loads((data / "dataset.json").read_text())["images"]
    assert rec == {"file": "images/cell01.tif", "mask": "masks/cell01.tif",
                   "boxes": [{"class": "rect", "xyxy": [4, 12, 14, 20]}],
                   "points": [{"class": "bg", "xy": [4, 2]}, {"class": "rect", "xy": [8, 15]}],
                   "labels": ["bg", "rect"]}
    mask = read_mask(data / rec["mask"])
    assert (mask[0:10, 0:12] == 0).all() and (mask[12:20, 4:14] == 1).all() and (mask[20:, :] == 255).all()
    assert (data / "images/cell01.tif").samefile(tmp_path / "cell01.tif")  # linked, not copied
    report = validate_dataset(data)
    shown = widget.output.value
    assert "images/cell01.tif: added" in shown and f"validate: {len(report.errors)} error(s)" in shown
    assert report.problems and all(str(p) in shown for p in report.problems)  # e.g. no val split
    assert "BG' taken as 'bg'" in shown  # the class spelt otherwise, matched ignoring case

    before = (data / "dataset.json").read_bytes()
    assert widget.add_to_dataset() is not None and "unchanged" in widget.output.value
    assert (data / "dataset.json").read_bytes() == before

    labels.data[22, 30] = 3
    assert widget.add_to_dataset() is None
    assert widget.output.value.startswith("error:") and "already has the mask" in widget.output.value
    labels.data[22, 30] = 0
    shapes.name = "rectt"
    widget.reset_choices()
    widget.shapes.value = shapes
    assert widget.add_to_dataset() is None
    assert "class 'rectt' is not a class of" in widget.output.value and "did you mean 'rect'" in widget.output.value
    assert (data / "dataset.json").read_bytes() == before

    # a plane of a dataset opened with the reader: its record (plane 2) gets the point
    easy = tmp_path / "easy"
    shutil.copytree(easy_data, easy)
    viewer.layers.clear()
    viewer.open(str(easy), plugin="dspseg")
    viewer.dims.set_current_step(0, 2)
    r, c = np.argwhere(read_mask(easy / "m2.tif") == 2)[0]  # a disc pixel
    pts = viewer.add_points(np.array([[2, r, c], [1, 3.0, 3.0]]), name="disc", ndim=3)
    widget.reset_choices()
    widget.image.value = viewer.layers["dataset"]
    widget.labels_layer.value, widget.shapes.value, widget.points.value = None, None, pts
    widget.tags.value = []
    widget.dataset.value = easy
    assert widget.add_to_dataset() is not None, widget.output.value
    recs = json.loads((easy / "dataset.json").read_text())["images"]
    assert recs[2]["points"] == [{"class": "disc", "xy": [int(c), int(r)]}] and "points" not in recs[1]
    assert len(recs) == 4 and "i2.tif: updated" in widget.output.value
