"""The ``pseudolabel`` method: terms per annotation kind, the filter, learning, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dspseg.data.dataset import collate
from dspseg.methods import get_method
from dspseg.methods.views import weak_and_strong
from methods_common import KINDS, batch_per_kind as batch_of, linear_model as tiny_model, train_steps


def make(n_classes, **opts):
    cls = get_method("pseudolabel")
    return cls(cls.Options.model_validate(opts), n_classes=n_classes, ignore_index=255)




def test_registered_with_every_kind_and_a_linear_head():
    cls = get_method("pseudolabel")
    assert cls.uses == frozenset(KINDS) and cls.head == "linear"


@pytest.mark.parametrize("target_view", ["same", "strong"])
@pytest.mark.parametrize("kinds", [("none",), ("mask",), ("image", "box"), ("point",), KINDS])
def test_terms_finite_and_driven_by_the_right_annotations(mixed, kinds, target_view):
    method = make(mixed.n_classes, target_view=target_view)
    model = tiny_model(mixed.n_classes)
    terms = method.step(model, batch_of(mixed, kinds))
    assert set(terms) == {"ce", "pl"}
    total = sum(terms.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert (terms["ce"].item() > 0) == ("mask" in kinds)  # only masks drive CE
    assert terms["pl"].item() > 0  # every image, unlabeled ones included, gives pseudo-labels


def test_the_filter_overrides_the_networks_arg_max():
    """Logits favour class 0 everywhere; the annotation admits only class 2 on the left half: the
    pseudo-label there is 2 and the term is the CE towards it (classes 0/1 elsewhere)."""
    method = make(3, weight=1.0)
    logits = torch.tensor([3.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 4, 6).clone().requires_grad_()
    allowed = torch.ones(1, 3, 4, 6, dtype=torch.bool)
    allowed[:, :, :, :3] = torch.tensor([False, False, True]).view(1, 3, 1, 1)
    allowed[:, 0, :, 3:] = False
    batch = {"image": torch.zeros(1, 1, 4, 6), "target": torch.full((1, 4, 6), 255), "allowed": allowed,
             "valid": torch.ones(1, 4, 6, dtype=torch.bool)}
    pseudo = method.targets(batch, {"logits": logits})
    assert (pseudo[..., :3] == 2).all() and (pseudo[..., 3:] == 1).all()
    terms = method.loss({"logits": logits}, batch)
    expected = F.cross_entropy(logits, pseudo)
    torch.testing.assert_close(terms["pl"], expected)
    assert terms["ce"].item() == 0.0
    terms["pl"].backward()
    assert logits.grad.abs().sum() > 0


def test_strong_view_targets_are_admissible(mixed):
    torch.manual_seed(1)
    batch = collate([mixed[(i, 3)] for i in range(len(mixed))], ignore_index=255)
    method = make(mixed.n_classes, target_view="strong")
    views = weak_and_strong(tiny_model(mixed.n_classes), batch)
    moved = method.targets(views.weak, views.out_weak, views.geometry)
    valid = views.strong["valid"]
    admitted = views.strong["allowed"].gather(1, moved.clamp(max=mixed.n_classes - 1).unsqueeze(1)).squeeze(1)
    assert admitted[valid].all()
    assert (moved[~valid] == 255).all()


@pytest.mark.parametrize("target_view", ["same", "strong"])
def test_loss_decreases(mixed, target_view):
    method = make(mixed.n_classes, target_view=target_view)
    model = tiny_model(mixed.n_classes)
    batch = collate([mixed[(i, 0)] for i in range(len(mixed))], ignore_index=255)
    history = train_steps(method, model, batch, augmented=True)
    history = [sum(h.values()) for h in history]
    assert sum(history[-3:]) < 0.9 * sum(history[:3])


def test_options_are_validated():
    cls = get_method("pseudolabel")
    with pytest.raises(ValueError, match="wieght"):
        cls.Options.model_validate({"wieght": 1.0})
    with pytest.raises(ValueError, match="target_view"):
        cls.Options.model_validate({"target_view": "other"})
    with pytest.raises(ValueError, match="weight"):
        cls.Options.model_validate({"weight": -1})
