"""The ``clsbranch`` method: image-level targets from what each annotation says for sure, only mask and
image-label images count, finite terms that decrease."""

from __future__ import annotations

import pytest
import torch

from dspseg.methods.clsbranch import image_class_targets
from methods_common import IGNORE, MethodTester, batch_of, hand_batch, make_method, tiny_model, train_steps


class TestClsBranch(MethodTester):
    name = "clsbranch"
    uses = frozenset({"mask", "image"})
    bad_options = [({"weigth": 1.0}, "weigth"), ({"weight": -1}, "weight")]


def test_targets_by_hand():
    c, h, w = 4, 3, 4
    target = torch.full((5, h, w), IGNORE)
    target[0] = torch.tensor([[0, 0, 2, 2]] * 3)  # fully annotated crop showing {0, 2}
    target[1, 0, 0] = 1  # partial mask showing class 1
    image_classes = torch.ones(5, c, dtype=torch.bool)
    image_classes[0] = torch.tensor([True, True, True, False])  # the whole image has {0, 1, 2}
    image_classes[2] = torch.tensor([True, False, False, True])  # labels {0, 3}
    image_classes[3] = torch.tensor([False, True, False, False])  # labels {1}, crop without its labels
    image_classes[4] = torch.tensor([False, False, True, False])  # a box image of class 2
    batch = hand_batch(torch.zeros(5, 1, h, w), target, ["mask", "mask", "image", "image", "box"], c,
                       image_labels=[[2, 0], [2, 3], [4, 2]], boxes=[[4, 2, 0, 0, 2, 2]],
                       image_classes=image_classes)
    y, known = image_class_targets(batch, c, IGNORE, {"mask", "image"})
    T, F = True, False
    assert known.tolist() == [[T, T, T, T],   # crop exact: 1 absent from the crop, 3 from the image
                              [F, T, F, F],   # partial mask: only its shown class
                              [T, T, T, T],   # whole image with labels
                              [T, F, T, T],   # crop of a labelled image: negatives only
                              [F, F, F, F]]   # box image: not used
    assert y[known].tolist() == [1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0]


def test_padding_and_points_in_targets():
    """Padding is neither annotated nor a gap; points of used images are positives."""
    c = 3
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[:, 2:, :] = IGNORE  # padding rows (ignore in the target, as collate pads)
    target[1, 0, 1] = IGNORE  # image 1: one unannotated pixel, where a point of class 2 lies
    valid = torch.ones(2, 4, 4, dtype=torch.bool)
    valid[:, 2:, :] = False
    batch = hand_batch(torch.zeros(2, 1, 4, 4), target, ["mask", "mask"], c, valid=valid, points=[[1, 2, 0, 1]])
    y, known = image_class_targets(batch, c, IGNORE, {"mask", "image"})
    assert known.tolist() == [[True, True, True], [True, False, True]]
    assert y.tolist() == [[1, 0, 0], [1, 0, 1]]


def test_terms_finite_and_other_kinds_ignored(mixed):
    torch.manual_seed(0)
    method = make_method("clsbranch", mixed.n_classes, hidden=8)
    model = tiny_model(method, mixed.n_classes)
    batch = batch_of(mixed, {"mask", "image"})
    terms = method.step(model, batch)
    assert set(terms) == {"ce", "cls"} and all(torch.isfinite(t) for t in terms.values())
    sum(terms.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.aux.parameters())
    for kinds in ({"box"}, {"point"}, {"none"}):
        terms = method.step(model, batch_of(mixed, kinds))
        assert terms["ce"].item() == 0 and terms["cls"].item() == 0, kinds
        assert terms["cls"].requires_grad


def test_image_labels_alone_give_bce_only(mixed):
    method = make_method("clsbranch", mixed.n_classes)
    model = tiny_model(method, mixed.n_classes)
    terms = method.step(model, batch_of(mixed, {"image"}))
    assert terms["ce"].item() == 0 and terms["cls"].item() > 0


def test_loss_decreases(mixed):
    torch.manual_seed(0)
    method = make_method("clsbranch", mixed.n_classes, hidden=16)
    model = tiny_model(method, mixed.n_classes, width=4, levels=3)
    batch = batch_of(mixed, {"mask", "image"}, n=8)
    hist = train_steps(method, model, batch, lr=1e-2, forward=lambda b: model(b.image, valid=b.valid))
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in hist)
    for term in ("ce", "cls"):
        assert hist[-1][term] < 0.8 * hist[0][term], term


def test_missing_aux_output_is_explained(mixed):
    method = make_method("clsbranch", mixed.n_classes)
    model = tiny_model(method, mixed.n_classes).eval()
    batch = batch_of(mixed, {"mask"}, n=2)
    with pytest.raises(KeyError, match="aux_cls"):
        method.loss(model(batch.image), batch)
