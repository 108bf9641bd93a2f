"""Calibrate the model's beliefs on images whose masks are known, before the advisor trusts them.

A network trained on few masks is over-confident: on the synthetic default at ACR 32 its pixels'
expected cross-entropy (their entropy) was half the cross-entropy of the true labels, it found 3 times
as many objects as there are and 1.5 times as many classes (docs/advisor.md). Three numbers, fitted on
the run's validation images (full masks; the masked training images when there are none):

* **temperature** ``T`` (Guo et al., *On calibration of modern neural networks*, ICML 2017): the
  probabilities become ``softmax(log P / T)``, ``T`` minimising the cross-entropy of the true labels
  (a 1-D search over [0.25, 20] on up to :data:`MAX_PIXELS` pixels);
* **presence** (Platt scaling): ``P(c present) = σ(a · logit(q_raw) + b)`` over every (image, class)
  pair, ``q_raw`` the presence score of :func:`dspseg.advise.estimate.presence` on the tempered
  probabilities, ``a, b`` by logistic regression (a little L2 towards the identity);
* **objects**: the ratio of true connected components to predicted objects, summed over the images,
  which scales the object counts that boxes and points are priced by; twice: for images whose classes
  are unknown (the prediction as it is) and for images whose annotation states them (the prediction
  restricted to the true classes, as image labels or points restrict a training image's).

With fewer than :data:`MIN_IMAGES` masked images nothing is fitted (the identity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: pixels the temperature is fitted on, at most (a seeded sample)
MAX_PIXELS = 200_000
#: masked images needed to fit anything
MIN_IMAGES = 3
#: images read for the calibration, at most
MAX_IMAGES = 64


@dataclass(frozen=True)
class Calibration:
    """How to correct the model's probabilities, presence and object counts (module docstring);
    ``images``: the masked images it was fitted on (0: the identity), ``source``: which ones."""

    temperature: float = 1.0
    presence_a: float = 1.0
    presence_b: float = 0.0
    objects_ratio: float = 1.0
    objects_ratio_known: float = 1.0
    images: int = 0
    source: str = "none"

    def temper(self, probs: np.ndarray) -> np.ndarray:
        """``softmax(log probs / T)`` over the class axis 0 of ``probs`` (C, ...), float32."""
        if self.temperature == 1.0:
            return probs.astype(np.float32)
        logp = np.log(np.clip(probs, 1e-12, 1.0)) / self.temperature
        logp -= logp.max(0, keepdims=True)
        e = np.exp(logp)
        return (e / e.sum(0, keepdims=True)).astype(np.float32)

    def presence(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated P(present) from raw presence scores (any shape)."""
        if self.presence_a == 1.0 and self.presence_b == 0.0:
            return raw
        return _sigmoid(self.presence_a * _logit(raw) + self.presence_b)

    def text(self) -> str:
        """One line for the outputs."""
        if not self.images:
            return "not calibrated (no masked images to fit on)"
        return (f"calibrated on {self.images} {self.source} image(s): temperature {self.temperature:.2f}, "
                f"presence σ({self.presence_a:.2f}·logit q + {self.presence_b:.2f}), objects × {self.objects_ratio:.2f} "
                f"(× {self.objects_ratio_known:.2f} when the classes are known)")

    def objects(self, predicted: int, known: bool) -> float:
        """The calibrated number of objects for ``predicted`` ones (classes ``known`` or not)."""
        return predicted * (self.objects_ratio_known if known else self.objects_ratio)


def _logit(q: np.ndarray) -> np.ndarray:
    q = np.clip(q, 1e-6, 1 - 1e-6)
    return np.log(q) - np.log1p(-q)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """T minimising the mean cross-entropy of ``labels`` (N,) under ``softmax(log probs / T)``, probs (N, C)."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(probs, 1e-12, 1.0))

    def ce(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]))

    res = minimize_scalar(ce, bounds=(np.log(0.25), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def fit_presence(raw: np.ndarray, present: np.ndarray, l2: float = 0.01) -> tuple[float, float]:
    """(a, b) of ``P(present) = σ(a · logit(raw) + b)`` by L2-regularised (towards a = 1, b = 0) logistic regression."""
    from scipy.optimize import minimize

    x, y = _logit(raw.ravel()), present.ravel().astype(np.float64)
    if y.min() == y.max():
        return 1.0, 0.0

    def loss(ab: np.ndarray) -> float:
        z = ab[0] * x + ab[1]
        return float(np.mean(np.logaddexp(0, z) - y * z) + l2 * ((ab[0] - 1) ** 2 + ab[1] ** 2))

    res = minimize(loss, np.array([1.0, 0.0]), method="L-BFGS-B")
    return float(res.x[0]), float(res.x[1])


def calibrate(loaded: Any, dataset: Any, seed: int = 0) -> Calibration:
    """:class:`Calibration` of the run ``loaded`` on the masked validation images of ``dataset``'s
    manifest (else its masked training images, the dataset itself)."""
    from dspseg.advise.beliefs import predict_items
    from dspseg.advise.estimate import MIN_AREA, objects, presence
    from dspseg.data.dataset import SegmentationDataset
    from dspseg.data.weak import connected_components
    from dspseg.vocabulary import Kind

    source, pool = "validation", None
    try:
        val = SegmentationDataset(dataset.manifest, "val", normalisation=loaded.normalisation, crop_size=None,
                                  derive_weak=False)
        if len(val.indices_of_kinds({Kind.MASK})) >= MIN_IMAGES:
            pool = val
    except ValueError:  # a validation image that cannot be read: calibrate on the training masks
        pool = None
    if pool is None:
        source, pool = "masked training", dataset
    masked = pool.indices_of_kinds({Kind.MASK})
    rng = np.random.default_rng(seed)
    if len(masked) > MAX_IMAGES:
        masked = sorted(rng.choice(masked, MAX_IMAGES, replace=False).tolist())
    if len(masked) < MIN_IMAGES:
        return Calibration()
    ignore, n = pool.ignore_index, pool.n_classes
    pixels, truths, per_image = [], [], []
    for i, probs in predict_items(loaded, pool, masked):
        y = pool.window(i, 0, 0, *pool.items[i].shape)["target"]
        keep = y != ignore
        pixels.append(probs[:, keep].T)
        truths.append(y[keep])
        per_image.append((probs, y))
    p, y = np.concatenate(pixels), np.concatenate(truths)
    if len(y) > MAX_PIXELS:
        pick = rng.choice(len(y), MAX_PIXELS, replace=False)
        p, y = p[pick], y[pick]
    t = fit_temperature(p, y)
    tempered = Calibration(temperature=t)
    raw, present, n_free, n_known, n_true = [], [], 0, 0, 0
    for probs, truth in per_image:
        q = tempered.temper(probs)
        raw.append(presence(q))
        shown = np.zeros(n, bool)
        shown[np.unique(truth[truth != ignore])] = True
        present.append(shown)
        n_free += len(objects(q.argmax(0), n, MIN_AREA)[1])
        n_known += len(objects(np.where(shown[:, None, None], q, -1.0).argmax(0), n, MIN_AREA)[1])
        n_true += len(connected_components(truth, n, ignore)[1])
    a, b = fit_presence(np.stack(raw), np.stack(present))

    def ratio(pred: int) -> float:
        return float(np.clip(n_true / max(pred, 1), 0.1, 10.0))

    return Calibration(t, a, b, ratio(n_free), ratio(n_known), len(per_image), source)
