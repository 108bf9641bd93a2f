"""Write a reduced dataset folder (``dspseg simulate``): the ACR protocol of
:mod:`dspseg.data.acr.protocol` applied to a fully masked dataset, saved next to it.

The folder gets ``dataset.json`` (every record with its ``split``), ``simulation.json`` (source,
options, counts, the ordered training list) and the image and kept mask files under the same
relative paths as in the source, as hard links (copies, with a warning, across filesystems). Volume
records stay volume records: a local volume store (a zarr/N5 folder, an HDF5 or TIFF file) is
hard-linked file by file under the same relative path, a URL (``s3://``...) is named as it is. The
source is never written to; a non-empty ``--out`` is refused unless it holds a previous simulation
and nothing else, which is then replaced by building a temporary sibling and swapping it in.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from dspseg.cli_support import holds_anything, not_ours
from dspseg.data.acr.protocol import check_options, plan_reduction, reduce_records, reduced_manifest
from dspseg.data.manifest import MANIFEST_NAME, Manifest, load_manifest, save_manifest
from dspseg.data.volume_records import REMOTE, VolumeMask
from dspseg.errors import DatasetError, OutputFolderError

SIMULATION_FILE = "simulation.json"
SIMULATION_FORMAT = "dspseg-simulation/1"
_LINK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


@dataclass
class SimulationResult:
    """A written simulation: the reduced dataset (``manifest.root == out``) and what was done."""

    manifest: Manifest
    counts: dict[str, int]  # training images per annotation type
    split_sizes: dict[str, int]
    out: Path
    acr: float
    scenario: str
    split: int
    n_splits: int
    seed: int
    n_masked: int
    order: list[str]  # training image files, mask-keeping first
    linked: bool  # True: files are hard links to the originals; False: copies (other filesystem)
    warnings: list[str] = field(default_factory=list)


def simulate_dataset(data: str | Path, out: str | Path, acr: float, scenario: str, split: int, n_splits: int = 3,
                     seed: int = 0, point_mode: str = "interior") -> SimulationResult:
    """Write the reduced dataset of split ``split`` at ACR ``acr`` to the new folder ``out``.

    ``out`` gets ``dataset.json`` (every record with its ``split``), ``simulation.json`` (source,
    options, counts, the ordered training list) and the image and kept mask files under the same
    relative paths as in the source, as hard links (same inode, no bytes copied; copies with a
    warning when ``out`` is on another filesystem). The source dataset is never written to. A
    non-empty ``out`` is refused unless it holds a previous simulation and nothing else; that one is
    replaced by building a temporary sibling folder and swapping it in.
    """
    from dspseg.fslock import folder_lock, sibling_lock_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out, sibling_lock_file(out)):  # one writer; ``out`` is replaced by a rename
        return _simulate_into(data, out, acr, scenario, split, n_splits, seed, point_mode)


def _simulate_into(data: str | Path, out: Path, acr: float, scenario: str, split: int, n_splits: int, seed: int,
                   point_mode: str) -> SimulationResult:
    """The body of :func:`simulate_dataset` once ``out`` is held."""
    check_options(acr, scenario, split, n_splits)
    source = load_manifest(data)
    _check_out(source.root, out)
    plan = plan_reduction(source, acr, scenario, split, n_splits, seed)
    records, warnings = reduce_records(source, plan, point_mode, seed)
    reduced = reduced_manifest(source, records, acr, scenario, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        _ordinary_mode(tmp, 0o777)  # mkdtemp/mkstemp make private 0700/0600 entries
        linked, why = _place_files(source, reduced, tmp)
        if not linked:
            warnings.append(f"{out} is on another filesystem than {source.root} ({why}): the files were copied")
        save_manifest(reduced, tmp)
        order = [source.images[i].file or source.images[i].source for i in plan.order]
        info = {"format": SIMULATION_FORMAT, "source": str(Path(os.path.realpath(source.root))),
                "acr": acr, "scenario": scenario, "split": split, "n_splits": n_splits, "seed": seed,
                "point_mode": point_mode, "n_masked": plan.n_masked,
                "realised_acr": len(plan.order) / plan.n_masked, "counts": plan.counts,
                "split_sizes": plan.split_sizes,
                "groups": {p: sorted({source.images[i].group_name for i in getattr(plan.split, p)})
                           for p in ("train", "val", "test")},
                "train_order": [{"file": f, "annotation": plan.assignment[i]} for f, i in zip(order, plan.order)],
                "files": "hard links to the source files (editing one in place edits the other)" if linked
                else "copies of the source files"}
        (tmp / SIMULATION_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        _ordinary_mode(tmp / MANIFEST_NAME, 0o666)
        _swap_in(tmp, out)
    except BaseException as e:
        from dspseg.fsutil import disk_full, is_disk_full

        full = is_disk_full(e, out.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            kept = (f"the previous simulation in {out} is intact" if out.exists()
                    else f"nothing was written to {out} (the partial folder was removed)")
            raise disk_full(out, e, kept=kept) from None
        raise
    return SimulationResult(load_manifest(out), plan.counts, plan.split_sizes, out, acr, scenario, split, n_splits,
                            seed, plan.n_masked, order, linked, warnings)


def _ordinary_mode(path: Path, full: int) -> None:
    """Give a file or folder we created the permissions the user's umask gives new files."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, full & ~umask)


def _check_out(source_root: Path, out: Path) -> None:
    src, dst = Path(os.path.realpath(source_root)), Path(os.path.realpath(out))
    if dst == src or src in dst.parents:
        raise OutputFolderError(f"--out {out} is inside the input dataset {source_root}; dspseg never writes into the "
                         f"input. Fix: choose a folder outside it")
    if dst in src.parents:
        raise OutputFolderError(f"--out {out} contains the input dataset {source_root}. Fix: choose a new folder")
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out} is a file. Fix: choose a new folder")
    if holds_anything(out):
        _previous_simulation(out)  # raises unless it is one


def _previous_simulation(out: Path) -> None:
    """Raise :class:`~dspseg.errors.OutputFolderError` unless ``out`` holds a previous simulation and
    nothing that it did not write."""
    fix = "choose another --out, or empty it yourself"
    try:
        info = json.loads((out / SIMULATION_FILE).read_text(encoding="utf-8"))
        if info.get("format") != SIMULATION_FORMAT:
            raise ValueError
        old = load_manifest(out)
    except (OSError, ValueError, AttributeError):
        raise not_ours(out, "does not hold a previous dspseg simulation",
                       f"dspseg replaces only its own folders. Fix: {fix}") from None
    expected = {MANIFEST_NAME, SIMULATION_FILE}
    for rec in old.images:
        expected.update(posixpath.normpath(p) for p in (rec.file, rec.mask) if isinstance(p, str))
    stores = _local_stores(old)
    extra = []
    for folder, dirs, files in os.walk(out):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            rel = Path(folder, name).relative_to(out).as_posix()
            ours = rel in expected or any(rel.startswith(f"{store}/") for store in stores) or rel in stores
            if not ours or os.path.islink(os.path.join(folder, name)):
                extra.append(rel)
    if extra:
        raise OutputFolderError(f"--out {out} holds a previous simulation plus files it did not write "
                         f"({', '.join(sorted(extra)[:3])}{' ...' if len(extra) > 3 else ''}); they would be "
                         f"deleted. Fix: move them away or {fix}")


def _local_stores(manifest: Manifest) -> list[str]:
    """The local volumes (image and label) the records name, as normalised relative paths; a store
    inside another one listed is left out (placing the outer one places it)."""
    paths = set()
    for rec in manifest.images:
        for ref in (rec.volume, rec.mask.volume if isinstance(rec.mask, VolumeMask) else None):
            if ref is not None and not ref.url.startswith(REMOTE):
                paths.add(posixpath.normpath(ref.url))
    return [p for p in sorted(paths) if not any(p.startswith(f"{q}/") for q in paths)]


class _Placer:
    """Hard-links (or, across filesystems, copies) source files into the new folder, once each."""

    def __init__(self, folder: Path):
        self.folder, self.linked, self.why, self.placed = folder, True, "", set()

    def file(self, src: Path, rel: str) -> None:
        if rel in self.placed:
            return
        self.placed.add(rel)
        dst = self.folder / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if self.linked:
            try:
                os.link(src, dst)
                return
            except OSError as e:
                if e.errno not in _LINK_ERRNOS:
                    raise
                self.linked, self.why = False, e.strerror or str(e)
        shutil.copy2(src, dst)

    def tree(self, src: Path, rel: str) -> None:
        """A volume store: a file, or every file of a folder (zarr, N5), under ``rel``."""
        if not src.is_dir():
            self.file(src, rel)
            return
        (self.folder / rel).mkdir(parents=True, exist_ok=True)
        for folder, dirs, files in os.walk(src):
            sub = Path(folder).relative_to(src).as_posix()
            for d in dirs:
                (self.folder / rel / sub / d).mkdir(parents=True, exist_ok=True)
            for name in files:
                self.file(Path(folder) / name, posixpath.normpath(f"{rel}/{sub}/{name}"))


def _reserved(rel: str, field: str, what: str) -> None:
    if rel in (MANIFEST_NAME, SIMULATION_FILE, "."):
        raise DatasetError(f"field '{field}' of {what}: this name is reserved in a simulation folder. "
                           f"Fix: rename it in the source dataset")


def _place_files(source: Manifest, reduced: Manifest, folder: Path) -> tuple[bool, str]:
    """Hard-link (or copy) every image and kept mask file of ``reduced``, and every local volume store
    its records name, into ``folder``; rewrite file paths to their normalised form.

    Returns (linked, reason for copying). Paths keep their relative form, normalised.
    """
    placer = _Placer(folder)
    for rec in reduced.images:
        for attr in ("file", "mask"):
            rel = getattr(rec, attr)
            if not isinstance(rel, str):
                continue
            new = posixpath.normpath(rel)
            _reserved(new, attr, rel)
            setattr(rec, attr, new)
            placer.file(source.path(rel), new)
    for store in _local_stores(reduced):
        _reserved(store, "volume.url", store)
        placer.tree(source.path(store), store)
    return placer.linked, placer.why


def _swap_in(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an empty folder or a previous simulation."""
    if out.is_dir() and not holds_anything(out):
        out.rmdir()
    if not out.exists():
        os.rename(tmp, out)
        return
    _previous_simulation(out)  # re-check just before deleting anything
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rename(out, old / "previous")
    os.rename(tmp, out)
    shutil.rmtree(old)
