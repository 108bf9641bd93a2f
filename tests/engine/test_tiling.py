"""Sliding-window inference: equality with whole-image inference, coverage, bounded tile batches."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from dspseg.engine.tiling import gaussian_window, predict_tiled, tile_starts
from dspseg.models import build_model


class Recorder(nn.Module):
    """Wraps a model and records the shape of every batch it is given."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@given(length=st.integers(1, 300), tile=st.integers(1, 64), overlap=st.floats(0.0, 0.95))
@settings(max_examples=200, deadline=None)
def test_tile_starts_cover_every_position(length: int, tile: int, overlap: float) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert starts[-1] == max(length - tile, 0)
    stride = max(1, int(tile * (1 - overlap)))
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))
    covered = set().union(*(range(s, s + tile) for s in starts))
    assert covered >= set(range(length))


def test_gaussian_window_positive_and_peaked() -> None:
    w = gaussian_window(32)
    assert w.shape == (32, 32) and w.min() >= 1e-3 and w.max() == 1
    assert w[16, 16] > w[16, 0] and torch.allclose(w, w.T)


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_equals_whole_image_for_translation_equivariant_model(overlap: float) -> None:
    conv = nn.Conv2d(2, 3, 1)
    model = Recorder(conv)
    image = torch.randn(2, 70, 45)  # non-square, larger than one tile on both axes
    probs = predict_tiled(model, image, tile=32, overlap=overlap, batch_size=3)
    with torch.no_grad():
        whole = torch.softmax(conv(image[None]), dim=1)[0]
    assert probs.shape == (3, 70, 45) and probs.dtype == torch.float32
    assert torch.allclose(probs, whole, atol=1e-5)
    # bounded memory: the model only ever sees at most batch_size tiles of tile × tile
    n_windows = len(tile_starts(70, 32, overlap)) * len(tile_starts(45, 32, overlap))
    assert n_windows > 1
    assert len(model.shapes) == math.ceil(n_windows / 3)
    assert all(s[0] <= 3 and s[1:] == (2, 32, 32) for s in model.shapes)


def test_every_pixel_covered_with_non_equivariant_model() -> None:
    model = build_model(1, 4, width=4, levels=3)
    image = torch.randn(1, 50, 37)
    probs = predict_tiled(model, image, tile=16, overlap=0.25, batch_size=4)
    assert probs.shape == (4, 50, 37) and torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(0), torch.ones(50, 37), atol=1e-5)
    assert probs.min() >= 0


def test_image_smaller_than_tile_is_padded() -> None:
    conv = nn.Conv2d(1, 2, 1)
    model = Recorder(conv)
    image = torch.randn(1, 10, 7)
    probs = predict_tiled(model, image, tile=32)
    with torch.no_grad():
        whole = torch.softmax(conv(image[None]), dim=1)[0]
    assert probs.shape == (2, 10, 7) and torch.allclose(probs, whole, atol=1e-6)
    assert model.shapes == [(1, 1, 32, 32)]


def test_dict_output_model_and_training_mode_restored() -> None:
    model = build_model(1, 3, width=4, levels=2, head="prototype", n_prototypes=2, embed_dim=4)
    model.train()
    probs = predict_tiled(model, torch.randn(1, 20, 30), tile=16, device="cpu")
    assert probs.shape == (3, 20, 30) and model.training
    assert torch.allclose(probs.sum(0), torch.ones(20, 30), atol=1e-5)


def test_bad_arguments() -> None:
    conv = nn.Conv2d(1, 2, 1)
    with pytest.raises(ValueError, match=r"image must be a tensor \(Cin, H, W\), got \(1, 1, 8, 8\)"):
        predict_tiled(conv, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled(conv, torch.zeros(1, 8, 8), overlap=1.0)
    with pytest.raises(ValueError, match="tile"):
        predict_tiled(conv, torch.zeros(1, 8, 8), tile=0)
    with pytest.raises(ValueError, match="batch_size"):
        predict_tiled(conv, torch.zeros(1, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match="must return logits"):
        predict_tiled(nn.Conv2d(1, 2, 3), torch.zeros(1, 8, 8), tile=8)
