"""Compact organelles: nucleus, mitochondrion, lipid droplet.

Each ``draw_*`` function tries to place one body at a given centre, returns ``False`` (drawing
nothing) when its footprint plus a margin is not plain cytosol, and otherwise paints grey levels
and class ids on the :class:`Canvas`. Shapes are wobbly ellipses (see ``ellipse_frame``); the
signed distance ``d`` to the outline (negative inside) drives every band: rims, envelopes, cristae.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from dspseg.data.synthetic.canvas import Canvas
from dspseg.data.synthetic.geometry import ellipse_frame, patch_around, ramp, wobble
from dspseg.data.synthetic.style import LIPID, MITO, NUCLEUS


def _band(d: np.ndarray, outer: float, inner: float) -> np.ndarray:
    """Coverage of the band ``-inner < d < -outer`` (depths in px below the outline), soft edges."""
    return np.clip(np.minimum(-outer - d, d + inner) + 0.5, 0.0, 1.0)


def draw_nucleus(cv: Canvas, cy: float, cx: float, radius: float) -> bool:
    """Nucleus of a cell of ``radius`` centred near (cy, cx): light nucleoplasm, peripheral
    heterochromatin patches, an optional nucleolus and the double envelope with pores.

    Envelope, from the outline inwards: outer membrane (0-2 px), perinuclear lumen (2-4 px), inner
    membrane (4-6 px). The envelope belongs to the nucleus class.
    """
    s, rng = cv.style, cv.rng
    a = float(np.clip(radius * rng.uniform(0.35, 0.5), 48.0, 110.0))
    b = a * rng.uniform(0.7, 0.95)
    theta = rng.uniform(0, np.pi)
    harm = wobble(rng, 0.06)
    for _ in range(4):
        p = patch_around(cv.shape, cy, cx, a * 1.25 + 8)
        if p is None:
            return False
        d, u, v = ellipse_frame(p, cy, cx, a, b, theta, harm)
        if cv.is_free(p, d < 6.0):
            break
        a, b = a * 0.85, b * 0.85
    else:
        return False
    fine, coarse = cv.fine[p.sl], cv.coarse[p.sl]
    value = s.cytosol_level + s.nucleus_level + 0.8 * s.grain * fine + 0.015 * coarse
    # Heterochromatin: a peripheral layer under the envelope whose thickness wanders from 0 to
    # ~12 px along the outline (smooth field), plus scattered interior clumps (coarse field).
    depth = -d - 6.0
    thick = 2.0 + 5.0 * cv.smooth[p.sl] + 1.5 * coarse
    rim = expit((thick - depth) / 0.8)
    clumps = expit((coarse - 1.8) / 0.2) * (depth > 4.0)
    hc = np.maximum(rim, clumps)
    value = value + hc * (s.membrane_level + 0.16 + 0.6 * s.grain * fine - value)
    if rng.random() < 0.4:  # nucleolus: dense, granular, roughly round
        na = a * rng.uniform(0.18, 0.3)
        off = rng.uniform(-0.35, 0.35, 2) * (a, b)
        dn, _, _ = ellipse_frame(p, cy + off[0], cx + off[1], na, na * rng.uniform(0.7, 1.0),
                                 rng.uniform(0, np.pi), wobble(rng, 0.15))
        nuc = ramp(dn, 2.0)
        value = value + nuc * (s.membrane_level + 0.12 + 1.5 * s.grain * fine - value)
    lumen_level = s.cytosol_level - 0.03
    value = value + _band(d, 4.2, 6.2) * (s.membrane_level - value)
    value = value + _band(d, 2.2, 4.2) * (lumen_level - value)
    value = value + _band(d, 0.0, 2.2) * (s.membrane_level - value)
    # Nuclear pores: short gaps where both membranes give way to a cytosol-grey channel.
    phi = np.arctan2(v / b, u / a)
    n_pores = rng.poisson(2 * np.pi * a / 60.0)
    envelope = (d > -6.2) & (d < 0)
    for centre in rng.uniform(-np.pi, np.pi, n_pores):
        gap = np.abs((phi - centre + np.pi) % (2 * np.pi) - np.pi) * (a + b) / 2
        value = np.where(envelope & (gap < 1.3), s.cytosol_level, value)
    cv.paint(p, ramp(d), value, NUCLEUS, d < 0)
    return True


def draw_mitochondrion(cv: Canvas, cy: float, cx: float) -> bool:
    """Dark-rimmed oval with a dense matrix and dark cristae: transverse lamellae (with wiggle,
    each crossing part or all of the width) or, in one of four, curled concentric cristae."""
    s, rng = cv.style, cv.rng
    a = rng.uniform(9.0, 19.0) * s.organelle_scale
    b = min(rng.uniform(5.5, 8.5) * s.organelle_scale, 0.9 * a)
    theta = rng.uniform(0, np.pi)
    p = patch_around(cv.shape, cy, cx, a * 1.15 + 4)
    if p is None:
        return False
    d, u, v = ellipse_frame(p, cy, cx, a, b, theta, wobble(rng, 0.05))
    if not cv.is_free(p, d < 3.0):
        return False
    fine = cv.fine[p.sl]
    matrix = s.cytosol_level - rng.uniform(0.08, 0.14) + s.grain * fine
    spacing = rng.uniform(3.8, 5.0)
    if rng.random() < 0.75:
        amp, freq = rng.uniform(0.3, 1.3), 2 * np.pi / rng.uniform(6.0, 14.0)
        phase = (u + amp * np.sin(v * freq + rng.uniform(0, 2 * np.pi))) / spacing + rng.uniform(0, 1)
        k = np.rint(phase)
        dist = np.abs(phase - k) * spacing
        n_k = int(np.ceil(a / spacing)) + 3
        idx = np.clip(k.astype(np.int64) + n_k, 0, 2 * n_k)
        extent = np.where(rng.random(2 * n_k + 1) < 0.3, 2.0, rng.uniform(0.9, 1.6, 2 * n_k + 1))
        side = rng.choice([-1.0, 1.0], 2 * n_k + 1)
        reach = side[idx] * v / b + 1.0 < extent[idx]
    else:
        phase = (-d - 3.0) / spacing
        dist = np.abs(phase - np.rint(phase)) * spacing
        phi = np.arctan2(v / b, u / a)
        reach = (np.sin(phi * rng.integers(2, 5) + rng.uniform(0, 2 * np.pi)) < 0.45) & (d < -3.0)
    cristae = np.clip(1.1 - dist, 0.0, 1.0) * reach * (d < -1.5)
    value = matrix + cristae * (s.membrane_level + 0.05 - matrix)
    value = value + _band(d, 0.0, 2.0) * (s.membrane_level - value)
    cv.paint(p, ramp(d), value, MITO, d < 0)
    return True


def draw_lipid_droplet(cv: Canvas, cy: float, cx: float) -> bool:
    """Dark, homogeneous, nearly circular body with a sharp (half-pixel) edge."""
    s, rng = cv.style, cv.rng
    r = rng.uniform(4.5, 10.0) * s.organelle_scale
    p = patch_around(cv.shape, cy, cx, r + 4)
    if p is None:
        return False
    d, _, _ = ellipse_frame(p, cy, cx, r, r * rng.uniform(0.9, 1.0), rng.uniform(0, np.pi), wobble(rng, 0.02))
    if not cv.is_free(p, d < 2.5):
        return False
    value = s.membrane_level + 0.06 + 0.008 * cv.coarse[p.sl]
    cv.paint(p, ramp(d, 0.5), value, LIPID, d < 0)
    return True
