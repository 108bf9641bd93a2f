"""Render one z-slab of a :class:`~.volume_scene.VolumeScene`: grey levels, then the detector.

A slab ``[z0, z1)`` is drawn on planes ``z0 - HALO .. z1 + HALO`` so that the blurs see their
neighbours, then cut back; every random field is tied to the volume, not to the slab (plane-wave
textures are analytic; the granular texture and the detector noise of plane ``z`` come from their own
seed ``(seed, z)``), so the voxels do not depend on how the volume is cut into slabs. Grey levels
follow the 2D generator (:mod:`.scene`, :mod:`.bodies`, :mod:`.membranes`); the recorded volume is
the 2D detector model per plane (:func:`.imaging.record`, drift and curtaining off) applied to
``G_b * x * (1 + a D)`` with ``G_b`` a 3D Gaussian blur and ``D`` a 3D drift field.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from scipy.spatial import cKDTree

from dspseg.data.synthetic.bodies import _band
from dspseg.data.synthetic.geometry import ramp
from dspseg.data.synthetic.imaging import record
from dspseg.data.synthetic.style import (CYTOSOL, ER, EXTRACELLULAR, LIPID, MITO, NUCLEUS, PLASMA_MEMBRANE,
                                         VESICLE)
from dspseg.data.synthetic.volume_scene import Body, VolumeScene

HALO = 8
FINE_SIGMA = 0.7
_KIND = {"nucleus": NUCLEUS, "mito": MITO, "lipid": LIPID, "vesicle": VESICLE, "er": ER}


def wave_field(w: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sum of plane waves ``cos(k . p + phase)`` scaled to unit standard deviation, broadcast."""
    out = sum(np.cos(k[0] * z + k[1] * y + k[2] * x + k[3]) for k in w)
    return (out * np.float32(np.sqrt(2.0 / len(w)))).astype(np.float32)


def fine_texture(seed: int, planes: range, shape: tuple[int, int]) -> np.ndarray:
    """Granular texture (D, Y, X): per-plane white noise blurred in 3D, unit standard deviation."""
    noise = np.stack([np.random.default_rng([seed, 1, z + (1 << 20)]).standard_normal(shape, np.float32)
                      for z in planes])
    delta = np.zeros(33)
    delta[16] = 1.0
    norm = float(np.sqrt((gaussian_filter1d(delta, FINE_SIGMA) ** 2).sum())) ** 3
    return gaussian_filter(noise, FINE_SIGMA) / np.float32(norm)


class Slab:
    """Grey levels ``img`` and classes ``mask`` (D, Y, X) of planes ``z0 - HALO .. z1 + HALO``."""

    def __init__(self, scene: VolumeScene, z0: int, z1: int):
        self.scene, self.s = scene, scene.style
        self.planes = range(z0 - HALO, z1 + HALO)
        _, ny, nx = scene.shape
        self.z = np.arange(self.planes.start, self.planes.stop, dtype=np.float32)[:, None, None]
        self.y = np.arange(ny, dtype=np.float32)[None, :, None]
        self.x = np.arange(nx, dtype=np.float32)[None, None, :]
        shape = (len(self.planes), ny, nx)
        self.fine = fine_texture(scene.seed, self.planes, (ny, nx))
        self.coarse = wave_field(scene.coarse, self.z, self.y, self.x)
        self.img = np.zeros(shape, np.float32)
        self.mask = np.zeros(shape, np.uint8)

    def cells(self) -> None:
        """Cytosol, extracellular space and plasma membranes (see the scene's docstring)."""
        sc, s = self.scene, self.s
        best = np.full(self.img.shape, np.inf, np.float32)
        second = np.full(self.img.shape, np.inf, np.float32)
        radius = np.zeros(self.img.shape, np.float32)
        zc = (self.planes.start + self.planes.stop) / 2
        near = np.abs(sc.cells[:, 0] - zc) < len(self.planes) / 2 + 1.3 * sc.radii
        for (cz, cy, cx), r in zip(sc.cells[near], sc.radii[near]):
            rho = np.sqrt((self.z - cz) ** 2 + (self.y - cy) ** 2 + (self.x - cx) ** 2) / np.float32(r)
            closer = rho < best
            np.minimum(second, np.where(closer, best, rho), out=second)
            np.copyto(radius, np.float32(r), where=closer)
            np.copyto(best, rho, where=closer)
        best += 0.05 * wave_field(sc.smooth, self.z, self.y, self.x)
        depth = np.minimum(((second - best) * radius - sc.gap) / 2, (sc.reach - best) * radius)
        inside = depth > 0
        specks = np.clip((-self.fine - 1.8) * 1.5, 0.0, 1.0)
        cyt = s.cytosol_level + s.grain * self.fine + 0.012 * self.coarse - 0.12 * specks
        ecs = s.extracellular_level + 0.012 * self.coarse + 0.3 * s.grain * self.fine
        self.img[:] = np.where(inside, cyt, ecs)
        self.img += np.clip(s.pm_width + 0.5 - depth, 0.0, 1.0) * inside * (s.membrane_level - self.img)
        self.mask[:] = np.where(inside, np.where(depth <= s.pm_width, PLASMA_MEMBRANE, CYTOSOL), EXTRACELLULAR)

    def box(self, b: Body, reach: float) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """The slab's part of the body's bounding box and the offsets (3, ...) from its centre."""
        lo = np.floor(b.centre - reach).astype(int) - (self.planes.start, 0, 0)
        hi = np.ceil(b.centre + reach).astype(int) + 1 - (self.planes.start, 0, 0)
        lo, hi = np.maximum(lo, 0), np.minimum(hi, self.img.shape)
        if (hi <= lo).any():
            return None
        sl = tuple(slice(a, c) for a, c in zip(lo, hi))
        grid = np.stack(np.meshgrid(*[np.arange(a, c, dtype=np.float32) for a, c in zip(lo, hi)], indexing="ij"))
        grid[0] += self.planes.start
        return sl, grid - b.centre.astype(np.float32)[:, None, None, None]

    def body(self, b: Body) -> None:
        """Paint one body over the plain cytosol in its box."""
        s = self.s
        found = self.box(b, (b.radius + 3) if b.kind != "er" else float(np.abs(b.extra["pts"] - b.centre).max()) + 3)
        if found is None:
            return
        sl, off = found
        fine = self.fine[sl]
        if b.kind == "er":
            dist, _ = cKDTree(b.extra["pts"] - b.centre).query(off.reshape(3, -1).T, distance_upper_bound=4.0)
            d = np.minimum(dist, 4.0).reshape(off.shape[1:]).astype(np.float32) - b.extra["half"]
            value = np.float32(s.membrane_level + 0.02)
        else:
            q = np.einsum("ij,j...->i...", b.axes.astype(np.float32), off)
            r = np.sqrt((off ** 2).sum(0))
            rn = np.sqrt(((q / b.semi.astype(np.float32)[:, None, None, None]) ** 2).sum(0))
            d = r * (1 - 1 / np.maximum(rn, 1e-3))  # radial distance to the surface, < 0 inside
            value = self._value(b, d, q, fine, sl)
        free = self.mask[sl] == CYTOSOL
        view = self.img[sl]
        view += ramp(d, 0.5 if b.kind == "lipid" else 1.0) * free * (value - view)
        self.mask[sl][(d < 0) & free] = _KIND[b.kind]

    def _value(self, b: Body, d: np.ndarray, q: np.ndarray, fine: np.ndarray, sl: tuple) -> np.ndarray:
        s = self.s
        if b.kind == "nucleus":
            coarse = self.coarse[sl]
            value = s.cytosol_level + s.nucleus_level + 0.8 * s.grain * fine + 0.015 * coarse
            depth = -d - 6.0
            hc = np.maximum(1 / (1 + np.exp(-((4.0 + 2.5 * coarse) - depth) / 0.8)),
                            1 / (1 + np.exp(-(coarse - 1.8) / 0.2)) * (depth > 4.0))
            value = value + hc * (s.membrane_level + 0.16 + 0.6 * s.grain * fine - value)
            value = value + _band(d, 4.2, 6.2) * (s.membrane_level - value)
            value = value + _band(d, 2.2, 4.2) * (s.cytosol_level - 0.03 - value)
            return value + _band(d, 0.0, 2.2) * (s.membrane_level - value)
        if b.kind == "mito":
            e = b.extra
            matrix = s.cytosol_level - 0.11 + s.grain * fine
            if e["curled"]:
                phase = (-d - 3.0) / e["spacing"]
                reach = d < -3.0
            else:
                phase = q[0] / e["spacing"] + e["phase"]
                k = np.clip(np.rint(phase).astype(np.int64) + 32, 0, 63)
                reach = e["side"][k] * q[1] / b.semi[1] + 1.0 < e["extent"][k]
            cristae = np.clip(1.1 - np.abs(phase - np.rint(phase)) * e["spacing"], 0.0, 1.0) * reach * (d < -1.5)
            value = matrix + cristae * (s.membrane_level + 0.05 - matrix)
            return value + _band(d, 0.0, 2.0) * (s.membrane_level - value)
        if b.kind == "lipid":
            return s.membrane_level + 0.06 + 0.008 * self.coarse[sl]
        core = (s.membrane_level + 0.12) if b.extra["dense"] else (s.cytosol_level + 0.1)
        return core + np.clip(np.minimum(-d, d + 1.5) + 0.5, 0.0, 1.0) * (s.membrane_level - core)


ORDER = ("nucleus", "mito", "lipid", "vesicle", "er")


def render_slab(scene: VolumeScene, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (z1 - z0, Y, X) uint8 and class ids (same shape, uint8 into SYNTH_CLASSES) of a slab."""
    slab = Slab(scene, z0, z1)
    slab.cells()
    for kind in ORDER:
        for b in scene.bodies:
            if b.kind == kind:
                slab.body(b)
    s = scene.style
    clean = gaussian_filter(slab.img, s.blur, mode="nearest") if s.blur > 0 else slab.img
    clean = clean * (1.0 + s.drift * wave_field(scene.drift, slab.z, slab.y, slab.x))
    flat = dataclasses.replace(s, drift=0.0, curtaining=0.0)
    image = np.stack([record(clean[k], flat, np.random.default_rng([scene.seed, 2, z + (1 << 20)]))
                      for k, z in enumerate(slab.planes) if z0 <= z < z1])
    return image, slab.mask[HALO:HALO + z1 - z0].copy()
