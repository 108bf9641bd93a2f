r"""``fixmatch``: FixMatch (Sohn et al., NeurIPS 2020) for segmentation, with pseudo-label filtering.

    L = L_CE + w · L_FM
    L_CE = CE of the weak view's logits on its annotated mask pixels       (:func:`masked_cross_entropy`)
    L_FM = 1/|V_s| Σ_{j ∈ V_s} 1[m̃_j ≥ θ] · (−log softmax(z^s_j)[P̃L_j])

On the weak view (flips, quarter turns, jitter 0.2) with logits ``z^w`` and admissible classes
``A_j`` (``allowed``):

    PL_j = argmax_{c ∈ A_j} z^w_j,c                         (filtered pseudo-label, paper §3.6)
    m_j  = max_{c ∈ A_j} softmax_{A_j}(z^w_j)_c               (confidence of the filtered softmax)

``P̃L`` and ``m̃`` are PL and m moved to the strong view (its own flips/turns on top of the weak view,
jitter 0.4, CutOut up to 9 squares) by the exact weak → strong geometry; ``z^s`` are the strong
view's logits and ``V_s`` its valid pixels; θ = 0.95 by default. Because the softmax runs over the
admissible classes only, a pixel with a single admissible class (mask pixels, point pixels, boxes
of one class covering pixels of an image with no other class) is always confident. As in FixMatch,
the sum runs over the confident pixels and the mean over all valid pixels (the unmasked count), so
the term's scale grows with the fraction of confident pixels. Targets carry no gradient.
Learns from every kind of training image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from dspseg.methods import register
from dspseg.methods.base import KINDS, Method, TwoViewOptions
from dspseg.methods.basic import masked_cross_entropy

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor, nn


class FixMatchOptions(TwoViewOptions):
    """Options of ``fixmatch`` (``--set method_options.KEY=VALUE``)."""

    threshold: float = Field(0.95, ge=0, le=1, description="confidence θ a pseudo-label needs (paper: 0.95)")
    weight: float = Field(1.0, ge=0, description="weight w of the consistency term")


def confident_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor, valid: Tensor,
                            ignore_index: int) -> Tensor:
    """Σ_{valid ∧ mask} CE(logits_j, target_j) / |valid| (FixMatch's masked mean).

    Shapes: logits (B, C, h, w); target (B, h, w) long; mask, valid (B, h, w) bool → scalar (0 that
    still depends on ``logits`` when nothing is confident).
    """
    import torch.nn.functional as F

    if target.shape != (logits.shape[0], *logits.shape[2:]) or mask.shape != target.shape \
            or valid.shape != target.shape:
        raise ValueError(f"confident_cross_entropy: logits (B, C, h, w) with target, mask and valid (B, h, w) "
                         f"expected, got {tuple(logits.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}, "
                         f"{tuple(valid.shape)}")
    keep = mask & valid & (target != ignore_index)
    per_pixel = F.cross_entropy(logits.float(), target.masked_fill(~keep, ignore_index),
                                ignore_index=ignore_index, reduction="none")
    return per_pixel.sum() / valid.sum().clamp_min(1)


@register
class FixMatch(Method):
    """CE on masks + thresholded weak → strong consistency towards filtered pseudo-labels."""

    name = "fixmatch"
    summary = ("FixMatch (Sohn 2020): CE on masks + confident filtered weak-view labels taught to a strong view "
               "(every type)")
    uses = frozenset(KINDS)
    head = "linear"
    Options = FixMatchOptions

    def step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        from dspseg.methods.views import weak_and_strong

        return self.terms(weak_and_strong(model, batch, self.options))

    def targets(self, views) -> tuple[Tensor, Tensor]:
        """(P̃L, confident) on the strong view: filtered weak pseudo-labels and the mask m̃ ≥ θ."""
        from dspseg.losses.plf import confident, filter_pseudo_labels

        weak, logits = views.weak, views.out_weak["logits"]
        pseudo = filter_pseudo_labels(logits, weak["allowed"], weak["valid"], self.ignore_index)
        mask = confident(logits, weak["allowed"], self.options.threshold) & weak["valid"]
        return views.geometry.apply(pseudo), views.geometry.apply(mask)

    def terms(self, views) -> dict[str, Tensor]:
        """``{"ce", "fixmatch"}`` from the two views (see the module docstring)."""
        weak, strong = views.weak, views.strong
        ce = masked_cross_entropy(views.out_weak["logits"], weak["target"], weak["valid"], self.ignore_index)
        pseudo, mask = self.targets(views)
        fm = confident_cross_entropy(views.out_strong["logits"], pseudo, mask, strong["valid"], self.ignore_index)
        return {"ce": ce, "fixmatch": self.options.weight * fm}

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        """The terms on a single, un-augmented view (weak = strong, identity geometry)."""
        from dspseg.data.augment import BatchGeometry
        from dspseg.methods.views import Views

        b, _, h, w = batch["image"].shape
        return self.terms(Views(batch, batch, outputs, outputs, BatchGeometry.identity(b, h, w)))
