"""Cross-validation splits by group (sub-volume): val and test hold masks of every class, train every class.

The paper (§5.1) splits OpenOrganelle crops "via cross-sub-volume train/validation/test splits under
the side-condition that every class is present in at least one sub-volume per split". Slices of one
sub-volume are nearly identical, so a split never cuts a group: whole groups go to train, val or test.
The same splitter serves ``dspseg simulate`` (every image masked) and ``dspseg split`` (any dataset):
only masked images can be scored, so

* val and test must each hold *masked* images covering every class that any mask holds;
* train must hold every class that any record holds (mask, boxes, points or image labels);
* a group without any mask never goes to val or test (it would score nothing): it is train.

Search. Let ``g = 1..G`` be the groups holding masks, ``K[g, c] = 1`` if a mask of group ``g`` holds
class ``c``, ``A[g, c] = 1`` if any annotation of ``g`` does, and ``a[g] ∈ {train, val, test}`` an
assignment. It is *valid* when ``max_{a[g]=p} K[g, c] = 1`` for p ∈ {val, test} and every class of
some mask, and train (with the mask-free groups) holds every class of some record. Among valid
assignments, fold ``k`` minimises

    cost(a) = 4 · Σ_p |n_p / N − f_p|                         (masked-image fractions vs. ``fractions``)
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

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dspseg.data.manifest import Manifest
from dspseg.data.split_search import EXHAUSTIVE_MAX_GROUPS, TEST, TRAIN, VAL, GroupSearch
from dspseg.errors import DatasetError, OptionError

PARTS = ("train", "val", "test")
__all__ = ["EXHAUSTIVE_MAX_GROUPS", "PARTS", "Split", "WrittenSplit", "image_class_sets", "make_splits", "masked_flags",
           "write_split"]


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
    from dspseg.data.volume_items import VolumeReader, record_mask

    names = {c: i for i, c in enumerate(manifest.classes)}
    out: list[frozenset[int]] = []
    reader = VolumeReader(manifest)
    for i, rec in enumerate(manifest.images):
        where = f"images[{i}] ({rec.source})"
        if rec.mask is not None:
            values = np.unique(record_mask(manifest, rec, reader))
            values = values[values != manifest.ignore_index]
            bad = values[(values < 0) | (values >= manifest.n_classes)]
            if bad.size:
                raise DatasetError(f"{where}, field 'mask' ({rec.mask}): values {bad[:5].tolist()} are neither a "
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
            raise DatasetError(f"{where}, field '{field}': unknown class(es) {unknown}. "
                             f"Fix: use one of {manifest.classes}")
        out.append(frozenset(names[c] for c in found))
    return out


def masked_flags(manifest: Manifest) -> list[bool]:
    """(N,) whether each record has a mask (only those can be scored in val and test)."""
    return [rec.mask is not None for rec in manifest.images]


def make_splits(groups: Sequence[str], class_sets: Sequence[frozenset[int]], n_classes: int, n_splits: int,
                seed: int = 0, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                class_names: Sequence[str] | None = None, masked: Sequence[bool] | None = None) -> list[Split]:
    """Group-respecting cross-validation splits (train, val, test); see the module docstring.

    Args:
        groups: (N,) group name of every record (``record.group_name``).
        class_sets: (N,) class ids present in every record (see :func:`image_class_sets`).
        n_classes: C; class ids are ``0..C-1``.
        n_splits: number of folds S. Folds rotate the groups through test and val as far as the
            class constraint allows; no two folds are identical.
        seed: seeds the group permutation and the search; same inputs and seed → same splits.
        fractions: target fractions (train, val, test) of the masked images, positive, summing to 1.
        class_names: optional names used in error messages.
        masked: (N,) whether each record has a mask (default: all, as in ``dspseg simulate``).

    Raises:
        DatasetError: naming the classes that cannot be placed, the groups holding them and the fix
            (no assignment keeps them in every part), or when fewer distinct folds exist than asked.
        OptionError: for a bad ``n_splits`` or ``fractions``.
    """
    n = len(groups)
    masked = [True] * n if masked is None else [bool(m) for m in masked]
    if len(class_sets) != n or len(masked) != n:
        raise ValueError(f"class_sets, masked: expected one entry per record ({n}), got {len(class_sets)}, {len(masked)}")
    if n_splits < 1:
        raise OptionError(f"--n-splits: expected at least 1, got {n_splits}")
    if n_classes < 1:
        raise ValueError(f"n_classes: expected at least 1, got {n_classes}")
    frac = np.asarray(fractions, dtype=float)
    if frac.shape != (3,) or np.any(frac <= 0) or abs(frac.sum() - 1) > 1e-6:
        raise OptionError(f"fractions: expected three positive numbers (train, val, test) summing to 1, got {fractions}")
    names = list(dict.fromkeys(groups))  # first-appearance order: independent of hashing
    gid = {g: i for i, g in enumerate(names)}
    rec_group = np.array([gid[g] for g in groups], dtype=np.int64)
    scored = np.zeros((len(names), n_classes), dtype=bool)  # a mask of group g holds class c
    known = np.zeros_like(scored)  # any annotation of group g holds class c
    for i, cs in enumerate(class_sets):
        for c in cs:
            if not 0 <= c < n_classes:
                raise ValueError(f"class_sets[{i}]: class id {c} outside 0..{n_classes - 1}")
            known[rec_group[i], c] = True
            scored[rec_group[i], c] |= masked[i]
    sizes = np.bincount(rec_group[np.asarray(masked, dtype=bool)], minlength=len(names)).astype(float)
    searched = np.flatnonzero(sizes > 0)  # groups without masks stay in train
    why = _Explain(names, scored, known, class_names)
    why.check_counts(searched)

    search = GroupSearch(scored[searched], known[searched], known[sizes == 0].any(0), sizes[searched], frac)
    n_groups = len(searched)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_groups)
    n_test = max(1, round(frac[TEST] * n_groups))
    n_val = max(1, round(frac[VAL] * n_groups))
    while n_test + n_val > n_groups - 1 and n_test + n_val > 2:  # train keeps a masked group if it can
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    times_test, times_val = np.zeros(n_groups), np.zeros(n_groups)
    previous: list[np.ndarray] = []
    splits = []
    for k in range(n_splits):
        preferred = np.full(n_groups, TRAIN, dtype=np.int8)
        start = k * n_test
        preferred[perm[np.arange(start, start + n_test) % n_groups]] = TEST
        preferred[perm[np.arange(start + n_test, start + n_test + n_val) % n_groups]] = VAL
        best = search.best(preferred, times_test, times_val, previous, np.random.default_rng([seed, k]))
        if best is None:
            raise why.no_assignment(search.closest_missing(), searched)
        if any(np.array_equal(best, p) for p in previous):
            raise DatasetError(f"--n-splits: only {k} distinct split(s) of the {n_groups} groups with masks keep "
                               f"every class in train, val and test, {n_splits} were asked. Fix: use --n-splits "
                               f"{k} or fewer, or add groups")
        previous.append(best)
        times_test += best == TEST
        times_val += best == VAL
        part = np.full(len(names), TRAIN, dtype=np.int8)
        part[searched] = best
        idx = [np.flatnonzero(part[rec_group] == p).tolist() for p in (TRAIN, VAL, TEST)]
        splits.append(Split(train=idx[0], val=idx[1], test=idx[2]))
    return splits


class _Explain:
    """The sentences of an impossible split: which classes, which groups hold them, and the fix."""

    FIX = ("Fix: annotate masks of these classes in more groups (sub-volumes), or drop or merge these classes "
           "in dataset.json")

    def __init__(self, names: list[str], scored: np.ndarray, known: np.ndarray, class_names):
        self.names, self.scored, self.known = names, scored, known
        self.label = (lambda c: f"{c} ({class_names[c]!r})") if class_names is not None else str

    def _groups(self, holds: np.ndarray, c: int) -> str:
        where = [self.names[g] for g in np.flatnonzero(holds[:, c])]
        shown = ", ".join(where[:6]) + (f" and {len(where) - 6} more" if len(where) > 6 else "")
        return f"{len(where)} group(s)" + (f" ({shown})" if where else "")

    def where(self, c: int) -> str:
        return (f"class {self.label(c)} in the masks of {self._groups(self.scored, c)}"
                + ("" if (self.known[:, c] == self.scored[:, c]).all() else
                   f", annotated in {self._groups(self.known, c)} in all"))

    def check_counts(self, searched: np.ndarray) -> None:
        """Raise when a class some mask holds is in the masks of fewer than 2 groups or in fewer than 3
        groups in all (val and test need a masked group each, train a third group)."""
        if len(searched) == 0:
            raise DatasetError("field 'mask': no record has a mask, so no image could be scored in val or test. "
                               "Fix: add masks (e.g. dspseg convert labels ... --into DATA) to images of at least "
                               "3 groups")
        n_scored, n_known = self.scored.sum(0), self.known.sum(0)
        rare = np.flatnonzero((n_scored > 0) & ((n_scored < 2) | (n_known < 3)))
        if len(searched) < 2 or rare.size:
            detail = "; ".join(self.where(c) for c in rare) or f"only {len(searched)} group(s) hold masks"
            raise DatasetError(f"cannot split the {len(self.names)} group(s) so that val and test each hold masked "
                               f"images of every class some mask holds and train holds every class: {detail}; each "
                               f"such class must be in the masks of 2 groups and in 3 groups in all. {self.FIX}")

    def no_assignment(self, lacking: dict[int, list[int]], searched: np.ndarray) -> DatasetError:
        part = {TRAIN: "train", VAL: "val", TEST: "test"}
        detail = "; ".join(f"{part[p]} lacks {', '.join(self.where(c) for c in cs)}" for p, cs in lacking.items())
        return DatasetError(f"cannot split the {len(searched)} groups with masks so that val and test each hold "
                            f"masked images of every class some mask holds and train holds every class: no "
                            f"assignment found; at best {detail} (they share too few groups). {self.FIX}")


@dataclass
class WrittenSplit:
    """What :func:`write_split` did: the fold, its parts' sizes, and how many records changed part."""

    path: str
    split: int
    n_splits: int
    seed: int
    sizes: dict[str, tuple[int, int, int]]  # part → (images, masked images, groups)
    changed: int  # records whose 'split' was absent or different before
    unused_classes: list[str]  # classes no mask holds: val and test cannot score them


def write_split(data, n_splits: int, split: int, seed: int = 0) -> WrittenSplit:
    """Set every record's ``split`` in ``dataset.json`` to fold ``split`` of :func:`make_splits`.

    Only the ``split`` fields change; every other key and value of the file stays as it was (the raw
    JSON is edited, not re-serialised from the schema). The file is replaced atomically (temporary
    file + rename), so an interrupted write leaves the old file. Raises :class:`OptionError` for a
    ``split`` outside ``0..n_splits-1`` and :class:`DatasetError` when no split is possible.
    """
    import json

    from dspseg.data.manifest import load_manifest, manifest_path
    from dspseg.fsutil import write_text_atomic

    if n_splits < 1 or not 0 <= split < n_splits:
        raise OptionError(f"--split: expected 0..{n_splits - 1} for --n-splits {n_splits}, got {split}. Fix: pick a "
                          f"split below --n-splits")
    manifest = load_manifest(data)
    path = manifest_path(data)
    masked = masked_flags(manifest)
    sets = image_class_sets(manifest)
    fold = make_splits([r.group_name for r in manifest.images], sets, manifest.n_classes, n_splits, seed=seed,
                       class_names=manifest.classes, masked=masked)[split]
    part_of = fold.part_of()
    raw = json.loads(path.read_text(encoding="utf-8-sig"))
    raw["images"], changed = _with_splits(raw["images"], manifest, part_of)
    write_text_atomic(path, json.dumps(raw, indent=1, ensure_ascii=False) + "\n")
    sizes = {}
    for name in PARTS:
        idx = getattr(fold, name)
        sizes[name] = (len(idx), sum(masked[i] for i in idx), len({manifest.images[i].group_name for i in idx}))
    in_masks = set().union(*(s for s, m in zip(sets, masked) if m))
    unused = [c for k, c in enumerate(manifest.classes) if k not in in_masks]
    return WrittenSplit(str(path), split, n_splits, seed, sizes, changed, unused)


def _with_splits(entries: list[dict], manifest: Manifest, part_of: list[str]) -> tuple[list[dict], int]:
    """The raw ``images`` entries with record k's split set to ``part_of[k]``, and how many records changed.

    ``manifest.images`` is the file's entries with every ``sections`` range expanded in place into one
    record per section (:func:`dspseg.data.volume_records.expand_sections`), so record k is not entry k
    once a range precedes it. A range whose sections land in several parts is written back as several
    ranges, one per run of sections with one split (:func:`~dspseg.data.volume_records.collapse_sections`);
    each keeps every other key of its entry.
    """
    import copy

    from dspseg.data.volume_records import collapse_sections

    out: list[dict] = []
    changed, k = 0, 0
    records = manifest.images
    for i, entry in enumerate(entries):
        if "sections" not in entry:
            changed += records[k].split != part_of[k]
            entry["split"] = part_of[k]
            out.append(entry)
            k += 1
            continue
        run = []
        while k < len(records) and records[k]._origin is not None and records[k]._origin.entry == i:
            changed += records[k].split != part_of[k]
            records[k].split = part_of[k]
            run.append(records[k])
            k += 1
        for piece in collapse_sections(run):
            e = copy.deepcopy(entry)
            e["sections"], e["split"] = piece["sections"], piece.get("split")
            out.append(e)
    return out, changed


def missing_split_fix(manifest: Manifest, data, part: str = "test") -> str | None:
    """What to run when ``part`` holds no masked image to score (None when it holds some).

    One sentence for ``train``'s closing hint and ``evaluate``'s error: split the dataset with
    ``dspseg split`` and train again, since the images it moves to val and test must stay unseen.
    """
    if any(r.split == part and r.mask is not None for r in manifest.images):
        return None
    has_any = any(r.split is not None for r in manifest.images)
    what = (f"no '{part}' record of {data} has a mask" if has_any else
            f"the records of {data} have no 'split', so every image is a training image")
    return (f"{what}; run `dspseg split {data} --n-splits 3 --split 0` (val and test get masked images of every "
            f"class, by group), train again so those images stay unseen, then `dspseg evaluate RUN {data} "
            f"--split {part}`")
