"""``dspseg export RUN --format bioimageio --data DATA --out DIR``: a bioimage.io Model Zoo package (spec 0.5).

``DIR`` receives two things, written together (a temporary sibling folder renamed into place)::

    DIR/<slug>/            the package as a folder: load DIR/<slug>/rdf.yaml
      rdf.yaml             the model description (format_version 0.5.x), file hashes filled in
      weights.pt           pytorch_state_dict: the inference model's state dict (backbone + head)
      dspseg_model.py      its architecture: dspseg's model code in one file (torch only), callable
                           DSPSegLogits(**kwargs) (:mod:`.architecture`)
      model.onnx           ONNX weights (parent pytorch_state_dict), same graph, no normalisation inside
      test_input.npy       (1, Cin, h, w) a validation image of DATA, stored pixel type (:mod:`.sample`)
      test_output.npy      (1, C, h, w) float32 logits of dspseg's own model for it
      sample_input.tif     the test image as a TIFF, sample_output.tif its logits (for people to look at)
      cover.png            the image beside its predicted overlay (:mod:`.documentation`)
      README.md            what the model is, classes, training, input rule, output, use, validation
    DIR/<slug>.zip         the same package zipped (upload to bioimage.io, or open it in a consumer)

``<slug>`` is the model name in lower case with dashes. **Input** ``image`` (batch, channel, y, x) in
the test image's stored pixel type; y and x of at least, and in steps of, ``2 ** (levels - 1)``. Its
preprocessing is dspseg's intensity rule in spec operations (:func:`preprocessing`)::

    ensure_dtype float32 → scale_linear gain 1/divide_by (integer types only)
    → fixed_zero_mean_unit_variance per channel (training mean, std) → ensure_dtype float32

(bioimageio.core divides by ``std + 1e-6``; dspseg by ``std``: logits differ by about 1e-6/std
relative, far inside the test's tolerance). **Output** ``logits`` (batch, channel = class names, y, x),
float32 class logits: labels = argmax over channel, probabilities = softmax over it.

The description goes through ``bioimageio.spec``'s validation (file checks included) before anything
is packaged; an invalid one is an ExportError quoting the first problem. The package's own test
(``bioimageio test``, :func:`bioimageio.core.test_model`) is run by tests/engine/test_bioimageio.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dspseg import __version__
from dspseg.cli_support import refuse_used_folder
from dspseg.errors import ExportError

#: the file names inside the package folder
FILES = {"weights": "weights.pt", "onnx": "model.onnx", "test_input": "test_input.npy",
         "test_output": "test_output.npy", "sample_input": "sample_input.tif", "sample_output": "sample_output.tif",
         "cover": "cover.png", "docs": "README.md"}
#: the test image's largest side (the run's tile when smaller): small enough for a quick model test
MAX_SIDE = 256
NAME_CHARS = "letters, digits, spaces and _ + - ( )"
LICENSE = "MIT"  # dspseg's (pyproject.toml); the weights are the user's, exported under it unless changed


class _Logits(nn.Module):
    """``image`` (N, Cin, H, W), normalised → logits (N, C, H, W): the model for the ONNX export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model(image)["logits"]


@dataclass
class BioimageioResult:
    """The package folder's ``rdf.yaml``, the zip, the description written and notes for the user."""

    folder: Path
    zip: Path
    description: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        return [self.folder / "rdf.yaml", self.zip]


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package (``bioimageio``) is missing
        return False


def _require() -> None:
    missing = [m for m in ("bioimageio.spec", "onnx", "onnxscript") if not _installed(m)]
    if missing:
        raise ExportError(f"--format bioimageio needs the package(s) {', '.join(missing)}; install the bioimageio "
                          "extra: pip install 'dspseg[bioimageio]'")


def check_name(name: str) -> str:
    """``name`` if bioimage.io accepts it (5-128 of :data:`NAME_CHARS`), else ExportError saying so."""
    if not 5 <= len(name) <= 128 or re.fullmatch(r"[A-Za-z0-9_+\- ()]+", name) is None:
        raise ExportError(f"--name '{name}' is not a bioimage.io model name: use 5 to 128 {NAME_CHARS}")
    return name


def default_name(method: str, dataset: str) -> str:
    """``dspseg <method> <dataset>`` with other characters than :data:`NAME_CHARS` as dashes, 64 at most."""
    name = re.sub(r"[^A-Za-z0-9_+\- ()]+", "-", f"dspseg {method} {dataset}").strip("- ")[:64]
    return name if len(name) >= 5 else f"{name} model"


def slug(name: str) -> str:
    """File-name form of a model name: lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model"


def default_author() -> tuple[str, str]:
    """``(name, note)``: git's ``user.name`` if set, else the login name, and a note saying so."""
    import getpass
    import subprocess

    try:
        res = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True, timeout=5)
        who = res.stdout.strip() if res.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        who = ""
    where = "git's user.name"
    if not who:
        try:
            who, where = getpass.getuser(), "the login name"
        except (OSError, KeyError):  # no user name in the environment or the password database
            who, where = "dspseg user", "a placeholder"
    return who, (f"no --author given: the package names '{who}' ({where}) as its author; pass --author "
                 "'Your Name' (repeatable) to name the people who trained the model")


def preprocessing(dtype: str, divide_by: float, mean: list[float], std: list[float]) -> list[dict[str, Any]]:
    """dspseg's intensity rule as bioimage.io preprocessing (see the module doc)."""
    steps: list[dict[str, Any]] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    if divide_by != 1.0:
        steps.append({"id": "scale_linear", "kwargs": {"gain": 1.0 / divide_by}})
    steps.append({"id": "fixed_zero_mean_unit_variance",
                  "kwargs": {"axis": "channel", "mean": [float(m) for m in mean], "std": [float(s) for s in std]}})
    steps.append({"id": "ensure_dtype", "kwargs": {"dtype": "float32"}})
    return steps


def _write_onnx(model: nn.Module, path: Path, in_channels: int, multiple: int) -> dict[str, Any]:
    """``model.onnx`` by dspseg's ONNX path (:func:`dspseg.engine.export._write_program`), weights inside
    the one file when they fit (under 2 GB, what every ONNX runtime reads); its rdf entry."""
    import onnx

    from dspseg.engine.export import _write_program

    try:
        _write_program(_Logits(model).eval(), "onnx", path, in_channels, multiple)
    except ExportError:
        raise
    except Exception as e:  # the exporter's failure: one sentence, the state-dict weights need none of it
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"the ONNX exporter of torch {torch.__version__} failed ({type(e).__name__}: {first}); "
                          "report it to dspseg") from None
    graph = onnx.load(str(path))  # external data, if any, is read in
    entry: dict[str, Any] = {"source": path.name}
    data = path.with_name(path.name + ".data")
    if data.exists():
        if graph.ByteSize() < 2**31 - 2**20:
            onnx.save_model(graph, str(path), save_as_external_data=False)
            data.unlink()
        else:
            entry["external_data"] = {"source": data.name}
    entry["opset_version"] = next(int(o.version) for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    return entry


def _dataset_facts(manifest: Any) -> tuple[dict[str, int], dict[str, int]]:
    """(images per split, training images per annotation type) of a manifest."""
    splits = {s: len(manifest.records(s)) for s in ("train", "val", "test")}
    kinds: dict[str, int] = {}
    for r in manifest.records("train"):
        kinds[r.annotation_type] = kinds.get(r.annotation_type, 0) + 1
    return splits, kinds


def export_bioimageio(run: str | Path, out: str | Path, data: str | Path | None, checkpoint: str = "best",
                      name: str | None = None, authors: list[str] | tuple[str, ...] = (),
                      tags: list[str] | tuple[str, ...] = ()) -> BioimageioResult:
    """Write the bioimage.io package of ``run``'s ``checkpoint`` into the new folder ``out`` (module doc).

    ``data``: the dataset the run was trained on (its validation images give the test tensors and
    the cover; its records the training-data description). ``name``: the model's name (default
    ``dspseg <method> <dataset>``); ``authors``: their names (default: git's user.name, with a note);
    ``tags``: added to the defaults (e.g. ``electron-microscopy``, ``mitochondria``).
    ExportError/CheckpointError/DatasetError (UserErrors, one sentence) for what the user can fix.
    """
    import tifffile

    from dspseg.data.intensity import divisor, to_unit
    from dspseg.data.manifest import load_manifest
    from dspseg.engine.bioimageio.architecture import CALLABLE, FILE_NAME, architecture_kwargs, architecture_source
    from dspseg.engine.bioimageio.documentation import ModelFacts, cover_picture, readme
    from dspseg.engine.bioimageio.sample import pick_sample
    from dspseg.engine.checkpoint import load_run
    from dspseg.fsutil import new_folder

    out = Path(out)
    refuse_used_folder(out, ExportError)
    if name is not None:
        check_name(name)
    if data is None:
        raise ExportError("--format bioimageio needs --data DATA, the dataset the run was trained on: its validation "
                          "images give the package's test image and cover")
    _require()
    loaded = load_run(run, checkpoint, device="cpu")
    manifest = load_manifest(data)
    loaded.check_classes(manifest.classes, data)
    state, notes = loaded.state, []
    cfg, args = state.get("config") or {}, state["model_args"]
    multiple = 2 ** (int(args["levels"]) - 1)
    sample = pick_sample(manifest, loaded.in_channels, multiple, min(loaded.tile, MAX_SIDE))
    notes += sample.notes
    norm = loaded.normalisation
    unit = to_unit(sample.stored)
    with torch.no_grad():
        logits = loaded.model(torch.from_numpy(norm.apply(unit))[None])["logits"].numpy().astype(np.float32)
    dataset = manifest.name if manifest.name != "dataset" else Path(data).resolve().name  # "dataset": the default
    name = name or default_name(str(cfg.get("method")), dataset)
    if not authors:
        who, note = default_author()
        authors = [who]
        notes.append(note)
    dtype, divide_by = sample.stored.dtype.name, divisor(sample.stored.dtype)
    classes = list(loaded.classes)
    splits, kinds = _dataset_facts(manifest)
    facts = ModelFacts(name=name, classes=classes, in_channels=loaded.in_channels, method=str(cfg.get("method")),
                       model_args=dict(args), step=loaded.step, checkpoint=checkpoint,
                       best_metric=state.get("best_metric"), dataset=dataset, split_counts=splits,
                       annotation_counts=kinds, dtype=dtype, divide_by=divide_by, mean=list(norm.mean),
                       std=list(norm.std), multiple=multiple, tile=loaded.tile, sample=sample.source,
                       weights=["pytorch_state_dict", "onnx"], dspseg_version=__version__,
                       training={k: cfg.get(k) for k in ("batch_size", "crop_size", "lr", "weight_decay", "precision",
                                                         "seed", "method_options")})
    out.parent.mkdir(parents=True, exist_ok=True)
    with new_folder(out, "bioimageio") as tmp:
        folder = tmp / slug(name)
        folder.mkdir()
        torch.save(loaded.model.state_dict(), folder / FILES["weights"])
        (folder / FILE_NAME).write_text(architecture_source())
        onnx_entry = _write_onnx(loaded.model, folder / FILES["onnx"], loaded.in_channels, multiple)
        np.save(folder / FILES["test_input"], sample.stored[None])
        np.save(folder / FILES["test_output"], logits)
        tifffile.imwrite(folder / FILES["sample_input"], sample.stored, photometric="minisblack")
        tifffile.imwrite(folder / FILES["sample_output"], logits[0], photometric="minisblack")
        _write_png(folder / FILES["cover"], cover_picture(unit, logits[0].argmax(0), classes))
        (folder / FILES["docs"]).write_text(readme(facts))
        rdf = describe(facts, state, sample.source, authors, tags, onnx_entry,
                       {"source": FILE_NAME, "callable": CALLABLE, "kwargs": architecture_kwargs(state)},
                       Path(run).resolve().name)
        _package(rdf, folder, tmp / f"{folder.name}.zip")
    return BioimageioResult(out / folder.name, out / f"{folder.name}.zip", rdf, notes)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, rgb, extension=".png")


def describe(f: Any, state: dict[str, Any], sample: str, authors: list[str] | tuple[str, ...],
             tags: list[str] | tuple[str, ...], onnx_entry: dict[str, Any], architecture: dict[str, Any],
             run: str) -> dict[str, Any]:
    """The ``rdf.yaml`` content (before bioimage.io fills in file hashes) for the facts ``f``."""
    from dspseg.data.intensity import RULE
    from dspseg.engine.bioimageio.documentation import PAPER, UNET

    space = {"min": f.multiple, "step": f.multiple}
    classes = ", ".join(f.classes) if len(", ".join(f.classes)) <= 120 else f"{len(f.classes)} classes"
    description = (f"Semantic segmentation of 2D images into {len(f.classes)} classes ({classes}): a U-Net (width "
                   f"{f.model_args['width']}, {f.model_args['levels']} levels) with a {f.model_args['head']} head, "
                   f"trained on the dataset {f.dataset} by dspseg (Decoupled Semantic Prototypes, CVPR 2023) with "
                   f"its {f.method} method. Output: class logits.")[:512]
    dataset_name = re.sub(r"[^A-Za-z0-9_+\- ()]+", "-", f"{f.dataset} (dspseg dataset)")[:128]
    kinds = ", ".join(f"{n} {k}" for k, n in f.annotation_counts.items() if n)
    default_tags = ["2d", "pytorch", "onnx", "unet", "semantic-segmentation", "dspseg", "decoupled-semantic-prototypes"]
    return {
        "format_version": _format_version(),
        "type": "model",
        "name": f.name,
        "description": description,
        "authors": [{"name": a} for a in authors],
        "cite": [{"text": PAPER["text"], "url": PAPER["url"]}, {"text": UNET["text"], "doi": UNET["doi"]}],
        "license": LICENSE,
        "tags": default_tags + [t for t in tags if t not in default_tags],
        "documentation": {"source": FILES["docs"]},
        "covers": [{"source": FILES["cover"]}],
        "inputs": [{
            "id": "image",
            "description": f"2D image, {f.dtype} as stored; preprocessing = dspseg's intensity rule",
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": [f"channel{i}" for i in range(f.in_channels)]},
                     {"type": "space", "id": "y", "size": space},
                     {"type": "space", "id": "x", "size": space}],
            "data": {"type": f.dtype},
            "test_tensor": {"source": FILES["test_input"]},
            "sample_tensor": {"source": FILES["sample_input"]},
            "preprocessing": preprocessing(f.dtype, f.divide_by, f.mean, f.std),
        }],
        "outputs": [{
            "id": "logits",
            "description": "class logits (argmax over channel = labels; softmax = probabilities)",
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": list(f.classes)},
                     {"type": "space", "id": "y", "size": {"tensor_id": "image", "axis_id": "y"}},
                     {"type": "space", "id": "x", "size": {"tensor_id": "image", "axis_id": "x"}}],
            "data": {"type": "float32"},
            "test_tensor": {"source": FILES["test_output"]},
            "sample_tensor": {"source": FILES["sample_output"]},
        }],
        "weights": {
            "pytorch_state_dict": {"source": FILES["weights"], "architecture": architecture,
                                   "pytorch_version": torch.__version__.split("+")[0],
                                   "comment": "the inference model of the dspseg checkpoint (backbone + head)"},
            "onnx": {**onnx_entry, "parent": "pytorch_state_dict",
                     "comment": "torch.onnx (dynamo) export of the pytorch_state_dict model"},
        },
        "training_data": {
            "type": "dataset", "format_version": "0.3.0", "name": dataset_name,
            "tags": ["dspseg", "semantic-segmentation", "2d"], "documentation": {"source": FILES["docs"]},
            "description": (f"dspseg dataset '{f.dataset}' with classes {', '.join(f.classes)}"[:300]
                            + f"; {f.split_counts.get('train', 0)} training images ({kinds}), "
                            f"{f.split_counts.get('val', 0)} validation, {f.split_counts.get('test', 0)} test"),
        },
        "config": {"dspseg": {
            "dspseg_version": f.dspseg_version, "method": f.method, "model_args": json.loads(json.dumps(f.model_args)),
            "run": run, "checkpoint": f.checkpoint, "step": f.step,
            "best_val_mean_dice": f.best_metric, "tile_size": f.tile, "tile_overlap": 0.25,
            "input_scaling": {"rule": RULE, "divide_by": f.divide_by, "trained_on": list(state["normalisation"].get("dtypes", ()))},
            "normalisation": {"mean": list(f.mean), "std": list(f.std)},
            "test_image": sample,
        }},
    }


def _format_version() -> str:
    """The model format version this bioimageio.spec implements (0.5.x)."""
    from bioimageio.spec.model.v0_5 import ModelDescr

    return str(ModelDescr.implemented_format_version)


def _package(rdf: dict[str, Any], folder: Path, zip_path: Path) -> None:
    """Validate ``rdf`` against the files in ``folder``; write ``folder/rdf.yaml`` (hashes filled in) and the zip."""
    from bioimageio.spec import (InvalidDescr, ValidationContext, build_description, save_bioimageio_package,
                                 save_bioimageio_package_as_folder)

    descr = build_description(rdf, context=ValidationContext(root=folder, perform_io_checks=True))
    if isinstance(descr, InvalidDescr):
        errors = descr.validation_summary.errors
        first = f"{'.'.join(map(str, errors[0].loc))}: {errors[0].msg}" if errors else "no reason given"
        raise ExportError(f"bioimage.io rejects the package description ({first}); report it to dspseg")
    save_bioimageio_package_as_folder(descr, output_path=folder)
    save_bioimageio_package(descr, output_path=zip_path)
