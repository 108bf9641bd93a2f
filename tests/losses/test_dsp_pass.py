"""The one-Function DSP pass (dspseg.losses.dsp_pass) against the plain autograd composition it
replaces: log_normalizer (eq. 8) or softmax + admissible mass, and pool_all over the bags. Values and
gradients, both variants, eager and compiled, τ = 0.05 (fixed shift) and 0.005 (exact shift)."""

from __future__ import annotations

import pytest
import torch

from dspseg.losses.dsp import Bags, dsp_loss, pooled_positives
from dspseg.losses.dsp_pass import bag_index, dsp_pass
from dspseg.losses.normalizer import log_normalizer

B, C, H, W = 3, 5, 7, 6
TYPES = ("mask", "box", "point", "image")


def batch(seed, dtype=torch.float64, scale=1.0):
    """Random scores, admissible maps with padding, and bags that overlap (a pixel read by an
    instance, a point and two boxes at once), so that the sparse gradient adds several entries."""
    g = torch.Generator().manual_seed(seed)
    scores = ((torch.rand(B, C, H, W, generator=g, dtype=dtype) * 2 - 1) * scale).requires_grad_(True)
    allowed = torch.rand(B, C, H, W, generator=g) > 0.4
    valid = torch.ones(B, H, W, dtype=torch.bool)
    valid[1, 5:, :] = False
    valid[2, :, 4:] = False
    instances = torch.zeros(B, H, W, dtype=torch.int64)
    instances[0, 0:3, 0:2] = 1
    instances[0, 3:7, 1:6] = 2
    instances[2, 2:5, 0:3] = 3
    instances[2, 0, 5] = 4
    instance_classes = torch.tensor([0, 2, 4, 2])
    points = torch.tensor([[0, 1, 2, 1], [0, 2, 2, 1], [2, 4, 3, 1], [1, 3, 6, 5]])
    boxes = torch.tensor([[0, 2, 0, 1, 4, 5], [0, 2, 1, 2, 3, 4], [1, 0, 0, 0, 6, 7], [2, 4, 0, 2, 3, 5],
                          [1, 3, 5, 6, 6, 7]])
    image_labels = torch.tensor([[1, 3], [1, 0], [2, 1], [2, 1]])
    return scores, allowed, valid, Bags(instances, instance_classes, points, boxes, image_labels)


def composed(scores, allowed, valid, bags, tau, variant):
    """The statistic and the pooled positives by autograd through the separate pieces."""
    if variant == "paper":
        stat = log_normalizer(scores, allowed, valid, tau)
        pooled = pooled_positives(scores, bags, valid)
    else:
        probs = torch.softmax(scores / tau, dim=1)
        stat = torch.where(valid.unsqueeze(1) & allowed, probs, 0.0).sum(dim=(0, 2, 3))
        pooled = pooled_positives(probs, bags, valid)
    return stat, {k: pooled[k][:2] for k in TYPES}


def one_pass(scores, allowed, valid, bags, tau, variant, fused):
    index = bag_index(tuple(scores.shape), bags.instances, bags.instance_classes, bags.points, bags.boxes,
                      bags.image_labels, with_pixels=variant == "reference")
    return dsp_pass(scores, allowed, valid, index, tau, variant, fused=fused)


def weighted(stat, pooled, seed):
    """A random linear functional of every output, so each output's gradient path is exercised."""
    g = torch.Generator().manual_seed(seed)
    total = (torch.rand(stat.shape, generator=g, dtype=torch.float64).to(stat.dtype) * stat).sum()
    for k in TYPES:
        v = pooled[k][0]
        total = total + (torch.rand(v.shape, generator=g, dtype=torch.float64).to(v.dtype) * v).sum()
    return total


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("tau", [0.05, 0.005])
@pytest.mark.parametrize("fused", [False, True])
def test_pass_matches_composition(variant, tau, fused):
    dtype = torch.float32 if fused else torch.float64
    scores, allowed, valid, bags = batch(0, dtype)
    ref_stat, ref = composed(scores, allowed, valid, bags, tau, variant)
    stat, pooled = one_pass(scores, allowed, valid, bags, tau, variant, fused)
    rtol, atol = (1e-5, 1e-6) if fused else (1e-10, 1e-12)
    assert torch.allclose(stat, ref_stat, rtol=rtol, atol=atol)
    for k in TYPES:
        assert torch.equal(pooled[k][1], ref[k][1]), k
        assert torch.allclose(pooled[k][0], ref[k][0], rtol=rtol, atol=atol), k
    (g_ref,) = torch.autograd.grad(weighted(ref_stat, ref, 1), scores)
    (g,) = torch.autograd.grad(weighted(stat, pooled, 1), scores)
    scale = g_ref.abs().max()
    assert (g - g_ref).abs().max() <= (1e-5 if fused else 1e-11) * scale


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("tau", [0.05, 0.005])
def test_compiled_loss_matches_eager_float32(variant, tau):
    """dsp_loss(fused=True) against fused=False on float32, also with the transposed allowed/valid
    a quarter turn gives (contiguous bytes: no recompilation, same values)."""
    scores, allowed, valid, bags = batch(1, torch.float32)
    for a, v in ((allowed, valid), (allowed.transpose(2, 3).contiguous().transpose(2, 3),
                                    valid.transpose(1, 2).contiguous().transpose(1, 2))):
        eager = dsp_loss(scores, a, v, bags, tau=tau, variant=variant, fused=False)
        fused = dsp_loss(scores, a, v, bags, tau=tau, variant=variant, fused=True)
        for k in eager:
            assert torch.allclose(eager[k], fused[k], rtol=1e-5, atol=1e-6), k
        (g_eager,) = torch.autograd.grad(sum(eager.values()), scores)
        (g_fused,) = torch.autograd.grad(sum(fused.values()), scores)
        assert (g_eager - g_fused).abs().max() <= 1e-5 * g_eager.abs().max()


@pytest.mark.parametrize("fused", [False, True])
def test_reference_scores_outside_cosine_range_fall_back_to_exact_logsumexp(fused):
    # exp(s/τ − 1/τ) overflows for s = 10 at τ = 0.05: the pass must notice and use the exact shift
    scores, allowed, valid, bags = batch(2, torch.float32, scale=10.0)
    ref_stat, ref = composed(scores, allowed, valid, bags, 0.05, "reference")
    stat, pooled = one_pass(scores, allowed, valid, bags, 0.05, "reference", fused)
    assert torch.isfinite(stat).all()
    assert torch.allclose(stat, ref_stat, rtol=1e-5, atol=1e-5)
    for k in TYPES:
        assert torch.allclose(pooled[k][0], ref[k][0], rtol=1e-5, atol=1e-6), k


def test_paper_overflow_branch_matches_composition():
    # class 0 far above every other class's total: exp(m_0 − log Z_0) > e^60 (the overflow-safe gradient)
    scores, allowed, valid, bags = batch(3)
    with torch.no_grad():
        scores.fill_(-1.0)
        scores[:, 0] = 1.0
    allowed = torch.zeros_like(allowed)
    allowed[:, 0] = True
    ref_stat, ref = composed(scores, allowed, valid, bags, 0.005, "paper")
    stat, pooled = one_pass(scores, allowed, valid, bags, 0.005, "paper", False)
    assert torch.allclose(stat, ref_stat)
    (g_ref,) = torch.autograd.grad(weighted(ref_stat, ref, 4), scores)
    (g,) = torch.autograd.grad(weighted(stat, pooled, 4), scores)
    assert torch.allclose(g, g_ref, rtol=1e-9, atol=1e-12)


def test_reference_needs_pixels():
    scores, allowed, valid, bags = batch(5)
    index = bag_index(tuple(scores.shape), bags.instances, bags.instance_classes, bags.points, bags.boxes,
                      bags.image_labels)
    with pytest.raises(ValueError, match="with_pixels"):
        dsp_pass(scores, allowed, valid, index, 0.05, "reference")
