"""The assembly of a training run, as named steps (nnU-Net's ``run_training`` hooks), in the order
:meth:`Assembly.setup` runs them::

    launch           threads, Fabric (devices, precision); ``is_main``: rank 0 alone prints and writes
    read_dataset     validate the dataset (stop on errors, note warnings); its manifest
    check_resume     --resume: config.yaml, last.pt and the dataset agree (method, head, width, levels,
                     classes; the channels are checked by the dataset), else one sentence saying which differs
    build_method     the method, its options fully resolved (config.yaml records them all)
    build_data       train/val sets (normalisation from the checkpoint when resuming), notes of the image
                     reader, refusal of untrainable data (fewer than two annotated classes), the batch plan
                     (:mod:`dspseg.data.sampling`), the step budget
    build_model      seeded weights (the global RNGs are seeded here), the method's auxiliary heads included
    build_optimiser  AdamW (paper defaults); Fabric wraps model and optimiser
    restore_or_init  --resume: weights, optimiser, method state, RNG states, metrics.csv; --init RUN: the
                     weights of RUN's best.pt (else last.pt) whose name and shape match

:class:`~dspseg.engine.trainer.Trainer` builds on it with the loop. Each step is a method, so a test
or a new capability can run, replace or extend one without copying the others.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dspseg.data.dataset import Normalisation, SegmentationDataset
from dspseg.data.sampling import plan_batches
from dspseg.engine import checkpoint as ckpt
from dspseg.engine.config import TrainConfig
from dspseg.engine.runfolder import RunFolder
from dspseg.engine.runlog import MetricsLog
from dspseg.errors import CheckpointError, DatasetError, UserError


class Assembly:
    """A training run into the folder ``out``, assembled by :meth:`setup` (see the module docstring);
    :class:`~dspseg.engine.trainer.Trainer` adds the loop. UserError for an ``out`` that cannot take it."""

    def __init__(self, data: str | Path, out: str | Path, cfg: TrainConfig, resume: bool = False,
                 console: Any = None) -> None:
        from rich.console import Console

        self.data, self.out, self.cfg, self.resume = Path(data), Path(out), cfg, resume
        self.run = RunFolder(out)
        self.console = console or Console()
        self.run.check_new(resume)

    def setup(self) -> None:
        """Assemble the run: the named steps of the module docstring, in order."""
        self.launch()
        manifest = self.read_dataset()
        state = ckpt.load_checkpoint(self.run.last) if self.resume else None
        if state is not None:
            ckpt.check_complete(state, self.run.last)
            self.check_resume(state, manifest)
        self.build_method(manifest)
        self.build_data(manifest, state)
        model = self.build_model(manifest)
        self.build_optimiser(model)
        self.restore_or_init(state)

    def launch(self) -> None:
        """Threads, Fabric (UserError for an unusable accelerator/devices/precision), ``is_main``."""
        from lightning_fabric import Fabric

        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)  # Trainer.fit restores the previous value
        try:
            self.fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                                 precision=cfg.precision)
        except (ValueError, RuntimeError, TypeError) as e:
            raise UserError(f"cannot use accelerator={cfg.accelerator!r}, devices={cfg.devices!r}, "
                            f"num_nodes={cfg.num_nodes}, "
                            f"precision={cfg.precision!r}: {(str(e).strip() or type(e).__name__).splitlines()[0]}") from None
        self.fabric.launch()
        self.is_main = self.fabric.is_global_zero  # rank 0 speaks for the run and writes its folder
        if not self.is_main:
            self.console.quiet = True  # also silences the command's own lines

    def read_dataset(self) -> Any:
        """The manifest ``dspseg validate`` parsed (parsed once): DatasetError on errors, a note on warnings."""
        from dspseg.data.validate import validate_dataset

        report = validate_dataset(self.data)
        if not report.ok:
            first = "; ".join(str(p) for p in report.errors[:3])
            raise DatasetError(f"{self.data} has {len(report.errors)} problem(s), e.g. {first}. "
                               f"Run `dspseg validate {self.data}` for the full list")
        if report.warnings:
            self.console.print(f"note: {len(report.warnings)} warning(s) about {self.data}; "
                               f"`dspseg validate {self.data}` lists them", highlight=False)
        return report.manifest  # complete: a manifest that did not parse whole is an error

    def check_resume(self, state: dict[str, Any], manifest: Any) -> None:
        """CheckpointError when ``config.yaml`` (with the flags) or the dataset differ from ``last.pt``."""
        cfg = self.cfg
        ckpt.check_agreement(state, self.run.last, f"{self.run.config} (with the flags given)", "restore "
                             "config.yaml to the checkpoint's values, or start a new run with a new --out",
                             method=cfg.method, head=ckpt.method_head(cfg.method), width=cfg.width, levels=cfg.levels)
        ckpt.check_agreement(state, self.run.last, f"the dataset {self.data}", "resume with the dataset the run "
                             "was trained on, or start a new run with a new --out", classes=list(manifest.classes))

    def build_method(self, manifest: Any) -> None:
        """``self.method`` from ``cfg.method`` and its options; ``cfg.method_options`` fully resolved."""
        from dspseg.methods import get_method

        self.classes = list(manifest.classes)
        method_cls = get_method(self.cfg.method)
        self.method = method_cls(method_cls.Options.model_validate(self.cfg.method_options),
                                 n_classes=manifest.n_classes, ignore_index=manifest.ignore_index)
        self.cfg = self.cfg.model_copy(update={"method_options": self.method.options.model_dump(mode="json")})

    def build_data(self, manifest: Any, state: dict[str, Any] | None) -> None:
        """Train and val sets, the batch plan, the step budget ``total``; DatasetError if unusable."""
        cfg = self.cfg
        norm = Normalisation.from_dict(state["normalisation"]) if state else None
        self.console.print(f"reading {self.data} ...")
        self.train_set = SegmentationDataset(manifest, "train", normalisation=norm, crop_size=cfg.crop_size)
        if len(self.train_set) == 0:
            raise DatasetError(f"{self.data} has no training images (records with split 'train')")
        self.val_set = SegmentationDataset(manifest, "val", normalisation=self.train_set.normalisation,
                                           crop_size=None, derive_weak=False)
        notes = self.train_set.notes + self.val_set.notes
        for note in notes[:5]:
            self.console.print(f"note: {note}", highlight=False, soft_wrap=True)
        if len(notes) > 5:
            self.console.print(f"note: {len(notes) - 5} more like these; `dspseg validate {self.data}` lists them all",
                               highlight=False)
        kinds = self.train_set.kinds()
        self.plan = plan_batches(kinds, self.method.uses, cfg.batch_size, cfg.seed, cfg.mask_share,
                                 rank=self.fabric.global_rank, world_size=self.fabric.world_size)
        if not self.plan.indices:
            have = {k: kinds.count(k) for k in sorted(set(kinds))}
            raise DatasetError(f"method '{cfg.method}' learns from {sorted(self.method.uses)} annotations but the "
                               f"training images of {self.data} have {have}; choose another --method")
        self.check_trainable()
        note = self.plan.describe(cfg.mask_share)
        if note:
            self.console.print(note)
        self.batches_per_epoch = self.plan.batches_per_epoch
        self.total = (cfg.steps if cfg.steps is not None
                      else max(1, cfg.epochs * self.batches_per_epoch // cfg.accumulate))

    def check_trainable(self) -> None:
        """DatasetError when the training images annotate fewer than two classes: with none, every loss
        is 0; with one, the network learns to answer that class everywhere (and scores Dice 1.000)."""
        found = sorted(self.train_set.annotated_classes())
        if len(found) >= 2:
            return
        ii = self.train_set.ignore_index
        if not found:
            raise DatasetError(f"the training images of {self.data} annotate nothing (every mask pixel is ignore_index "
                               f"{ii}, and no record has boxes, points or labels), so there is nothing to learn; "
                               f"annotate some pixels, or check 'ignore_index' in dataset.json and the mask values")
        name = self.train_set.classes[found[0]]
        raise DatasetError(f"the training images of {self.data} annotate a single class ('{name}'; every other "
                           f"pixel is ignore_index {ii} or unannotated), so the network could only learn to answer "
                           f"'{name}' everywhere; annotate at least one more class (often the background), or "
                           "check the masks' values against 'classes'")

    def build_model(self, manifest: Any) -> torch.nn.Module:
        """The seeded model (global RNGs seeded here), the method's auxiliary heads included."""
        from dspseg.models import build_model

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        model = build_model(self.train_set.in_channels, manifest.n_classes, width=cfg.width,
                            head=self.method.head, levels=cfg.levels, aux_heads=self.method.aux_heads,
                            **self.method.head_kwargs())
        self.model_args = {"width": cfg.width, "levels": cfg.levels, "head": self.method.head,
                           "head_kwargs": self.method.head_kwargs(), "aux_heads": sorted(model.aux)}
        return model

    def build_optimiser(self, model: torch.nn.Module) -> None:
        """AdamW over every weight; Fabric sets up ``self.model`` (wrapped) and ``self.optimizer``."""
        cfg = self.cfg
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.model, self.optimizer = self.fabric.setup(model, optimizer)
        self.raw_model = self.model.module

    def restore_or_init(self, state: dict[str, Any] | None) -> None:
        """Resume from ``state`` (the run's last.pt) exactly, or start at step 0 (from ``--init``'s weights)."""
        self.step, self.best_metric, self.best_step = 0, None, None
        self.metrics = MetricsLog(self.run.metrics)
        if state is None:
            if self.cfg.init:
                self._init_from(RunFolder(self.cfg.init))
            return
        try:
            self.raw_model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.method.load_state_dict(state.get("method_state") or {})
            rng = state["rng"]
        except (RuntimeError, KeyError, TypeError, ValueError) as e:  # weights of another model, no optimiser
            raise CheckpointError(f"{self.run.last} does not fit the run its config.yaml describes ({type(e).__name__}: "
                                  "weights, optimiser or method state); it was changed after training: "
                                  f"{ckpt.OTHER}") from None
        self.step = int(state["step"])
        self.best_metric, self.best_step = state.get("best_metric"), state.get("best_step")
        ckpt.set_rng_state(rng)
        self.metrics.load(up_to_step=self.step)
        self.console.print(f"resuming {self.out} at step {self.step}")

    def _init_from(self, run: RunFolder) -> None:
        path = run.init_checkpoint()
        loaded, skipped = ckpt.load_weights_into(self.raw_model, ckpt.load_checkpoint(path)["model"])
        if not loaded:
            raise UserError(f"--init {run.root}: no tensor of {path} fits this model (different width or levels?)")
        note = f"init: {len(loaded)} tensors from {path}"
        if skipped:
            note += f"; left as initialised ({len(skipped)}): " + ", ".join(skipped[:4]) + (" ..." if len(skipped) > 4 else "")
        self.console.print(note)
