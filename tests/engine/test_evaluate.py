"""evaluate_run: JSON content, agreement with a direct Dice computation, errors; predict_labels tiling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from dspseg.data.dataset import DatasetError, Normalisation, SegmentationDataset
from dspseg.data.manifest import load_manifest
from dspseg.engine.checkpoint import build_model_from_checkpoint, load_checkpoint
from dspseg.engine.evaluate import dice_on_dataset, evaluate_run, predict_labels
from dspseg.engine.metrics import DiceAccumulator
from dspseg.engine.trainer import train
from engine_common import CLASSES, make_easy_dataset, tiny_cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    data = make_easy_dataset(root / "data")
    train(data, root / "run", tiny_cfg(steps=20, val_every=10))
    return root / "run", data


def _console() -> Console:
    return Console(width=120, record=True, force_terminal=False)


def test_evaluate_writes_the_json(run: tuple[Path, Path]) -> None:
    out, data = run
    console = _console()
    report = evaluate_run(out, data, split="test", console=console)
    saved = json.loads((out / "eval" / "test.json").read_text())
    assert saved == report
    assert set(saved) >= {"mean_dice", "per_class", "images", "split", "checkpoint"}
    assert saved["split"] == "test" and saved["images"] == 4
    assert saved["checkpoint"].endswith("checkpoints/best.pt") and Path(saved["checkpoint"]).is_file()
    assert list(saved["per_class"]) == CLASSES
    values = [v for v in saved["per_class"].values() if v is not None]
    assert saved["mean_dice"] == pytest.approx(float(np.mean(values)))
    text = console.export_text()
    assert "background included in the mean: yes" in text
    for name in CLASSES:
        assert name in text


def test_evaluate_agrees_with_a_direct_dice(run: tuple[Path, Path], tmp_path: Path) -> None:
    out, data = run
    report = evaluate_run(out, data, split="val", json_path=tmp_path / "v.json", console=_console())
    assert json.loads((tmp_path / "v.json").read_text()) == report
    assert not (out / "eval" / "val.json").exists()
    state = load_checkpoint(out / "checkpoints" / "best.pt")
    model = build_model_from_checkpoint(state)
    ds = SegmentationDataset(load_manifest(data), "val", Normalisation.from_dict(state["normalisation"]),
                             derive_weak=False)
    acc = DiceAccumulator(3, 255)
    with torch.no_grad():
        for it in (ds[i] for i in range(len(ds))):
            acc.update(model(it["image"][None])["logits"].argmax(1)[0], it["target"])
    direct = acc.compute()
    assert report["mean_dice"] == pytest.approx(direct.mean)
    for name, v in zip(CLASSES, direct.per_class):
        assert (report["per_class"][name] is None and math.isnan(v)) or report["per_class"][name] == pytest.approx(v)
    assert dice_on_dataset(model, ds).mean == pytest.approx(direct.mean)


def test_evaluate_errors(run: tuple[Path, Path], tmp_path: Path) -> None:
    out, data = run
    other = make_easy_dataset(tmp_path / "nosplit", n=(2, 0, 0))
    with pytest.raises(DatasetError, match="no test images with a mask"):
        evaluate_run(out, other, split="test", console=_console())
    manifest = json.loads((data / "dataset.json").read_text())
    manifest["classes"] = ["bg", "disc", "rect"]
    bad = tmp_path / "renamed"
    bad.mkdir()
    for f in data.iterdir():
        if f.suffix == ".tif":
            (bad / f.name).symlink_to(f)
    (bad / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="trained on"):
        evaluate_run(out, bad, console=_console())


def test_predict_labels_tiles_large_images(run: tuple[Path, Path]) -> None:
    out, _ = run
    model = build_model_from_checkpoint(load_checkpoint(out / "checkpoints" / "best.pt"))
    small, large = torch.randn(1, 20, 28), torch.randn(1, 50, 37)
    got = dict(predict_labels(model, [small, large, small], tile=32, batch_size=2))
    assert got[0].shape == (20, 28) and got[1].shape == (50, 37) and torch.equal(got[0], got[2])
    assert got[1].dtype == torch.long and int(got[1].max()) < 3
    assert not model.training
