"""The Predict widget, driven as a user: pick a run, an image layer, click Segment, wait for the
worker; the Labels layer holds ``dspseg predict``'s label image + 1 in the classes' colours and
names; a dataset opened with the reader is segmented plane by plane; a missing run is one sentence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from dspseg.colours import palette
from dspseg.engine.predict import predict_files
from dspseg.napari_plugin.predict import PredictWidget


def test_segment_the_image_layer_like_the_command_line(make_napari_viewer, qtbot, easy_data: Path, tiny_run: Path,
                                                       tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    [image] = viewer.open(str(easy_data / "i1.tif"))
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.run.value = tiny_run
    widget.reset_choices()
    widget.image.value = image
    widget.go.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    labels = widget.layer
    assert labels is not None, widget.outcome
    [written] = predict_files(tiny_run, [easy_data / "i1.tif"], tmp_path / "pred")
    np.testing.assert_array_equal(labels.data, tifffile.imread(written).astype(np.int64) + 1)
    assert labels.name == "i1 segmentation" and list(labels.features["class"]) == ["(not annotated)", "bg", "rect", "disc"]
    np.testing.assert_allclose(labels.colormap.map(np.array([3]))[0][:3], palette(3)[2] / 255, atol=1e-6)
    assert "step 3" in widget.status.value

    viewer.open(str(easy_data), plugin="dspseg")
    widget.reset_choices()
    widget.image.value = viewer.layers["dataset"]
    widget.go.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    stack = widget.layer
    assert stack.name == "dataset segmentation" and stack.data.shape == (4, 32, 48)
    np.testing.assert_array_equal(stack.data[1], labels.data)  # plane 1 is i1.tif

    widget.run.value = tmp_path / "no-run"
    widget.go.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert widget.status.value.startswith("error:") and "no-run" in widget.status.value

    closed = []
    widget.native.destroyed.connect(lambda *_: closed.append(True))
    viewer.window.remove_dock_widget(widget.native)
    widget.native.deleteLater()
    qtbot.waitUntil(lambda: bool(closed), timeout=10_000)
    viewer.add_image(np.zeros((8, 8)), name="later")  # a closed widget no longer follows the layers
