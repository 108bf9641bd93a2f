"""Which requests fit the budget: class rarity weights, what a record may still get, and the greedy choice.

**Rarity.** Mean Dice weighs every class alike, so a class the current annotations rarely name is
worth more per nat: with ``n_c`` the annotated training records that name class c (a mask showing it,
a box, point or image label of it) out of ``N`` annotated records, ``w_c ∝ sqrt((N + 1) / (n_c + 1))``,
scaled to mean 1 over the classes.

**What may be asked.** A record is never asked for what it has or what its annotation subsumes
(mask > box > point > image labels, :data:`STRENGTH`): a boxed image may get a mask, never points.

**Choice** (a multiple-choice knapsack, solved greedily). Each image offers its allowed kinds, each
with a cost ``C`` and a value ``V`` (:mod:`dspseg.advise.estimate`). Starting from nothing, every
step takes the move with the most value per second that still fits the budget: a new request, or the
upgrade of an image's request to a costlier kind (worth ``ΔV / ΔC``), so an image gets one request
at most. Values are damped by similarity to what is already chosen::

    V'_i = V_i · (1 − λ · max(0, max_{j chosen, j ≠ i} cos(e_i, e_j)))

with ``e`` the images' mean prototype embeddings (centred over the candidates, unit norm) and
``λ = DIVERSITY``: two near-identical images are not both worth their full value. Ties go to a
seeded order of the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dspseg.vocabulary import Kind

#: how much a request's value drops when a chosen image looks exactly like it (0: no diversity)
DIVERSITY = 0.5
#: annotation strength: a record may be asked only for a kind stronger than its own
STRENGTH = {Kind.NONE: 0, Kind.IMAGE: 1, Kind.POINT: 2, Kind.BOX: 3, Kind.MASK: 4}


def can_ask(current: str, kind: str) -> bool:
    """Whether a record whose strongest annotation is ``current`` gains information from ``kind``."""
    return STRENGTH[kind] > STRENGTH[current]


def rarity_weights(class_sets: Sequence[np.ndarray], n_classes: int) -> np.ndarray:
    """(C,) weights, mean 1: ``sqrt((N + 1) / (n_c + 1))`` for ``N`` annotated records whose class
    sets (each (C,) bool) name class c ``n_c`` times."""
    counts = np.zeros(n_classes, np.float64)
    for s in class_sets:
        counts += np.asarray(s, bool)
    w = np.sqrt((len(class_sets) + 1.0) / (counts + 1.0))
    return w / w.mean()


@dataclass
class Chosen:
    """One chosen request: candidate ``index``, ``kind`` (a column of the option table), its cost,
    value (gain) and the similarity damping factor in force when it was last chosen or upgraded."""

    index: int
    kind: str
    cost: float
    gain: float
    factor: float

    @property
    def per_second(self) -> float:
        """Damped value per second of annotation (the ranking key)."""
        return self.gain * self.factor / max(self.cost, 1e-9)


def centred(embeddings: np.ndarray) -> np.ndarray:
    """(N, D) embeddings minus their mean, rows scaled to unit norm (zero rows stay zero)."""
    e = embeddings - embeddings.mean(0, keepdims=True)
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    return np.where(norm > 1e-12, e / np.maximum(norm, 1e-12), 0.0)


def greedy(kinds: Sequence[str], costs: np.ndarray, values: np.ndarray, allowed: np.ndarray, budget_s: float,
           embeddings: np.ndarray | None = None, diversity: float = DIVERSITY, seed: int = 0) -> list[Chosen]:
    """The requests chosen within ``budget_s`` seconds (module docstring).

    ``kinds`` (K,) names the columns of ``costs``, ``values`` (N, K) and ``allowed`` (N, K) bool;
    ``embeddings`` (N, D) or None (no diversity). Returns one :class:`Chosen` per image that got a
    request, in the order images were first chosen; their costs sum to at most ``budget_s``."""
    n = values.shape[0]
    if n == 0:
        return []
    order = np.random.default_rng(seed).permutation(n)  # ties: a seeded order
    cost, value, ok = costs[order].astype(np.float64), values[order].astype(np.float64), allowed[order].copy()
    emb = centred(embeddings[order]) if embeddings is not None and diversity > 0 else None
    maxsim = np.zeros(n)
    current = np.full(n, -1)
    spent = 0.0
    chosen: dict[int, Chosen] = {}
    while True:
        factor = 1.0 - diversity * np.clip(maxsim, 0.0, 1.0) if emb is not None else np.ones(n)
        rows = np.arange(n)
        cur_cost = np.where(current >= 0, cost[rows, np.maximum(current, 0)], 0.0)
        cur_value = np.where(current >= 0, value[rows, np.maximum(current, 0)], 0.0) * factor
        d_cost = cost - cur_cost[:, None]
        d_value = value * factor[:, None] - cur_value[:, None]
        move = ok & (d_value > 0) & (spent + d_cost <= budget_s + 1e-9) & ((d_cost > 0) | (current[:, None] < 0))
        if not move.any():
            break
        ratio = np.where(move, d_value / np.maximum(d_cost, 1e-9), -np.inf)
        i, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        spent += float(d_cost[i, j])
        first = current[i] < 0
        current[i] = j
        chosen[int(i)] = Chosen(int(order[i]), kinds[j], float(cost[i, j]), float(value[i, j]), float(factor[i]))
        if first and emb is not None:
            sim = emb @ emb[i]
            sim[i] = -np.inf
            maxsim = np.maximum(maxsim, sim)
    return list(chosen.values())
