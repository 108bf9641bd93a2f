r"""Graph-constrained contrastive regularisation (Con2R; Reiß et al., ECCV 2022), in 2D.

Per image, a query set Q and a neighbour set K of N and M sampled pixels, each with an embedding
(D), a position (row, col) and a class distribution (C). Two target graphs and one embedding graph:

    positional   P_ij = Π_{a ∈ {row, col}} max(0, r − |pos_i,a − pos_j,a|) / r
                 (overlap fraction of the r × r receptive windows around i and j; 0 beyond r)
    semantic     S_ij = exp(−½ KL(q_i ‖ n_j) − ½ KL(n_j ‖ q_i))         q_i, n_j: class distributions
    target       T = α · rows(P) + (1 − α) · rows(S)          ("mix", the authors' reference code)
                 T = rows(P ⊙ S)                               ("product")
                 rows(·) normalises every row to sum 1 (query → neighbour); T' is the same with
                 columns (neighbour → query). P is floored at ε first, so a row with no neighbour
                 inside its window is uniform in its positional part.
    embedding    E_ij = ⟨ê_i, ê_j⟩ / τ,   ê = e / ‖e‖

    L_Con2R = ½ · mean_i [ −Σ_j T_ij  log softmax_j(E_i·)|_{K detached} ]
            + ½ · mean_j [ −Σ_i T'_ij log softmax_i(E_·j)|_{Q detached} ]

T and T' are constants (stop-gradient): the class distributions and positions never receive a
gradient; the first direction moves only the queries, the second only the neighbours. Each
direction is a cross-entropy H(T, softmax E) = H(T) + KL(T ‖ softmax E) ≥ H(T).

Memory is O(B · N · M) (the graphs) plus O(B · (N + M) · (C + D)) — the symmetric KL is two
matrix products, never an N × M × C tensor — and never grows with the image size.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-7


def _check(name: str, x: Tensor, ndim: int, what: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"con2r: {name} must have shape {what}, got {tuple(x.shape)}")


def positional_affinity(pos_q: Tensor, pos_n: Tensor, window: int) -> Tensor:
    """P_ij: overlap fraction of the ``window × window`` receptive fields of query i and neighbour j.

    Shapes: pos_q (B, N, 2), pos_n (B, M, 2) pixel coordinates [row, col] → (B, N, M) in [0, 1];
    1 at equal positions, 0 when the positions differ by ``window`` or more along either axis.
    """
    _check("pos_q", pos_q, 3, "(B, N, 2)")
    _check("pos_n", pos_n, 3, "(B, M, 2)")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"con2r: window must be a positive integer, got {window!r}")
    q, n = pos_q.float(), pos_n.float()
    overlap = None
    for axis in range(2):  # one (B, N, M) tensor per axis, no (B, N, M, 2) intermediate
        diff = (q[:, :, None, axis] - n[:, None, :, axis]).abs_()
        part = (window - diff).clamp_(min=0).div_(window)
        overlap = part if overlap is None else overlap.mul_(part)
    return overlap


def semantic_affinity(prob_q: Tensor, prob_n: Tensor, eps: float = EPS) -> Tensor:
    """S_ij = exp(−½ KL(q_i‖n_j) − ½ KL(n_j‖q_i)) from class distributions, without gradient.

    Shapes: prob_q (B, N, C), prob_n (B, M, C), rows summing to 1 (zeros allowed: a class the
    annotation forbids) → (B, N, M) in (0, 1]. ``log`` is taken of ``max(p, eps)``, so a class with
    mass on one side and none on the other costs about ``p · log(1/eps)``.
    """
    _check("prob_q", prob_q, 3, "(B, N, C)")
    _check("prob_n", prob_n, 3, "(B, M, C)")
    with torch.no_grad():
        q, n = prob_q.detach().float(), prob_n.detach().float()
        log_q, log_n = q.clamp_min(eps).log(), n.clamp_min(eps).log()
        neg_ent_q = torch.xlogy(q, q).sum(-1)  # Σ_c q log q, (B, N)
        neg_ent_n = torch.xlogy(n, n).sum(-1)  # (B, M)
        # KL(q‖n) + KL(n‖q) = Σ q log q + Σ n log n − q·log n − n·log q
        sym = (neg_ent_q[:, :, None] + neg_ent_n[:, None, :]
               - q @ log_n.transpose(1, 2) - log_q @ n.transpose(1, 2))
        return torch.exp(-0.5 * sym.clamp_min(0))


def target_graphs(positional: Tensor, semantic: Tensor, alpha: float = 0.5,
                  combine: Literal["mix", "product"] = "mix") -> tuple[Tensor, Tensor]:
    """(T, T'): target graphs normalised over neighbours (rows) and over queries (columns).

    Shapes: positional, semantic (B, N, M) → two (B, N, M) tensors without gradient;
    ``T.sum(-1) == 1`` and ``T'.sum(-2) == 1``. ``alpha`` weighs the positional graph in "mix".
    """
    if positional.shape != semantic.shape:
        raise ValueError(f"con2r: positional {tuple(positional.shape)} and semantic {tuple(semantic.shape)} "
                         "affinities must have the same shape")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"con2r: alpha must be in [0, 1], got {alpha}")
    with torch.no_grad():
        pos = positional.detach().float().clamp_min(EPS)
        sem = semantic.detach().float()
        if combine == "mix":
            rows = alpha * pos / pos.sum(-1, keepdim=True) + (1 - alpha) * sem / (sem.sum(-1, keepdim=True) + EPS)
            cols = alpha * pos / pos.sum(-2, keepdim=True) + (1 - alpha) * sem / (sem.sum(-2, keepdim=True) + EPS)
        elif combine == "product":
            joint = (pos * sem).clamp_min(EPS * EPS)
            rows, cols = joint / joint.sum(-1, keepdim=True), joint / joint.sum(-2, keepdim=True)
        else:
            raise ValueError(f"con2r: combine must be 'mix' or 'product', got {combine!r}")
        return rows, cols


def graph_cross_entropy(emb_q: Tensor, emb_n: Tensor, rows: Tensor, cols: Tensor, tau: float = 0.1,
                        weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The two directions of L_Con2R (each without the ½), as (query → neighbour, neighbour → query).

    Shapes: emb_q (B, N, D), emb_n (B, M, D), rows/cols (B, N, M) from :func:`target_graphs`;
    ``weight`` (B,) optional per-image weights (mean over images weighted by it). The first term
    only back-propagates into ``emb_q``, the second only into ``emb_n``.
    """
    _check("emb_q", emb_q, 3, "(B, N, D)")
    _check("emb_n", emb_n, 3, "(B, M, D)")
    if rows.shape != (emb_q.shape[0], emb_q.shape[1], emb_n.shape[1]) or cols.shape != rows.shape:
        raise ValueError(f"con2r: target graphs must have shape (B, N, M) = "
                         f"{(emb_q.shape[0], emb_q.shape[1], emb_n.shape[1])}, got {tuple(rows.shape)} "
                         f"and {tuple(cols.shape)}")
    if not tau > 0:
        raise ValueError(f"con2r: tau must be positive, got {tau}")
    q = F.normalize(emb_q.float(), dim=-1)
    n = F.normalize(emb_n.float(), dim=-1)
    to_neighbours = (q @ n.detach().transpose(1, 2)) / tau  # gradient into the queries only
    to_queries = (q.detach() @ n.transpose(1, 2)) / tau  # gradient into the neighbours only
    forward = -(rows.detach() * to_neighbours.log_softmax(dim=-1)).sum(-1).mean(-1)  # (B,)
    backward = -(cols.detach() * to_queries.log_softmax(dim=-2)).sum(-2).mean(-1)  # (B,)
    if weight is None:
        return forward.mean(), backward.mean()
    w = weight.float()
    total = w.sum().clamp_min(1e-12)
    return (forward * w).sum() / total, (backward * w).sum() / total


def con2r_loss(emb_q: Tensor, emb_n: Tensor, pos_q: Tensor, pos_n: Tensor, prob_q: Tensor, prob_n: Tensor,
               window: int = 16, alpha: float = 0.5, tau: float = 0.1,
               combine: Literal["mix", "product"] = "mix", weight: Tensor | None = None) -> Tensor:
    """L_Con2R (module docstring) for sampled query and neighbour sets.

    Shapes: emb_q (B, N, D), emb_n (B, M, D); pos_q (B, N, 2), pos_n (B, M, 2) [row, col];
    prob_q (B, N, C), prob_n (B, M, C) class distributions (used without gradient); weight (B,)
    optional per-image weights → scalar.
    """
    rows, cols = target_graphs(positional_affinity(pos_q, pos_n, window),
                               semantic_affinity(prob_q, prob_n), alpha, combine)
    forward, backward = graph_cross_entropy(emb_q, emb_n, rows, cols, tau, weight)
    return 0.5 * (forward + backward)


def sample_valid_pixels(valid: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` flat pixel indices per image drawn uniformly, with replacement, among its valid pixels.

    Shapes: valid (B, h, w) bool → (B, n) long in [0, h·w). The uniform draws come from
    ``generator`` (on the CPU) and are moved to ``valid``'s device; an image without any valid
    pixel samples uniformly over all its pixels (give it weight 0).
    """
    _check("valid", valid, 3, "(B, h, w)")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"con2r: the number of samples must be a positive integer, got {n!r}")
    flat = valid.flatten(1)
    flat = torch.where(flat.any(dim=1, keepdim=True), flat, torch.ones_like(flat))
    cdf = flat.long().cumsum(dim=1)  # (B, h·w)
    count = cdf[:, -1:]  # (B, 1) ≥ 1
    u = torch.rand(flat.shape[0], n, generator=generator).to(valid.device)
    k = (u * count).long().clamp_max(count - 1)  # the k-th valid pixel, k ∈ [0, count)
    return torch.searchsorted(cdf, k, right=True)


def filtered_softmax(logits: Tensor, allowed: Tensor) -> Tensor:
    """Class distributions restricted to the admissible classes, without gradient (paper §3.6 applied
    to probabilities): ``softmax_{c ∈ A_j}(z_j)``, exactly 0 on classes the annotation forbids.

    Shapes: logits, allowed (B, C, h, w) → (B, C, h, w) float32, summing to 1 over C.
    """
    if allowed.shape != logits.shape:
        raise ValueError(f"con2r: allowed must have the shape of logits {tuple(logits.shape)}, "
                         f"got {tuple(allowed.shape)}")
    with torch.no_grad():
        return torch.softmax(logits.detach().float().masked_fill(~allowed, float("-inf")), dim=1)
