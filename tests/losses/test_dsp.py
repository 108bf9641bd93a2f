"""The DSP loss (eq. 6-9) against a brute-force implementation with explicit loops."""

from __future__ import annotations

import pytest
import torch

from dspseg.losses.dsp import Bags, DSPLoss, dsp_loss
from dspseg.losses.pooling import pool_boxes

B, C, H, W = 2, 4, 5, 6


def brute_log_z(scores, allowed, valid, tau, cls):
    terms = [scores[b, k, y, x] / tau
             for b in range(B) for y in range(H) for x in range(W) if valid[b, y, x]
             for k in range(C) if k != cls or not allowed[b, cls, y, x]]
    return torch.logsumexp(torch.stack(terms), 0)


def brute_positives(scores, bags, valid):
    """Pooled positives by explicit loops: list of (type, class, pooled score)."""
    out = []
    inst = bags.instances
    for m, cls in enumerate(bags.instance_classes.tolist()):
        vals = [scores[b, cls, y, x] for b in range(B) for y in range(H) for x in range(W) if inst[b, y, x] == m + 1]
        if vals:
            out.append(("mask", cls, torch.stack(vals).mean()))
    for b, cls, y, x in bags.points.tolist():
        out.append(("point", cls, scores[b, cls, y, x]))
    for b, cls in bags.image_labels.tolist():
        vals = [scores[b, cls, y, x] for y in range(H) for x in range(W) if valid[b, y, x]]
        out.append(("image", cls, torch.stack(vals).mean()))
    for b, cls, x0, y0, x1, y1 in bags.boxes.tolist():
        maxima = [max(scores[b, cls, y, x] for x in range(x0, x1)) for y in range(y0, y1)]
        maxima += [max(scores[b, cls, y, x] for y in range(y0, y1)) for x in range(x0, x1)]
        out.append(("box", cls, torch.stack(maxima).sum() / ((y1 - y0) + (x1 - x0))))
    return out


def brute_dsp(scores, allowed, valid, bags, tau, lambdas):
    """Eq. 9 with eq. 6 per positive, averaged per type."""
    per_type = {}
    for kind, cls, pooled in brute_positives(scores, bags, valid):
        loss = -torch.log(torch.exp(pooled / tau) / torch.exp(brute_log_z(scores, allowed, valid, tau, cls)))
        per_type.setdefault(kind, []).append(loss)
    return {f"dsp_{k}": lambdas[k] * torch.stack(v).mean() for k, v in per_type.items()}


def random_batch(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    scores = (torch.rand(B, C, H, W, generator=g, dtype=dtype) * 2 - 1).requires_grad_(True)
    allowed = torch.rand(B, C, H, W, generator=g) > 0.4
    valid = torch.ones(B, H, W, dtype=torch.bool)
    valid[1, :, 4:] = False  # padding
    instances = torch.zeros(B, H, W, dtype=torch.int64)
    instances[0, 0:2, 0:3] = 1
    instances[0, 3:5, 2:6] = 2
    instances[1, 1:4, 0:2] = 3
    instance_classes = torch.tensor([0, 2, 1])
    points = torch.tensor([[0, 1, 2, 4], [1, 3, 0, 3], [1, 1, 4, 1]])
    boxes = torch.tensor([[0, 2, 1, 0, 4, 3], [1, 0, 0, 1, 3, 5], [1, 2, 2, 2, 3, 3]])
    image_labels = torch.tensor([[0, 1], [1, 3], [1, 0]])
    return scores, allowed, valid, Bags(instances, instance_classes, points, boxes, image_labels)


@pytest.mark.parametrize("tau", [0.05, 0.005])
@pytest.mark.parametrize("seed", [0, 1])
def test_paper_variant_matches_brute_force(tau, seed):
    scores, allowed, valid, bags = random_batch(seed)
    lambdas = {"mask": 0.1, "box": 0.2, "point": 0.3, "image": 0.4}
    fast = dsp_loss(scores, allowed, valid, bags, tau=tau, lambdas=lambdas, variant="paper")
    slow = brute_dsp(scores, allowed, valid, bags, tau, lambdas)
    assert fast.keys() == slow.keys()
    for k in fast:
        assert torch.allclose(fast[k], slow[k], rtol=1e-9), k
    (g_fast,) = torch.autograd.grad(sum(fast.values()), scores)
    (g_slow,) = torch.autograd.grad(sum(slow.values()), scores)
    assert torch.allclose(g_fast, g_slow, rtol=1e-7, atol=1e-10)


def test_float32_small_tau_is_finite():
    scores, allowed, valid, bags = random_batch(2, dtype=torch.float32)
    loss = DSPLoss(tau=0.005, variant="paper")(scores, allowed, valid, bags)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("drop", [[], ["mask"], ["box", "point"], ["mask", "box", "point", "image"]])
@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_missing_types_contribute_zero_and_stay_finite(drop, variant):
    scores, allowed, valid, bags = random_batch(3, dtype=torch.float32)
    if "mask" in drop:
        bags.instances = torch.zeros_like(bags.instances)
        bags.instance_classes = bags.instance_classes[:0]
    if "box" in drop:
        bags.boxes = bags.boxes[:0]
    if "point" in drop:
        bags.points = bags.points[:0]
    if "image" in drop:
        bags.image_labels = bags.image_labels[:0]
    terms = dsp_loss(scores, allowed, valid, bags, tau=0.05, variant=variant)
    total = sum(terms.values())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(scores.grad).all()
    for kind in drop:
        assert terms[f"dsp_{kind}"].item() == 0.0
    for kind in set(["mask", "box", "point", "image"]) - set(drop):
        assert terms[f"dsp_{kind}"].item() != 0.0


def brute_reference(scores, allowed, valid, bags, tau, eps=1e-7):
    """The released code's structure, with its per-class counter bug fixed, by loops."""
    probs = torch.softmax(scores / tau, dim=1)
    out = {}
    positives = brute_positives(probs, bags, valid)
    images_of = {"mask": {b for b in range(B) if (bags.instances[b] > 0).any()},
                 "point": set(bags.points[:, 0].tolist()), "box": set(bags.boxes[:, 0].tolist()),
                 "image": set(bags.image_labels[:, 0].tolist())}
    for kind in ("mask", "box", "point", "image"):
        total = 0.0
        for cls in range(C):
            pos = [torch.log(p + eps) for t, c, p in positives if t == kind and c == cls]
            if not pos:
                continue
            neg = sum(probs[b, k, y, x] for b in range(B) for y in range(H) for x in range(W) if valid[b, y, x]
                      for k in range(C) if k != cls or not allowed[b, cls, y, x])
            total = total + torch.log(neg + eps) - torch.stack(pos).mean()
        out[f"dsp_{kind}"] = 0.1 * total / len(images_of[kind])
    return out


def test_reference_variant_matches_brute_force():
    scores, allowed, valid, bags = random_batch(4)
    fast = dsp_loss(scores, allowed, valid, bags, tau=0.5, variant="reference")
    slow = brute_reference(scores, allowed, valid, bags, 0.5)
    for k in fast:
        assert torch.allclose(fast[k], slow[k], rtol=1e-9), k
    (g_fast,) = torch.autograd.grad(sum(fast.values()), scores)
    (g_slow,) = torch.autograd.grad(sum(slow.values()), scores)
    assert torch.allclose(g_fast, g_slow, rtol=1e-7, atol=1e-10)


def test_box_pooling_hand_example():
    s = torch.zeros(1, 1, 3, 4)
    s[0, 0] = torch.tensor([[0.1, 0.9, 0.0, 0.0], [0.2, 0.3, 0.5, 0.0], [0.0, 0.0, 0.0, 0.7]])
    pooled, cls = pool_boxes(s, torch.tensor([[0, 0, 0, 0, 3, 2]]))  # rows 0-1, cols 0-2
    # row maxima 0.9, 0.5; column maxima 0.2, 0.9, 0.5 -> (1.4 + 1.6) / 5
    assert torch.allclose(pooled, torch.tensor([3.0 / 5])) and cls.tolist() == [0]


def test_bad_options():
    scores, allowed, valid, bags = random_batch(0)
    with pytest.raises(ValueError, match="variant"):
        dsp_loss(scores, allowed, valid, bags, variant="nope")
    with pytest.raises(ValueError, match="unknown annotation types"):
        dsp_loss(scores, allowed, valid, bags, lambdas={"boxes": 1.0})


def test_fused_reference_variant_matches_eager():
    """The compiled softmax + admissible mass gives the eager values and gradients (float32, the
    training dtype), also for the transposed allowed/valid a quarter turn produces."""
    scores, allowed, valid, bags = random_batch(5)
    scores = scores.detach().float().requires_grad_(True)
    for a, v in ((allowed, valid), (allowed.transpose(2, 3).contiguous().transpose(2, 3), valid)):
        eager = dsp_loss(scores, a, v, bags, tau=0.05, variant="reference", fused=False)
        fused = dsp_loss(scores, a, v, bags, tau=0.05, variant="reference", fused=True)
        for k in eager:
            assert torch.allclose(eager[k], fused[k], rtol=1e-5, atol=1e-6), k
        (g_eager,) = torch.autograd.grad(sum(eager.values()), scores)
        (g_fused,) = torch.autograd.grad(sum(fused.values()), scores)
        assert torch.allclose(g_eager, g_fused, rtol=1e-4, atol=1e-7)
