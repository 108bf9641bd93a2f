"""Group-respecting cross-validation splits (dspseg.data.splits)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dspseg.data.io import write_image, write_mask
from dspseg.data.manifest import load_manifest
from dspseg.data.splits import EXHAUSTIVE_MAX_GROUPS, image_class_sets, make_splits


def random_groups(n_groups: int, per_group: int, n_classes: int, seed: int, p: float = 0.5):
    """Records in groups; class 0 everywhere, each other class in a record with probability p."""
    rng = np.random.default_rng(seed)
    groups, sets = [], []
    for g in range(n_groups):
        for _ in range(per_group):
            groups.append(f"crop{g}")
            sets.append(frozenset({0} | {c for c in range(1, n_classes) if rng.random() < p}))
    return groups, sets


def check_split(s, groups, sets, n_classes):
    parts = (s.train, s.val, s.test)
    assert sorted(s.train + s.val + s.test) == list(range(len(groups)))  # a partition of the records
    group_sets = [{groups[i] for i in part} for part in parts]
    assert not (group_sets[0] & group_sets[1] or group_sets[0] & group_sets[2] or group_sets[1] & group_sets[2])
    for part in parts:  # every class in every part
        assert set().union(*(sets[i] for i in part)) == set(range(n_classes))


@pytest.mark.parametrize("n_groups,per_group,seed", [(6, 2, 0), (8, 3, 1), (10, 2, 2), (14, 2, 3), (40, 1, 4)])
def test_groups_never_cut_and_every_class_everywhere(n_groups, per_group, seed):
    groups, sets = random_groups(n_groups, per_group, 4, seed)
    splits = make_splits(groups, sets, 4, n_splits=3, seed=seed)
    assert len(splits) == 3
    for s in splits:
        check_split(s, groups, sets, 4)
    assert len({(tuple(s.val), tuple(s.test)) for s in splits}) == 3  # no two folds alike


@pytest.mark.parametrize("n_groups", [8, 12])  # exhaustive and local search
def test_deterministic_and_seed_dependent(n_groups):
    groups, sets = random_groups(n_groups, 2, 3, seed=5)
    a = make_splits(groups, sets, 3, 3, seed=7)
    assert a == make_splits(groups, sets, 3, 3, seed=7)
    others = [make_splits(groups, sets, 3, 3, seed=s) for s in range(4)]
    assert any(o != a for o in others)


def test_folds_rotate_groups_through_test():
    # 10 equal groups all holding every class: 2 test groups per fold, 5 folds -> every group tested once.
    groups = [f"g{g}" for g in range(10) for _ in range(3)]
    sets = [frozenset({0, 1, 2})] * len(groups)
    splits = make_splits(groups, sets, 3, n_splits=5, seed=3)
    tested = [groups[i] for s in splits for i in s.test]
    assert sorted(set(tested)) == sorted(set(groups))
    assert all(len(s.test) == 6 and len(s.val) == 6 and len(s.train) == 18 for s in splits)


def test_sizes_follow_fractions():
    groups, sets = random_groups(40, 1, 3, seed=1, p=0.7)
    for s in make_splits(groups, sets, 3, 2, seed=0, fractions=(0.5, 0.25, 0.25)):
        assert (len(s.train), len(s.val), len(s.test)) == (20, 10, 10)


def test_rare_class_is_named_with_the_fix():
    groups = [f"g{g}" for g in range(8)]
    sets = [frozenset({0, 1, 2})] * 2 + [frozenset({0, 2})] * 6  # class 1 only in g0, g1
    with pytest.raises(ValueError, match=r"class 1 \('mito'\) in 2 group\(s\) \(g0, g1\).*drop or merge"):
        make_splits(groups, sets, 3, 2, class_names=["bg", "mito", "er"])
    with pytest.raises(ValueError, match=r"class 2 in 0 group"):
        make_splits(groups, [frozenset({0, 1})] * 8, 3, 2)


def test_combinatorially_impossible_is_detected():
    # Each class in exactly 3 groups: class 0 forces g0, g1, g2 apart, class 1 puts g3 with g2,
    # class 2 needs g2 and g3 apart: no assignment exists although every class has 3 groups.
    groups = ["g0", "g1", "g2", "g3"]
    sets = [frozenset({0, 1, 2}), frozenset({0, 1}), frozenset({0, 2}), frozenset({1, 2})]
    with pytest.raises(ValueError, match="no assignment found.*Fix: add annotated groups"):
        make_splits(groups, sets, 3, 1)


def test_too_many_folds_and_bad_arguments():
    groups = ["a", "b", "c"]
    sets = [frozenset({0})] * 3
    assert len(make_splits(groups, sets, 1, 6)) == 6  # 3! assignments of three groups
    with pytest.raises(ValueError, match="only 6 distinct split"):
        make_splits(groups, sets, 1, 7)
    with pytest.raises(ValueError, match="fractions"):
        make_splits(groups, sets, 1, 1, fractions=(0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="n_splits"):
        make_splits(groups, sets, 1, 0)
    with pytest.raises(ValueError, match=r"class_sets\[1\]: class id 4"):
        make_splits(groups, [frozenset({0}), frozenset({4}), frozenset({0})], 2, 1)


def test_local_search_path_is_used_and_valid():
    n = EXHAUSTIVE_MAX_GROUPS + 20
    groups = [f"s{i}" for i in range(n)]
    rng = np.random.default_rng(0)
    sets = [frozenset({0, int(rng.integers(1, 4))}) for _ in range(n)]
    for s in make_splits(groups, sets, 4, 4, seed=1):
        check_split(s, groups, sets, 4)


def test_image_class_sets_from_every_annotation(tmp_path):
    mask = np.array([[0, 0, 2], [255, 2, 2]], np.uint8)
    write_mask(tmp_path / "m.tif", mask)
    write_image(tmp_path / "i.tif", np.zeros((2, 3), np.float32))
    raw = {"classes": ["bg", "mito", "er"], "ignore_index": 255, "images": [
        {"file": "i.tif", "mask": "m.tif", "labels": ["mito"]},  # the mask wins
        {"file": "i.tif", "labels": ["er", "mito"]},
        {"file": "i.tif", "boxes": [{"class": "er", "xyxy": [0, 0, 1, 1]}], "points": [{"class": "bg", "xy": [1, 1]}]},
        {"file": "i.tif"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(raw))
    m = load_manifest(tmp_path)
    assert image_class_sets(m) == [frozenset({0, 2}), frozenset({1, 2}), frozenset({0, 2}), frozenset()]
    m.images[1].labels = ["nucleus"]
    with pytest.raises(ValueError, match=r"images\[1\].*'labels'.*nucleus"):
        image_class_sets(m)


def test_impossible_with_many_groups_fails_clearly():
    # The 4-group contradiction above plus 10 groups holding only class 0 (local-search path).
    sets = [frozenset({0, 1, 2, 3}), frozenset({0, 1, 2}), frozenset({0, 1, 3}), frozenset({0, 2, 3})]
    sets += [frozenset({0})] * 10
    groups = [f"g{i}" for i in range(len(sets))]
    assert len(groups) > EXHAUSTIVE_MAX_GROUPS
    with pytest.raises(ValueError, match=r"no assignment found; at best class\(es\) .* are missing"):
        make_splits(groups, sets, 4, 1)
