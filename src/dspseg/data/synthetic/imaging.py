"""Image formation: turn drawn grey levels into a noisy 8-bit FIB-SEM-like section.

With x the drawn brightness (H, W) in [0, 1], the recorded image is

    y = Q( Poisson(N * m) / N + e ),   m = 0.5 + c * ((G_b * x)(1 + a D) - 0.5) + o + S,

where G_b is a Gaussian blur (sigma ``blur``), D a slow drift field (a few random plane waves of
period >= 150 px plus a linear ramp, unit scale) with amplitude a = ``drift``, c and o the
``contrast`` and ``brightness``, S the curtaining stripes (column offsets of amplitude
``curtaining``), N the dose ``photons``, e ~ N(0, ``read_noise``^2) and Q rounding to 0..255.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from dspseg.data.synthetic.style import GroupStyle


def drift_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Smooth field (H, W) of roughly unit amplitude: 3 long plane waves and a linear ramp."""
    h, w = shape
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(3):
        period = rng.uniform(150.0, 400.0)
        ang = rng.uniform(0, 2 * np.pi)
        ky, kx = 2 * np.pi * np.sin(ang) / period, 2 * np.pi * np.cos(ang) / period
        ph = rng.uniform(0, 2 * np.pi)
        # cos(ky y + kx x + ph) as a sum of two outer products (separable, cheap).
        field += np.cos(ky * y) * np.cos(kx * x + ph) - np.sin(ky * y) * np.sin(kx * x + ph)
    gy, gx = rng.normal(0, 1.0, 2) / max(h, w)
    return field / 3.0 + gy * (y - h / 2) + gx * (x - w / 2)


def curtain_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Vertical stripes (H, W) of unit standard deviation, fading slowly along the rows."""
    h, w = shape
    cols = gaussian_filter1d(rng.standard_normal(w), 0.8)
    cols /= max(float(cols.std()), 1e-6)
    fade = 0.75 + 0.25 * np.cos(np.linspace(0, rng.uniform(1, 3), h) + rng.uniform(0, 2 * np.pi))
    return (fade[:, None] * cols[None, :]).astype(np.float32)


def blur(img: np.ndarray, style: GroupStyle) -> np.ndarray:
    """The electron-probe blur G_b * x (same shape)."""
    return gaussian_filter(img, style.blur, mode="nearest") if style.blur > 0 else img


def record(clean: np.ndarray, style: GroupStyle, rng: np.random.Generator) -> np.ndarray:
    """Detector model applied to blurred grey levels ``clean`` (H, W); returns uint8 (H, W)."""
    m = clean * (1.0 + style.drift * drift_field(rng, clean.shape))
    m = 0.5 + style.contrast * (m - 0.5) + style.brightness
    if style.curtaining > 0:
        m = m + style.curtaining * curtain_field(rng, clean.shape)
    counts = rng.poisson(np.clip(m, 0.0, None) * style.photons)
    y = counts / style.photons + rng.normal(0.0, style.read_noise, clean.shape)
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)
