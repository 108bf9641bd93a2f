"""Sliding-window inference for images of any size with bounded memory.

The image (Cin, H, W) is cut into ``tile × tile`` windows whose starts along each axis are spread
evenly from 0 to ``L - tile`` with a stride of at most ``tile · (1 - overlap)``; windows are run in
batches of ``batch_size`` and their class probabilities are blended with a Gaussian weight window
(σ = tile / 8, floored at 1e-3 of its peak so every pixel gets weight)::

    probs[:, y, x] = Σ_t w_t(y, x) · softmax(logits_t)[:, y, x]  /  Σ_t w_t(y, x)

Only two full-size buffers exist: the weighted sum (C, H, W) and the weight sum (H, W); the model sees
at most (batch_size, Cin, tile, tile) at a time. An axis shorter than the tile is padded (reflection
where possible, edge replication otherwise) and the result is cropped back, so the output always has
the input's height and width. For a translation-equivariant model (every pixel's output depends on
that pixel only) the result equals running the model on the whole image.
"""

# Why not MONAI's sliding_window_inference: it would bring MONAI (a large dependency) for ~60 lines,
# and this version keeps only (C, H, W) accumulators, whatever the image size.

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of windows of size ``tile`` covering [0, length) (length ≥ tile), first at 0,
    last at length - tile, evenly spread with stride ≤ tile · (1 - overlap)."""
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1.0 - overlap)))
    n = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def gaussian_window(tile: int, sigma_scale: float = 1 / 8, floor: float = 1e-3) -> Tensor:
    """(tile, tile) blending weights: a Gaussian centred on the window, peak 1, minimum ``floor``."""
    coords = torch.arange(tile, dtype=torch.float64) - (tile - 1) / 2
    g = torch.exp(-0.5 * (coords / max(tile * sigma_scale, 1e-6)) ** 2)
    w = torch.outer(g, g)
    return (w / w.max()).clamp_min(floor).float()


@functools.lru_cache(maxsize=8)
def _window(tile: int) -> Tensor:
    """:func:`gaussian_window` of ``tile``, computed once per size (shared: never modified in place)."""
    return gaussian_window(tile)


def _logits(model: nn.Module, batch: Tensor) -> Tensor:
    out = model(batch)
    if isinstance(out, dict):
        out = out["logits"]
    if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[-2:] != batch.shape[-2:]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"predict_tiled: the model must return logits (B, C, {batch.shape[-2]}, {batch.shape[-1]}) "
            f"for a tile batch {tuple(batch.shape)}, got {shape}"
        )
    return out


def _pad_to(image: Tensor, height: int, width: int) -> Tensor:
    h, w = image.shape[-2:]
    ph, pw = height - h, width - w
    if ph == 0 and pw == 0:
        return image
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(image[None], (0, pw, 0, ph), mode=mode)[0]


def predict_tiled(
    model: nn.Module,
    image: Tensor,
    tile: int = 256,
    overlap: float = 0.25,
    batch_size: int = 4,
    device: torch.device | str | None = None,
) -> Tensor:
    """Class probabilities (C, H, W), float32, on ``image``'s device, for one image (Cin, H, W).

    ``model`` maps (B, Cin, tile, tile) to logits (B, C, tile, tile) or to a dict with ``"logits"``;
    it runs in eval mode on ``device`` (default: the device of its parameters) and is put back in
    its previous mode afterwards. ``overlap`` in [0, 1) is the fraction of a tile shared by
    neighbouring windows.
    """
    if not isinstance(image, Tensor) or image.ndim != 3:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"predict_tiled: image must be a tensor (Cin, H, W), got {got}")
    if not isinstance(tile, int) or tile < 1:
        raise ValueError(f"predict_tiled: tile must be a positive integer, got {tile!r}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"predict_tiled: overlap must be in [0, 1), got {overlap!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"predict_tiled: batch_size must be a positive integer, got {batch_size!r}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else image.device
    device = torch.device(device)

    h, w = image.shape[-2:]
    ph, pw = max(h, tile), max(w, tile)
    padded = _pad_to(image.float(), ph, pw)
    windows = [(y, x) for y in tile_starts(ph, tile, overlap) for x in tile_starts(pw, tile, overlap)]
    return blend_windows(model, padded, windows, tile, batch_size, device)[:, :h, :w].contiguous()


def blend_windows(model: nn.Module, image: Tensor, windows: list[tuple[int, int]], tile: int, batch_size: int,
                  device: torch.device) -> Tensor:
    """Gaussian-blended class probabilities (C, H, W) of the ``tile × tile`` windows at ``windows``
    (top-left ``(y, x)``, inside ``image`` (Cin, H, W)); pixels no window covers are nan.

    :func:`predict_tiled` runs it on the whole (padded) image; whole-volume prediction
    (:mod:`dspseg.engine.volume_blocks`) blends the same way the windows that reach into one block
    (:func:`window_probs`, some of them kept from a neighbouring block), so a block's voxels equal
    those of the whole section, whatever the block size.
    """
    ph, pw = image.shape[-2:]
    window_out = _window(tile).to(image.device)
    acc: Tensor | None = None  # (C, ph, pw) weighted probability sum, created once C is known
    wsum = torch.zeros(ph, pw, device=image.device)
    for chunk, probs in window_probs(model, image, windows, tile, batch_size, device):
        if acc is None:
            acc = torch.zeros(probs.shape[1], ph, pw, device=image.device)
        for (y, x), p in zip(chunk, probs):
            acc[:, y : y + tile, x : x + tile] += p
            wsum[y : y + tile, x : x + tile] += window_out
    if acc is None:  # unreachable: callers pass at least one window
        raise RuntimeError("blend_windows: no window was run")
    return acc / wsum


def window_probs(model: nn.Module, image: Tensor, windows: list[tuple[int, int]], tile: int, batch_size: int,
                 device: torch.device) -> Iterator[tuple[list[tuple[int, int]], Tensor]]:
    """Per batch of at most ``batch_size`` of ``windows``: the batch's windows and their class
    probabilities weighted by the Gaussian window, ``softmax(logits) · w`` (b, C, tile, tile) on
    ``image``'s device — what the blend adds. The model runs in eval mode without gradients on
    ``device`` and gets its previous mode back when the iteration ends."""
    window = _window(tile).to(device)
    was_training = model.training
    if was_training:  # switching modes walks every module: only when needed (a volume calls this per section)
        model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(windows), batch_size):
                chunk = windows[i : i + batch_size]
                batch = torch.stack([image[:, y : y + tile, x : x + tile] for y, x in chunk]).to(device)
                probs = torch.softmax(_logits(model, batch).float(), dim=1) * window
                yield chunk, probs.to(image.device)
    finally:
        if was_training:
            model.train()
