"""Membrane organelles: endoplasmic reticulum, Golgi stacks, vesicles.

ER is a smooth random curve drawn either as a single dark tubule (2.4-3.2 px wide) or as a paired
sheet (two dark membranes around a darker lumen, 5-6.5 px in all) studded with ribosomes; it is painted only
over cytosol, so it weaves between the bodies and fills little of its bounding box. A Golgi stack is
a set of concentric arcs (cisternae) with swollen rims and vesicles budding off their ends. A
vesicle is a small disc with a dark membrane and a clear (sometimes dense) core.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation
from scipy.ndimage import label as ndi_label

from dspseg.data.synthetic.canvas import Canvas
from dspseg.data.synthetic.geometry import curve_distance, curve_normals, patch_around, ramp, smooth_curve
from dspseg.data.synthetic.style import ER, GOLGI, VESICLE


def draw_er(cv: Canvas, cy: float, cx: float) -> bool:
    """One ER tubule or ribosome-studded sheet passing through (cy, cx); ER class = membranes + lumen.

    Ribosomes (dark dots 2 px across, 4.5 px apart, 2 px off the sheet) stay in the cytosol class,
    as free ones do.
    """
    s, rng = cv.style, cv.rng
    length = rng.uniform(35.0, 100.0)
    pts = smooth_curve(rng, (cy, cx), rng.uniform(0, 2 * np.pi), length, rng.uniform(0.03, 0.08))
    pts -= pts[len(pts) // 2] - (cy, cx)
    sheet = rng.random() < 0.4
    half = rng.uniform(2.4, 3.2) if sheet else rng.uniform(1.2, 1.6)
    if not sheet:  # tubules form a network: up to two side branches leave at 40-80 degrees
        pieces = [pts]
        for _ in range(rng.binomial(2, 0.4)):
            k = int(rng.integers(len(pts) // 5, 4 * len(pts) // 5))
            tangent = np.arctan2(*(pts[k + 1] - pts[k - 1]))
            heading = tangent + rng.choice([-1.0, 1.0]) * rng.uniform(0.7, 1.4)
            pieces.append(smooth_curve(rng, tuple(pts[k]), heading, rng.uniform(15.0, 45.0), 0.06))
        pts = np.concatenate(pieces)
    found = curve_distance(cv.shape, pts, half + 6.0)
    if found is None:
        return False
    p, dist = found
    d = dist - half
    # Paint only over cytosol, and drop the slivers (< 12 px) left where the curve grazes a body.
    region = (d < 0) & cv.cytosol(p)
    labels, n = ndi_label(region)
    if n == 0:
        return False
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= 12
    keep[0] = False
    region = keep[labels]
    if not region.any():
        return False
    free = binary_dilation(region) & cv.cytosol(p)
    memb = s.membrane_level + 0.02
    if sheet:
        lumen = s.cytosol_level - 0.12 + 0.5 * s.grain * cv.fine[p.sl]
        value = lumen + np.clip(1.3 - np.abs(dist - (half - 0.9)), 0.0, 1.0) * (memb - lumen)
        nrm = curve_normals(pts)
        step = max(1, int(4.5 / 0.5))
        sel = np.arange(0, len(pts), step)
        sel = sel[rng.random(len(sel)) < 0.7]
        offset = (half + 1.8) * rng.choice([-1.0, 1.0], (len(sel), 1))
        ribo = pts[sel] + offset * nrm[sel]
        if len(ribo):
            found_r = curve_distance(cv.shape, ribo, 2.0)
            if found_r is not None:
                pr, dr = found_r
                dot = ramp(dr - 0.9) * cv.cytosol(pr)
                cv.paint(pr, dot, s.membrane_level + 0.05)
    else:
        value = memb
    cv.paint(p, ramp(d) * free, value, ER, region)
    return True


def _vesicle_value(cv: Canvas, d: np.ndarray, dense: bool) -> np.ndarray:
    """Grey levels of a vesicle at signed distance ``d``: 1.5 px dark membrane around a clear or
    dense core."""
    s = cv.style
    core = (s.membrane_level + 0.12) if dense else (s.cytosol_level + 0.1)
    rim = np.clip(np.minimum(-d, d + 1.5) + 0.5, 0.0, 1.0)
    return core + rim * (s.membrane_level - core)


def draw_vesicle(cv: Canvas, cy: float, cx: float) -> bool:
    """Small round body (radius 2.2-4.5 px): dark membrane, clear core, dense core in 1 of 6."""
    rng = cv.rng
    r = rng.uniform(2.2, 4.5)
    p = patch_around(cv.shape, cy, cx, r + 3)
    if p is None:
        return False
    d = np.sqrt((p.y - cy) ** 2 + (p.x - cx) ** 2) - r
    if not cv.is_free(p, d < 1.5):
        return False
    cv.paint(p, ramp(d), _vesicle_value(cv, d, rng.random() < 1 / 6), VESICLE, d < 0)
    return True


def draw_golgi(cv: Canvas, cy: float, cx: float) -> bool:
    """A stack of 3-6 curved parallel cisternae centred at (cy, cx), vesicles at the ends.

    Cisterna j is the arc at radius R_j = R_0 + j * spacing around a common centre of curvature,
    of half-length L_j (longest in the middle of the stack), drawn ``w`` px thick with swollen rims.
    """
    s, rng = cv.style, cv.rng
    sc = s.organelle_scale
    n = int(rng.integers(3, 7))
    spacing = rng.uniform(4.3, 5.5)
    w = rng.uniform(2.3, 3.0)
    r0 = rng.uniform(18.0, 45.0) * sc
    base_len = rng.uniform(11.0, 19.0) * sc
    psi = rng.uniform(-np.pi, np.pi)
    dist_c = r0 + (n - 1) * spacing / 2
    oy, ox = cy - dist_c * np.sin(psi), cx - dist_c * np.cos(psi)
    p = patch_around(cv.shape, cy, cx, base_len * 1.2 + n * spacing + 10)
    if p is None:
        return False
    ry, rx = p.y - oy, p.x - ox
    r = np.sqrt(ry * ry + rx * rx)
    phi = (np.arctan2(ry, rx) - psi + np.pi) % (2 * np.pi) - np.pi
    d_stack = np.full(p.shape, np.inf, dtype=np.float32)
    ends: list[tuple[float, float, float]] = []  # (row, col, outward angle)
    mid = (n - 1) / 2
    for j in range(n):
        rj = r0 + j * spacing
        lj = base_len * (1.0 - 0.35 * abs(j - mid) / max(mid, 1.0)) * rng.uniform(0.85, 1.15)
        half_angle = lj / rj
        on_arc = np.abs(phi) <= half_angle
        d_ends = []
        for sign in (-1.0, 1.0):
            ang = psi + sign * half_angle
            ey, ex = oy + rj * np.sin(ang), ox + rj * np.cos(ang)
            d_end = np.sqrt((p.y - ey) ** 2 + (p.x - ex) ** 2)
            d_ends.append(d_end)
            d_stack = np.minimum(d_stack, d_end - (w / 2 + rng.uniform(0.3, 1.3)))  # swollen rim
            ends.append((ey, ex, ang + sign * np.pi / 2))
        dj = np.where(on_arc, np.abs(r - rj), np.minimum(*d_ends))
        d_stack = np.minimum(d_stack, dj - w / 2)
    d_ves = np.full(p.shape, np.inf, dtype=np.float32)
    for ey, ex, out in ends:
        for _ in range(rng.binomial(2, 0.4)):
            off = rng.uniform(4.0, 7.0)
            vy = ey + off * np.sin(out) + rng.normal(0, 1.5)
            vx = ex + off * np.cos(out) + rng.normal(0, 1.5)
            d_ves = np.minimum(d_ves, np.sqrt((p.y - vy) ** 2 + (p.x - vx) ** 2) - rng.uniform(1.8, 2.8))
    d_all = np.minimum(d_stack, d_ves)
    if not cv.is_free(p, d_all < 3.0):
        return False
    value = np.full(p.shape, s.membrane_level + 0.06, dtype=np.float32)
    value = np.where(d_ves < d_stack, _vesicle_value(cv, d_ves, False), value)
    # The cytosol between cisternae is a little lighter than elsewhere.
    between = (np.abs(phi) * r < base_len) & (r > r0) & (r < r0 + (n - 1) * spacing)
    cv.paint(p, 0.5 * between * cv.cytosol(p), s.cytosol_level + 0.06)
    cv.paint(p, ramp(d_all), value, GOLGI, d_all < 0)
    return True
