r"""The DSP normaliser of eq. 8, in O(N·C) time and memory.

For every class c the paper's normaliser sums, over all valid pixels j of the batch and all classes
k, the exponentiated class scores that are *negatives* for c:

.. math::

    Z_c = \sum_j \sum_k [k \ne c \;\lor\; c \notin A_j] \, e^{s_k(f_j)/\tau}
        = \sum_{k \ne c} T_k + R_c,

    T_k = \sum_j e^{s_k(f_j)/\tau}, \qquad R_c = \sum_{j:\, c \notin A_j} e^{s_c(f_j)/\tau}.

So two per-class sums over the pixels suffice; no N×N or N×C×C tensor is ever formed. Everything
is computed in log space with one shift per class (``m_k = max_j s_k/τ``): a single global shift
would underflow the classes far below the maximum when τ = 0.005.

The autograd function stores only the inputs it already has (scores, allowed, valid) and C-sized
statistics, and recomputes ``exp`` in backward instead of keeping N×C intermediates.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(scores: Tensor, allowed: Tensor, valid: Tensor, tau: float) -> None:
    if scores.ndim != 4:
        raise ValueError(f"scores must be (B,C,H,W), got shape {tuple(scores.shape)}")
    if allowed.shape != scores.shape or allowed.dtype != torch.bool:
        raise ValueError(f"allowed must be a bool tensor of shape {tuple(scores.shape)}, "
                         f"got {allowed.dtype} {tuple(allowed.shape)}")
    b, _, h, w = scores.shape
    if valid.shape != (b, h, w) or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor of shape {(b, h, w)}, got {valid.dtype} {tuple(valid.shape)}")
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")


def normaliser_statistics(x: Tensor, allowed: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class shift and shifted sums of ``exp(x)`` over the valid pixels.

    Args:
        x: (B,C,H,W) scaled scores ``s/τ``.
        allowed: (B,C,H,W) bool, ``A_j``.
        valid: (B,H,W) bool.

    Returns:
        ``m`` (C,) the per-class maximum over valid pixels, ``t`` (C,) ``Σ_j exp(x_kj − m_k)`` and
        ``r`` (C,) ``Σ_{j: k∉A_j} exp(x_kj − m_k)``; ``log T = log t + m``, ``log R = log r + m``.
    """
    v = valid.unsqueeze(1)
    neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
    m = torch.where(v, x, neg_inf).amax(dim=(0, 2, 3))
    e = torch.where(v, torch.exp(x - m.view(1, -1, 1, 1)), 0.0)
    t = e.sum(dim=(0, 2, 3))
    r = torch.where(allowed, 0.0, e).sum(dim=(0, 2, 3))
    return m, t, r


def combine_log_normaliser(m: Tensor, t: Tensor, r: Tensor) -> Tensor:
    """``log Z_c = logsumexp({log T_k : k ≠ c} ∪ {log R_c})`` from the statistics, (C,) → (C,)."""
    log_t = torch.log(t) + m
    log_r = torch.log(r) + m
    c = m.shape[0]
    eye = torch.eye(c, dtype=torch.bool, device=m.device)
    others = log_t.unsqueeze(0).expand(c, c).masked_fill(eye, float("-inf"))  # row c: log T_k, k != c
    return torch.logsumexp(torch.cat([others, log_r.unsqueeze(1)], dim=1), dim=1)


class _LogNormaliser(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, allowed: Tensor, valid: Tensor) -> Tensor:  # type: ignore[override]
        m, t, r = normaliser_statistics(x, allowed, valid)
        log_z = combine_log_normaliser(m.double(), t.double(), r.double())
        ctx.save_for_backward(x, allowed, valid, m, log_z)
        return log_z.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, allowed, valid, m, log_z = ctx.saved_tensors
        g = grad.double()
        m64 = m.double()
        c = m.shape[0]
        # d log Z_c / d x_kj = exp(x_kj − log Z_c) · ([k≠c] + [k=c][c∉A_j]); summing over c with weights g_c:
        #   grad_kj = exp(x_kj − m_k) · (w_k + [k∉A_j] · u_k),
        #   w_k = Σ_{c≠k} g_c exp(m_k − log Z_c)   (≤ |g| since log Z_c ≥ log T_k ≥ m_k for c ≠ k),
        #   u_k = g_k exp(m_k − log Z_k).
        ratio = torch.exp(m64.unsqueeze(0) - log_z.unsqueeze(1))  # [c, k] = exp(m_k − log Z_c)
        off = ~torch.eye(c, dtype=torch.bool, device=m.device)
        w = (g.unsqueeze(1) * ratio * off).sum(dim=0)
        log_u_scale = m64 - log_z
        v = valid.unsqueeze(1)
        if bool((log_u_scale < 60).all()):
            u = g * torch.exp(log_u_scale)
            e = torch.exp(x - m.view(1, -1, 1, 1))
            coef = torch.where(allowed, w.to(x.dtype).view(1, -1, 1, 1), (w + u).to(x.dtype).view(1, -1, 1, 1))
            grad_x = torch.where(v, e * coef, 0.0)
        else:
            # exp(m_k − log Z_k) would overflow: some class scores far above every other class's total.
            # Shift the R-term by log Z_k directly (x_kj ≤ log R_k ≤ log Z_k on its pixels, so ≤ 1).
            e = torch.exp(x - m.view(1, -1, 1, 1))
            e_r = torch.exp(x - log_z.to(x.dtype).view(1, -1, 1, 1))
            grad_x = e * w.to(x.dtype).view(1, -1, 1, 1) + torch.where(allowed, 0.0, e_r * g.to(x.dtype).view(1, -1, 1, 1))
            grad_x = torch.where(v, grad_x, 0.0)
        return grad_x, None, None


def log_normalizer(scores: Tensor, allowed: Tensor, valid: Tensor, tau: float) -> Tensor:
    r"""``log Z_c`` of eq. 8 over the valid pixels of the whole batch.

    Args:
        scores: (B,C,H,W) mean cosine similarities ``s_c`` in [-1, 1] (eq. 2).
        allowed: (B,C,H,W) bool admissible classes ``A_j`` (see :mod:`dspseg.data.rasterise`).
        valid: (B,H,W) bool, False on padding.
        tau: temperature τ > 0; finite down to τ = 0.005.

    Returns:
        (C,) tensor ``log Z_c``, differentiable with respect to ``scores``.

    Example:
        >>> s = torch.rand(2, 3, 4, 5) * 2 - 1
        >>> a = torch.rand(2, 3, 4, 5) > 0.5
        >>> log_normalizer(s, a, torch.ones(2, 4, 5, dtype=torch.bool), tau=0.05).shape
        torch.Size([3])
    """
    _check(scores, allowed, valid, tau)
    if not bool(valid.any()):
        raise ValueError("valid has no True pixel: the normaliser of eq. 8 needs at least one real pixel")
    return _LogNormaliser.apply(scores / tau, allowed, valid)
