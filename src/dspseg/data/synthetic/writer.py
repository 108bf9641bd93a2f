"""Write a synthetic dataset folder: ``images/``, ``masks/`` (uint8 TIFF) and ``dataset.json``.

Image ``i`` belongs to group ``g = floor(i * G / N)`` (contiguous blocks of near-equal size) and is
named ``gXX_iYYYY.tif`` (group, global index). Every group draws its :class:`GroupStyle` from its
own seed sequence and every image from another, both derived from ``seed``, so the output is
byte-identical for the same arguments. A marker file ``.dspseg-synthetic.json`` records the
arguments and the group styles; only a folder carrying it (or an empty one) is ever written into.

The dataset is built whole in a hidden sibling folder and then moved into place (its ``images/``,
``masks/``, ``dataset.json`` and marker replace those of a previous synthetic dataset; other files
stay), so an interrupt or a full disk leaves the folder as it was: never a partial dataset. The
command holds the folder's lock (:func:`dspseg.fslock.folder_lock`) meanwhile.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from dspseg.cli_support import holds_anything, not_ours
from dspseg.data.manifest import MANIFEST_NAME, ImageRecord, Manifest, save_manifest
from dspseg.data.synthetic.scene import generate_image
from dspseg.data.synthetic.style import SYNTH_CLASSES, GroupStyle
from dspseg.fslock import folder_lock, sibling_lock_file
from dspseg.fsutil import disk_full, is_disk_full

MARKER = ".dspseg-synthetic.json"
_OWN_FILE = re.compile(r"^(images|masks)/g\d+_i\d+\.tif$")


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


def _previous_files(out: Path) -> list[Path]:
    """Files of an earlier synthetic dataset in ``out`` (from its manifest), or raise ValueError
    when ``out`` holds anything else and is not empty."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output '{out}' is a file; give a folder path for the synthetic dataset")
    if not holds_anything(out):
        return []
    marker, manifest = out / MARKER, out / MANIFEST_NAME
    if not marker.is_file():
        raise not_ours(out, f"is not a dspseg synthetic dataset (no {MARKER})",
                       "choose a new or empty folder - dspseg never overwrites other files", label=f"output folder '{out}'")
    if not manifest.is_file():  # an earlier run was interrupted before it wrote the manifest
        return []
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
        names = [rec[key] for rec in raw["images"] for key in ("file", "mask") if key in rec]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"output folder '{out}' holds a synthetic dataset whose {MANIFEST_NAME} "
                         f"cannot be read ({e}); delete the folder or choose another") from None
    return [out / n for n in names if isinstance(n, str) and _OWN_FILE.match(n)]


def _write_tif(path: Path, array: np.ndarray) -> None:
    tifffile.imwrite(path, array, photometric="minisblack", metadata=None)


def _seeds(seed: int) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    style_seeds, image_seeds = np.random.SeedSequence(seed).spawn(2)
    return style_seeds, image_seeds


def group_styles(seed: int, groups: int) -> list[GroupStyle]:
    """The :class:`GroupStyle` of each group for ``seed`` (independent of the number of images)."""
    return [GroupStyle.sample(np.random.default_rng(s)) for s in _seeds(seed)[0].spawn(groups)]


def iter_synthetic(n_images: int, size: int | tuple[int, int], seed: int,
                   groups: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield ``(index, group, image, mask)`` for every image of the dataset, in order; exactly the
    arrays :func:`write_synthetic_dataset` writes. Image ``i`` is in group ``i * groups // n_images``
    and is drawn from its own seed, so it does not depend on the images before it."""
    styles = group_styles(seed, groups)
    for i, image_seed in enumerate(_seeds(seed)[1].spawn(n_images)):
        g = i * groups // n_images
        image, mask = generate_image(size, styles[g], np.random.default_rng(image_seed))
        yield i, g, image, mask


def write_synthetic_dataset(out: str | Path, n_images: int = 256, size: int = 128, seed: int = 0,
                            groups: int = 8, name: str = "synthetic-em") -> Manifest:
    """Generate ``n_images`` sections of ``size`` x ``size`` px in ``groups`` sub-volumes into ``out``.

    Writes ``out/images/gXX_iYYYY.tif`` (uint8 grey), ``out/masks/gXX_iYYYY.tif`` (uint8 class ids
    into ``SYNTH_CLASSES``) and ``out/dataset.json`` (format dspseg/1, ignore_index 255, every
    record with file, group and mask, no split). Same arguments give byte-identical files.
    Refuses (ValueError) to write into a non-empty folder that is not a previous synthetic dataset;
    when it is one, files of the old dataset that the new one does not rewrite are removed.
    """
    n_images = _check_int("n_images", n_images, 1)
    size = _check_int("size", size, 16)
    seed = _check_int("seed", seed, 0)
    groups = _check_int("groups", groups, 1)
    if groups > n_images:
        raise ValueError(f"groups ({groups}) cannot exceed n_images ({n_images}); every group needs an image")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    out = Path(out)
    with folder_lock(out, sibling_lock_file(out)):
        _previous_files(out)  # refuses a folder holding anything else
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.synth."))
        try:
            manifest = _write_into(tmp, n_images, size, seed, groups, name)
            _move_in(tmp, out)
        except BaseException as e:
            full = is_disk_full(e, out.parent)
            shutil.rmtree(tmp, ignore_errors=True)
            if full:
                kept = (f"the previous dataset in {out} is intact" if (out / MANIFEST_NAME).is_file()
                        else f"nothing was written to {out}")
                raise disk_full(out, e, kept=f"{kept} (the partial one was removed)") from None
            raise
    manifest.root = out
    return manifest


def _write_into(tmp: Path, n_images: int, size: int, seed: int, groups: int, name: str) -> Manifest:
    """The whole dataset in the (new, empty) folder ``tmp``."""
    (tmp / "images").mkdir()
    (tmp / "masks").mkdir()
    styles = group_styles(seed, groups)
    marker = {"generator": "dspseg.data.synthetic", "n_images": n_images, "size": size, "seed": seed,
              "groups": groups, "styles": [s.to_dict() for s in styles]}
    (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    records: list[ImageRecord] = []
    for i, g, image, mask in iter_synthetic(n_images, size, seed, groups):
        stem = f"g{g:02d}_i{i:04d}.tif"
        for sub, array in (("images", image), ("masks", mask)):
            _write_tif(tmp / sub / stem, array)
        records.append(ImageRecord(file=f"images/{stem}", group=f"g{g:02d}", mask=f"masks/{stem}"))
    manifest = Manifest(name=name, classes=list(SYNTH_CLASSES), ignore_index=255, images=records)
    manifest.root = tmp
    save_manifest(manifest, tmp)
    return manifest


def _move_in(tmp: Path, out: Path) -> None:
    """Put the finished dataset ``tmp`` in place: its entries replace those of the same name in
    ``out``; files a user put into ``out`` (or into its ``images/``, ``masks/``) stay."""
    if not out.exists():
        tmp.replace(out)
        return
    for sub in ("images", "masks"):
        for old in (out / sub).iterdir() if (out / sub).is_dir() else []:
            if not _OWN_FILE.match(f"{sub}/{old.name}") and not (tmp / sub / old.name).exists():
                old.replace(tmp / sub / old.name)  # not ours: it moves along
    trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
    for entry in sorted(tmp.iterdir()):
        if (out / entry.name).exists():
            (out / entry.name).replace(trash / entry.name)
        entry.replace(out / entry.name)
    tmp.rmdir()
    shutil.rmtree(trash, ignore_errors=True)
