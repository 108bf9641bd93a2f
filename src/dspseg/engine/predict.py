"""``dspseg predict RUN INPUTS... --out DIR``: label images for new data with a trained run.

For every input image (a TIFF/PNG file, or every such file directly inside a given folder):

1. read it (:func:`dspseg.data.io.read_image`, (Cin, H, W) scaled like the training images) and
   normalise it with the run's training mean and std;
2. an image no larger than ``tile`` goes through the model whole; a larger one by tiled inference
   (:func:`dspseg.engine.tiling.predict_tiled`: overlapping ``tile × tile`` windows, Gaussian
   blending of the probabilities, memory bounded by the tile batch) — any image size;
3. labels = argmax over classes, written as ``DIR/<name>.tif`` with the input's height and width;
   uint8 when the run has at most 256 classes, else uint16; values are class ids (the order of
   ``classes`` in the run's ``config`` / checkpoint);
4. with ``overlay``: ``DIR/<name>_overlay.png``, the image in grey with each class in its colour
   (class 0 left uncoloured, alpha 0.45), enlarged to at least 256 pixels a side (nearest
   neighbour) beside a legend of class names and colours (:mod:`dspseg.engine.overlay`).

Input files are only read. An existing output file is refused unless ``overwrite``; an output that
would replace an input is always refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dspseg.engine.overlay import overlay_picture
from dspseg.errors import UserError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files given, plus the TIFF/PNG files directly inside folders given (sorted). UserError if a
    path does not exist, a file is not TIFF/PNG, a folder holds none, or two inputs share a name."""
    files: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"the folder {p} holds no .tif, .tiff or .png image")
            files += found
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{p} is not a TIFF or PNG image (.tif, .tiff, .png); convert it first")
            files.append(p)
        else:
            raise UserError(f"the input {p} does not exist; give image files or folders of images")
    if not files:
        raise UserError("no input images given")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen and seen[f.stem].resolve() != f.resolve():
            raise UserError(f"{seen[f.stem]} and {f} would both be written as {f.stem}.tif; "
                            "predict them into different --out folders")
        seen[f.stem] = f
    unique = {f.resolve(): f for f in files}
    return list(unique.values())


def palette(n_classes: int) -> np.ndarray:
    """(C, 3) uint8 colours: class 0 grey, then matplotlib's tab10 colours without its grey (which
    class 0 has), then tab20's light shades without light grey, then tab20b (cycled)."""
    from matplotlib import colormaps

    colours = ([colormaps["tab10"](i)[:3] for i in range(10) if i != 7]
               + [colormaps["tab20"](i)[:3] for i in range(1, 20, 2) if i != 15]
               + [colormaps["tab20b"](i)[:3] for i in range(20)])
    out = np.zeros((n_classes, 3), np.uint8)
    out[0] = (128, 128, 128)
    for c in range(1, n_classes):
        out[c] = np.round(np.array(colours[(c - 1) % len(colours)]) * 255)
    return out


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


def predict_files(run: str | Path, inputs: Sequence[str | Path], out: str | Path, overlay: bool = False,
                  tile: int = 256, overlap: float = 0.25, batch_size: int = 4, checkpoint: str = "best",
                  overwrite: bool = False, console: Any = None) -> list[Path]:
    """Write one label TIFF (and optionally an overlay PNG) per input; return the label files written.

    Raises UserError (missing run or inputs, wrong channel count, outputs that exist) and
    :class:`dspseg.data.io.ImageReadError` for an unreadable image.
    """
    import imageio.v3 as iio
    import tifffile
    from rich.console import Console

    from dspseg.data.io import read_image
    from dspseg.engine.checkpoint import load_run
    from dspseg.engine.evaluate import predict_labels

    console = console or Console()
    if tile < 16:
        raise UserError(f"--tile must be at least 16 pixels, got {tile}")
    loaded = load_run(run, checkpoint)
    files = collect_inputs(inputs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the predictions")
    inputs_resolved = {f.resolve() for f in files}
    targets = [(f, out / f"{f.stem}.tif", out / f"{f.stem}_overlay.png") for f in files]
    for _, lab, ov in targets:
        for t in (lab, ov) if overlay else (lab,):
            if t.resolve() in inputs_resolved:
                raise UserError(f"writing {t} would replace an input image; choose another --out folder")
            if t.exists() and not overwrite:
                raise UserError(f"{t} already exists; choose an empty --out folder or pass --overwrite")
    norm, n_classes, in_channels = loaded.normalisation, len(loaded.classes), loaded.in_channels
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for src, lab_path, ov_path in targets:
        image = read_image(src)
        if image.shape[0] != in_channels:
            raise UserError(f"{src} has {image.shape[0]} channel(s) but the run was trained on {in_channels}")
        x = torch.from_numpy(norm.apply(image))
        [(_, pred)] = list(predict_labels(loaded.model, [x], tile=tile, batch_size=batch_size, overlap=overlap))
        labels = pred.numpy().astype(label_dtype(n_classes))
        tifffile.imwrite(lab_path, labels, photometric="minisblack", compression="zlib")
        written.append(lab_path)
        if overlay:
            iio.imwrite(ov_path, overlay_picture(overlay_rgb(image, labels, n_classes), labels, loaded.classes,
                                                 palette(n_classes)))
        console.print(f"{src} → {lab_path}" + (f" (+ {ov_path.name})" if overlay else ""), highlight=False)
    return written
