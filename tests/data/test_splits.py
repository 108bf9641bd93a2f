"""Group-respecting cross-validation splits (dspseg.data.splits)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dspseg.data.io import write_image, write_mask
from dspseg.data.manifest import load_manifest
from dspseg.data.splits import EXHAUSTIVE_MAX_GROUPS, image_class_sets, make_splits, missing_split_fix, write_split
from dspseg.errors import DatasetError, OptionError


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
    with pytest.raises(ValueError, match=r"class 1 \('mito'\) in the masks of 2 group\(s\) \(g0, g1\).*drop or merge"):
        make_splits(groups, sets, 3, 2, class_names=["bg", "mito", "er"])
    # a class no record holds is not required anywhere (nothing could score or learn it)
    absent = [frozenset({0, 1})] * 8
    for s in make_splits(groups, absent, 3, 2):
        for part in (s.train, s.val, s.test):
            assert set().union(*(absent[i] for i in part)) == {0, 1}


def test_combinatorially_impossible_is_detected():
    # Each class in exactly 3 groups: class 0 forces g0, g1, g2 apart, class 1 puts g3 with g2,
    # class 2 needs g2 and g3 apart: no assignment exists although every class has 3 groups.
    groups = ["g0", "g1", "g2", "g3"]
    sets = [frozenset({0, 1, 2}), frozenset({0, 1}), frozenset({0, 2}), frozenset({1, 2})]
    with pytest.raises(ValueError, match=r"no assignment found; at best test lacks class 0 in the masks of 3 group\(s\) \(g0, g1, g2\).*Fix: annotate masks"):
        make_splits(groups, sets, 3, 1)


def test_too_many_folds_and_bad_arguments():
    groups = ["a", "b", "c"]
    sets = [frozenset({0})] * 3
    assert len(make_splits(groups, sets, 1, 6)) == 6  # 3! assignments of three groups
    with pytest.raises(ValueError, match="only 6 distinct split"):
        make_splits(groups, sets, 1, 7)
    with pytest.raises(ValueError, match="fractions"):
        make_splits(groups, sets, 1, 1, fractions=(0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="--n-splits: expected at least 1"):
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
    with pytest.raises(ValueError, match=r"no assignment found; at best (train|val|test) lacks class"):
        make_splits(groups, sets, 4, 1)


# ------------------------------------------------------------------ any dataset: masked and weak records


def test_val_and_test_get_masks_of_every_masked_class_and_unmasked_groups_stay_in_train():
    # g0..g3 have masks; g4..g7 only boxes/labels (class 3 only there: train must hold it).
    groups = [f"g{g}" for g in range(4) for _ in range(2)] + [f"g{g}" for g in range(4, 8)]
    sets = [frozenset({0, 1, 2})] * 8 + [frozenset({0, 3})] * 4
    masked = [True] * 8 + [False] * 4
    for s in make_splits(groups, sets, 4, 3, seed=2, masked=masked):
        for part in (s.val, s.test):
            assert all(masked[i] for i in part)
            assert set().union(*(sets[i] for i in part if masked[i])) == {0, 1, 2}
        assert set(range(8, 12)) <= set(s.train)
        assert set().union(*(sets[i] for i in s.train)) == {0, 1, 2, 3}


def test_weak_only_class_must_reach_train_and_is_named_when_it_cannot():
    # class 1's masks are in g0 and g1 only (they go to val and test); class 2 only in g0's boxes: train lacks it.
    groups = ["g0", "g0", "g1", "g2", "g2"]
    sets = [frozenset({0, 1}), frozenset({2}), frozenset({0, 1}), frozenset({0}), frozenset({1})]
    masked = [True, False, True, True, False]
    with pytest.raises(DatasetError, match=r"no assignment found; at best (train|val|test) lacks class [12] .*"
                       r"annotated in [13] group\(s\) \(g0.*Fix: annotate masks"):
        make_splits(groups, sets, 3, 1, class_names=["bg", "mito", "er"], masked=masked)


def test_too_few_masked_groups_names_classes_and_groups():
    groups = ["a", "b", "c", "d"]
    sets = [frozenset({0, 1}), frozenset({0}), frozenset({0, 1}), frozenset({0})]
    with pytest.raises(DatasetError, match=r"class 1 \('mito'\) in the masks of 1 group\(s\) \(a\), annotated in "
                       r"2 group\(s\) \(a, c\) in all"):
        make_splits(groups, sets, 2, 1, class_names=["bg", "mito"], masked=[True, True, False, True])
    with pytest.raises(DatasetError, match="no record has a mask"):
        make_splits(groups, sets, 2, 1, masked=[False] * 4)


def _lab_dataset(tmp_path, n_groups=4):
    """Masked images in ``n_groups`` groups plus box-only and label-only records; returns the raw JSON."""
    images = []
    for g in range(n_groups):
        mask = np.zeros((6, 9), np.uint8)
        mask[1:4, 2:5] = 1
        mask[4:, 6:] = 2
        mask[0, 0] = 255
        write_mask(tmp_path / f"m{g}.tif", mask)
        write_image(tmp_path / f"i{g}.tif", np.full((6, 9), g, np.uint16))
        images.append({"file": f"i{g}.tif", "group": f"crop{g}", "mask": f"m{g}.tif"})
        images.append({"file": f"i{g}.tif", "group": f"crop{g}",
                       "boxes": [{"class": "mito", "xyxy": [2, 1, 5, 4]}]})
    images.append({"file": "i0.tif", "group": "extra", "labels": ["bg", "er"], "split": "test"})
    raw = {"format": "dspseg/1", "name": "lab", "classes": ["bg", "mito", "er"], "ignore_index": 255,
           "images": images}
    (tmp_path / "dataset.json").write_text(json.dumps(raw, indent=2))
    return raw


def test_write_split_changes_only_the_split_fields(tmp_path):
    raw = _lab_dataset(tmp_path)
    done = write_split(tmp_path, n_splits=2, split=1, seed=0)
    after = json.loads((tmp_path / "dataset.json").read_text())
    assert [{k: v for k, v in r.items() if k != "split"} for r in after["images"]] == \
        [{k: v for k, v in r.items() if k != "split"} for r in raw["images"]]
    assert {k: v for k, v in after.items() if k != "images"} == {k: v for k, v in raw.items() if k != "images"}
    m = load_manifest(tmp_path)
    assert m.records("train") and [r.file for r in m.records("test") if r.mask] and m.records("val")
    assert m.images[-1].split == "train"  # a group without masks is never scored, so it trains
    assert done.changed == len(raw["images"])  # the label record's 'test' counted as a change
    assert done.sizes["test"][1] >= 1 and done.unused_classes == []
    assert not list(tmp_path.glob(".dataset.json*"))  # the temporary file was renamed away
    again = write_split(tmp_path, n_splits=2, split=1, seed=0)
    assert again.changed == 0 and json.loads((tmp_path / "dataset.json").read_text()) == after


def test_write_split_refuses_and_leaves_the_file_alone(tmp_path):
    _lab_dataset(tmp_path, n_groups=1)
    before = (tmp_path / "dataset.json").read_bytes()
    with pytest.raises(DatasetError, match="in the masks of 1 group"):
        write_split(tmp_path, 3, 0)
    with pytest.raises(OptionError, match=r"--split: expected 0..2"):
        write_split(tmp_path, 3, 3)
    assert (tmp_path / "dataset.json").read_bytes() == before


def test_missing_split_fix_says_what_to_run(tmp_path):
    _lab_dataset(tmp_path)
    m = load_manifest(tmp_path)
    assert "no 'test' record" in missing_split_fix(m, "data/")  # one test record, without a mask
    for r in m.images:
        r.split = None
    assert missing_split_fix(m, "data/").startswith("the records of data/ have no 'split'")
    assert "dspseg split data/ --n-splits 3 --split 0" in missing_split_fix(m, "data/")
    write_split(tmp_path, 2, 0)
    assert missing_split_fix(load_manifest(tmp_path), "data/") is None
