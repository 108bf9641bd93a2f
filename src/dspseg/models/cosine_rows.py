"""The prototype head's cosine scores, block by block, with a hand-written recomputing backward.

For pixel rows ``x`` (N, F) after the head's BatchNorm::

    h = LeakyReLU(x W1ᵀ + b1)        (N, D)
    r = h W2ᵀ + b2                   (N, D)
    s = (r / ‖r‖) · class_dirsᵀ      (N, C)   eq. 1–2 with class_dirs = the mean unit prototypes

:func:`cosine_rows` is the plain autograd composition (the reference, and the path inference and
``torch.export`` take); :class:`_CosineRows` computes the same scores block by block of at most
:func:`block_rows` pixels of one image, read straight from the (B, F, H, W) features, and recomputes
each block's ``h`` and ``r`` in backward instead of saving them, so no (N, D) tensor is held
(issue 13, BENCHMARKS.md). Split out of :mod:`dspseg.models.heads` so that module holds the heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pixel_rows(feats: Tensor) -> Tensor:
    """(B, F, H, W) → pixel-major rows (B·H·W, F): a copy, or a view of channels_last input."""
    return feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])


def cosine_rows(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, class_dirs: Tensor,
                slope: float, mm_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The prototype head after its BatchNorm, on pixel-major rows (differentiable torch ops)::

        h = LeakyReLU(x W1ᵀ + b1)                 (N, D)   in mm_dtype (bfloat16 under autocast)
        r = h W2ᵀ + b2                            (N, D)   the embedding before normalisation
        inv = 1 / max(‖r‖, 1e-12)                 (N, 1)   in the dtype of class_dirs (float32/64)
        s = (r · class_dirsᵀ) · inv               (N, C)   eq. 1-2: mean_k cos(f, p_c^k) = f · mean_k p_c^k

    ``x`` (N, F), ``w1`` (D, F), ``w2`` (D, D), ``class_dirs`` (C, D) = the mean over K of the unit
    prototypes of each class: the K prototypes collapse into one C×D matrix before the product. The
    row norm is applied to the (N, C) product, not to the (N, D) rows: the same value as
    normalise-then-multiply without an (N, D) unit-embedding tensor. Returns ``(h, r, inv, s, norm)``
    with r, inv, s and norm = ‖r‖ in the dtype of ``class_dirs``.
    """
    h = torch.addmm(b1.to(mm_dtype), x.to(mm_dtype), w1.to(mm_dtype).t())
    F.leaky_relu_(h, slope)
    r = torch.addmm(b2.to(mm_dtype), h, w2.to(mm_dtype).t()).to(class_dirs.dtype)
    norm = torch.linalg.vector_norm(r, dim=1, keepdim=True)
    inv = 1.0 / norm.clamp_min(1e-12)
    return h, r, inv, (r @ class_dirs.t()) * inv, norm


def block_rows(device: torch.device) -> int:
    """Rows per block of :class:`_CosineRows`: a few MB of (rows, D) buffers that stay in cache on a
    CPU; on an accelerator large blocks (few kernel launches) that still bound the head's memory."""
    return 8192 if device.type == "cpu" else 1 << 18


class _CosineRows(torch.autograd.Function):
    """:func:`cosine_rows`' scores, block by block of rows, with a hand-written backward that
    recomputes h and r per block instead of saving them.

    No (N, D) tensor is ever allocated: forward writes only the scores (N, C), backward only the
    input gradient (N, F); each block's h, r and their gradients live in small reused buffers (in
    cache on a CPU, and no page faults on fresh (N, D) allocations: those cost as much as the
    arithmetic here). The price is one more pass of the two products in backward (~+30 % of the
    head's FLOPs). With g = ∂L/∂s (N, C) and s = raw · inv, per block::

        ∂L/∂r = (g·inv) class_dirs − r · inv² Σ_c g_c s_c        (the second term 0 where ‖r‖ < 1e-12)
        ∂L/∂class_dirs = Σ_blocks (g·inv)ᵀ r

    then the backward of the two products and of the LeakyReLU (in place); weight gradients are
    summed over blocks. Saved tensors are never modified, so backward may run more than once
    (``retain_graph``); double backward is not supported.
    """

    @staticmethod
    def _blocks(feats: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, slope: float, mm: torch.dtype,
                score_dtype: torch.dtype):
        """Yield (rows slice, pixel-rows view of the gradient's image, its slice, x block, h block,
        r block in score_dtype) per block of one image's pixels, reusing the block buffers.

        The x block is a (n, F) view of the (B, F, H, W) features, in either memory layout (for NCHW a
        transposed view, which the matrix products read as such): no pixel-major copy is made.
        """
        bsz, f, height, width = feats.shape
        hw, step = height * width, block_rows(feats.device)
        w1t, w2t, b1, b2 = w1.to(mm).t(), w2.to(mm).t(), b1.to(mm), b2.to(mm)
        hbuf = feats.new_empty((min(step, hw), w1.shape[0]), dtype=mm)
        rbuf = torch.empty_like(hbuf)
        for b in range(bsz):
            image = feats[b].permute(1, 2, 0).reshape(hw, f)  # a view in both layouts
            for i in range(0, hw, step):
                sl = slice(i, min(i + step, hw))
                xb = image[sl].to(mm)
                n = xb.shape[0]
                hb = F.leaky_relu_(torch.addmm(b1, xb, w1t, out=hbuf[:n]), slope)
                rb = torch.addmm(b2, hb, w2t, out=rbuf[:n])
                yield b, sl, slice(b * hw + sl.start, b * hw + sl.stop), xb, hb, rb.to(score_dtype)

    @staticmethod
    def forward(ctx, feats, w1, b1, w2, b2, class_dirs, slope, mm_dtype):  # noqa: ANN001, ANN205
        if not (feats.is_contiguous() or feats.is_contiguous(memory_format=torch.channels_last)):
            feats = feats.contiguous()  # the per-image row views below need one of the two dense layouts
        bsz, _, height, width = feats.shape
        s = feats.new_empty((bsz * height * width, class_dirs.shape[0]), dtype=class_dirs.dtype)
        dirs_t = class_dirs.t()
        for _, _, rows, _, _, rb in _CosineRows._blocks(feats, w1, b1, w2, b2, slope, mm_dtype, class_dirs.dtype):
            inv = torch.linalg.vector_norm(rb, dim=1, keepdim=True).clamp_min_(1e-12).reciprocal_()
            torch.mm(rb, dirs_t, out=s[rows]).mul_(inv)
        ctx.save_for_backward(feats, w1, b1, w2, b2, class_dirs, s)
        ctx.slope, ctx.mm_dtype = slope, mm_dtype
        return s

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):  # noqa: ANN001, ANN205
        feats, w1, b1, w2, b2, class_dirs, s = ctx.saved_tensors
        mm, sd = ctx.mm_dtype, class_dirs.dtype
        g = g.to(sd)
        w1m, w2m = w1.to(mm), w2.to(mm)
        g_feats = torch.empty_like(feats)  # the features' memory layout: BatchNorm backward is ~2× slower otherwise
        g_w1, g_b1 = torch.zeros_like(w1), torch.zeros_like(b1)
        g_w2, g_b2 = torch.zeros_like(w2), torch.zeros_like(b2)
        g_dirs = torch.zeros_like(class_dirs)
        grbuf = ghbuf = ones = None
        hw = feats.shape[2] * feats.shape[3]
        for b, sl, rows, xb, hb, rb in _CosineRows._blocks(feats, w1, b1, w2, b2, ctx.slope, mm, sd):
            norm = torch.linalg.vector_norm(rb, dim=1, keepdim=True)
            inv = norm.clamp_min(1e-12).reciprocal_()
            gb = g[rows]
            gi = gb * inv
            beta = (gb * s[rows]).sum(1, keepdim=True).mul_(inv).mul_(inv).neg_().masked_fill_(norm < 1e-12, 0.0)
            g_dirs.addmm_(gi.t(), rb)
            if grbuf is None:
                grbuf, ghbuf, ones = torch.empty_like(rb), torch.empty_like(hb), hb.new_ones(hb.shape[0])
            n = hb.shape[0]
            g_r = torch.mm(gi, class_dirs, out=grbuf[:n]).addcmul_(rb, beta).to(mm)
            g_w2.add_(g_r.t() @ hb)
            g_b2.add_(g_r.t().mv(ones[:n]))  # bias gradients as products: faster than sum(0)
            g_h = torch.mm(g_r, w2m, out=ghbuf[:n])
            torch.ops.aten.leaky_relu_backward.grad_input(g_h, hb, ctx.slope, True, grad_input=g_h)  # in place
            g_w1.add_(g_h.t() @ xb)
            g_b1.add_(g_h.t().mv(ones[:n]))
            g_feats[b].permute(1, 2, 0).reshape(hw, -1)[sl].copy_(g_h @ w1m)
        return g_feats, g_w1, g_b1, g_w2, g_b2, g_dirs, None, None
