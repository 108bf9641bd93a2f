"""A folder of label images (one class id per pixel) → records with masks.

Each label image is named after its image (``cell01.tif``, ``cell01_mask.png``, ``cell01-labels.tif``;
the longest image name it starts with wins) and must have the image's height and width. Values are
class ids ``0 .. len(classes) - 1`` (``--classes`` names them in order) or ``--ignore-index`` for
unannotated pixels; anything else is refused. Masks are rewritten as TIFF (uint8, or uint16 above 255).
"""

from __future__ import annotations

from pathlib import Path

from dspseg.data.convert.common import Collected, ConvertError, check_mask_values

LABEL_SUFFIXES = (".tif", ".tiff", ".png")


def label_files(path: Path) -> list[Path]:
    """The label images in the folder ``path`` (not recursive), sorted."""
    if not path.is_dir():
        raise ConvertError(f"{path}: the labels format needs a folder of label images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise ConvertError(f"{path} holds no .tif, .tiff or .png label image")
    return files


def read_labels(path: Path, col: Collected, classes: list[str], ignore_index: int) -> None:
    """Attach every label image in ``path`` to its image in ``col`` after checking shape and values."""
    for f in label_files(path):
        rel, _ = col.index.match_prefix(f.stem, str(f))
        ann = col.image(rel)
        if ann.mask is not None:
            raise ConvertError(f"{f} and {ann.mask} both belong to the image {rel}; keep one label image per image")
        check_mask_values(f, len(classes), ignore_index, col.index.size(rel))
        ann.mask = f
    for c in classes:
        col.note_class(c, "--classes")
