"""What the trained model believes about each candidate image: class probabilities and an embedding.

For a training record with its current annotation, the model's softmax probabilities ``P`` (C, H, W)
are restricted to the annotation's admissible classes ``A`` (``allowed`` of
:func:`dspseg.data.rasterise.rasterise`, eq. 8) and renormalised::

    P̃[c, j] = P[c, j] · A[c, j] / Σ_k P[k, j] · A[k, j]        (P where no admissible class has mass)

so an image label, point or box the record already has is not asked for again: the uncertainty it
resolved is gone from ``P̃``. Inference is whole-image up to the run's tile, tiled
(:func:`dspseg.engine.tiling.predict_tiled`) beyond, as in ``dspseg evaluate``.

The **embedding** of an image is the mean of its pixels' unit embeddings ``f`` of the prototype head
(:class:`dspseg.models.heads.PrototypeHead`, the space in which DSP's prototypes live) or, for a
linear head, of its backbone features; unit norm, (D,). The advisor keeps its requests spread over
that space. Images are predicted one shape group at a time and nothing of size H × W is kept beyond
the image being estimated (:func:`beliefs` is a generator). The probabilities are first calibrated
(:mod:`dspseg.advise.calibrate`: a temperature fitted on the run's masked validation images).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

BATCH = 4


@dataclass
class Belief:
    """One candidate image as the model sees it.

    ``probs`` (C, H, W) float32: P̃, calibrated and restricted to the record's admissible classes;
    ``raw_entropy`` (H, W) float32: the entropy of the model's own ``P`` (unrestricted, uncalibrated:
    what the uncertainty baseline ranks by; nats); ``embedding`` (D,) float32, unit
    norm; ``known`` (C,) bool or None: the record's class set when its annotation states it (image
    labels, points, boxes, mask), None for an unlabeled record."""

    index: int  # position of the record in the training split (SegmentationDataset.records)
    probs: np.ndarray
    raw_entropy: np.ndarray
    embedding: np.ndarray
    known: np.ndarray | None


def restrict(probs: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """P̃ (C, H, W): ``probs`` restricted to ``allowed`` (C, H, W) bool and renormalised per pixel;
    a pixel where no admissible class has probability mass keeps ``probs``."""
    p = probs * allowed
    total = p.sum(0, keepdims=True)
    return np.where(total > 0, p / np.maximum(total, 1e-30), probs).astype(np.float32)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Per-pixel entropy (H, W) in nats of class probabilities (C, H, W)."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(probs * np.log(p)).sum(0).astype(np.float32)


def _forward(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (B, C, H, W), embeddings (B, D)) of a batch (B, Cin, H, W)."""
    head = model.head
    captured: dict[str, torch.Tensor] = {}
    hook = head.register_forward_hook(lambda m, args, out: captured.__setitem__("feats", args[0]))
    prototype = hasattr(head, "return_embeddings")
    before = getattr(head, "return_embeddings", False)
    try:
        if prototype:
            head.return_embeddings = True
        with torch.no_grad():
            out = model(x)
    finally:
        hook.remove()
        if prototype:
            head.return_embeddings = before
    logits = out["logits"] if isinstance(out, dict) else out
    space = out["embeddings"] if isinstance(out, dict) and "embeddings" in out else captured["feats"]
    emb = torch.nn.functional.normalize(space.float().mean(dim=(2, 3)), dim=1)
    return torch.softmax(logits.float(), dim=1), emb


def _predict(model: torch.nn.Module, images: list[torch.Tensor], tile: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(probabilities (C, H, W), embedding (D,)) of each normalised image (Cin, H, W), in order."""
    from dspseg.engine.tiling import predict_tiled

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        out: list[tuple[np.ndarray, np.ndarray]] = [None] * len(images)  # type: ignore[list-item]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            if im.shape[-2] <= tile and im.shape[-1] <= tile:
                groups.setdefault(tuple(im.shape), []).append(i)
                continue
            probs = predict_tiled(model, im, tile=tile, device=device)
            h, w = im.shape[-2:]
            r0, c0 = (h - min(h, tile)) // 2, (w - min(w, tile)) // 2
            _, emb = _forward(model, im[None, :, r0:r0 + tile, c0:c0 + tile].to(device))
            out[i] = (probs.cpu().numpy(), emb[0].cpu().numpy())
        for idx in groups.values():
            for k in range(0, len(idx), BATCH):
                chunk = idx[k:k + BATCH]
                probs, emb = _forward(model, torch.stack([images[i] for i in chunk]).to(device))
                for j, i in enumerate(chunk):
                    out[i] = (probs[j].cpu().numpy(), emb[j].cpu().numpy())
        return out
    finally:
        model.train(was_training)


def _predicted(loaded: Any, dataset: Any, indices: Sequence[int]) -> Iterator[tuple[int, dict, np.ndarray, np.ndarray]]:
    """(item, its whole-image arrays, probabilities (C, H, W), embedding (D,)) of ``indices``, in order."""
    for k in range(0, len(indices), BATCH * 4):
        chunk = list(indices[k:k + BATCH * 4])
        arrays = [dataset.window(i, 0, 0, *dataset.items[i].shape) for i in chunk]
        predicted = _predict(loaded.model, [torch.from_numpy(a["image"]) for a in arrays], loaded.tile)
        for i, a, (probs, emb) in zip(chunk, arrays, predicted):
            yield i, a, probs, emb


def predict_items(loaded: Any, dataset: Any, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(item, the model's softmax probabilities (C, H, W), unrestricted and uncalibrated) of ``indices``."""
    for i, _, probs, _ in _predicted(loaded, dataset, indices):
        yield i, probs


def beliefs(loaded: Any, dataset: Any, indices: Sequence[int], calibration: Any = None) -> Iterator[Belief]:
    """:class:`Belief` of the items ``indices`` of ``dataset`` (a whole-image
    :class:`~dspseg.data.dataset.SegmentationDataset` of the training split, normalised as the run
    ``loaded`` (:func:`dspseg.engine.checkpoint.load_run`) was trained), in the order given; the
    probabilities tempered by ``calibration`` (:class:`~dspseg.advise.calibrate.Calibration`) first."""
    from dspseg.vocabulary import Kind

    for i, a, probs, emb in _predicted(loaded, dataset, indices):
        raw = entropy(probs)
        if calibration is not None:
            probs = calibration.temper(probs)
        known = a["image_classes"].astype(bool) if dataset.items[i].kind != Kind.NONE else None
        yield Belief(i, restrict(probs, a["allowed"]), raw, emb.astype(np.float32), known)
