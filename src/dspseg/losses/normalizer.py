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


def _class_sums(e: Tensor) -> Tensor:
    """``Σ_{b,h,w} e`` per class, (B,C,H,W) → (C,): first along the contiguous rows (short, vectorised
    reductions), then the rest; compiled, one sum over all of (B,H,W) is about twice as slow on CPU
    (inductor's cascaded accumulation for long float32 reductions)."""
    return e.sum(dim=3).sum(dim=(0, 2))


def _stats_kernel(scores: Tensor, allowed_u8: Tensor, bias: Tensor, m: Tensor, inv_tau: float) -> tuple[Tensor, Tensor]:
    """``t_k = Σ_j exp(s_kj/τ − m_k)`` and ``r_k`` (same over ``k ∉ A_j``), valid pixels only: one pass.

    ``allowed_u8``: (B,C,H,W) ``A_j`` as 0/1 bytes; ``bias``: (B,H,W) 0 on valid pixels, −inf on
    padding (so ``exp`` is exactly 0 there). Masks enter as products and an additive −inf, not as
    ``torch.where``: compiled on CPU, a vector blend with a bool mask costs several times the exp."""
    e = torch.exp(scores * inv_tau - m.view(1, -1, 1, 1) + bias.unsqueeze(1))
    return _class_sums(e), _class_sums(e * (1 - allowed_u8))


def _grad_kernel(scores: Tensor, allowed_u8: Tensor, bias: Tensor, m: Tensor, inv_tau: float,
                 w: Tensor, wu: Tensor) -> Tensor:
    """``exp(s_kj/τ − m_k) · (w_k if k ∈ A_j else wu_k)`` on valid pixels, 0 elsewhere: one pass
    (``a·w + (1−a)·wu`` is exact for ``a ∈ {0, 1}``)."""
    e = torch.exp(scores * inv_tau - m.view(1, -1, 1, 1) + bias.unsqueeze(1))
    return e * (allowed_u8 * w.view(1, -1, 1, 1) + (1 - allowed_u8) * wu.view(1, -1, 1, 1))


_compiled: dict[str, object] = {}


def _kernels(fused: bool):
    """The two elementwise kernels, fused by ``torch.compile`` when asked and available.

    Fusion matters here: in eager mode each of exp, mul and sum is its own pass over the N×C
    scores (≈2–3× a cross-entropy); compiled, the forward and the backward are one pass each.
    Both take ``(scores, allowed, valid, m, inv_tau[, w, wu])`` (see :func:`_same_layout`).
    """
    if not fused:
        return _same_layout(_stats_kernel), _same_layout(_grad_kernel)
    if "stats" not in _compiled:
        try:
            _compiled["stats"] = _same_layout(torch.compile(_stats_kernel, dynamic=True))
            _compiled["grad"] = _same_layout(torch.compile(_grad_kernel, dynamic=True))
        except Exception:  # pragma: no cover - no compiler toolchain: stay correct, just slower
            _compiled["stats"], _compiled["grad"] = _same_layout(_stats_kernel), _same_layout(_grad_kernel)
    return _compiled["stats"], _compiled["grad"]


def valid_bias(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """(B,H,W) ``0`` on valid pixels, ``−inf`` on padding: added to an exponent, it zeroes padding exactly."""
    return torch.log(valid.to(dtype))


def mask_bytes(mask: Tensor) -> Tensor:
    """A bool mask (``allowed``, ``valid``) as contiguous 0/1 ``uint8`` (a view when already contiguous)."""
    return mask.contiguous().view(torch.uint8)


def _same_layout(kernel):
    """Call ``kernel`` with ``allowed`` as contiguous bytes and ``valid`` as an additive −inf bias:
    contiguous because the weak view's quarter turns give them transposed strides on some steps, and
    every new stride pattern would recompile the kernel (seconds each, and past torch's recompile
    limit it silently falls back to eager). ``scores`` keep the one layout the prototype head always
    gives them."""

    def call(scores: Tensor, allowed: Tensor, valid: Tensor, *rest):
        return kernel(scores, mask_bytes(allowed), valid_bias(valid, scores.dtype), *rest)

    return call


# With scores in [-1, 1], exp(s/τ − 1/τ) ≥ exp(−2/τ): no float32 underflow while 2/τ ≤ 80, so the
# fixed shift m_k = 1/τ saves the max pass. Smaller τ needs the per-class maximum.
_FIXED_SHIFT_MAX_RANGE = 80.0


def normaliser_statistics(scores: Tensor, allowed: Tensor, valid: Tensor, tau: float,
                          fused: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class shift and shifted sums of ``exp(s/τ)`` over the valid pixels.

    Args:
        scores: (B,C,H,W) class scores ``s`` (mean cosines, in [-1, 1]).
        allowed: (B,C,H,W) bool, ``A_j``.
        valid: (B,H,W) bool.

    Returns:
        ``m`` (C,) the shift, ``t`` (C,) ``Σ_j exp(s_kj/τ − m_k)`` and ``r`` (C,)
        ``Σ_{j: k∉A_j} exp(s_kj/τ − m_k)``; ``log T = log t + m``, ``log R = log r + m``.
    """
    stats, _ = _kernels(fused)
    inv_tau = 1.0 / tau
    c = scores.shape[1]
    if 2.0 * inv_tau <= _FIXED_SHIFT_MAX_RANGE:
        m = scores.new_full((c,), inv_tau)
        t, r = stats(scores, allowed, valid, m, inv_tau)
        if bool(torch.isfinite(t).all() and (t > 0).all()):
            return m, t, r
        # scores outside [-1, 1] (not cosines): fall through to the exact per-class maximum
    m = (scores + valid_bias(valid, scores.dtype).unsqueeze(1)).amax(dim=(0, 2, 3)) * inv_tau
    t, r = stats(scores, allowed, valid, m, inv_tau)
    return m, t, r


def combine_log_normaliser(m: Tensor, t: Tensor, r: Tensor) -> Tensor:
    """``log Z_c = logsumexp({log T_k : k ≠ c} ∪ {log R_c})`` from the statistics, (C,) → (C,)."""
    log_t = torch.log(t) + m
    log_r = torch.log(r) + m
    c = m.shape[0]
    eye = torch.eye(c, dtype=torch.bool, device=m.device)
    others = log_t.unsqueeze(0).expand(c, c).masked_fill(eye, float("-inf"))  # row c: log T_k, k != c
    return torch.logsumexp(torch.cat([others, log_r.unsqueeze(1)], dim=1), dim=1)


def world_size() -> int:
    """Processes of the running ``torch.distributed`` job (1 when not distributed)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _reduce_statistics(m: Tensor, t: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Combine every process's shifted sums into the global batch's: max of the shifts, then the sums
    rescaled to the common shift and added (one all-reduce each)."""
    dist = torch.distributed
    m_all = m.clone()
    dist.all_reduce(m_all, op=dist.ReduceOp.MAX)
    scale = torch.exp(m - m_all)  # ≤ 1; 0 for a process without valid pixels (m = −inf)
    tr = torch.stack([t * scale, r * scale])
    dist.all_reduce(tr, op=dist.ReduceOp.SUM)
    return m_all, tr[0], tr[1]


class _LogNormaliser(torch.autograd.Function):
    """Eq. 8 over the valid pixels of the (global) batch.

    Distributed (``global_batch``): every process holds a slice of the batch. Forward all-reduces
    the C-sized statistics, so every process gets the global ``log Z``. Backward all-reduces the
    incoming gradient ``g = ∂L_p/∂ log Z`` (sum over processes), so each process writes
    ``∂(Σ_p L_p)/∂s`` for its own pixels — with DDP's gradient averaging, the parameters receive the
    gradient of ``(1/P) Σ_p L_p``, the same as one process on the whole batch when each ``L_p`` is
    scaled accordingly (see :func:`dspseg.losses.dsp.dsp_loss`).
    """

    @staticmethod
    def forward(ctx, scores: Tensor, allowed: Tensor, valid: Tensor, tau: float, fused: bool,  # type: ignore[override]
                global_batch: bool) -> Tensor:
        m, t, r = normaliser_statistics(scores, allowed, valid, tau, fused)
        if global_batch:
            m, t, r = _reduce_statistics(m, t, r)
        log_z = combine_log_normaliser(m.double(), t.double(), r.double())
        ctx.save_for_backward(scores, allowed, valid, m, log_z)
        ctx.tau, ctx.fused, ctx.global_batch = tau, fused, global_batch
        return log_z.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        scores, allowed, valid, m, log_z = ctx.saved_tensors
        g = grad.double()
        if ctx.global_batch:
            torch.distributed.all_reduce(g)  # Σ_p ∂L_p/∂ log Z: log Z depends on every process's pixels
        coef = gradient_coefficients(m, log_z, g, ctx.tau, scores.dtype)
        if coef is not None:
            _, grad_kernel = _kernels(ctx.fused)
            grad_s = grad_kernel(scores, allowed, valid, m, 1.0 / ctx.tau, *coef)
        else:
            grad_s = gradient_overflow_safe(scores, allowed, valid, m, log_z, g, ctx.tau)
        return grad_s, None, None, None, None, None


def _w(m64: Tensor, log_z: Tensor, g: Tensor) -> Tensor:
    """``w_k = Σ_{c≠k} g_c exp(m_k − log Z_c)`` (C,), float64."""
    c = m64.shape[0]
    ratio = torch.exp(m64.unsqueeze(0) - log_z.unsqueeze(1))  # [c, k] = exp(m_k − log Z_c)
    off = ~torch.eye(c, dtype=torch.bool, device=m64.device)
    return (g.unsqueeze(1) * ratio * off).sum(dim=0)


def gradient_coefficients(m: Tensor, log_z: Tensor, g: Tensor, tau: float,
                          dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
    r"""The two (C,) coefficients of ``∂(Σ_c g_c log Z_c)/∂s`` for :func:`_grad_kernel`.

    With ``x = s/τ``: ``∂ log Z_c / ∂x_kj = exp(x_kj − log Z_c) · ([k≠c] + [k=c][c∉A_j])``. Weighted
    by ``g_c``:

    .. math::

        ∂/∂x_{kj} = e^{x_{kj} − m_k} (w_k + [k∉A_j] u_k), \quad
        w_k = \sum_{c≠k} g_c e^{m_k − \log Z_c}, \quad u_k = g_k e^{m_k − \log Z_k},

    and ``∂/∂s = ∂/∂x · 1/τ``. Returns ``(w/τ, (w+u)/τ)`` in ``dtype`` (the coefficients on
    admissible and on non-admissible entries), or ``None`` when ``exp(m_k − log Z_k)`` would
    overflow (then use :func:`gradient_overflow_safe`). ``m, log_z, g``: (C,); ``g`` float64.
    """
    m64 = m.double()
    w = _w(m64, log_z, g)
    log_u_scale = m64 - log_z
    if not bool((log_u_scale < 60).all()):
        return None
    u = g * torch.exp(log_u_scale)
    inv_tau = 1.0 / tau
    return (w * inv_tau).to(dtype), ((w + u) * inv_tau).to(dtype)


def gradient_overflow_safe(scores: Tensor, allowed: Tensor, valid: Tensor, m: Tensor, log_z: Tensor, g: Tensor,
                           tau: float) -> Tensor:
    """``∂(Σ_c g_c log Z_c)/∂s`` (B,C,H,W) when class k's scores lie far above every other class's total:
    the R-term is shifted by ``log Z_k`` directly (``x_kj ≤ log R_k ≤ log Z_k`` on its pixels, so ≤ 1)."""
    inv_tau = 1.0 / tau
    dt = scores.dtype
    w = _w(m.double(), log_z, g)
    x = scores * inv_tau
    e = torch.exp(x - m.view(1, -1, 1, 1))
    e_r = torch.exp(x - log_z.to(dt).view(1, -1, 1, 1))
    grad_x = e * w.to(dt).view(1, -1, 1, 1) + torch.where(allowed, 0.0, e_r * g.to(dt).view(1, -1, 1, 1))
    return torch.where(valid.unsqueeze(1), grad_x, 0.0) * inv_tau


def log_normalizer(scores: Tensor, allowed: Tensor, valid: Tensor, tau: float, fused: bool = False,
                   global_batch: bool | None = None) -> Tensor:
    r"""``log Z_c`` of eq. 8 over the valid pixels of the whole batch.

    Args:
        scores: (B,C,H,W) mean cosine similarities ``s_c`` in [-1, 1] (eq. 2).
        allowed: (B,C,H,W) bool admissible classes ``A_j`` (see :mod:`dspseg.data.rasterise`).
        valid: (B,H,W) bool, False on padding.
        tau: temperature τ > 0; finite down to τ = 0.005.
        fused: run the two elementwise passes through ``torch.compile`` (faster for large
            batches; the first call compiles for a few seconds).
        global_batch: normalise over the batch of *every* process of a ``torch.distributed`` job
            (default: whenever one is running with more than one process).

    Returns:
        (C,) tensor ``log Z_c``, differentiable with respect to ``scores``.

    Example:
        >>> s = torch.rand(2, 3, 4, 5) * 2 - 1
        >>> a = torch.rand(2, 3, 4, 5) > 0.5
        >>> log_normalizer(s, a, torch.ones(2, 4, 5, dtype=torch.bool), tau=0.05).shape
        torch.Size([3])
    """
    _check(scores, allowed, valid, tau)
    if global_batch is None:
        global_batch = world_size() > 1
    if not global_batch and not bool(valid.any()):
        raise ValueError("valid has no True pixel: the normaliser of eq. 8 needs at least one real pixel")
    return _LogNormaliser.apply(scores, allowed, valid, float(tau), bool(fused), bool(global_batch))
