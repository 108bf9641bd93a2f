"""Segmentation heads and the backbone + head wrapper.

Every head maps backbone features (B, F, H, W) to a dict that always holds ``"logits"``
(B, C, H, W); the hard prediction is ``logits.argmax(1)``.

* :class:`LinearHead` — a 1×1 convolution: ``{"logits"}``.
* :class:`PrototypeHead` — the DSP head (paper §3.2–3.3, §5.2)::

      f = normalize(conv1x1_D(LeakyReLU(conv1x1_D(BatchNorm(x)))))           (B, D, H, W), ‖f‖ = 1
      p_c^k = prototypes[c, k] / ‖prototypes[c, k]‖                          (C, K, D)
      s_c(f) = 1/K · Σ_k cos(f, p_c^k) = f · (1/K · Σ_k p_c^k)                (eq. 1–2), in [-1, 1]
      logits = s / tau                                                      (eq. 3 before softmax)

  Because f has unit norm, eq. 2 is one 1×1 convolution with the mean prototype of each class as
  weight, so no loop over classes or prototypes is needed. The prototypes are re-normalised on every
  forward (differentiably); the stored parameter itself is only rescaled by :meth:`renormalize_`.
  Scores are computed in float32 even under autocast: with tau = 0.005 a bfloat16 score error of
  4e-3 would move a logit by 0.8. Argmax of logits equals argmax of scores (tau > 0).

  Speed and memory: the stages after the BatchNorm run block by block of pixel rows with a
  hand-written backward that recomputes each block (:class:`_CosineRows`), so neither the D-wide
  embedding nor its gradient is ever held for the whole batch (issue 13: at width 16 on CPU the
  head's forward + backward went from 275 to 146 ms per 16 × 96² batch, BENCHMARKS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_feats(name: str, feats: Tensor, in_channels: int) -> None:
    if feats.ndim != 4 or feats.shape[1] != in_channels:
        raise ValueError(
            f"{name}.forward: features must have shape (B, {in_channels}, H, W), got {tuple(feats.shape)}"
        )


def _positive_int(owner: str, name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


class LinearHead(nn.Module):
    """1×1 convolution (Xavier weights, zero bias): features (B, F, H, W) → {"logits": (B, C, H, W)}."""

    def __init__(self, in_channels: int, n_classes: int) -> None:
        super().__init__()
        _positive_int("LinearHead", "in_channels", in_channels)
        _positive_int("LinearHead", "n_classes", n_classes)
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.conv = nn.Conv2d(in_channels, n_classes, 1)
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, feats: Tensor) -> dict[str, Tensor]:
        _check_feats("LinearHead", feats, self.in_channels)
        return {"logits": self.conv(feats)}


class PrototypeHead(nn.Module):
    """DSP prototype head: cosine scores between unit pixel embeddings and learned class prototypes.

    Args:
        in_channels: F, channels of the backbone features.
        n_classes: C.
        n_prototypes: K prototypes per class (paper: 5).
        embed_dim: D, embedding dimension (paper: 64).
        tau: temperature, logits = scores / tau (paper: 0.05), > 0.
        return_embeddings: also return the unit embeddings f (an extra (B·H·W, D) tensor per
            forward, which no built-in method needs; off by default).

    Returns from forward: ``{"scores": (B, C, H, W) in [-1, 1], "logits": scores / tau}`` and, with
    ``return_embeddings``, ``"embeddings": (B, D, H, W)`` unit-norm; float32 (float64 for float64 input).
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        n_prototypes: int = 5,
        embed_dim: int = 64,
        tau: float = 0.05,
        return_embeddings: bool = False,
    ) -> None:
        super().__init__()
        _positive_int("PrototypeHead", "in_channels", in_channels)
        _positive_int("PrototypeHead", "n_classes", n_classes)
        _positive_int("PrototypeHead", "n_prototypes", n_prototypes)
        _positive_int("PrototypeHead", "embed_dim", embed_dim)
        if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not tau > 0:
            raise ValueError(f"PrototypeHead: tau must be a positive number, got {tau!r}")
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.n_prototypes = n_prototypes
        self.embed_dim = embed_dim
        self.tau = float(tau)
        self.return_embeddings = bool(return_embeddings)
        self.embed = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, embed_dim, 1),
            nn.LeakyReLU(inplace=True),
            nn.Conv2d(embed_dim, embed_dim, 1),
        )
        for m in self.embed.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        p = torch.randn(n_classes, n_prototypes, embed_dim)
        self.prototypes = nn.Parameter(F.normalize(p, dim=-1))

    def normalized_prototypes(self, dtype: torch.dtype | None = None) -> Tensor:
        """Unit-norm prototypes p_c^k, (C, K, D), differentiable w.r.t. :attr:`prototypes`."""
        p = self.prototypes if dtype is None else self.prototypes.to(dtype)
        return F.normalize(p, dim=-1)

    @torch.no_grad()
    def renormalize_(self) -> None:
        """Rescale the stored prototypes to unit norm in place (e.g. after an optimiser step, so
        weight decay does not shrink them); forward results do not change."""
        self.prototypes.copy_(F.normalize(self.prototypes, dim=-1))

    def forward(self, feats: Tensor) -> dict[str, Tensor]:
        """(B, F, H, W) → {"scores", "logits"} (B, C, H, W) (and {"embeddings"} (B, D, H, W) if asked).

        Everything after the BatchNorm runs on pixel-major (B·H·W, ·) rows (:func:`cosine_rows`): on
        CPUs the 1×1 convolutions are ~30 % faster as matrix products on rows than as NCHW
        convolutions (the state dict is unchanged). When a gradient is needed, :class:`_CosineRows`
        runs those stages block by block with one hand-written backward (same values). (The BatchNorm stays on the NCHW map: run on
        the rows viewed as (B·H·W, F, 1, 1) it is faster on CPU, but torch's kernel for that layout
        sums less accurately, which moved the input gradient by up to 7 % relative.) The outputs are
        channel-first views of pixel-major memory.
        """
        _check_feats("PrototypeHead", feats, self.in_channels)
        bn, conv1, act, conv2 = self.embed
        b, f, h, w = feats.shape
        normed = bn(feats)
        device = normed.device.type
        mm_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else normed.dtype
        # the scores in float32 (float64 if given), also under autocast
        score_dtype = torch.promote_types(torch.promote_types(normed.dtype, mm_dtype), torch.float32)
        args = (conv1.weight.flatten(1), conv1.bias, conv2.weight.flatten(1), conv2.bias,
                self.normalized_prototypes(score_dtype).mean(dim=1), act.negative_slope, mm_dtype)
        with torch.autocast(device_type=device, enabled=False):
            # the blocked Function loops over images in Python: only for training steps, not for
            # inference (no backward to save) nor under torch.export/compile (a dynamic batch size)
            if self.return_embeddings or not torch.is_grad_enabled() or torch.compiler.is_compiling():
                r, inv, scores = cosine_rows(pixel_rows(normed), *args)[1:4]
            else:
                scores = _CosineRows.apply(normed, *args)
        scores = scores.view(b, h, w, -1).permute(0, 3, 1, 2)
        out = {"scores": scores, "logits": scores / self.tau}
        if self.return_embeddings:
            out["embeddings"] = (r * inv).view(b, h, w, -1).permute(0, 3, 1, 2)  # unit embeddings f
        return out


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


class SegmentationModel(nn.Module):
    """Backbone + head (+ optional auxiliary heads used only in training).

    ``backbone`` is any module mapping (B, Cin, H, W) to a feature map (B, F, H, W) and exposing
    ``out_channels`` (= F); ``head`` maps that feature map to a dict with ``"logits"`` (a head that
    returns a bare tensor is treated as returning logits). ``forward`` returns the head's dict.

    ``aux`` (an :class:`~torch.nn.ModuleDict`, possibly empty) holds auxiliary heads (e.g. the
    classification branch of ``clsbranch``): each maps ``(features, valid)`` — features
    (B, F, H, W) and ``valid`` (B, H, W) bool or None (= every pixel valid) — to a tensor, returned
    as ``"aux_<name>"`` from the *same* backbone features. They run only when asked: by default in
    training mode, never in eval mode (so evaluation and prediction do not pay for them).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, aux: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        if not hasattr(backbone, "out_channels"):
            raise ValueError(
                f"SegmentationModel: backbone {type(backbone).__name__} has no attribute "
                "'out_channels'; set it to the number of channels of the feature map it returns"
            )
        self.backbone = backbone
        self.head = head
        aux = dict(aux or {})
        for name, module in aux.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"SegmentationModel: auxiliary head names must be identifiers, got {name!r}")
            if not isinstance(module, nn.Module):
                raise TypeError(f"SegmentationModel: auxiliary head {name!r} must be an nn.Module, "
                                f"got {type(module).__name__}")
        self.aux = nn.ModuleDict(aux)

    def forward(self, x: Tensor, valid: Tensor | None = None, aux: bool | None = None) -> dict[str, Tensor]:
        """(B, Cin, H, W) → {"logits": (B, C, H, W), ...head-specific entries, "aux_<name>": ...}.

        ``valid`` (B, H, W) bool marks real (non-padding) pixels for the auxiliary heads; ``aux``
        forces them on (True) or off (False); None computes them exactly in training mode.
        """
        feats = self.backbone(x)
        out = self.head(feats)
        if isinstance(out, Tensor):
            out = {"logits": out}
        elif not isinstance(out, dict) or "logits" not in out:
            raise TypeError(
                f"SegmentationModel: head {type(self.head).__name__} must return a tensor or a dict "
                f"with 'logits', got {type(out).__name__}"
            )
        if len(self.aux) and (self.training if aux is None else aux):
            if valid is not None and (valid.shape != (x.shape[0], *x.shape[2:]) or valid.dtype != torch.bool):
                raise ValueError(f"SegmentationModel.forward: valid must be a bool tensor of shape "
                                 f"{(x.shape[0], *x.shape[2:])}, got {valid.dtype} {tuple(valid.shape)}")
            out = dict(out)
            for name, module in self.aux.items():
                out[f"aux_{name}"] = module(feats, valid)
        return out
