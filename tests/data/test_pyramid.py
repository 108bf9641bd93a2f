"""mode_downsample (the label pyramid) against a brute-force count of every 2 × 2 × 2 block: packed
counts up to 15 classes, one count per class past that; odd edges and ties (lowest class wins)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dspseg.data.volumes.pyramid import mode_downsample


def _brute(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros([-(-s // 2) for s in labels.shape], labels.dtype)
    for z, y, x in itertools.product(*(range(s) for s in out.shape)):
        block = labels[2 * z:2 * z + 2, 2 * y:2 * y + 2, 2 * x:2 * x + 2].ravel()
        out[z, y, x] = np.argmax(np.bincount(block, minlength=n_classes))  # first maximum: the lowest class
    return out


@pytest.mark.parametrize(("n_classes", "dtype", "shape"), [(2, "uint8", (4, 6, 8)), (3, "uint8", (5, 7, 9)),
                                                           (15, "uint8", (3, 9, 6)), (16, "uint16", (5, 4, 7)),
                                                           (300, "uint16", (3, 5, 5))])
def test_equals_brute_force_counts(n_classes: int, dtype: str, shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(n_classes)
    labels = rng.integers(0, n_classes, shape).astype(dtype)
    got = mode_downsample(labels, n_classes)
    assert got.dtype == labels.dtype and np.array_equal(got, _brute(labels, n_classes))


def test_a_full_block_of_one_class_and_a_four_four_tie() -> None:
    labels = np.zeros((2, 2, 4), np.uint8)
    labels[..., :2] = 14  # one class everywhere: 8 of 8 (the packed count's largest value)
    labels[0, :, 2:], labels[1, :, 2:] = 9, 4  # 4 voxels of 9, 4 of 4: the lower class wins
    assert mode_downsample(labels, 15).tolist() == [[[14, 4]]]
