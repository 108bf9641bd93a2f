"""Compose one synthetic section: cells, then organelles in painter's order, then imaging.

Cells tile the plane like an epithelium: centres on a jittered, rotated hexagonal grid of pitch
2 R s (R = ``cell_radius``, s = ``cell_spacing``). With rho_i = |p - c_i| / R_i the normalised
distance to centre i (plus a smooth perturbation), a pixel lies in cell i when rho_i is the smallest,
rho_i is below a reach that leaves pockets of radius <= ``ecs_pocket`` where three cells meet, and
(rho_(2) - rho_i) R exceeds the gap width, so neighbouring cells are separated by a thin
extracellular cleft. The plasma membrane is the band of the cell within ``pm_width`` px of the
outside (Euclidean distance map). Organelles are then drawn in painter's order, each only where
plain cytosol is left, and the result goes through the imaging model of :mod:`.imaging`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import distance_transform_edt

from dspseg.data.synthetic.bodies import draw_lipid_droplet, draw_mitochondrion, draw_nucleus
from dspseg.data.synthetic.canvas import Canvas
from dspseg.data.synthetic.imaging import blur, record
from dspseg.data.synthetic.membranes import draw_er, draw_golgi, draw_vesicle
from dspseg.data.synthetic.style import CYTOSOL, EXTRACELLULAR, PLASMA_MEMBRANE, REFERENCE_AREA, GroupStyle

PAD = 20
"""Padding (px) drawn around the output window so blur and cut objects look right at the border."""


def _cell_centres(cv: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """Centres (n, 2) and radii (n,) of the cells that can reach the canvas."""
    s, rng = cv.style, cv.rng
    h, w = cv.shape
    pitch = 2.0 * s.cell_radius * s.cell_spacing
    reach = max(h, w) / 2 + 1.3 * pitch
    n = int(np.ceil(reach / pitch)) + 1
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    gy = i * pitch * np.sqrt(3) / 2
    gx = (j + 0.5 * (i % 2)) * pitch
    pts = np.stack([gy.ravel(), gx.ravel()], 1) + rng.uniform(0, pitch, 2)
    ang = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = pts @ rot.T + rng.normal(0, 0.08 * pitch, pts.shape) + (h / 2, w / 2)
    radii = s.cell_radius * rng.uniform(0.85, 1.15, len(pts))
    # Distance from each centre to the canvas rectangle; farther than 1.3 R cannot matter.
    out_y = np.maximum(np.abs(pts[:, 0] - h / 2) - h / 2, 0.0)
    out_x = np.maximum(np.abs(pts[:, 1] - w / 2) - w / 2, 0.0)
    keep = np.hypot(out_y, out_x) < 1.3 * radii
    return pts[keep], radii[keep]


def draw_cells(cv: Canvas) -> list[tuple[float, float, float]]:
    """Fill the canvas with extracellular space, cytosol and plasma membranes; return the cells
    (row, col, radius) that have any pixel on the canvas."""
    s, rng = cv.style, cv.rng
    centres, radii = _cell_centres(cv)
    y = np.arange(cv.shape[0], dtype=np.float32)[:, None]
    x = np.arange(cv.shape[1], dtype=np.float32)[None, :]
    # Track the smallest and second smallest rho^2 = |p - c_k|^2 / R_k^2 (monotone in rho).
    best = np.full(cv.shape, np.inf, dtype=np.float32)
    second = np.full(cv.shape, np.inf, dtype=np.float32)
    owner = np.zeros(cv.shape, dtype=np.int32)
    for k, ((cy, cx), r) in enumerate(zip(centres, radii)):
        rho2 = ((y - np.float32(cy)) ** 2 + (x - np.float32(cx)) ** 2) * np.float32(1.0 / r ** 2)
        closer = rho2 < best
        np.minimum(second, np.where(closer, best, rho2), out=second)
        np.copyto(owner, k, where=closer)
        np.copyto(best, rho2, where=closer)
    best = np.sqrt(best) + 0.05 * cv.smooth
    second = np.sqrt(second)
    gap = rng.uniform(3.0, 6.0)
    corner = 2.0 * s.cell_spacing / np.sqrt(3.0)  # rho at the corners of a regular hexagonal tiling
    reach = max(min(1.0, corner - 0.05), corner - s.ecs_pocket / s.cell_radius)
    inside = (best < reach) & ((second - best) * s.cell_radius > gap)
    cv.mask[:] = np.where(inside, CYTOSOL, EXTRACELLULAR)
    fine, coarse = cv.fine, cv.coarse
    specks = np.clip((-fine - 1.8) * 1.5, 0.0, 1.0)  # free ribosomes: the darkest grains
    cyt = s.cytosol_level + s.grain * fine + 0.012 * coarse - 0.12 * specks
    ecs = s.extracellular_level + 0.012 * coarse + 0.3 * s.grain * fine
    depth = distance_transform_edt(inside).astype(np.float32)
    cv.img[:] = np.where(inside, cyt, ecs)
    pm = np.clip(s.pm_width + 0.5 - depth, 0.0, 1.0) * inside
    cv.img += pm * (s.membrane_level - cv.img)
    cv.mask[inside & (depth <= s.pm_width)] = PLASMA_MEMBRANE
    present = np.unique(owner[inside])
    return [(float(centres[k, 0]), float(centres[k, 1]), float(radii[k])) for k in present]


def _count(rng: np.random.Generator, presence: float, rate: float, area: float) -> int:
    """Zero with probability 1 - ``presence``, else Poisson(rate * area * G) with G ~ Gamma(2, 1/2)
    (mean 1): counts vary a lot between images and a class is often missing entirely."""
    if rng.random() >= presence:
        return 0
    return int(rng.poisson(rate * area * rng.gamma(2.0, 0.5)))


def _place(cv: Canvas, draw: Callable[[Canvas, float, float], bool], count: int, tries: int = 8) -> None:
    """Draw ``count`` objects, each at the first of ``tries`` random cytosol positions that fits."""
    for _ in range(count):
        for _ in range(tries):
            at = cv.random_cytosol_point()
            if at is None or draw(cv, *at):
                break


def draw_scene(cv: Canvas) -> None:
    """Cells, nuclei, Golgi, mitochondria, lipid droplets, ER, vesicles - in that order."""
    s, rng = cv.style, cv.rng
    r0, c0, r1, c1 = cv.window
    area = (r1 - r0) * (c1 - c0) / REFERENCE_AREA
    for cy, cx, radius in draw_cells(cv):
        if rng.random() < s.nucleus_prob:
            off = rng.normal(0, 0.15 * radius, 2)
            draw_nucleus(cv, cy + off[0], cx + off[1], radius)
    if rng.random() < min(1.0, s.golgi_presence * area ** 0.5):
        _place(cv, draw_golgi, 1, tries=12)
    _place(cv, draw_mitochondrion, _count(rng, s.mito_presence, s.mito_rate, area))
    _place(cv, draw_lipid_droplet, _count(rng, s.lipid_presence, s.lipid_rate, area))
    _place(cv, draw_er, _count(rng, s.er_presence, s.er_rate, area), tries=1)
    _place(cv, draw_vesicle, _count(rng, s.vesicle_presence, s.vesicle_rate, area), tries=6)


def generate_image(size: int | tuple[int, int], group_style: GroupStyle,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic FIB-SEM-like section and its labels.

    ``size`` is ``S`` (square) or ``(H, W)``, each at least 16. Returns ``image`` (H, W) uint8 and
    ``mask`` (H, W) uint8 of class ids into ``SYNTH_CLASSES``. All randomness comes from ``rng``.
    """
    try:
        hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(v) for v in size)
    except (TypeError, ValueError):
        hw = ()
    if len(hw) != 2 or min(hw) < 16:
        raise ValueError(f"size must be an int or (height, width) with both >= 16, got {size!r}")
    if not isinstance(group_style, GroupStyle):
        raise TypeError(f"group_style must be a GroupStyle, got {type(group_style).__name__}")
    h, w = hw
    cv = Canvas((h + 2 * PAD, w + 2 * PAD), (PAD, PAD, PAD + h, PAD + w), group_style, rng)
    draw_scene(cv)
    clean = blur(cv.img, group_style)[PAD:PAD + h, PAD:PAD + w]
    image = record(clean, group_style, rng)
    return image, cv.mask[PAD:PAD + h, PAD:PAD + w].copy()
