"""bioimage.io export: a tiny DSP run packaged by `dspseg export --format bioimageio`, validated by
bioimageio.spec, tested by bioimageio.core with both weight formats, and compared with `dspseg predict`.

The dataset is stored as uint8, so the package's preprocessing runs every step of dspseg's rule
(uint8 / 255, then the training mean and std). One export serves every test (module fixture).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.data.io import read_image_stored, write_image
from dspseg.engine.bioimageio.architecture import ALLOWED, CALLABLE, architecture_kwargs, architecture_source
from dspseg.engine.bioimageio.package import check_name, default_author, default_name, preprocessing, slug
from dspseg.engine.bioimageio.sample import crop_window
from dspseg.engine.checkpoint import build_model_from_checkpoint, load_checkpoint
from dspseg.engine.predict import predict_files
from dspseg.engine.runfolder import RunFolder
from dspseg.engine.trainer import train
from engine_common import CLASSES, make_easy_dataset, tiny_cfg

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """A uint8 dataset, a DSP run of 2 steps (width 4, 3 levels: multiple 4), and its package."""
    root = tmp_path_factory.mktemp("bioimageio")
    data = make_easy_dataset(root / "data")
    for f in data.glob("i*.tif"):  # the images as uint8 0..255, masks unchanged
        write_image(f, np.clip(np.round(tifffile.imread(f) * 255), 0, 255).astype(np.uint8))
    train(data, root / "run", tiny_cfg(method="dsp", steps=2, val_every=0))
    r = runner.invoke(app, ["export", str(root / "run"), "--format", "bioimageio", "--data", str(data),
                            "--out", str(root / "pkg"), "--name", "DSP test model", "--author", "Ada Lovelace",
                            "--tag", "electron-microscopy"])
    assert r.exit_code == 0, r.output
    folder, zipped = root / "pkg" / "dsp-test-model", root / "pkg" / "dsp-test-model.zip"
    assert f"wrote {folder / 'rdf.yaml'}, {zipped}" in r.output.replace("\n", "")
    assert "note:" not in r.output  # --author given: no default-author note
    return {"root": root, "data": data, "run": root / "run", "folder": folder, "zip": zipped,
            "rdf": yaml.safe_load((folder / "rdf.yaml").read_text())}


def test_package_content(exported) -> None:
    rdf, folder = exported["rdf"], exported["folder"]
    state = load_checkpoint(RunFolder(exported["run"]).best)
    assert rdf["format_version"].startswith("0.5.") and rdf["type"] == "model" and rdf["name"] == "DSP test model"
    assert rdf["license"] == "MIT" and rdf["authors"] == [{"name": "Ada Lovelace"}]
    assert "electron-microscopy" in rdf["tags"] and "semantic-segmentation" in rdf["tags"]
    assert any("Reiss_Decoupled_Semantic_Prototypes" in c.get("url", "") for c in rdf["cite"])
    [inp], [out] = rdf["inputs"], rdf["outputs"]
    assert inp["data"]["type"] == "uint8"
    assert [a.get("size") for a in inp["axes"][2:]] == [{"min": 4, "step": 4}] * 2
    norm = state["normalisation"]
    assert [(p["id"], p["kwargs"]) for p in inp["preprocessing"]] == [
        ("ensure_dtype", {"dtype": "float32"}), ("scale_linear", {"gain": 1 / 255}),
        ("fixed_zero_mean_unit_variance", {"axis": "channel", "mean": norm["mean"], "std": norm["std"]}),
        ("ensure_dtype", {"dtype": "float32"})]
    assert out["axes"][1] == {"type": "channel", "channel_names": CLASSES}
    assert "logits" in out["description"]
    weights = rdf["weights"]
    assert weights["pytorch_state_dict"]["architecture"]["callable"] == CALLABLE
    assert weights["pytorch_state_dict"]["architecture"]["kwargs"] == architecture_kwargs(state)
    assert weights["onnx"]["parent"] == "pytorch_state_dict" and weights["onnx"]["opset_version"] >= 7
    x, y = np.load(folder / "test_input.npy"), np.load(folder / "test_output.npy")
    assert x.dtype == np.uint8 and x.shape == (1, 1, 32, 48) and y.dtype == np.float32 and y.shape == (1, 3, 32, 48)
    assert np.array_equal(x[0], read_image_stored(exported["data"] / "i8.tif"))  # the first val image, whole
    assert rdf["config"]["dspseg"]["test_image"] == "i8.tif (val)"
    assert rdf["training_data"]["description"].startswith("dspseg dataset 'data' with classes bg, rect, disc")
    import imageio.v3 as iio

    h, w = iio.imread(folder / "cover.png").shape[:2]
    assert w == 2 * h
    readme = (folder / "README.md").read_text()
    for part in ("## Classes", "## Input", "## Output", "## How to use", "## Validation", "## Training data",
                 "## Citation", "divided by 255"):
        assert part in readme
    with zipfile.ZipFile(exported["zip"]) as z:
        assert set(z.namelist()) == {p.name for p in folder.iterdir()}


def test_spec_validation(exported) -> None:
    from bioimageio.spec import InvalidDescr, load_description

    for source in (exported["folder"] / "rdf.yaml", exported["zip"]):
        descr = load_description(source)
        assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
        assert descr.validation_summary.status in ("valid-format", "passed")
        print(f"bioimageio.spec {source.name}: {descr.validation_summary.status}")


def test_bioimageio_core_model_test_both_weight_formats(exported) -> None:
    from bioimageio.core import test_model

    summary = test_model(exported["zip"], devices=["cpu"])  # every weight format of the package
    passed = {d.name for d in summary.details if d.status == "passed"}
    print(f"bioimageio.core test_model: {summary.status}")
    assert summary.status == "passed", summary.format()
    for fmt in ("pytorch_state_dict", "onnx"):
        assert f"Reproduce test outputs from test inputs ({fmt})" in passed


def test_package_agrees_with_dspseg_predict(exported, tmp_path: Path) -> None:
    """`dspseg predict` on the validation image file and the package on its stored pixels: same labels
    (tolerance: only pixels whose two best logits are within 1e-3 may differ; none did)."""
    from bioimageio.core import create_prediction_pipeline, load_description, predict

    image_file = exported["data"] / "i8.tif"
    [labels_file] = predict_files(exported["run"], [image_file], tmp_path / "pred")
    ours = tifffile.imread(labels_file)
    reference = np.load(exported["folder"] / "test_output.npy")[0]
    top2 = np.sort(reference, axis=0)[-2:]
    close = (top2[1] - top2[0]) < 1e-3
    assert np.array_equal(ours, reference.argmax(0))  # the test output is dspseg's own prediction
    image = read_image_stored(image_file)  # (1, H, W) uint8, as the README's snippet takes it
    descr = load_description(exported["zip"])
    got = predict(model=descr, inputs={"image": image[None]})  # the README's snippet
    assert np.array_equal(got.members["logits"].data.argmax("channel").values[0], ours)
    for fmt in ("pytorch_state_dict", "onnx"):
        pipeline = create_prediction_pipeline(descr, weight_format=fmt, devices=["cpu"])
        logits = predict(model=pipeline, inputs={"image": image[None]}).members["logits"].data.values[0]
        labels = logits.argmax(0)
        differ = labels != ours
        print(f"{fmt}: max |logit - dspseg| = {np.abs(logits - reference).max():.2e}, "
              f"{int(differ.sum())} of {ours.size} labels differ")
        assert np.abs(logits - reference).max() <= 1e-3 * max(1.0, float(np.abs(reference).max()))
        assert not (differ & ~close).any()


def test_architecture_file_is_self_contained(exported, tmp_path: Path) -> None:
    source = architecture_source()
    imports = {n.module if isinstance(n, ast.ImportFrom) else a.name
               for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))
               for a in n.names}
    assert {i.split(".")[0] for i in imports} <= set(ALLOWED)
    path = tmp_path / "arch.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("dspseg_bioimageio_arch_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = load_checkpoint(RunFolder(exported["run"]).best)
    rebuilt = getattr(module, CALLABLE)(**architecture_kwargs(state))
    rebuilt.load_state_dict(torch.load(exported["folder"] / "weights.pt", weights_only=True))
    reference = build_model_from_checkpoint(state)
    x = torch.randn(2, 1, 20, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), reference(x)["logits"])


def test_small_rules() -> None:
    assert [p["id"] for p in preprocessing("float32", 1.0, [0.5], [0.2])] == [
        "ensure_dtype", "fixed_zero_mean_unit_variance", "ensure_dtype"]  # floats: used as stored
    assert preprocessing("uint16", 65535.0, [0.1], [0.3])[1]["kwargs"] == {"gain": 1 / 65535}
    assert crop_window(100, 37, side=64, multiple=8) == (18, 2, 64, 32)
    assert crop_window(32, 48, side=256, multiple=4) == (0, 0, 32, 48)
    assert default_name("dsp", "mito/ER") == "dspseg dsp mito-ER" and slug("DSP (v2) model") == "dsp-v2-model"
    assert check_name("DSP mito model (2026)") == "DSP mito model (2026)"
    who, note = default_author()
    assert who and f"names '{who}'" in note and "--author" in note


def test_bad_input_is_one_sentence(exported, tmp_path: Path) -> None:
    run, data = exported["run"], exported["data"]
    norun = tmp_path / "norun"
    norun.mkdir()
    (norun / "config.yaml").write_text((run / "config.yaml").read_text())  # a run folder without checkpoints
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    cases = [([str(norun), "--data", str(data), "--out", str(tmp_path / "a")], "has no checkpoints/best.pt"),
             ([str(run), "--data", str(data), "--out", str(used)], "exists and is not an empty folder"),
             ([str(run), "--out", str(tmp_path / "b")], "needs --data DATA"),
             ([str(run), "--data", str(data), "--out", str(tmp_path / "c"), "--name", "a/b"], "is not a bioimage.io "
              "model name")]
    for args, says in cases:
        r = runner.invoke(app, ["export", args[0], "--format", "bioimageio", *args[1:]])
        assert r.exit_code == 2, r.output
        assert says in r.output and "Traceback" not in r.output, r.output
        assert r.output.count("error:") == 1
    assert (used / "keep.txt").read_text() == "mine" and [p.name for p in used.iterdir()] == ["keep.txt"]
    assert not any((tmp_path / n).exists() for n in "abc")


def test_sample_from_a_volume_section_and_the_split_fallback(tmp_path: Path) -> None:
    """A dataset with neither val nor test images, only a volume section in train: the test image is
    that section's centre window, read through the volume reader as stored (uint16), with a note."""
    from dspseg.data.manifest import load_manifest
    from dspseg.engine.bioimageio.sample import pick_sample
    from volume_files import volume_data, write_ngff

    data = volume_data("uint16")  # (10, 48, 40)
    write_ngff(tmp_path / "img.ome.zarr", data)
    (tmp_path / "dataset.json").write_text(json.dumps({
        "format": "dspseg/2", "classes": ["a", "b"], "images": [
            {"volume": {"url": "img.ome.zarr"}, "axis": "z", "index": 3, "split": "train", "labels": ["a", "b"]}]}))
    sample = pick_sample(load_manifest(tmp_path), in_channels=1, multiple=8, side=32)
    assert sample.stored.dtype == np.uint16 and np.array_equal(sample.stored[0], data[3, 8:40, 4:36])
    assert sample.split == "train" and "no usable 'val' image" in sample.notes[0]
    assert sample.source.endswith("(train, centre 32×32 of 48×40)")
