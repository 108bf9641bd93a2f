r"""``dsp``: Decoupled Semantic Prototypes (Reiß et al., CVPR 2023), eq. 10.

    L_total = L_CE + L_PLF + L_DSP

* ``L_CE`` — cross-entropy of the prototype logits ``s/τ`` (eq. 3) on the annotated mask pixels of
  the weak view.
* ``L_PLF`` — cross-entropy of the strong view towards the weak view's pseudo-labels after
  pseudo-label filtering (§3.6): ``PL_j = argmax_{c ∈ A_j} s_c(f_j)``, moved to the strong view
  by its geometry (:mod:`dspseg.losses.plf`, :mod:`dspseg.methods.views`).
* ``L_DSP`` — eq. 9 on the weak view: per annotation type, the mean over its positives of
  ``log Z_c − ŝ_c/τ`` with the decoupled normaliser of eq. 8 over the whole batch
  (:mod:`dspseg.losses.dsp`). Mask images contribute all their derived weak positives too (§3.1).

  The default ``variant`` (:data:`dspseg.losses.constants.DSP_DEFAULT_VARIANT`, shared with
  :func:`~dspseg.losses.dsp.dsp_loss`) is ``reference``: the same decoupled structure on softmax
  probabilities, as the authors' released code computes it (class-weighting bug fixed). Measured on
  the synthetic ``mixed`` scenario at ACR 8 and 32 over 2 splits it beat the literal eq. 6–9
  (``paper``) in all four comparisons, by 7–17 Dice points (BENCHMARKS.md); ``variant: paper`` keeps
  the equations.

Learns from every kind of training image: masks, boxes, points, image labels and unlabeled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dspseg.losses.constants import DSP_DEFAULT_LAMBDA, DSP_DEFAULT_TAU, DSP_DEFAULT_VARIANT
from dspseg.methods import register
from dspseg.methods.base import WEAK_STRONG, Method, TwoViewOptions
from dspseg.vocabulary import KINDS

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from dspseg.methods.views import Views


class Lambdas(BaseModel):
    """λ per annotation type in eq. 9."""

    model_config = ConfigDict(extra="forbid")
    mask: float = Field(DSP_DEFAULT_LAMBDA, ge=0)
    box: float = Field(DSP_DEFAULT_LAMBDA, ge=0)
    point: float = Field(DSP_DEFAULT_LAMBDA, ge=0)
    image: float = Field(DSP_DEFAULT_LAMBDA, ge=0)


class DSPOptions(TwoViewOptions):
    """Options of ``dsp`` (``--set method_options.KEY=VALUE``)."""

    tau: float = Field(DSP_DEFAULT_TAU, gt=0, description="temperature of eq. 3 and eq. 6-8 (paper: 0.05)")
    prototypes: int = Field(5, ge=1, description="prototypes per class, K (paper: 5)")
    embed_dim: int = Field(64, ge=2, description="embedding size D (paper: 64)")
    lambdas: Lambdas = Field(default_factory=Lambdas, description="weight of each annotation type in eq. 9")
    variant: Literal["paper", "reference"] = Field(
        DSP_DEFAULT_VARIANT, description="reference (default, trains better: BENCHMARKS.md): the released code's "
        "form on softmax probabilities, with its class-weighting bug fixed; paper: eq. 6-9 on exp(s/tau)")
    plf_weight: float = Field(1.0, ge=0, description="weight of L_PLF")
    compile: bool = Field(True, description="fuse the eq. 8 normaliser's passes with torch.compile")


@register
class DSP(Method):
    """Decoupled Semantic Prototypes: CE + pseudo-label filtering + the decoupled prototype loss."""

    name = "dsp"
    summary = "Decoupled Semantic Prototypes (CE + filtered pseudo-labels + eq. 9; learns from every annotation type)"
    uses = frozenset(KINDS)
    head = "prototype"
    views = WEAK_STRONG
    Options = DSPOptions

    def head_kwargs(self) -> dict[str, Any]:
        o = self.options
        return {"n_prototypes": o.prototypes, "embed_dim": o.embed_dim, "tau": o.tau}

    def terms(self, views: Views) -> dict[str, Tensor]:
        """The loss terms of eq. 10 from the two views (see the module docstring): L_PLF's labels are
        the filtered arg-max of the weak view's scores ``s``; eq. 9 runs on the weak view's scores."""
        from dspseg.losses.dsp import dsp_loss

        o, weak = self.options, views.weak
        ce = self.mask_ce(views.out_weak, weak)
        plf = self.plf(views, teacher="scores")
        dsp = dsp_loss(views.out_weak["scores"].float(), weak.allowed, weak.valid, weak.bags, tau=o.tau,
                       lambdas=o.lambdas.model_dump(), variant=o.variant, fused=o.compile)
        return {"ce": ce, "plf": o.plf_weight * plf, **dsp}
