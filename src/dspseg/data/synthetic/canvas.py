"""The drawing surface of one synthetic image: grey levels, class ids and shared textures.

Organelles are drawn in painter's order. Each one blends its grey levels into ``img`` with an
anti-aliased coverage ``alpha`` (img <- (1 - alpha) img + alpha value) and writes its class id into
``mask`` where its signed distance is negative. Bodies are only placed where their footprint (plus
a margin) is still plain cytosol, so organelles never overlap each other or leave their cell.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sp_fft

from dspseg.data.synthetic.geometry import Patch
from dspseg.data.synthetic.style import CYTOSOL, GroupStyle


def unit_noise(rng: np.random.Generator, shape: tuple[int, int],
               sigmas: tuple[float, ...]) -> list[np.ndarray]:
    """One white-noise image low-passed with a Gaussian of each of ``sigmas`` px, each field (H, W)
    rescaled to unit standard deviation. The blur is periodic and done in the Fourier domain,
    F^-1[ F[noise] * exp(-2 pi^2 sigma^2 |f|^2) ], so it costs the same at any sigma. Fields of one
    call are correlated; call again for independent ones."""
    h, w = shape
    spectrum = sp_fft.rfft2(rng.standard_normal(shape, dtype=np.float32))
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    f2 = fy * fy + fx * fx
    out = []
    for sigma in sigmas:
        field = sp_fft.irfft2(spectrum * np.exp(np.float32(-2 * np.pi ** 2 * sigma ** 2) * f2), s=shape)
        out.append((field / max(float(field.std()), 1e-6)).astype(np.float32))
    return out


class Canvas:
    """Grey levels ``img`` (H, W) float32 in [0, 1], class ids ``mask`` (H, W) uint8, and textures.

    ``fine`` (sigma 0.7 px) is the granular stain texture, ``coarse`` (sigma 3 px) the patchy one
    (chromatin clumps, uneven staining), ``smooth`` (sigma 10 px) bends cell outlines and varies the
    heterochromatin layer; all have unit standard deviation. ``window`` is the (row0, col0, row1,
    col1) part of the canvas that becomes the image; the rest is padding so that blur and objects
    cut by the border look the same as inside.
    """

    def __init__(self, shape: tuple[int, int], window: tuple[int, int, int, int], style: GroupStyle,
                 rng: np.random.Generator):
        self.shape = shape
        self.window = window
        self.style = style
        self.rng = rng
        self.img = np.zeros(shape, dtype=np.float32)
        self.mask = np.zeros(shape, dtype=np.uint8)
        (self.fine,) = unit_noise(rng, shape, (0.7,))
        self.coarse, self.smooth = unit_noise(rng, shape, (3.0, 10.0))

    def paint(self, p: Patch, alpha: np.ndarray, value: np.ndarray | float, label: int | None = None,
              region: np.ndarray | None = None) -> None:
        """Blend ``value`` into the patch with coverage ``alpha``; set ``label`` where ``region``."""
        view = self.img[p.sl]
        view += alpha * (value - view)
        if label is not None and region is not None:
            self.mask[p.sl][region] = label

    def is_free(self, p: Patch, footprint: np.ndarray) -> bool:
        """True when the footprint (h, w) is non-empty and covers only cytosol."""
        return bool(footprint.any()) and bool(np.all(self.mask[p.sl][footprint] == CYTOSOL))

    def cytosol(self, p: Patch) -> np.ndarray:
        """Boolean (h, w): pixels of the patch that are still plain cytosol."""
        return self.mask[p.sl] == CYTOSOL

    def random_point(self, margin: float = 6.0) -> tuple[float, float]:
        """A uniform position in the output window grown by ``margin`` px."""
        r0, c0, r1, c1 = self.window
        return (float(self.rng.uniform(r0 - margin, r1 + margin)),
                float(self.rng.uniform(c0 - margin, c1 + margin)))

    def random_cytosol_point(self, tries: int = 12) -> tuple[float, float] | None:
        """A position in the window that is still cytosol, or ``None`` after ``tries`` misses."""
        for _ in range(tries):
            y, x = self.random_point(0.0)
            iy, ix = min(int(y), self.shape[0] - 1), min(int(x), self.shape[1] - 1)
            if self.mask[iy, ix] == CYTOSOL:
                return y, x
        return None
