"""One colour per class, everywhere: overlays, the predictions panel and NGFF label images.

:func:`palette` is the table; :func:`image_label_colors` writes it as an NGFF ``image-label``
``colors`` list (opaque RGBA), so a label volume dspseg writes (a prediction, the synthetic volume)
shows the same colours as its overlays. matplotlib is imported inside (``--help`` stays instant).

    >>> palette(3)[0].tolist()
    [128, 128, 128]
    >>> image_label_colors(2)[1]["label-value"]
    1
"""

from __future__ import annotations

from typing import Any

import numpy as np


def palette(n_classes: int) -> np.ndarray:
    """(C, 3) uint8 colours: class 0 grey, then matplotlib's tab10 colours without its grey (which
    class 0 has), then tab20's light shades without light grey, then tab20b (cycled)."""
    from matplotlib import colormaps

    colours = ([colormaps["tab10"](i)[:3] for i in range(10) if i != 7]
               + [colormaps["tab20"](i)[:3] for i in range(1, 20, 2) if i != 15]
               + [colormaps["tab20b"](i)[:3] for i in range(20)])
    out = np.zeros((n_classes, 3), np.uint8)
    out[0] = (128, 128, 128)
    for c in range(1, n_classes):
        out[c] = np.round(np.array(colours[(c - 1) % len(colours)]) * 255)
    return out


def image_label_colors(n_classes: int) -> list[dict[str, Any]]:
    """The NGFF ``image-label`` ``colors`` entries of :func:`palette`: ``{"label-value": k, "rgba": [r, g, b, 255]}``."""
    return [{"label-value": k, "rgba": [*map(int, c), 255]} for k, c in enumerate(palette(n_classes))]
