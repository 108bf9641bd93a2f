"""The overlay picture: nearest-neighbour enlargement to at least 256 px and a legend of every class."""

from __future__ import annotations

import numpy as np
import pytest

from dspseg.engine.overlay import LEGEND_ALL_UP_TO, enlarge_factor, legend_classes, overlay_picture
from dspseg.engine.predict import overlay_rgb, palette


def test_enlarge_factor_reaches_256_on_the_shorter_side_and_caps_the_longer():
    assert enlarge_factor(64, 64) == 4 and enlarge_factor(45, 70) == 6 and enlarge_factor(300, 900) == 1
    assert enlarge_factor(10, 2000) == 2  # 2000 * 2 <= 4096 < 2000 * 3


def test_nearest_neighbour_blocks_and_legend_colours():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (40, 56))
    rgb = overlay_rgb(rng.random((1, 40, 56)).astype(np.float32), labels, 3)
    colours = palette(3)
    pic = overlay_picture(rgb, labels, ["background", "mito", "er"], colours)
    k = 7  # ceil(256 / 40)
    assert pic.shape[0] == 40 * k and pic.dtype == np.uint8
    assert np.array_equal(pic[: 40 * k, : 56 * k], np.repeat(np.repeat(rgb, k, 0), k, 1))  # no blending
    legend = pic[:, 56 * k + 4 :].reshape(-1, 3)
    for c in (1, 2):  # every class's colour square is drawn in the legend
        assert (np.abs(legend.astype(int) - colours[c]).sum(1) <= 3).sum() >= 50


def test_many_classes_list_those_present_and_bad_shapes_are_refused():
    labels = np.array([[0, 3], [20, 3]])
    assert legend_classes(labels, 30) == [0, 3, 20] and legend_classes(labels, LEGEND_ALL_UP_TO) == list(range(16))
    with pytest.raises(ValueError, match=r"expected rgb \(H, W, 3\) and labels \(H, W\)"):
        overlay_picture(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), int), ["a"], palette(1))
