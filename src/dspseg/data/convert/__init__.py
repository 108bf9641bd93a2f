"""Convert annotations made in other tools into a dspseg dataset folder.

    >>> result = convert_dataset("coco", "ann.json", "images/", "data/")      # doctest: +SKIP
    >>> result.manifest.images[0].boxes                                        # doctest: +SKIP

Formats (:data:`FORMATS`): ``coco`` (:mod:`.coco`), ``napari`` (:mod:`.napari`), ``qupath``
(:mod:`.qupath`) and ``labels`` (:mod:`.labels`); each module's docstring states its rules. Images are
hard-linked into ``OUT/images`` (copied when OUT is on another file system), never modified. For
napari, QuPath and label folders, images without annotation files join as unlabeled records (DSP
learns from them); for COCO exactly the images listed in the file are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dspseg.data.convert.common import (Collected, ConvertError, ImageIndex, check_out, resolve_classes,
                                        write_dataset)
from dspseg.data.manifest import Manifest

FORMATS = ("coco", "napari", "qupath", "labels")

__all__ = ["FORMATS", "ConvertError", "ConvertResult", "convert_dataset"]


@dataclass
class ConvertResult:
    manifest: Manifest
    linked: bool  # True: images are hard links to the originals; False: copies
    warnings: list[str] = field(default_factory=list)


def convert_dataset(format: str, input: str | Path, images: str | Path, out: str | Path,
                    classes: list[str] | None = None, name: str | None = None, ignore_index: int = 255,
                    class_column: str | None = None, group_pattern: str | None = None) -> ConvertResult:
    """Read ``input`` in ``format``, find its images in ``images`` and write the dataset folder ``out``.

    ``classes`` fixes the class list and order (required for ``labels``; otherwise the classes found,
    COCO in category-id order, others in order of appearance). ``group_pattern`` is a regular
    expression on image names whose first group (or whole match) names the sub-volume. Raises
    :class:`ConvertError` (a UserError) naming the file, the entry and the fix.
    """
    from dspseg.data.convert.coco import read_coco
    from dspseg.data.convert.labels import label_files, read_labels
    from dspseg.data.convert.napari import read_napari
    from dspseg.data.convert.qupath import read_qupath

    if format not in FORMATS:
        raise ConvertError(f"unknown format '{format}'; choose one of {', '.join(FORMATS)}")
    input, images, out = Path(input), Path(images), Path(out)
    check_out(out)
    if not input.exists():
        raise ConvertError(f"{input} does not exist; give the annotation file or folder")
    if not 0 <= ignore_index <= 65535:
        raise ConvertError(f"--ignore-index must lie in 0..65535, got {ignore_index}")
    if format == "labels" and not classes:
        raise ConvertError("the labels format needs --classes (names of the ids 0, 1, 2, ... in the label images)")
    exclude = set(label_files(input)) if format == "labels" else ({input} if input.is_file() else set())
    col = Collected(ImageIndex(images, exclude))
    if format == "coco":
        read_coco(input, col)
    elif format == "napari":
        read_napari(input, col, class_column)
    elif format == "qupath":
        read_qupath(input, col)
    else:
        read_labels(input, col, list(classes or []), ignore_index)
    if format != "coco":
        extra = [rel for rel in col.index.files if rel not in col.records]
        for rel in extra:
            col.image(rel)
        if extra:
            col.warnings.append(f"{len(extra)} image(s) without annotations joined as unlabeled images")
    final = resolve_classes(col, classes)
    manifest, linked = write_dataset(col, out, final, name or out.name, ignore_index, group_pattern)
    return ConvertResult(manifest, linked, col.warnings)
