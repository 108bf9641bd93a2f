"""One advisor call, step by step: run and dataset → candidates → estimates → chosen requests → reasons.

1. :func:`dspseg.engine.checkpoint.load_run` loads the run; the dataset must have its classes (in
   order) and input channels.
2. The candidates: the training records (or the ``images`` given, which must be training records)
   that may still get one of the allowed kinds (:func:`dspseg.advise.rank.can_ask`).
3. The model's beliefs are calibrated on the masked validation images (:mod:`dspseg.advise.calibrate`);
   each candidate is predicted and estimated (:mod:`dspseg.advise.beliefs`, :mod:`dspseg.advise.estimate`),
   with class weights from the annotations of every training record (:func:`~dspseg.advise.rank.rarity_weights`).
4. ``rank_by="value"``: :func:`dspseg.advise.rank.greedy`; ``"uncertainty"``: images by mean
   predictive entropy, each asked for its first allowed kind while the budget lasts.
5. Requests are sorted by the value they were ranked by, highest first, each with its reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dspseg.advise import Advice, Request, record_key
from dspseg.advise.estimate import RESOLVES, Estimate, estimate
from dspseg.advise.rank import can_ask, greedy, rarity_weights
from dspseg.costs import AnnotationCosts
from dspseg.errors import DatasetError, OptionError
from dspseg.vocabulary import Kind

WORD = {Kind.MASK: "mask", Kind.BOX: "boxes", Kind.POINT: "points", Kind.IMAGE: "image labels"}


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``threads`` (unchanged for None) for the block, then restored."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load(run: str | Path, data: str | Path, device: str) -> tuple[Any, Any]:
    """(loaded run, whole-image training split of ``data`` normalised as the run was trained);
    DatasetError when the dataset's classes or channels are not the run's."""
    from dspseg.data.dataset import SegmentationDataset
    from dspseg.data.manifest import load_manifest
    from dspseg.engine.checkpoint import load_run

    loaded = load_run(run, "best", device=device)
    manifest = load_manifest(data)
    loaded.check_classes(manifest.classes, data)
    dataset = SegmentationDataset(manifest, "train", normalisation=loaded.normalisation, crop_size=None,
                                  derive_weak=False)
    if len(dataset) == 0:
        raise DatasetError(f"{manifest.root / 'dataset.json'} has no training records; the advisor asks for "
                           "annotations of training images (give the dataset the run was trained on)")
    loaded.check_channels(dataset.in_channels, manifest.root / "dataset.json")
    return loaded, dataset


def candidates(dataset: Any, kinds: tuple[str, ...], images: Sequence[str] | None) -> list[int]:
    """Indices of the training items that may still get one of ``kinds`` (only those named in
    ``images``, if given); OptionError naming an image that is not a training record of the dataset."""
    keys = {record_key(r): i for i, (_, r) in enumerate(dataset.records)}
    if images is None:
        chosen = range(len(dataset.records))
    else:
        missing = [im for im in images if im not in keys]
        if missing:
            raise OptionError(f"images: {missing[0]!r} is not a training record of {dataset.manifest.root / 'dataset.json'}"
                              f" ({len(missing)} such); give record 'file' values as written there")
        chosen = sorted({keys[im] for im in images})
    return [i for i in chosen if any(can_ask(dataset.items[i].kind, k) for k in kinds)]


def class_weights(dataset: Any) -> np.ndarray:
    """:func:`rarity_weights` of the classes the annotated training records state (no mask is read
    twice: the dataset holds each record's class set)."""
    sets = []
    for i, item in enumerate(dataset.items):
        if item.kind == Kind.NONE:
            continue
        sets.append(dataset.window(i, 0, 0, *item.shape)["image_classes"].astype(bool))
    return rarity_weights(sets, dataset.n_classes)


def _names(classes: list[str], share: np.ndarray, n: int = 2) -> str:
    """The ``n`` classes with the largest positive ``share``, as ``"er and golgi"``."""
    top = [classes[c] for c in np.argsort(-share, kind="stable")[:n] if share[c] > 0]
    return " and ".join(top) if top else "no class in particular"


def reason(kind: str, est: Estimate, classes: list[str], weights: np.ndarray) -> str:
    """One sentence: what the request resolves on this image and where its value comes from."""
    share = est.per_class[kind]
    where = _names(classes, share)
    rare = [classes[c] for c in np.argsort(-share)[:2] if share[c] > 0 and weights[c] > 1.25]
    tail = f" ({', '.join(rare)} rarely annotated so far)" if rare else ""
    if kind == Kind.IMAGE:
        unsure = [c for c in np.argsort(-share) if share[c] > 0 and 0.02 < est.presence[c] < 0.98][:3]
        said = ", ".join(f"{classes[c]} {est.presence[c]:.2f}" for c in unsure) or where
        return (f"image labels: the model is unsure which classes are present (P(present): {said}); "
                f"labels settle it for about {est.cost[kind]:.0f} s{tail}")
    if kind == Kind.POINT:
        return (f"points: the class of its {est.objects} predicted objects is uncertain, most for {where}; "
                f"one click each names it{tail}")
    if kind == Kind.BOX:
        return (f"boxes: both the class and the extent of its {est.objects} predicted objects are uncertain, "
                f"most for {where}{tail}")
    box = est.value[Kind.BOX]
    ratio = f", {est.value[Kind.MASK] / box:.1f} times what boxes would resolve" if box > 0 else ""
    return (f"mask: the uncertainty is spread over the image's pixels, most in {where}, and only a mask "
            f"resolves all of it{ratio}{tail}")


@dataclass
class Candidate:
    """An image the advisor may ask about: its ``key`` (:func:`~dspseg.advise.record_key`), the kind
    it ``has``, its :class:`Estimate` and its embedding (D,) (None: no diversity)."""

    key: str
    has: str
    estimate: Estimate
    embedding: np.ndarray | None = None


def _by_value(pool: list[Candidate], kinds: tuple[str, ...], budget: float, seed: int) -> list[tuple[int, str, float]]:
    """(candidate, kind, damped value per second) of the greedy choice."""
    shape = (len(pool), len(kinds))
    cost = np.array([[c.estimate.cost[k] for k in kinds] for c in pool], np.float64).reshape(shape)
    value = np.array([[c.estimate.value[k] for k in kinds] for c in pool], np.float64).reshape(shape)
    allowed = np.array([[can_ask(c.has, k) for k in kinds] for c in pool], bool).reshape(shape)
    emb = np.stack([c.embedding for c in pool]) if pool and all(c.embedding is not None for c in pool) else None
    chosen = greedy(kinds, cost, value, allowed, budget, embeddings=emb, seed=seed)
    return [(c.index, c.kind, c.per_second) for c in chosen]


def _by_uncertainty(pool: list[Candidate], kinds: tuple[str, ...], budget: float,
                    seed: int) -> list[tuple[int, str, float]]:
    """(candidate, first allowed kind, mean entropy) in order of mean predictive entropy while the budget lasts."""
    order = np.random.default_rng(seed).permutation(len(pool))
    ranked = sorted((int(j) for j in order), key=lambda j: -pool[j].estimate.mean_entropy)
    out, spent = [], 0.0
    for j in ranked:
        kind = next((k for k in kinds if can_ask(pool[j].has, k)), None)
        if kind is None:
            continue
        cost = pool[j].estimate.cost[kind]
        if spent + cost <= budget + 1e-9:
            spent += cost
            out.append((j, kind, pool[j].estimate.mean_entropy))
    return out


def choose(pool: list[Candidate], kinds: tuple[str, ...], budget_s: float, rank_by: str = "value", seed: int = 0,
           classes: list[str] | None = None, weights: np.ndarray | None = None) -> list[Request]:
    """The requests for ``pool`` within ``budget_s`` seconds, highest value first, each with its reason
    (``classes`` and ``weights`` name the classes in the reasons; default: class ids, weight 1)."""
    picked = _by_value(pool, kinds, budget_s, seed) if rank_by == "value" else _by_uncertainty(pool, kinds, budget_s, seed)
    out = []
    for j, kind, score in sorted(picked, key=lambda t: -t[2]):
        est = pool[j].estimate
        names = classes or [str(c) for c in range(len(est.presence))]
        if rank_by == "value":
            why = reason(kind, est, names, np.ones(len(names)) if weights is None else weights)
        else:
            why = (f"{WORD[kind]}: mean predictive entropy {est.mean_entropy:.3f} nats per pixel, among the highest "
                   f"of the {len(pool)} candidates (uncertainty ranking)")
        out.append(Request(pool[j].key, kind, float(est.cost[kind]), float(score), why))
    return out


def plan(run: str | Path, data: str | Path, hours: float, costs: AnnotationCosts, kinds: tuple[str, ...],
         rank_by: str, images: Sequence[str] | None, seed: int, device: str, threads: int | None) -> Advice:
    """:func:`dspseg.advise.advise_run` after its argument checks (module docstring)."""
    from dspseg.advise.beliefs import beliefs
    from dspseg.advise.calibrate import Calibration, calibrate

    with torch_threads(threads):
        loaded, dataset = load(run, data, device)
        items = candidates(dataset, kinds, images)
        weights = class_weights(dataset)
        calibration = calibrate(loaded, dataset, seed) if items else Calibration()
        ests: dict[int, Estimate] = {}
        embeddings: dict[int, np.ndarray] = {}
        for b in beliefs(loaded, dataset, items, calibration):
            ests[b.index] = estimate(b.probs, weights, costs, known=b.known, raw_entropy=b.raw_entropy,
                                     calibration=calibration)
            embeddings[b.index] = b.embedding
    pool = [Candidate(record_key(dataset.records[i][1]), dataset.items[i].kind, ests[i], embeddings[i])
            for i in items]
    classes = list(dataset.classes)
    requests = choose(pool, kinds, hours * 3600.0, rank_by, seed, classes, weights)
    where = {c.key: (i, c) for i, c in zip(items, pool)}
    details = {r.image: {"item": where[r.image][0], "has": where[r.image][1].has,
                         "gain": where[r.image][1].estimate.value[r.kind], "objects": where[r.image][1].estimate.objects,
                         "mean_entropy": where[r.image][1].estimate.mean_entropy} for r in requests}
    return Advice(requests, hours, costs, rank_by, kinds, len(pool), str(run), str(data), classes, details,
                  loaded, dataset, calibration)
