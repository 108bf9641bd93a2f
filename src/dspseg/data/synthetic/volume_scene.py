"""The 3D scene of a synthetic FIB-SEM volume: cells and organelles as bodies in voxel space.

Everything is planned once, analytically, before any voxel is drawn (:func:`plan_volume`), so any
z-slab can be rendered on its own (:mod:`.volume_render`) and sections change smoothly along every
axis. Coordinates are voxels ``(z, y, x)`` (isotropic). The pieces are the 2D generator's, lifted:

* cells: centres on a jittered cubic lattice of pitch ``2 R s``; a voxel belongs to the cell with
  the smallest ``rho = |p - c| / R`` when ``rho`` is below the reach and the runner-up is farther
  than the cleft width (``(rho_2 - rho_1) R > gap``); the plasma membrane is the band of the cell
  within ``pm_width`` of that boundary, measured as ``min(((rho_2 - rho_1) R - gap) / 2, (reach - rho_1) R)``;
* nuclei: rotated ellipsoids (one per cell with probability ``nucleus_prob``);
* mitochondria: prolate ellipsoids with cristae as planes across their long axis (or, in one of
  four, concentric shells); lipid droplets and vesicles: spheres;
* ER: tubules along smooth 3D curves that run mostly parallel to the sections, as in FIB-SEM;
  only their centre is placed like a body: the tubule weaves between the others (painted over
  cytosol only, last).

A body is accepted only where it fits: inside one cell, clear of its membrane and nucleus, and not
overlapping another body (bounding spheres), so painting in order never stacks organelles. Every
class is drawn in every volume (the 2D ``*_presence`` rolls are per image; in a volume, sections
without a class come from where the bodies are); counts are ``rate * sections / DEPTH[kind]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dspseg.data.synthetic.style import GroupStyle

#: organelle counts per volume: rate (per 128 x 128 section, as in GroupStyle) * sections / DEPTH
DEPTH = {"mito": 16.0, "er": 3.0, "vesicle": 8.0, "lipid": 16.0}


def rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation (3, 3); its rows are the body's axes."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))[:, None]


def waves(rng: np.random.Generator, n: int, period: tuple[float, float]) -> np.ndarray:
    """``n`` random plane waves as rows (ky, kz, kx..., phase): wave vector (3) and phase (1)."""
    direction = rng.standard_normal((n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    k = direction * (2 * np.pi / rng.uniform(*period, (n, 1)))
    return np.concatenate([k, rng.uniform(0, 2 * np.pi, (n, 1))], axis=1).astype(np.float32)


@dataclass
class Body:
    """An ellipsoid (or sphere, or curve) with its kind, centre (z, y, x), axes (rows), semi-axes and
    the random numbers that shape it (``extra``)."""

    kind: str
    centre: np.ndarray
    axes: np.ndarray
    semi: np.ndarray
    extra: dict = field(default_factory=dict)

    @property
    def radius(self) -> float:
        return float(self.semi.max())


@dataclass
class VolumeScene:
    """What :func:`.volume_render.render_slab` draws: ``shape`` (Z, Y, X), style, cells, bodies."""

    shape: tuple[int, int, int]
    style: GroupStyle
    seed: int
    cells: np.ndarray  # (n, 3) centres
    radii: np.ndarray  # (n,)
    gap: float
    reach: float
    bodies: list[Body]
    coarse: np.ndarray  # plane waves (n, 4) of the patchy texture, periods 12-30 px
    smooth: np.ndarray  # plane waves of the slow outline field, periods 60-160 px
    drift: np.ndarray  # plane waves of the intensity drift, periods 150-400 px


def _cells(shape: tuple[int, int, int], s: GroupStyle, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pitch = 2.0 * s.cell_radius * s.cell_spacing
    axes = [np.arange(-pitch, n + pitch, pitch) + rng.uniform(0, pitch) for n in shape]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    pts = pts + rng.normal(0, 0.12 * pitch, pts.shape)
    return pts, s.cell_radius * rng.uniform(0.85, 1.15, len(pts))


def cell_depth(scene: VolumeScene, p: np.ndarray) -> tuple[int, float]:
    """The cell a point (z, y, x) lies in and its depth (px) below the cell's boundary (< 0 outside)."""
    rho = np.linalg.norm(scene.cells - p, axis=1) / scene.radii
    first, second = np.argsort(rho)[:2]
    depth = min(((rho[second] - rho[first]) * scene.radii[first] - scene.gap) / 2,
                (scene.reach - rho[first]) * scene.radii[first])
    return int(first), float(depth)


def _fits(scene: VolumeScene, c: np.ndarray, r: float, nuclei: dict[int, Body]) -> bool:
    cell, depth = cell_depth(scene, c)
    if depth < r + scene.style.pm_width + 2:
        return False
    nuc = nuclei.get(cell)
    if nuc is not None and np.linalg.norm((nuc.axes @ (c - nuc.centre)) / (nuc.semi + r + 4)) < 1:
        return False
    return all(np.linalg.norm(b.centre - c) > b.radius + r + 2 for b in scene.bodies if b.kind != "nucleus")


def _er_curve(rng: np.random.Generator, start: np.ndarray, length: float) -> np.ndarray:
    """Points (m, 3) 1 px apart along a smooth curve mostly parallel to the sections."""
    heading, slope, turn = rng.uniform(0, 2 * np.pi), rng.normal(0, 0.04), rng.uniform(0.03, 0.08)
    steps = np.arange(int(length))
    angle = heading + np.cumsum(rng.normal(0, turn, len(steps)))
    dz = np.cumsum(np.full(len(steps), slope) + rng.normal(0, 0.01, len(steps)))
    pts = np.stack([dz, np.cumsum(np.sin(angle)), np.cumsum(np.cos(angle))], 1)
    return pts - pts[len(pts) // 2] + start


def plan_volume(shape: tuple[int, int, int], style: GroupStyle, seed: int) -> VolumeScene:
    """Draw every cell and organelle of a volume of ``shape`` (Z, Y, X) from ``seed``."""
    rng = np.random.default_rng(seed)
    s = style
    cells, radii = _cells(shape, s, rng)
    corner = np.sqrt(3.0) * s.cell_spacing  # rho at the corners of a cubic packing
    reach = float(max(min(1.0, corner - 0.05), corner - s.ecs_pocket / s.cell_radius))
    scene = VolumeScene(tuple(shape), s, int(seed), cells, radii, float(rng.uniform(3.0, 6.0)), reach, [],
                        waves(rng, 12, (12.0, 30.0)), waves(rng, 6, (60.0, 160.0)), waves(rng, 3, (150.0, 400.0)))
    nuclei: dict[int, Body] = {}
    for k, (c, radius) in enumerate(zip(cells, radii)):
        if rng.random() < s.nucleus_prob:
            a = float(np.clip(radius * rng.uniform(0.35, 0.5), 20.0, 110.0))
            semi = np.array([a, a * rng.uniform(0.75, 0.95), a * rng.uniform(0.7, 0.9)])
            centre = c + rng.normal(0, 0.1 * radius, 3)
            if cell_depth(scene, centre)[1] > a + 8:
                nuclei[k] = Body("nucleus", centre, rotation(rng), semi, {"harm": rng.normal(0, 1, 4)})
    scene.bodies.extend(nuclei.values())
    volume = np.array(shape, dtype=float)
    sections = shape[1] * shape[2] / 128.0 ** 2 * shape[0]

    def place(kind: str, rate: float, make) -> None:
        n = int(rng.poisson(rate * sections / DEPTH[kind]))
        for _ in range(n):
            for _ in range(10):
                body = make(rng.uniform(0, 1, 3) * volume)
                if body is not None and _fits(scene, body.centre, body.radius, nuclei):
                    scene.bodies.append(body)
                    break

    o = s.organelle_scale
    place("mito", s.mito_rate, lambda c: Body(
        "mito", c, rotation(rng), np.array([rng.uniform(9, 19) * o, rng.uniform(5.5, 8.5) * o, rng.uniform(5, 8) * o]),
        {"spacing": rng.uniform(3.8, 5.0), "phase": rng.uniform(0, 1), "curled": rng.random() < 0.25,
         "extent": np.where(rng.random(64) < 0.3, 2.0, rng.uniform(0.9, 1.6, 64)), "side": rng.choice([-1.0, 1.0], 64)}))
    place("lipid", s.lipid_rate, lambda c: Body(
        "lipid", c, np.eye(3), np.full(3, rng.uniform(4.5, 10.0) * o)))
    place("er", s.er_rate, lambda c: Body(
        "er", c, np.eye(3), np.full(3, 1.0), {"pts": _er_curve(rng, c, rng.uniform(30, 90)), "half": rng.uniform(1.2, 1.6)}))
    place("vesicle", s.vesicle_rate, lambda c: Body(
        "vesicle", c, np.eye(3), np.full(3, rng.uniform(2.2, 4.5)), {"dense": rng.random() < 1 / 6}))
    return scene
