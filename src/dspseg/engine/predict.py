"""``dspseg predict RUN INPUTS... --out DIR``: label images for new data with a trained run.

For every input image (a TIFF/PNG file, or every such file directly inside a given folder):

1. read it (:func:`dspseg.data.io.read_image_stored`; the reader's notes are printed: a TIFF series
   chosen, pages read as channels, a pixel type other than the training images'), scale it by the
   one rule of :mod:`dspseg.data.intensity` and normalise it with the run's training mean and std;
2. an image no larger than ``tile`` goes through the model whole; a larger one by tiled inference
   (:func:`dspseg.engine.tiling.predict_tiled`: overlapping ``tile × tile`` windows, Gaussian
   blending of the probabilities, memory bounded by the tile batch) — any image size;
3. labels = argmax over classes, written as ``DIR/<name>.tif`` with the input's height and width;
   uint8 when the run has at most 256 classes, else uint16; values are class ids (the order of
   ``classes`` in the run's ``config`` / checkpoint);
4. with ``overlay``: ``DIR/<name>_overlay.png``, the image in grey with each class in its colour
   (class 0 left uncoloured, alpha 0.45), enlarged to at least 256 pixels a side (nearest
   neighbour) beside a legend of class names and colours (:mod:`dspseg.engine.overlay`).

**A folder of inputs.** Every input is read; every good one is written; every bad one (unreadable,
wrong channels, an entry named ``*.tif`` that is not a regular file) is listed with its reason at
the end, and the command then exits with code 1 (:class:`~dspseg.errors.InputsFailed`). Outputs are
written under a temporary name and renamed, so a file in ``DIR`` is always complete.

**Existing outputs.** ``DIR/.dspseg-predict.json`` records the run and checkpoint that wrote the
folder. Run again with the same run and checkpoint (after a failure or an interrupt), it skips the
inputs whose outputs are already there and writes the rest; outputs of another run, or files
dspseg did not write, are refused unless ``overwrite``. An output that would replace an input is
always refused. Input files are only read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dspseg.colours import palette
from dspseg.engine.overlay import overlay_picture
from dspseg.errors import UserError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def _entry_kind(p: Path) -> str:
    """What a path that is not a regular file is, in words."""
    if p.is_symlink() and not p.exists():
        return "a broken symbolic link"
    if p.is_dir():
        return "a folder"
    return "not a regular file (a pipe, socket or device)"


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``(files, refused)``: the files given plus the TIFF/PNG files directly inside folders given
    (sorted), and the entries of those folders named like images that are not regular files, each
    with its reason. UserError if a path does not exist, a file is not TIFF/PNG, a folder holds no
    image entry, or two inputs share a name."""
    files: list[Path] = []
    refused: list[tuple[Path, str]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            named = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not named:
                raise UserError(f"the folder {p} holds no .tif, .tiff or .png image")
            files += [f for f in named if f.is_file()]
            refused += [(f, f"{_entry_kind(f)}, not an image file") for f in named if not f.is_file()]
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{p} is not a TIFF or PNG image (.tif, .tiff, .png); convert it first")
            files.append(p)
        else:
            raise UserError(f"the input {p} does not exist; give image files or folders of images")
    if not files and not refused:
        raise UserError("no input images given")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen and seen[f.stem].resolve() != f.resolve():
            raise UserError(f"{seen[f.stem]} and {f} would both be written as {f.stem}.tif; "
                            "predict them into different --out folders")
        seen[f.stem] = f
    unique = {f.resolve(): f for f in files}
    return list(unique.values()), refused


def overlay_rgb(image: np.ndarray, labels: np.ndarray, n_classes: int, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8: the image's mean channel stretched to its 1–99 % range in grey, classes ≥ 1 tinted.

    Shapes: image (Cin, H, W) float, labels (H, W) int.
    """
    grey = image.mean(0)
    lo, hi = np.percentile(grey, [1, 99])
    grey = np.clip((grey - lo) / max(hi - lo, 1e-8), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2) * 255
    colours = palette(n_classes).astype(np.float64)
    tinted = labels > 0
    rgb[tinted] = (1 - alpha) * rgb[tinted] + alpha * colours[labels[tinted]]
    return np.round(rgb).astype(np.uint8)


def label_dtype(n_classes: int) -> type[np.integer]:
    """uint8 for at most 256 classes, else uint16."""
    return np.uint8 if n_classes <= 256 else np.uint16


MARKER = ".dspseg-predict.json"


def _say(console: Any, notes: list[str]) -> None:
    for note in notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)


def _marker(loaded: Any) -> dict[str, Any]:
    """Who writes a prediction folder: the run, its checkpoint file and step."""
    return {"run": str(loaded.folder.root.resolve()), "checkpoint": loaded.which, "step": loaded.step}


def _check_outputs(out: Path, targets: list[tuple[Path, ...]], inputs: set[Path], mine: dict[str, Any],
                   overwrite: bool) -> bool:
    """UserError for an output that would replace an input, or an existing output this run did not
    write (unless ``overwrite``). Returns whether existing outputs may be kept (a resumed folder)."""
    import json

    try:
        same = json.loads((out / MARKER).read_text()) == mine
    except (OSError, ValueError):
        same = False
    for paths in targets:
        for t in paths[1:]:
            if t.resolve() in inputs:
                raise UserError(f"writing {t} would replace an input image; choose another --out folder")
            if t.exists() and not overwrite and not same:
                raise UserError(f"{t} already exists and was not written by this run's {mine['checkpoint']} "
                                "checkpoint; choose an empty --out folder or pass --overwrite")
    return same and not overwrite


def predict_files(run: str | Path, inputs: Sequence[str | Path], out: str | Path, overlay: bool = False,
                  tile: int = 256, overlap: float = 0.25, batch_size: int = 4, checkpoint: str = "best",
                  overwrite: bool = False, console: Any = None) -> list[Path]:
    """:func:`predict_into` holding ``out``'s lock (:func:`dspseg.fslock.folder_lock`): one writer per folder."""
    from dspseg.fslock import folder_lock

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the predictions")
    with folder_lock(out):
        return predict_into(run, inputs, out, overlay, tile, overlap, batch_size, checkpoint, overwrite, console)


def predict_into(run: str | Path, inputs: Sequence[str | Path], out: str | Path, overlay: bool = False,
                 tile: int = 256, overlap: float = 0.25, batch_size: int = 4, checkpoint: str = "best",
                 overwrite: bool = False, console: Any = None) -> list[Path]:
    """Write one label TIFF (and optionally an overlay PNG) per input; return the label files of the
    good inputs (written now, or kept from an earlier run of the same command).

    Raises UserError before writing anything (missing run or inputs, outputs that exist, see the
    module docstring), and :class:`~dspseg.errors.InputsFailed` after writing every good input when
    some inputs could not be used (each listed with its reason).
    """
    import io
    import json

    import imageio.v3 as iio
    import tifffile
    from rich.console import Console

    from dspseg.data.intensity import RULE, to_unit
    from dspseg.data.io import read_image_stored
    from dspseg.engine.checkpoint import load_run
    from dspseg.engine.evaluate import predict_labels
    from dspseg.errors import ImageReadError, InputsFailed
    from dspseg.fsutil import atomic_write, write_text_atomic

    console = console or Console()
    if tile < 16:
        raise UserError(f"--tile must be at least 16 pixels, got {tile}")
    loaded = load_run(run, checkpoint)
    files, refused = collect_inputs(inputs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the predictions")
    targets = [(f, out / f"{f.stem}.tif") + ((out / f"{f.stem}_overlay.png",) if overlay else ()) for f in files]
    mine = _marker(loaded)
    keep = _check_outputs(out, targets, {f.resolve() for f in files}, mine, overwrite)
    norm, n_classes = loaded.normalisation, len(loaded.classes)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / MARKER, json.dumps(mine) + "\n")
    done, failed, kept = [], [(str(p), why) for p, why in refused], 0
    for src, lab_path, *ov in targets:
        if keep and all(t.exists() for t in (lab_path, *ov)):
            done.append(lab_path)
            kept += 1
            continue
        notes: list[str] = []
        try:
            stored = read_image_stored(src, notes)
            loaded.check_channels(stored.shape[0], src)
        except UserError as e:
            _say(console, notes)
            failed.append((str(src), f"{e.reason} (fix: {e.fix})" if isinstance(e, ImageReadError) else str(e)))
            console.print(f"{src}: failed (listed at the end)", highlight=False)
            continue
        if norm.dtypes and stored.dtype.name not in norm.dtypes:
            notes.append(f"{src} is {stored.dtype.name} but the run was trained on {'/'.join(norm.dtypes)} images; it "
                         f"is scaled by the same rule ({RULE.split(';')[0]}), so if its values span another range "
                         "than the training images', convert it to their pixel type first")
        _say(console, notes)
        image = to_unit(stored)
        x = torch.from_numpy(norm.apply(image))
        [(_, pred)] = list(predict_labels(loaded.model, [x], tile=tile, batch_size=batch_size, overlap=overlap))
        labels = pred.numpy().astype(label_dtype(n_classes))
        buf = io.BytesIO()  # encoded in memory, then written under a temporary name and renamed
        tifffile.imwrite(buf, labels, photometric="minisblack", compression="zlib")
        atomic_write(lab_path, lambda f: f.write(buf.getvalue()), binary=True)
        if ov:
            picture = overlay_picture(overlay_rgb(image, labels, n_classes), labels, loaded.classes, palette(n_classes))
            png = iio.imwrite("<bytes>", picture, extension=".png")
            atomic_write(ov[0], lambda f: f.write(png), binary=True)
        done.append(lab_path)
        console.print(f"{src} → {lab_path}" + (f" (+ {ov[0].name})" if ov else ""), highlight=False)
    if kept:
        console.print(f"kept {kept} output(s) already written by this run (--overwrite redoes them)", highlight=False)
    if failed:
        raise InputsFailed(failed, f"the other {len(done)} of {len(done) + len(failed)} are in {out}",
                           "correct or remove the inputs listed, then run the same command again: outputs "
                           "already written are kept")
    return done
