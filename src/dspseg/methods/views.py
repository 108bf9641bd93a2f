"""The views a method trains on, built by the base for every method (:attr:`Method.views`).

* ``none``: the batch as is;
* ``weak``: flips, quarter turns, jitter 0.2 (:func:`dspseg.data.augment.weak_view`) — the supervised
  terms and the pseudo-labels come from it;
* ``weak+strong``: also the strong view on top of the weak one (its own flips/turns, jitter 0.4,
  CutOut), trained towards the weak view's pseudo-labels moved by the strong geometry. Both views go
  through the network as one batch of 2B images, which is faster than two forward passes.

A single view (``none``, ``weak``) plays both roles: ``strong`` is the same batch, ``out_strong``
the same outputs and ``geometry`` the identity, so a two-view formula on it is its one-view form.

Augmentation randomness comes from a generator seeded, every step, by a draw from torch's global
generator — which the trainer seeds and checkpoints — so a resumed run makes the same views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import BaseModel
from torch import Tensor

from dspseg.data.augment import BatchGeometry, strong_view, weak_view
from dspseg.data.batch import Batch
from dspseg.methods.base import NO_VIEW, VIEWS, WEAK, TwoViewOptions, WeakViewOptions

#: ``forward(image (B, Cin, h, w), valid (B, h, w)) → outputs``: how a method runs its model
Forward = Callable[[Tensor, Tensor], dict[str, Tensor]]


@dataclass
class Views:
    """weak/strong: augmented batches; out_weak/out_strong: model outputs; geometry: weak → strong."""

    weak: Batch
    strong: Batch
    out_weak: dict[str, Tensor]
    out_strong: dict[str, Tensor]
    geometry: BatchGeometry

    @classmethod
    def single(cls, batch: Batch, outputs: dict[str, Tensor]) -> Views:
        """One view in both roles (strong = weak, identity geometry)."""
        b, _, h, w = batch.image.shape
        return cls(batch, batch, outputs, outputs, BatchGeometry.identity(b, h, w))


def step_generator() -> torch.Generator:
    """A fresh generator seeded from the (checkpointed) global torch RNG."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))


def weak_only(model: Callable[[Tensor], dict[str, Tensor]], batch: Batch, options: BaseModel | None = None) -> Views:
    """The weak view of ``batch`` (``options.weak_jitter``) and ``model(image)`` on it, as one view."""
    return _weak(lambda image, valid: model(image), batch, options)


def weak_and_strong(model: Callable[[Tensor], dict[str, Tensor]], batch: Batch,
                    options: BaseModel | None = None) -> Views:
    """Both views through ``model(image)`` as one batch of 2B images; outputs split back per view.

    ``options`` (a method's options, any :class:`TwoViewOptions`) sets the jitter strengths and CutOut.
    """
    return _weak_strong(lambda image, valid: model(image), batch, options)


def _weak(forward: Forward, batch: Batch, options: BaseModel | None) -> Views:
    o = options if isinstance(options, WeakViewOptions) else WeakViewOptions()
    weak, _ = weak_view(batch, step_generator(), o.weak_jitter)
    return Views.single(weak, forward(weak.image, weak.valid))


def _weak_strong(forward: Forward, batch: Batch, options: BaseModel | None) -> Views:
    o = options if isinstance(options, TwoViewOptions) else TwoViewOptions()
    gen = step_generator()
    weak, _ = weak_view(batch, gen, o.weak_jitter)
    strong, geo = strong_view(weak, gen, o.strong_jitter, o.cutout)
    b = len(batch)
    out = forward(torch.cat([weak.image, strong.image]), torch.cat([weak.valid, strong.valid]))
    out_weak = {k: v[:b] for k, v in out.items()}
    out_strong = {k: v[b:] for k, v in out.items()}
    return Views(weak, strong, out_weak, out_strong, geo)


def make_views(plan: str, forward: Forward, batch: Batch, options: BaseModel | None = None) -> Views:
    """The views of ``plan`` (one of :data:`dspseg.methods.base.VIEWS`) with the model outputs on them."""
    if plan == NO_VIEW:
        return Views.single(batch, forward(batch.image, batch.valid))
    if plan == WEAK:
        return _weak(forward, batch, options)
    if plan not in VIEWS:
        raise ValueError(f"unknown view plan {plan!r}; use one of {VIEWS}")
    return _weak_strong(forward, batch, options)


__all__ = ["Forward", "Views", "make_views", "step_generator", "weak_and_strong", "weak_only"]
