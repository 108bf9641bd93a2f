"""Weak and strong augmentation of collated batches, with exact geometry on every annotation.

Geometry is the dihedral group of the square: a left-right flip followed by ``k`` quarter turns
(``torch.rot90(dims=(-2, -1))``). It moves pixels without interpolation, so the image, the target,
``allowed``, ``valid``, the instance map (every ``pixels`` field of :class:`~dspseg.data.batch.Batch`),
the points and the boxes stay exactly aligned, and
:meth:`BatchGeometry.apply` moves any other per-pixel tensor (e.g. pseudo-labels) the same way.

Pixel maps for an ``H × W`` array (rows r, columns c)::

    flip:         (r, c) → (r, W−1−c)
    quarter turn: (r, c) → (W−1−c, r)          (the array becomes W × H)

Half-open boxes ``[x0, y0, x1, y1]`` follow: flip → ``[W−x1, y0, W−x0, y1]``; quarter turn →
``[y0, W−x1, y1, W−x0]``.

Photometry (image only, valid pixels only): contrast ``c ∈ [1−s, 1+s]`` around the image's mean,
then brightness ``+ δ·std`` with ``δ ∈ [−s, s]`` — in normalised intensity units, since the batch is
already normalised. Weak: s = 0.2. Strong: s = 0.4 plus CutOut of up to 9 squares (side 1/8–1/4 of
the shorter side) set to 0, the dataset mean. DESIGN.md §3; paper §5.1.

The strong view is built *on top of* the weak view (its geometry composes with the weak one), so
pseudo-labels predicted on the weak view move to the strong view by ``strong_geometry.apply``.
"""

# Why not kornia.augmentation: its geometric transforms resample (interpolation) and move boxes and
# points through a separate matrix bookkeeping; the dihedral group needs only flip and rot90, which are
# exact on every tensor, label maps and bit masks included.

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dspseg.data.batch import Batch
from dspseg.vocabulary import BATCH_BOX, BATCH_POINT


@dataclass(frozen=True)
class Dihedral:
    """``flip`` (left-right) then ``k`` quarter turns."""

    flip: bool = False
    k: int = 0

    def apply(self, x: Tensor) -> Tensor:
        """Move a (..., H, W) tensor."""
        if self.flip:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, self.k, dims=(-2, -1)) if self.k % 4 else x

    def points(self, rows: Tensor, cols: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
        """Move pixel coordinates of an ``h × w`` array."""
        if self.flip:
            cols = w - 1 - cols
        for _ in range(self.k % 4):
            rows, cols, h, w = w - 1 - cols, rows, w, h
        return rows, cols

    def boxes(self, xyxy: Tensor, h: int, w: int) -> Tensor:
        """Move (N,4) half-open boxes ``[x0, y0, x1, y1]`` of an ``h × w`` array."""
        x0, y0, x1, y1 = xyxy.unbind(-1)
        if self.flip:
            x0, x1 = w - x1, w - x0
        for _ in range(self.k % 4):
            x0, y0, x1, y1, h, w = y0, w - x1, y1, w - x0, w, h
        return torch.stack([x0, y0, x1, y1], dim=-1)

    def inverse(self) -> "Dihedral":
        """The transform undoing this one."""
        if not self.flip:
            return Dihedral(False, (-self.k) % 4)
        return Dihedral(True, self.k % 4) if self.k % 2 else Dihedral(True, (-self.k) % 4)


class BatchGeometry:
    """One :class:`Dihedral` per sample of a batch whose pixel tensors share ``h × w``."""

    def __init__(self, transforms: list[Dihedral], h: int, w: int):
        self.transforms = transforms
        self.h, self.w = h, w
        if h != w and any(t.k % 2 for t in transforms):
            raise ValueError(f"quarter turns need square batches, got {h}x{w}")

    @classmethod
    def identity(cls, b: int, h: int, w: int) -> "BatchGeometry":
        return cls([Dihedral()] * b, h, w)

    @classmethod
    def random(cls, b: int, h: int, w: int, generator: torch.Generator) -> "BatchGeometry":
        flips = torch.randint(0, 2, (b,), generator=generator)
        turns = torch.randint(0, 4, (b,), generator=generator) if h == w else torch.randint(0, 2, (b,), generator=generator) * 2
        return cls([Dihedral(bool(f), int(k)) for f, k in zip(flips, turns)], h, w)

    def _groups(self):
        by_t: dict[Dihedral, list[int]] = {}
        for i, t in enumerate(self.transforms):
            by_t.setdefault(t, []).append(i)
        return by_t.items()

    def apply(self, x: Tensor) -> Tensor:
        """Move a (B, ..., h, w) tensor sample by sample (grouped by transform, ≤ 8 ops)."""
        if x.shape[0] != len(self.transforms):
            raise ValueError(f"expected a batch of {len(self.transforms)}, got shape {tuple(x.shape)}")
        groups = list(self._groups())
        if len(groups) == 1:
            return groups[0][0].apply(x)
        out = torch.empty_like(x)  # shapes are kept: square, or only half turns (checked in __init__)
        for t, idx in groups:
            ids = torch.tensor(idx, device=x.device)
            out[ids] = t.apply(x[ids])
        return out

    def apply_points(self, points: Tensor) -> Tensor:
        """(P,4) :data:`~dspseg.vocabulary.BATCH_POINT` rows ``[b, c, row, col]`` → moved copy."""
        out = points.clone()
        row, col = BATCH_POINT.row, BATCH_POINT.col
        for t, idx in self._groups():
            sel = torch.isin(points[:, BATCH_POINT.b], torch.tensor(idx, device=points.device))
            r, c = t.points(points[sel, row], points[sel, col], self.h, self.w)
            out[sel, row], out[sel, col] = r, c
        return out

    def apply_boxes(self, boxes: Tensor) -> Tensor:
        """(Nb,6) :data:`~dspseg.vocabulary.BATCH_BOX` rows ``[b, c, x0, y0, x1, y1]`` → moved copy."""
        out = boxes.clone()
        xyxy = BATCH_BOX.xyxy
        for t, idx in self._groups():
            sel = torch.isin(boxes[:, BATCH_BOX.b], torch.tensor(idx, device=boxes.device))
            out[sel, xyxy] = t.boxes(boxes[sel, xyxy], self.h, self.w)
        return out

    def apply_batch(self, batch: Batch) -> Batch:
        """Move every declared per-pixel field and the point and box bags of a batch (the other
        fields are shared): :meth:`dspseg.data.batch.Batch.map`."""
        return batch.map(self.apply, points=self.apply_points, boxes=self.apply_boxes)


def jitter(image: Tensor, valid: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Contrast and brightness jitter per image, on valid pixels. image (B,Cin,h,w), valid (B,h,w)."""
    b = image.shape[0]
    v = valid.unsqueeze(1).to(image.dtype)
    n = v.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    mean = (image * v).sum(dim=(2, 3), keepdim=True) / n
    std = (((image - mean) ** 2 * v).sum(dim=(2, 3), keepdim=True) / n).sqrt()
    contrast = 1 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * strength
    shift = (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * strength
    out = (image - mean) * contrast.to(image) + mean + shift.to(image) * std
    return torch.where(valid.unsqueeze(1), out, image)


def cutout(image: Tensor, generator: torch.Generator, max_squares: int = 9) -> Tensor:
    """Zero 1..max_squares random squares per image (side 1/8–1/4 of the shorter side)."""
    b, _, h, w = image.shape
    side_lo, side_hi = max(1, min(h, w) // 8), max(2, min(h, w) // 4)
    counts = torch.randint(1, max_squares + 1, (b, 1), generator=generator)
    used = torch.arange(max_squares).unsqueeze(0) < counts  # (B, S): which of the S slots are drawn
    sides = torch.randint(side_lo, side_hi + 1, (b, max_squares), generator=generator)
    ys = (torch.rand(b, max_squares, generator=generator) * (h - sides + 1).clamp_min(1)).long()
    xs = (torch.rand(b, max_squares, generator=generator) * (w - sides + 1).clamp_min(1)).long()
    rows = torch.arange(h).view(1, 1, h)
    cols = torch.arange(w).view(1, 1, w)
    in_rows = (rows >= ys.unsqueeze(-1)) & (rows < (ys + sides).unsqueeze(-1))  # (B, S, h)
    in_cols = (cols >= xs.unsqueeze(-1)) & (cols < (xs + sides).unsqueeze(-1))  # (B, S, w)
    hole = ((in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2)) & used.view(b, -1, 1, 1)).any(dim=1)  # (B, h, w)
    return image.masked_fill(hole.unsqueeze(1).to(image.device), 0.0)


def weak_view(batch: Batch, generator: torch.Generator, strength: float = 0.2) -> tuple[Batch, BatchGeometry]:
    """Random flips/quarter turns and jitter ``strength``; returns the moved batch and its geometry."""
    b, _, h, w = batch.image.shape
    geo = BatchGeometry.random(b, h, w, generator)
    out = geo.apply_batch(batch)
    out.image = jitter(out.image, out.valid, strength, generator)
    return out, geo


def strong_view(weak: Batch, generator: torch.Generator, strength: float = 0.4,
                max_squares: int = 9) -> tuple[Batch, BatchGeometry]:
    """Its own flips/quarter turns on top of the weak view, jitter ``strength`` and CutOut.

    Returns the strong batch and the geometry that maps weak-view pixels to strong-view pixels
    (apply it to pseudo-labels computed on the weak view).
    """
    b, _, h, w = weak.image.shape
    geo = BatchGeometry.random(b, h, w, generator)
    out = geo.apply_batch(weak)
    out.image = cutout(jitter(out.image, out.valid, strength, generator), generator, max_squares)
    return out, geo
