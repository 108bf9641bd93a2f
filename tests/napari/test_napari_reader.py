"""The reader: napari finds it for a dataset folder, and the layers hold the dataset's annotation exactly
(mask + 1 as Labels, boxes as rectangles whose pixels are the box's, points, class names and colours);
a volume dataset opens as a lazy stack of its sections."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dspseg.colours import palette
from dspseg.data.io import read_mask
from dspseg.napari_plugin.layers import rectangle_box
from dspseg.napari_plugin.reader import get_reader, read_dataset


@pytest.fixture
def annotated(easy_data: Path, tmp_path: Path) -> Path:
    """easy_data with a box and a point on its first record and a smaller image without mask."""
    root = tmp_path / "data"
    shutil.copytree(easy_data, root)
    manifest = json.loads((root / "dataset.json").read_text())
    manifest["images"][0]["boxes"] = [{"class": "rect", "xyxy": [3, 4, 17, 14]}]
    manifest["images"][1]["points"] = [{"class": "disc", "xy": [7, 9]}, {"class": "bg", "xy": [0, 0]}]
    small = np.full((20, 24), 0.5, np.float32)
    from dspseg.data.io import write_image

    write_image(root / "small.tif", small)
    manifest["images"].append({"file": "small.tif", "labels": ["bg"]})
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def test_napari_opens_a_dataset_folder_with_the_dspseg_reader(make_napari_viewer, annotated: Path) -> None:
    from npe2 import PluginManager

    viewer = make_napari_viewer()  # discovers the plugins
    assert "dspseg" in {r.plugin_name for r in PluginManager.instance().iter_compatible_readers([str(annotated)])}
    assert get_reader(str(annotated / "small.tif")) is None
    viewer.open(str(annotated), plugin="dspseg")
    image, mask, boxes, points = (viewer.layers[n] for n in ("dataset", "dataset mask", "dataset boxes",
                                                              "dataset points"))
    records = json.loads((annotated / "dataset.json").read_text())["images"]
    assert image.data.shape == (len(records), 32, 48)
    assert image.metadata["dspseg"]["shapes"][-1] == (20, 24)
    np.testing.assert_array_equal(np.asarray(image.data[-1])[:20, :24], 0.5)
    for i, rec in enumerate(records[:-1]):
        np.testing.assert_array_equal(mask.data[i], read_mask(annotated / rec["mask"]) + 1)
    assert not mask.data[-1].any()  # no mask: not annotated
    classes = ["bg", "rect", "disc"]
    assert list(mask.features["class"]) == ["(not annotated)", *classes]
    np.testing.assert_allclose(mask.colormap.map(np.array([2]))[0][:3], palette(3)[1] / 255, atol=1e-6)
    [rect] = boxes.data
    assert rect[0, 0] == 0 and rectangle_box(rect) == (3, 4, 17, 14) and list(boxes.features["class"]) == ["rect"]
    np.testing.assert_allclose(boxes.edge_color[0][:3], palette(3)[1] / 255, atol=1e-6)
    assert points.data.tolist() == [[1, 9, 7], [1, 0, 0]] and list(points.features["class"]) == ["disc", "bg"]
    np.testing.assert_allclose(points.face_color[0][:3], palette(3)[2] / 255, atol=1e-6)


def test_a_volume_dataset_opens_as_a_stack_of_its_sections(tmp_path: Path) -> None:
    from dspseg.data.synthetic import SYNTH_CLASSES, write_synthetic_volume
    from dspseg.data.volumes import open_volume

    write_synthetic_volume(tmp_path / "cell.ome.zarr", shape=(16, 32, 32), seed=1)
    image = {"url": "cell.ome.zarr"}
    manifest = {"format": "dspseg/2", "classes": SYNTH_CLASSES, "images": [
        {"volume": image, "axis": "z", "index": 1, "mask": {"volume": {"url": "cell.ome.zarr", "array": "labels/organelles"}}},
        {"volume": image, "sections": {"axis": "z", "start": 3, "stop": 5}}]}
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    layers = {kw["name"]: (data, kw, kind) for data, kw, kind in read_dataset(str(tmp_path))}
    data, kw, kind = layers["dataset"]
    assert kind == "image" and data.shape == (3, 32, 32) and kw["metadata"]["dspseg"]["files"] == [None] * 3
    volume = open_volume({"url": str(tmp_path / "cell.ome.zarr")})
    np.testing.assert_array_equal(np.asarray(data[2]), volume.section("z", 4))  # read lazily, section 4
    labels = open_volume({"url": str(tmp_path / "cell.ome.zarr"), "array": "labels/organelles"}).section("z", 1)
    mask = layers["dataset mask"][0]
    np.testing.assert_array_equal(mask[0], labels + 1)
    assert not mask[1:].any()
