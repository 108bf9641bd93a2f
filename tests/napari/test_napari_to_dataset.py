"""Layers without a file and the pixel conventions, without a viewer: an RGB layer's pixels become the
record's image, a Labels value that names no class and a new dataset without classes are one sentence,
and boxes survive the trip box → napari rectangle → box."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dspseg.data.io import read_image_stored
from dspseg.errors import ConvertError
from dspseg.napari_plugin.layers import box_rectangle, labels_from_mask, rectangle_box
from dspseg.napari_plugin.to_dataset import LayerAnnotation, add_to_dataset


def test_pixels_of_a_layer_without_a_file_become_the_image(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    labels = np.zeros((20, 30), np.uint8)
    labels[:5] = 2
    ann = LayerAnnotation("my blob.tif", pixels=rgb, labels=labels, points=[("bg", 10.0, 12.4)],
                          point_where=["Points layer 'bg', point 0"], tags=["bg", "cell"])
    result = add_to_dataset(ann, tmp_path / "data", classes=["bg", "cell"])
    [rec] = json.loads((tmp_path / "data/dataset.json").read_text())["images"]
    assert rec["file"] == "images/my blob.tif" and rec["points"] == [{"class": "bg", "xy": [12, 10]}]
    np.testing.assert_array_equal(read_image_stored(tmp_path / "data" / rec["file"]), np.moveaxis(rgb, -1, 0))
    assert result.added == 1 and not result.report.errors

    labels[0, 0] = 7
    with pytest.raises(ConvertError, match="the value 7, which names no class: values 1..2 mark bg, cell"):
        add_to_dataset(LayerAnnotation("other.tif", pixels=rgb, labels=labels), tmp_path / "data")
    with pytest.raises(ConvertError, match="name its classes"):
        add_to_dataset(LayerAnnotation("x.tif", pixels=rgb), tmp_path / "new")
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


@pytest.mark.parametrize("box", [(0, 0, 1, 1), (2, 3, 5, 7), (10, 0, 48, 32)])
def test_a_box_survives_the_trip_through_a_rectangle(box) -> None:
    assert rectangle_box(box_rectangle(box)) == box
    assert labels_from_mask(np.array([[0, 1, 255]]), 2, 255).tolist() == [[1, 2, 0]]
