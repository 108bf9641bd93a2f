"""The ``dsp`` method: finite terms for every mix of annotation types, and it learns."""

from __future__ import annotations

import itertools

import pytest
import torch

from dspseg.data.batch import collate
from dspseg.methods import get_method
from dspseg.models import build_model
from dspseg.vocabulary import KINDS
from methods_common import admitted


def make_method(n_classes, **opts):
    cls = get_method("dsp")
    return cls(cls.Options.model_validate({"compile": False, **opts}), n_classes=n_classes, ignore_index=255)


MIXES = [c for r in range(1, 6) for c in itertools.combinations(KINDS, r)]  # all 31 non-empty mixes


@pytest.mark.parametrize("kinds, variant", [(k, "paper") for k in MIXES] + [(k, "reference") for k in MIXES[::4]])
def test_terms_finite_for_every_mix(mixed, kinds, variant):
    torch.manual_seed(0)
    picked = [i for k in kinds for i in mixed.indices_of_kinds({k})[:1]]
    batch = collate([mixed[(i, 7)] for i in picked], ignore_index=255)
    method = make_method(mixed.n_classes, variant=variant)
    model = build_model(1, mixed.n_classes, width=4, levels=2, head="prototype", **method.head_kwargs())
    terms = method.step(model, batch)
    assert set(terms) == {"ce", "plf", "dsp_mask", "dsp_box", "dsp_point", "dsp_image"}
    total = sum(terms.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # a term is non-zero exactly when the batch holds its kind (mask images carry every weak positive)
    has = set(kinds)
    assert (terms["ce"].item() > 0) == ("mask" in has)
    assert (terms["dsp_box"].item() > 0) == bool(has & {"mask", "box"})
    assert (terms["dsp_point"].item() > 0) == bool(has & {"mask", "point"})
    assert terms["plf"].item() > 0


def test_pseudo_labels_respect_the_filter(mixed):
    """Strong-view targets only use classes the annotation admits at the (moved) pixel."""
    from dspseg.losses.plf import filter_pseudo_labels
    from dspseg.methods.views import weak_and_strong

    torch.manual_seed(1)
    batch = collate([mixed[(i, 3)] for i in range(8)], ignore_index=255)
    method = make_method(mixed.n_classes)
    model = build_model(1, mixed.n_classes, width=4, levels=2, head="prototype", **method.head_kwargs())
    views = weak_and_strong(model, batch)
    pseudo = filter_pseudo_labels(views.out_weak["scores"], views.weak.allowed, views.weak.valid, 255)
    moved = views.geometry.apply(pseudo)
    valid = views.strong.valid
    assert admitted(moved, views.strong.allowed)[valid].all()


def test_dsp_reduces_its_loss(mixed):
    torch.manual_seed(0)
    method = make_method(mixed.n_classes)
    model = build_model(1, mixed.n_classes, width=8, levels=3, head="prototype", **method.head_kwargs())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = collate([mixed[(i, 0)] for i in range(len(mixed))][:12], ignore_index=255)
    first = last = None
    for _ in range(25):
        terms = method.loss(model(batch.image), batch)
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
        last = loss.item()
    assert last < 0.8 * first


def test_bad_option_is_refused():
    cls = get_method("dsp")
    with pytest.raises(ValueError, match="variant"):
        cls.Options.model_validate({"variant": "papr"})
    with pytest.raises(ValueError, match="tua"):
        cls.Options.model_validate({"tua": 0.1})


def test_function_module_and_method_share_one_default():
    import inspect

    from dspseg.losses.constants import DSP_DEFAULT_LAMBDA, DSP_DEFAULT_VARIANT
    from dspseg.losses.dsp import DSPLoss, dsp_loss

    options = get_method("dsp").Options()
    assert inspect.signature(dsp_loss).parameters["variant"].default == DSPLoss().variant == options.variant \
        == DSP_DEFAULT_VARIANT
    assert set(options.lambdas.model_dump().values()) == {DSP_DEFAULT_LAMBDA}
