"""In-memory dataset: split selection, normalisation, crops and padding, bag shifting, collate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dspseg.data.batch import collate
from dspseg.data.dataset import (Normalisation, SegmentationDataset, compute_normalisation, select_records, shift_boxes,
                                 shift_points)
from dspseg.data.io import write_image, write_mask
from dspseg.data.manifest import load_manifest

H, W = 20, 30  # non-square on purpose


def _write(root: Path, records: list[dict], images: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> Path:
    for name, im in images.items():
        write_image(root / name, im)
    for name, m in masks.items():
        write_mask(root / name, m)
    (root / "dataset.json").write_text(json.dumps({"classes": ["bg", "a", "b"], "ignore_index": 255,
                                                   "images": records}))
    return root


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """Image 0: 20x30 with a mask (a 4x5 'a' block at rows 2-5, cols 3-7; a 3x3 'b' block at rows
    14-16, cols 24-26). Image 1: 12x10 with a box, a point and labels."""
    image0 = np.arange(H * W, dtype=np.float32).reshape(H, W) / (H * W)
    mask0 = np.zeros((H, W), np.uint8)
    mask0[2:6, 3:8] = 1
    mask0[14:17, 24:27] = 2
    image1 = np.full((12, 10), 0.5, np.float32)
    records = [
        {"file": "i0.tif", "mask": "m0.tif", "split": "train"},
        {"file": "i1.tif", "boxes": [{"class": "a", "xyxy": [1, 2, 6, 9]}], "points": [{"class": "b", "xy": [8, 10]}],
         "labels": ["a", "b", "bg"], "split": "train"},
        {"file": "i0.tif", "mask": "m0.tif", "split": "val"},
    ]
    return _write(tmp_path, records, {"i0.tif": image0, "i1.tif": image1}, {"m0.tif": mask0})


def test_select_records(data: Path) -> None:
    m = load_manifest(data)
    assert [i for i, _ in select_records(m, "train")] == [0, 1]
    assert [i for i, _ in select_records(m, "val")] == [2]
    assert select_records(m, "test") == []
    for r in m.images:
        r.split = None
    assert [i for i, _ in select_records(m, "train")] == [0, 1, 2]  # no splits at all: everything is train
    assert select_records(m, "val") == []


def test_normalisation() -> None:
    a = np.stack([np.full((4, 4), 2.0), np.arange(16.0).reshape(4, 4)]).astype(np.float32)
    n = compute_normalisation([a, a])
    assert n.mean == pytest.approx((2.0, 7.5)) and n.std == pytest.approx((1.0, np.std(np.arange(16.0))))
    out = n.apply(a)
    assert out.dtype == np.float32 and out[1].mean() == pytest.approx(0, abs=1e-6)
    assert Normalisation.from_dict(n.to_dict()) == n
    with pytest.raises(ValueError, match=r"must be \(2, H, W\)"):
        n.apply(a[:1])


def test_whole_image_item(data: Path) -> None:
    ds = SegmentationDataset(load_manifest(data), "train", crop_size=None)
    assert len(ds) == 2 and ds.in_channels == 1 and ds.kinds() == ["mask", "box"]
    it = ds[0]
    assert it["image"].shape == (1, H, W) and it["target"].shape == (H, W) and it["allowed"].shape == (3, H, W)
    assert it["valid"].all() and it["target"].dtype == torch.long
    assert it["instances"].max() == 3 and sorted(it["instance_classes"].tolist()) == [0, 1, 2]
    # derived weak labels of the mask image: one box and one point per component, image labels = classes shown
    assert sorted(it["boxes"][:, 0].tolist()) == [0, 1, 2] and it["image_labels"].tolist() == [0, 1, 2]
    box_a = it["boxes"][it["boxes"][:, 0] == 1][0].tolist()
    assert box_a == [1, 3, 2, 8, 6]  # [class, x0, y0, x1, y1] half-open


def test_crop_shifts_and_clips_bags(data: Path) -> None:
    ds = SegmentationDataset(load_manifest(data), "train", crop_size=16)
    full = SegmentationDataset(load_manifest(data), "train", crop_size=None, normalisation=ds.normalisation)[0]
    arrays = ds.window(0, 4, 12, 16, 16)  # rows 4..19, cols 12..27: cuts 'a' away, keeps 'b' whole
    assert np.array_equal(arrays["image"], full["image"][:, 4:20, 12:28].numpy())
    assert np.array_equal(arrays["target"], full["target"][4:20, 12:28].numpy())
    assert np.array_equal(arrays["allowed"], full["allowed"][:, 4:20, 12:28].numpy())
    assert arrays["valid"].all()
    # instances renumbered 1..m over those present: background and 'b' remain
    assert arrays["instances"].max() == len(arrays["instance_classes"]) == 2
    for k, c in enumerate(arrays["instance_classes"], start=1):
        assert (arrays["target"][arrays["instances"] == k] == c).all()
    # the 'b' box [24, 14, 27, 17] moves by (-12, -4); the 'a' box [3, 2, 8, 6] falls outside
    boxes = arrays["boxes"].tolist()
    assert [2, 12, 10, 15, 13] in boxes and not any(b[0] == 1 for b in boxes)
    assert [0, 0, 0, 16, 16] in boxes  # the background box is clipped to the crop
    assert arrays["image_labels"].size == 0  # a crop may miss a labelled class


def test_crop_larger_than_image_pads(data: Path) -> None:
    ds = SegmentationDataset(load_manifest(data), "train", crop_size=16)
    it = ds[(1, 123)]  # image 1 is 12 x 10: placed at (0, 0), padded to 16 x 16
    assert it["image"].shape == (1, 16, 16)
    assert it["valid"][:12, :10].all() and not it["valid"][12:].any() and not it["valid"][:, 10:].any()
    assert (it["target"][~it["valid"]] == 255).all() and (it["image"][0][~it["valid"]] == 0).all()
    assert it["allowed"][:, ~it["valid"]].all()  # padding: no constraint, excluded through valid
    assert it["boxes"].tolist() == [[1, 1, 2, 6, 9]] and it["points"].tolist() == [[2, 10, 8]]
    assert it["image_labels"].tolist() == [0, 1, 2]  # the whole image is inside: labels kept
    # the point admits only its class; the box admits 'a' inside only
    assert it["allowed"][:, 10, 8].tolist() == [False, False, True]
    assert it["allowed"][1, 2:9, 1:6].all() and not it["allowed"][1, 0, 0]


def test_crops_are_reproducible_per_key(data: Path) -> None:
    ds = SegmentationDataset(load_manifest(data), "train", crop_size=8)
    a, b = ds[(0, (0, 1, 2))], ds[(0, (0, 1, 2))]
    assert torch.equal(a["image"], b["image"])
    offsets = {tuple(ds[(0, (0, 0, k))]["image"][0, 0, :2].tolist()) for k in range(12)}
    assert len(offsets) > 3


def test_shift_points_and_boxes() -> None:
    pts = np.array([[1, 5, 5], [2, 0, 0], [0, 9, 12]])
    assert shift_points(pts, 2, 3, 8, 8).tolist() == [[1, 3, 2]]
    boxes = np.array([[1, 0, 0, 4, 4], [2, 2, 3, 20, 6], [0, 30, 30, 35, 35]])
    # x shifted by -3 and clipped to [0, 8]; y by -2 and clipped to [0, 8]
    assert shift_boxes(boxes, 2, 3, 8, 8).tolist() == [[1, 0, 0, 1, 2], [2, 0, 1, 8, 4]]


def test_collate_pads_and_indexes_bags(data: Path) -> None:
    m = load_manifest(data)
    ds = SegmentationDataset(m, "train", crop_size=None)
    batch = collate([ds[1], ds[0]], ignore_index=255)
    assert batch.image.shape == (2, 1, H, W) and batch.allowed.shape == (2, 3, H, W)
    assert batch.kinds == ["box", "mask"] and batch.index.tolist() == [1, 0]
    assert not batch.valid[0, 12:].any() and batch.valid[1].all()
    assert (batch.target[0] == 255).all()
    assert batch.bags.points[batch.bags.points[:, 0] == 0].tolist() == [[0, 2, 10, 8]]
    assert batch.bags.boxes[batch.bags.boxes[:, 0] == 0].tolist() == [[0, 1, 1, 2, 6, 9]]
    assert batch.bags.image_labels.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    assert batch.image_classes.shape == (2, 3)
    # instances are unique across the batch and instance_classes follows them
    ids = batch.bags.instances
    assert ids[0].max() == 0 and ids[1].max() == len(batch.bags.instance_classes) == 3
    batch2 = collate([ds[0], ds[0]], ignore_index=255)
    ids2 = batch2.bags.instances
    assert ids2[1].max() == 6 and ids2[1][ids2[1] > 0].min() == 4
    for k, c in enumerate(batch2.bags.instance_classes.tolist(), start=1):
        assert (batch2.target[batch2.bags.instances == k] == c).all()
    # collate copies: the cache is untouched
    batch2.image += 1
    assert torch.equal(ds[0]["image"], SegmentationDataset(m, "train", crop_size=None)[0]["image"])


def test_batch_policy_indices(data: Path) -> None:
    ds = SegmentationDataset(load_manifest(data), "train", crop_size=8)
    assert ds.indices_of_kinds({"mask"}) == [0]
    assert ds.indices_of_kinds({"mask", "box"}) == [0, 1]


def test_batch_moves_through_fabric_and_pickles(data: Path) -> None:
    """The trainer moves a batch with Fabric's ``to_device`` (it calls ``Batch.to``), the DataLoader pins
    it with ``Batch.pin_memory`` and its workers pickle it."""
    import pickle
    from unittest import mock

    from lightning_fabric.utilities.apply_func import move_data_to_device
    from torch.utils.data._utils.pin_memory import pin_memory

    from dspseg.data.batch import Batch

    ds = SegmentationDataset(load_manifest(data), "train", crop_size=None)
    batch = collate([ds[1], ds[0]], ignore_index=255)
    moved = move_data_to_device(batch, torch.device("cpu"))
    assert isinstance(moved, Batch) and moved.kinds == batch.kinds
    assert torch.equal(moved.bags.boxes, batch.bags.boxes) and torch.equal(moved.image, batch.image)
    with mock.patch.object(Batch, "pin_memory", return_value="pinned") as pinned:
        assert pin_memory(batch) == "pinned" and pinned.called
    again = pickle.loads(pickle.dumps(batch))
    assert torch.equal(again.bags.instances, batch.bags.instances) and again.files == batch.files
