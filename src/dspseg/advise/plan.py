"""One advisor call, step by step: run and dataset → candidates → estimates → chosen requests → reasons.

1. :func:`dspseg.engine.checkpoint.load_run` loads the run; the dataset must have its classes (in
   order) and input channels.
2. The candidates: the training records (or the ``images`` given, which must be training records)
   that may still get one of the allowed kinds (:func:`dspseg.advise.rank.can_ask`).
3. Each is predicted and estimated (:mod:`dspseg.advise.beliefs`, :mod:`dspseg.advise.estimate`),
   with class weights from the annotations of every training record (:func:`~dspseg.advise.rank.rarity_weights`).
4. ``rank_by="value"``: :func:`dspseg.advise.rank.greedy`; ``"uncertainty"``: images by mean
   predictive entropy, each asked for its first allowed kind while the budget lasts.
5. Requests are sorted by the value they were ranked by, highest first, each with its reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dspseg.advise import Advice, Request, record_key
from dspseg.advise.estimate import RESOLVES, Estimate, estimate
from dspseg.advise.rank import can_ask, greedy, rarity_weights
from dspseg.costs import AnnotationCosts
from dspseg.errors import DatasetError, OptionError
from dspseg.vocabulary import COST_KEY, Kind

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


def _by_value(dataset: Any, pool: list[int], ests: dict[int, Estimate], kinds: tuple[str, ...],
              budget: float, embeddings: dict[int, np.ndarray], seed: int) -> list[tuple[int, str, float]]:
    """(item, kind, damped value per second) of the greedy choice."""
    cost = np.array([[ests[i].cost[k] for k in kinds] for i in pool], np.float64).reshape(len(pool), len(kinds))
    value = np.array([[ests[i].value[k] for k in kinds] for i in pool], np.float64).reshape(len(pool), len(kinds))
    allowed = np.array([[can_ask(dataset.items[i].kind, k) for k in kinds] for i in pool], bool).reshape(cost.shape)
    emb = np.stack([embeddings[i] for i in pool]) if pool else None
    chosen = greedy(kinds, cost, value, allowed, budget, embeddings=emb, seed=seed)
    return [(pool[c.index], c.kind, c.per_second) for c in chosen]


def _by_uncertainty(dataset: Any, pool: list[int], ests: dict[int, Estimate], kinds: tuple[str, ...],
                    budget: float, seed: int) -> list[tuple[int, str, float]]:
    """(item, first allowed kind, mean entropy) in order of mean predictive entropy while the budget lasts."""
    order = np.random.default_rng(seed).permutation(len(pool))
    ranked = sorted((pool[j] for j in order), key=lambda i: -ests[i].mean_entropy)
    out, spent = [], 0.0
    for i in ranked:
        kind = next(k for k in kinds if can_ask(dataset.items[i].kind, k))
        if spent + ests[i].cost[kind] <= budget + 1e-9:
            spent += ests[i].cost[kind]
            out.append((i, kind, ests[i].mean_entropy))
    return out


def plan(run: str | Path, data: str | Path, hours: float, costs: AnnotationCosts, kinds: tuple[str, ...],
         rank_by: str, images: Sequence[str] | None, seed: int, device: str, threads: int | None) -> Advice:
    """:func:`dspseg.advise.advise_run` after its argument checks (module docstring)."""
    from dspseg.advise.beliefs import beliefs

    with torch_threads(threads):
        loaded, dataset = load(run, data, device)
        pool = candidates(dataset, kinds, images)
        weights = class_weights(dataset)
        ests: dict[int, Estimate] = {}
        embeddings: dict[int, np.ndarray] = {}
        for b in beliefs(loaded, dataset, pool):
            ests[b.index] = estimate(b.probs, weights, costs, known=b.known, raw_entropy=b.raw_entropy)
            embeddings[b.index] = b.embedding
    budget = hours * 3600.0
    picked = (_by_value(dataset, pool, ests, kinds, budget, embeddings, seed) if rank_by == "value"
              else _by_uncertainty(dataset, pool, ests, kinds, budget, seed))
    classes = list(dataset.classes)
    requests, details = [], {}
    for i, kind, score in sorted(picked, key=lambda t: -t[2]):
        key, est = record_key(dataset.records[i][1]), ests[i]
        if rank_by == "value":
            why = reason(kind, est, classes, weights)
        else:
            why = (f"{WORD[kind]}: mean predictive entropy {est.mean_entropy:.3f} nats per pixel, among the highest "
                   f"of the {len(pool)} candidates (uncertainty ranking)")
        requests.append(Request(key, kind, float(est.cost[kind]), float(score), why))
        details[key] = {"item": i, "gain": est.value[kind], "objects": est.objects, "has": dataset.items[i].kind,
                        "unit": COST_KEY[kind], "mean_entropy": est.mean_entropy}
    return Advice(requests, hours, costs, rank_by, kinds, len(pool), str(run), str(data), classes, details)
