"""The ACR protocol (dspseg.data.acr): order, counts, nesting, and the written simulation folder."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from dspseg.data import acr as acr_mod
from dspseg.data.acr import (
    SCENARIOS,
    assign_annotations,
    n_masked,
    order_for_acr,
    plan_reduction,
    reduce_manifest,
    simulate_dataset,
)
from dspseg.data.io import read_mask, write_image, write_mask
from dspseg.data.manifest import load_manifest
from dspseg.data.weak import derive_weak_labels

CLASSES = ["bg", "mito", "er", "lipid"]
ACRS = (1, 2, 4, 8, 16, 32, 64)


def write_dataset(root: Path, n_groups: int = 6, per_group: int = 3, seed: int = 0) -> Path:
    """Toy masked dataset (20 x 28, non-square): rectangles of classes 1-3 on background, in groups."""
    rng = np.random.default_rng(seed)
    records = []
    for g in range(n_groups):
        for j in range(per_group):
            mask = np.zeros((20, 28), np.uint8)
            for c in (1, 2, 3):
                if rng.random() < 0.7 or j == c - 1:  # every group holds every class
                    y, x = rng.integers(0, 15), rng.integers(0, 22)
                    mask[y:y + 5, x:x + 6] = c
            name = f"c{g}_z{j:02d}.tif"
            write_image(root / "images" / name, rng.random((20, 28)).astype(np.float32))
            write_mask(root / "masks" / name, mask)
            records.append({"file": f"images/{name}", "group": f"crop{g}", "mask": f"masks/{name}"})
    raw = {"format": "dspseg/1", "name": "toy", "classes": CLASSES, "ignore_index": 255, "images": records}
    (root / "dataset.json").write_text(json.dumps(raw, indent=1))
    return root


def tree_hashes(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def data(tmp_path) -> Path:
    return write_dataset(tmp_path / "src")


# ------------------------------------------------------------------------------ order and counts


@pytest.mark.parametrize("seed", range(5))
def test_order_covers_all_classes_first(seed):
    rng = np.random.default_rng(seed)
    # 60 images that are mostly background; each foreground class in only a few of them.
    sets = [frozenset({0}) for _ in range(60)]
    for c in range(1, 6):
        for i in rng.choice(60, 2, replace=False):
            sets[i] = sets[i] | {c}
    train = list(range(0, 60, 1))
    order = order_for_acr(train, sets, 6, seed)
    assert sorted(order) == train
    assert set().union(*(sets[i] for i in order[:6])) == set(range(6))
    assert order == order_for_acr(train, sets, 6, seed)
    assert order != order_for_acr(train, sets, 6, seed + 100)


@pytest.mark.parametrize("acr,expected", [
    (1, {"mask": 64, "box": 0, "point": 0, "image": 0, "none": 0}),
    (2, {"mask": 32, "box": 8, "point": 8, "image": 8, "none": 8}),
    (4, {"mask": 16, "box": 12, "point": 12, "image": 12, "none": 12}),
    (8, {"mask": 8, "box": 14, "point": 14, "image": 14, "none": 14}),
    (16, {"mask": 4, "box": 15, "point": 15, "image": 15, "none": 15}),
    (32, {"mask": 2, "box": 16, "point": 16, "image": 15, "none": 15}),
    (64, {"mask": 1, "box": 16, "point": 16, "image": 16, "none": 15}),
])
def test_mixed_counts_on_64_images(acr, expected):
    assignment = assign_annotations(list(range(64)), acr, "mixed")
    values = list(assignment.values())
    assert {t: values.count(t) for t in expected} == expected


@pytest.mark.parametrize("n", [1, 5, 37, 100, 154])
def test_mixed_is_dealt_evenly_and_masks_nest(n):
    order = list(np.random.default_rng(n).permutation(1000)[:n])
    masked = []
    for r in ACRS:
        a = assign_annotations(order, r, "mixed")
        assert sorted(a) == sorted(order)
        weak = [list(a.values()).count(t) for t in ("box", "point", "image", "none")]
        assert max(weak) - min(weak) <= 1
        masked.append({i for i, t in a.items() if t == "mask"})
        assert len(masked[-1]) == n_masked(n, r)
    for finer, coarser in zip(masked, masked[1:]):  # masks at ACR 2R ⊂ masks at ACR R
        assert coarser <= finer


@pytest.mark.parametrize("scenario", ["box", "point", "image"])
def test_pair_scenarios_give_one_weak_type(scenario):
    a = assign_annotations(list(range(64)), 8, scenario)
    values = list(a.values())
    assert values.count("mask") == 8 and values.count(scenario) == 56


def test_n_masked_rounding_and_option_errors():
    assert n_masked(100, 64) == 2  # ceil(1.5625): at least N/R masks, realised ratio 50
    assert n_masked(100, 3) == 34
    assert n_masked(11, 1.1) == 10  # float error absorbed
    assert n_masked(3, 64) == 1  # never fewer than one mask
    with pytest.raises(ValueError, match="--acr: expected a number >= 1"):
        n_masked(10, 0.5)
    with pytest.raises(ValueError, match="--scenario: expected one of mixed, box, point, image, got 'boxes'"):
        assign_annotations([1, 2], 2, "boxes")
    with pytest.raises(ValueError, match="--split: expected 0..2 for --n-splits 3, got 3"):
        acr_mod.check_options(2, "mixed", 3, 3)
    assert SCENARIOS == ("mixed", "box", "point", "image")


# ------------------------------------------------------------------------------ reduction in memory


def test_reduce_manifest_in_memory_nests_and_keeps_eval_masks(data):
    source = load_manifest(data)
    before = tree_hashes(data)
    kept = []
    for r in ACRS:
        m = reduce_manifest(source, r, "mixed", split=1, n_splits=3, seed=2)
        assert m.root == source.root and [x.file for x in m.images] == [x.file for x in source.images]
        assert all(x.mask is not None for x in m.images if x.split in ("val", "test"))
        kept.append({x.file for x in m.images if x.split == "train" and x.mask is not None})
    assert all(b <= a for a, b in zip(kept, kept[1:]))
    plan = plan_reduction(source, 4, "mixed", 1, 3, seed=2)
    assert len(kept[2]) == plan.n_masked == n_masked(len(plan.split.train), 4)
    assert tree_hashes(data) == before


# ------------------------------------------------------------------------------ the written folder


def test_simulated_folder(data, tmp_path):
    before = tree_hashes(data)
    out = tmp_path / "sim"
    res = simulate_dataset(data, out, acr=4, scenario="mixed", split=2, n_splits=3, seed=1)
    assert tree_hashes(data) == before  # the input is untouched
    m = load_manifest(out)
    src = load_manifest(data)
    assert res.out == out and res.linked and not res.warnings
    assert sum(res.split_sizes.values()) == len(m.images) == 18
    assert res.counts["mask"] == n_masked(res.split_sizes["train"], 4)
    assert {k: [r.annotation_type for r in m.images if r.split == "train"].count(k) for k in res.counts} == res.counts
    # Every referenced file is a hard link inside OUT; only kept masks are there.
    referenced = set()
    for rec in m.images:
        assert rec.split in ("train", "val", "test")
        for rel in (rec.file, rec.mask):
            if rel is None:
                continue
            p = m.path(rel)
            assert out.resolve() in p.parents and not (out / rel).is_symlink()
            assert os.stat(p).st_ino == os.stat(src.path(rel)).st_ino
            referenced.add(rel)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == referenced | {"dataset.json", "simulation.json"}
    # Weak labels agree with the original masks.
    by_file = {r.file: r for r in src.images}
    for rec in m.images:
        mask = read_mask(src.path(by_file[rec.file].mask))
        weak = derive_weak_labels(mask, CLASSES, 255)
        present = [CLASSES[c] for c in np.unique(mask)]
        if rec.annotation_type == "box":
            assert rec.boxes == weak.boxes
            for b in rec.boxes:
                x0, y0, x1, y1 = b.xyxy
                inside = mask[y0:y1, x0:x1] == CLASSES.index(b.cls)
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert sorted({b.cls for b in rec.boxes}) == sorted(present)
        elif rec.annotation_type == "point":
            assert rec.points == weak.points
            assert all(mask[p.xy[1], p.xy[0]] == CLASSES.index(p.cls) for p in rec.points)
        elif rec.annotation_type == "image":
            assert rec.labels == present
        if rec.annotation_type != "mask":
            assert rec.mask is None and rec.split == "train"
    info = json.loads((out / "simulation.json").read_text())
    assert info["source"] == str(data.resolve())
    assert (info["acr"], info["scenario"], info["split"], info["n_splits"], info["seed"]) == (4, "mixed", 2, 3, 1)
    assert info["counts"] == res.counts and info["split_sizes"] == res.split_sizes
    assert [e["file"] for e in info["train_order"]] == res.order
    assert [e["annotation"] for e in info["train_order"][:res.n_masked]] == ["mask"] * res.n_masked
    train_groups = {r.group for r in m.images if r.split == "train"}
    assert set(info["groups"]["train"]) == train_groups and not train_groups & set(info["groups"]["test"])


def test_rerun_replaces_previous_simulation(data, tmp_path):
    out = tmp_path / "sim"
    simulate_dataset(data, out, acr=1, scenario="box", split=0)
    res = simulate_dataset(data, out, acr=64, scenario="box", split=0)
    assert res.counts["mask"] == 1 and res.counts["box"] == res.split_sizes["train"] - 1
    assert json.loads((out / "simulation.json").read_text())["acr"] == 64
    assert len(list((out / "masks").iterdir())) == 1 + res.split_sizes["val"] + res.split_sizes["test"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim", "src"]  # no temporary folders left


def test_refuses_foreign_or_dangerous_out(data, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and does not hold a previous dspseg simulation"):
        simulate_dataset(data, foreign, acr=2, scenario="mixed", split=0)
    assert (foreign / "notes.txt").read_text() == "keep me"
    sim = tmp_path / "sim"
    simulate_dataset(data, sim, acr=2, scenario="mixed", split=0)
    (sim / "runs").mkdir()
    (sim / "runs" / "model.pt").write_text("weights")
    with pytest.raises(ValueError, match=r"files it did not write \(runs/model.pt\)"):
        simulate_dataset(data, sim, acr=4, scenario="mixed", split=0)
    assert (sim / "runs" / "model.pt").exists()
    with pytest.raises(ValueError, match="inside the input dataset"):
        simulate_dataset(data, data / "sim", acr=2, scenario="mixed", split=0)
    with pytest.raises(ValueError, match="contains the input dataset"):
        simulate_dataset(data, tmp_path, acr=2, scenario="mixed", split=0)
    assert not (data / "sim").exists()


def test_falls_back_to_copies_across_filesystems(data, tmp_path, monkeypatch):
    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    out = tmp_path / "sim"
    res = simulate_dataset(data, out, acr=2, scenario="point", split=1)
    assert not res.linked and "copied" in res.warnings[0]
    rec = res.manifest.images[0]
    assert res.manifest.path(rec.file).read_bytes() == load_manifest(data).path(rec.file).read_bytes()
    assert os.stat(res.manifest.path(rec.file)).st_ino != os.stat(load_manifest(data).path(rec.file)).st_ino
    assert "copies" in json.loads((out / "simulation.json").read_text())["files"]


def test_input_errors_name_the_option(data, tmp_path):
    with pytest.raises(ValueError, match="--scenario"):
        simulate_dataset(data, tmp_path / "o", acr=2, scenario="points", split=0)
    with pytest.raises(ValueError, match="--acr"):
        simulate_dataset(data, tmp_path / "o", acr=0.5, scenario="mixed", split=0)
    with pytest.raises(ValueError, match="--split"):
        simulate_dataset(data, tmp_path / "o", acr=2, scenario="mixed", split=3, n_splits=3)
    raw = json.loads((data / "dataset.json").read_text())
    del raw["images"][4]["mask"]
    (data / "dataset.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"field 'mask': images\[4\] \(images/c1_z01.tif\).*Fix: simulate on"):
        simulate_dataset(data, tmp_path / "o", acr=2, scenario="mixed", split=0)
    assert not (tmp_path / "o").exists()


def test_warns_about_replaced_splits_and_partial_masks(data, tmp_path):
    raw = json.loads((data / "dataset.json").read_text())
    for rec in raw["images"]:
        rec["split"] = "train"
        mask = read_mask(data / rec["mask"])
        mask[0, 0] = 255  # one unannotated pixel
        write_mask(data / rec["mask"], mask)
    (data / "dataset.json").write_text(json.dumps(raw))
    res = simulate_dataset(data, tmp_path / "o", acr=2, scenario="image", split=0)
    assert len(res.warnings) == 2
    assert "'split' fields were replaced by cross-validation split 0" in res.warnings[0]
    assert f"{res.counts['image']} weakened training image(s) had unannotated" in res.warnings[1]
