"""A run folder whose config.yaml, checkpoints and dataset disagree, or whose checkpoint is broken,
gets one sentence naming what differs (resume, evaluate, predict, export) — never a traceback."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dspseg.data.io import write_image
from dspseg.engine.checkpoint import disagreements, load_checkpoint, load_run
from dspseg.engine.evaluate import evaluate_run
from dspseg.engine.export import export_run
from dspseg.engine.predict import predict_files
from dspseg.engine.trainer import resolve_run_config, train
from dspseg.errors import CheckpointError, DatasetError, UserError
from engine_common import make_easy_dataset, tiny_cfg


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("agree")
    data = make_easy_dataset(root / "data", n=(4, 1, 1))
    train(data, root / "run", tiny_cfg(steps=2, val_every=0))
    return data, root / "run"


def _copy(run: Path, tmp_path: Path, **edit) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg.update(edit)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    return out


@pytest.mark.parametrize("method, differs", [("fixmatch", "method: 'basic' in the checkpoint, 'fixmatch' here"),
                                             ("dsp", "head: 'linear' in the checkpoint, 'prototype' here")])
def test_resume_after_a_hand_edited_method(made, tmp_path: Path, method: str, differs: str) -> None:
    data, run = made
    out = _copy(run, tmp_path, method=method, method_options={})
    cfg = resolve_run_config(out, True, flags={"steps": 4})
    with pytest.raises(CheckpointError, match="config.yaml .*disagree") as err:
        train(data, out, cfg, resume=True)
    assert differs in str(err.value) and "restore config.yaml" in str(err.value)
    assert "\n" not in str(err.value)


def test_resume_on_a_dataset_with_other_classes(made, tmp_path: Path) -> None:
    data, run = made
    other = tmp_path / "other"
    shutil.copytree(data, other)
    manifest = json.loads((other / "dataset.json").read_text())
    manifest["classes"] = ["bg", "disc", "rect"]
    (other / "dataset.json").write_text(json.dumps(manifest))
    out = _copy(run, tmp_path)
    with pytest.raises(CheckpointError, match=r"the dataset .* disagree \(classes: \['bg', 'rect', 'disc'\]"):
        train(other, out, resolve_run_config(out, True, flags={"steps": 4}), resume=True)


def test_evaluate_predict_export_refuse_an_edited_config(made, tmp_path: Path) -> None:
    data, run = made
    out = _copy(run, tmp_path, method="pseudolabel", width=8)
    write_image(tmp_path / "a.tif", np.zeros((16, 16), np.float32))
    for call in (lambda: evaluate_run(out, data), lambda: predict_files(out, [tmp_path / "a.tif"], tmp_path / "p"),
                 lambda: export_run(out, "safetensors", tmp_path / "e")):
        with pytest.raises(CheckpointError, match="method: 'basic' in the checkpoint, 'pseudolabel' here; "
                           "width: 4 in the checkpoint, 8 here"):
            call()
    assert not (tmp_path / "p").exists() and not (tmp_path / "e").exists()


def test_evaluate_on_images_with_other_channels(made, tmp_path: Path) -> None:
    data, run = made
    other = tmp_path / "rgb"
    shutil.copytree(data, other)
    for f in other.glob("i*.tif"):
        write_image(f, np.zeros((3, 32, 48), np.float32))
    with pytest.raises(DatasetError, match="3 channel"):
        evaluate_run(run, other)


def _foreign(path: Path, kind: str, good: Path) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:2000])
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"format": "dspseg-checkpoint/1"}))
    elif kind == "json":
        path.write_text('{"model": 1}')
    elif kind == "other-torch":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif kind == "incomplete":
        state = torch.load(good, weights_only=True)
        del state["model_args"]
        torch.save(state, path)
    elif kind == "wrong-weights":
        state = torch.load(good, weights_only=True)
        state["model"] = {k: (v[:1] if v.ndim else v) for k, v in state["model"].items()}
        torch.save(state, path)


KINDS = ["empty", "truncated", "pickle", "json", "other-torch", "incomplete", "wrong-weights"]


@pytest.mark.parametrize("kind", KINDS)
def test_broken_checkpoints_get_one_sentence(made, tmp_path: Path, kind: str) -> None:
    data, run = made
    out = _copy(run, tmp_path)
    _foreign(out / "checkpoints" / "best.pt", kind, run / "checkpoints" / "best.pt")
    _foreign(out / "checkpoints" / "last.pt", kind, run / "checkpoints" / "last.pt")
    write_image(tmp_path / "a.tif", np.zeros((16, 16), np.float32))
    calls = [lambda: load_run(out), lambda: evaluate_run(out, data),
             lambda: predict_files(out, [tmp_path / "a.tif"], tmp_path / "p"),
             lambda: export_run(out, "safetensors", tmp_path / "e"),
             lambda: train(data, out, resolve_run_config(out, True, flags={"steps": 4}), resume=True)]
    for call in calls:
        with pytest.raises(CheckpointError) as err:
            call()
        message = str(err.value)
        assert str(out / "checkpoints") in message and "\n" not in message
        assert "train again" in message


def test_disagreements_lists_each_difference() -> None:
    state = {"config": {"method": "dsp"}, "model_args": {"width": 4, "levels": 3, "head": "prototype"},
             "classes": ["a", "b"], "in_channels": 1}
    assert disagreements(state, method="dsp", head="prototype", classes=["a", "b"], in_channels=1) == []
    assert disagreements(state, method=None, classes=("a", "b")) == []
    assert disagreements(state, in_channels=3, classes=["b", "a"]) == [
        "in_channels: 1 in the checkpoint, 3 here", "classes: ['a', 'b'] in the checkpoint, ['b', 'a'] here"]


def test_load_checkpoint_on_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no checkpoint at"):
        load_checkpoint(tmp_path)
