"""The qualitative panel's image: the test record whose mask holds the most classes."""

from __future__ import annotations

import json

import numpy as np

from dspseg.data.io import write_image, write_mask
from dspseg.study.qualitative import _test_record, by_richness, richest


def test_richest_ignores_the_ignore_index_and_keeps_the_first_of_equals():
    one = np.ones((4, 4), np.uint8)  # 100 % one class, as the demo once showed
    three = np.array([[0, 1], [2, 255]], np.uint8)
    also_three = np.array([[3, 1], [2, 2]], np.uint8)
    assert richest([one, three, also_three], 255) == 1
    assert richest([np.full((2, 2), 255, np.uint8), one], 255) == 1


def test_panel_picks_the_test_image_with_most_classes(tmp_path):
    data = tmp_path / "data" / "mixed-acr1-split0"
    masks = {"flat": np.ones((8, 10), np.uint8), "rich": np.tile(np.arange(4, dtype=np.uint8), (8, 3))[:, :10],
             "train": np.tile(np.arange(4, dtype=np.uint8), (8, 3))[:, :10]}
    images = []
    for name, mask in masks.items():
        write_image(data / f"{name}.tif", np.zeros((8, 10), np.float32))
        write_mask(data / f"{name}_m.tif", mask)
        images.append({"file": f"{name}.tif", "mask": f"{name}_m.tif", "split": "train" if name == "train" else "test"})
    (data / "dataset.json").write_text(json.dumps({"classes": ["bg", "cytosol", "mito", "er"], "images": images}))
    single, record = _test_record(tmp_path, "data/mixed-acr1-split0")
    assert record.file == "rich.tif" and [r.file for r in single.images] == ["rich.tif"]


def test_by_richness_orders_masks_by_classes_held_and_keeps_equals_in_order():
    """The demo's overlays take the first three of this order (issue 15: not a 100 % cytosol image)."""
    one = np.zeros((2, 2), np.uint8)
    two = np.array([[0, 1], [1, 255]], np.uint8)
    three = np.array([[0, 1], [2, 255]], np.uint8)
    assert by_richness([one, three, two, three.copy(), one], 255) == [1, 3, 2, 0, 4]
    assert by_richness([], 255) == [] and richest([], 255) == -1
