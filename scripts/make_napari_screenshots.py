"""Render docs/napari_{reader,annotate,train,predict}.png: the plugin's reader and widgets at work.

Usage (needs a display; without one: xvfb-run -a -s "-screen 0 1600x1000x24" ...):
    python scripts/make_napari_screenshots.py [--out docs]

A small synthetic dataset (24 sections of 128 x 128, 4 groups) reduced to the paper's mixed
scenario at ACR 4 (masks, boxes, points, image labels, nothing), then: the dataset opened with the
reader on a plane with boxes and points; a new image annotated with a partial mask, boxes and points
and added to a dataset; a 24-step dsp run of width 8 trained in the Train widget; and the run
segmenting an image in the Predict widget. Each picture is napari's whole window.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage


def wait(widget, app, timeout: float = 600) -> None:
    """Run the event loop until the widget's worker is done."""
    end = time.time() + timeout
    while widget.worker is not None and time.time() < end:
        app.processEvents()
        time.sleep(0.02)


def shot(viewer, path: Path, app, zoom: bool = True) -> None:
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    if zoom:
        viewer.reset_view()  # the canvas as it is now, with the widget docked
        for _ in range(10):
            app.processEvents()
            time.sleep(0.02)
    iio.imwrite(path, viewer.screenshot(canvas_only=False, flash=False))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()

    import napari
    import napari.qt

    from dspseg.data.acr.writer import simulate_dataset
    from dspseg.data.io import read_mask
    from dspseg.data.synthetic.writer import write_synthetic_dataset
    from dspseg.napari_plugin.annotate import AnnotateWidget
    from dspseg.napari_plugin.predict import PredictWidget
    from dspseg.napari_plugin.train import TrainWidget

    tmp = Path(tempfile.mkdtemp(prefix="dspseg-shots-"))
    write_synthetic_dataset(tmp / "synth", 24, 128, seed=0, groups=4)
    simulate_dataset(tmp / "synth", tmp / "mixed", acr=4, scenario="mixed", split=0)
    manifest = json.loads((tmp / "mixed/dataset.json").read_text())
    app = napari.qt.get_qapp()

    def viewer_of(title: str):
        viewer = napari.Viewer(title=title, show=True)
        viewer.window._qt_window.resize(1500, 900)
        return viewer

    # reader: the plane of the first record with boxes and points
    viewer = viewer_of("dspseg: a dataset folder opened")
    viewer.open(str(tmp / "mixed"), plugin="dspseg")
    plane = next(i for i, r in enumerate(manifest["images"]) if r.get("boxes"))
    viewer.dims.set_current_step(0, plane)
    shot(viewer, args.out / "napari_reader.png", app)
    viewer.close()

    # annotate: a new image with a partial mask, a Shapes layer named after its class, points
    viewer = viewer_of("dspseg: Annotate → dataset")
    source = tmp / "synth/images"
    classes = manifest["classes"]
    mito, nuc = classes.index("mitochondrion"), classes.index("nucleus")
    image_file = next(f for f in sorted(source.glob("*.tif"))[4:]  # one showing a mitochondrion and a nucleus
                      if {mito, nuc} <= set(np.unique(read_mask(tmp / "synth/masks" / f.name)).tolist()))
    truth = read_mask(tmp / "synth/masks" / image_file.name)
    viewer.open(str(image_file))
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Annotate → dataset")
    widget.dataset.value = tmp / "my-data"
    widget.classes.value = ", ".join(manifest["classes"])
    labels = widget.make_labels_layer()
    labels.data[:, :64] = truth[:, :64] + 1  # the left half annotated; the right half left at 0
    labels.refresh()
    parts, _ = ndimage.label(truth == mito)
    rows, cols = np.nonzero(parts == np.bincount(parts.ravel())[1:].argmax() + 1)  # the largest mitochondrion
    box = [[rows.min() - 0.5, cols.min() - 0.5], [rows.max() + 0.5, cols.max() + 0.5]]
    shapes = viewer.add_shapes([np.array(box)], shape_type="rectangle", name="mitochondrion",
                               edge_color="red", face_color="transparent", edge_width=1.5)
    nucleus = np.argwhere(truth == nuc)
    points = viewer.add_points(nucleus[len(nucleus) // 2][None].astype(float), name="nucleus", size=5,
                               face_color="royalblue")
    widget.reset_choices()
    widget.labels_layer.value, widget.shapes.value, widget.points.value = labels, shapes, points
    widget.tags.value = sorted({classes[v] for v in np.unique(truth).tolist()})
    widget.add_to_dataset()
    shot(viewer, args.out / "napari_annotate.png", app)
    viewer.close()

    # train: a short dsp run with the live plot
    viewer = viewer_of("dspseg: Train")
    viewer.open(str(tmp / "mixed"), plugin="dspseg")
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    train.data.value, train.out.value = tmp / "mixed", tmp / "run"
    train.method.value = "dsp"
    train.steps.value, train.width_.value, train.batch_size.value, train.val_every.value = 24, 8, 4, 8
    train.threads.value = 2
    train.sets.value = "crop_size=64 log_every=2"
    train.start()
    wait(train, app, timeout=3000)
    print(train.status.value)
    shot(viewer, args.out / "napari_train.png", app)
    viewer.close()

    # predict: the run segments an image of the test split
    viewer = viewer_of("dspseg: Predict")
    test = next(r for r in manifest["images"] if r.get("split") == "test")
    [image] = viewer.open(str(tmp / "mixed" / test["file"]))
    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(predict, name="Predict")
    predict.run.value = tmp / "run"
    predict.reset_choices()
    predict.image.value = image
    predict.start()
    wait(predict, app, timeout=600)
    print(predict.status.value)
    predict.layer.opacity = 0.5
    shot(viewer, args.out / "napari_predict.png", app)
    viewer.close()


if __name__ == "__main__":
    main()
