"""The ``boxinst`` method and its losses: hand-computed projections, zero loss for a box-shaped
prediction, the pairwise term's values, box-only learning, the warm-up and its exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dspseg.engine import checkpoint as ckpt
from dspseg.engine.trainer import resolve_run_config, train
from dspseg.losses.boxinst import (box_projections, inside_boxes, max_projections, pairwise_loss,
                                   projection_loss)
from methods_common import IGNORE, MethodTester, batch_of, hand_batch, make_method, tiny_model, train_steps
from engine_common import make_easy_dataset, tiny_cfg


def test_max_projections_by_hand():
    prob = torch.tensor([[[[0.1, 0.7, 0.2, 0.0],
                           [0.4, 0.3, 0.9, 0.5],
                           [0.8, 0.2, 0.1, 0.6]]]], dtype=torch.float64)  # (1, 1, 3, 4)
    valid = torch.ones(1, 3, 4, dtype=torch.bool)
    px, py = max_projections(prob, valid)
    assert px.tolist() == [[[0.8, 0.7, 0.9, 0.6]]] and py.tolist() == [[[0.7, 0.9, 0.8]]]
    valid[0, 2, :] = False  # the last row is padding
    valid[0, :, 3] = False  # and the last column
    px, py = max_projections(prob, valid)
    assert px.tolist() == [[[0.4, 0.7, 0.9, 0.0]]] and py.tolist() == [[[0.7, 0.9, 0.0]]]


def test_box_tables_equal_brute_force():
    boxes = torch.tensor([[0, 1, 1, 0, 3, 2], [0, 1, 4, 3, 6, 5], [1, 0, 0, 1, 2, 4], [1, 2, 2, 2, 3, 3]])
    b, c, h, w = 2, 3, 5, 6
    mx, my, has = box_projections(boxes, b, c, h, w)
    union = torch.zeros(b, c, h, w)
    for bi, ci, x0, y0, x1, y1 in boxes.tolist():
        union[bi, ci, y0:y1, x0:x1] = 1
    assert torch.equal(mx, union.amax(2)) and torch.equal(my, union.amax(3))
    assert has.tolist() == [[False, True, False], [True, False, True]]
    assert torch.equal(inside_boxes(boxes, b, h, w), union.amax(1) > 0)
    with pytest.raises(ValueError, match="empty or outside"):
        box_projections(torch.tensor([[0, 1, 3, 0, 3, 2]]), b, c, h, w)  # x0 == x1


def test_projection_loss_zero_for_box_shaped_prediction_and_hand_value():
    h, w = 6, 8
    boxes = torch.tensor([[0, 1, 1, 1, 3, 4], [0, 1, 5, 2, 7, 6], [0, 0, 0, 0, 8, 6]])
    prob = torch.zeros(1, 3, h, w)
    for _, c, x0, y0, x1, y1 in boxes.tolist():
        prob[0, c, y0:y1, x0:x1] = 1.0  # exactly the box masks (class 2 has no box: not counted)
    valid = torch.ones(1, h, w, dtype=torch.bool)
    assert projection_loss(prob, boxes, valid).item() == pytest.approx(0.0, abs=1e-6)
    # class 1 predicted 0.5 in its boxes: Dice_x = 1 - 2·(0.5·4)/(4·0.25 + 4) = 0.2, Dice_y likewise (0.2)
    prob[0, 1] *= 0.5
    assert projection_loss(prob, boxes, valid).item() == pytest.approx((0.4 + 0.0) / 2, abs=1e-5)
    empty = projection_loss(prob.requires_grad_(), boxes[:0], valid)
    assert empty.item() == 0 and empty.requires_grad


def test_pairwise_loss_values():
    c, h, w = 3, 7, 7
    image = torch.zeros(1, 1, h, w)
    inbox = torch.ones(1, h, w, dtype=torch.bool)
    valid = torch.ones(1, h, w, dtype=torch.bool)
    uniform = torch.full((1, c, h, w), -math.log(c))
    assert pairwise_loss(uniform, image, inbox, valid).item() == pytest.approx(math.log(c), rel=1e-5)
    sure = torch.full((1, c, h, w), -30.0)
    sure[:, 0] = 0.0
    assert pairwise_loss(sure, image, inbox, valid).item() == pytest.approx(0.0, abs=1e-6)
    # every pair crosses a strong intensity change: no pair qualifies, the loss is 0
    stripes = (torch.arange(w) // 2 % 2).float().expand(1, 1, h, w) * 10
    rows = (torch.arange(h) // 2 % 2).float().view(1, 1, h, 1) * 10
    assert pairwise_loss(uniform, stripes + rows * 3, inbox, valid, smooth=1).item() == 0.0
    # pixels outside every box give no pairs either
    assert pairwise_loss(uniform, image, torch.zeros_like(inbox), valid).item() == 0.0


class TestBoxInst(MethodTester):
    name = "boxinst"
    uses = frozenset({"mask", "box"})
    bad_options = [({"warmup_steps": -1}, "warmup_steps"), ({"theta": 0}, "theta")]


def test_terms_finite_zero_without_boxes_and_decreasing(mixed):
    torch.manual_seed(0)
    method = make_method("boxinst", mixed.n_classes, warmup_steps=0)
    model = tiny_model(method, mixed.n_classes)
    terms = method.step(model, batch_of(mixed, {"mask", "box"}))
    assert set(terms) == {"ce", "box_projection", "box_pairwise"}
    assert all(torch.isfinite(t) and t.item() > 0 for t in terms.values())
    for kinds in ({"point"}, {"image"}, {"none"}):  # not used: their boxes (none) and pixels give nothing
        terms = method.step(model, batch_of(mixed, kinds))
        assert all(t.item() == 0 and t.requires_grad for t in terms.values()), kinds
    box_only = method.step(model, batch_of(mixed, {"box"}))
    assert box_only["ce"].item() == 0 and box_only["box_projection"].item() > 0

    model = tiny_model(method, mixed.n_classes, levels=3)
    hist = train_steps(method, model, batch_of(mixed, {"mask", "box"}), lr=1e-2)
    assert hist[-1]["ce"] < 0.8 * hist[0]["ce"]
    assert hist[-1]["box_projection"] < 0.9 * hist[0]["box_projection"]
    assert hist[-1]["box_pairwise"] < 0.8 * hist[0]["box_pairwise"]


def test_boxes_of_unused_kinds_are_ignored():
    method = make_method("boxinst", 2, warmup_steps=0)
    target = torch.full((1, 6, 6), IGNORE)
    logits = torch.randn(1, 2, 6, 6, requires_grad=True)
    batch = hand_batch(torch.zeros(1, 1, 6, 6), target, ["point"], 2, boxes=[[0, 1, 1, 1, 4, 4]])
    terms = method.loss({"logits": logits}, batch)
    assert terms["box_projection"].item() == 0 and terms["box_pairwise"].item() == 0
    batch.kinds = ["box"]
    assert method.loss({"logits": logits}, batch)["box_projection"].item() > 0


def test_warmup_schedule_and_state():
    method = make_method("boxinst", 2, warmup_steps=4)
    assert [method.warmup(t) for t in range(0, 7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert make_method("boxinst", 2, warmup_steps=0).warmup(1) == 1.0
    target = torch.full((1, 6, 6), IGNORE)
    batch = hand_batch(torch.zeros(1, 1, 6, 6), target, ["box"], 2, boxes=[[0, 1, 1, 1, 4, 4]])
    model = tiny_model(method, 2)
    pairs = []
    for _ in range(3):
        torch.manual_seed(0)  # same view every step: only the warm-up factor changes
        pairs.append(method.step(model, batch)["box_pairwise"].item())
    assert method.steps == 3 and method.state_dict() == {"steps": 3}
    assert pairs[1] == pytest.approx(2 * pairs[0]) and pairs[2] == pytest.approx(3 * pairs[0])
    other = make_method("boxinst", 2, warmup_steps=4)
    other.load_state_dict(method.state_dict())
    assert other.steps == 3
    with pytest.raises(ValueError, match="unknown method state"):
        other.load_state_dict({"step": 1})


def test_training_resume_continues_the_warmup_exactly(tmp_path: Path):
    data = make_easy_dataset(tmp_path / "easy", n=(6, 2, 2), kind="box")
    sets = ["method_options.warmup_steps=3"]
    train(data, tmp_path / "a", tiny_cfg(steps=4, val_every=2, method="boxinst", sets=sets))
    train(data, tmp_path / "b", tiny_cfg(steps=2, val_every=2, method="boxinst", sets=sets))
    assert ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["method_state"] == {"steps": 2}
    train(data, tmp_path / "b", resolve_run_config(tmp_path / "b", True, flags={"steps": 4}), resume=True)
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert a["method_state"] == b["method_state"] == {"steps": 4}
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
