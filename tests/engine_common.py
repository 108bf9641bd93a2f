"""Helpers shared by the engine tests: a tiny dataset a U-Net learns in seconds, tiny configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dspseg.data.io import write_image, write_mask
from dspseg.engine.config import resolve_config

CLASSES = ["bg", "rect", "disc"]
TINY = {"width": 4, "levels": 3, "batch_size": 4, "crop_size": 32, "log_every": 2, "val_every": 5, "threads": 1}


def make_easy_dataset(root: Path, n: tuple[int, int, int] = (8, 4, 4), h: int = 32, w: int = 48, seed: int = 0,
                      kind: str = "mask") -> Path:
    """Dark background, a bright 10x14 rectangle and a grey disc of radius 4 per image, light noise;
    ``n`` train/val/test images with full masks (train images get a box on the rectangle and every class as labels instead for ``kind="box"``)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    records, k = [], 0
    for split, count in zip(("train", "val", "test"), n):
        for _ in range(count):
            mask = np.zeros((h, w), np.uint8)
            r, c = rng.integers(2, h - 12), rng.integers(2, w - 16)
            mask[r:r + 10, c:c + 14] = 1
            cy, cx = rng.integers(5, h - 5), rng.integers(5, w - 5)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = 2
            image = np.choose(mask, [0.1, 0.9, 0.5]) + rng.normal(0, 0.05, (h, w))
            write_image(root / f"i{k}.tif", image.astype(np.float32))
            rec = {"file": f"i{k}.tif", "split": split}
            if kind == "box" and split == "train":
                # the rectangle boxed; every class of the image named (one boxed class alone cannot be trained)
                rec["boxes"] = [{"class": "rect", "xyxy": [int(c), int(r), int(c) + 14, int(r) + 10]}]
                rec["labels"] = list(CLASSES)
            else:
                write_mask(root / f"m{k}.tif", mask)
                rec["mask"] = f"m{k}.tif"
            records.append(rec)
            k += 1
    (root / "dataset.json").write_text(json.dumps({"classes": CLASSES, "ignore_index": 255, "images": records}))
    return root


def tiny_cfg(**over):
    flags = {**TINY, **{k: v for k, v in over.items() if k != "sets"}}
    return resolve_config(flags=flags, sets=["lr=0.01", *over.get("sets", [])])


@pytest.fixture(scope="module")
def easy(tmp_path_factory) -> Path:
    return make_easy_dataset(tmp_path_factory.mktemp("easy"))
