"""Helpers shared by the advisor tests: hand-made class probabilities."""

from __future__ import annotations

import numpy as np


def one_hot(labels: np.ndarray, n: int, confidence: float = 0.98) -> np.ndarray:
    """(C, H, W) probabilities: ``confidence`` on the label, the rest spread over the others."""
    p = np.full((n, *labels.shape), (1 - confidence) / (n - 1), np.float32)
    np.put_along_axis(p, labels[None], confidence, axis=0)
    return p
