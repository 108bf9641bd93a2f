"""Export: safetensors / torch.export / ONNX of a tiny trained DSP run, reloaded and compared with PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from dspseg.data.acr import simulate_dataset
from dspseg.data.synthetic import write_synthetic_dataset
from dspseg.engine.checkpoint import build_model_from_checkpoint, load_checkpoint
from dspseg.engine.runfolder import RunFolder
from dspseg.engine.config import resolve_config
from dspseg.engine.export import ExportError, NormalisedModel, export_run, load_safetensors_model
from dspseg.engine.trainer import train
from dspseg.io_commands import export


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    write_synthetic_dataset(root / "synth", n_images=30, size=48, seed=1, groups=6)
    simulate_dataset(root / "synth", root / "data", acr=2, scenario="mixed", split=0, n_splits=2)
    cfg = resolve_config(flags={"method": "dsp", "steps": 2, "width": 4, "levels": 3, "batch_size": 2,
                                "crop_size": 32, "val_every": 0, "threads": 1, "tile": 64})
    train(root / "data", root / "run", cfg)
    return root / "run"


@pytest.fixture(scope="module")
def reference(run: Path) -> tuple[NormalisedModel, torch.Tensor, torch.Tensor]:
    """The PyTorch model with the run's normalisation, a random non-square input and its logits."""
    state = load_checkpoint(RunFolder(run).best)
    model = build_model_from_checkpoint(state)
    wrapper = NormalisedModel(model, state["normalisation"]["mean"], state["normalisation"]["std"]).eval()
    x = torch.rand(3, int(state["in_channels"]), 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return wrapper, x, wrapper(x)


def test_safetensors_roundtrip_and_model_json(run: Path, reference, tmp_path: Path) -> None:
    wrapper, x, ref = reference
    result = export_run(run, "safetensors", tmp_path / "st")
    assert [p.name for p in result.files] == ["model.safetensors", "model.json"]
    desc = json.loads((tmp_path / "st" / "model.json").read_text())
    state = load_checkpoint(RunFolder(run).best)
    assert desc["classes"] == state["classes"] and desc["in_channels"] == 1
    assert desc["normalisation"]["mean"] == state["normalisation"]["mean"]
    assert desc["normalisation"]["applied_inside"] is False
    assert desc["tile_size"] == 64 and desc["input"]["multiple"] == 4 and desc["model_args"]["head"] == "prototype"
    assert desc["dspseg_version"] and desc["method"] == "dsp"
    model = load_safetensors_model(tmp_path / "st")
    with torch.no_grad():
        got = NormalisedModel(model, desc["normalisation"]["mean"], desc["normalisation"]["std"])(x)
    assert torch.equal(got, ref)


def test_torch_export_program_matches_pytorch(run: Path, reference, tmp_path: Path) -> None:
    _, x, ref = reference
    export_run(run, "pt2", tmp_path / "pt2")
    program = torch.export.load(str(tmp_path / "pt2" / "model.pt2")).module()
    with torch.no_grad():
        diff = (program(x) - ref).abs().max().item()
        other = torch.rand(1, 1, 16, 24)
        diff2 = (program(other) - reference[0](other)).abs().max().item()  # another batch and size
    print(f"torch.export max |diff| = {diff:.2e}, {diff2:.2e}")
    assert diff <= 1e-5 and diff2 <= 1e-5
    assert json.loads((tmp_path / "pt2" / "model.json").read_text())["normalisation"]["applied_inside"] is True


def test_onnx_runtime_matches_pytorch(run: Path, reference, tmp_path: Path) -> None:
    import onnxruntime as ort  # the export extra is part of [dev]: missing = failure
    _, x, ref = reference
    export_run(run, "onnx", tmp_path / "onnx")
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    (got,) = session.run(["logits"], {"image": x.numpy()})
    diff = float(np.abs(got - ref.numpy()).max())
    print(f"ONNX Runtime max |diff| = {diff:.2e}")
    assert got.shape == tuple(ref.shape) and diff <= 1e-4
    assert np.array_equal(got.argmax(1), ref.numpy().argmax(1)) or diff < 1e-5


def test_errors_and_cli(run: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown --format 'tflite'"):
        export_run(run, "tflite", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not an empty folder"):
        export_run(run, "safetensors", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    app = typer.Typer()
    app.command()(export)
    ok = CliRunner().invoke(app, [str(run), "--format", "safetensors", "--out", str(tmp_path / "cli")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "cli" / "model.json").is_file()
    bad = CliRunner().invoke(app, [str(tmp_path / "norun"), "--format", "pt2", "--out", str(tmp_path / "y")])
    assert bad.exit_code == 2 and "does not exist" in bad.output and "Traceback" not in bad.output
