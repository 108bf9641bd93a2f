"""An image layer's pixels → the planes a run segments → class ids, by ``dspseg predict``'s rule.

Which planes (:func:`planes`): a 2D layer opened from a ``.tif``/``.png`` file is read from the file
(:func:`dspseg.data.io.read_image_stored`, exactly as ``dspseg predict`` reads it); otherwise the
layer's pixels: 2D → one grey plane, RGB → one 3-channel plane, a stack of 2D sections (the
reader's dataset, a volume) → one plane per section when the run takes one channel, or one
multi-channel image when the first axis has the run's channel count. Each plane is scaled by the
one intensity rule and the run's normalisation, and segmented whole or tile by tile
(:func:`dspseg.engine.evaluate.predict_labels`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dspseg.errors import UserError


def planes(data: Any, rgb: bool, in_channels: int, name: str, file: Path | None = None,
           shapes: list[tuple[int, int]] | None = None) -> tuple[list[np.ndarray], bool]:
    """``([(C, H, W) stored pixels], stacked)``: the planes of a layer's ``data`` to segment.

    ``shapes``: per section of a stack, its (H, W) without padding (the reader's datasets).
    """
    from dspseg.data.io import read_image_stored

    ndim = data.ndim - (1 if rgb else 0)
    if ndim == 2:
        if file is not None:
            return [read_image_stored(file)], False
        pixels = np.asarray(data)
        return [np.moveaxis(pixels, -1, 0) if rgb else pixels[None]], False
    if ndim == 3 and not rgb and data.shape[0] == in_channels and in_channels > 1:
        return [np.asarray(data)], False
    if ndim == 3 and (rgb or in_channels == 1):
        out = []
        for i in range(data.shape[0]):
            plane = np.asarray(data[i])
            if shapes is not None:
                plane = plane[:shapes[i][0], :shapes[i][1]]
            out.append(np.moveaxis(plane, -1, 0) if rgb else plane[None])
        return out, True
    raise UserError(f"the image layer '{name}' has shape {tuple(data.shape)}; Predict segments 2D images, RGB images "
                    f"and stacks of 2D sections (the run takes {in_channels} channel(s))")


def segment(loaded: Any, stored: list[np.ndarray], name: str, tile: int = 256) -> list[np.ndarray]:
    """(H, W) int64 class ids of each (C, H, W) stored plane, with the run ``loaded`` (:func:`load_run`)."""
    import torch

    from dspseg.data.intensity import to_unit
    from dspseg.engine.evaluate import predict_labels

    if tile < 16:
        raise UserError(f"the tile side must be at least 16 pixels, got {tile}")
    norm = loaded.normalisation
    images = []
    for plane in stored:
        loaded.check_channels(plane.shape[0], f"the image layer '{name}'")
        images.append(torch.from_numpy(norm.apply(to_unit(plane))))
    out: list[np.ndarray] = [np.empty(0)] * len(images)
    for i, labels in predict_labels(loaded.model, images, tile=tile):
        out[i] = labels.numpy()
    return out
