r"""The Decoupled Semantic Prototypes loss, eq. 6–9 of the paper.

For a positive — a bag of pixels pooled into one score ``ŝ_c`` for class c (see
:mod:`dspseg.losses.pooling`) — eq. 6 with the normaliser of eq. 8 reads

.. math::

    L = \log Z_c - \hat s_c / \tau ,

and eq. 9 sums it over the positives of each annotation type ``l ∈ {mask, box, point, image}``:

.. math::

    L_{DSP} = \sum_l \lambda_l \cdot \operatorname{mean}_{i \in \Omega^l} L(i, c_i).

The paper writes a sum over positives; we average over each type's positives in the batch so that
``λ`` does not have to change with the batch size or the number of objects per image. ``log Z_c``
is shared by every positive of class c (it depends only on the batch), so it is computed once per
class, in O(N·C) (the statistics of :func:`dspseg.losses.normalizer.log_normalizer`). The statistic
and every pooled positive come from one autograd Function over the scores
(:mod:`dspseg.losses.dsp_pass`): a couple of passes forward and backward, no N×C intermediate kept.

Under ``torch.distributed`` with P processes the normaliser runs over the global batch and each
process returns ``P/N · Σ_{its positives} L`` per type, N the number of that type's positives in
the global batch: after DDP averages the gradients, training equals one process on the whole batch
(the ``reference`` variant stays per process).

``variant="reference"`` reproduces the authors' released code instead: the same structure on
softmax probabilities ``p = softmax(s/τ)`` — ``D_c = log(Σ_j Σ_k p_k(j)[k≠c ∨ c∉A_j] + ε)``,
positives ``log(pooled p + ε)`` — per type ``(1/n_l) Σ_c (D_c − mean_{i∈Ω_c^l} log p̂_i)`` with
``n_l`` the number of images carrying type l. The released code divides class c by ``(c+1)·n_l``
through a counter that is never reset; that bug is fixed here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dspseg.data.batch import Bags
from dspseg.losses.constants import DSP_DEFAULT_LAMBDA, DSP_DEFAULT_TAU, DSP_DEFAULT_VARIANT, DSP_VARIANTS
from dspseg.losses.dsp_pass import bag_index, dsp_pass
from dspseg.losses.normalizer import _check, world_size
from dspseg.losses.pooling import pool_all
from dspseg.vocabulary import BATCH_BOX, BATCH_LABEL, BATCH_POINT, POSITIVE_KINDS

__all__ = ["Bags", "DSPLoss", "dsp_loss", "pooled_positives"]


def pooled_positives(maps: Tensor, bags: Bags, valid: Tensor) -> dict[str, tuple[Tensor, Tensor, int]]:
    """Pool ``maps`` (B,C,H,W) over every bag; per type: (pooled (P,), classes (P,), images carrying it).

    The plain autograd composition (:func:`dspseg.losses.pooling.pool_all`); :func:`dsp_loss` pools
    inside :mod:`dspseg.losses.dsp_pass` instead (same values, one backward pass)."""
    pooled = pool_all(maps, bags.instances, bags.instance_classes, bags.points, bags.boxes, bags.image_labels, valid)
    n_images = _images_carrying(bags)
    return {k: (*pooled[k], n_images[k]) for k in POSITIVE_KINDS}


def _zero(scores: Tensor) -> Tensor:
    """An exact zero that is still part of the graph (so ``backward`` works on any batch)."""
    return scores.reshape(-1)[:1].sum() * 0.0


def _images_carrying(bags: Bags) -> dict[str, int]:
    """Per annotation type, the number of images of the batch carrying it (``n_l`` of the reference)."""
    inst = bags.instances.reshape(bags.instances.shape[0], -1)
    return {
        "mask": int((inst > 0).any(dim=1).sum()) if inst.numel() else 0,
        "box": int(bags.boxes[:, BATCH_BOX.b].unique().numel()),
        "point": int(bags.points[:, BATCH_POINT.b].unique().numel()),
        "image": int(bags.image_labels[:, BATCH_LABEL.b].unique().numel()),
    }


def _statistic_and_positives(scores: Tensor, allowed: Tensor, valid: Tensor, bags: Bags, tau: float, variant: str,
                             fused: bool, global_batch: bool) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor, int]]]:
    """``log Z`` (``paper``, eq. 8) or the admissible mass (``reference``), (C,), and the positives pooled
    from ``s`` or ``p = softmax(s/τ)``: one autograd Function over the N×C scores
    (:mod:`dspseg.losses.dsp_pass`), one or two passes forward and one backward."""
    _check(scores, allowed, valid, tau)
    if not global_batch and not bool(valid.any()):
        raise ValueError("valid has no True pixel: the normaliser of eq. 8 needs at least one real pixel")
    index = bag_index(tuple(scores.shape), bags.instances, bags.instance_classes, bags.points, bags.boxes,
                      bags.image_labels, with_pixels=variant == "reference")
    stat, pooled = dsp_pass(scores, allowed, valid, index, tau, variant, fused=fused, global_batch=global_batch)
    return stat, {k: (*pooled[k], index.n_images[k]) for k in POSITIVE_KINDS}


def _paper_terms(scores: Tensor, allowed: Tensor, valid: Tensor, bags: Bags, tau: float,
                 fused: bool = False) -> dict[str, Tensor]:
    world = world_size()
    log_z, positives = _statistic_and_positives(scores, allowed, valid, bags, tau, "paper", fused, world > 1)  # (C,)
    counts = torch.tensor([float(positives[k][0].numel()) for k in POSITIVE_KINDS], device=scores.device)
    if world > 1:
        # mean over the positives of the global batch: this process's sum × P / N_global, so that
        # DDP's averaging of the P gradients gives the one-process gradient
        torch.distributed.all_reduce(counts)
    terms = {}
    for kind, n in zip(POSITIVE_KINDS, counts.tolist()):
        pooled, classes, _ = positives[kind]
        if pooled.numel() == 0:
            terms[kind] = _zero(scores)
        else:
            terms[kind] = (log_z[classes] - pooled / tau).sum() * (world / n)
    return terms


def _reference_terms(scores: Tensor, allowed: Tensor, valid: Tensor, bags: Bags, tau: float,
                     fused: bool = False, eps: float = 1e-7) -> dict[str, Tensor]:
    # Σ_j Σ_k p_k(j)[k≠c ∨ c∉A_j] = Σ_j (1 − p_c(j)[c∈A_j])   (softmax rows sum to one);
    # admissible_mass_c = Σ_j p_c(j)[c∈A_j] over valid pixels, positives pooled from p = softmax(s/τ)
    admissible_mass, positives = _statistic_and_positives(scores, allowed, valid, bags, tau, "reference", fused,
                                                          False)
    n_valid = valid.sum().to(scores.dtype)
    denominator = torch.log(n_valid - admissible_mass + eps)  # (C,)
    terms = {}
    n_classes = scores.shape[1]
    for kind, (pooled, classes, images) in positives.items():
        if pooled.numel() == 0:
            terms[kind] = _zero(scores)
            continue
        log_pos = torch.log(pooled + eps)
        per_class_sum = scores.new_zeros(n_classes).index_add_(0, classes, log_pos)
        per_class_n = torch.bincount(classes, minlength=n_classes)
        present = per_class_n > 0
        per_class = denominator[present] - per_class_sum[present] / per_class_n[present]
        terms[kind] = per_class.sum() / max(images, 1)
    return terms


def dsp_loss(scores: Tensor, allowed: Tensor, valid: Tensor, bags: Bags, tau: float = DSP_DEFAULT_TAU,
             lambdas: dict[str, float] | None = None, variant: str = DSP_DEFAULT_VARIANT,
             fused: bool = False) -> dict[str, Tensor]:
    """Eq. 9: the λ-weighted DSP loss per annotation type.

    Args:
        scores: (B,C,H,W) mean cosine class scores ``s_c`` (not divided by τ).
        allowed: (B,C,H,W) bool admissible classes; valid: (B,H,W) bool.
        bags: the positive bags.
        tau: temperature; lambdas: weight per type (default :data:`~dspseg.losses.constants.DSP_DEFAULT_LAMBDA`
            each); variant: ``paper`` | ``reference`` (default :data:`~dspseg.losses.constants.DSP_DEFAULT_VARIANT`).
        fused: compile the passes over the scores with ``torch.compile`` (see :mod:`dspseg.losses.dsp_pass`).

    Returns:
        ``{"dsp_mask": λ_m L_m, "dsp_box": ..., "dsp_point": ..., "dsp_image": ...}``; a type
        without positives in the batch contributes an exact (differentiable) zero.
    """
    if variant not in DSP_VARIANTS:
        raise ValueError(f"variant must be one of {DSP_VARIANTS}, got {variant!r}")
    lam = {t: DSP_DEFAULT_LAMBDA for t in POSITIVE_KINDS}
    if lambdas:
        unknown = set(lambdas) - set(POSITIVE_KINDS)
        if unknown:
            raise ValueError(f"lambdas has unknown annotation types {sorted(unknown)}; use {POSITIVE_KINDS}")
        lam.update(lambdas)
    fn = _paper_terms if variant == "paper" else _reference_terms
    terms = fn(scores, allowed, valid, bags, tau, fused)
    return {f"dsp_{k}": lam[k] * v for k, v in terms.items()}


class DSPLoss(nn.Module):
    """Module twin of :func:`dsp_loss`; returns the summed loss."""

    def __init__(self, tau: float = DSP_DEFAULT_TAU, lambdas: dict[str, float] | None = None,
                 variant: str = DSP_DEFAULT_VARIANT, fused: bool = False):
        super().__init__()
        self.tau, self.lambdas, self.variant, self.fused = tau, dict(lambdas or {}), variant, fused

    def forward(self, scores: Tensor, allowed: Tensor, valid: Tensor, bags: Bags) -> Tensor:
        return sum(dsp_loss(scores, allowed, valid, bags, self.tau, self.lambdas, self.variant, self.fused).values())
