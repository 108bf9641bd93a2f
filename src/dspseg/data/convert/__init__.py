"""Convert annotations made in other tools into a dspseg dataset folder, or add them to one.

    >>> result = convert_dataset("coco", "ann.json", "images/", "data/")                   # doctest: +SKIP
    >>> convert_dataset("qupath", "geojson/", "images/", into="data/", background="bg")  # doctest: +SKIP

Formats (:data:`FORMATS`): ``coco`` (:mod:`.coco`), ``napari`` (:mod:`.napari`), ``qupath``
(:mod:`.qupath`) and ``labels`` (:mod:`.labels`); each module's docstring states its rules. Class
names go through :mod:`.classes` (``--class-map``, case), records through :mod:`.merge` (one record
per image, whatever the sources; conflicts refused) and files through :mod:`.write` (all or nothing).
Images are hard-linked into ``DATA/images`` (copied when DATA is on another file system), never
modified. For napari, QuPath and label folders, images without annotation files join as unlabeled
records (DSP learns from them); for COCO exactly the images listed in the file are used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dspseg.data.convert.classes import ClassNames, parse_class_map, resolve_classes
from dspseg.data.convert.common import Collected, ConvertError, ImageIndex, check_out
from dspseg.data.convert.merge import Merger, existing_dataset
from dspseg.data.convert.write import write_plan
from dspseg.data.manifest import Manifest
from dspseg.data.rules import ignore_is_class
from dspseg.data.validate import ValidationReport

FORMATS = ("coco", "napari", "qupath", "labels")
ON_UNMATCHED = ("skip", "fail")

__all__ = ["FORMATS", "ON_UNMATCHED", "ConvertError", "ConvertResult", "convert_dataset", "merge_collected"]


@dataclass
class ConvertResult:
    manifest: Manifest
    linked: bool  # True: images are hard links to the originals; False: copies
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # inputs naming no image (--on-unmatched skip)
    report: ValidationReport | None = None  # the whole dataset, validated before it was put in place
    added: int = 0  # new records
    merged: int = 0  # existing records this conversion's images matched


def convert_dataset(format: str, input: str | Path, images: str | Path, out: str | Path | None = None,
                    classes: list[str] | None = None, name: str | None = None, ignore_index: int | None = None,
                    class_column: str | None = None, group_pattern: str | None = None, *,
                    into: str | Path | None = None, class_map: str | dict[str, str] | None = None,
                    background: str | None = None, on_unmatched: str = "skip",
                    instances: str | None = None) -> ConvertResult:
    """Read ``input`` in ``format``, find its images in ``images`` and write the dataset folder.

    ``out`` must be new or empty; ``into`` may also hold a dataset, whose records this conversion's
    annotations join (:mod:`.merge`). ``classes`` fixes the class list and order of a new dataset
    (for ``labels``: the names of the ids in the label images, required unless ``instances``);
    otherwise the classes found (COCO in category-id order, others in order of appearance) or the
    existing dataset's. ``ignore_index`` is the label images' value for "not annotated" (default:
    the dataset's, else 255). ``class_map`` (``"tool=class,..."`` or a dict) renames classes;
    ``background`` names the never-drawn class of box/point images (it joins their ``labels``) and of
    the pixels between instances; ``on_unmatched`` (``skip``/``fail``) handles inputs naming no image;
    ``instances`` reads label images as one id per object of that class (:mod:`.labels`);
    ``group_pattern`` is a regular expression on image names whose first group (or whole match)
    names the sub-volume. Raises :class:`ConvertError` (a UserError) naming the file, the entry and
    the fix; then nothing was written.
    """
    from dspseg.data.convert.coco import read_coco
    from dspseg.data.convert.labels import label_files, read_labels
    from dspseg.data.convert.napari import read_napari
    from dspseg.data.convert.qupath import read_qupath

    if format not in FORMATS:
        raise ConvertError(f"unknown format '{format}'; choose one of {', '.join(FORMATS)}")
    if (out is None) == (into is None):
        raise ConvertError("give --out (a new dataset folder) or --into (a new or existing dataset), not "
                           f"{'both' if out is not None else 'neither'}")
    if on_unmatched not in ON_UNMATCHED:
        raise ConvertError(f"--on-unmatched must be skip or fail, got '{on_unmatched}'")
    input, images, data = Path(input), Path(images), Path(out if out is not None else into)
    if out is not None:
        check_out(data)
    existing = existing_dataset(data) if into is not None else None
    if not input.exists():
        raise ConvertError(f"{input} does not exist; give the annotation file or folder")
    src_ignore = ignore_index if ignore_index is not None else existing.ignore_index if existing else 255
    if not 0 <= src_ignore <= 65535:
        raise ConvertError(f"--ignore-index must lie in 0..65535, got {src_ignore}")
    if format == "labels" and not classes and not instances:
        raise ConvertError("the labels format needs --classes (names of the ids 0, 1, 2, ... in the label images) "
                           "or --instances CLASS (one id per object)")
    if format == "labels" and classes and not instances and ignore_is_class(src_ignore, len(classes)):
        raise ConvertError(f"--ignore-index {src_ignore} is also the id of class '{classes[src_ignore]}'; "
                           "give the value of unannotated pixels")
    if format != "labels" and instances:
        raise ConvertError(f"--instances reads label images; it does not apply to the {format} format")
    class_map = parse_class_map(class_map) if not isinstance(class_map, dict) else class_map
    known = existing.classes if existing else classes
    exclude = set(label_files(input)) if format == "labels" else ({input} if input.is_file() else set())
    col = Collected(ImageIndex(images, exclude), ClassNames(known, class_map), on_unmatched)
    if background:
        background = col.note_class(background, "--background")
    if format == "coco":
        read_coco(input, col)
    elif format == "napari":
        read_napari(input, col, class_column)
    elif format == "qupath":
        read_qupath(input, col)
    else:
        read_labels(input, col, list(classes or []), src_ignore, instances, background)
    if col.skipped and not col.records:
        raise ConvertError(f"no input names an image of --images {images}: {col.skipped[0].removesuffix('; skipped')}")
    if classes and format != "labels":
        for c in classes:
            col.note_class(c, "--classes")
    if format != "coco":
        extra = [rel for rel in col.index.files if rel not in col.records]
        for rel in extra:
            col.image(rel)
        if extra:
            col.warnings.append(f"{len(extra)} image(s) without annotations in this input joined as unlabeled "
                                "images (or stay as they are in the dataset)")
    return merge_collected(col, data, existing, classes, name, existing.ignore_index if existing else src_ignore,
                           group_pattern, background)


def merge_collected(col: Collected, data: Path, existing: Manifest | None, classes: list[str] | None,
                    name: str | None, ignore_index: int, group_pattern: str | None = None,
                    background: str | None = None) -> ConvertResult:
    """The last steps of every conversion: what ``col`` collected merged into the dataset ``data``
    (``existing``, or ``None`` for a new one) by :mod:`.merge` and written by :mod:`.write`.

    ``classes`` as for :func:`convert_dataset`; ``ignore_index`` is the dataset's (new masks are written
    with it). Raises :class:`ConvertError` on a conflict or a problem in a record added or changed;
    then nothing was written. The napari plugin's "Add to dataset" calls it too.
    """
    final = resolve_classes(col.names, classes, str(data) if existing else None)
    col.warnings.extend(col.names.notes())
    col.warnings.extend(f"--class-map: no annotation is called '{t}'" for t in col.names.unused_map())
    plan = Merger(data, existing, final, ignore_index, group_pattern, background).plan(col)
    if plan.conflicts:
        raise ConvertError(f"{len(plan.conflicts)} conflict(s) between the input and {data}; nothing was written:\n"
                           + "\n".join(f"  - {c}" for c in plan.conflicts))
    if plan.repeated:
        col.warnings.append(f"{plan.repeated} box(es)/point(s) were already in the dataset; kept once")
    manifest, linked, report = write_plan(plan, data, existing.name if existing else name or data.name,
                                          final, ignore_index, existing.group_every if existing else None)
    return ConvertResult(manifest, linked, col.warnings, col.skipped, report, plan.added, plan.merged)
