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

from dspseg.models.cosine_rows import _CosineRows, cosine_rows, pixel_rows


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
