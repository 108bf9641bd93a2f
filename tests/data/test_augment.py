"""Augmentation geometry is exact: pixels, points and boxes move together; round trips are identity."""

from __future__ import annotations

import itertools

import pytest
import torch

from dspseg.data.augment import BatchGeometry, Dihedral, cutout, jitter, strong_view, weak_view
from dspseg.data.batch import ARRAYS, PIXELS, Bags, Batch, array_fields

ALL = [Dihedral(f, k) for f, k in itertools.product([False, True], range(4))]


@pytest.mark.parametrize("t", ALL)
def test_inverse_round_trip(t):
    x = torch.arange(5 * 5).view(1, 5, 5)
    assert torch.equal(t.inverse().apply(t.apply(x)), x)


# Quarter turns of non-square arrays change the shape: batches use only half turns then.
CASES = [(t, hw) for t in ALL for hw in [(6, 6), (4, 7)] if hw[0] == hw[1] or t.k % 2 == 0]


@pytest.mark.parametrize("t, hw", CASES)
def test_points_and_boxes_follow_pixels(t, hw):
    h, w = hw
    for r, c in [(0, 0), (1, 3), (h - 1, w - 1), (2, 0)]:
        img = torch.zeros(h, w)
        img[r, c] = 1
        moved = t.apply(img)
        rr, cc = t.points(torch.tensor(r), torch.tensor(c), h, w)
        assert moved[rr, cc] == 1 and moved.sum() == 1
    box = torch.tensor([1, 0, 3, 2])  # x0, y0, x1, y1 (half-open)
    img = torch.zeros(h, w)
    img[0:2, 1:3] = 1
    moved = t.apply(img)
    x0, y0, x1, y1 = t.boxes(box, h, w).tolist()
    expect = torch.zeros_like(moved)
    expect[y0:y1, x0:x1] = 1
    assert torch.equal(moved, expect)


def make_batch(b=4, h=8, w=8, c=3):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(b, 1, h, w, generator=g)
    target = torch.randint(0, c, (b, h, w), generator=g)
    allowed = torch.rand(b, c, h, w, generator=g) > 0.5
    valid = torch.ones(b, h, w, dtype=torch.bool)
    bags = Bags(instances=torch.randint(0, 3, (b, h, w), generator=g), instance_classes=torch.zeros(0, dtype=torch.long),
                points=torch.tensor([[0, 1, 2, 5], [3, 2, 7, 0], [1, 0, 0, 0]]),
                boxes=torch.tensor([[0, 1, 1, 2, 4, 6], [2, 0, 0, 0, 8, 3]]),
                image_labels=torch.zeros(0, 2, dtype=torch.long))
    batch = Batch(image=image, target=target, allowed=allowed, valid=valid,
                  image_classes=torch.ones(b, c, dtype=torch.bool), bags=bags, kinds=["mask"] * b)
    batch.valid[1, :, 6:] = False
    return batch


def pixel_field(batch, name):
    """A ``pixels`` field of the batch or its bags, by name."""
    return getattr(batch.bags if hasattr(batch.bags, name) else batch, name)


def test_augmentation_moves_every_declared_pixel_field():
    """Every ``pixels`` field of the batch declaration is one this module's tests check."""
    assert {f.name for f in array_fields() if f.metadata["role"] == PIXELS} == {
        "target", "allowed", "valid", "instances", "image"} and set(ARRAYS) >= {"points", "boxes"}


@pytest.mark.parametrize("hw", [(8, 8), (6, 10)])
def test_batch_geometry_keeps_annotations_aligned(hw):
    batch = make_batch(h=hw[0], w=hw[1])
    points, boxes = batch.bags.points, batch.bags.boxes
    points[:, 2] = points[:, 2].clamp(max=hw[0] - 1)
    points[:, 3] = points[:, 3].clamp(max=hw[1] - 1)
    boxes[:, 4] = boxes[:, 4].clamp(max=hw[1])
    boxes[:, 5] = boxes[:, 5].clamp(max=hw[0])
    geo = BatchGeometry.random(4, *hw, torch.Generator().manual_seed(3))
    out = geo.apply_batch(batch)
    for key in ("target", "allowed", "valid", "instances", "image"):
        for i, t in enumerate(geo.transforms):
            assert torch.equal(pixel_field(out, key)[i], t.apply(pixel_field(batch, key)[i])), key
    # the target value under each point is unchanged by the move
    for (b, _, r, c), (_, _, r2, c2) in zip(points.tolist(), out.bags.points.tolist()):
        assert batch.target[b, r, c] == out.target[b, r2, c2]
    # each box still encloses the same target pixels
    for (b, _, x0, y0, x1, y1), (_, _, u0, v0, u1, v1) in zip(boxes.tolist(), out.bags.boxes.tolist()):
        assert torch.equal(batch.target[b, y0:y1, x0:x1].sort().values.flatten().sort().values,
                           out.target[b, v0:v1, u0:u1].flatten().sort().values)


def test_non_square_batches_never_quarter_turn():
    geo = BatchGeometry.random(64, 6, 10, torch.Generator().manual_seed(0))
    assert all(t.k % 2 == 0 for t in geo.transforms)
    assert len({t for t in geo.transforms}) == 4
    with pytest.raises(ValueError, match="square"):
        BatchGeometry([Dihedral(False, 1)], 6, 10)


def test_jitter_touches_valid_pixels_only_and_within_strength():
    batch = make_batch()
    g = torch.Generator().manual_seed(1)
    out = jitter(batch.image, batch.valid, 0.2, g)
    v = batch.valid.unsqueeze(1)
    assert torch.equal(out[~v], batch.image[~v])
    assert not torch.equal(out[v], batch.image[v])
    # contrast within [0.8, 1.2]: the std of every image changes by at most 20 %
    for i in range(out.shape[0]):
        s0 = batch.image[i][v[i]].std()
        s1 = out[i][v[i]].std()
        assert 0.8 - 1e-5 <= s1 / s0 <= 1.2 + 1e-5


def test_cutout_zeroes_squares_only():
    img = torch.ones(16, 1, 32, 32)
    out = cutout(img, torch.Generator().manual_seed(0), max_squares=9)
    holes = out == 0
    assert holes.any(dim=(1, 2, 3)).all()  # every image got at least one square
    assert ((out == 0) | (out == 1)).all()
    assert holes.float().mean() < 0.6


def test_strong_view_composes_with_weak_view_for_pseudo_labels():
    batch = make_batch()
    g = torch.Generator().manual_seed(5)
    weak, _ = weak_view(batch, g)
    strong, geo = strong_view(weak, g)
    # labels predicted on the weak view move to the strong view exactly like the true target
    assert torch.equal(geo.apply(weak.target), strong.target)
    assert torch.equal(strong.allowed, geo.apply(weak.allowed))
