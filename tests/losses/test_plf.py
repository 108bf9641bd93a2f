"""Pseudo-label filtering on hand-drawn cases, one per annotation type."""

from __future__ import annotations

import torch

from dspseg.losses.plf import confident, filter_pseudo_labels

# 1 image, 3 classes, 2x3 pixels. Unfiltered arg-max is class 0 everywhere.
SCORES = torch.tensor([[[[0.9, 0.9, 0.9], [0.9, 0.9, 0.9]],
                        [[0.5, 0.1, 0.5], [0.1, 0.5, 0.1]],
                        [[0.1, 0.5, 0.1], [0.5, 0.1, 0.2]]]])
VALID = torch.ones(1, 2, 3, dtype=torch.bool)


def allowed_from(rows):
    """rows[c] = 2x3 nested list of 0/1 for class c."""
    return torch.tensor([rows], dtype=torch.bool)


def test_unlabeled_is_plain_argmax():
    allowed = torch.ones(1, 3, 2, 3, dtype=torch.bool)
    assert filter_pseudo_labels(SCORES, allowed, VALID, 255).tolist() == [[[0, 0, 0], [0, 0, 0]]]


def test_image_labels_remove_absent_classes():
    # labels {1, 2}: class 0 removed everywhere
    allowed = allowed_from([[[0] * 3] * 2, [[1] * 3] * 2, [[1] * 3] * 2])
    assert filter_pseudo_labels(SCORES, allowed, VALID, 255).tolist() == [[[1, 2, 1], [2, 1, 2]]]


def test_box_restricts_its_class_to_the_box():
    # labels {0, 1}; class 1 boxed in column 0 only; class 0 unboxed (admissible everywhere)
    allowed = allowed_from([[[1, 1, 1], [1, 1, 1]], [[1, 0, 0], [1, 0, 0]], [[0, 0, 0], [0, 0, 0]]])
    scores = SCORES.clone()
    scores[0, 1] = 1.0  # class 1 would win everywhere without the box rule
    assert filter_pseudo_labels(scores, allowed, VALID, 255).tolist() == [[[1, 0, 0], [1, 0, 0]]]


def test_point_forces_its_class():
    allowed = torch.ones(1, 3, 2, 3, dtype=torch.bool)
    allowed[0, :, 1, 2] = False
    allowed[0, 2, 1, 2] = True  # point of class 2 at row 1, col 2
    assert filter_pseudo_labels(SCORES, allowed, VALID, 255)[0, 1, 2] == 2


def test_padding_gets_ignore_index_and_confidence_rules():
    valid = VALID.clone()
    valid[0, 0, 0] = False
    allowed = torch.ones(1, 3, 2, 3, dtype=torch.bool)
    allowed[0, :, 1, 1] = False
    allowed[0, 1, 1, 1] = True
    labels = filter_pseudo_labels(SCORES, allowed, valid, 255)
    assert labels[0, 0, 0] == 255
    conf = confident(SCORES / 0.05, allowed, 0.95)
    assert conf[0, 1, 1]  # a single admissible class is always confident
    assert conf[0, 0, 0] and not confident(SCORES, allowed, 0.95)[0, 0, 0]


def test_ties_go_to_the_first_admissible_class_as_with_argmax():
    # classes 1 and 2 tie everywhere and beat class 0; where class 1 is not admissible, class 2 wins
    scores = torch.tensor([[[[0.1, 0.1]], [[0.7, 0.7]], [[0.7, 0.7]]]])
    allowed = allowed_from([[[1, 1]], [[1, 0]], [[1, 1]]])
    valid = torch.ones(1, 1, 2, dtype=torch.bool)
    labels = filter_pseudo_labels(scores, allowed, valid, 255)
    assert labels.tolist() == [[[1, 2]]]
    reference = scores.masked_fill(~allowed, float("-inf")).argmax(dim=1)
    assert torch.equal(labels, reference)
    # and on a large random batch with ties, the same labels as argmax
    g = torch.Generator().manual_seed(0)
    big = torch.randint(0, 4, (3, 9, 16, 16), generator=g).float()  # many exact ties
    ok = torch.rand(3, 9, 16, 16, generator=g) > 0.3
    ok[:, 0] = True
    full = torch.ones(3, 16, 16, dtype=torch.bool)
    assert torch.equal(filter_pseudo_labels(big, ok, full, 255), big.masked_fill(~ok, float("-inf")).argmax(dim=1))
