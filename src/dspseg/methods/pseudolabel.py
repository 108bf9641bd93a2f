r"""``pseudolabel``: Pseudo-Label (Lee, ICML-W 2013) with pseudo-label filtering (paper §3.6, §5.2).

    L = L_CE + w · L_PL
    L_CE = CE of the weak view's logits on its annotated mask pixels      (:func:`masked_cross_entropy`)
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

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from dspseg.methods import register
from dspseg.methods.base import KINDS, Method, TwoViewOptions
from dspseg.methods.basic import masked_cross_entropy

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor, nn


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
    head = "linear"
    Options = PseudoLabelOptions

    def step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        from dspseg.methods.views import weak_and_strong, weak_only

        o = self.options
        if o.target_view == "same":
            weak, out = weak_only(model, batch, o)
            return self.terms(weak, out, weak, out, None)
        v = weak_and_strong(model, batch, o)
        return self.terms(v.weak, v.out_weak, v.strong, v.out_strong, v.geometry)

    def terms(self, weak: dict[str, Any], out_weak: dict[str, Tensor], student: dict[str, Any],
              out_student: dict[str, Tensor], geometry: Any) -> dict[str, Tensor]:
        """``{"ce", "pl"}`` from the view that makes the targets and the view trained towards them
        (the same view, ``geometry`` None; or the strong view and the weak → strong geometry)."""
        ce = masked_cross_entropy(out_weak["logits"], weak["target"], weak["valid"], self.ignore_index)
        pseudo = self.targets(weak, out_weak, geometry)
        pl = masked_cross_entropy(out_student["logits"], pseudo, student["valid"], self.ignore_index)
        return {"ce": ce, "pl": self.options.weight * pl}

    def targets(self, weak: dict[str, Any], out_weak: dict[str, Tensor], geometry: Any = None) -> Tensor:
        """(B, h, w) long: PL_j = argmax_{c ∈ A_j} z_j,c of the weak view (no gradient), moved by
        ``geometry`` when given; ``ignore_index`` on padding."""
        from dspseg.losses.plf import filter_pseudo_labels

        pseudo = filter_pseudo_labels(out_weak["logits"], weak["allowed"], weak["valid"], self.ignore_index)
        return pseudo if geometry is None else geometry.apply(pseudo)

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        """The terms on a single, un-augmented view: targets are the filtered arg-max of ``outputs``."""
        return self.terms(batch, outputs, batch, outputs, None)
