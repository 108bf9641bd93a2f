r"""``boxinst``: cross-entropy on masks + BoxInst's box losses, semantic variant (Tian et al., "BoxInst:
High-performance instance segmentation with box annotations", CVPR 2021; paper §5.2 "Box loss").

    L = L_CE + λ_proj · L_proj + λ_pair · w(t) · L_pair
    L_CE   = cross-entropy on the annotated mask pixels of the weak view
    L_proj = mean_{(b,c) with boxes} [Dice(max_y p_c, max_y M_bc) + Dice(max_x p_c, max_x M_bc)]
    L_pair = mean over similar neighbour pairs (i, j) with i in a box of −log Σ_c p_c(i) p_c(j)
    w(t)   = min(t / N, 1) at training step t = 1, 2, ...   (linear warm-up, BoxInst: N = 10 000)

p = softmax of the linear head's logits on the weak view; M_bc = union of the boxes of class c in
image b; pairs are the 8 neighbours at dilation 2 whose intensity similarity
exp(−‖ΔĨ‖/θ) ≥ s on the k×k-smoothed normalised image (BoxInst: Lab colour, θ = 2, s = 0.3; the
defaults here, θ = 0.2, s = 0.3, k = 3, are measured in :mod:`dspseg.losses.boxinst`).

Uses masks and boxes: box images' boxes, and the boxes derived from the mask images' components
(paper §3.1: a masked image also carries every weaker annotation). Boxes of images of other kinds
are ignored. A crop clips boxes to its edge; a clipped box's rows (or columns) may then miss its
object inside the crop, which the projection term does not know (the same holds for DSP's box
pooling); with crops as large as the images there is no clipping.

The method counts its training steps (``step`` calls) for the warm-up and saves the count in
:meth:`state_dict`, so a resumed run continues the schedule exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from dspseg.methods import register
from dspseg.methods.base import WEAK, Method, WeakViewOptions
from dspseg.vocabulary import Kind

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor, nn

    from dspseg.data.batch import Batch


class BoxInstOptions(WeakViewOptions):
    """Options of ``boxinst`` (``--set method_options.KEY=VALUE``)."""

    projection_weight: float = Field(1.0, ge=0, description="λ_proj, weight of the projection loss")
    pairwise_weight: float = Field(1.0, ge=0, description="λ_pair, weight of the pairwise loss after warm-up")
    warmup_steps: int = Field(1000, ge=0, description="N: the pairwise weight rises linearly over N steps")
    theta: float = Field(0.2, gt=0, description="θ of the similarity exp(-|ΔI|/θ), normalised intensity units")
    threshold: float = Field(0.3, gt=0, le=1, description="s: pairs with similarity below it are not used")
    dilation: int = Field(2, ge=1, description="distance of the 8 neighbours of a pixel")
    smooth: int = Field(3, ge=1, description="side of the mean filter applied before the similarity")


@register
class BoxInst(Method):
    """CE on masks + BoxInst projection and pairwise-affinity losses on the boxes."""

    name = "boxinst"
    summary = "BoxInst (Tian 2021): CE on masks + box max-projection Dice + pairwise intensity affinity (masks, boxes)"
    uses = frozenset({Kind.MASK, Kind.BOX})
    views = WEAK
    Options = BoxInstOptions

    def __init__(self, options: BaseModel, n_classes: int, ignore_index: int) -> None:
        super().__init__(options, n_classes, ignore_index)
        self.steps = 0  # training steps taken (the warm-up clock)

    def warmup(self, t: int) -> float:
        """w(t) = min(t / N, 1) for step t ≥ 1 (1 when N = 0)."""
        n = self.options.warmup_steps
        return 1.0 if n == 0 else min(max(t, 0) / n, 1.0)

    def step(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        """The base's step (weak view → model → :meth:`loss`) at step ``steps + 1``; advances the count."""
        terms = super().step(model, batch)
        self.steps += 1
        return terms

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"ce", "box_projection", "box_pairwise"}`` at the warm-up of the next step (does not advance it)."""
        import torch

        from dspseg.losses.boxinst import inside_boxes, pairwise_loss, projection_loss

        o = self.options
        logits, valid = outputs["logits"].float(), batch.valid
        b, _, h, w = logits.shape
        ce = self.mask_ce({"logits": logits}, batch)
        boxes = batch.rows_of_kinds(batch.bags.boxes, self.uses).long()
        log_prob = torch.log_softmax(logits, dim=1)
        proj = projection_loss(log_prob.exp(), boxes, valid)
        if len(boxes):
            pair = pairwise_loss(log_prob, batch.image, inside_boxes(boxes, b, h, w), valid,
                                 theta=o.theta, threshold=o.threshold, dilation=o.dilation, smooth=o.smooth)
        else:
            pair = logits.sum() * 0.0
        return {"ce": ce, "box_projection": o.projection_weight * proj,
                "box_pairwise": o.pairwise_weight * self.warmup(self.steps + 1) * pair}

    def state_dict(self) -> dict[str, Any]:
        """``{"steps": int}``, the warm-up clock."""
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step count; refuses unknown keys."""
        unknown = set(state) - {"steps"}
        if unknown:
            raise ValueError(f"boxinst: unknown method state keys {sorted(unknown)}")
        self.steps = int(state.get("steps", 0))
