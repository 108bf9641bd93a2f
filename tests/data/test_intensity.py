"""The one intensity rule: the same input in train, predict and export; the docs' ONNX and torch.export
snippets, run as written, agree with `dspseg predict` on every pixel for uint8, uint16 and float32."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from dspseg.data.intensity import divisor, scale_findings, scaling_description, to_unit
from dspseg.engine.export import export_run
from dspseg.engine.predict import predict_files
from dspseg.engine.trainer import train
from engine_common import make_easy_dataset, tiny_cfg

DOC = Path(__file__).resolve().parents[2] / "docs" / "bring-your-own-data.md"


def test_the_rule() -> None:
    assert divisor(np.dtype("uint8")) == 255 and divisor(np.dtype("int16")) == 32767
    assert divisor(np.dtype("bool")) == divisor(np.dtype("float64")) == 1
    with pytest.raises(ValueError, match="complex64 is not supported"):
        divisor(np.dtype("complex64"))
    x = np.array([0, 4095, 65535], np.uint16)
    assert np.array_equal(to_unit(x), x.astype(np.float32) / np.float32(65535))
    desc = scaling_description(["uint8"])
    assert desc["divide_by"]["uint16"] == 65535 and desc["trained_on"] == ["uint8"] and "as stored" in desc["rule"]


def test_scale_findings() -> None:
    same = [("uint8", 0.9)] * 5 + [("uint8", 0.1)]  # dim images of one integer type are fine
    assert scale_findings(same) == []
    found = scale_findings([("uint8", 1.0)] * 3 + [("float32", 255.0), ("uint16", 0.0625), ("uint16", 0.9)])
    assert [f.index for f in found] == [3, 4]
    floats = scale_findings([("float32", 1.0), ("float32", 0.9), ("float32", 200.0)])
    assert [f.index for f in floats] == [2] and "used as stored" in floats[0].message


def _snippet(name: str) -> str:
    """The docs' python block under the heading of the export section."""
    text = DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text[text.index("## 5. Export"):], flags=re.S)
    assert blocks, f"no python block in {DOC}'s export section"
    return blocks[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("intensity")
    data = make_easy_dataset(root / "data", n=(4, 1, 0))
    train(data, root / "run", tiny_cfg(steps=8, val_every=0))
    result = export_run(root / "run", "onnx", root / "onnx")
    export_run(root / "run", "pt2", root / "pt2")
    return root / "run", root / "onnx", result.description


def test_model_json_lists_scaling_and_files(exported) -> None:
    _, folder, desc = exported
    info = json.loads((folder / "model.json").read_text())
    assert info["input"]["scaling"]["trained_on"] == ["float32"]
    assert info["input"]["scaling"]["divide_by"]["uint8"] == 255.0
    assert sorted(info["files"]) == sorted(p.name for p in folder.iterdir())
    assert "model.onnx" in info["files"] and set(info["files"]) <= {"model.onnx", "model.onnx.data", "model.json"}


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_docs_onnx_snippet_agrees_with_predict(exported, tmp_path: Path, dtype: str) -> None:
    pytest.importorskip("onnxruntime")
    run, folder, _ = exported
    rng = np.random.default_rng(1)
    unit = np.clip(np.choose(rng.integers(0, 3, (32, 48)), [0.1, 0.9, 0.5]) + rng.normal(0, 0.05, (32, 48)), 0, 1)
    stored = {"uint8": (unit * 255).round().astype(np.uint8), "uint16": (unit * 65535).round().astype(np.uint16),
              "float32": unit.astype(np.float32)}[dtype]
    path = tmp_path / f"img_{dtype}.tif"
    tifffile.imwrite(path, stored)
    [written] = predict_files(run, [path], tmp_path / "pred")
    expected = tifffile.imread(written)
    assert len(np.unique(expected)) > 1  # the model tells pixels apart, so a wrong scale would show
    scope: dict = {}
    code = _snippet("onnx").replace('"model-onnx"', repr(str(folder))).replace('"cell07.tif"', repr(str(path)))
    exec(compile(code, str(DOC), "exec"), scope)  # the documented code, as a user runs it
    agree = float((scope["labels"] == expected).mean())
    assert agree == 1.0, f"{dtype}: the docs' ONNX snippet agrees with predict on {agree:.1%} of pixels"
    # torch.export: the same x through the documented call
    with torch.no_grad():
        logits = torch.export.load(str(folder.parent / "pt2" / "model.pt2")).module()(torch.from_numpy(scope["x"]))
    assert np.array_equal(logits[0].argmax(0).numpy()[:32, :48], expected)
