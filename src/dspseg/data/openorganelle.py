"""Import OpenOrganelle (COSEM / CellMap) ground-truth crops as a dspseg dataset of 2D sections.

Public layout (zarr v2 stores with OME-NGFF 0.4 multiscale metadata), below a source root::

    {ds}/{ds}.zarr/recon-1/em/fibsem-uint8/s0, s1, ...                       raw FIB-SEM, uint8
    {ds}/{ds}.zarr/recon-1/labels/groundtruth/crop{N}/all/s0, s1, ...         atomic COSEM label ids
    {ds}/{ds}.zarr/recon-1/labels/groundtruth/crop{N}/{class}/s0, ...         one array per class (unused)

Each multiscale group's ``.zattrs`` gives, per level, a ``scale`` and a ``translation`` in nanometres
(axes named z, y, x). A voxel with index ``i`` sits at ``p = scale * i + translation``. Ground truth is
annotated at twice the raw resolution, so label level ``s0`` has no raw partner; we take, per crop, the
finest label level whose scale equals the scale of some raw level (rtol 1e-3), and place the crop in
that raw level (:mod:`dspseg.data.ngff` reads the levels and computes the offset)::

    offset = round((translation_label - translation_raw) / scale)        (voxels, per axis)
    raw_region = raw[offset : offset + label.shape]                       same shape as the label crop

Every z plane of the crop becomes one image (``images/crop{N}_z{k}.tif``, uint8) and one mask
(``masks/crop{N}_z{k}.tif``); label ids are merged into 17 classes by
:data:`dspseg.data.cosem_classes.MERGE`; a merged class present in fewer than ``min_crops`` crops is
mapped to the ignore index and left out of the class list; ``group`` = the crop name, so splits
never cut a crop.

With ``as_volumes`` nothing is copied: every z plane of a crop is a volume record of ``dataset.json``
(``dspseg/2``, :mod:`dspseg.data.volume_records`) naming the section of the raw level's ``region``
(the crop's box in it) and, as its mask, the same section of the crop's ``all`` label level, whose
COSEM ids the record maps to the kept classes (``mask.classes``; other ids are unannotated). The
arrays are named by URL (``s3://janelia-cosem-datasets/...``, read anonymously when training), or,
for a local copy, by a path relative to the dataset folder, which must then hold the copy::

    {"volume": {"url": "s3://janelia-cosem-datasets/jrc_hela-2/jrc_hela-2.zarr", "array": "recon-1/em/fibsem-uint8",
                "level": "s1", "region": {"start": [z0, y0, x0], "stop": [z1, y1, x1]}}, "axis": "z", "index": k,
     "mask": {"volume": {"url": ..., "array": "recon-1/labels/groundtruth/crop1/all", "level": "s1"},
              "classes": {"cytosol": [35], "mito": [3, 4, 5], ...}}, "group": "crop1"}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dspseg.cli_support import refuse_used_folder
from dspseg.data.cosem_classes import CLASSES, DATASETS, DEFAULT_SOURCE, IGNORE, apply_lut, merge_lut
from dspseg.data.io import write_image, write_mask
from dspseg.data.manifest import MANIFEST_NAME, ImageRecord, Manifest, save_manifest
from dspseg.data.volume_records import VolumeMask
from dspseg.data.volumes import VolumeRef, ngff
from dspseg.data.volumes.ngff import Level, crop_offset, match_levels
from dspseg.data.volumes.ref import Region
from dspseg.errors import OpenOrganelleError, VolumeError
from dspseg.fsutil import new_folder, write_text_atomic

RAW_PATH = "recon-1/em/fibsem-uint8"
GT_PATH = "recon-1/labels/groundtruth"
PROVENANCE = "openorganelle.json"


@dataclass
class CropInfo:
    """What was imported from one crop: raw/label level used, voxel offset in that raw level, planes."""

    name: str
    label_level: str
    raw_level: str
    scale_nm: tuple[float, float, float]
    offset: tuple[int, int, int]
    shape: tuple[int, int, int]
    n_images: int
    classes: list[str]


@dataclass
class ImportResult:
    manifest: Manifest
    crops: list[CropInfo]
    dropped: dict[str, int]  # rare merged class -> number of crops it occurs in
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- store


def read_levels(attrs: dict, where: str) -> list[Level]:
    """The multiscale levels of a group (:func:`dspseg.data.volumes.ngff.read_levels`), finest first;
    a level without z, y, x axes or bad metadata is an OpenOrganelleError (one sentence)."""
    try:
        return ngff.read_levels(attrs, where)
    except VolumeError as e:
        raise OpenOrganelleError(f"{where}: {e.reason} (field '{e.field}'). Fix: {e.fix}") from None


def _open_group(url: str, remote: bool) -> Any:
    import zarr

    if remote:
        return zarr.open_group(url, mode="r", storage_options={"anon": True})
    return zarr.open_group(url, mode="r")


def _silence_abandoned_reads() -> None:
    """After a failed remote read, s3fs/aiobotocore leave coroutines behind whose clean-up raises
    "ValueError: <Token ...> was created in a different Context" at exit, printed as 'Exception
    ignored' tracebacks. Drop exactly those (other unraisable errors still reach the old hook)."""
    import sys

    previous = sys.unraisablehook
    if getattr(previous, "_dspseg_filter", False):
        return

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, ValueError) and "was created in a different Context" in str(exc):
            return
        previous(unraisable)

    hook._dspseg_filter = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def open_dataset(source: str, dataset: str) -> tuple[Any, Any, str]:
    """Open the raw multiscale group and the ground-truth group of ``dataset`` below ``source``.

    ``source`` is a URL (``s3://bucket``, read anonymously through fsspec/s3fs) or a local folder with
    the same layout. Returns (raw group, groundtruth group, root description).
    """
    if dataset not in DATASETS:
        raise OpenOrganelleError(f"unknown dataset '{dataset}'; choose one of {', '.join(DATASETS)}")
    try:
        import zarr  # noqa: F401
    except ImportError:
        raise OpenOrganelleError("reading OpenOrganelle needs the zarr package; install it with "
                                 "`pip install 'dspseg[openorganelle]'`") from None
    remote = "://" in source
    root = f"{source.rstrip('/')}/{dataset}/{dataset}.zarr"
    if not remote:
        if not (Path(source) / dataset / f"{dataset}.zarr").is_dir():
            raise OpenOrganelleError(f"{source} has no {dataset}/{dataset}.zarr folder; give the folder that "
                                     f"holds {dataset}/ (the layout of {DEFAULT_SOURCE})")
    failure = ""
    try:
        raw = _open_group(f"{root}/{RAW_PATH}", remote)
        gt = _open_group(f"{root}/{GT_PATH}", remote)
        list(gt.group_keys())
    except ImportError as e:
        raise OpenOrganelleError(f"reading {source} needs {e.name or 'fsspec and s3fs'}; install them with "
                                 "`pip install 'dspseg[openorganelle]'`") from None
    except Exception as e:  # noqa: BLE001 - network, permissions, missing keys: all one sentence
        reason = str(e).splitlines()[0] if str(e) else ""
        failure = f"{type(e).__name__}: {reason}" if reason else type(e).__name__
    if failure:
        if remote:
            _silence_abandoned_reads()
        hint = (f"without network access, copy {root}/recon-1 (em/fibsem-uint8 and labels/groundtruth) to "
                f"LOCAL/{dataset}/{dataset}.zarr/recon-1 and pass --source LOCAL") if remote else \
            f"check that it holds {dataset}/{dataset}.zarr/{RAW_PATH} and {GT_PATH}"
        raise OpenOrganelleError(f"cannot read {root} ({failure}); {hint}")
    return raw, gt, root


def _crop_sort_key(name: str) -> tuple[int, str]:
    m = re.fullmatch(r"crop(\d+)", name)
    return (int(m.group(1)) if m else 1 << 30, name)


def _select_crops(available: list[str], wanted: list[str] | None) -> list[str]:
    names = sorted(available, key=_crop_sort_key)
    if not wanted:
        return names
    chosen = []
    for w in wanted:
        name = w if w.startswith("crop") else f"crop{w}"
        if name not in names:
            raise OpenOrganelleError(f"--crops: there is no {name}; available: {', '.join(names) or 'none'}")
        chosen.append(name)
    return chosen


def _read_zyx(array: Any, level: Level, start: np.ndarray | None = None, size: tuple[int, ...] | None = None) -> np.ndarray:
    """Read ``array`` (stored in ``level.order``) as a z, y, x numpy array, optionally a sub-box."""
    if start is None:
        data = np.asarray(array[...])
    else:
        slices: list[slice] = [slice(None)] * 3
        for k in range(3):
            slices[level.order[k]] = slice(int(start[k]), int(start[k]) + int(size[k]))
        data = np.asarray(array[tuple(slices)])
    return np.transpose(data, level.order)


def _zyx_shape(array: Any, level: Level) -> tuple[int, int, int]:
    shape = tuple(int(n) for n in array.shape)
    if len(shape) != 3:
        raise OpenOrganelleError(f"array {level.path} has shape {shape}; expected a 3D (z, y, x) volume")
    return tuple(shape[level.order[k]] for k in range(3))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------- import


@dataclass
class _Crop:
    name: str
    raw: Level
    label: Level
    offset: np.ndarray
    merged: np.ndarray  # (Z, Y, X) uint8 indices into CLASSES or IGNORE, planes already sub-sampled
    ids: list[int]  # the COSEM label ids the crop holds
    shape: tuple[int, int, int]  # (Z, Y, X) of the label level, every plane


def _plan_crop(name: str, gt: Any, raw_group: Any, raw_levels: list[Level], lut: np.ndarray, where: str,
               z_step: int, warnings: list[str]) -> _Crop | None:
    grp = gt[name]
    if "all" not in grp:
        warnings.append(f"{name} has no 'all' array of label ids; skipped")
        return None
    all_grp = grp["all"]
    lab_levels = read_levels(dict(all_grp.attrs), f"{where}/{name}/all")
    pair = match_levels(raw_levels, lab_levels)
    if pair is None:
        raise OpenOrganelleError(
            f"{where}/{name}/all: no label level has the scale of a raw level (labels: "
            f"{[lv.scale for lv in lab_levels]} nm, raw: {[lv.scale for lv in raw_levels]} nm)")
    raw, lab = pair
    ids = _read_zyx(all_grp[lab.path], lab)
    offset, residual = crop_offset(raw, lab)
    raw_shape = _zyx_shape(raw_group[raw.path], raw)
    if (offset < 0).any() or (offset + ids.shape > np.asarray(raw_shape)).any():
        raise OpenOrganelleError(
            f"{name} (level {lab.path}, {ids.shape} voxels at offset {offset.tolist()}) lies partly outside the raw "
            f"volume {raw.path} of shape {raw_shape}; the translations in the .zattrs do not match")
    if residual > 0.25:
        warnings.append(f"{name} is off the raw voxel grid by {residual:.2f} voxels; rounded to the nearest voxel")
    merged = apply_lut(ids[::z_step], lut)
    return _Crop(name, raw, lab, offset, merged, np.unique(ids).tolist(), tuple(ids.shape))


def _check_out(out: Path) -> None:
    refuse_used_folder(out, OpenOrganelleError, note=" (nothing is ever overwritten)")


def _volume_url(source: str, dataset: str, out: Path) -> str:
    """The URL the records name the dataset's zarr store by: the source's own for a remote source;
    for a local one, its path relative to ``out``, which must hold it (dataset.json only names local
    volumes inside its own folder). Refuses a used ``out`` that does not hold the local source."""
    if "://" in source:
        _check_out(out)
        return f"{source.rstrip('/')}/{dataset}/{dataset}.zarr"
    src, dst = Path(source).resolve(), out.resolve()
    if dst != src and dst not in src.parents:
        raise OpenOrganelleError(
            f"--as-volumes names the arrays of a LOCAL source by paths relative to the dataset folder, and "
            f"{source} is not inside --out {out}; put the copy inside the dataset folder (e.g. --source DATA "
            f"--out DATA, the copy and dataset.json side by side), use the bucket (the default --source), or "
            f"import without --as-volumes to copy the sections")
    for name in (MANIFEST_NAME, PROVENANCE):
        if (out / name).exists():
            raise OpenOrganelleError(f"--out {out} already holds {name}; nothing is ever overwritten: remove it or "
                                     "choose another folder")
    rel = src.relative_to(dst).as_posix()
    return f"{dataset}/{dataset}.zarr" if rel == "." else f"{rel}/{dataset}/{dataset}.zarr"


def _classes_of_ids(planned: list[_Crop], kept: list[str], lut: np.ndarray) -> dict[str, list[int]]:
    """Kept class -> the COSEM ids of the imported crops merged into it (a record's ``mask.classes``)."""
    ids = sorted({i for c in planned for i in c.ids if 0 <= i < len(lut)})
    return {name: [i for i in ids if lut[i] == CLASSES.index(name)] for name in kept
            if any(lut[i] == CLASSES.index(name) for i in ids)}


def _volume_records(c: _Crop, url: str, z_step: int, classes: dict[str, list[int]]) -> list[ImageRecord]:
    """One volume record per kept z plane of crop ``c``: the raw level's box under the crop, and the
    crop's label level mapped to the classes (no pixel is read or written)."""
    start = c.offset.tolist()
    image = VolumeRef(url=url, array=RAW_PATH, level=c.raw.path,
                      region=Region(start=start, stop=[a + n for a, n in zip(start, c.shape)]))
    mask = VolumeMask(volume=VolumeRef(url=url, array=f"{GT_PATH}/{c.name}/all", level=c.label.path),
                      classes=classes)
    return [ImageRecord(volume=image, axis="z", index=k, mask=mask, group=c.name) for k in range(0, c.shape[0], z_step)]


def import_openorganelle(dataset: str, out: str | Path, source: str = DEFAULT_SOURCE, min_crops: int = 3,
                         crops: list[str] | None = None, z_step: int = 1, progress: Any = None,
                         as_volumes: bool = False) -> ImportResult:
    """Import the ground-truth crops of ``dataset`` from ``source`` into the new dataset folder ``out``.

    Writes ``out/images/crop{N}_z{k:04d}.tif`` (uint8 raw sections), ``out/masks/...`` (merged class
    ids, 255 = ignore), ``out/dataset.json`` and ``out/openorganelle.json`` (levels, offsets, class
    counts). With ``as_volumes`` only the two JSON files: the records name the sections in the source
    (module docstring; a local ``source`` must then lie inside ``out``). ``crops`` limits the import
    (``["1", "crop7"]``), ``z_step`` keeps every n-th plane, ``progress`` is called with one line per
    crop. Raises OpenOrganelleError for user-facing problems.
    """
    if min_crops < 1 or z_step < 1:
        raise OpenOrganelleError(f"--min-crops and --z-step must be at least 1, got {min_crops} and {z_step}")
    out = Path(out)
    if as_volumes:
        url = _volume_url(source, dataset, out)
    else:
        _check_out(out)
    raw_group, gt, root = open_dataset(source, dataset)
    raw_levels = read_levels(dict(raw_group.attrs), f"{root}/{RAW_PATH}")
    where = f"{root}/{GT_PATH}"
    warnings: list[str] = []
    lut = merge_lut()
    planned = []
    for name in _select_crops(list(gt.group_keys()), crops):
        crop = _plan_crop(name, gt, raw_group, raw_levels, lut, where, z_step, warnings)
        if crop is not None:
            planned.append(crop)
    if not planned:
        raise OpenOrganelleError(f"{where} holds no usable crop (each needs an 'all' label array)")
    present = [set(np.unique(c.merged).tolist()) - {IGNORE} for c in planned]
    counts = {name: sum(CLASSES.index(name) in p for p in present) for name in CLASSES}
    kept = [name for name in CLASSES if counts[name] >= min_crops]
    dropped = {name: n for name, n in counts.items() if 0 < n < min_crops}
    if not kept:
        raise OpenOrganelleError(f"no class occurs in at least {min_crops} of the {len(planned)} crops; "
                                 "import more crops or lower --min-crops")
    final = np.full(256, IGNORE, np.uint8)
    for new_id, name in enumerate(kept):
        final[CLASSES.index(name)] = new_id
    if len({c.raw.scale for c in planned}) > 1:
        warnings.append("crops use different voxel sizes: " + ", ".join(f"{c.name} {c.raw.scale} nm" for c in planned))

    records, infos = [], []
    id_classes = _classes_of_ids(planned, kept, lut) if as_volumes else {}
    for c in planned:
        names = [CLASSES[i] for i in sorted(set(np.unique(c.merged).tolist()) - {IGNORE})]
        infos.append(CropInfo(c.name, c.label.path, c.raw.path, c.raw.scale, tuple(c.offset.tolist()),
                              tuple(c.merged.shape), c.merged.shape[0], names))
        box = ""
        if as_volumes:
            records += _volume_records(c, url, z_step, id_classes)
            box = f"region {records[-1].volume.region.text()} of "
        if progress is not None:
            progress(f"{c.name}: {c.merged.shape[0]} sections of {c.merged.shape[1]}x{c.merged.shape[2]} px at "
                     f"{c.raw.scale[2]:g} nm ({box}raw {c.raw.path}, labels {c.label.path}), classes: {', '.join(names)}")
    provenance = {"dataset": dataset, "source": source, "root": root, "min_crops": min_crops, "z_step": z_step,
                  "as_volumes": as_volumes, "crops_per_class": counts, "dropped_rare_classes": dropped,
                  "crops": [info.__dict__ for info in infos], "warnings": warnings}
    if as_volumes:
        manifest = Manifest(name=dataset, classes=kept, ignore_index=IGNORE, images=records)
        _write_references(out, manifest, provenance)
    else:
        manifest = _write_copies(out, dataset, kept, planned, raw_group, final, z_step, provenance)
    manifest.root = out
    return ImportResult(manifest, infos, dropped, warnings)


def _write_references(out: Path, manifest: Manifest, provenance: dict) -> None:
    """dataset.json and openorganelle.json of a volume import: a new folder, or two files added to
    the folder holding the local source (under its lock, each written atomically)."""
    from dspseg.fslock import folder_lock, sibling_lock_file

    if not out.is_dir():
        out.parent.mkdir(parents=True, exist_ok=True)
        with new_folder(out, "import") as tmp:
            save_manifest(manifest, tmp)
            (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n")
        return
    with folder_lock(out, sibling_lock_file(out)):
        save_manifest(manifest, out)
        write_text_atomic(out / PROVENANCE, json.dumps(provenance, indent=1) + "\n")


def _write_copies(out: Path, dataset: str, kept: list[str], planned: list[_Crop], raw_group: Any, final: np.ndarray,
                  z_step: int, provenance: dict) -> Manifest:
    """The TIFF import: every kept plane of every crop as an image and a mask file, in a new folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with new_folder(out, "import") as tmp:
        records = []
        for c in planned:
            size = (c.merged.shape[0] * z_step - (z_step - 1), *c.merged.shape[1:])
            raw = _read_zyx(raw_group[c.raw.path], c.raw, c.offset, size)[::z_step]
            for k in range(c.merged.shape[0]):
                stem = f"{c.name}_z{k * z_step:04d}"
                write_image(tmp / "images" / f"{stem}.tif", raw[k])
                write_mask(tmp / "masks" / f"{stem}.tif", final[c.merged[k]])
                records.append(ImageRecord(file=f"images/{stem}.tif", mask=f"masks/{stem}.tif", group=c.name))
        manifest = Manifest(name=dataset, classes=kept, ignore_index=IGNORE, images=records)
        save_manifest(manifest, tmp)
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n")
    return manifest
