"""Auxiliary heads: built from the method hook, computed in training only, trained and checkpointed
by the trainer, dropped for evaluate/predict; the branch modules themselves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dspseg.engine import checkpoint as ckpt
from dspseg.engine.evaluate import evaluate_run
from dspseg.engine.predict import predict_files
from dspseg.engine.trainer import train
from dspseg.methods import get_method
from dspseg.models import SegmentationModel, UNet, build_model
from dspseg.models.aux_heads import ClassificationBranch, DistanceBranch
from dspseg.models.heads import LinearHead
from engine_common import make_easy_dataset, tiny_cfg


def test_default_hook_has_no_aux_heads() -> None:
    method = get_method("basic")(get_method("basic").Options(), n_classes=3, ignore_index=255)
    assert method.aux_heads(8) == {}
    model = build_model(1, 3, width=4, levels=2, aux_heads=method.aux_heads)
    assert len(model.aux) == 0 and set(model(torch.zeros(1, 1, 8, 8))) == {"logits"}


def test_aux_outputs_in_training_only_and_on_request() -> None:
    torch.manual_seed(0)
    method_cls = get_method("clsbranch")
    method = method_cls(method_cls.Options(hidden=5), n_classes=3, ignore_index=255)
    model = build_model(1, 3, width=4, levels=2, aux_heads=method.aux_heads)
    x = torch.randn(2, 1, 12, 16)
    out = model.train()(x)
    assert set(out) == {"logits", "aux_cls"} and out["aux_cls"].shape == (2, 3)
    assert set(model.eval()(x)) == {"logits"}
    assert model(x, aux=True)["aux_cls"].shape == (2, 3)
    assert set(model.train()(x, aux=False)) == {"logits"}
    # the aux head sees the same features: the main logits do not depend on whether it ran
    model.eval()
    assert torch.equal(model(x)["logits"], model(x, aux=True)["logits"])


def test_aux_heads_are_built_after_the_main_model() -> None:
    """Adding auxiliary heads (given as a callable, as the trainer does) must not change the
    initialisation of backbone and head."""
    torch.manual_seed(3)
    plain = build_model(1, 3, width=4, levels=2)
    torch.manual_seed(3)
    with_aux = build_model(1, 3, width=4, levels=2, aux_heads=lambda f: {"d": DistanceBranch(f, 3)})
    assert "aux.d.net.0.weight" in with_aux.state_dict()
    for name, value in plain.state_dict().items():
        assert torch.equal(value, with_aux.state_dict()[name]), name


def test_bad_aux_heads_are_refused() -> None:
    backbone = UNet(1, width=4, levels=2)
    with pytest.raises(ValueError, match="identifiers"):
        SegmentationModel(backbone, LinearHead(4, 3), {"a.b": nn.Identity()})
    with pytest.raises(TypeError, match="nn.Module"):
        SegmentationModel(backbone, LinearHead(4, 3), {"a": lambda f, v: f})
    model = SegmentationModel(backbone, LinearHead(4, 3), {"d": DistanceBranch(4, 3)})
    with pytest.raises(ValueError, match="valid must be a bool tensor of shape"):
        model(torch.zeros(1, 1, 8, 8), valid=torch.ones(1, 8, 9, dtype=torch.bool))


def test_classification_branch_pools_only_valid_pixels() -> None:
    torch.manual_seed(0)
    branch = ClassificationBranch(3, 4, hidden=6)
    feats = torch.randn(2, 3, 5, 7)
    padded = torch.full((2, 3, 8, 9), 100.0)  # padding with huge values must not matter
    padded[:, :, :5, :7] = feats
    valid = torch.zeros(2, 8, 9, dtype=torch.bool)
    valid[:, :5, :7] = True
    assert torch.allclose(branch(padded, valid), branch(feats), atol=1e-6)
    mean, peak = feats.mean(dim=(2, 3)), feats.amax(dim=(2, 3))
    assert torch.allclose(branch(feats), branch.mlp(torch.cat([mean, peak], 1)))


def test_distance_branch_outputs_maps_in_unit_interval() -> None:
    out = DistanceBranch(4, 3)(torch.randn(2, 4, 6, 5) * 50)
    assert out.shape == (2, 3, 6, 5) and (out >= 0).all() and (out <= 1).all()
    with pytest.raises(ValueError, match=r"features must have shape \(B, 4, H, W\)"):
        DistanceBranch(4, 3)(torch.randn(2, 3, 6, 5))


@pytest.fixture(scope="module")
def easy(tmp_path_factory) -> Path:
    return make_easy_dataset(tmp_path_factory.mktemp("easy_aux"))


@pytest.mark.parametrize("method", ["clsbranch", "pointbranch"])
def test_trainer_trains_checkpoints_and_drops_aux_for_inference(easy: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / "run"
    train(easy, out, tiny_cfg(steps=4, val_every=2, method=method))
    last = ckpt.load_checkpoint(out / "checkpoints" / "last.pt")
    aux_keys = [k for k in last["model"] if k.startswith("aux.")]
    name = {"clsbranch": "cls", "pointbranch": "distance"}[method]
    assert aux_keys and all(k.startswith(f"aux.{name}.") for k in aux_keys)
    assert last["model_args"]["aux_heads"] == [name]
    # the optimiser trained them: AdamW state exists for every parameter, aux included
    n_params = sum(1 for _ in build_model(1, 3, width=4, levels=3).parameters()) + len(aux_keys)
    assert len(last["optimizer"]["state"]) == n_params
    # inference: the aux weights are dropped, every other weight loads exactly
    model = ckpt.build_model_from_checkpoint(last)
    assert len(model.aux) == 0 and not model.training
    assert all(torch.equal(v, last["model"][k]) for k, v in model.state_dict().items())
    report = evaluate_run(out, easy, split="test")
    assert report["images"] == 4 and report["mean_dice"] is not None
    written = predict_files(out, [easy / "i0.tif"], tmp_path / "pred")
    assert [p.name for p in written] == ["i0.tif"]


def test_resume_restores_aux_weights_exactly(easy: Path, tmp_path: Path) -> None:
    from dspseg.engine.trainer import resolve_run_config

    train(easy, tmp_path / "a", tiny_cfg(steps=4, val_every=2, method="clsbranch"))
    train(easy, tmp_path / "b", tiny_cfg(steps=2, val_every=2, method="clsbranch"))
    train(easy, tmp_path / "b", resolve_run_config(tmp_path / "b", True, flags={"steps": 4}), resume=True)
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert any(k.startswith("aux.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
