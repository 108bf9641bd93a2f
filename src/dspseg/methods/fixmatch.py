r"""``fixmatch``: FixMatch (Sohn et al., NeurIPS 2020) for segmentation, with pseudo-label filtering.

    L = L_CE + w · L_FM
    L_CE = CE of the weak view's logits on its annotated mask pixels       (:mod:`dspseg.losses.ce`)
    L_FM = 1/|V_s| Σ_{j ∈ V_s} 1[m̃_j ≥ θ] · (−log softmax(z^s_j)[P̃L_j])   (confident_cross_entropy)

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

from typing import TYPE_CHECKING

from pydantic import Field

from dspseg.methods import register
from dspseg.methods.base import WEAK_STRONG, Method, TwoViewOptions
from dspseg.vocabulary import KINDS

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from dspseg.methods.views import Views


class FixMatchOptions(TwoViewOptions):
    """Options of ``fixmatch`` (``--set method_options.KEY=VALUE``)."""

    threshold: float = Field(0.95, ge=0, le=1, description="confidence θ a pseudo-label needs (paper: 0.95)")
    weight: float = Field(1.0, ge=0, description="weight w of the consistency term")


@register
class FixMatch(Method):
    """CE on masks + thresholded weak → strong consistency towards filtered pseudo-labels."""

    name = "fixmatch"
    summary = ("FixMatch (Sohn 2020): CE on masks + confident filtered weak-view labels taught to a strong view "
               "(every type)")
    uses = frozenset(KINDS)
    views = WEAK_STRONG
    Options = FixMatchOptions

    def targets(self, views: Views) -> tuple[Tensor, Tensor]:
        """(P̃L, confident) on the strong view: filtered weak pseudo-labels and the mask m̃ ≥ θ."""
        from dspseg.losses.plf import confident, filter_pseudo_labels

        weak, logits = views.weak, views.out_weak["logits"]
        pseudo = filter_pseudo_labels(logits, weak.allowed, weak.valid, self.ignore_index)
        mask = confident(logits, weak.allowed, self.options.threshold) & weak.valid
        return views.geometry.apply(pseudo), views.geometry.apply(mask)

    def terms(self, views: Views) -> dict[str, Tensor]:
        """``{"ce", "fixmatch"}`` from the two views (see the module docstring)."""
        from dspseg.losses.ce import confident_cross_entropy

        ce = self.mask_ce(views.out_weak, views.weak)
        pseudo, mask = self.targets(views)
        fm = confident_cross_entropy(views.out_strong["logits"], pseudo, mask, views.strong.valid, self.ignore_index)
        return {"ce": ce, "fixmatch": self.options.weight * fm}
