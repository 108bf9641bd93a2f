"""Cross-validation splits by group (sub-volume) with every class present in every part.

The paper (§5.1) splits OpenOrganelle crops "via cross-sub-volume train/validation/test splits under
the side-condition that every class is present in at least one sub-volume per split". Slices of one
sub-volume are nearly identical, so a split never cuts a group: whole groups go to train, val or test.

Search. Let ``g = 1..G`` be the groups, ``M[g, c] = 1`` if class ``c`` occurs in group ``g`` and
``a[g] ∈ {train, val, test}`` an assignment. An assignment is *valid* when every part holds every
class: ``max_{g: a[g] = p} M[g, c] = 1`` for all parts ``p`` and classes ``c``. Among valid
assignments, fold ``k`` minimises

    cost(a) = 4 · Σ_p |n_p / N − f_p|                         (image fractions vs. ``fractions``)
            + Σ_{g ∈ test} T_g + ½ Σ_{g ∈ val} V_g             (groups already used as test / val
                                                                in folds 0..k−1: rotation)
            + 100 · [a equals an earlier fold]
            + 0.01 · #{g : a[g] ≠ r_k[g]}                      (seeded rotation r_k: tie-break)

where ``r_k`` is the cross-validation rotation of a seeded group permutation: test = the ``k``-th
block of ``round(f_test · G)`` groups, val = the next ``round(f_val · G)`` groups. With at most
``EXHAUSTIVE_MAX_GROUPS`` groups all ``3^G`` assignments are scored, so "impossible" is exact;
beyond, a seeded best-improvement local search (moves and swaps of groups) starts from ``r_k`` and
restarts from seeded random assignments only while it finds nothing valid.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dspseg.data.manifest import Manifest

PARTS = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2
EXHAUSTIVE_MAX_GROUPS = 10
_RESTARTS = 15
_W_MISSING, _W_DUP, _W_SIZE, _W_PREF = 1000.0, 100.0, 4.0, 0.01


@dataclass(frozen=True)
class Split:
    """Record indices (into the manifest's ``images``) of the three parts of one fold, ascending."""

    train: list[int]
    val: list[int]
    test: list[int]

    def part_of(self) -> dict[int, str]:
        """Record index → ``"train" | "val" | "test"``."""
        return {i: name for name in PARTS for i in getattr(self, name)}


def image_class_sets(manifest: Manifest) -> list[frozenset[int]]:
    """Classes present in every record, as class ids.

    From the record's mask if it has one (values other than ``ignore_index``), else from ``labels``,
    else from the classes its boxes and points name (complete by the manifest contract); an
    unlabeled record gives the empty set. Reads every mask file once.
    """
    from dspseg.data.io import read_mask

    names = {c: i for i, c in enumerate(manifest.classes)}
    out: list[frozenset[int]] = []
    for i, rec in enumerate(manifest.images):
        where = f"images[{i}] ({rec.file})"
        if rec.mask is not None:
            values = np.unique(read_mask(manifest.path(rec.mask)))
            values = values[values != manifest.ignore_index]
            bad = values[(values < 0) | (values >= manifest.n_classes)]
            if bad.size:
                raise ValueError(f"{where}, field 'mask' ({rec.mask}): values {bad[:5].tolist()} are neither a "
                                 f"class id (0..{manifest.n_classes - 1}) nor the ignore index "
                                 f"{manifest.ignore_index}. Fix: correct the mask; `dspseg validate` lists all such files")
            out.append(frozenset(int(v) for v in values))
            continue
        if rec.labels is not None:
            found, field = list(rec.labels), "labels"
        else:
            found = [b.cls for b in rec.boxes or []] + [p.cls for p in rec.points or []]
            field = "boxes/points"
        unknown = sorted(set(found) - set(names))
        if unknown:
            raise ValueError(f"{where}, field '{field}': unknown class(es) {unknown}. "
                             f"Fix: use one of {manifest.classes}")
        out.append(frozenset(names[c] for c in found))
    return out


def make_splits(groups: Sequence[str], class_sets: Sequence[frozenset[int]], n_classes: int, n_splits: int,
                seed: int = 0, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                class_names: Sequence[str] | None = None) -> list[Split]:
    """Group-respecting cross-validation splits (train, val, test) with every class in every part.

    Args:
        groups: (N,) group name of every record (``record.group_name``).
        class_sets: (N,) class ids present in every record (see :func:`image_class_sets`).
        n_classes: C; every class ``0..C-1`` must be placed in all three parts.
        n_splits: number of folds S. Folds rotate the groups through test and val as far as the
            class constraint allows; no two folds are identical.
        seed: seeds the group permutation and the search; same inputs and seed → same splits.
        fractions: target image fractions (train, val, test), positive, summing to 1.
        class_names: optional names used in error messages.

    Raises:
        ValueError: naming the classes that cannot be placed (found in fewer than 3 groups, or no
            assignment of groups works) and the fix, or when fewer distinct folds exist than asked.
    """
    n = len(groups)
    if len(class_sets) != n:
        raise ValueError(f"class_sets: expected one set per record ({n}), got {len(class_sets)}")
    if n_splits < 1:
        raise ValueError(f"n_splits: expected at least 1, got {n_splits}")
    if n_classes < 1:
        raise ValueError(f"n_classes: expected at least 1, got {n_classes}")
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or np.any(frac <= 0) or abs(frac.sum() - 1) > 1e-6:
        raise ValueError(f"fractions: expected three positive numbers (train, val, test) summing to 1, got {fractions}")
    name = (lambda c: f"{c} ({class_names[c]!r})") if class_names is not None else str

    names = list(dict.fromkeys(groups))  # first-appearance order: independent of hashing
    gid = {g: i for i, g in enumerate(names)}
    rec_group = np.array([gid[g] for g in groups], dtype=np.int64)
    n_groups = len(names)
    member = np.zeros((n_groups, n_classes), dtype=bool)
    for i, cs in enumerate(class_sets):
        for c in cs:
            if not 0 <= c < n_classes:
                raise ValueError(f"class_sets[{i}]: class id {c} outside 0..{n_classes - 1}")
            member[rec_group[i], c] = True
    sizes = np.bincount(rec_group, minlength=n_groups).astype(float)

    per_class = member.sum(0)
    rare = np.flatnonzero(per_class < 3)
    if rare.size:
        detail = "; ".join(f"class {name(c)} in {per_class[c]} group(s)"
                           + (f" ({', '.join(names[g] for g in np.flatnonzero(member[:, c]))})" if per_class[c] else "")
                           for c in rare)
        raise ValueError(f"cannot split {n_groups} group(s) so that train, val and test each hold every class: "
                         f"{detail}; each class must occur in at least 3 groups. Fix: add annotated groups "
                         f"(sub-volumes) containing these classes, or drop or merge these classes")

    search = _Search(member, sizes, frac)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_groups)
    n_test = max(1, round(frac[TEST] * n_groups))
    n_val = max(1, round(frac[VAL] * n_groups))
    while n_test + n_val > n_groups - 1:  # train keeps at least one group
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    times_test = np.zeros(n_groups)
    times_val = np.zeros(n_groups)
    previous: list[np.ndarray] = []
    splits = []
    for k in range(n_splits):
        preferred = np.full(n_groups, TRAIN, dtype=np.int8)
        start = k * n_test
        preferred[perm[np.arange(start, start + n_test) % n_groups]] = TEST
        preferred[perm[np.arange(start + n_test, start + n_test + n_val) % n_groups]] = VAL
        best = search.best(preferred, times_test, times_val, previous, np.random.default_rng([seed, k]))
        if best is None:
            missing = search.least_missing_classes()
            raise ValueError(f"cannot split the {n_groups} groups so that train, val and test each hold every "
                             f"class: no assignment found; at best class(es) {', '.join(name(c) for c in missing)} "
                             f"are missing from a part (they share too few groups). Fix: add annotated groups "
                             f"(sub-volumes) containing them, or drop or merge these classes")
        if any(np.array_equal(best, p) for p in previous):
            raise ValueError(f"n_splits: only {k} distinct split(s) of the {n_groups} groups keep every class in "
                             f"train, val and test, {n_splits} were asked. Fix: use --n-splits {k} or fewer, "
                             f"or add groups")
        previous.append(best)
        times_test += best == TEST
        times_val += best == VAL
        idx = [np.flatnonzero(best[rec_group] == p).tolist() for p in (TRAIN, VAL, TEST)]
        splits.append(Split(train=idx[0], val=idx[1], test=idx[2]))
    return splits


class _Search:
    """Scores assignments ``a`` (A, G) int8 and finds the cheapest valid one (see module docstring)."""

    def __init__(self, member: np.ndarray, sizes: np.ndarray, frac: np.ndarray):
        self.member = member.astype(np.float32)  # (G, C)
        self.sizes = sizes / sizes.sum()  # (G,)
        self.frac = frac
        self.n_groups = member.shape[0]
        self.exhaustive = self.n_groups <= EXHAUSTIVE_MAX_GROUPS
        self._closest: np.ndarray | None = None
        if self.exhaustive:
            every = np.array(list(itertools.product(range(3), repeat=self.n_groups)), dtype=np.int8)
            base = self.base_cost(every)
            self._closest = every[int(np.argmin(base))]
            keep = base < _W_MISSING
            self.valid, self.valid_base = every[keep], base[keep]

    def missing(self, a: np.ndarray) -> np.ndarray:
        """(A, 3, C) True where part p of assignment a lacks class c."""
        onehot = (a[:, None, :] == np.arange(3, dtype=np.int8)[None, :, None]).astype(np.float32)  # (A, 3, G)
        return (onehot @ self.member) == 0

    def base_cost(self, a: np.ndarray) -> np.ndarray:
        """Fold-independent part of the cost: missing (part, class) pairs and size deviation, (A,)."""
        onehot = (a[:, None, :] == np.arange(3, dtype=np.int8)[None, :, None]).astype(np.float32)
        miss = ((onehot @ self.member) == 0).sum((1, 2))
        dev = np.abs(onehot @ self.sizes - self.frac).sum(1)
        return _W_MISSING * miss + _W_SIZE * dev

    def cost(self, a, base, preferred, times_test, times_val, previous) -> np.ndarray:
        reuse = ((a == TEST) * times_test).sum(1) + 0.5 * ((a == VAL) * times_val).sum(1)
        dup = np.zeros(len(a), dtype=bool)
        for p in previous:
            dup |= (a == p).all(1)
        return base + reuse + _W_DUP * dup + _W_PREF * (a != preferred).sum(1)

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
            if c < _W_MISSING:
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

    def least_missing_classes(self) -> list[int]:
        """Classes missing from some part in the assignment closest to valid (for error messages)."""
        a = self._closest if self._closest is not None else np.zeros(self.n_groups, np.int8)
        return np.flatnonzero(self.missing(a[None])[0].any(0)).tolist()
