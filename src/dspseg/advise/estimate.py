"""What each annotation type would cost on one image, and how much of the model's uncertainty it would resolve.

Input: P̃ (C, H, W), the model's probabilities restricted to what the record already says
(:mod:`dspseg.advise.beliefs`), and class weights ``w`` (C,) (:func:`dspseg.advise.rank.rarity_weights`).
Let ``ŷ = argmax_c P̃`` be the prediction and its *objects* the 8-connected components of ``ŷ`` of at
least ``min_area`` pixels (:func:`dspseg.data.weak.connected_components`: the same rule the ACR
simulation derives boxes and points with, so every class, background included, has objects).

**Cost** (seconds, :class:`~dspseg.costs.AnnotationCosts`)::

    mask  = t_mask                      box   = t_box   · N̂      N̂  = predicted objects (calibrated)
    image = t_label · max(1, Σ_c q_c)   point = t_point · N̂      q_c = P(class c is in the image)

``q_c`` is the larger of two signs that class c is present: the ``PRESENCE_AREA``-th largest P̃[c, j]
(some object-sized set of pixels is c) and a noisy-or over object-sized areas,
``1 − exp(Σ_{j: P̃_cj ≥ 0.05} log(1 − P̃_cj) / EVIDENCE_AREA)`` (a class the model finds confidently in
many pixels is surely present, not only as sure as its surest pixel); 1 or 0 when the record already
states its classes.

**Value**: the expected cross-entropy (nats, summed over pixels, class c weighted by ``w_c``) that
the answer removes from the true labels under the model, for what each type tells (DESIGN: image
labels fix class presence, points one instance's class, boxes extent and class, masks everything):

* ``mask``: every pixel becomes known, removing its entropy:
  ``V_mask = Σ_j Σ_c w_c · (−P̃_cj log P̃_cj)``.
* ``image``: with probability ``1 − q_c`` class c is absent; then it is excluded at every pixel and
  the true class's probability rises by ``1 / (1 − P̃_cj)``:
  ``V_image = Σ_c w_c (1 − q_c) Σ_j −log(1 − P̃_cj)``.
* ``point``: one click per object names its class (and the image's classes, as labels do): the
  *interior* pixels of the predicted objects (whose ``(2r+1)²`` neighbourhood has one predicted class)
  become known, their entropy removed; presence as for ``image`` on the other pixels:
  ``V_point = Σ_{j interior} Σ_c w_c (−P̃_cj log P̃_cj) + V_image(edge pixels)``.
* ``box``: what a point tells, plus the extent: outside every box of class c there is no c, which
  the model expects with probability ``1 − P̃_cj`` at an edge pixel outside the boxes of c's
  predicted objects: ``V_box = V_point + Σ_c w_c q_c Σ_{j edge, outside boxes of c} (1 − P̃_cj)(−log(1 − P̃_cj))``.

A stronger type tells at least what a weaker one does, so the values are made monotone
(``V_image ≤ V_point ≤ V_box ≤ V_mask``). docs/advisor.md justifies the choice and measures it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from dspseg.costs import AnnotationCosts
from dspseg.vocabulary import Kind

#: smallest predicted object counted (pixels): an under-trained model breaks thin structures into
#: fragments and sprinkles specks, which are not objects to box or click (docs/advisor.md measures it)
MIN_AREA = 20
#: pixels of a class that make a sighting of it (presence: the PRESENCE_AREA-th largest probability)
PRESENCE_AREA = 5
#: pixels that count as one independent sighting of a class in the presence estimate
EVIDENCE_AREA = 64
#: probabilities below this are noise, not a sighting
EVIDENCE_FLOOR = 0.05
#: a pixel is interior when every pixel within this distance (Chebyshev) has its predicted class
INTERIOR_RADIUS = 1
#: annotation kinds the advisor can ask for, strongest first
REQUEST_KINDS: tuple[str, ...] = (Kind.MASK, Kind.BOX, Kind.POINT, Kind.IMAGE)
#: what each kind resolves, in words (the reasons say it)
RESOLVES = {Kind.IMAGE: "which classes are present", Kind.POINT: "the class of each object",
            Kind.BOX: "the class and extent of each object", Kind.MASK: "every pixel"}
_EPS = 1e-6


@dataclass
class Estimate:
    """Costs (seconds) and values (weighted nats) per request kind for one image, and what explains them.

    ``objects``: predicted objects N̂; ``presence`` (C,): q_c; ``per_class`` maps a kind to the (C,)
    share of its value each class contributes (the reasons name the largest)."""

    objects: int
    presence: np.ndarray
    cost: dict[str, float]
    value: dict[str, float]
    per_class: dict[str, np.ndarray] = field(repr=False)
    mean_entropy: float = 0.0  # unrestricted predictive entropy, nats per pixel (the uncertainty baseline)


def presence(probs: np.ndarray, min_area: int = PRESENCE_AREA, area: float = EVIDENCE_AREA) -> np.ndarray:
    """q (C,): the probability that each class is in the image, from ``probs`` (C, H, W) (module docstring)."""
    flat = probs.reshape(probs.shape[0], -1).astype(np.float64)
    k = min(max(min_area, 1), flat.shape[1])
    surest = np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k]
    sightings = np.where(flat >= EVIDENCE_FLOOR, np.log(np.clip(1.0 - flat, _EPS, 1.0)), 0.0).sum(1)
    return np.maximum(surest, 1.0 - np.exp(sightings / area))


def objects(labels: np.ndarray, n_classes: int, min_area: int = MIN_AREA) -> tuple[np.ndarray, np.ndarray]:
    """Predicted objects of a label map (H, W): ``instances`` (H, W) int32 (0 = in no counted object,
    1..N) and their classes (N,); components smaller than ``min_area`` pixels are dropped."""
    from dspseg.data.weak import components_of_checked

    instances, classes = components_of_checked(labels.astype(np.int64), n_classes, ignore_index=-1)
    if len(classes) == 0:
        return instances, classes
    area = np.bincount(instances.ravel(), minlength=len(classes) + 1)[1:]
    keep = area >= min_area
    new_id = np.zeros(len(classes) + 1, np.int32)
    new_id[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_id[instances], classes[keep]


def interior(labels: np.ndarray, radius: int = INTERIOR_RADIUS) -> np.ndarray:
    """(H, W) bool: pixels whose (2·radius+1)² neighbourhood (clipped at the border) has one label."""
    size = 2 * radius + 1
    return ndimage.maximum_filter(labels, size=size, mode="nearest") == ndimage.minimum_filter(
        labels, size=size, mode="nearest")


def outside_boxes(instances: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, H, W) bool: pixels outside every bounding box of the objects of each class."""
    out = np.ones((n_classes, *instances.shape), bool)
    for k, sl in enumerate(ndimage.find_objects(instances, max_label=len(classes))):
        if sl is not None:
            out[classes[k]][sl] = False
    return out


def estimate(probs: np.ndarray, weights: np.ndarray, costs: AnnotationCosts, known: np.ndarray | None = None,
             raw_entropy: np.ndarray | None = None, min_area: int = MIN_AREA,
             radius: int = INTERIOR_RADIUS, calibration: Any = None) -> Estimate:
    """:class:`Estimate` of one image from P̃ ``probs`` (C, H, W) (module docstring).

    ``weights`` (C,): class weights; ``known`` (C,) bool: the record's stated class set (presence is
    then certain), None when unknown; ``raw_entropy`` (H, W): the unrestricted entropy, for the
    baseline's mean (P̃'s entropy if not given); ``calibration``
    (:class:`~dspseg.advise.calibrate.Calibration`): maps the presence scores to probabilities and
    scales the object count (``probs`` are already tempered by it)."""
    p = probs.astype(np.float64)
    n_classes = p.shape[0]
    w = np.asarray(weights, np.float64)[:, None, None]
    labels = p.argmax(0)
    inst, inst_classes = objects(labels, n_classes, min_area)
    found = len(inst_classes)
    n_objects = max(1.0, calibration.objects(found, known is not None) if calibration is not None else found)
    if known is not None:
        q = np.asarray(known, np.float64)
    else:
        q = presence(p)
        q = calibration.presence(q) if calibration is not None else q
    inner = interior(labels, radius)
    edge = ~inner
    plogp = -p * np.log(np.clip(p, 1e-12, 1.0))  # (C, H, W): entropy per class and pixel
    excl = -np.log(np.clip(1.0 - p, _EPS, 1.0))  # CE removed at a pixel when class c is ruled out
    mask_c = (w * plogp).sum(axis=(1, 2))
    image_c = (w[:, 0, 0] * (1 - q)) * excl.sum(axis=(1, 2))
    point_c = (w * plogp * inner).sum(axis=(1, 2)) + (w[:, 0, 0] * (1 - q)) * (excl * edge).sum(axis=(1, 2))
    outside = outside_boxes(inst, inst_classes, n_classes) & edge
    extent_c = (w[:, 0, 0] * q) * ((1 - p) * excl * outside).sum(axis=(1, 2))
    box_c = point_c + extent_c
    per_class = {Kind.IMAGE: image_c, Kind.POINT: point_c, Kind.BOX: box_c, Kind.MASK: mask_c}
    value: dict[str, float] = {}
    floor = 0.0
    for kind in reversed(REQUEST_KINDS):  # image, point, box, mask: each at least the weaker one's
        floor = max(floor, float(per_class[kind].sum()))
        value[kind] = floor
    expected_classes = float(q.sum())
    cost = {Kind.MASK: costs.mask, Kind.BOX: costs.box * n_objects, Kind.POINT: costs.point * n_objects,
            Kind.IMAGE: costs.label * max(1.0, expected_classes)}
    ent = raw_entropy if raw_entropy is not None else plogp.sum(0)
    return Estimate(objects=int(round(n_objects)), presence=q, cost=cost, value=value, per_class=per_class,
                    mean_entropy=float(np.mean(ent)))
