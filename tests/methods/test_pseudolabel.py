"""The ``pseudolabel`` method: terms per annotation kind, the filter, learning, options."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dspseg.methods.views import weak_and_strong
from methods_common import EveryKindTester, admitted, hand_batch, whole_batch


class TestPseudoLabel(EveryKindTester):
    name = "pseudolabel"
    terms = {"ce", "pl"}  # pl: every image, unlabeled ones included, gives pseudo-labels
    opts_cases = [{"target_view": "same"}, {"target_view": "strong"}]
    bad_options = [({"wieght": 1.0}, "wieght"), ({"target_view": "other"}, "target_view"), ({"weight": -1}, "weight")]

    def test_the_filter_overrides_the_networks_arg_max(self):
        """Logits favour class 0 everywhere; the annotation admits only class 2 on the left half: the
        pseudo-label there is 2 and the term is the CE towards it (classes 0/1 elsewhere)."""
        method = self.make(3, weight=1.0)
        logits = torch.tensor([3.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 4, 6).clone().requires_grad_()
        allowed = torch.ones(1, 3, 4, 6, dtype=torch.bool)
        allowed[:, :, :, :3] = torch.tensor([False, False, True]).view(1, 3, 1, 1)
        allowed[:, 0, :, 3:] = False
        batch = hand_batch(torch.zeros(1, 1, 4, 6), torch.full((1, 4, 6), 255), ["none"], 3, allowed=allowed)
        pseudo = method.targets(batch, {"logits": logits})
        assert (pseudo[..., :3] == 2).all() and (pseudo[..., 3:] == 1).all()
        terms = method.loss({"logits": logits}, batch)
        expected = F.cross_entropy(logits, pseudo)
        torch.testing.assert_close(terms["pl"], expected)
        assert terms["ce"].item() == 0.0
        terms["pl"].backward()
        assert logits.grad.abs().sum() > 0

    def test_strong_view_targets_are_admissible(self, mixed):
        torch.manual_seed(1)
        method = self.make(mixed.n_classes, target_view="strong")
        views = weak_and_strong(self.model(mixed.n_classes), whole_batch(mixed, 3))
        moved = method.targets(views.weak, views.out_weak, views.geometry)
        valid = views.strong.valid
        assert admitted(moved, views.strong.allowed)[valid].all()
        assert (moved[~valid] == 255).all()
