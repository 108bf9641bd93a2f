"""The Con2R loss functions on hand-made inputs whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from dspseg.losses.con2r import (
    EPS,
    con2r_loss,
    filtered_softmax,
    graph_cross_entropy,
    positional_affinity,
    sample_valid_pixels,
    semantic_affinity,
    target_graphs,
)


def pos(*rc):
    return torch.tensor([list(rc)], dtype=torch.long).view(1, -1, 2)


def test_positional_affinity_is_the_window_overlap_and_excludes_far_pixels():
    q = pos(10, 10)
    n = pos(10, 10, 13, 10, 13, 6, 10, 26, 26, 10, 25, 25, 10, 25)
    p = positional_affinity(q, n, window=16)[0, 0]
    expected = torch.tensor([1.0, 13 / 16, 13 / 16 * 12 / 16, 0.0, 0.0, 1 / 256, 1 / 16])
    torch.testing.assert_close(p, expected)
    # symmetric, and the window size matters
    torch.testing.assert_close(positional_affinity(n, q, 16)[0, :, 0], expected)
    assert positional_affinity(q, pos(10, 18), 8).item() == 0.0


def test_semantic_affinity_matches_the_definition():
    torch.manual_seed(0)
    q = torch.softmax(torch.randn(2, 5, 4), -1)
    n = torch.softmax(torch.randn(2, 3, 4), -1)
    n[0, 0] = torch.tensor([0.0, 0.5, 0.5, 0.0])  # forbidden classes: exact zeros
    s = semantic_affinity(q, n)
    qe, ne = q[:, :, None, :], n[:, None, :, :]
    kl_qn = (torch.xlogy(qe, qe) - qe * ne.clamp_min(EPS).log()).sum(-1)
    kl_nq = (torch.xlogy(ne, ne) - ne * qe.clamp_min(EPS).log()).sum(-1)
    torch.testing.assert_close(s, torch.exp(-0.5 * (kl_qn + kl_nq)), rtol=1e-4, atol=1e-6)
    # identical distributions: affinity 1; disjoint one-hots: about EPS
    same = semantic_affinity(q[:, :1], q[:, :1])
    torch.testing.assert_close(same, torch.ones_like(same), rtol=1e-5, atol=1e-5)
    a, b = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    assert semantic_affinity(a, b).item() == pytest.approx(EPS, rel=1e-3)


def test_target_graphs_are_normalised_and_carry_no_gradient():
    torch.manual_seed(1)
    p = torch.rand(2, 4, 6, requires_grad=True)
    s = torch.rand(2, 4, 6, requires_grad=True)
    for combine in ("mix", "product"):
        rows, cols = target_graphs(p, s, alpha=0.3, combine=combine)
        torch.testing.assert_close(rows.sum(-1), torch.ones(2, 4))
        torch.testing.assert_close(cols.sum(-2), torch.ones(2, 6))
        assert not rows.requires_grad and not cols.requires_grad
    rows, _ = target_graphs(p, s, alpha=0.3, combine="mix")
    expected = 0.3 * p / p.sum(-1, keepdim=True) + 0.7 * s / s.sum(-1, keepdim=True)
    torch.testing.assert_close(rows, expected.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="combine"):
        target_graphs(p, s, combine="sum")
    with pytest.raises(ValueError, match="alpha"):
        target_graphs(p, s, alpha=1.5)


def test_window_excludes_far_neighbours_from_the_target():
    q = pos(5, 5)
    n = pos(5, 6, 12, 12, 30, 5, 5, 40)
    same = torch.ones(1, 4, 3) / 3
    p = positional_affinity(q, n, 16)
    for combine, alpha in (("mix", 1.0), ("product", 0.5)):
        rows, _ = target_graphs(p, semantic_affinity(same[:, :1], same), alpha, combine)
        assert (rows[0, 0, :2] > 0.1).all()
        assert (rows[0, 0, 2:] < 1e-5).all()


def test_identical_embeddings_and_semantics_give_the_target_entropy():
    """All embeddings equal → the embedding graph is uniform; with α = 0 and equal class distributions
    the target is uniform too, so each direction's cross-entropy is H(T) = log M (or log N)."""
    b, n, m, d = 2, 5, 7, 3
    emb_q = torch.ones(b, n, d)
    emb_n = torch.ones(b, m, d)
    prob = torch.tensor([0.2, 0.5, 0.3])
    pos_q = torch.randint(0, 40, (b, n, 2))
    pos_n = torch.randint(0, 40, (b, m, 2))
    rows, cols = target_graphs(positional_affinity(pos_q, pos_n, 16),
                               semantic_affinity(prob.expand(b, n, 3), prob.expand(b, m, 3)), alpha=0.0)
    fwd, bwd = graph_cross_entropy(emb_q, emb_n, rows, cols, tau=0.1)
    assert fwd.item() == pytest.approx(math.log(m), rel=1e-5)
    assert bwd.item() == pytest.approx(math.log(n), rel=1e-5)
    loss = con2r_loss(emb_q, emb_n, pos_q, pos_n, prob.expand(b, n, 3), prob.expand(b, m, 3), alpha=0.0)
    assert loss.item() == pytest.approx(0.5 * (math.log(m) + math.log(n)), rel=1e-5)


def test_hand_computed_two_pixel_case():
    """Query i and neighbour i share a position; the pairs are 20 px apart (outside the window). With
    α = 1 the target is the identity; orthogonal unit embeddings give CE = log(1 + e^{-1/τ})."""
    tau = 0.1
    emb = torch.eye(2).unsqueeze(0)
    p = pos(0, 0, 20, 0)
    prob = torch.full((1, 2, 2), 0.5)
    loss = con2r_loss(emb, emb.clone(), p, p.clone(), prob, prob, window=16, alpha=1.0, tau=tau)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1 / tau)), abs=1e-5)
    # swapping the neighbours makes every embedding pair wrong: CE = log(1 + e^{1/τ})
    loss = con2r_loss(emb, emb.flip(1), p, p.clone(), prob, prob, window=16, alpha=1.0, tau=tau)
    assert loss.item() == pytest.approx(math.log1p(math.exp(1 / tau)), rel=1e-5)


def test_gradients_flow_only_into_the_embedding_side():
    torch.manual_seed(2)
    emb_q = torch.randn(2, 6, 4, requires_grad=True)
    emb_n = torch.randn(2, 5, 4, requires_grad=True)
    prob_q = torch.softmax(torch.randn(2, 6, 3), -1).requires_grad_()
    prob_n = torch.softmax(torch.randn(2, 5, 3), -1).requires_grad_()
    pos_q, pos_n = torch.randint(0, 20, (2, 6, 2)), torch.randint(0, 20, (2, 5, 2))
    con2r_loss(emb_q, emb_n, pos_q, pos_n, prob_q, prob_n).backward()
    assert prob_q.grad is None and prob_n.grad is None
    assert emb_q.grad.abs().sum() > 0 and emb_n.grad.abs().sum() > 0

    rows, cols = target_graphs(positional_affinity(pos_q, pos_n, 16), semantic_affinity(prob_q, prob_n))
    for direction, moved, fixed in ((0, emb_q, emb_n), (1, emb_n, emb_q)):
        emb_q.grad = emb_n.grad = None
        graph_cross_entropy(emb_q, emb_n, rows, cols)[direction].backward()
        assert moved.grad.abs().sum() > 0
        assert fixed.grad is None or fixed.grad.abs().sum() == 0


def test_per_image_weights_drop_an_image():
    torch.manual_seed(3)
    args = [torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.randint(0, 9, (2, 4, 2)), torch.randint(0, 9, (2, 4, 2)),
            torch.softmax(torch.randn(2, 4, 3), -1), torch.softmax(torch.randn(2, 4, 3), -1)]
    only_first = con2r_loss(*args, weight=torch.tensor([1.0, 0.0]))
    first = con2r_loss(*[a[:1] for a in args])
    torch.testing.assert_close(only_first, first)


def test_sample_valid_pixels_draws_only_valid_pixels():
    valid = torch.zeros(3, 5, 7, dtype=torch.bool)
    valid[0, 1:3, 2:6] = True
    valid[1] = True
    gen = torch.Generator().manual_seed(0)
    idx = sample_valid_pixels(valid, 2000, gen)
    assert idx.shape == (3, 2000) and idx.dtype == torch.long
    assert valid[0].flatten()[idx[0]].all()
    assert set(idx[0].tolist()) == set(valid[0].flatten().nonzero().flatten().tolist())  # every one reachable
    assert set(idx[1].tolist()) == set(range(35))
    assert ((idx[2] >= 0) & (idx[2] < 35)).all()  # no valid pixel: uniform, still in range
    with pytest.raises(ValueError, match="valid"):
        sample_valid_pixels(valid[0], 4)


def test_filtered_softmax_is_zero_on_forbidden_classes():
    torch.manual_seed(4)
    logits = torch.randn(2, 4, 3, 5, requires_grad=True)
    allowed = torch.rand(2, 4, 3, 5) > 0.5
    allowed[:, 0] = True
    p = filtered_softmax(logits, allowed)
    assert not p.requires_grad
    assert (p[~allowed] == 0).all()
    torch.testing.assert_close(p.sum(1), torch.ones(2, 3, 5))
    with pytest.raises(ValueError, match="allowed"):
        filtered_softmax(logits, allowed[:, :2])


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="emb_q"):
        graph_cross_entropy(torch.zeros(4, 3), torch.zeros(1, 4, 3), torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="target graphs"):
        graph_cross_entropy(torch.zeros(1, 4, 3), torch.zeros(1, 5, 3), torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="window"):
        positional_affinity(pos(0, 0), pos(0, 0), 0)
