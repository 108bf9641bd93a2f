"""``basic``: the fully supervised U-Net baseline — cross-entropy on annotated mask pixels.

    L_CE = - 1/|J| Σ_{j ∈ J} log softmax(logits_j)[y_j],   J = {j : y_j ≠ ignore_index, valid_j}

``J`` holds the annotated pixels of the mask images in the batch (partial masks contribute only their
annotated pixels; crop padding is never counted). Only mask images are sampled (``uses = {"mask"}``).
A batch without any annotated pixel gives a loss of 0 that still depends on the logits.
Like every method, it trains on the weak view of the batch (flips, quarter turns, brightness and
contrast jitter 0.2; :mod:`dspseg.data.augment`); ``--set method_options.augment=false`` turns it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from dspseg.methods import register
from dspseg.methods.base import Method, WeakViewOptions

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import Tensor


def masked_cross_entropy(logits: Tensor, target: Tensor, valid: Tensor, ignore_index: int) -> Tensor:
    """Mean cross-entropy over pixels with ``valid`` and ``target != ignore_index``.

    Shapes: logits (B, C, h, w), target (B, h, w) long, valid (B, h, w) bool → scalar.
    """
    import torch.nn.functional as F

    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"masked_cross_entropy: logits (B, C, h, w) and target (B, h, w) expected, "
                         f"got {tuple(logits.shape)} and {tuple(target.shape)}")
    if valid.shape != target.shape:
        raise ValueError(f"masked_cross_entropy: valid must have the shape of target {tuple(target.shape)}, "
                         f"got {tuple(valid.shape)}")
    target = target.masked_fill(~valid, ignore_index)
    n = (target != ignore_index).sum()
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    return total / n.clamp_min(1)


class BasicOptions(WeakViewOptions):
    """Options of ``basic`` (``--set method_options.KEY=VALUE``)."""

    augment: bool = Field(True, description="train on the weak view (flips, quarter turns, jitter), as every method")


@register
class Basic(Method):
    """Cross-entropy on the annotated pixels of mask images (paper: "basic U-Net")."""

    name = "basic"
    summary = "cross-entropy on annotated mask pixels (fully supervised U-Net baseline; uses masks only)"
    uses = frozenset({"mask"})
    head = "linear"

    Options = BasicOptions

    def step(self, model: Any, batch: dict[str, Any]) -> dict[str, Tensor]:
        """L_CE on the weak view (flips, quarter turns, jitter; paper §5.1), or on the batch as is."""
        if not self.options.augment:
            return self.loss(model(batch["image"]), batch)
        from dspseg.methods.views import weak_only

        weak, outputs = weak_only(model, batch, self.options)
        return self.loss(outputs, weak)

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        """``{"ce": L_CE}`` (see the module docstring)."""
        return {"ce": masked_cross_entropy(outputs["logits"], batch["target"], batch["valid"], self.ignore_index)}
