"""The ``fixmatch`` method: terms per annotation kind, the filter and the threshold, learning, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dspseg.losses.ce import confident_cross_entropy
from dspseg.methods.views import weak_and_strong
from methods_common import EveryKindTester, admitted, batch_per_kind, hand_batch, whole_batch


class TestFixMatch(EveryKindTester):
    name = "fixmatch"
    terms = {"ce", "fixmatch"}
    step_options = {"threshold": 0.0}  # every pixel confident: the term is never empty
    bad_options = [({"treshold": 0.9}, "treshold"), ({"threshold": 1.5}, "threshold"), ({"cutout": -1}, "cutout")]

    def test_registered(self):
        super().test_registered()
        assert self.make(3).Options().threshold == 0.95

    def test_unconfident_unlabeled_images_give_an_empty_but_connected_term(self, mixed):
        """An untrained network on unlabeled images is nowhere 95 % sure: the term is 0 yet has a graph."""
        terms = self.make(mixed.n_classes).step(self.model(mixed.n_classes), batch_per_kind(mixed, ("none",)))
        assert terms["ce"].item() == 0.0 and terms["fixmatch"].item() == 0.0
        assert terms["fixmatch"].requires_grad

    def test_targets_are_admissible_and_single_class_pixels_are_confident(self, mixed):
        torch.manual_seed(1)
        views = weak_and_strong(self.model(mixed.n_classes), whole_batch(mixed, 3))
        moved, mask = self.make(mixed.n_classes).targets(views)
        strong_allowed, valid = views.strong.allowed, views.strong.valid
        assert admitted(moved, strong_allowed)[valid].all()
        single = (strong_allowed.sum(1) == 1) & valid
        assert single.any() and mask[single].all()  # mask pixels, points: always confident
        assert not mask[~valid].any()
        assert mask.float().mean() < 0.9  # an untrained network is not confident elsewhere

    def test_threshold_and_masked_mean_on_hand_made_logits(self):
        """Pixel 0: one admissible class (confident under any threshold); pixel 1: softmax over all 3
        classes peaks at 0.844 (confident only for θ ≤ 0.844); pixel 2 is padding. The mean divides by
        the 2 valid pixels, as FixMatch's masked mean does."""
        logits = torch.tensor([[0.0, 1.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 9.0]]).T.reshape(1, 3, 1, 3)
        logits.requires_grad_()
        allowed = torch.ones(1, 3, 1, 3, dtype=torch.bool)
        allowed[0, :, 0, 0] = torch.tensor([True, False, False])
        valid = torch.tensor([[[True, True, False]]])
        batch = hand_batch(torch.zeros(1, 1, 1, 3), torch.full((1, 1, 3), 255), ["none"], 3, valid=valid,
                           allowed=allowed)
        ce = F.cross_entropy(logits.detach(), torch.tensor([[[0, 0, 0]]]), reduction="none")[0, 0]
        for threshold, expected in ((0.95, ce[0] / 2), (0.8, (ce[0] + ce[1]) / 2)):
            terms = self.make(3, threshold=threshold).loss({"logits": logits}, batch)
            assert terms["fixmatch"].item() == pytest.approx(expected.item(), rel=1e-5)
            assert terms["ce"].item() == 0.0

    def test_confident_cross_entropy_checks_shapes(self):
        with pytest.raises(ValueError, match="mask"):
            confident_cross_entropy(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long),
                                    torch.ones(1, 4, 5, dtype=torch.bool), torch.ones(1, 4, 4, dtype=torch.bool), 255)
