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
(b, c) with ``index_reduce_(amin)`` — O(P·h·w), no loop over pixels. Geodesic: min-plus relaxation
by directional sweeps (fast sweeping): one *pass* = left→right, right→left, top→bottom and
bottom→top sweeps, each updating a whole column (or row) of every (b, c) map at once from its
predecessor (3 neighbours for the row sweeps). One pass is exact on a constant image; paths that
turn back need more passes (``passes``, default 2). The Python loop runs over rows and columns
(2·(h + w) steps per pass), each step vectorised over every (b, c) with points.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SQRT2 = math.sqrt(2.0)


def _check_points(points: Tensor, batch: int, n_classes: int, h: int, w: int) -> Tensor:
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"points must have shape (P, 4) [b, class, row, col], got {tuple(points.shape)}")
    p = points.long()
    if len(p) and not ((p[:, 0] >= 0) & (p[:, 0] < batch) & (p[:, 1] >= 0) & (p[:, 1] < n_classes)
                       & (p[:, 2] >= 0) & (p[:, 2] < h) & (p[:, 3] >= 0) & (p[:, 3] < w)).all():
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
        d2 = (rows - q[:, 2, None, None].float()) ** 2 + (cols - q[:, 3, None, None].float()) ** 2
        idx = (q[:, 0] * n_classes + q[:, 1])[:, None].expand(-1, h * w)
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


def _edge_costs(image: Tensor, valid: Tensor | None, beta: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Step costs ℓ + β‖ΔI‖ of the 4 edge families; inf on edges touching an invalid pixel.

    Returns (B, h, w) tensors padded with inf: ``ch[r, x]`` edge (r, x−1)–(r, x); ``cv[r, x]``
    (r−1, x)–(r, x); ``cd1[r, x]`` (r−1, x−1)–(r, x); ``cd2[r, x]`` (r−1, x+1)–(r, x).
    """
    img = image.float()
    b, _, h, w = img.shape
    ok = torch.ones(b, h, w, dtype=torch.bool, device=img.device) if valid is None else valid

    def cost(a: Tensor, c: Tensor, oa: Tensor, oc: Tensor, length: float) -> Tensor:
        step = length + beta * (a - c).norm(dim=1)
        return step.masked_fill(~(oa & oc), math.inf)

    inf = torch.full((b, h, w), math.inf, device=img.device)
    ch, cv, cd1, cd2 = inf.clone(), inf.clone(), inf.clone(), inf.clone()
    ch[:, :, 1:] = cost(img[..., :, 1:], img[..., :, :-1], ok[:, :, 1:], ok[:, :, :-1], 1.0)
    cv[:, 1:, :] = cost(img[..., 1:, :], img[..., :-1, :], ok[:, 1:, :], ok[:, :-1, :], 1.0)
    cd1[:, 1:, 1:] = cost(img[..., 1:, 1:], img[..., :-1, :-1], ok[:, 1:, 1:], ok[:, :-1, :-1], SQRT2)
    cd2[:, 1:, :-1] = cost(img[..., 1:, :-1], img[..., :-1, 1:], ok[:, 1:, :-1], ok[:, :-1, 1:], SQRT2)
    return ch, cv, cd1, cd2


@torch.no_grad()
def geodesic_distance_maps(points: Tensor, image: Tensor, n_classes: int, beta: float = 2.0,
                           passes: int = 2, valid: Tensor | None = None) -> Tensor:
    """(P, 4) points, image (B, Cin, h, w) → (B, C, h, w) float32 geodesic distances (module docstring).

    ``valid`` (B, h, w) bool: paths never enter invalid (padding) pixels. ``beta`` ≥ 0 weights the
    intensity change; ``passes`` ≥ 1 full sweep passes.
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
    pairs, inv = torch.unique(p[:, 0] * n_classes + p[:, 1], return_inverse=True)
    img_of = pairs // n_classes
    d = torch.full((len(pairs), h, w), math.inf, device=image.device)
    d[inv, p[:, 2], p[:, 3]] = 0.0
    ch, cv, cd1, cd2 = (c[img_of] for c in _edge_costs(image, valid, beta))
    for _ in range(passes):
        for x in range(1, w):  # left → right
            d[:, :, x] = torch.minimum(d[:, :, x], d[:, :, x - 1] + ch[:, :, x])
        for x in range(w - 2, -1, -1):  # right → left
            d[:, :, x] = torch.minimum(d[:, :, x], d[:, :, x + 1] + ch[:, :, x + 1])
        for r in range(1, h):  # top → bottom, from (r-1, x), (r-1, x-1), (r-1, x+1)
            cand = d[:, r - 1] + cv[:, r]
            cand[:, 1:] = torch.minimum(cand[:, 1:], d[:, r - 1, :-1] + cd1[:, r, 1:])
            cand[:, :-1] = torch.minimum(cand[:, :-1], d[:, r - 1, 1:] + cd2[:, r, :-1])
            d[:, r] = torch.minimum(d[:, r], cand)
        for r in range(h - 2, -1, -1):  # bottom → top, from (r+1, x), (r+1, x+1), (r+1, x-1)
            cand = d[:, r + 1] + cv[:, r + 1]
            cand[:, :-1] = torch.minimum(cand[:, :-1], d[:, r + 1, 1:] + cd1[:, r + 1, 1:])
            cand[:, 1:] = torch.minimum(cand[:, 1:], d[:, r + 1, :-1] + cd2[:, r + 1, :-1])
            d[:, r] = torch.minimum(d[:, r], cand)
    out[pairs] = d
    return out.view(b, n_classes, h, w)


def normalised(distance: Tensor, sigma: float) -> Tensor:
    """Regression target ``exp(−d/σ)`` ∈ [0, 1]: 1 at a point, 0 at infinite distance."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return torch.exp(-distance / sigma)
