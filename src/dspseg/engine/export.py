"""``dspseg export RUN --format safetensors|pt2|onnx --out DIR``: a trained model for other pipelines.

Every export folder holds the model file and ``model.json`` (format ``dspseg-export/1``)::

    {"format": "dspseg-export/1", "dspseg_version": str, "model_format": "onnx", "file": "model.onnx",
     "classes": [str] (output channel c = class c), "ignore_index": int, "in_channels": int,
     "normalisation": {"mean": [float] * Cin, "std": [float] * Cin, "applied_inside": bool},
     "input": {"layout": "NCHW", "dtype": "float32", "multiple": int,
               "scaling": {"rule": str, "divide_by": {pixel type: float}, "trained_on": [pixel type]}},
     "output": {"name": "logits", "layout": "NCHW", "labels": str},
     "tile_size": int, "tile_overlap": 0.25, "model_args": {...}, "method": str,
     "source": {"run": str, "checkpoint": "best" | "last", "step": int, "best_metric": float | None},
     "files": {name: what it holds}}

**The input** is the one rule of :mod:`dspseg.data.intensity`, the same in train, evaluate, predict and
here: ``x = float32(stored) / float32(divide_by[stored.dtype])`` (integers by their type's maximum,
floats as stored), then ``(x - mean) / std`` per channel (inside the ONNX and pt2 programs).

**Files** (``files`` in model.json lists those written): ``model.json``; the model file; for ONNX,
``model.onnx.data`` when the exporter stores the weights beside the graph (keep both in one folder).

* ``safetensors`` — the inference weights (backbone + head) as ``model.safetensors``; rebuild with
  :func:`load_safetensors_model` (or ``dspseg.models.build_model(**model_args)``) and normalise
  inputs yourself: ``x_norm = (x - mean) / std`` per channel.
* ``pt2`` (``torch.export`` program, ``model.pt2``; load with ``torch.export.load(f).module()``) and
  ``onnx`` (``model.onnx``, opset chosen by torch's dynamo exporter; any ONNX runtime) — programs
  ``logits = model((x - mean) / std)`` with normalisation inside: the input is the image scaled as dspseg
  reads it (integers divided by their type's maximum, e.g. uint8 / 255), shape (N, Cin, H, W), any N,
  H and W multiples of ``input.multiple`` (2^(levels-1): the U-Net's pooling steps; pad or tile to
  it). Labels are ``logits.argmax(1)``.

``--format bioimageio`` (a bioimage.io Model Zoo package: both weight formats, normalisation as
preprocessing, test tensors) is :mod:`dspseg.engine.bioimageio`, which reuses the ONNX path here.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dspseg import __version__
from dspseg.cli_support import refuse_used_folder
from dspseg.data.intensity import scaling_description
from dspseg.engine.checkpoint import build_model_from_checkpoint, load_run
from dspseg.errors import ExportError
from dspseg.fsutil import new_folder

FORMATS = {"safetensors": "model.safetensors", "pt2": "model.pt2", "onnx": "model.onnx"}
EXPORT_FORMAT = "dspseg-export/1"
FILE_ROLES = {"model.json": "this description: classes, input scaling and normalisation, tile size",
              "model.safetensors": "the inference weights (backbone + head)",
              "model.pt2": "the torch.export program: scaled image in, logits out",
              "model.onnx": "the ONNX graph: scaled image in, logits out",
              "model.onnx.data": "the ONNX graph's weights (external data; keep beside model.onnx)"}


class NormalisedModel(nn.Module):
    """``image (N, Cin, H, W)`` → ``logits (N, C, H, W)`` = ``model((image - mean) / std)["logits"]``."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        # names chosen to stay clear of op names in exported graphs (ONNX forbids duplicates)
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image: Tensor) -> Tensor:
        return self.model((image - self.input_mean) / self.input_std)["logits"]


@dataclass
class ExportResult:
    files: list[Path]
    description: dict[str, Any]


def describe(state: dict[str, Any], fmt: str, run: Path, checkpoint: str) -> dict[str, Any]:
    """The ``model.json`` content for a checkpoint ``state`` exported as ``fmt``."""
    cfg = state.get("config") or {}
    args = dict(state["model_args"])
    inside = fmt != "safetensors"
    return {
        "format": EXPORT_FORMAT, "dspseg_version": __version__, "model_format": fmt, "file": FORMATS[fmt],
        "classes": list(state["classes"]), "ignore_index": int(state.get("ignore_index", 255)),
        "in_channels": int(state["in_channels"]),
        "normalisation": {"mean": list(state["normalisation"]["mean"]), "std": list(state["normalisation"]["std"]),
                          "applied_inside": inside},
        "input": {"layout": "NCHW", "dtype": "float32", "multiple": 2 ** (int(args["levels"]) - 1),
                  "scaling": scaling_description(state["normalisation"].get("dtypes", ()))},
        "output": {"name": "logits", "layout": "NCHW",
                   "labels": "argmax over dim 1 gives class ids (index into classes)"},
        "tile_size": int(cfg.get("tile", 256)), "tile_overlap": 0.25,
        "model_args": args, "method": cfg.get("method"),
        "source": {"run": str(run), "checkpoint": checkpoint, "step": int(state.get("step", 0)),
                   "best_metric": state.get("best_metric")},
        "torch_version": torch.__version__,
    }


def _need(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{what} needs the package '{module.split('.')[0]}'; install the export extra: "
                          "pip install 'dspseg[export]'") from None


def _dynamic_shapes(multiple: int) -> dict[str, dict[int, Any]]:
    from torch.export import Dim

    return {"image": {0: Dim("batch", min=1, max=4096),
                      2: multiple * Dim("height_blocks", min=1, max=65536 // multiple),
                      3: multiple * Dim("width_blocks", min=1, max=65536 // multiple)}}


def _write_program(wrapper: NormalisedModel, fmt: str, path: Path, in_channels: int, multiple: int) -> None:
    example = torch.rand(2, in_channels, 2 * multiple, 3 * multiple)  # batch 2: a size of 1 would be specialised
    shapes = _dynamic_shapes(multiple)
    quiet = io.StringIO()
    onnx_log = logging.getLogger("torch.onnx")  # "torchvision is not installed" notes and progress lines
    level = onnx_log.level
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        onnx_log.setLevel(logging.ERROR)
        if fmt == "pt2":
            program = torch.export.export(wrapper, (example,), dynamic_shapes=shapes)
            torch.export.save(program, str(path))
        else:
            _need("onnxscript", "ONNX export")
            _need("onnx", "ONNX export")
            try:
                torch.onnx.export(wrapper, (example,), str(path), dynamo=True, input_names=["image"],
                                  output_names=["logits"], dynamic_shapes=shapes, optimize=True)
            finally:
                onnx_log.setLevel(level)


def export_run(run: str | Path, format: str, out: str | Path, checkpoint: str = "best") -> ExportResult:
    """Export the ``checkpoint`` weights of the run folder ``run`` as ``format`` into the new folder ``out``.

    Returns the files written (model file, ``model.json``). Raises ExportError/CheckpointError
    (UserErrors) for an unknown format, a non-empty ``out``, a missing run or optional package.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown --format '{format}'; choose one of {', '.join(FORMATS)} or bioimageio")
    run, out = Path(run), Path(out)
    refuse_used_folder(out, ExportError)
    loaded = load_run(run, checkpoint, device="cpu")
    model, desc = loaded.model, describe(loaded.state, format, run, checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    with new_folder(out, "export") as tmp:
        target = tmp / FORMATS[format]
        if format == "safetensors":
            st = _need("safetensors.torch", "safetensors export")
            weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            st.save_file(weights, str(target), metadata={"format": EXPORT_FORMAT, "dspseg_version": __version__,
                                                         "classes": json.dumps(desc["classes"])})
        else:
            wrapper = NormalisedModel(model, desc["normalisation"]["mean"], desc["normalisation"]["std"]).eval()
            try:
                _write_program(wrapper, format, target, desc["in_channels"], desc["input"]["multiple"])
            except ExportError:
                raise
            except Exception as e:  # exporter failures are torch's; say which step failed, in one sentence
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ExportError(f"the {format} exporter of torch {torch.__version__} failed ({type(e).__name__}: "
                                  f"{first}); the safetensors format always works") from None
        names = sorted(p.name for p in tmp.iterdir()) + ["model.json"]
        desc["files"] = {n: FILE_ROLES.get(n, "written by torch's exporter") for n in names}
        (tmp / "model.json").write_text(json.dumps(desc, indent=1) + "\n")
    return ExportResult([out / FORMATS[format]] + [out / n for n in names if n != FORMATS[format]], desc)


def load_safetensors_model(folder: str | Path) -> nn.Module:
    """Rebuild the model of a safetensors export folder (weights + model.json), in eval mode."""
    st = _need("safetensors.torch", "reading a safetensors export")
    folder = Path(folder)
    try:
        desc = json.loads((folder / "model.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{folder / 'model.json'} is missing or unreadable ({e}); give an export folder") from None
    if desc.get("format") != EXPORT_FORMAT or desc.get("model_format") != "safetensors":
        raise ExportError(f"{folder} is not a dspseg safetensors export (model.json format/model_format)")
    weights = st.load_file(str(folder / desc["file"]))
    state = {"model_args": desc["model_args"], "in_channels": desc["in_channels"], "classes": desc["classes"],
             "model": weights}
    return build_model_from_checkpoint(state)
