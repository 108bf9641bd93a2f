"""Trainer: a tiny run learns, the run folder explains itself, resume is exact, NaN stops cleanly,
checkpoints are atomic, OUT is protected, --init loads weights, mask_share, accumulation, bf16.
The commands end to end: tests/engine/test_cli_train.py."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dspseg.engine import checkpoint as ckpt
from dspseg.engine.config import resolve_config
from dspseg.engine.runfolder import RunFolder
from dspseg.engine.trainer import Trainer, TrainingError, resolve_run_config, train
from dspseg.errors import DiskFullError, UserError
from dspseg.methods import METHODS, register
from dspseg.methods.base import Method
from dspseg.losses.ce import masked_cross_entropy

from engine_common import CLASSES, TINY, easy, make_easy_dataset, tiny_cfg  # noqa: F401  (easy: fixture)


def test_tiny_training_learns_and_writes_the_run_folder(easy: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = tiny_cfg(steps=60, val_every=30)
    result = train(easy, out, cfg)
    assert result.step == 60 and result.best_step in (30, 60)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < 0.5 * losses[0]
    # chance: uniform guessing gives a mean Dice near 0.3, the majority class about 0.3 too
    assert result.best_metric > 0.6
    header = list(rows[0])
    assert header[:3] == ["step", "epoch", "loss"] or header[:4] == ["step", "epoch", "ce", "loss"]
    for col in ("ce", "loss", "lr", "val_mean_dice", "val_dice_bg", "val_dice_rect", "val_dice_disc", "elapsed_s"):
        assert col in header
    assert [int(r["step"]) for r in rows] == list(range(2, 61, 2))
    assert rows[14]["val_mean_dice"] and not rows[13]["val_mean_dice"]  # validated at step 30, not 28
    assert resolve_config(out / "config.yaml") == cfg
    env = json.loads((out / "env.json").read_text())
    for key in ("dspseg", "git_commit", "python", "packages", "seed", "hostname", "cpu_count", "threads", "accelerator"):
        assert key in env
    assert env["packages"]["torch"] == torch.__version__.split("+")[0] or env["packages"]["torch"].startswith("2.")
    assert (out / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert best["classes"] == CLASSES and best["in_channels"] == 1 and best["optimizer"] is None
    assert last["step"] == 60 and last["optimizer"] is not None and last["data_position"] == 60
    assert len(last["normalisation"]["mean"]) == 1 and last["model_args"]["width"] == 4


def test_resume_gives_the_same_weights_as_one_run(easy: Path, tmp_path: Path) -> None:
    train(easy, tmp_path / "a", tiny_cfg(steps=6, val_every=3))
    train(easy, tmp_path / "b", tiny_cfg(steps=3, val_every=3))
    cfg = resolve_run_config(tmp_path / "b", True, flags={"steps": 6})
    assert cfg.steps == 6
    train(easy, tmp_path / "b", cfg, resume=True)
    a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for k, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    rows = [int(r["step"]) for r in csv.DictReader((tmp_path / "b/metrics.csv").open())]
    assert rows == [2, 3, 4, 6]  # the resumed run continues metrics.csv


def test_worker_processes_give_the_same_weights(easy: Path, tmp_path: Path) -> None:
    train(easy, tmp_path / "a", tiny_cfg(steps=3, val_every=0))
    train(easy, tmp_path / "b", tiny_cfg(steps=3, val_every=0, num_workers=1))
    a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


class NaNAfter(Method):
    """Cross-entropy, then NaN from the 5th call on (test-only)."""

    name = "nan_after"
    summary = "test-only: NaN from step 5"
    uses = frozenset({"mask"})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def loss(self, outputs, batch):
        self.calls += 1
        ce = masked_cross_entropy(outputs["logits"], batch.target, batch.valid, self.ignore_index)
        bad = ce * float("nan") if self.calls >= 5 else ce * 0
        return {"ce": ce, "bad_term": bad}


@pytest.fixture
def nan_method():
    register(NaNAfter)
    yield NaNAfter
    METHODS.pop("nan_after", None)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(easy: Path, tmp_path: Path, nan_method) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"step 5: the loss term 'bad_term' is nan.*last good checkpoint"):
        train(easy, out, tiny_cfg(steps=10, val_every=2, sets=["method=nan_after"]))
    last = torch.load(out / "checkpoints/last.pt", weights_only=True)
    assert last["step"] == 4
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    steps = [int(r["step"]) for r in csv.DictReader((out / "metrics.csv").open())]
    assert steps == [2, 4]


def test_failed_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    ckpt.save_checkpoint({"format": ckpt.FORMAT, "step": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise OSError(5, "Input/output error")  # any write error; a full disk: see the test below

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="Input/output"):
        ckpt.save_checkpoint({"format": ckpt.FORMAT, "step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert os.listdir(path.parent) == ["last.pt"]  # no temporary file left behind


def test_checkpoint_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="cannot read the checkpoint .*bad.pt"):
        ckpt.load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(ckpt.CheckpointError, match="has no checkpoints/best.pt"):
        RunFolder(tmp_path).existing_checkpoint()
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        RunFolder(tmp_path / "nope").existing_checkpoint()


def test_rng_state_round_trip_loads_weights_only(tmp_path: Path) -> None:
    import random

    state = ckpt.rng_state()
    ckpt.save_checkpoint({"format": ckpt.FORMAT, "rng": state}, tmp_path / "r.pt")
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path / "r.pt")["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_out_folder_is_protected(easy: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty.*--resume"):
        Trainer(easy, out, tiny_cfg(steps=1))
    with pytest.raises(UserError, match="nothing to resume"):
        resolve_run_config(out, True)
    assert (out / "notes.txt").read_text() == "mine"


class ProtoCE(Method):
    name = "proto_ce"
    summary = "test-only: cross-entropy through the prototype head"
    uses = frozenset({"mask"})
    head = "prototype"

    def head_kwargs(self):
        return {"n_prototypes": 2, "embed_dim": 8}

    def loss(self, outputs, batch):
        return {"ce": masked_cross_entropy(outputs["logits"], batch.target, batch.valid, self.ignore_index)}


def test_init_loads_matching_weights_and_notes_the_rest(easy: Path, tmp_path: Path, capsys) -> None:
    from rich.console import Console

    train(easy, tmp_path / "a", tiny_cfg(steps=2, val_every=0))
    register(ProtoCE)
    try:
        cfg = tiny_cfg(steps=1, sets=["method=proto_ce", f"init={tmp_path / 'a'}"])
        trainer = Trainer(easy, tmp_path / "b", cfg, console=Console(force_terminal=False, width=200))
        trainer.setup()
    finally:
        METHODS.pop("proto_ce", None)
    note = capsys.readouterr().out
    assert "init: " in note and "left as initialised" in note and "head." in note
    source = torch.load(tmp_path / "a/checkpoints/best.pt", weights_only=True)["model"]
    mine = trainer.raw_model.state_dict()
    backbone = [k for k in source if k.startswith("backbone.")]
    assert backbone and all(torch.equal(source[k], mine[k]) for k in backbone)


def test_epochs_budget_and_no_val_split(tmp_path: Path) -> None:
    data = make_easy_dataset(tmp_path / "d", n=(6, 0, 0))
    result = train(data, tmp_path / "run", tiny_cfg(epochs=2, val_every=0))
    assert result.step == 4  # ceil(6 / 4) = 2 batches per epoch
    assert result.best_metric is None and result.best_step == 4
    assert ckpt.load_checkpoint(result.best_checkpoint)["step"] == 4
    cfg = resolve_run_config(tmp_path / "run", True, flags={"epochs": 3})
    assert train(data, tmp_path / "run", cfg, resume=True).step == 6
    assert ckpt.load_checkpoint(result.best_checkpoint)["step"] == 6  # still the final model


class KindsRecorder(Method):
    """Cross-entropy on the masks of each batch; records which kinds every batch held (test-only)."""

    name = "kinds_recorder"
    summary = "test-only: records batch kinds"
    uses = frozenset({"mask", "none"})
    seen: list[list[str]] = []

    def loss(self, outputs, batch):
        KindsRecorder.seen.append(list(batch.kinds))
        return {"ce": masked_cross_entropy(outputs["logits"], batch.target, batch.valid, self.ignore_index)}


def test_mask_share_puts_masks_in_every_batch(tmp_path: Path) -> None:
    data = make_easy_dataset(tmp_path / "d", n=(10, 2, 0))
    manifest = json.loads((data / "dataset.json").read_text())
    for rec in manifest["images"][2:10]:  # 2 masked training images, 8 unlabeled ones
        del rec["mask"]
    (data / "dataset.json").write_text(json.dumps(manifest))
    register(KindsRecorder)
    try:
        KindsRecorder.seen = []
        result = train(data, tmp_path / "shared", tiny_cfg(epochs=2, val_every=0, sets=["method=kinds_recorder",
                                                                                        "mask_share=0.25"]))
        assert result.step == 6  # 8 unlabeled images, 3 per batch: 3 batches per epoch
        assert [k.count("mask") for k in KindsRecorder.seen] == [1] * 6 and [len(k) for k in KindsRecorder.seen] == [4, 4, 3] * 2
        KindsRecorder.seen = []
        train(data, tmp_path / "plain", tiny_cfg(epochs=2, val_every=0, sets=["method=kinds_recorder",
                                                                                "mask_share=0"]))
        assert len(KindsRecorder.seen) == 6 and sum(k.count("mask") for k in KindsRecorder.seen) == 4  # 2 per epoch
        plain = KindsRecorder.seen
        assert yaml_value(tmp_path / "shared", "mask_share") == 0.25
        KindsRecorder.seen = []  # 2 of 10 usable images masked: a share of 0.2 is already met by uniform batches
        train(data, tmp_path / "enough", tiny_cfg(epochs=2, val_every=0, sets=["method=kinds_recorder",
                                                                                "mask_share=0.2"]))
        assert KindsRecorder.seen == plain  # the very same batches as without a share (so ACR <= 4 is unchanged)
        KindsRecorder.seen = []  # the default is a share of 0.25: 2 masked of 10 usable is fewer, so it applies
        train(data, tmp_path / "default", tiny_cfg(epochs=2, val_every=0, sets=["method=kinds_recorder"]))
        assert [k.count("mask") for k in KindsRecorder.seen] == [1] * 6
        assert yaml_value(tmp_path / "default", "mask_share") == 0.25
    finally:
        METHODS.pop("kinds_recorder", None)


def yaml_value(run: Path, key: str):
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())[key]


def test_method_without_usable_images_is_refused(tmp_path: Path) -> None:
    from dspseg.data.dataset import DatasetError

    data = make_easy_dataset(tmp_path / "d", n=(4, 1, 0), kind="box")
    with pytest.raises(DatasetError, match=r"learns from \['mask'\].*\{'box': 4\}"):
        train(data, tmp_path / "run", tiny_cfg(steps=1))


def test_config_yaml_records_the_method_defaults(tmp_path):
    """A config built in Python without method options still writes every option to config.yaml."""
    import yaml

    from dspseg.engine.config import TrainConfig

    data = make_easy_dataset(tmp_path / "data")
    cfg = TrainConfig(**{**TINY, "steps": 1})
    assert cfg.method_options == {}
    train(data, tmp_path / "run", cfg)
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["method_options"] == {"weak_jitter": 0.2, "augment": True}


def test_full_disk_while_saving_is_reported_and_keeps_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import errno

    path = tmp_path / "last.pt"
    ckpt.save_checkpoint({"step": 1}, path)

    def no_space(obj, f):  # noqa: ANN001
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(DiskFullError, match="no space left.*previous last.pt is intact.*--resume"):
        ckpt.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_gradient_accumulation_trains_and_resumes_exactly(easy: Path, tmp_path: Path) -> None:
    """accumulate=2: two micro-batches per optimiser step; resume continues at the right micro-batch."""
    train(easy, tmp_path / "a", tiny_cfg(steps=4, val_every=2, sets=["accumulate=2"]))
    train(easy, tmp_path / "b", tiny_cfg(steps=2, val_every=2, sets=["accumulate=2"]))
    train(easy, tmp_path / "b", resolve_run_config(tmp_path / "b", True, flags={"steps": 4}), resume=True)
    a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    one = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)["optimizer"]["state"]
    assert all(int(s["step"]) == 4 for s in one.values())  # 4 optimiser steps, not 8
    rows = list(csv.DictReader((tmp_path / "a/metrics.csv").open()))
    assert float(rows[-1]["epoch"]) == 4.0  # 8 training images, 4 steps x 2 micro-batches of 4 images


def test_bf16_mixed_precision_keeps_losses_finite(easy: Path, tmp_path: Path) -> None:
    """bf16 autocast on CPU: the network runs in bfloat16, the losses and scores stay float32."""
    res = train(easy, tmp_path / "bf16", tiny_cfg(steps=3, val_every=3, sets=["precision=bf16-mixed"]))
    assert res.step == 3
    rows = list(csv.DictReader((tmp_path / "bf16/metrics.csv").open()))
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_on_step_follows_the_run_and_a_stop_leaves_it_resumable(easy: Path, tmp_path: Path) -> None:
    """The user-interface hook (napari's Train widget): every step is reported, logged steps with their
    row; a true return stops there with last.pt at that step, and resuming gives the uninterrupted weights."""
    seen = []

    def stop_at_3(step: int, total: int, row: dict | None) -> bool:
        seen.append((step, total, None if row is None else row["step"]))
        return step == 3

    train(easy, tmp_path / "a", tiny_cfg(steps=6, val_every=0))
    result = train(easy, tmp_path / "b", tiny_cfg(steps=6, val_every=0), on_step=stop_at_3)
    assert result.stopped and result.step == 3
    assert seen == [(1, 6, None), (2, 6, 2), (3, 6, None)]
    assert torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)["step"] == 3
    assert not (tmp_path / "b/checkpoints/best.pt").exists()
    assert [int(r["step"]) for r in csv.DictReader((tmp_path / "b/metrics.csv").open())] == [2, 3]
    done = train(easy, tmp_path / "b", resolve_run_config(tmp_path / "b", True), resume=True)
    assert not done.stopped and done.step == 6
    a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
