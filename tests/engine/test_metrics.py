"""Dice per DESIGN.md §3 on hand-made predictions with known answers (exact fractions)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from dspseg.engine.metrics import DiceAccumulator, dice_from_counts


def t(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def exact(*fracs: Fraction | None) -> list[float]:
    return [math.nan if f is None else float(f) for f in fracs]


def assert_dice(values: np.ndarray, expected: list[float]) -> None:
    np.testing.assert_array_equal(values, np.array(expected))  # nan == nan here


def test_dice_from_counts() -> None:
    assert_dice(dice_from_counts([3, 0, 0], [1, 2, 0], [0, 0, 0]), exact(Fraction(6, 7), Fraction(0), None))
    with pytest.raises(ValueError, match="shapes differ"):
        dice_from_counts([1], [1, 2], [1])


def test_known_counts_and_absent_class_is_nan_and_excluded() -> None:
    acc = DiceAccumulator(n_classes=4)
    truth = t([[0, 0, 1], [1, 1, 2]])  # class 3 absent from truth and from both predictions
    acc.update(truth, truth)
    r = acc.compute()
    assert_dice(r.per_class, exact(Fraction(1), Fraction(1), Fraction(1), None))
    acc.reset()
    acc.update(t([[0, 1, 1], [1, 2, 2]]), truth)
    r = acc.compute()
    # class 0: tp 1, fn 1 -> 2/3 ; class 1: tp 2, fp 1, fn 1 -> 4/6 ; class 2: tp 1, fp 1 -> 2/3 ; class 3: nan
    assert_dice(r.per_class, exact(Fraction(2, 3), Fraction(2, 3), Fraction(2, 3), None))
    assert r.mean == pytest.approx(2 / 3, rel=1e-12)
    assert r.images == 1 and r.confusion.sum() == 6


def test_class_only_in_prediction_counts_as_zero() -> None:
    acc = DiceAccumulator(n_classes=3)
    acc.update(t([[0, 2]]), t([[0, 0]]))
    r = acc.compute()
    assert_dice(r.per_class, exact(Fraction(2, 3), None, Fraction(0)))
    assert r.mean == pytest.approx(1 / 3, rel=1e-12)


def test_ignore_pixels_and_invalid_pixels_are_excluded() -> None:
    acc = DiceAccumulator(n_classes=2, ignore_index=255)
    target = t([[1, 1, 255, 0]])
    acc.update(t([[1, 0, 1, 0]]), target)
    first = acc.compute().per_class
    acc.reset()
    acc.update(t([[1, 0, 0, 0]]), target)  # a different guess on the ignored pixel changes nothing
    assert_dice(acc.compute().per_class, list(first))
    # class 0: tp 1, fp 1 -> 2/3 ; class 1: tp 1, fn 1 -> 2/3
    assert_dice(first, exact(Fraction(2, 3), Fraction(2, 3)))
    acc.reset()
    acc.update(t([[1, 0, 1, 0]]), target, valid=torch.tensor([[True, False, True, True]]))
    assert_dice(acc.compute().per_class, exact(Fraction(1), Fraction(1)))


def test_background_on_and_off() -> None:
    pred, target = t([[0, 0, 0, 1]]), t([[0, 0, 1, 1]])
    on = DiceAccumulator(n_classes=2, background=0, include_background=True)
    off = DiceAccumulator(n_classes=2, background=0, include_background=False)
    for acc in (on, off):
        acc.update(pred, target)
    r_on, r_off = on.compute(), off.compute()
    # class 0: tp 2, fn 0, fp 1 -> 4/5 ; class 1: tp 1, fn 1 -> 2/3
    assert_dice(r_on.per_class, exact(Fraction(4, 5), Fraction(2, 3)))
    assert_dice(r_off.per_class, r_on.per_class.tolist())
    assert r_on.mean == pytest.approx(float((Fraction(4, 5) + Fraction(2, 3)) / 2), rel=1e-12)
    assert r_off.mean == float(Fraction(2, 3))
    assert r_on.include_background and not r_off.include_background
    with pytest.raises(ValueError, match="background"):
        DiceAccumulator(n_classes=2, include_background=False)


def test_accumulation_over_images_is_not_mean_of_per_image_dice() -> None:
    a_pred, a_true = t([[1, 1, 1, 0]]), t([[1, 1, 1, 1]])  # class 1 Dice 6/7, class 0 Dice 0
    b_pred, b_true = t([[0, 0, 0, 0]]), t([[0, 0, 0, 1]])  # class 1 Dice 0,   class 0 Dice 6/7
    per_image = []
    for p, g in ((a_pred, a_true), (b_pred, b_true)):
        one = DiceAccumulator(n_classes=2)
        one.update(p, g)
        per_image.append(one.compute().per_class)
    assert_dice(np.mean(per_image, axis=0), exact(Fraction(3, 7), Fraction(3, 7)))
    acc = DiceAccumulator(n_classes=2)
    acc.update(a_pred, a_true)
    acc.update(b_pred, b_true)
    # pooled: class 0 tp 3, fp 2 -> 6/8 ; class 1 tp 3, fn 2 -> 6/8
    assert_dice(acc.compute().per_class, exact(Fraction(3, 4), Fraction(3, 4)))
    batched = DiceAccumulator(n_classes=2)
    batched.update(torch.stack([a_pred, b_pred]), torch.stack([a_true, b_true]))  # (2, 1, 4)
    np.testing.assert_array_equal(batched.confusion, acc.confusion)
    assert batched.images == acc.images == 2


def test_numpy_input_and_to_dict() -> None:
    acc = DiceAccumulator(n_classes=3, ignore_index=255)
    acc.update(np.array([[0, 1], [1, 1]], dtype=np.uint8), np.array([[0, 1], [0, 255]], dtype=np.uint8))
    d = acc.compute().to_dict(["bg", "mito", "er"])
    assert d["per_class"] == {"bg": float(Fraction(2, 3)), "mito": float(Fraction(2, 3)), "er": None}
    assert d["mean_dice"] == pytest.approx(2 / 3) and d["images"] == 1
    empty = DiceAccumulator(n_classes=2).compute()
    assert math.isnan(empty.mean) and empty.to_dict()["mean_dice"] is None


def test_bad_input_messages() -> None:
    acc = DiceAccumulator(n_classes=2, ignore_index=255)
    with pytest.raises(ValueError, match=r"pred \(2, 2\) and target \(2, 3\)"):
        acc.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="pred holds class ids in \\[0, 5\\]"):
        acc.update(t([[0, 5]]), t([[0, 1]]))
    with pytest.raises(ValueError, match="target holds class ids"):
        acc.update(t([[0, 1]]), t([[0, 7]]))
    with pytest.raises(ValueError, match="integer class ids.*float"):
        acc.update(torch.zeros(2, 2), t([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match="valid must have the shape"):
        acc.update(t([[0, 1]]), t([[0, 1]]), valid=torch.ones(1, 3, dtype=torch.bool))
