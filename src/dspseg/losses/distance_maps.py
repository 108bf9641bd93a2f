r"""Distance maps to point annotations, per image and class (the ``pointbranch`` targets).

For image b, class c with point set :math:`P_{bc}` (rows of the collated ``points`` (P, 4)
``[b, class, row, col]``), every pixel j gets

* **euclidean**: :math:`d_{bc}(j) = \min_{p \in P_{bc}} \lVert j - p \rVert_2` (exact, in pixels);
* **geodesic**: :math:`d_{bc}(j) = \min_{p \in P_{bc}} \min_{\text{paths } p \to j} \sum_{\text{steps } q \to q'}
  \big(\ell(q, q') + \beta \lVert I(q') - I(q) \rVert\big)` over 8-connected pixel paths, with step
  length ℓ = 1 (horizontal/vertical) or √2 (diagonal) — the discrete form of
  :math:`\int (1 + \beta \lvert \nabla I \cdot t \rvert)\, ds` (cost 1 + β·|∇I| along the path, as in
  DeepIGeoS, Wang et al. 2018). On a constant image it is the (1, √2) chamfer distance
  ``max(|Δr|, |Δc|) + (√2 − 1)·min(|Δr|, |Δc|)``, at most 8.3 % above the euclidean one.

``+inf`` where (b, c) has no point (and, for geodesic, where no path through valid pixels exists).
:func:`normalised` maps distances to regression targets ``exp(−d/σ)`` ∈ (0, 1] (1 at a point,
→ 0 far away and where there is no point), which bounds the target and makes the error of a
crop-truncated point set (a nearer point outside the crop) vanish with distance.

Euclidean: brute force over (point, pixel) pairs, in chunks of points (bounded memory), reduced per
(b, c) with ``scatter_reduce_(amin)`` — O(P·h·w), no loop over pixels. Geodesic: min-plus relaxation
by directional sweeps (fast sweeping). Along one line of pixels a sweep in both directions is a pair
of cumulative minima (:func:`_scan`); one *pass* sweeps the rows, the columns, the diagonals and the
anti-diagonals (sheared into columns), for every (b, c) with points at once — a few dozen tensor
operations per pass, independent of the image size. One pass is exact on a constant image (a
shortest chamfer path is a straight run followed by a diagonal run); paths that turn more often need
more passes (``passes``, default 4). Relaxation only ever overestimates; measured against Dijkstra
on a 128² synthetic image (3×3-smoothed, β = 2, three seeds): mean / max relative excess 9 % / 30 %
after 1 pass, 3 % / 12 % after 2, 0.8 % / 4.8 % after 4 (β = 5: 2.6 % / 11 % after 4); exact
convergence takes ~16–24 passes on such noisy images. With invalid (padding) pixels the sums run in
float64, so that the large cost given to edges into them does not swallow the real distances; else
in float32. Cost on one CPU thread (8 images of 128², ~70 maps, 4 passes): ≈ 0.3 s — the
cumulative minima dominate (numpy's ufunc on the CPU; ``torch.cummin`` on other devices, where the
few large operations per pass suit the hardware).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dspseg.vocabulary import BATCH_POINT as PT

SQRT2 = math.sqrt(2.0)


def _check_points(points: Tensor, batch: int, n_classes: int, h: int, w: int) -> Tensor:
    if points.ndim != 2 or points.shape[1] != PT.width:
        raise ValueError(f"points must have shape (P, 4) [b, class, row, col], got {tuple(points.shape)}")
    p = points.long()
    b, c, r, k = p.unbind(1)  # BATCH_POINT columns
    if len(p) and not ((b >= 0) & (b < batch) & (c >= 0) & (c < n_classes)
                       & (r >= 0) & (r < h) & (k >= 0) & (k < w)).all():
        raise ValueError(f"points: some row lies outside batch {batch}, classes {n_classes} or the {h}x{w} grid")
    return p


def euclidean_distance_maps(points: Tensor, batch: int, n_classes: int, h: int, w: int,
                            chunk_elements: int = 1 << 22) -> Tensor:
    """(P, 4) points → (B, C, h, w) float32 euclidean distance to the nearest point of (b, c); inf if none."""
    p = _check_points(points, batch, n_classes, h, w)
    device = points.device
    out = torch.full((batch * n_classes, h * w), math.inf, device=device)
    rows = torch.arange(h, device=device, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, w)
    per = max(1, chunk_elements // (h * w))
    for start in range(0, len(p), per):  # chunks of points bound the (k, h, w) buffer
        q = p[start:start + per]
        d2 = (rows - q[:, PT.row, None, None].float()) ** 2 + (cols - q[:, PT.col, None, None].float()) ** 2
        idx = (q[:, PT.b] * n_classes + q[:, PT.c])[:, None].expand(-1, h * w)
        out.scatter_reduce_(0, idx, d2.view(len(q), h * w), "amin")
    return out.sqrt_().view(batch, n_classes, h, w)


def smooth_image(image: Tensor, valid: Tensor | None, size: int) -> Tensor:
    """Mean over the valid pixels of a ``size`` × ``size`` window (size 1: unchanged). (B, Cin, h, w)."""
    if size <= 1:
        return image
    v = (torch.ones_like(image[:, :1]) if valid is None else valid.unsqueeze(1).to(image.dtype))
    num = F.avg_pool2d(image * v, size, stride=1, padding=size // 2, count_include_pad=True)
    den = F.avg_pool2d(v, size, stride=1, padding=size // 2, count_include_pad=True)
    out = num / den.clamp_min(1e-12)
    return out[..., : image.shape[-2], : image.shape[-1]]  # even sizes give one extra row/column


BLOCKED = 1e7  # cost of an edge touching an invalid pixel (a path through one is then discarded)


def _edge_costs(image: Tensor, valid: Tensor | None, beta: float,
                dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Step costs ℓ + β‖ΔI‖ of the 4 edge families in ``dtype``, :data:`BLOCKED` on edges touching an
    invalid pixel, 0 where a pixel has no such predecessor.

    Returns (B, h, w): ``ch[r, x]`` edge (r, x−1)–(r, x); ``cv[r, x]`` (r−1, x)–(r, x);
    ``cd1[r, x]`` (r−1, x−1)–(r, x); ``cd2[r, x]`` (r−1, x+1)–(r, x).
    """
    img = image.to(dtype)
    b, _, h, w = img.shape
    ok = torch.ones(b, h, w, dtype=torch.bool, device=img.device) if valid is None else valid

    def cost(a: Tensor, c: Tensor, oa: Tensor, oc: Tensor, length: float) -> Tensor:
        step = length + beta * (a - c).norm(dim=1)
        return step.masked_fill(~(oa & oc), BLOCKED)

    ch, cv, cd1, cd2 = (torch.zeros(b, h, w, dtype=dtype, device=img.device) for _ in range(4))
    ch[:, :, 1:] = cost(img[..., :, 1:], img[..., :, :-1], ok[:, :, 1:], ok[:, :, :-1], 1.0)
    cv[:, 1:, :] = cost(img[..., 1:, :], img[..., :-1, :], ok[:, 1:, :], ok[:, :-1, :], 1.0)
    cd1[:, 1:, 1:] = cost(img[..., 1:, 1:], img[..., :-1, :-1], ok[:, 1:, 1:], ok[:, :-1, :-1], SQRT2)
    cd2[:, 1:, :-1] = cost(img[..., 1:, :-1], img[..., :-1, 1:], ok[:, 1:, :-1], ok[:, :-1, 1:], SQRT2)
    return ch, cv, cd1, cd2


def _cummin(x: Tensor, reverse: bool = False) -> Tensor:
    """Cumulative minimum along the last dimension, from the end if ``reverse`` (on the CPU with
    numpy's ufunc, which keeps no indices and reverses by a view: several times faster)."""
    if x.device.type == "cpu":
        a = x.contiguous().numpy()
        a = a[..., ::-1] if reverse else a
        out = np.minimum.accumulate(a, axis=-1)
        return torch.from_numpy(np.ascontiguousarray(out[..., ::-1] if reverse else out))
    return x.flip(-1).cummin(-1).values.flip(-1) if reverse else x.cummin(-1).values


def _scan(d: Tensor, cum_cost: Tensor) -> Tensor:
    """Both min-plus sweeps along the last dimension, given ``C = cumsum(cost)`` where ``cost[..., i]``
    is the edge between positions i−1 and i.

    The path from k to i costs ``|C[i] − C[k]|``, so the forward sweep is
    ``d[i] = C[i] + min_{k ≤ i}(d[k] − C[k])`` (a cumulative minimum) and the backward one
    ``d[i] = −C[i] + min_{k ≥ i}(d[k] + C[k])``.
    """
    d = cum_cost + _cummin(d - cum_cost)
    return _cummin(d + cum_cost, reverse=True) - cum_cost


class _Lines:
    """One family of lines of an h × w grid laid out as the rows of an array, so that a sweep along
    them is a scan along the last dimension: ``rows`` (as is), ``cols`` (transposed), ``diag``
    (x − r constant) and ``anti`` (x + r constant), the diagonals sheared into a (w + h − 1, h) array
    ordered by row; the unused slots of the sheared layouts sit at the ends of their lines."""

    def __init__(self, h: int, w: int, family: str, device: torch.device) -> None:
        self.family, self.hw = family, (h, w)
        if family in ("diag", "anti"):
            r = torch.arange(h, device=device).view(h, 1)
            x = torch.arange(w, device=device).view(1, w)
            line = x - r + h - 1 if family == "diag" else x + r
            self.index = (line * h + r).reshape(-1)
            self.shape = (w + h - 1, h)

    def to(self, t: Tensor, fill: float) -> Tensor:
        """(S, h, w) → the line layout (``fill`` in unused slots)."""
        if self.family == "rows":
            return t
        if self.family == "cols":
            return t.transpose(-1, -2)
        out = torch.full((t.shape[0], self.shape[0] * self.shape[1]), fill, dtype=t.dtype, device=t.device)
        out[:, self.index] = t.reshape(t.shape[0], -1)
        return out.view(t.shape[0], *self.shape)

    def back(self, t: Tensor) -> Tensor:
        """The line layout → (S, h, w)."""
        if self.family == "rows":
            return t
        if self.family == "cols":
            return t.transpose(-1, -2)
        return t.reshape(t.shape[0], -1)[:, self.index].view(t.shape[0], *self.hw)


@torch.no_grad()
def geodesic_distance_maps(points: Tensor, image: Tensor, n_classes: int, beta: float = 2.0,
                           passes: int = 4, valid: Tensor | None = None) -> Tensor:
    """(P, 4) points, image (B, Cin, h, w) → (B, C, h, w) float32 geodesic distances (module docstring).

    ``valid`` (B, h, w) bool: paths never enter invalid (padding) pixels. ``beta`` ≥ 0 weights the
    intensity change; ``passes`` ≥ 1 full passes of the 8 directional sweeps. Computed in float32, or
    in float64 when some pixel is invalid (the cumulative sums then hold :data:`BLOCKED` costs).
    """
    if image.ndim != 4:
        raise ValueError(f"image must have shape (B, Cin, h, w), got {tuple(image.shape)}")
    if beta < 0 or passes < 1:
        raise ValueError(f"beta must be >= 0 and passes >= 1, got beta={beta}, passes={passes}")
    b, _, h, w = image.shape
    p = _check_points(points, b, n_classes, h, w)
    out = torch.full((b * n_classes, h, w), math.inf, device=image.device)
    if len(p) == 0:
        return out.view(b, n_classes, h, w)
    pairs, inv = torch.unique(p[:, PT.b] * n_classes + p[:, PT.c], return_inverse=True)
    dtype = torch.float64 if valid is not None and not bool(valid.all()) else torch.float32
    d = torch.full((len(pairs), h, w), math.inf, dtype=dtype, device=image.device)
    d[inv, p[:, PT.row], p[:, PT.col]] = 0.0
    costs = _edge_costs(image, valid, beta, dtype)  # per image; laid out per family once, then gathered per map
    families = [_Lines(h, w, f, image.device) for f in ("rows", "cols", "diag", "anti")]
    cums = [f.to(c, 0.0).cumsum(-1)[pairs // n_classes] for f, c in zip(families, costs)]
    for _ in range(passes):
        for family, cum in zip(families, cums):
            d = family.back(_scan(family.to(d, math.inf), cum))
        d = d.masked_fill(d >= BLOCKED / 2, math.inf)  # paths through an invalid pixel
    out[pairs] = d.float()
    return out.view(b, n_classes, h, w)


def normalised(distance: Tensor, sigma: float) -> Tensor:
    """Regression target ``exp(−d/σ)`` ∈ [0, 1]: 1 at a point, 0 at infinite distance."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return torch.exp(-distance / sigma)
