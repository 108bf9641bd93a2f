"""The model's beliefs about candidate images (dspseg.advise.beliefs): probabilities, restriction, embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from dspseg.advise.beliefs import entropy, restrict


def test_beliefs_of_images_larger_than_a_tile(tiny):
    import torch

    from dspseg.advise.beliefs import _predict
    from dspseg.engine.checkpoint import load_run

    loaded = load_run(tiny[0], device="cpu")
    images = [torch.randn(1, 48, 40), torch.randn(1, 24, 24)]
    (big, e_big), (small, e_small) = _predict(loaded.model, images, tile=32)  # the first is tiled
    assert big.shape == (len(loaded.classes), 48, 40) and small.shape == (len(loaded.classes), 24, 24)
    assert np.allclose(big.sum(0), 1, atol=1e-4) and np.allclose(small.sum(0), 1, atol=1e-4)
    assert np.linalg.norm(e_big) == pytest.approx(1, abs=1e-4) and np.linalg.norm(e_small) == pytest.approx(1, abs=1e-4)


def test_restriction_keeps_only_the_admissible_classes():
    probs = np.array([[[0.5]], [[0.3]], [[0.2]]], np.float32)
    allowed = np.array([[[True]], [[False]], [[True]]])
    assert np.allclose(restrict(probs, allowed)[:, 0, 0], [0.5 / 0.7, 0, 0.2 / 0.7])
    none = np.zeros_like(allowed)
    assert np.allclose(restrict(probs, none), probs)  # nothing admissible has mass: the model's own belief
    assert entropy(np.array([[[1.0]], [[0.0]]]))[0, 0] == pytest.approx(0.0)
    assert entropy(np.full((4, 1, 1), 0.25))[0, 0] == pytest.approx(np.log(4))
