"""Vectorised shape primitives: image patches, signed distances of ellipses, smooth curves.

Everything works on a :class:`Patch`, a clipped rectangular window of the canvas that carries the
row/column coordinates of its pixel centres as broadcastable arrays ``y`` (h, 1) and ``x`` (1, w).
A signed distance ``d`` (h, w) is negative inside a shape and about the distance in pixels to its
boundary; :func:`ramp` turns it into a one-pixel anti-aliased coverage ``alpha`` in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter1d


@dataclass(frozen=True)
class Patch:
    """Window ``sl`` of a canvas; ``y`` (h, 1) and ``x`` (1, w) are its pixel-centre coordinates."""

    sl: tuple[slice, slice]
    y: np.ndarray
    x: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y.shape[0], self.x.shape[1])


def patch_box(shape: tuple[int, int], y0: float, x0: float, y1: float, x1: float) -> Patch | None:
    """The part of the box [y0, y1] x [x0, x1] (inclusive, float) inside a canvas of ``shape``."""
    r0, c0 = max(0, int(np.floor(y0))), max(0, int(np.floor(x0)))
    r1, c1 = min(shape[0], int(np.ceil(y1)) + 1), min(shape[1], int(np.ceil(x1)) + 1)
    if r1 <= r0 or c1 <= c0:
        return None
    y = np.arange(r0, r1, dtype=np.float32)[:, None]
    x = np.arange(c0, c1, dtype=np.float32)[None, :]
    return Patch((slice(r0, r1), slice(c0, c1)), y, x)


def patch_around(shape: tuple[int, int], cy: float, cx: float, radius: float) -> Patch | None:
    """The square window of half-size ``radius`` around ``(cy, cx)``, clipped to the canvas."""
    return patch_box(shape, cy - radius, cx - radius, cy + radius, cx + radius)


def ramp(d: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Coverage of a pixel at signed distance ``d``: 1 inside, 0 outside, linear over ``width`` px."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


def wobble(rng: np.random.Generator, amplitude: float, orders: tuple[int, ...] = (2, 3, 4)) -> np.ndarray:
    """Random radial harmonics ``[(k, amp_k, phase_k)]`` that make outlines irregular."""
    return np.array([(k, amplitude * rng.uniform(0.3, 1.0) / k ** 0.5, rng.uniform(0, 2 * np.pi))
                     for k in orders], dtype=np.float32).reshape(-1, 3)


def ellipse_frame(p: Patch, cy: float, cx: float, a: float, b: float, theta: float,
                  harmonics: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed distance to a (wobbly) ellipse and the local frame ``(d, u, v)``, each (h, w).

    ``u`` runs along the semi-axis ``a`` (direction ``theta``, radians from the column axis), ``v``
    along ``b``. With rho = sqrt((u/a)^2 + (v/b)^2) / (1 + sum_k amp_k cos(k phi + phase_k)) the
    distance is the first-order estimate d = (rho - 1) / |grad rho| (exact on the boundary).
    """
    dy, dx = p.y - cy, p.x - cx
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = dx * c + dy * s
    v = dy * c - dx * s
    un, vn = u / a, v / b
    rho = np.sqrt(un * un + vn * vn)
    if harmonics is not None and len(harmonics):
        phi = np.arctan2(vn, un)
        scale = 1.0 + sum(amp * np.cos(k * phi + ph) for k, amp, ph in harmonics)
        rho = rho / scale
    grad = np.sqrt((un / a) ** 2 + (vn / b) ** 2) / np.maximum(rho, 1e-6)
    grad = np.maximum(grad, 1.0 / max(a, b))
    d = (rho - 1.0) / grad
    return d.astype(np.float32), u, v


def smooth_curve(rng: np.random.Generator, start: tuple[float, float], heading: float, length: float,
                 bend: float, step: float = 0.5) -> np.ndarray:
    """Points (n, 2) as (row, col) of a smooth random curve of ``length`` px sampled every ``step``.

    The heading performs a smoothed random walk: dtheta_i ~ N(0, bend) per pixel of arc, low-passed
    with a Gaussian of 6 px, so ``bend`` of ~0.05-0.15 gives gently curved tubules.
    """
    n = max(2, int(length / step))
    turn = gaussian_filter1d(rng.normal(0.0, bend * 6.0, n), sigma=6.0 / step, mode="nearest") * step
    theta = heading + np.cumsum(turn)
    pts = np.empty((n, 2), dtype=np.float64)
    pts[:, 0] = start[0] + np.cumsum(np.sin(theta) * step)
    pts[:, 1] = start[1] + np.cumsum(np.cos(theta) * step)
    return pts


def curve_normals(pts: np.ndarray) -> np.ndarray:
    """Unit normals (n, 2) of a sampled curve (rotated tangents, same (row, col) order)."""
    t = np.gradient(pts, axis=0)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
    return np.stack([t[:, 1], -t[:, 0]], axis=1)


def curve_distance(shape: tuple[int, int], pts: np.ndarray, reach: float) -> tuple[Patch, np.ndarray] | None:
    """Distance (h, w) from every pixel of the curve's bounding patch to the nearest curve point.

    Each point (n, 2) is rasterised to its pixel, which remembers the point's sub-pixel position; a
    Euclidean distance transform then finds, for every pixel, the nearest rasterised pixel and the
    distance to the point stored there (within ~0.1 px of the true distance near the curve).
    Pixels farther than ``reach`` get ``reach``; returns ``None`` when the curve is off the canvas.
    """
    p = patch_box(shape, pts[:, 0].min() - reach, pts[:, 1].min() - reach,
                  pts[:, 0].max() + reach, pts[:, 1].max() + reach)
    if p is None:
        return None
    h, w = p.shape
    rc = np.rint(pts).astype(np.int64) - (p.sl[0].start, p.sl[1].start)
    ok = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
    if not ok.any():
        return None
    rc, sub = rc[ok], pts[ok].astype(np.float32)
    empty = np.ones((h, w), dtype=bool)
    empty[rc[:, 0], rc[:, 1]] = False
    sy = np.zeros((h, w), dtype=np.float32)
    sx = np.zeros((h, w), dtype=np.float32)
    sy[rc[:, 0], rc[:, 1]] = sub[:, 0]
    sx[rc[:, 0], rc[:, 1]] = sub[:, 1]
    iy, ix = distance_transform_edt(empty, return_distances=False, return_indices=True)
    d = np.sqrt((p.y - sy[iy, ix]) ** 2 + (p.x - sx[iy, ix]) ** 2)
    return p, np.minimum(d, np.float32(reach))
