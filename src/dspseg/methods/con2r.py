r"""``con2r``: graph-constrained contrastive regularisation (Reiß et al., ECCV 2022), adapted to 2D as
in the DSP paper (§5.2), with pseudo-label filtering.

    L = L_CE + w_PLF · L_PLF + w · L_Con2R

* ``L_CE`` — cross-entropy of the weak view's logits on its annotated mask pixels.
* ``L_PLF`` — cross-entropy of the strong view towards the weak view's filtered pseudo-labels
  ``argmax_{c ∈ A_j} z_j,c`` moved by the weak → strong geometry (paper §3.6; no threshold).
* ``L_Con2R`` — :mod:`dspseg.losses.con2r` on the features the linear head reads (the backbone
  output, B × F × h × w), captured by a forward hook so the model runs through its own (Fabric/DDP)
  forward. Per image, ``samples`` query and ``samples`` neighbour pixels are drawn uniformly among
  its valid pixels, each from the weak or the strong view with probability ½ (the paper found
  sampling from both views better than from the strong one only); strong-view features are moved
  back to the weak frame by the inverse geometry, so a pixel's position is its weak-frame position
  in both views and a weak/strong pair at one position is a positional (and semantic) positive.
  Positional affinity: overlap of the ``window × window`` receptive windows (paper: 16 × 16).
  Semantic affinity: ``exp(−symmetric KL)`` between the *filtered* class distributions
  ``softmax_{A_j}(z^w_j)`` of the weak view (detached; for a strong-view sample, those of its
  position) — pseudo-label filtering "directly in the semantic consistency constraint" (§5.2).

The target graph mixes the two affinities, ``α · rows(P) + (1 − α) · rows(S)``, as the authors'
released Con2R code does (``combine: product`` uses ``rows(P ⊙ S)`` instead); the embedding graph is
``softmax(cos / τ)``. Memory per image is O(samples²), independent of the image size.
Learns from every kind of training image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from dspseg.methods import register
from dspseg.methods.base import WEAK_STRONG, Method, TwoViewOptions
from dspseg.vocabulary import BATCH_POINT, KINDS

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import Tensor, nn

    from dspseg.methods.views import Views


class Con2ROptions(TwoViewOptions):
    """Options of ``con2r`` (``--set method_options.KEY=VALUE``)."""

    samples: int = Field(512, ge=1, le=8192, description="query pixels and neighbour pixels per image")
    window: int = Field(16, ge=1, description="side of the positional receptive window (paper: 16)")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of positional vs semantic affinity (mix)")
    combine: Literal["mix", "product"] = Field("mix", description="mix: a·P + (1-a)·S (reference); product: P·S")
    tau: float = Field(0.1, gt=0, description="temperature of the embedding graph (cosine / tau)")
    weight: float = Field(1.0, ge=0, description="weight w of L_Con2R")
    plf_weight: float = Field(1.0, ge=0, description="weight of the filtered weak -> strong pseudo-label CE")


def forward_with_features(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """``model(images)`` plus ``"features"``: the backbone output (the head's input), (B, F, h, w).

    The features are taken by a forward hook on ``model.backbone`` during the ordinary forward, so
    wrappers (Lightning Fabric, DDP, autocast) stay in charge of the call.
    """
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise TypeError(f"con2r: the model must have a 'backbone' submodule whose output the head reads "
                        f"(dspseg.models.SegmentationModel), got {type(model).__name__}")
    captured: list[Tensor] = []
    handle = backbone.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        out = dict(model(images))
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"con2r: expected one backbone call per forward, saw {len(captured)}")
    out["features"] = captured[0]
    return out


@register
class Con2R(Method):
    """CE on masks + filtered pseudo-labels + graph-constrained contrastive regularisation."""

    name = "con2r"
    summary = "Con2R (Reiss 2022): CE on masks + filtered pseudo-labels + pixel affinity-graph contrast (every type)"
    uses = frozenset(KINDS)
    views = WEAK_STRONG
    Options = Con2ROptions

    def forward(self, model: nn.Module, image: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """The model's outputs plus the backbone ``"features"`` (:func:`forward_with_features`)."""
        return forward_with_features(model, image)

    def terms(self, views: Views) -> dict[str, Tensor]:
        """``{"ce", "plf", "con2r"}`` from the two views; both outputs must hold ``"features"``
        (:meth:`loss` on one view needs them too)."""
        o = self.options
        ce = self.mask_ce(views.out_weak, views.weak)
        plf = o.plf_weight * self.plf(views)
        return {"ce": ce, "plf": plf, "con2r": o.weight * self.regulariser(views)}

    def regulariser(self, views: Views) -> Tensor:
        """L_Con2R on sampled query/neighbour pixels of both views (module docstring)."""
        from dspseg.losses.con2r import con2r_loss, filtered_softmax
        from dspseg.methods.views import step_generator

        o = self.options
        if "features" not in views.out_weak or "features" not in views.out_strong:
            raise KeyError("con2r: the model outputs need 'features' (use forward_with_features)")
        valid = views.weak.valid
        probs = filtered_softmax(views.out_weak["logits"], views.weak.allowed).flatten(2)  # (B, C, hw)
        gen = step_generator()
        emb_q, pos_q, prob_q = self.sample(views, probs, gen)
        emb_n, pos_n, prob_n = self.sample(views, probs, gen)
        weight = valid.flatten(1).any(dim=1).float()
        return con2r_loss(emb_q, emb_n, pos_q, pos_n, prob_q, prob_n, window=o.window, alpha=o.alpha,
                          tau=o.tau, combine=o.combine, weight=weight)

    def sample(self, views: Views, probs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``samples`` pixels per image: (features (B, N, F), weak-frame [row, col] (B, N, 2), filtered
        class distributions (B, N, C)). Each pixel is drawn uniformly among the valid ones and read
        from the weak or (at its moved position) the strong view with probability ½."""
        import torch

        from dspseg.losses.con2r import sample_valid_pixels

        valid = views.weak.valid
        b, h, w = valid.shape
        idx = sample_valid_pixels(valid, self.options.samples, generator)  # (B, N) weak-frame pixels
        from_strong = torch.randint(0, 2, idx.shape, generator=generator).to(idx.device).bool()
        rows, cols = idx // w, idx % w
        image = torch.arange(b, device=idx.device).unsqueeze(1).expand_as(idx)
        as_points = torch.stack([image, torch.zeros_like(idx), rows, cols], -1).view(-1, BATCH_POINT.width)
        moved = views.geometry.apply_points(as_points)  # BATCH_POINT rows [b, class (unused), row, col]
        # the geometry keeps h x w (square, or half turns only)
        idx_strong = (moved[:, BATCH_POINT.row] * w + moved[:, BATCH_POINT.col]).view(b, -1)

        def read(maps: Tensor, at: Tensor) -> Tensor:  # (B, K, h, w) at (B, N) → (B, N, K)
            flat = maps.flatten(2)
            return flat.gather(2, at.unsqueeze(1).expand(-1, flat.shape[1], -1)).transpose(1, 2)

        feats = torch.where(from_strong.unsqueeze(-1), read(views.out_strong["features"], idx_strong),
                            read(views.out_weak["features"], idx))
        prob = probs.gather(2, idx.unsqueeze(1).expand(-1, probs.shape[1], -1)).transpose(1, 2)
        return feats, torch.stack([rows, cols], dim=-1), prob
