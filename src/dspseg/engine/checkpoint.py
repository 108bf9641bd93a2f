"""Checkpoints: plain dicts of tensors and primitive containers, written atomically.

A checkpoint (``OUT/checkpoints/last.pt`` for resuming, ``best.pt`` for evaluation and prediction)::

    {"format": "dspseg-checkpoint/1", "dspseg_version": str,
     "model": state_dict, "optimizer": state_dict | None, "method_state": dict,
     "config": TrainConfig as a dict, "step": int, "data_position": int (batches consumed),
     "best_metric": float | None (val mean Dice), "best_step": int | None,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor], "numpy": {...}, "python": [...]} | None,
     "normalisation": {"mean": [float] * Cin, "std": [float] * Cin},
     "classes": [str], "ignore_index": int, "in_channels": int,
     "model_args": {"width", "levels", "head", "head_kwargs", "aux_heads": [names]}}

``model`` includes the weights of the method's auxiliary training heads (``aux.<name>.*``, e.g.
``clsbranch``'s classifier), so resuming and ``--init`` restore them; inference drops them
(:func:`build_model_from_checkpoint`). Every consumer of a trained model (evaluate, predict, export,
the report's qualitative panel) goes through :func:`load_run`: run folder → checkpoint → model → device.

Everything in it loads with ``torch.load(weights_only=True)``: no pickled classes, so a checkpoint
from elsewhere cannot run code. Writing goes to a temporary file in the same folder, which is
flushed and fsync'ed and then renamed over the target (``os.replace`` is atomic), so a crash or a
full disk mid-save leaves the previous file intact.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dspseg.engine.runfolder import RunFolder
from dspseg.errors import CheckpointError
from dspseg.fsutil import atomic_write

FORMAT = "dspseg-checkpoint/1"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically and durably (temporary file, fsync, rename).

    A full disk (or quota) raises :class:`~dspseg.errors.DiskFullError` saying so, whatever torch
    raised (``RuntimeError: [enforce fail at inline_container.cc...]`` for a write that fails inside
    its zip writer); the previous file at ``path`` is left intact either way.
    """
    kept = f"the previous {Path(path).name} is intact" if Path(path).exists() else "no earlier checkpoint exists"
    return atomic_write(path, lambda f: torch.save(state, f), binary=True, durable=True, kept=kept,
                        fix="continue with --resume")


OTHER = "use the run's other checkpoint (predict and export take --checkpoint last) or train again"
#: what every consumer reads from a checkpoint (resume also reads optimizer, rng, step)
REQUIRED = ("model", "config", "classes", "in_channels", "model_args", "normalisation", "step")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU with ``weights_only=True``; CheckpointError naming the file otherwise.

    A missing, empty (0-byte), truncated or foreign file gets one sentence saying which and what to do
    (:func:`check_complete` checks the entries).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; is this a dspseg run folder whose training got that far?")
    if path.stat().st_size == 0:
        raise CheckpointError(f"the checkpoint {path} is empty (0 bytes; a save was cut short, e.g. by a full disk); "
                              f"{OTHER}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the sentence below says enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt, truncated, or not a torch file
        raise CheckpointError(f"cannot read the checkpoint {path} (torch.load raised {type(e).__name__}); it is "
                              f"truncated or not a dspseg checkpoint: {OTHER}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dspseg checkpoint (format {FORMAT} expected); give the run "
                              f"folder of a `dspseg train` run, or {OTHER[4:]}")
    return state


def check_complete(state: dict[str, Any], path: Path) -> None:
    """CheckpointError unless ``state`` has every entry of :data:`REQUIRED` (load_run and resume call it)."""
    missing = [k for k in REQUIRED if k not in state]
    args = state.get("model_args")
    if not missing and not (isinstance(args, dict) and all(k in args for k in ("width", "levels", "head"))):
        missing = ["model_args.width/levels/head"]
    if missing:
        raise CheckpointError(f"{path} is an incomplete dspseg checkpoint (no {', '.join(missing)}); {OTHER}")


def run_config(folder: RunFolder) -> dict[str, Any] | None:
    """The run's ``config.yaml`` as a mapping (``None`` when the folder has none)."""
    from dspseg.engine.config import read_yaml

    return read_yaml(folder.config) if folder.config.is_file() else None


def disagreements(state: dict[str, Any], **have: Any) -> list[str]:
    """What differs between a checkpoint ``state`` and the values in ``have`` (``None`` = not checked).

    Keys: ``method`` and ``width``/``levels`` (against ``state["config"]``), ``head`` (``model_args``),
    ``classes`` (list), ``in_channels`` (int). Each entry reads ``"method: 'dsp' in the checkpoint,
    'pseudolabel' here"``.
    """
    cfg, args = state.get("config") or {}, state.get("model_args") or {}
    theirs = {"method": cfg.get("method"), "width": args.get("width", cfg.get("width")),
              "levels": args.get("levels", cfg.get("levels")), "head": args.get("head"),
              "classes": list(state.get("classes") or []), "in_channels": state.get("in_channels")}
    out = []
    for key, mine in have.items():
        if mine is None or key not in theirs:
            continue
        if (list(mine) if key == "classes" else mine) != theirs[key]:
            out.append(f"{key}: {theirs[key]!r} in the checkpoint, {mine!r} here")
    return out


def check_agreement(state: dict[str, Any], path: Path, here: str, fix: str, **have: Any) -> None:
    """CheckpointError naming every :func:`disagreements` between ``path``'s ``state`` and ``here``."""
    diff = disagreements(state, **have)
    if diff:
        raise CheckpointError(f"{here} and the checkpoint {path} disagree ({'; '.join(diff)}); {fix}")


# ------------------------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """States of the torch (CPU and CUDA), numpy and python global generators, as tensors and lists."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


# ------------------------------------------------------------------------------------------- models


def load_weights_into(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy the tensors of ``state`` whose name and shape match into ``model``.

    Returns ``(loaded, skipped)`` parameter names; ``skipped`` holds entries missing in ``model``,
    entries of ``model`` missing in ``state`` and shape mismatches (e.g. another head), each with
    the reason, so the caller can tell the user what was not initialised.
    """
    own = model.state_dict()
    loaded, skipped, take = [], [], {}
    for name, value in state.items():
        if name not in own:
            skipped.append(f"{name} (not in this model)")
        elif tuple(own[name].shape) != tuple(value.shape):
            skipped.append(f"{name} (shape {tuple(value.shape)} there, {tuple(own[name].shape)} here)")
        else:
            take[name] = value
            loaded.append(name)
    skipped += [f"{name} (not in the checkpoint)" for name in own if name not in state]
    model.load_state_dict(take, strict=False)
    return loaded, skipped


AUX_PREFIX = "aux."


def build_model_from_checkpoint(state: dict[str, Any], path: str | Path = "the checkpoint") -> torch.nn.Module:
    """The model described by ``state["model_args"]`` with the checkpoint's weights, in eval mode.

    This is the inference model (evaluate, predict): backbone + head. The weights of auxiliary
    training heads (keys ``aux.*``) are dropped — they only shape training, and rebuilding them would
    need the method's options; every other weight must match exactly.
    """
    from dspseg.models import build_model

    args = state["model_args"]
    model = build_model(int(state["in_channels"]), len(state["classes"]), width=int(args["width"]),
                        head=str(args["head"]), levels=int(args["levels"]), **dict(args.get("head_kwargs") or {}))
    try:
        model.load_state_dict({k: v for k, v in state["model"].items() if not k.startswith(AUX_PREFIX)})
    except (RuntimeError, KeyError, TypeError) as e:  # weights of another architecture
        raise CheckpointError(f"the weights in {path} do not fit the model its model_args describe "
                              f"({type(e).__name__}); it was changed after training: {OTHER}") from None
    return model.eval()


# ------------------------------------------------------------------------------------------- runs


@dataclass
class LoadedRun:
    """A trained run ready for inference: its checkpoint ``state`` and the model built from it
    (backbone + head, eval mode, on the device :func:`load_run` chose)."""

    folder: RunFolder
    which: str
    path: Path
    state: dict[str, Any]
    model: torch.nn.Module

    @property
    def classes(self) -> list[str]:
        return list(self.state["classes"])

    @property
    def in_channels(self) -> int:
        return int(self.state["in_channels"])

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def tile(self) -> int:
        """The tile side the run was trained with (whole-image inference up to it)."""
        return int(self.state["config"].get("tile", 256))

    @property
    def normalisation(self) -> Any:
        """The training images' :class:`~dspseg.data.dataset.Normalisation` (mean, std per channel)."""
        from dspseg.data.dataset import Normalisation

        return Normalisation.from_dict(self.state["normalisation"])

    def check_classes(self, classes: list[str], data: str | Path) -> None:
        """DatasetError unless the dataset ``data`` has the run's classes, in the same order."""
        from dspseg.errors import DatasetError

        if list(classes) != self.classes:
            raise DatasetError(f"{data} has classes {list(classes)} but the run {self.folder.root} was trained on "
                               f"{self.classes}; evaluate on a dataset with the same classes in the same order")

    def check_channels(self, channels: int, where: str | Path) -> None:
        """DatasetError unless an image (``where``) has the run's number of input channels."""
        from dspseg.errors import DatasetError

        if int(channels) != self.in_channels:
            raise DatasetError(f"{where} has {channels} channel(s) but the run {self.folder.root} was trained on "
                               f"{self.in_channels}; give images with the channels of the training images")


def load_run(run: str | Path | RunFolder, which: str = "best", device: str | torch.device = "auto") -> LoadedRun:
    """The ``which`` (``best`` or ``last``) checkpoint of the run folder ``run`` and its inference model.

    ``device="auto"`` is the GPU when there is one, else the CPU. CheckpointError (a UserError) for
    a missing run folder or checkpoint, a file that is not a complete dspseg checkpoint, or a
    ``config.yaml`` whose method, head, width or levels differ from the checkpoint's (a hand edit).
    Callers check the dataset's side with :meth:`LoadedRun.check_classes` / ``check_channels``.
    """
    folder = run if isinstance(run, RunFolder) else RunFolder(run)
    path = folder.existing_checkpoint(which)
    state = load_checkpoint(path)
    check_complete(state, path)
    saved = run_config(folder)
    if saved is not None:
        method = saved.get("method")
        head = method_head(method)
        check_agreement(state, path, f"{folder.config}", "restore config.yaml to the values the run was "
                        "trained with (the checkpoint's), or train a new run", method=method, head=head,
                        width=saved.get("width"), levels=saved.get("levels"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return LoadedRun(folder, which, path, state, build_model_from_checkpoint(state, path).to(device))


def method_head(method: Any) -> str | None:
    """The head a method trains (``None`` for an unknown method name: the method check reports it)."""
    from dspseg.methods import METHODS

    cls = METHODS.get(method) if isinstance(method, str) else None
    return cls.head if cls is not None else None
