"""The "Annotate → dataset" widget: the layers of one image into a record of a dataset folder.

Pick the image layer and any of a Labels layer (a full or partial mask: value k marks class k − 1,
0 — napari's eraser — marks pixels not annotated, which training ignores), a Shapes layer
(rectangles → boxes), a Points layer, and tick the classes present in the image (all of them: the
record's ``labels`` then list every class of the image). "Add to dataset" writes or updates the
image's record through ``convert --into``'s merge (:mod:`.to_dataset`); the outcome and every
problem ``dspseg validate`` finds in the dataset appear in the widget. "New Labels layer" adds an
empty Labels layer of the image's size in the classes' colours, the class under the cursor shown
in napari's status bar.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton, Select, TextEdit

from dspseg.cli_support import split_list
from dspseg.data.manifest import MANIFEST_NAME
from dspseg.errors import UserError
from dspseg.napari_plugin.gather import gather
from dspseg.napari_plugin.layers import label_colours, label_features, labels_dtype
from dspseg.napari_plugin.messages import sentence
from dspseg.napari_plugin.to_dataset import add_to_dataset

HOW_LABELS = ("Labels: value k marks class k of the list (1 = the first); 0 (the eraser) marks pixels "
              "not annotated, which training ignores. Shapes/Points: class = the 'class' feature, "
              "else the layer's name.")


def layer_choices(viewer: Any, kind: str, none: bool = False):
    """A ComboBox ``choices`` callable: the viewer's layers of ``kind`` (napari's layer class name)."""
    def choices(_widget: Any) -> list[tuple[str, Any]]:
        found = [(layer.name, layer) for layer in viewer.layers if type(layer).__name__ == kind]
        return ([("(none)", None)] if none else []) + found
    return choices


def follow_layers(widget: Container, viewer: Any) -> None:
    """The widget's layer choices follow the viewer's layers, until the widget is closed."""
    def reset(_event: Any = None) -> None:
        widget.reset_choices()

    events = (viewer.layers.events.inserted, viewer.layers.events.removed)
    for event in events:
        event.connect(reset)
    widget.native.destroyed.connect(lambda *_: [event.disconnect(reset) for event in events])


class AnnotateWidget(Container):
    """See the module docstring. ``result`` holds the last outcome (for scripts and tests)."""

    def __init__(self, viewer: Any):
        super().__init__(labels=True)
        self.viewer = viewer
        self.result: Any = None
        self.image = ComboBox(label="image", choices=layer_choices(viewer, "Image"))
        self.labels_layer = ComboBox(label="labels (mask)", choices=layer_choices(viewer, "Labels", none=True))
        self.shapes = ComboBox(label="shapes (boxes)", choices=layer_choices(viewer, "Shapes", none=True))
        self.points = ComboBox(label="points", choices=layer_choices(viewer, "Points", none=True))
        self.dataset = FileEdit(label="dataset folder", mode="d")
        self.classes = LineEdit(label="classes (new dataset)", tooltip="comma-separated, e.g. background, mito, er")
        self.tags = Select(label="classes present", choices=lambda _w: self.class_list(),
                           tooltip="tick every class the image shows (leave all unticked to say nothing)")
        self.new_labels = PushButton(text="New Labels layer")
        self.add = PushButton(text="Add to dataset")
        self.output = TextEdit(label="outcome")
        self.output.read_only = True
        how = Label(value=HOW_LABELS)
        how.native.setWordWrap(True)
        self.extend([self.image, self.labels_layer, self.shapes, self.points, self.dataset, self.classes, self.tags,
                     how, self.new_labels, self.add, self.output])
        self.dataset.changed.connect(self._dataset_changed)
        self.classes.changed.connect(self._classes_changed)
        self.image.changed.connect(self._image_changed)
        self.new_labels.changed.connect(self.make_labels_layer)
        self.add.changed.connect(self.add_to_dataset)
        follow_layers(self, viewer)
        self._image_changed(self.image.value)

    # ------------------------------------------------------------------------------ classes

    def dataset_classes(self) -> list[str] | None:
        """The classes of the dataset in the folder, or None when it holds none yet."""
        manifest = Path(self.dataset.value) / MANIFEST_NAME
        try:
            classes = json.loads(manifest.read_text(encoding="utf-8-sig")).get("classes")
        except (OSError, ValueError, AttributeError):
            return None
        return [str(c) for c in classes] if isinstance(classes, list) else None

    def class_list(self) -> list[str]:
        """The dataset's classes, else the ones typed for a new dataset."""
        return self.dataset_classes() or split_list(self.classes.value) or []

    def _dataset_changed(self, _value: Any = None) -> None:
        known = self.dataset_classes()
        if known is not None:
            self.classes.value = ", ".join(known)
        self.classes.enabled = known is None
        self._classes_changed()

    def _classes_changed(self, _value: Any = None) -> None:
        ticked = [c for c in self.tags.value if c in self.class_list()]
        self.tags.reset_choices()
        self.tags.value = ticked

    def _image_changed(self, layer: Any) -> None:
        meta = layer.metadata.get("dspseg") if layer is not None and isinstance(layer.metadata, dict) else None
        if isinstance(meta, dict) and meta.get("dataset") and not str(self.dataset.value).strip(". "):
            self.dataset.value = meta["dataset"]

    # ------------------------------------------------------------------------------ actions

    def make_labels_layer(self, _value: Any = None) -> Any:
        """An empty Labels layer of the image's size (the reader's stack: its shape) in the class colours."""
        if self.image.value is None:
            self.output.value = "error: add or open an image first"
            return None
        classes = self.class_list()
        if not classes:
            self.output.value = "error: choose a dataset folder, or name the classes of a new dataset"
            return None
        layer = self.image.value
        shape = layer.data.shape[:-1] if layer.rgb else layer.data.shape
        labels = self.viewer.add_labels(np.zeros(shape, labels_dtype(len(classes))), name=f"{layer.name} labels",
                                        colormap=label_colours(classes), features=label_features(classes),
                                        scale=layer.scale[-len(shape):], translate=layer.translate[-len(shape):])
        labels.selected_label = 1
        self.reset_choices()
        self.labels_layer.value = labels
        return labels

    def add_to_dataset(self, _value: Any = None) -> Any:
        """Gather the layers, add them to the dataset folder, show the outcome; return the ConvertResult
        (None when refused: the sentence is shown)."""
        self.result = None
        try:
            if self.image.value is None:
                raise UserError("choose the image layer to add (open or add an image first)")
            if not str(self.dataset.value).strip(". "):
                raise UserError("choose the dataset folder to add to (a new or empty folder starts a dataset)")
            ann, notes = gather(self.image.value, self.viewer.dims.current_step, self.labels_layer.value,
                                self.shapes.value, self.points.value, list(self.tags.value))
            before = _record_json(self.dataset.value, ann)
            result = add_to_dataset(ann, self.dataset.value, split_list(self.classes.value))
        except (UserError, OSError) as e:
            self.output.value = sentence(e)
            return None
        self.result = result
        self._dataset_changed()
        rec = record_of(result.manifest, ann)
        done = "added" if before is None else "unchanged" if rec is not None and rec.to_json() == before else "updated"
        self.output.value = "\n".join(describe(result, rec, done, notes))
        return result


def _record_json(data: Any, ann: Any) -> dict | None:
    """The JSON of the record holding the image in the dataset ``data`` now (None: no such record)."""
    from dspseg.data.manifest import load_manifest

    if not (Path(data) / MANIFEST_NAME).is_file():
        return None
    rec = record_of(load_manifest(data), ann)
    return rec.to_json() if rec is not None else None


def record_of(manifest: Any, ann: Any) -> Any:
    """The record of ``manifest`` that holds the annotated image (the same file, else its name)."""
    root = Path(manifest.root)
    for rec in manifest.images:
        if rec.file is None:
            continue
        if rec.file == f"images/{ann.name}":
            return rec
        try:
            if ann.file is not None and os.path.samefile(root / rec.file, ann.file):
                return rec
        except OSError:
            continue
    return None


def describe(result: Any, rec: Any, done: str, notes: list[str]) -> list[str]:
    """The outcome in lines: the record (``done``: added, updated or unchanged), the notes, then
    validate's problems."""
    lines = []
    if rec is not None:
        lines.append(f"{rec.file}: {done}; now {rec.annotation_type}: mask {rec.mask or '-'}, {len(rec.boxes or [])} "
                     f"box(es), {len(rec.points or [])} point(s), labels {rec.labels if rec.labels is not None else '-'}")
    lines.append(f"{result.report.file}: {len(result.manifest.images)} image(s), classes "
                 f"{', '.join(result.manifest.classes)}")
    lines += [f"note: {n}" for n in notes + list(result.warnings)]
    lines.append(f"validate: {len(result.report.errors)} error(s), {len(result.report.warnings)} warning(s)")
    lines += [str(p) for p in result.report.problems]
    return lines
