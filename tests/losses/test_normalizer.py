"""log_normalizer against eq. 8 written out with explicit loops over pixels and classes."""

from __future__ import annotations

import math

import pytest
import torch

from dspseg.losses.normalizer import log_normalizer


def brute_force_log_z(scores, allowed, valid, tau):
    """Eq. 8 literally: Z_c = sum_j sum_k [k != c or c not in A_j] exp(s_k(f_j)/tau), in float64."""
    b, c, h, w = scores.shape
    out = []
    for cls in range(c):
        terms = []
        for bi in range(b):
            for y in range(h):
                for x in range(w):
                    if not valid[bi, y, x]:
                        continue
                    for k in range(c):
                        if k != cls or not allowed[bi, cls, y, x]:
                            terms.append(scores[bi, k, y, x] / tau)
        out.append(torch.logsumexp(torch.stack(terms), 0))
    return torch.stack(out)


def random_inputs(seed, b=2, c=4, h=3, w=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    scores = (torch.rand(b, c, h, w, generator=g, dtype=dtype) * 2 - 1).requires_grad_(True)
    allowed = torch.rand(b, c, h, w, generator=g) > 0.5
    valid = torch.rand(b, h, w, generator=g) > 0.2
    valid[0, 0, 0] = True
    return scores, allowed, valid


@pytest.mark.parametrize("tau", [0.05, 0.005])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_and_gradients_match_brute_force(tau, seed):
    scores, allowed, valid = random_inputs(seed)
    weights = torch.randn(scores.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(seed))

    fast = log_normalizer(scores, allowed, valid, tau)
    (g_fast,) = torch.autograd.grad((fast * weights).sum(), scores)
    slow = brute_force_log_z(scores, allowed, valid, tau)
    (g_slow,) = torch.autograd.grad((slow * weights).sum(), scores)

    assert torch.allclose(fast, slow, rtol=1e-10, atol=1e-10)
    assert torch.allclose(g_fast, g_slow, rtol=1e-8, atol=1e-12)
    assert torch.all(g_fast[~valid.unsqueeze(1).expand_as(scores)] == 0)


def test_float32_finite_at_small_tau_with_classes_far_apart():
    # One class near +1 everywhere, the others near -1: exp(s/tau) spans e^±200 at tau = 0.005.
    scores, allowed, valid = random_inputs(3, dtype=torch.float32)
    with torch.no_grad():
        scores.mul_(0.01).add_(-0.99)
        scores[:, 0] += 1.98
    log_z = log_normalizer(scores, allowed, valid, 0.005)
    log_z.sum().backward()
    assert torch.isfinite(log_z).all()
    assert torch.isfinite(scores.grad).all()
    ref = brute_force_log_z(scores.detach().double(), allowed, valid, 0.005)
    assert torch.allclose(log_z.double(), ref, rtol=1e-5)


def test_overflow_branch_of_backward_matches_brute_force():
    # Class 0 scores at the top; every other class total far below: exp(m_0 - log Z_0) > e^60.
    b, c, h, w = 1, 3, 2, 3
    scores = torch.full((b, c, h, w), -1.0, dtype=torch.float64)
    scores[:, 0] = 1.0
    scores[:, 0, :, 0] = -1.0  # ...except where class 0 is not admissible, so R_0 is tiny too
    scores = scores.requires_grad_(True)
    allowed = torch.zeros(b, c, h, w, dtype=torch.bool)
    allowed[:, 0, :, 1:] = True  # class 0 not admissible in column 0 -> R_0 over those pixels
    valid = torch.ones(b, h, w, dtype=torch.bool)
    fast = log_normalizer(scores, allowed, valid, 0.005)
    (g_fast,) = torch.autograd.grad(fast.sum(), scores)
    slow = brute_force_log_z(scores, allowed, valid, 0.005)
    (g_slow,) = torch.autograd.grad(slow.sum(), scores)
    assert torch.allclose(fast, slow)
    assert torch.allclose(g_fast, g_slow, atol=1e-12)


def test_all_allowed_reduces_to_sum_over_other_classes():
    scores, _, valid = random_inputs(4)
    allowed = torch.ones_like(scores, dtype=torch.bool)
    log_z = log_normalizer(scores, allowed, valid, 0.1)
    v = valid.unsqueeze(1).expand_as(scores)
    log_t = torch.stack([torch.logsumexp(scores[:, k][valid] / 0.1, 0) for k in range(scores.shape[1])])
    for cls in range(scores.shape[1]):
        expect = torch.logsumexp(torch.cat([log_t[:cls], log_t[cls + 1:]]), 0)
        assert math.isclose(log_z[cls].item(), expect.item(), rel_tol=1e-12)
    assert v.any()


def test_gradcheck():
    scores, allowed, valid = random_inputs(5, b=1, c=3, h=2, w=3)
    assert torch.autograd.gradcheck(lambda s: log_normalizer(s, allowed, valid, 0.3), (scores,))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scores=torch.zeros(2, 3, 4)), "scores must be"),
        (dict(allowed=torch.ones(1, 3, 4, 4)), "allowed must be"),
        (dict(valid=torch.ones(1, 4, 4)), "valid must be"),
        (dict(valid=torch.zeros(1, 4, 4, dtype=torch.bool)), "no True pixel"),
        (dict(tau=0.0), "tau must be positive"),
    ],
)
def test_input_checks(kwargs, match):
    args = dict(scores=torch.zeros(1, 3, 4, 4), allowed=torch.ones(1, 3, 4, 4, dtype=torch.bool),
                valid=torch.ones(1, 4, 4, dtype=torch.bool), tau=0.05)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        log_normalizer(**args)


@pytest.mark.parametrize("tau", [0.05, 0.005])
def test_fused_kernels_match_eager(tau):
    """The torch.compile path computes the same values and gradients (float32)."""
    scores, allowed, valid = random_inputs(6, b=2, c=5, h=6, w=7, dtype=torch.float32)
    eager = log_normalizer(scores, allowed, valid, tau)
    (g_eager,) = torch.autograd.grad(eager.sum(), scores)
    fused = log_normalizer(scores, allowed, valid, tau, fused=True)
    (g_fused,) = torch.autograd.grad(fused.sum(), scores)
    assert torch.allclose(eager, fused, rtol=1e-5)
    assert torch.allclose(g_eager, g_fused, rtol=1e-4, atol=1e-7)


def test_scores_outside_cosine_range_fall_back_to_exact_shift():
    scores, allowed, valid = random_inputs(7)
    with torch.no_grad():
        scores.mul_(50.0)  # not cosines: exp(s/tau - 1/tau) would overflow with the fixed shift
    fast = log_normalizer(scores, allowed, valid, 0.05)
    assert torch.isfinite(fast).all()
    assert torch.allclose(fast, brute_force_log_z(scores, allowed, valid, 0.05), rtol=1e-10)
