"""The Predict widget: pick a run folder, segment the image layer into a Labels layer.

The run's ``best`` (or ``last``) checkpoint segments the chosen image layer (:mod:`.segment`: a 2D
or RGB image, or a stack of sections section by section) in a worker thread; the result is a Labels
layer ``<image> segmentation`` on the image's grid, value = class id + 1 as everywhere in the
plugin (:mod:`.layers`), in the classes' colours with their names as features, ready to correct
and add to a dataset with the Annotate widget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, SpinBox

from dspseg.napari_plugin.annotate import follow_layers, layer_choices
from dspseg.napari_plugin.layers import label_colours, label_features, labels_from_classes
from dspseg.napari_plugin.messages import show_error


class PredictWidget(Container):
    """See the module docstring. ``layer`` is the last Labels layer made; ``outcome`` its sentence."""

    def __init__(self, viewer: Any):
        super().__init__(labels=True)
        self.viewer = viewer
        self.worker: Any = None
        self.layer: Any = None
        self.outcome = ""
        self._loaded: dict[tuple[str, str, float], Any] = {}
        self.run = FileEdit(label="run folder", mode="d")
        self.checkpoint = ComboBox(label="checkpoint", choices=["best", "last"], value="best")
        self.image = ComboBox(label="image", choices=layer_choices(viewer, "Image"))
        self.tile = SpinBox(label="tile", min=16, max=8192, value=256, tooltip="tile side for larger images")
        self.go = PushButton(text="Segment")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # a long sentence wraps; the dock keeps its width
        self.extend([self.run, self.checkpoint, self.image, self.tile, self.go, self.status])
        self.go.changed.connect(self.start)
        follow_layers(self, viewer)

    def load(self, run: Path, which: str) -> Any:
        """The run's model (kept while its checkpoint file is unchanged)."""
        from dspseg.engine.checkpoint import load_run
        from dspseg.engine.runfolder import RunFolder

        path = RunFolder(run).existing_checkpoint(which)
        key = (str(path.resolve()), which, path.stat().st_mtime)
        if key not in self._loaded:
            self._loaded = {key: load_run(run, which)}
        return self._loaded[key]

    def start(self, _value: Any = None) -> Any:
        """Segment in a worker thread; return the worker (None when refused: the sentence is shown)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return self.worker
        layer = self.image.value
        if layer is None or not str(self.run.value).strip(". "):
            self._finish("error: choose a run folder and an image layer")
            return None
        meta = layer.metadata.get("dspseg") if isinstance(layer.metadata, dict) else None
        source = getattr(getattr(layer, "source", None), "path", None)
        file = Path(source) if source and Path(source).is_file() else None
        shapes = meta.get("shapes") if isinstance(meta, dict) else None
        self.status.value = "segmenting ..."
        self.go.enabled = False
        self.worker = create_worker(self._run, Path(self.run.value), self.checkpoint.value, layer.data, layer.rgb,
                                    layer.name, file, shapes, self.tile.value, _start_thread=False,
                                    _connect={"returned": lambda out: self._show(layer, *out),
                                              "errored": lambda e: show_error(self._finish, e)})
        self.worker.start()
        return self.worker

    def _run(self, run: Path, which: str, data: Any, rgb: bool, name: str, file: Path | None,
             shapes: list | None, tile: int) -> tuple[Any, np.ndarray]:
        """In the worker thread: the run's class ids, as one array of the layer's grid."""
        from dspseg.napari_plugin.segment import planes, segment

        loaded = self.load(run, which)
        stored, stacked = planes(data, rgb, loaded.in_channels, name, file, shapes)
        ids = segment(loaded, stored, name, tile)
        n = len(loaded.classes)
        if not stacked:
            return loaded, labels_from_classes(ids[0], n)
        spatial = data.shape[1:3]
        out = np.zeros((len(ids), *spatial), labels_from_classes(ids[0], n).dtype)
        for i, plane in enumerate(ids):
            out[i, :plane.shape[0], :plane.shape[1]] = labels_from_classes(plane, n)
        return loaded, out

    def _show(self, image: Any, loaded: Any, labels: np.ndarray) -> None:
        classes = loaded.classes
        k = labels.ndim
        self.layer = self.viewer.add_labels(
            labels, name=f"{image.name} segmentation", colormap=label_colours(classes),
            features=label_features(classes), scale=image.scale[-k:], translate=image.translate[-k:],
            metadata={"dspseg": {"run": str(loaded.folder.root), "checkpoint": loaded.which, "step": loaded.step,
                                 "classes": classes}})
        self._finish(f"{self.layer.name}: {loaded.folder.root.name} ({loaded.which}.pt, step {loaded.step}); "
                     f"classes {', '.join(classes)}")

    def _finish(self, text: str) -> None:
        self.outcome = text
        self.status.value = text
        self.worker = None
        self.go.enabled = True

