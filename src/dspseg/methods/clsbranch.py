r"""``clsbranch``: segmentation + image classification branch (Mlynarski et al., "Deep learning with
mixed supervision for brain tumor segmentation", J. Medical Imaging 2019; paper §5.2 baseline).

    L = L_CE + λ · L_cls
    L_CE  = cross-entropy on the annotated mask pixels of the weak view (:func:`masked_cross_entropy`)
    z_b   = MLP([mean_{j valid} f_j, max_{j valid} f_j])  ∈ R^C      (:class:`ClassificationBranch`)
    L_cls = Σ_{b,c} k_bc · BCE(z_bc, y_bc) / max(1, Σ_{b,c} k_bc)

``f`` are the backbone features of the weak view (flips, quarter turns, jitter 0.2); the branch
pools over the image's valid pixels only (crop padding excluded).

**Targets** ``y_bc`` with a *known* flag ``k_bc`` — only what the annotation of the (cropped) image
says for sure (DESIGN §1, and the crop rules of :mod:`dspseg.data.dataset`):

* positive (y = 1): c is an image-level label present in the batch (``image_labels`` — the dataset
  keeps them only when the crop holds the whole image, since a crop may miss a labelled class), or a
  mask pixel of the crop is c, or a point of c lies in the crop;
* negative (y = 0): c is not among the image's classes (``image_classes``; complete by contract for
  labels, boxes, points and ignore-free masks, and all classes — no negatives — for unlabeled images
  and partial masks), or the crop's mask annotates every valid pixel and none is c;
* anything else is unknown (k = 0) and gives no loss.

Only images whose kind is in ``uses`` count. The paper applies this baseline to masks + image-level
labels (M + I), so ``uses = {"mask", "image"}``: in a mixed dataset the box, point and unlabeled images
are not sampled, and if present in a batch they get no BCE. (Box and point images do have complete
class sets, but the baseline is the paper's M + I branch; DSP is the method that uses everything.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from dspseg.methods import register
from dspseg.methods.base import WEAK, Method, WeakViewOptions
from dspseg.vocabulary import BATCH_LABEL, Kind

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor, nn

    from dspseg.data.batch import Batch


class ClsBranchOptions(WeakViewOptions):
    """Options of ``clsbranch`` (``--set method_options.KEY=VALUE``)."""

    weight: float = Field(1.0, ge=0, description="λ, weight of the image-level BCE term")
    hidden: int = Field(64, ge=1, description="hidden units of the classification MLP")


def image_class_targets(batch: Batch, n_classes: int, ignore_index: int,
                        kinds: frozenset[str] | set[str]) -> tuple[Tensor, Tensor]:
    """``(y, k)``, both (B, C): image-level targets (float 0/1) and where they are known (bool).

    Rules in the module docstring; images whose kind is not in ``kinds`` are unknown everywhere.
    """
    import torch

    target, valid = batch.target, batch.valid
    b = target.shape[0]
    flat = target.masked_fill(~valid, ignore_index).reshape(b, -1)
    annotated = flat != ignore_index
    ids = torch.where(annotated, flat, torch.full_like(flat, n_classes))  # ignore → slot C
    present = torch.zeros(b, n_classes + 1, device=target.device).scatter_add_(
        1, ids, torch.ones_like(ids, dtype=torch.float32))[:, :n_classes] > 0
    pos = present.clone()
    for table in (batch.bags.image_labels, batch.bags.points):  # both lead with [b, class]
        t = batch.rows_of_kinds(table, kinds).long()
        pos[t[:, BATCH_LABEL.b], t[:, BATCH_LABEL.c]] = True
    fully = annotated.any(1) & (annotated.sum(1) == valid.reshape(b, -1).sum(1))  # crop's class set exact
    neg = ~batch.image_classes.bool() | (fully[:, None] & ~present)
    known = (pos | neg) & batch.of_kinds(kinds)[:, None]
    return pos.float(), known


@register
class ClsBranch(Method):
    """CE on masks + BCE of an image classification branch on the image-level class sets."""

    name = "clsbranch"
    summary = "Classification branch (Mlynarski 2019): CE on masks + BCE of pooled image-level class logits (masks, image labels)"
    uses = frozenset({Kind.MASK, Kind.IMAGE})
    views = WEAK
    Options = ClsBranchOptions

    def aux_heads(self, feature_channels: int) -> dict[str, nn.Module]:
        """``{"cls": ClassificationBranch(F, C, hidden)}``."""
        from dspseg.models.aux_heads import ClassificationBranch

        return {"cls": ClassificationBranch(feature_channels, self.n_classes, self.options.hidden)}

    def forward(self, model: nn.Module, image: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """The model with ``valid``, over which the branch pools."""
        return model(image, valid=valid)

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> dict[str, Tensor]:
        """``{"ce": L_CE, "cls": λ·L_cls}`` (module docstring); needs ``outputs["aux_cls"]`` (B, C)."""
        import torch.nn.functional as F

        aux = self.aux_output(outputs, "cls")
        ce = self.mask_ce(outputs, batch)
        logits = aux.float()
        y, known = image_class_targets(batch, self.n_classes, self.ignore_index, self.uses)
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        cls = (bce * known).sum() / known.sum().clamp_min(1)
        return {"ce": ce, "cls": self.options.weight * cls}
