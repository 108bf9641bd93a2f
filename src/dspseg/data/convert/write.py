"""Write a merge :class:`~dspseg.data.convert.merge.Plan` into a dataset folder, all or nothing.

Nothing that is already in the folder changes until the last step: new images are hard-linked (copied
across file systems) and new masks written next to the existing files, the new ``dataset.json`` is
written under a temporary name and checked by :func:`~dspseg.data.validate.validate_dataset`, and only
when no record this conversion added or changed has an error does one rename put it in place. Any
failure before that (an error, a full disk, Ctrl-C) removes every file and folder this conversion
created, so the folder is byte for byte what it was (a folder created for the dataset goes too).
The user's files are only read.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dspseg.data.convert.common import ConvertError
from dspseg.data.convert.merge import Plan, _same_file
from dspseg.data.io import read_mask, write_mask
from dspseg.data.manifest import MANIFEST_NAME, Manifest, save_manifest
from dspseg.data.validate import ValidationReport, validate_dataset


class _Added:
    """The files and folders one conversion created below ``root``, to remove on failure."""

    def __init__(self, root: Path):
        self.root = root
        self.files: list[Path] = []
        self.dirs: list[Path] = []

    def folder(self, path: Path) -> None:
        """Create ``path`` and its missing parents, remembering each one created."""
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for d in reversed(missing):
            d.mkdir()
            self.dirs.append(d)

    def target(self, rel: str, same: Callable[[Path], bool]) -> Path | None:
        """Where to write ``rel``; ``None`` when a file there already holds it (``same``), an error when
        another file is in the way."""
        path = self.root / rel
        if path.exists() or path.is_symlink():
            if same(path):
                return None
            raise ConvertError(f"{path} is in the way: {self.root / MANIFEST_NAME} names no such file; move it "
                               "away and convert again")
        self.folder(path.parent)
        self.files.append(path)
        return path

    def remove(self) -> None:
        for f in reversed(self.files):
            if f.exists() or f.is_symlink():
                f.unlink()
        for d in reversed(self.dirs):
            shutil.rmtree(d, ignore_errors=True)


def write_plan(plan: Plan, data: Path, name: str, classes: list[str], ignore_index: int,
               group_every: int | None = None) -> tuple[Manifest, bool, ValidationReport]:
    """Add ``plan``'s files to ``data``, check the result and put the new ``dataset.json`` in place.

    Returns the manifest, whether the images are hard links (``False``: some were copied) and the
    validation report of the whole dataset (``group_every``: the existing dataset's, kept). Raises :class:`ConvertError` (the dataset unchanged) when
    a record this conversion added or changed has an error.
    """
    added = _Added(data)
    linked = True
    manifest = Manifest(name=name, classes=classes, ignore_index=ignore_index, group_every=group_every,
                        images=plan.records)
    manifest.root = data
    tmp = data / f".{MANIFEST_NAME}.{os.getpid()}.convert"
    try:
        added.folder(data)
        for src, rel in plan.links:
            dst = added.target(rel, lambda p, src=src: _same_file(src, p))
            if dst is None:
                continue
            if linked:
                try:
                    os.link(src, dst)
                except OSError:
                    linked = False
            if not linked:
                shutil.copy2(src, dst)
        for source, rel in plan.masks:
            mask = source.read(classes, ignore_index)
            dst = added.target(rel, lambda p, mask=mask: np.array_equal(read_mask(p), mask))
            if dst is not None:
                write_mask(dst, mask)
        save_manifest(manifest, tmp)
        report = validate_dataset(tmp)
        final = str(data / MANIFEST_NAME)
        report.file = final
        report.problems = [dataclasses.replace(p, file=final) if p.file == str(tmp) else p for p in report.problems]
        errors = [p for p in report.errors if any(f"({f})" in p.where for f in plan.touched)]
        if errors:
            raise ConvertError(f"{len(errors)} problem(s) in the records this conversion adds or changes; nothing "
                               f"was written to {data}:\n" + "\n".join(f"  - {p}" for p in errors))
        os.replace(tmp, data / MANIFEST_NAME)
    except BaseException as e:
        from dspseg.fsutil import disk_full, is_disk_full

        full = is_disk_full(e, data)
        if tmp.exists():
            tmp.unlink()
        added.remove()
        if full:
            raise disk_full(data / MANIFEST_NAME, e, kept=f"{data} is as it was (the files this conversion had "
                            "added were removed)") from None
        raise
    return manifest, linked, report
