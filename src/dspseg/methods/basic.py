"""``basic``: the fully supervised U-Net baseline — cross-entropy on annotated mask pixels.

    L_CE = - 1/|J| Σ_{j ∈ J} log softmax(logits_j)[y_j],   J = {j : y_j ≠ ignore_index, valid_j}

``J`` holds the annotated pixels of the mask images in the batch (partial masks contribute only their
annotated pixels; crop padding is never counted): :func:`dspseg.losses.ce.masked_cross_entropy`.
Only mask images are sampled (``uses = {"mask"}``). A batch without any annotated pixel gives a loss
of 0 that still depends on the logits. Like every method, it trains on the weak view of the batch
(flips, quarter turns, brightness and contrast jitter 0.2; :mod:`dspseg.data.augment`);
``--set method_options.augment=false`` turns it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from dspseg.methods import register
from dspseg.methods.base import NO_VIEW, WEAK, Method, WeakViewOptions
from dspseg.vocabulary import Kind

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import Tensor

    from dspseg.data.batch import Batch


class BasicOptions(WeakViewOptions):
    """Options of ``basic`` (``--set method_options.KEY=VALUE``)."""

    augment: bool = Field(True, description="train on the weak view (flips, quarter turns, jitter), as every method")


@register
class Basic(Method):
    """Cross-entropy on the annotated pixels of mask images (paper: "basic U-Net")."""

    name = "basic"
    summary = "cross-entropy on annotated mask pixels (fully supervised U-Net baseline; uses masks only)"
    uses = frozenset({Kind.MASK})
    views = WEAK
    Options = BasicOptions

    def view_plan(self) -> str:
        """The weak view (paper §5.1), or the batch as is with ``augment: false``."""
        return WEAK if self.options.augment else NO_VIEW

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"ce": L_CE}`` (see the module docstring)."""
        return {"ce": self.mask_ce(outputs, batch)}
