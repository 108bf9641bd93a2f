r"""The N×C work of the DSP loss (eq. 6–9) in one autograd Function, two passes each way at most.

The DSP loss touches the (B,C,H,W) scores through per-class statistics — the eq. 8 normaliser
``log Z_c`` (``paper``) or the released code's admissible mass ``a_c = Σ_j valid_j [c∈A_j] p_c(j)``
(``reference``, ``p = softmax(s/τ)`` over classes) — and through the bags of eq. 9 pooled from
``v = s`` (``paper``) or ``v = p`` (``reference``), see :mod:`dspseg.losses.pooling`. The bags
read ``v`` in two shapes only:

* image labels (b, c): the mean of ``v_c(b, j)`` over the valid pixels j of one class map — (L,);
* mask components, points and boxes: gathered entries ``v.view(-1)[e]`` — (K,), K of the order of
  the pixels of the images that carry them (one class per pixel), far below N×C.

So ``v`` is never formed as an N×C tensor, and the gradient with respect to ``v`` is
``G_bcj = valid_j (α_c [c∈A_j] + γ_bc)`` plus ``g_e`` at the K entries, ``α`` (C,) the gradient of
the statistic and ``γ`` (B,C) that of the image-label means (divided by the valid-pixel counts).
Backward writes ``∂L/∂s`` from these C- and (B,C)-sized tensors (recomputing ``exp`` like
:mod:`dspseg.losses.normalizer` instead of keeping N×C intermediates) — one pass over the scores for
``paper``, two for ``reference`` (the per-pixel ``ρ``, then the output) — and adds the K entries in
place:

* ``paper`` (``v = s``): ``∂L/∂s = ∂(Σ_c g_c log Z_c)/∂s + G``, plus ``g_e`` at the entries;
* ``reference`` (``x = s/τ``): ``∂p_c/∂x_k = p_c([c=k] − p_k)``, so
  ``∂L/∂x_kj = p_k (G_k − ρ_j)`` with ``ρ_j = Σ_c p_c G_c + Σ_{e at pixel j} p_e g_e``, plus
  ``p_e g_e`` at the entries; ``∂/∂s = ∂/∂x · 1/τ``.

Without ``fused`` (no compiler), ``reference`` keeps ``p`` from ATen's softmax and runs ATen's
softmax backward on a dense ``∂L/∂p``: in eager mode each elementwise op is its own pass, and those
two kernels are the fewest passes.

Forward: ``paper`` is the normaliser's statistics pass; ``reference`` one compiled function (two
loops) for the per-pixel ``r_j = 1 / Σ_k exp(x_kj − m_j)`` and ``a``, with
``p_c(j) = exp(x_cj − m_j) · r_j`` and ``m`` the fixed shift 1/τ (or the per-pixel maximum). The bags
gather their K entries. With ``fused`` the passes are compiled by ``torch.compile``.

Why one module over 300 lines: the bag index, the kernels and the Function's forward and backward
are one derivation (the backward recomputes what the forward's kernels computed); split, a reader
would follow ``G``, ``ρ`` and the K entries across files.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dspseg.losses.normalizer import (_FIXED_SHIFT_MAX_RANGE, _class_sums, _reduce_statistics, combine_log_normaliser,
                                      gradient_coefficients, gradient_overflow_safe, mask_bytes, normaliser_statistics,
                                      valid_bias)
from dspseg.losses.pooling import _box_index, _box_reduce, _point_index, box_sizes
from dspseg.vocabulary import BATCH_BOX as BX
from dspseg.vocabulary import BATCH_LABEL as LB
from dspseg.vocabulary import BATCH_POINT as PT


@dataclass
class BagIndex:
    """Where the bags read the pooled map ``v`` (B,C,H,W), built once per batch from the collated bags.

    sparse: (K,) flat indices into ``v.view(-1)``: every pixel of the images with mask components
    (a pixel of no component reads class 0 and is discarded), then the points, then every box
    group's padded window; inst_images: (Bm,) the images with components, whose every pixel is one
    instance entry (in order); pixel: (K − n_inst,) the flat (B,H,W) pixel of each other entry (only
    ``with_pixels``, else None); n_inst, n_points: how many of the K are instance pixels and points; inst_seg: (n_inst,)
    component of each instance pixel (``M`` = none); inst_counts: (M,) pixels of each component;
    instance_classes: (M,); point_classes: (P,);
    labels: (L,2) ``[b, c]``; box_groups: see
    :func:`dspseg.losses.pooling._box_index`; boxes: (Nb,6); n_images: images carrying each type.
    """

    sparse: Tensor
    inst_images: Tensor
    pixel: Tensor | None
    n_inst: int
    n_points: int
    inst_seg: Tensor
    inst_counts: Tensor
    instance_classes: Tensor
    point_classes: Tensor
    labels: Tensor
    box_groups: list
    boxes: Tensor
    n_images: dict[str, int]


def bag_index(shape: tuple[int, int, int, int], instances: Tensor, instance_classes: Tensor, points: Tensor,
              boxes: Tensor, image_labels: Tensor, with_pixels: bool = False) -> BagIndex:
    """Index the bags (collated layout, see :func:`dspseg.losses.pooling.pool_all`) of a (B,C,H,W) map.

    The same indices as :func:`dspseg.losses.pooling.pool_all` builds (instances, points, box windows)."""
    b, c, h, w = shape
    hw = h * w
    device = instances.device
    m = instance_classes.shape[0]
    images = torch.zeros(0, dtype=torch.long, device=device)
    inst_flat = inst_seg = inst_counts = images
    if m:
        inst = instances.reshape(b, hw).long()
        images = torch.nonzero(inst.amax(dim=1) > 0).flatten()  # only images with components (max > 0 ⟺ any > 0)
        inst = inst[images]  # (Bm, hw)
        inst_seg = torch.where(inst > 0, inst - 1, m)  # component id, m = none
        cls = torch.cat([instance_classes.long(), instance_classes.new_zeros(1)])[inst_seg]
        pix = torch.arange(hw, device=device)
        inst_flat = ((images.unsqueeze(1) * c + cls) * hw + pix).reshape(-1)
        inst_seg = inst_seg.reshape(-1)
        inst_counts = torch.bincount(inst_seg, minlength=m + 1)[:m]
    pt = points.long()
    pt_flat = _point_index(shape, points)
    groups = _box_index(shape, boxes) if boxes.shape[0] else []
    sparse = torch.cat([inst_flat, pt_flat] + [g[1].reshape(-1) for g in groups])
    pixel = None
    if with_pixels:
        bx = boxes.long()
        # a box entry's flat index minus its map's offset (b·C + c)·HW, plus the image's b·HW
        offset = (bx[:, BX.b] * (c - 1) + bx[:, BX.c]) * hw
        box_pix = [(g[1] - offset[g[0]].view(-1, 1, 1)).reshape(-1) for g in groups]
        pixel = torch.cat([(pt[:, PT.b] * h + pt[:, PT.row]) * w + pt[:, PT.col]] + box_pix)
    lab = image_labels.long()
    n_images = {"mask": int(images.numel()), "box": int(boxes[:, BX.b].unique().numel()),
                "point": int(points[:, PT.b].unique().numel()), "image": int(image_labels[:, LB.b].unique().numel())}
    return BagIndex(sparse, images, pixel, int(inst_flat.shape[0]), int(pt_flat.shape[0]), inst_seg, inst_counts,
                    instance_classes, pt[:, PT.c], lab, groups, boxes, n_images)


def pool_from_pass(index: BagIndex, label_means: Tensor, sparse_values: Tensor,
                   dtype: torch.dtype) -> dict[str, tuple[Tensor, Tensor]]:
    """Eq. 9's pooling (:func:`dspseg.losses.pooling.pool_all`, same values) from the outputs of
    :class:`_DSPPass`: ``{type: (pooled (P_t,), classes (P_t,))}``."""
    out = {}
    inst_v, pt_v, box_v = torch.split(sparse_values, [index.n_inst, index.n_points,
                                                      sparse_values.shape[0] - index.n_inst - index.n_points])
    m = index.instance_classes.shape[0]
    if m:
        sums = inst_v.new_zeros(m + 1).index_add_(0, index.inst_seg, inst_v)  # segment m: pixels of no component
        counts = index.inst_counts
        pooled = sums[:m] / counts.clamp_min(1).to(dtype)  # as pooling._segment_mean
        out["mask"] = (pooled[counts > 0], index.instance_classes[counts > 0])
    else:
        out["mask"] = (sparse_values.new_zeros(0), index.instance_classes.new_zeros(0))
    out["point"] = (pt_v, index.point_classes)
    out["image"] = (label_means, index.labels[:, LB.c])
    if index.box_groups:
        hs, ws = box_sizes(index.boxes)
        per_group = torch.split(box_v, [g[1].numel() for g in index.box_groups])
        per_group = [vals.view(g[1].shape) for vals, g in zip(per_group, index.box_groups)]
        out["box"] = (_box_reduce(index.box_groups, per_group, hs, ws, index.boxes.shape[0]),
                      index.boxes[:, BX.c].long())
    else:
        out["box"] = (sparse_values.new_zeros(0), index.boxes[:, BX.c].long())
    return out


# --- the passes over the N×C scores (compiled when fused) ------------------------------------------
# Masks enter as 0/1 byte products (or an additive −inf bias on padding), never as torch.where
# (see dspseg.losses.normalizer._stats_kernel); x = s/τ, a = [c∈A_j] as bytes.

# With scores in [-1, 1], exp(x − 1/τ) ≥ exp(−2/τ) does not underflow in float32 while 2/τ ≤ 80
# (normalizer._FIXED_SHIFT_MAX_RANGE): the fixed shift 1/τ saves the max over classes. Otherwise (or
# when a pixel's sum is not finite, i.e. scores outside [-1, 1]) the per-pixel maximum is used.


def _softmax_stats_fixed(scores: Tensor, allowed_u8: Tensor, valid_u8: Tensor, inv_tau: float) -> tuple[Tensor, Tensor]:
    """``r_j = 1 / Σ_k exp(x_kj − 1/τ)`` (B,H,W) and ``a_c = Σ_j valid_j [c∈A_j] p_c(j)`` (C,),
    ``p_cj = exp(x_cj − 1/τ) · r_j``.

    ``allowed_u8`` (B,C,H,W), ``valid_u8`` (B,H,W): 0/1 bytes; ``p ≤ 1`` is finite, so a product masks it.
    ``p`` is normalised by a product, not as ``exp(x − lse)``: ``lse = 1/τ + log S`` rounded in float32
    would scale every ``p`` of a pixel by the same ``1 + O(eps/τ)``, the very common mode that the
    softmax gradient ``p (G − Σ p G)`` cancels (1e-4 relative errors at τ = 0.005)."""
    r = 1.0 / torch.exp(scores * inv_tau - inv_tau).sum(dim=1)
    p = torch.exp(scores * inv_tau - inv_tau) * r.unsqueeze(1)  # recomputed: no N×C buffer between the loops
    return r, _class_sums(p * (allowed_u8 * valid_u8.unsqueeze(1)))


def _softmax_stats_exact(scores: Tensor, allowed_u8: Tensor, valid_u8: Tensor,
                         inv_tau: float) -> tuple[Tensor, Tensor, Tensor]:
    """As :func:`_softmax_stats_fixed` with the per-pixel shift ``m_j = max_k x_kj``: (m, r, a)."""
    m = (scores * inv_tau).amax(dim=1)
    r = 1.0 / torch.exp(scores * inv_tau - m.unsqueeze(1)).sum(dim=1)
    p = torch.exp(scores * inv_tau - m.unsqueeze(1)) * r.unsqueeze(1)
    return m, r, _class_sums(p * (allowed_u8 * valid_u8.unsqueeze(1)))


def _softmax_dense_grad(scores: Tensor, allowed_u8: Tensor, valid_u8: Tensor, shift: Tensor, r: Tensor,
                        inv_tau: float, alpha: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    """``p_cj = exp(x_cj − m_j) · r_j`` and ``G_bcj = valid_j (α_c a_cj + γ_bc)`` (B,C,H,W), recomputed.
    ``shift``: (B,H,W) or (1,1,1) ``m``; ``r``: (B,H,W)."""
    p = torch.exp(scores * inv_tau - shift.unsqueeze(1)) * r.unsqueeze(1)
    return p, valid_u8.unsqueeze(1) * (allowed_u8 * alpha.view(1, -1, 1, 1) + gamma.unsqueeze(-1).unsqueeze(-1))


def _softmax_rho_kernel(scores: Tensor, allowed_u8: Tensor, valid_u8: Tensor, shift: Tensor, r: Tensor,
                        inv_tau: float, alpha: Tensor, gamma: Tensor, sigma: Tensor) -> Tensor:
    """``ρ_j = Σ_c p_cj G_cj + σ_j`` (B,H,W). valid_u8, r, sigma: (B,H,W); alpha: (C,); gamma: (B,C)."""
    p, g = _softmax_dense_grad(scores, allowed_u8, valid_u8, shift, r, inv_tau, alpha, gamma)
    return (p * g).sum(dim=1) + sigma


def _softmax_grad_kernel(scores: Tensor, allowed_u8: Tensor, valid_u8: Tensor, shift: Tensor, r: Tensor,
                         inv_tau: float, alpha: Tensor, gamma: Tensor, rho: Tensor) -> Tensor:
    """``∂L/∂s_kj = p_kj (G_kj − ρ_j)/τ`` (B,C,H,W), from :func:`_softmax_rho_kernel`'s ``ρ``.

    Two compiled functions rather than one: fused, inductor stores ``p`` and ``p·G`` as N×C buffers
    between the class reduction and the output; split, each pass recomputes them in registers."""
    p, g = _softmax_dense_grad(scores, allowed_u8, valid_u8, shift, r, inv_tau, alpha, gamma)
    return p * (g - rho.unsqueeze(1)) * inv_tau


def _paper_grad_kernel(scores: Tensor, allowed_u8: Tensor, bias: Tensor, valid_u8: Tensor, m: Tensor,
                       inv_tau: float, w: Tensor, wu: Tensor, gamma: Tensor) -> Tensor:
    """The normaliser's gradient (:func:`dspseg.losses.normalizer._grad_kernel`) plus ``valid_j γ_bc``."""
    e = torch.exp(scores * inv_tau - m.view(1, -1, 1, 1) + bias.unsqueeze(1))
    norm = e * (allowed_u8 * w.view(1, -1, 1, 1) + (1 - allowed_u8) * wu.view(1, -1, 1, 1))
    return norm + valid_u8.unsqueeze(1) * gamma.unsqueeze(-1).unsqueeze(-1)


_KERNELS = {"softmax_fixed": _softmax_stats_fixed, "softmax_exact": _softmax_stats_exact,
            "softmax_rho": _softmax_rho_kernel,
            "softmax_grad": _softmax_grad_kernel, "paper_grad": _paper_grad_kernel}
_compiled: dict[str, object] = {}


def _kernel(name: str, fused: bool):
    """One of the passes, compiled by ``torch.compile`` when ``fused`` (eager when no compiler works).
    Callers pass ``allowed`` as contiguous bytes (:func:`dspseg.losses.normalizer.mask_bytes`), so
    the transposed layouts of a quarter turn do not recompile."""
    if not fused:
        return _KERNELS[name]
    if name not in _compiled:
        try:
            _compiled[name] = torch.compile(_KERNELS[name], dynamic=True)
        except Exception:  # pragma: no cover - no compiler toolchain: stay correct, just slower
            _compiled[name] = _KERNELS[name]
    return _compiled[name]


def _at_entries(t: Tensor, inst_images: Tensor, pixel: Tensor) -> Tensor:
    """A per-pixel map ``t`` (B,H,W) read at the K gathered entries: the instance entries are whole
    images in order (a slice each, no index), the others through ``pixel``."""
    return torch.cat([t[inst_images].reshape(-1), t.reshape(-1).index_select(0, pixel)])


def _sum_at_pixels(v: Tensor, inst_images: Tensor, pixel: Tensor, b: int, h: int, w: int) -> Tensor:
    """The transpose of :func:`_at_entries`: (K,) values summed into their pixels, (B,H,W)."""
    n_inst = inst_images.shape[0] * h * w
    out = v.new_zeros(b, h * w).index_add_(0, inst_images, v[:n_inst].view(-1, h * w))
    return out.view(-1).index_add_(0, pixel, v[n_inst:]).view(b, h, w)


class _DSPPass(torch.autograd.Function):
    """See the module docstring. Outputs: the per-class statistic (C,) — ``log Z`` (``paper``, over
    the global batch when distributed, as :class:`dspseg.losses.normalizer._LogNormaliser`) or the
    admissible mass ``a`` (``reference``) — the image-label means (L,) and the gathered entries (K,)."""

    @staticmethod
    def forward(ctx, scores: Tensor, allowed: Tensor, valid: Tensor, labels: Tensor,  # type: ignore[override]
                sparse: Tensor, inst_images: Tensor, pixel: Tensor | None, tau: float, reference: bool, fused: bool,
                global_batch: bool):
        b, c, h, w = scores.shape
        inv_tau = 1.0 / tau
        lab_b, lab_c = labels[:, LB.b], labels[:, LB.c]
        lab_valid = valid[lab_b].to(scores.dtype)
        a_u8 = mask_bytes(allowed)
        if reference and not fused:
            # eager: ATen's softmax and its backward are one kernel each; keep p (as autograd would)
            p = torch.softmax(scores * inv_tau, dim=1)
            stat = (p * (a_u8 * mask_bytes(valid).unsqueeze(1))).sum(dim=(0, 2, 3))
            sp = p.reshape(-1).index_select(0, sparse)
            lab_maps = p[lab_b, lab_c]  # (L,H,W)
            ctx.save_for_backward(scores, allowed, valid, labels, sparse, p)
        else:
            lab_maps = scores[lab_b, lab_c]  # (L,H,W)
            sp = scores.reshape(-1).index_select(0, sparse)
        if reference and fused:
            v_u8 = mask_bytes(valid)
            r = None
            if 2.0 * inv_tau <= _FIXED_SHIFT_MAX_RANGE:
                r, stat = _kernel("softmax_fixed", fused)(scores, a_u8, v_u8, inv_tau)
                shift = scores.new_full((1, 1, 1), inv_tau)
                lo, hi = torch.aminmax(r)
                if not bool(lo > 0) or not bool(hi < float("inf")):
                    r = None  # scores outside [-1, 1]: a pixel's sum overflowed (r = 0) or underflowed (r = inf)
            if r is None:
                shift, r, stat = _kernel("softmax_exact", fused)(scores, a_u8, v_u8, inv_tau)
            if shift.numel() == 1:
                sp_shift, lab_shift = shift.reshape(1), shift
            else:
                sp_shift, lab_shift = _at_entries(shift, inst_images, pixel), shift[lab_b]
            sp = torch.exp(sp * inv_tau - sp_shift) * _at_entries(r, inst_images, pixel)
            lab_maps = torch.exp(lab_maps * inv_tau - lab_shift) * r[lab_b]
            ctx.save_for_backward(scores, allowed, valid, labels, sparse, inst_images, pixel, shift, r, sp)
        elif not reference:
            m, t, r = normaliser_statistics(scores, allowed, valid, tau, fused)
            if global_batch:
                m, t, r = _reduce_statistics(m, t, r)
            log_z = combine_log_normaliser(m.double(), t.double(), r.double())
            stat = log_z.to(scores.dtype)
            ctx.save_for_backward(scores, allowed, valid, labels, sparse, m, log_z)
        # image labels: the mean over the image's valid pixels (the count from the rows already copied)
        ctx.label_scale = 1.0 / lab_valid.sum(dim=(1, 2)).clamp_min(1)
        label_means = (lab_maps * lab_valid).sum(dim=(1, 2)) * ctx.label_scale
        ctx.tau, ctx.reference, ctx.fused, ctx.global_batch = tau, reference, fused, global_batch
        return stat, label_means, sp

    @staticmethod
    def backward(ctx, g_stat, g_lab, g_sp):  # type: ignore[override]
        scores, allowed, valid, labels, sparse, *rest = ctx.saved_tensors
        b, c, h, w = scores.shape
        dt = scores.dtype
        inv_tau = 1.0 / ctx.tau
        g_stat = scores.new_zeros(c) if g_stat is None else g_stat
        g_sp = scores.new_zeros(sparse.shape[0]) if g_sp is None else g_sp
        gamma = scores.new_zeros(b, c)
        if g_lab is not None and labels.shape[0]:
            gamma.index_put_((labels[:, LB.b], labels[:, LB.c]), g_lab * ctx.label_scale, accumulate=True)
        a_u8, v_u8 = mask_bytes(allowed), mask_bytes(valid)
        if ctx.reference and not ctx.fused:
            (p,) = rest
            g_p = v_u8.unsqueeze(1) * (a_u8 * g_stat.to(dt).view(1, -1, 1, 1) + gamma.unsqueeze(-1).unsqueeze(-1))
            g_p = g_p.contiguous()
            g_p.view(-1).index_add_(0, sparse, g_sp.to(dt))  # ∂L/∂p, then the softmax backward
            return (torch._softmax_backward_data(g_p, p, 1, dt) * inv_tau,
                    None, None, None, None, None, None, None, None, None, None)
        if ctx.reference:
            inst_images, pixel, shift, r, sp = rest
            g_e = sp * g_sp  # p_e g_e of the gathered entries
            sigma = _sum_at_pixels(g_e, inst_images, pixel, b, h, w)
            dense = (scores, a_u8, v_u8, shift, r, inv_tau, g_stat.to(dt), gamma)
            rho = _kernel("softmax_rho", ctx.fused)(*dense, sigma)
            grad = _kernel("softmax_grad", ctx.fused)(*dense, rho)
            sparse_grad = g_e * inv_tau
        else:
            m, log_z = rest
            g = g_stat.double()
            if ctx.global_batch:
                torch.distributed.all_reduce(g)  # Σ_p ∂L_p/∂ log Z: log Z depends on every process's pixels
            coef = gradient_coefficients(m, log_z, g, ctx.tau, dt)
            if coef is not None:
                grad = _kernel("paper_grad", ctx.fused)(scores, a_u8, valid_bias(valid, dt), v_u8, m, inv_tau,
                                                        *coef, gamma)
            else:
                grad = (gradient_overflow_safe(scores, allowed, valid, m, log_z, g, ctx.tau)
                        + valid.to(dt).unsqueeze(1) * gamma.unsqueeze(-1).unsqueeze(-1))
            sparse_grad = g_sp
        grad = grad.contiguous()
        if sparse.shape[0]:
            grad.view(-1).index_add_(0, sparse, sparse_grad.to(dt))
        return grad, None, None, None, None, None, None, None, None, None, None


def dsp_pass(scores: Tensor, allowed: Tensor, valid: Tensor, index: BagIndex, tau: float, variant: str,
             fused: bool = False, global_batch: bool = False) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
    """The per-class statistic and every pooled positive of eq. 9 from one autograd Function.

    Args:
        scores: (B,C,H,W) class scores; allowed: (B,C,H,W) bool; valid: (B,H,W) bool.
        index: :func:`bag_index` of the batch's bags.
        tau: temperature; variant: ``paper`` (pool ``s``, statistic ``log Z`` of eq. 8) or ``reference``
            (pool ``p = softmax(s/τ)``, statistic ``a_c = Σ_j valid_j [c∈A_j] p_c(j)``).
        fused: compile the passes over the scores; global_batch: ``log Z`` over every process (``paper``).

    Returns:
        ``(statistic (C,), {type: (pooled (P_t,), classes (P_t,))})``, the same values as the
        composition of :func:`dspseg.losses.normalizer.log_normalizer` (or ``softmax``) with
        :func:`dspseg.losses.pooling.pool_all`.
    """
    reference = variant == "reference"
    if reference and index.pixel is None:
        raise ValueError("the reference variant needs bag_index(..., with_pixels=True)")
    stat, label_means, sp = _DSPPass.apply(scores, allowed, valid, index.labels, index.sparse, index.inst_images,
                                          index.pixel, float(tau), reference, bool(fused), bool(global_batch))
    return stat, pool_from_pass(index, label_means, sp, scores.dtype)
