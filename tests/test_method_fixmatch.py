"""The ``fixmatch`` method: terms per annotation kind, the filter and the threshold, learning, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dspseg.data.dataset import collate
from dspseg.methods import get_method
from dspseg.methods.fixmatch import confident_cross_entropy
from dspseg.methods.views import weak_and_strong
from methods_common import KINDS, batch_per_kind as batch_of, linear_model as tiny_model, train_steps


def make(n_classes, **opts):
    cls = get_method("fixmatch")
    return cls(cls.Options.model_validate(opts), n_classes=n_classes, ignore_index=255)




def test_registered_with_every_kind_and_a_linear_head():
    cls = get_method("fixmatch")
    assert cls.uses == frozenset(KINDS) and cls.head == "linear"
    assert cls.Options().threshold == 0.95


@pytest.mark.parametrize("kinds", [("none",), ("mask",), ("image", "box"), ("point",), KINDS])
def test_terms_finite_and_driven_by_the_right_annotations(mixed, kinds):
    method = make(mixed.n_classes, threshold=0.0)  # every pixel confident: the term is never empty
    model = tiny_model(mixed.n_classes)
    terms = method.step(model, batch_of(mixed, kinds))
    assert set(terms) == {"ce", "fixmatch"}
    total = sum(terms.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert (terms["ce"].item() > 0) == ("mask" in kinds)
    assert terms["fixmatch"].item() > 0


def test_unconfident_unlabeled_images_give_an_empty_but_connected_term(mixed):
    """An untrained network on unlabeled images is nowhere 95 % sure: the term is 0 yet has a graph."""
    method = make(mixed.n_classes)
    terms = method.step(tiny_model(mixed.n_classes), batch_of(mixed, ("none",)))
    assert terms["ce"].item() == 0.0 and terms["fixmatch"].item() == 0.0
    assert terms["fixmatch"].requires_grad


def test_targets_are_admissible_and_single_class_pixels_are_confident(mixed):
    torch.manual_seed(1)
    batch = collate([mixed[(i, 3)] for i in range(len(mixed))], ignore_index=255)
    method = make(mixed.n_classes)
    views = weak_and_strong(tiny_model(mixed.n_classes), batch)
    moved, mask = method.targets(views)
    strong_allowed, valid = views.strong["allowed"], views.strong["valid"]
    admitted = strong_allowed.gather(1, moved.clamp(max=mixed.n_classes - 1).unsqueeze(1)).squeeze(1)
    assert admitted[valid].all()
    single = (strong_allowed.sum(1) == 1) & valid
    assert single.any() and mask[single].all()  # mask pixels, points: always confident
    assert not mask[~valid].any()
    assert mask.float().mean() < 0.9  # an untrained network is not confident elsewhere


def test_threshold_and_masked_mean_on_hand_made_logits():
    """Pixel 0: one admissible class (confident under any threshold); pixel 1: softmax over all 3
    classes peaks at 0.844 (confident only for θ ≤ 0.844); pixel 2 is padding. The mean divides by
    the 2 valid pixels, as FixMatch's masked mean does."""
    logits = torch.tensor([[0.0, 1.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 9.0]]).T.reshape(1, 3, 1, 3)
    logits.requires_grad_()
    allowed = torch.ones(1, 3, 1, 3, dtype=torch.bool)
    allowed[0, :, 0, 0] = torch.tensor([True, False, False])
    valid = torch.tensor([[[True, True, False]]])
    batch = {"image": torch.zeros(1, 1, 1, 3), "target": torch.full((1, 1, 3), 255), "allowed": allowed,
             "valid": valid}
    ce = F.cross_entropy(logits.detach(), torch.tensor([[[0, 0, 0]]]), reduction="none")[0, 0]
    for threshold, expected in ((0.95, ce[0] / 2), (0.8, (ce[0] + ce[1]) / 2)):
        terms = make(3, threshold=threshold).loss({"logits": logits}, batch)
        assert terms["fixmatch"].item() == pytest.approx(expected.item(), rel=1e-5)
        assert terms["ce"].item() == 0.0


def test_confident_cross_entropy_checks_shapes():
    with pytest.raises(ValueError, match="mask"):
        confident_cross_entropy(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long),
                                torch.ones(1, 4, 5, dtype=torch.bool), torch.ones(1, 4, 4, dtype=torch.bool), 255)


def test_loss_decreases(mixed):
    method = make(mixed.n_classes)
    model = tiny_model(mixed.n_classes)
    batch = collate([mixed[(i, 0)] for i in range(len(mixed))], ignore_index=255)
    history = train_steps(method, model, batch, augmented=True)
    history = [sum(h.values()) for h in history]
    assert sum(history[-3:]) < 0.9 * sum(history[:3])


def test_options_are_validated():
    cls = get_method("fixmatch")
    with pytest.raises(ValueError, match="treshold"):
        cls.Options.model_validate({"treshold": 0.9})
    with pytest.raises(ValueError, match="threshold"):
        cls.Options.model_validate({"threshold": 1.5})
    with pytest.raises(ValueError, match="cutout"):
        cls.Options.model_validate({"cutout": -1})
