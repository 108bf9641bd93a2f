"""The ``con2r`` method: features, terms per annotation kind, the filter, learning, options."""

from __future__ import annotations

import pytest
import torch

from dspseg.data.augment import BatchGeometry, Dihedral
from dspseg.methods.con2r import forward_with_features
from dspseg.methods.views import Views, weak_and_strong
from methods_common import (EveryKindTester, admitted, batch_per_kind as batch_of, hand_batch,
                            linear_model as tiny_model, train_steps, whole_batch)


def make(n_classes, **opts):
    return TestCon2R().make(n_classes, **opts)


class TestCon2R(EveryKindTester):
    name = "con2r"
    terms = {"ce", "plf", "con2r"}
    options = {"samples": 64}
    bad_options = [({"windw": 8}, "windw"), ({"combine": "sum"}, "combine"), ({"tau": 0}, "tau"),
                   ({"samples": 0}, "samples")]

    def test_registered(self):
        super().test_registered()
        assert self.make(3).Options().window == 16

    def test_loss_decreases(self, mixed):
        method = make(mixed.n_classes)
        model = tiny_model(mixed.n_classes)
        history = train_steps(method, model, whole_batch(mixed, 0), augmented=True)
        first, last = history[:3], history[-3:]
        for name in ("ce", "plf", "con2r"):
            assert sum(t[name] for t in last) < sum(t[name] for t in first), name


def test_features_are_the_heads_input():
    model = tiny_model(3).eval()
    x = torch.randn(2, 1, 24, 24)
    out = forward_with_features(model, x)
    torch.testing.assert_close(out["features"], model.backbone(x))
    torch.testing.assert_close(out["logits"], model.head(out["features"])["logits"])
    assert len(model.backbone._forward_hooks) == 0  # the hook is removed again
    with pytest.raises(TypeError, match="backbone"):
        forward_with_features(torch.nn.Conv2d(1, 3, 1), x)


def test_regulariser_alone_trains_the_backbone_not_the_head(mixed):
    method = make(mixed.n_classes, weight=1.0, plf_weight=0.0)
    model = tiny_model(mixed.n_classes)
    method.step(model, batch_of(mixed, ("none",)))["con2r"].backward()
    assert model.head.conv.weight.grad is None or model.head.conv.weight.grad.abs().sum() == 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_semantic_targets_follow_the_filter():
    """Flat logits on an image whose left half admits only class 0 and right half only class 1. With
    α = 0 the target is semantic only: filtered, a pixel's targets lie on its own half, so features
    that separate the halves cost about log(#same-half neighbours) ≈ log 32 − log 2, less than
    identical features (uniform embedding graph, log 32). Without the filter (all classes admitted)
    every pixel is a semantic twin of every other and the separated features cost more instead."""
    import math

    method = make(2, samples=32, alpha=0.0, plf_weight=0.0)
    h = w = 8
    logits = torch.zeros(1, 2, h, w)
    halves = torch.zeros(1, 2, h, w, dtype=torch.bool)
    halves[:, 0, :, :4] = True
    halves[:, 1, :, 4:] = True
    apart = halves.float()  # orthogonal features on the two halves
    together = torch.ones(1, 2, h, w)

    def con2r(allowed, feats):
        batch = hand_batch(torch.zeros(1, 1, h, w), torch.full((1, h, w), 255), ["none"], 2, allowed=allowed)
        torch.manual_seed(0)
        return method.loss({"logits": logits, "features": feats}, batch)["con2r"].item()

    assert con2r(halves, together) == pytest.approx(math.log(32), rel=1e-5)
    assert con2r(halves, apart) < math.log(32) - 0.5
    everything = torch.ones_like(halves)
    assert con2r(everything, together) == pytest.approx(math.log(32), rel=1e-5)
    assert con2r(everything, apart) > math.log(32) + 0.5


def test_strong_features_are_moved_back_to_the_weak_frame(mixed):
    """With the strong view's features made equal to the weak view's (moved by the geometry), and
    one class everywhere, the loss is that of a single view: the move back is exact."""
    batch = batch_of(mixed, ("mask",), per_kind=1)
    feats = torch.randn(1, 4, 40, 40)
    logits = torch.zeros(1, mixed.n_classes, 40, 40)
    method = make(mixed.n_classes, alpha=1.0)
    single = Views(batch, batch, {"logits": logits, "features": feats}, {"logits": logits, "features": feats},
                   BatchGeometry.identity(1, 40, 40))
    torch.manual_seed(3)
    reference = method.regulariser(single)
    for t in (Dihedral(True, 1), Dihedral(False, 3), Dihedral(True, 2)):
        geo = BatchGeometry([t], 40, 40)
        moved = Views(batch, geo.apply_batch(batch), {"logits": logits, "features": feats},
                      {"logits": logits, "features": geo.apply(feats)}, geo)
        torch.manual_seed(3)
        torch.testing.assert_close(method.regulariser(moved), reference)


def test_plf_targets_are_admissible_on_the_strong_view(mixed):
    from dspseg.losses.plf import filter_pseudo_labels

    torch.manual_seed(1)
    batch = whole_batch(mixed, 3)
    model = tiny_model(mixed.n_classes)
    views = weak_and_strong(lambda x: forward_with_features(model, x), batch)
    assert views.out_weak["features"].shape == (len(mixed), 4, 40, 40)
    pseudo = filter_pseudo_labels(views.out_weak["logits"], views.weak.allowed, views.weak.valid, 255)
    moved = views.geometry.apply(pseudo)
    valid = views.strong.valid
    assert admitted(moved, views.strong.allowed)[valid].all()


def test_loss_without_features_is_refused(mixed):
    batch = batch_of(mixed, ("mask",), per_kind=1)
    with pytest.raises(KeyError, match="features"):
        make(mixed.n_classes).loss(tiny_model(mixed.n_classes)(batch.image), batch)
