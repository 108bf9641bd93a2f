"""Weak and strong views of a batch through the model in one forward pass (FixMatch-style methods).

The weak view (flips, quarter turns, jitter 0.2) gives the supervised terms and the pseudo-labels;
the strong view (its own flips/turns on top, jitter 0.4, CutOut) is trained towards those
pseudo-labels moved by the strong geometry (:mod:`dspseg.data.augment`). Both views go through
the network as one batch of 2B images, which is faster than two forward passes.

Augmentation randomness comes from a generator seeded, every step, by a draw from torch's global
generator — which the trainer seeds and checkpoints — so a resumed run makes the same views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dspseg.data.augment import BatchGeometry, strong_view, weak_view
from dspseg.methods.base import TwoViewOptions, WeakViewOptions


@dataclass
class Views:
    """weak/strong: augmented batches; out_weak/out_strong: model outputs; geometry: weak → strong."""

    weak: dict[str, Any]
    strong: dict[str, Any]
    out_weak: dict[str, Tensor]
    out_strong: dict[str, Tensor]
    geometry: BatchGeometry


def step_generator() -> torch.Generator:
    """A fresh generator seeded from the (checkpointed) global torch RNG."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))


def weak_only(model: nn.Module, batch: dict[str, Any],
              options: WeakViewOptions | None = None) -> tuple[dict, dict[str, Tensor]]:
    """The weak view of ``batch`` (``options.weak_jitter``) and the model's outputs on it."""
    o = options or WeakViewOptions()
    weak, _ = weak_view(batch, step_generator(), o.weak_jitter)
    return weak, model(weak["image"])


def weak_and_strong(model: nn.Module, batch: dict[str, Any], options: TwoViewOptions | None = None) -> Views:
    """Both views through ``model`` as one batch; outputs split back per view.

    ``options`` (a method's options, any :class:`TwoViewOptions`) sets the jitter strengths and CutOut.
    """
    o = options or TwoViewOptions()
    gen = step_generator()
    weak, _ = weak_view(batch, gen, o.weak_jitter)
    strong, geo = strong_view(weak, gen, o.strong_jitter, o.cutout)
    b = batch["image"].shape[0]
    out = model(torch.cat([weak["image"], strong["image"]]))
    out_weak = {k: v[:b] for k, v in out.items()}
    out_strong = {k: v[b:] for k, v in out.items()}
    return Views(weak, strong, out_weak, out_strong, geo)
