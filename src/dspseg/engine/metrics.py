"""Dice score per DESIGN.md §3: per-class counts accumulated over all evaluated images.

For every class c, over every evaluated pixel of every image (pixels whose truth is
``ignore_index`` or that are outside the ``valid`` mask are skipped)::

    TP_c = #{pred = c and truth = c},  FP_c = #{pred = c, truth != c},  FN_c = #{pred != c, truth = c}
    Dice_c = 2 TP_c / (2 TP_c + FP_c + FN_c)          nan when the denominator is 0

A class absent from both prediction and truth on all evaluated pixels is therefore nan and is left out
of the headline ``mean`` (a nan-mean over classes). With ``include_background=False`` the class
``background`` is left out of the mean too (its Dice is still reported in ``per_class``).

Accumulating counts is not the mean of per-image Dice: images with much of a class weigh more.

Example::

    >>> acc = DiceAccumulator(n_classes=3, ignore_index=255)
    >>> acc.update(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [0, 255]]))
    >>> acc.compute().per_class          # class 2 absent everywhere -> nan
    array([0.66666667, 0.66666667,        nan])
"""

# Why not torchmetrics: its Dice variants average per batch and use their own convention for classes
# absent from both prediction and truth; dspseg needs counts pooled over every evaluated image, such
# classes left out (nan), ignore and padding pixels excluded, and a confusion matrix for reports — one
# bincount over (truth, prediction) pairs gives all of it without another dependency.

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def dice_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Dice = 2 TP / (2 TP + FP + FN) per class, nan where 2 TP + FP + FN = 0. Arrays (C,) → (C,)."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    if not tp.shape == fp.shape == fn.shape:
        raise ValueError(f"dice_from_counts: tp, fp, fn shapes differ: {tp.shape}, {fp.shape}, {fn.shape}")
    denom = 2 * tp + fp + fn
    out = np.full(tp.shape, np.nan)
    np.divide(2 * tp, denom, out=out, where=denom > 0)
    return out


@dataclass(frozen=True)
class DiceResult:
    """Result of :meth:`DiceAccumulator.compute`.

    ``per_class`` (C,) Dice with nan for classes absent from prediction and truth; ``mean`` the
    nan-mean over the counted classes (background left out unless ``include_background``), nan if
    no class could be counted; ``confusion`` (C, C) pixel counts [truth, prediction].
    """

    per_class: np.ndarray
    mean: float
    include_background: bool
    background: int | None
    images: int
    confusion: np.ndarray

    def to_dict(self, class_names: list[str] | None = None) -> dict[str, object]:
        """JSON-ready ``{"mean_dice": float|None, "per_class": {name: float|None}, "images": int,
        "include_background": bool}`` (nan becomes None)."""
        n = len(self.per_class)
        names = class_names if class_names is not None else [str(c) for c in range(n)]
        if len(names) != n:
            raise ValueError(f"DiceResult.to_dict: got {len(names)} class names for {n} classes")

        def clean(v: float) -> float | None:
            return None if np.isnan(v) else float(v)

        return {
            "mean_dice": clean(self.mean),
            "per_class": {name: clean(v) for name, v in zip(names, self.per_class)},
            "images": self.images,
            "include_background": self.include_background,
        }


def _as_long_tensor(name: str, x: Tensor | np.ndarray) -> Tensor:
    t = torch.as_tensor(x)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"DiceAccumulator.update: {name} must hold integer class ids, got dtype {t.dtype}")
    return t.long()


class DiceAccumulator:
    """Accumulates a (C, C) confusion matrix over images; :meth:`compute` gives Dice per class.

    Args:
        n_classes: C.
        ignore_index: truth value marking unannotated pixels (skipped), or None.
        background: class id of the background, needed when ``include_background`` is False.
        include_background: whether the background class enters the mean.
    """

    def __init__(
        self,
        n_classes: int,
        ignore_index: int | None = None,
        background: int | None = None,
        include_background: bool = True,
    ) -> None:
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"DiceAccumulator: n_classes must be a positive integer, got {n_classes!r}")
        if background is not None and not 0 <= background < n_classes:
            raise ValueError(f"DiceAccumulator: background must be a class id in [0, {n_classes}), got {background}")
        if not include_background and background is None:
            raise ValueError("DiceAccumulator: include_background=False needs the background class id (background=...)")
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        self.background = background
        self.include_background = include_background
        self.reset()

    def reset(self) -> None:
        """Forget all counts."""
        self.confusion = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)
        self.images = 0

    def update(
        self,
        pred: Tensor | np.ndarray,
        target: Tensor | np.ndarray,
        valid: Tensor | np.ndarray | None = None,
    ) -> None:
        """Add one image (H, W) or a batch (B, H, W) of predicted and true class ids.

        ``valid`` (same shape, bool) marks the pixels to count (e.g. not padding); pixels whose
        truth is ``ignore_index`` are skipped as well.
        """
        p, t = _as_long_tensor("pred", pred), _as_long_tensor("target", target)
        if p.shape != t.shape or p.ndim not in (2, 3):
            raise ValueError(
                "DiceAccumulator.update: pred and target must both be (H, W) or (B, H, W), "
                f"got pred {tuple(p.shape)} and target {tuple(t.shape)}"
            )
        t = t.to(p.device)
        keep = torch.ones_like(t, dtype=torch.bool)
        if self.ignore_index is not None:
            keep &= t != self.ignore_index
        if valid is not None:
            v = torch.as_tensor(valid).to(p.device)
            if v.shape != t.shape:
                raise ValueError(
                    f"DiceAccumulator.update: valid must have the shape of target {tuple(t.shape)}, got {tuple(v.shape)}"
                )
            keep &= v.bool()
        p, t = p[keep], t[keep]
        c = self.n_classes
        for name, x in (("pred", p), ("target", t)):
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= c):
                raise ValueError(
                    f"DiceAccumulator.update: {name} holds class ids in [{int(x.min())}, {int(x.max())}], "
                    f"expected [0, {c}) (ignore_index={self.ignore_index})"
                )
        counts = torch.bincount(t * c + p, minlength=c * c).reshape(c, c)
        self.confusion += counts.cpu().numpy()
        self.images += 1 if pred.ndim == 2 else int(pred.shape[0])

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(TP, FP, FN), each (C,) int64, from the confusion matrix [truth, prediction]."""
        tp = np.diag(self.confusion).copy()
        fp = self.confusion.sum(axis=0) - tp
        fn = self.confusion.sum(axis=1) - tp
        return tp, fp, fn

    def compute(self) -> DiceResult:
        """Dice per class and the headline mean (see the module docstring)."""
        per_class = dice_from_counts(*self.counts())
        counted = per_class.copy()
        if not self.include_background:
            counted[self.background] = np.nan
        mean = float(np.nanmean(counted)) if np.isfinite(counted).any() else float("nan")
        return DiceResult(
            per_class=per_class,
            mean=mean,
            include_background=self.include_background,
            background=self.background,
            images=self.images,
            confusion=self.confusion.copy(),
        )
