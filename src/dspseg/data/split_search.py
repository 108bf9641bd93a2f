"""The search behind :func:`dspseg.data.splits.make_splits`: the cheapest valid assignment of groups
to train, val and test for one fold (the cost is in :mod:`dspseg.data.splits`' docstring).

Assignments are int8 arrays ``(A, G)`` with values ``TRAIN, VAL, TEST``; every score is vectorised
over the ``A`` assignments, so the exhaustive search over ``3^G`` assignments of up to
``EXHAUSTIVE_MAX_GROUPS`` groups is one matrix product.
"""

from __future__ import annotations

import itertools

import numpy as np

TRAIN, VAL, TEST = 0, 1, 2
EXHAUSTIVE_MAX_GROUPS = 10
_RESTARTS = 15
W_MISSING, W_DUP, W_SIZE, W_PREF = 1000.0, 100.0, 4.0, 0.01


class GroupSearch:
    """Scores assignments of the searched groups and finds the cheapest valid one.

    Args:
        scored: (G, C) bool, a mask of group g holds class c (what val and test need).
        known: (G, C) bool, any annotation of group g holds class c (what train needs).
        train_base: (C,) bool, classes train holds already through the groups not searched.
        sizes: (G,) masked images per group.
        frac: (3,) target fractions of masked images in train, val, test.
    """

    def __init__(self, scored: np.ndarray, known: np.ndarray, train_base: np.ndarray, sizes: np.ndarray,
                 frac: np.ndarray):
        self.scored = scored.astype(np.float32)
        self.known = known.astype(np.float32)
        self.need_scored = scored.any(0)  # (C,) classes some mask holds
        self.need_known = (known.any(0) | train_base) & ~train_base  # (C,) what train still needs
        self.sizes = sizes / sizes.sum()
        self.frac = frac
        self.n_groups = scored.shape[0]
        self.exhaustive = self.n_groups <= EXHAUSTIVE_MAX_GROUPS
        self._closest: np.ndarray | None = None
        if self.exhaustive:
            every = np.array(list(itertools.product(range(3), repeat=self.n_groups)), dtype=np.int8)
            base = self.base_cost(every)
            self._closest = every[int(np.argmin(base))]
            keep = base < W_MISSING
            self.valid, self.valid_base = every[keep], base[keep]

    def missing(self, a: np.ndarray) -> np.ndarray:
        """(A, 3, C) True where part p of assignment a lacks a class it needs."""
        onehot = (a[:, None, :] == np.arange(3, dtype=np.int8)[None, :, None]).astype(np.float32)  # (A, 3, G)
        lack = (onehot @ self.scored) == 0  # (A, 3, C)
        lack[:, TRAIN] = ((onehot[:, TRAIN] @ self.known) == 0) & self.need_known
        lack[:, VAL] &= self.need_scored
        lack[:, TEST] &= self.need_scored
        return lack

    def base_cost(self, a: np.ndarray) -> np.ndarray:
        """Fold-independent part of the cost: missing (part, class) pairs and size deviation, (A,)."""
        onehot = (a[:, None, :] == np.arange(3, dtype=np.int8)[None, :, None]).astype(np.float32)
        dev = np.abs(onehot @ self.sizes - self.frac).sum(1)
        return W_MISSING * self.missing(a).sum((1, 2)) + W_SIZE * dev

    def cost(self, a, base, preferred, times_test, times_val, previous) -> np.ndarray:
        reuse = ((a == TEST) * times_test).sum(1) + 0.5 * ((a == VAL) * times_val).sum(1)
        dup = np.zeros(len(a), dtype=bool)
        for p in previous:
            dup |= (a == p).all(1)
        return base + reuse + W_DUP * dup + W_PREF * (a != preferred).sum(1)

    def best(self, preferred, times_test, times_val, previous, rng) -> np.ndarray | None:
        """Cheapest valid assignment (G,) for one fold, or None when none was found."""
        args = (preferred, times_test, times_val, previous)
        if self.exhaustive:
            if not len(self.valid):
                return None
            return self.valid[int(np.argmin(self.cost(self.valid, self.valid_base, *args)))].copy()
        # Start from the rotation; random restarts (same part sizes) only while nothing valid is found.
        for attempt in range(1 + _RESTARTS):
            start = preferred if attempt == 0 else rng.permutation(preferred)
            a, c = self._descend(start.copy(), rng, args)
            if c < W_MISSING:
                return a
            if self._closest is None or self.base_cost(a[None])[0] < self.base_cost(self._closest[None])[0]:
                self._closest = a
        return None

    def _descend(self, a: np.ndarray, rng: np.random.Generator, args) -> tuple[np.ndarray, float]:
        """Best-improvement local search over single-group moves and two-group swaps."""
        g = self.n_groups
        current = self.cost(a[None], self.base_cost(a[None]), *args)[0]
        for _ in range(20 * g):
            moves = np.repeat(a[None], 2 * g, 0)
            moves[np.arange(g), np.arange(g)] = (a + 1) % 3
            moves[g + np.arange(g), np.arange(g)] = (a + 2) % 3
            i, j = np.triu_indices(g, 1)
            diff = a[i] != a[j]
            i, j = i[diff], j[diff]
            if len(i) > 3000:
                pick = rng.choice(len(i), 3000, replace=False)
                i, j = i[pick], j[pick]
            swaps = np.repeat(a[None], len(i), 0)
            rows = np.arange(len(i))
            swaps[rows, i], swaps[rows, j] = a[j], a[i]
            cand = np.concatenate([moves, swaps])
            costs = self.cost(cand, self.base_cost(cand), *args)
            k = int(np.argmin(costs))
            if costs[k] >= current - 1e-9:
                break
            a, current = cand[k], costs[k]
        return a, float(current)

    def closest_missing(self) -> dict[int, list[int]]:
        """Part → classes it lacks in the assignment closest to valid (for error messages)."""
        a = self._closest if self._closest is not None else np.zeros(self.n_groups, np.int8)
        lack = self.missing(a[None])[0]
        return {p: np.flatnonzero(lack[p]).tolist() for p in range(3) if lack[p].any()}
