r"""``pseudolabel``: Pseudo-Label (Lee, ICML-W 2013) with pseudo-label filtering (paper §3.6, §5.2).

    L = L_CE + w · L_PL
    L_CE = CE of the weak view's logits on its annotated mask pixels      (:mod:`dspseg.losses.ce`)
    L_PL = −1/|V| Σ_{j ∈ V} log softmax(z_j)[PL_j],   PL_j = argmax_{c ∈ A_j} z_j,c  (no gradient)

``z`` are the logits of one weakly augmented view (flips, quarter turns, jitter 0.2), ``A_j`` the
classes the annotation admits at pixel j (``allowed``) and ``V`` the valid (non-padding) pixels of
every image of the batch, whatever its annotation. This is Lee's self-training: the target is the
network's own filtered arg-max *on the same input*, detached — an entropy-minimising term; the
filter turns it into "the most likely class the annotation permits", so image labels, boxes and
points correct the pseudo-labels. With ``target_view: strong`` the targets move to a strongly
augmented view instead (the L_PLF of §3.6, i.e. FixMatch without a threshold).

Lee's weight ramp-up α(t) is replaced by a constant ``weight``: as in the paper (§5.2) the method is
meant to start from a trained ``basic`` U-Net (``--init``), so early pseudo-labels are not random.
Learns from every kind of training image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from dspseg.methods import register
from dspseg.methods.base import WEAK, WEAK_STRONG, Method, TwoViewOptions
from dspseg.vocabulary import KINDS

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from dspseg.data.augment import BatchGeometry
    from dspseg.data.batch import Batch
    from dspseg.methods.views import Views


class PseudoLabelOptions(TwoViewOptions):
    """Options of ``pseudolabel`` (``--set method_options.KEY=VALUE``)."""

    weight: float = Field(1.0, ge=0, description="weight w of the pseudo-label term")
    target_view: Literal["same", "strong"] = Field(
        "same", description="same: Lee's self-training on one view; strong: targets moved to a strong view")
    strong_jitter: float = Field(0.4, ge=0, le=1, description="only with target_view: strong")
    cutout: int = Field(9, ge=0, description="CutOut squares at most (only with target_view: strong)")


@register
class PseudoLabel(Method):
    """CE on masks + CE towards the network's own filtered arg-max (Lee 2013 + PLF)."""

    name = "pseudolabel"
    summary = ("Pseudo-Label (Lee 2013): CE on masks + CE towards its own filtered arg-max "
               "(learns from every annotation type)")
    uses = frozenset(KINDS)
    views = WEAK
    Options = PseudoLabelOptions

    def view_plan(self) -> str:
        """The weak view alone (``target_view: same``) or with a strong view (``strong``)."""
        return WEAK if self.options.target_view == "same" else WEAK_STRONG

    def terms(self, views: Views) -> dict[str, Tensor]:
        """``{"ce", "pl"}``: L_PL trains the strong view (on one view: the same view, identity
        geometry) towards the weak view's filtered arg-max (:meth:`Method.plf`)."""
        return {"ce": self.mask_ce(views.out_weak, views.weak), "pl": self.options.weight * self.plf(views)}

    def targets(self, weak: Batch, out_weak: dict[str, Tensor], geometry: BatchGeometry | None = None) -> Tensor:
        """(B, h, w) long: PL_j = argmax_{c ∈ A_j} z_j,c of the weak view (no gradient), moved by
        ``geometry`` when given; ``ignore_index`` on padding."""
        from dspseg.losses.plf import filter_pseudo_labels

        pseudo = filter_pseudo_labels(out_weak["logits"], weak.allowed, weak.valid, self.ignore_index)
        return pseudo if geometry is None else geometry.apply(pseudo)
