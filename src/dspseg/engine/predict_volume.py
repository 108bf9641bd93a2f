"""``dspseg predict RUN VOLUME --out OUT.ome.zarr``: segment a whole volume into an NGFF label image.

VOLUME is anything :func:`dspseg.data.volumes.open_volume` reads (OME-Zarr image and level, zarr or
N5 array, HDF5 dataset, TIFF stack; path or URL). Output layout (NGFF 0.5 on zarr v3; every
attribute written by ``ome_zarr.writer``)::

    OUT/labels/segmentation/        image-label: per class its name (``properties``) and colour
                                    (``colors``, the overlay palette :func:`dspseg.colours.palette`)
    OUT/labels/segmentation/s0..sN  class ids (uint8, uint16 past 256 classes); s0 has the input's shape,
                                    voxel size and translation; s(k+1) = mode of 2 × 2 × 2 voxels of sk
    OUT/probabilities/              with --probabilities: an NGFF image (c, z, y, x) of float32
                                    class probabilities at s0's grid
    OUT/.dspseg-predict-volume.json the run, checkpoint, input and options that write the folder
    OUT/.dspseg-blocks/sK/Z_Y_X     one empty marker per finished block of level K

**Blocks and resume.** The volume is cut into blocks of ``block`` voxels (the output's chunks), each
predicted section by section with a halo (:mod:`dspseg.engine.volume_blocks`) and written once; its
marker is written after its chunks. A killed job run again with the same command skips the blocks
with a marker and redoes the others (a half-written block has none). Memory is one block's
probabilities plus one section window, whatever the volume's size. The folder is held with
:func:`dspseg.fslock.folder_lock` while written.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dspseg.errors import OutputFolderError, UserError

LABEL_NAME = "segmentation"
MARKER = ".dspseg-predict-volume.json"
DONE = ".dspseg-blocks"


VOLUME_SUFFIXES = (".zarr", ".n5", ".h5", ".hdf5", ".hdf")
STORE_FILES = ("zarr.json", ".zgroup", ".zarray", "attributes.json")


def is_volume_input(inputs: Sequence[str], out: Path, volume_options: bool) -> bool:
    """Whether ``dspseg predict`` takes the volume path: volume options given, ``--out`` named ``*.zarr``,
    or one input that is a URL, a zarr/N5/HDF5 name or a folder holding a zarr or N5 store's metadata."""
    if volume_options or str(out).rstrip("/").lower().endswith(".zarr"):
        return True
    if len(inputs) != 1:
        return False
    name, p = str(inputs[0]), Path(inputs[0])
    return ("://" in name or name.rstrip("/").lower().endswith(VOLUME_SUFFIXES)
            or (p.is_dir() and any((p / f).exists() for f in STORE_FILES)))


def parse_passes(axes: str) -> list[str]:
    """``"xy"`` or a comma list of ``xy``, ``xz``, ``yz`` → the passes; UserError otherwise."""
    from dspseg.engine.volume_blocks import PASS_AXIS

    passes = [a.strip().lower() for a in axes.split(",") if a.strip()]
    bad = [a for a in passes if a not in PASS_AXIS]
    if not passes or bad or len(set(passes)) != len(passes):
        raise UserError(f"--axes {axes!r} is not a list of distinct section planes; use xy (default) or e.g. "
                        "xy,xz,yz for isotropic volumes")
    return passes


def pyramid_levels(shape: Sequence[int], levels: int | None) -> int:
    """Levels of the pyramid: ``levels``, or halvings while the coarsest level keeps y and x ≥ 16 voxels."""
    if levels is not None:
        if levels < 1:
            raise UserError(f"--levels must be at least 1, got {levels}")
        return levels
    n = 1
    while min(shape[-2:]) // 2 ** n >= 16 and n < 8:
        n += 1
    return n


def _create(out: Path, vol: Any, classes: list[str], block: tuple[int, ...], levels: int, probabilities: bool) -> None:
    """Create the empty arrays and write the NGFF metadata through ``ome_zarr.writer``."""
    import zarr

    from dspseg.colours import image_label_colors
    from dspseg.data.volumes.pyramid import level_datasets
    from dspseg.engine.predict import label_dtype

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.format import FormatV05
        from ome_zarr.writer import write_label_metadata, write_multiscales_metadata
    fmt, spatial = FormatV05(), vol.spatial_axes
    vox = [vol.voxel_size["zyx".index(a)] for a in spatial]
    trans = [vol.translation["zyx".index(a)] for a in spatial]
    unit = {"unit": vol.unit} if vol.unit else {}
    axes = [{"name": a, "type": "space", **unit} for a in spatial]
    root = zarr.open_group(str(out), mode="a", zarr_format=3)  # "w" would delete the lock file
    label = root.create_group("labels").create_group(LABEL_NAME)
    shape = tuple(vol.size(a) for a in spatial)
    datasets = level_datasets(levels, vox, trans)
    for k, entry in enumerate(datasets):
        level_shape = tuple(-(-s // 2 ** k) for s in shape)
        label.create_array(entry["path"], shape=level_shape, chunks=tuple(min(b, s) for b, s in zip(block, level_shape)),
                           dtype=label_dtype(len(classes)), fill_value=0, dimension_names=list(spatial))
    write_multiscales_metadata(label, datasets, fmt=fmt, axes=axes)
    write_label_metadata(root["labels"], LABEL_NAME, fmt=fmt, colors=image_label_colors(len(classes)),
                         properties=[{"label-value": k, "class": name} for k, name in enumerate(classes)])
    if probabilities:
        group = root.create_group("probabilities")
        group.create_array("s0", shape=(len(classes), *shape), chunks=(len(classes), *(min(b, s) for b, s in zip(block, shape))),
                           dtype="float32", fill_value=0.0, dimension_names=["c", *spatial])
        write_multiscales_metadata(group, [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, *vox]}, {"type": "translation", "translation": [0.0, *trans]}]}],
            fmt=fmt, axes=[{"name": "c", "type": "channel"}, *axes], name="probabilities")


def _done_file(out: Path, level: int, lo: Sequence[int]) -> Path:
    return out / DONE / f"s{level}" / "_".join(str(v) for v in lo)


def predict_volume(run: str | Path, volume: Any, out: str | Path, axes: str = "xy", block: Sequence[int] = (16, 256, 256),
                   levels: int | None = None, probabilities: bool = False, tile: int = 256, overlap: float = 0.25,
                   batch_size: int = 4, checkpoint: str = "best", overwrite: bool = False, console: Any = None,
                   on_block: Callable[[int], None] | None = None) -> dict[str, int]:
    """Segment ``volume`` (a :class:`~dspseg.data.volumes.VolumeRef`, URL or dict) with ``run`` into ``out``.

    Returns ``{"computed": blocks predicted now, "skipped": blocks kept from an earlier run, "levels": n}``
    (pyramid blocks included). ``on_block(computed)`` is called after each block written (tests
    use it to stop a run part-way). UserError (one sentence) for a bad volume, run, option or output.
    """
    from dspseg.fslock import folder_lock

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out} is a file; give a new folder for the label image, e.g. seg.ome.zarr")
    with folder_lock(out):
        return _predict_into(run, volume, out, axes, tuple(block), levels, probabilities, tile, overlap,
                             batch_size, checkpoint, overwrite, console, on_block)


def _predict_into(run: Any, volume: Any, out: Path, axes: str, block: tuple[int, ...], levels: int | None,
                  probabilities: bool, tile: int, overlap: float, batch_size: int, checkpoint: str,
                  overwrite: bool, console: Any, on_block: Callable[[int], None] | None) -> dict[str, int]:
    import shutil

    import zarr
    from rich.console import Console

    from dspseg.data.volumes import VolumeRef, open_volume
    from dspseg.engine.checkpoint import load_run
    from dspseg.data.volumes.pyramid import mode_downsample
    from dspseg.engine.volume_blocks import SectionPredictor, block_grid
    from dspseg.fslock import LOCK_NAMES
    from dspseg.fsutil import write_text_atomic

    console = console or Console()
    passes = parse_passes(axes)
    if tile < 16:
        raise UserError(f"--tile must be at least 16 pixels, got {tile}")
    if len(block) != 3 or min(block) < 1:
        raise UserError(f"--block must be 3 positive sizes (z, y, x), got {','.join(map(str, block))}")
    ref = volume if isinstance(volume, VolumeRef) else VolumeRef.parse(volume)
    vol = open_volume(ref)
    loaded = load_run(run, checkpoint)
    loaded.check_channels(1, f"the volume {ref.url} (one channel per voxel once 'select' fixes the others)")
    shape = tuple(vol.size(a) for a in vol.spatial_axes)
    n_levels = pyramid_levels(shape, levels)
    mine = {"run": str(loaded.folder.root.resolve()), "checkpoint": loaded.which, "step": loaded.step,
            "volume": ref.model_dump(), "axes": passes, "block": list(block), "levels": n_levels,
            "probabilities": probabilities, "tile": tile, "overlap": overlap}
    try:
        same = json.loads((out / MARKER).read_text()) == mine
    except (OSError, ValueError):
        same = False
    others = [p for p in out.iterdir() if p.name != MARKER and p.name not in LOCK_NAMES]
    if others and not same and not overwrite:
        raise OutputFolderError(f"{out} is not empty and was not written by this command with this run, volume and "
                                "options; choose a new --out folder, run the same command again to resume, "
                                "or pass --overwrite")
    if not same or overwrite:
        for p in others:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        _create(out, vol, loaded.classes, block, n_levels, probabilities)
        write_text_atomic(out / MARKER, json.dumps(mine) + "\n")
    root = zarr.open_group(str(out), mode="r+")
    label = root[f"labels/{LABEL_NAME}"]
    probs_arr = root["probabilities/s0"] if probabilities else None
    jobs = [(0, lo, hi) for lo, hi in block_grid(shape, block)]
    for k in range(1, n_levels):
        jobs += [(k, lo, hi) for lo, hi in block_grid(label[f"s{k}"].shape, block)]
    predictor = SectionPredictor(vol, loaded, tile, overlap, batch_size)
    counts = {"computed": 0, "skipped": 0, "levels": n_levels}
    started, n_classes = time.monotonic(), len(loaded.classes)
    for k, lo, hi in jobs:
        done = _done_file(out, k, lo)
        if done.exists():
            counts["skipped"] += 1
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        if k == 0:
            p = predictor.block(lo, hi, passes)
            label["s0"][box] = p.argmax(0).numpy().astype(label["s0"].dtype)
            if probs_arr is not None:
                probs_arr[(slice(None), *box)] = p.numpy()
        else:
            src = label[f"s{k - 1}"][tuple(slice(2 * a, 2 * b) for a, b in zip(lo, hi))]
            label[f"s{k}"][box] = mode_downsample(np.asarray(src), n_classes)
        write_text_atomic(done, "")
        counts["computed"] += 1
        _progress(console, counts, len(jobs), started)
        if on_block is not None:
            on_block(counts["computed"])
    console.print(f"wrote {out} ({counts['computed']} block(s) computed, {counts['skipped']} kept from an earlier run)",
                  highlight=False, soft_wrap=True)
    return counts


def _progress(console: Any, counts: dict[str, int], total: int, started: float) -> None:
    """One line per block: blocks done of all, and the time left at the rate of this run's blocks."""
    done = counts["computed"] + counts["skipped"]
    elapsed = time.monotonic() - started
    eta = elapsed / counts["computed"] * (total - done)
    console.print(f"block {done}/{total} ({100 * done // total} %), {elapsed:.0f} s, about {eta:.0f} s left",
                  highlight=False)
