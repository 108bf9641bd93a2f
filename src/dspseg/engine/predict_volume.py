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
    OUT/zarr.json                   the root group; its attribute ``dspseg`` records the run, checkpoint,
                                    step, input and options that wrote the folder and whether it is
                                    ``complete`` (:func:`read_record`)
    OUT/.dspseg-blocks/sK/Z_Y_X     while the job runs: one empty marker per finished block of level K

**Blocks and resume.** The volume is cut into blocks of ``block`` voxels (the output's chunks), each
predicted section by section with a halo (:mod:`dspseg.engine.volume_blocks`) and written once; its
marker is written after its chunks. A killed job run again with the same command skips the blocks
with a marker and redoes the others (a half-written block has none); so does one stopped by a chunk of
the input that cannot be read (a dropped connection, a corrupt chunk: one sentence, with the fix).
Memory is one block's probabilities plus one section window, whatever the volume's size.

**A finished output holds only zarr.** Once every block is written the record says ``complete`` and
the markers are removed, so the folder holds nothing a zarr reader does not know (zarr-python warns
about every other entry when it lists a group's members); the same command run again finds it
complete and computes nothing. The folder is held with :func:`dspseg.fslock.folder_lock` through a
hidden sibling, ``.OUT.dspseg.lock``, removed when the job ends, for the same reason.

**Where blocks are written.** :class:`BlockWriter` writes one block (level 0 predicted, a pyramid
level from the level below) and its marker. ``backend="local"`` runs it in this process, block
after block; ``backend="ray"`` hands the same :class:`BlockJob` to Ray tasks
(:mod:`dspseg.engine.predict_volume_ray`), so both give the same voxels and resume each other's
folders.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dspseg.errors import OutputFolderError, UserError, VolumeReadError

LABEL_NAME = "segmentation"
RECORD = "dspseg"  # the root group's attribute that records what wrote the folder
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


def _create(out: Path, vol: Any, classes: list[str], block: tuple[int, ...], levels: int, probabilities: bool,
            options: dict[str, Any]) -> None:
    """Create the empty arrays and write the NGFF metadata through ``ome_zarr.writer``; last, the record
    of ``options`` (not complete), so that a folder with a record has all its arrays."""
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
    root = zarr.open_group(str(out), mode="a", zarr_format=3)  # into the folder the caller emptied
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
    root.attrs[RECORD] = {"predict": options, "complete": False}


def read_record(out: str | Path) -> dict[str, Any] | None:
    """The ``dspseg`` attribute of ``OUT``'s root group — ``{"predict": {run, checkpoint, step, volume,
    axes, block, levels, probabilities, tile, overlap}, "complete": bool}`` — or None where there is none
    (no zarr v3 group, another program's group, an unreadable file). Read from ``zarr.json`` itself (the
    zarr v3 spec's group metadata) so that a folder of anything else is simply "not ours"."""
    try:
        record = json.loads((Path(out) / "zarr.json").read_text(encoding="utf-8"))["attributes"][RECORD]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if isinstance(record, dict) else None


def _finish(out: Path) -> None:
    """Every block is written: record the output as complete, then remove the block markers (in that
    order, so that a job killed in between is still found complete)."""
    import shutil

    import zarr

    root = zarr.open_group(str(out), mode="r+")
    root.attrs[RECORD] = {**root.attrs[RECORD], "complete": True}
    shutil.rmtree(out / DONE, ignore_errors=True)


def _done_file(out: Path, level: int, lo: Sequence[int]) -> Path:
    return out / DONE / f"s{level}" / "_".join(str(v) for v in lo)


@dataclasses.dataclass(frozen=True)
class BlockJob:
    """What writes the blocks of one output folder (picklable: a Ray task receives it). Paths are
    absolute so a worker in another folder (or on another node sharing the filesystem) finds them."""

    run: str
    checkpoint: str
    volume: dict[str, Any]
    out: str
    passes: tuple[str, ...]
    tile: int
    overlap: float
    batch_size: int
    probabilities: bool
    n_classes: int


class BlockWriter:
    """Writes blocks of a prepared output: level 0 predicted (:class:`~dspseg.engine.volume_blocks.SectionPredictor`),
    level k > 0 the mode of level k - 1; a block's marker after its chunks. The model and the volume
    are opened on the first level-0 block (``loaded``: a run loaded already, else :func:`load_run`)."""

    def __init__(self, job: BlockJob, loaded: Any = None) -> None:
        import zarr

        self.job, self.loaded, self._predictor = job, loaded, None
        root = zarr.open_group(job.out, mode="r+")
        self.label = root[f"labels/{LABEL_NAME}"]
        self.probs = root["probabilities/s0"] if job.probabilities else None

    def done(self, level: int, lo: Sequence[int]) -> bool:
        return _done_file(Path(self.job.out), level, lo).exists()

    def _predict(self, lo: Sequence[int], hi: Sequence[int]) -> Any:
        if self._predictor is None:
            from dspseg.data.volumes import open_volume
            from dspseg.engine.checkpoint import load_run
            from dspseg.engine.volume_blocks import SectionPredictor

            loaded = self.loaded if self.loaded is not None else load_run(self.job.run, self.job.checkpoint)
            self._predictor = SectionPredictor(open_volume(self.job.volume), loaded, self.job.tile, self.job.overlap,
                                               self.job.batch_size)
        return self._predictor.block(lo, hi, self.job.passes)

    def write(self, level: int, lo: Sequence[int], hi: Sequence[int]) -> None:
        """Compute block ``[lo, hi)`` of level ``level``, write its (whole) chunks, then its marker."""
        from dspseg.data.volumes.pyramid import mode_downsample
        from dspseg.fsutil import write_text_atomic

        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        if level == 0:
            p = self._predict(lo, hi)
            # numpy's argmax over the class axis: torch's (over dim 0) took 4x longer, 18 % of a CPU prediction
            self.label["s0"][box] = np.argmax(p.numpy(), axis=0).astype(self.label["s0"].dtype)
            if self.probs is not None:
                self.probs[(slice(None), *box)] = p.numpy()
        else:
            src = self.label[f"s{level - 1}"][tuple(slice(2 * a, 2 * b) for a, b in zip(lo, hi))]
            self.label[f"s{level}"][box] = mode_downsample(np.asarray(src), self.job.n_classes)
        write_text_atomic(_done_file(Path(self.job.out), level, lo), "")


def _absolute(ref: Any) -> dict[str, Any]:
    """The reference as a dict, a local path made absolute (a URL with a scheme is kept)."""
    data = ref.model_dump()
    if "://" not in data["url"]:
        data["url"] = str(Path(data["url"]).resolve())
    return data


def predict_volume(run: str | Path, volume: Any, out: str | Path, axes: str = "xy", block: Sequence[int] = (16, 256, 256),
                   levels: int | None = None, probabilities: bool = False, tile: int = 256, overlap: float = 0.25,
                   batch_size: int = 4, checkpoint: str = "best", overwrite: bool = False, console: Any = None,
                   on_block: Callable[[int], None] | None = None, backend: str = "local", workers: int = 1,
                   address: str | None = None, threads: int | None = None) -> dict[str, int]:
    """Segment ``volume`` (a :class:`~dspseg.data.volumes.VolumeRef`, URL or dict) with ``run`` into ``out``.

    Returns ``{"computed": blocks predicted now, "skipped": blocks kept from an earlier run, "levels": n}``
    (pyramid blocks included). ``on_block(computed)`` is called after each block written (tests
    use it to stop a run part-way). ``backend="ray"`` writes the blocks as Ray tasks
    (:mod:`dspseg.engine.predict_volume_ray`: ``workers``, ``address``); the labels are the same.
    ``threads``: torch CPU threads of this process (local) or of each CPU task (ray; default 1 on a
    local instance). Probabilities are equal to the last bit where the thread counts are equal (a
    CPU's sums are split by thread; another count moves a probability by about 1e-7, which can change
    a label only at an exact tie). UserError (one sentence) for a bad volume, run, option or output.
    """
    from dspseg.fslock import folder_lock, sibling_lock_file

    if backend not in ("local", "ray"):
        raise UserError(f"--backend must be local or ray, got '{backend}'")
    if address and backend != "ray":
        raise UserError("--address is for --backend ray; drop it or add --backend ray")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out} is a file; give a new folder for the label image, e.g. seg.ome.zarr")
    console = console or _console()
    created = not out.exists()
    try:
        with folder_lock(out, sibling_lock_file(out)):
            out.mkdir(parents=True, exist_ok=True)
            job, jobs, loaded, complete = _prepare(run, volume, out, axes, tuple(block), levels, probabilities, tile,
                                                   overlap, batch_size, checkpoint, overwrite,
                                                   "cpu" if backend == "ray" else "auto")
            writer = BlockWriter(job, loaded)
            todo = [] if complete else [j for j in jobs if not writer.done(j[0], j[1])]
            counts = {"computed": 0, "skipped": len(jobs) - len(todo), "levels": len({j[0] for j in jobs})}
            progress = Progress(console, counts, len(jobs), on_block)
            try:
                _write(job, writer, todo, progress, backend, workers, address, threads)
            except VolumeReadError as e:  # the network dropped, a chunk is corrupt: one sentence, the markers kept
                done = counts["computed"] + counts["skipped"]
                then = f"then run the same command again: it keeps the {done} finished block(s) of {out}"
                raise e.but(then=then) from None
            _finish(out)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # nothing was written (a bad run or option): leave no empty folder behind
        raise
    console.print(f"wrote {out} ({counts['computed']} block(s) computed, {counts['skipped']} kept from an earlier run)",
                  highlight=False, soft_wrap=True)
    return counts


def _write(job: BlockJob, writer: BlockWriter, todo: Sequence[tuple[int, tuple[int, ...], tuple[int, ...]]],
           progress: Progress, backend: str, workers: int, address: str | None, threads: int | None) -> None:
    """Write the blocks ``todo`` here (``backend="local"``) or as Ray tasks."""
    if backend == "ray":
        from dspseg.engine.predict_volume_ray import write_on_ray

        write_on_ray(job, todo, progress, workers, address, threads)
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        for k, lo, hi in todo:
            writer.write(k, lo, hi)
            progress.block_done()
    finally:
        torch.set_num_threads(before)


def _console() -> Any:
    from rich.console import Console

    return Console()


def _prepare(run: Any, volume: Any, out: Path, axes: str, block: tuple[int, ...], levels: int | None,
             probabilities: bool, tile: int, overlap: float, batch_size: int, checkpoint: str,
             overwrite: bool, device: str
             ) -> tuple[BlockJob, list[tuple[int, tuple[int, ...], tuple[int, ...]]], Any, bool]:
    """Check the options, the volume and the run; create the output (or keep it, to resume).

    Returns the job, every block ``(level, lo, hi)`` (level 0 first, then each pyramid level; done
    or not), the loaded run (on ``device``) and whether the kept output is complete already.
    """
    import shutil

    import zarr

    from dspseg.data.volumes import VolumeRef, open_volume
    from dspseg.engine.checkpoint import load_run
    from dspseg.engine.volume_blocks import block_grid
    from dspseg.fslock import LOCK_NAMES

    passes = parse_passes(axes)
    if tile < 16:
        raise UserError(f"--tile must be at least 16 pixels, got {tile}")
    if len(block) != 3 or min(block) < 1:
        raise UserError(f"--block must be 3 positive sizes (z, y, x), got {','.join(map(str, block))}")
    ref = volume if isinstance(volume, VolumeRef) else VolumeRef.parse(volume)
    vol = open_volume(ref)
    loaded = load_run(run, checkpoint, device=device)
    loaded.check_channels(1, f"the volume {ref.url} (one channel per voxel once 'select' fixes the others)")
    shape = tuple(vol.size(a) for a in vol.spatial_axes)
    n_levels = pyramid_levels(shape, levels)
    mine = {"run": str(loaded.folder.root.resolve()), "checkpoint": loaded.which, "step": loaded.step,
            "volume": ref.model_dump(), "axes": passes, "block": list(block), "levels": n_levels,
            "probabilities": probabilities, "tile": tile, "overlap": overlap}
    record = read_record(out)
    same = record is not None and record.get("predict") == mine
    others = [p for p in out.iterdir() if p.name not in LOCK_NAMES]  # a lock file of an older dspseg
    if others and not same and not overwrite:
        raise OutputFolderError(f"{out} is not empty and was not written by this command with this run, volume and "
                                "options; choose a new --out folder, run the same command again to resume, "
                                "or pass --overwrite")
    if not same or overwrite:
        for p in others:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        _create(out, vol, loaded.classes, block, n_levels, probabilities, mine)
        record = None
    label = zarr.open_group(str(out), mode="r")[f"labels/{LABEL_NAME}"]
    jobs = [(k, lo, hi) for k in range(n_levels) for lo, hi in block_grid(label[f"s{k}"].shape, block)]
    job = BlockJob(run=str(loaded.folder.root.resolve()), checkpoint=checkpoint, volume=_absolute(ref),
                   out=str(out.resolve()), passes=tuple(passes), tile=tile, overlap=overlap, batch_size=batch_size,
                   probabilities=probabilities, n_classes=len(loaded.classes))
    return job, jobs, loaded, bool(record is not None and record.get("complete") is True)


class Progress:
    """Counts the blocks written and prints one line per block: blocks done of all, and the time left
    at the rate of this run's blocks since its first (parallel workers included; the start-up before
    the first block — loading the model, starting Ray workers — left out); then ``on_block(computed)``."""

    def __init__(self, console: Any, counts: dict[str, int], total: int,
                 on_block: Callable[[int], None] | None = None) -> None:
        self.console, self.counts, self.total, self.on_block = console, counts, total, on_block
        self.started = self.first = time.monotonic()

    def block_done(self) -> None:
        self.counts["computed"] += 1
        done, now = self.counts["computed"] + self.counts["skipped"], time.monotonic()
        if self.counts["computed"] == 1:
            self.first = now
        elapsed, since_first = now - self.started, now - self.first
        left = ""  # no rate before a second block: the first one carries the start-up
        if self.counts["computed"] > 1:
            left = f", about {since_first / (self.counts['computed'] - 1) * (self.total - done):.0f} s left"
        self.console.print(f"block {done}/{self.total} ({100 * done // self.total} %), {elapsed:.0f} s{left}",
                           highlight=False)
        if self.on_block is not None:
            self.on_block(self.counts["computed"])
