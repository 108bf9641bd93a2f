"""The ``pointbranch`` method and its distance maps: euclidean exact, geodesic = chamfer on a constant
image and longer across an intensity wall, targets only where points exist, terms that decrease."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest
import torch

from dspseg.losses.distance_maps import euclidean_distance_maps, geodesic_distance_maps, normalised
from methods_common import IGNORE, MethodTester, batch_of, hand_batch, make_method, tiny_model, train_steps


def brute(points: list[tuple[int, int]], h: int, w: int, metric) -> np.ndarray:
    out = np.full((h, w), np.inf)
    for r in range(h):
        for c in range(w):
            for pr, pc in points:
                out[r, c] = min(out[r, c], metric(abs(r - pr), abs(c - pc)))
    return out


def euclid(dr: int, dc: int) -> float:
    return math.hypot(dr, dc)


def chamfer(dr: int, dc: int) -> float:
    return max(dr, dc) + (math.sqrt(2) - 1) * min(dr, dc)


def test_euclidean_5x7_two_points_equals_brute_force():
    pts = torch.tensor([[0, 1, 1, 2], [0, 1, 4, 6], [1, 0, 2, 3]])  # two points of class 1 in image 0
    d = euclidean_distance_maps(pts, batch=2, n_classes=2, h=5, w=7)
    assert d.shape == (2, 2, 5, 7)
    np.testing.assert_allclose(d[0, 1].numpy(), brute([(1, 2), (4, 6)], 5, 7, euclid), rtol=1e-6)
    np.testing.assert_allclose(d[1, 0].numpy(), brute([(2, 3)], 5, 7, euclid), rtol=1e-6)
    assert torch.isinf(d[0, 0]).all() and torch.isinf(d[1, 1]).all()  # no points there
    small = euclidean_distance_maps(pts, batch=2, n_classes=2, h=5, w=7, chunk_elements=1)  # one point per chunk
    assert torch.equal(small, d)


def test_geodesic_on_constant_image_is_the_chamfer_distance():
    pts = torch.tensor([[0, 0, 1, 2], [0, 0, 4, 6], [1, 1, 3, 0]])
    image = torch.full((2, 1, 5, 7), 0.3)
    g = geodesic_distance_maps(pts, image, n_classes=2, beta=5.0, passes=1)
    ch = brute([(1, 2), (4, 6)], 5, 7, chamfer)
    np.testing.assert_allclose(g[0, 0].numpy(), ch, rtol=1e-5)
    np.testing.assert_allclose(g[1, 1].numpy(), brute([(3, 0)], 5, 7, chamfer), rtol=1e-5)
    e = euclidean_distance_maps(pts, 2, 2, 5, 7)
    finite = torch.isfinite(e)
    assert torch.equal(finite, torch.isfinite(g))
    assert (g[finite] >= e[finite] - 1e-5).all() and (g[finite] <= 1.0824 * e[finite] + 1e-5).all()


def test_geodesic_is_longer_across_an_intensity_wall():
    image = torch.zeros(1, 1, 9, 9)
    image[..., :, 4] = 1.0  # a bright vertical wall through every row
    pts = torch.tensor([[0, 0, 4, 1]])
    flat = geodesic_distance_maps(pts, torch.zeros_like(image), 1, beta=3.0)[0, 0]
    wall = geodesic_distance_maps(pts, image, 1, beta=3.0)[0, 0]
    assert torch.allclose(wall[:, :4], flat[:, :4])  # the seed's side: no path gains from crossing
    # crossing the wall costs at least β·(up + down) = 6 more
    assert (wall[:, 5:] >= flat[:, 5:] + 6 - 1e-5).all()
    assert wall[4, 8] == pytest.approx(flat[4, 8] + 6.0)


def dijkstra(image: np.ndarray, seeds: list[tuple[int, int]], beta: float, valid: np.ndarray) -> np.ndarray:
    """Exact shortest paths on the 8-connected grid, step cost ℓ + β·|ΔI| (the reference)."""
    h, w = image.shape
    dist = np.full((h, w), np.inf)
    heap = []
    for r, c in seeds:
        dist[r, c] = 0.0
        heapq.heappush(heap, (0.0, r, c))
    while heap:
        d, r, c = heapq.heappop(heap)
        if d > dist[r, c]:
            continue
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, c + dc
                if (dr or dc) and 0 <= rr < h and 0 <= cc < w and valid[rr, cc]:
                    nd = d + math.hypot(dr, dc) + beta * abs(image[rr, cc] - image[r, c])
                    if nd < dist[rr, cc]:
                        dist[rr, cc] = nd
                        heapq.heappush(heap, (nd, rr, cc))
    return dist


def test_geodesic_converges_to_dijkstra_and_bounds_it_from_above():
    torch.manual_seed(1)
    image = torch.rand(1, 1, 9, 11)
    valid = torch.ones(1, 9, 11, dtype=torch.bool)
    valid[0, 7:, :] = False  # padding rows
    valid[0, 2:5, 5] = False  # and an invalid notch inside
    seeds = [(1, 1), (6, 9)]
    pts = torch.tensor([[0, 0, r, c] for r, c in seeds])
    ref = dijkstra(image[0, 0].double().numpy(), seeds, 3.0, valid[0].numpy())
    exact = geodesic_distance_maps(pts, image, 1, beta=3.0, passes=40, valid=valid)[0, 0].double().numpy()
    np.testing.assert_allclose(exact[valid[0]], ref[valid[0]], rtol=1e-6)
    few = geodesic_distance_maps(pts, image, 1, beta=3.0, passes=1, valid=valid)[0, 0].double().numpy()
    assert (few[valid[0]] >= ref[valid[0]] - 1e-6).all()  # relaxation only ever overestimates


def test_geodesic_paths_avoid_invalid_pixels_and_batch_equals_separate():
    torch.manual_seed(0)
    image = torch.rand(2, 1, 6, 8)
    valid = torch.ones(2, 6, 8, dtype=torch.bool)
    valid[0, :, 3] = False  # image 0 cut in two by an invalid column
    pts = torch.tensor([[0, 1, 2, 1], [1, 0, 5, 7], [1, 2, 0, 0], [1, 2, 5, 5]])
    g = geodesic_distance_maps(pts, image, 3, beta=1.5, passes=3, valid=valid)
    assert torch.isinf(g[0, 1, :, 3:]).all() and torch.isfinite(g[0, 1, :, :3]).all()
    for row in pts.tolist():  # one (image, class) at a time gives the same maps
        sel = pts[(pts[:, 0] == row[0]) & (pts[:, 1] == row[1])].clone()
        sel[:, 0] = 0
        alone = geodesic_distance_maps(sel, image[row[0]:row[0] + 1], 3, beta=1.5, passes=3,
                                       valid=valid[row[0]:row[0] + 1])
        assert torch.allclose(alone[0, row[1]], g[row[0], row[1]], rtol=1e-6)  # float32 alone, float64 here


def test_normalised_targets():
    d = torch.tensor([0.0, 8.0, math.inf])
    assert normalised(d, 8.0).tolist() == pytest.approx([1.0, math.exp(-1), 0.0])
    with pytest.raises(ValueError, match="sigma"):
        normalised(d, 0.0)


class TestPointBranch(MethodTester):
    name = "pointbranch"
    uses = frozenset({"mask", "point"})
    bad_options = [({"distance": "manhattan"}, "distance"), ({"sigma": 0}, "sigma")]


def test_targets_only_where_points_exist():
    method = make_method("pointbranch", 3, sigma=2.0)
    target = torch.full((2, 5, 7), IGNORE)
    batch = hand_batch(torch.zeros(2, 1, 5, 7), target, ["point", "image"], 3,
                       points=[[0, 2, 1, 1], [1, 0, 2, 2]])  # the image-label image's point is not used
    t, has = method.targets(batch)
    assert has.tolist() == [[False, False, True], [False, False, False]]
    assert t[0, 2, 1, 1] == 1.0 and t[0, 2, 1, 3] == pytest.approx(math.exp(-1.0))


@pytest.mark.parametrize("distance", ["euclidean", "geodesic"])
def test_terms_finite_zero_without_points_and_decreasing(mixed, distance):
    torch.manual_seed(0)
    method = make_method("pointbranch", mixed.n_classes, distance=distance)
    model = tiny_model(method, mixed.n_classes)
    terms = method.step(model, batch_of(mixed, {"mask", "point"}))
    assert set(terms) == {"ce", "point"} and all(torch.isfinite(t) for t in terms.values())
    assert terms["point"].item() > 0
    sum(terms.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.aux.parameters())
    for kinds in ({"box"}, {"image"}, {"none"}):  # not used: no points, no mask pixels
        terms = method.step(model, batch_of(mixed, kinds))
        assert terms["point"].item() == 0 and terms["ce"].item() == 0 and terms["point"].requires_grad
    only_points = method.step(model, batch_of(mixed, {"point"}))
    assert only_points["ce"].item() == 0 and only_points["point"].item() > 0

    model = tiny_model(method, mixed.n_classes, levels=3)
    hist = train_steps(method, model, batch_of(mixed, {"mask", "point"}), lr=1e-2)
    for term in ("ce", "point"):
        assert hist[-1][term] < 0.8 * hist[0][term], (term, hist[0], hist[-1])
