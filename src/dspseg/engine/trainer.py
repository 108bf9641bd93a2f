"""The training loop, on Lightning Fabric (one code path for CPU, one GPU, several GPUs, mixed precision).

    >>> cfg = resolve_config(flags={"steps": 200, "width": 16})
    >>> result = train(data="synthetic/", out="runs/basic", cfg=cfg)        # doctest: +SKIP
    >>> result.best_metric                                                  # doctest: +SKIP

One step: a batch from the in-memory training set (random crops; the batch policy of
:mod:`dspseg.methods.base`) → ``method.step(model, batch)`` → named loss terms → their sum is
back-propagated → AdamW (paper defaults: lr 6e-5, betas (0.9, 0.999), weight decay 0.01, constant
learning rate). Every ``val_every`` steps (and at the end) the model is evaluated on the ``val``
split (whole images, mean Dice over classes), ``checkpoints/last.pt`` is written, and
``checkpoints/best.pt`` when the mean Dice improved (without a val split, best.pt is the final
model). Loss values stay on the device between checks: on the CPU every step is checked for
non-finite terms, elsewhere every ``log_every`` steps (one synchronisation), always before saving,
so a NaN never reaches a checkpoint.

Exact resume: the data order and the crops are pure functions of (seed, epoch, position), the
checkpoint holds model, optimiser, method state, the global RNG states and the number of batches
consumed, and the data loader draws from its own generator; so N steps + ``--resume`` N steps gives
the weights of 2N steps (bitwise on the CPU).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dspseg import __version__
from dspseg.data.dataset import Normalisation, SegmentationDataset, collate
from dspseg.data.sampling import EpochBatchSampler
from dspseg.errors import DatasetError, TrainingError, UserError
from dspseg.engine import checkpoint as ckpt
from dspseg.engine.config import TrainConfig, check_resume_changes, read_yaml, resolve_config
from dspseg.engine.evaluate import dice_on_dataset
from dspseg.engine.runlog import MetricsLog, Reporter, environment, plot_progress, write_config, write_env


@dataclass
class TrainResult:
    """Where a finished run stands."""

    out: Path
    step: int
    best_metric: float | None
    best_step: int | None
    last_checkpoint: Path
    best_checkpoint: Path
    elapsed_s: float


def resolve_run_config(out: str | Path, resume: bool, config: str | Path | None = None,
                       flags: dict[str, Any] | None = None, sets: list[str] | None = None) -> TrainConfig:
    """The configuration of a new run, or of a resumed one (its ``config.yaml`` + allowed changes)."""
    out = Path(out)
    if not resume:
        return resolve_config(config, flags, sets)
    saved_file = out / "config.yaml"
    if not (out / "checkpoints" / "last.pt").is_file() or not saved_file.is_file():
        raise UserError(f"nothing to resume in {out}: it has no checkpoints/last.pt and config.yaml; "
                        "give the --out folder of an earlier run, or drop --resume to start a new one")
    saved = resolve_config(base=read_yaml(saved_file))
    cfg = resolve_config(config, flags, sets, base=saved.model_dump(mode="json"))
    check_resume_changes(saved, cfg)
    return cfg


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the run")
    if not resume and out.is_dir() and any(out.iterdir()):
        raise UserError(f"the run folder {out} is not empty; choose a new --out folder, or add --resume to "
                        "continue the run saved there")


class Trainer:
    """One training run into the folder ``out`` (see the module docstring); :meth:`fit` runs it."""

    def __init__(self, data: str | Path, out: str | Path, cfg: TrainConfig, resume: bool = False,
                 console: Any = None) -> None:
        from rich.console import Console

        self.data, self.out, self.cfg, self.resume = Path(data), Path(out), cfg, resume
        self.console = console or Console()
        _check_out(self.out, resume)

    # ------------------------------------------------------------------------------------ setup

    def _setup(self) -> None:
        from lightning_fabric import Fabric

        from dspseg.data.manifest import load_manifest
        from dspseg.data.validate import validate_dataset
        from dspseg.methods import get_method
        from dspseg.models import build_model

        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)  # fit() restores the previous value
        try:
            self.fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                                 precision=cfg.precision)
        except (ValueError, RuntimeError, TypeError) as e:
            raise UserError(f"cannot use accelerator={cfg.accelerator!r}, devices={cfg.devices!r}, "
                            f"num_nodes={cfg.num_nodes}, "
                            f"precision={cfg.precision!r}: {str(e).splitlines()[0]}") from None
        self.fabric.launch()
        if not self.fabric.is_global_zero:
            self.console.quiet = True  # one process speaks for the run (also silences the command's own lines)
        report = validate_dataset(self.data)
        if not report.ok:
            first = "; ".join(str(p) for p in report.errors[:3])
            raise DatasetError(f"{self.data} has {len(report.errors)} problem(s), e.g. {first}. "
                               f"Run `dspseg validate {self.data}` for the full list")
        if report.warnings:
            self.console.print(f"note: {len(report.warnings)} warning(s) about {self.data}; "
                               f"`dspseg validate {self.data}` lists them", highlight=False)
        manifest = load_manifest(self.data)
        self.classes = list(manifest.classes)
        method_cls = get_method(cfg.method)
        self.method = method_cls(method_cls.Options.model_validate(cfg.method_options),
                                 n_classes=manifest.n_classes, ignore_index=manifest.ignore_index)
        # config.yaml records every method option, defaults included (fully resolved)
        self.cfg = cfg = cfg.model_copy(update={"method_options": self.method.options.model_dump(mode="json")})
        state = ckpt.load_checkpoint(self.out / "checkpoints" / "last.pt") if self.resume else None
        norm = Normalisation.from_dict(state["normalisation"]) if state else None
        self.console.print(f"reading {self.data} ...")
        self.train_set = SegmentationDataset(manifest, "train", normalisation=norm, crop_size=cfg.crop_size)
        if len(self.train_set) == 0:
            raise DatasetError(f"{self.data} has no training images (records with split 'train')")
        self.val_set = SegmentationDataset(manifest, "val", normalisation=self.train_set.normalisation,
                                           crop_size=None, derive_weak=False)
        usable = self.train_set.indices_of_kinds(self.method.uses)
        if not usable:
            have = {k: self.train_set.kinds().count(k) for k in sorted(set(self.train_set.kinds()))}
            raise DatasetError(f"method '{cfg.method}' learns from {sorted(self.method.uses)} annotations but the "
                               f"training images of {self.data} have {have}; choose another --method")
        self.sampler_args = dict(indices=usable, batch_size=cfg.batch_size, seed=cfg.seed,
                                 rank=self.fabric.global_rank, world_size=self.fabric.world_size)
        usable_set = set(usable)
        masked = [i for i in self.train_set.indices_of_kinds({"mask"}) if i in usable_set]
        if cfg.mask_share > 0 and len(masked) < cfg.mask_share * len(usable):
            # uniform batches would hold fewer masks than asked: k of every batch from the masked images
            k = min(cfg.batch_size - 1, max(1, round(cfg.mask_share * cfg.batch_size)))
            self.sampler_args.update(anchors=masked, anchors_per_batch=k)
            self.console.print(f"batches: {k} of {cfg.batch_size} images from the {len(masked)} masked ones "
                               f"(mask_share {cfg.mask_share:g}), the rest from the other {len(usable) - len(masked)}")
        self.batches_per_epoch = EpochBatchSampler(**self.sampler_args).batches_per_epoch
        self.total = (cfg.steps if cfg.steps is not None
                      else max(1, cfg.epochs * self.batches_per_epoch // cfg.accumulate))

        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        # the method's auxiliary heads (if any) are part of the trained model: optimised and checkpointed
        model = build_model(self.train_set.in_channels, manifest.n_classes, width=cfg.width,
                            head=self.method.head, levels=cfg.levels, aux_heads=self.method.aux_heads,
                            **self.method.head_kwargs())
        self.model_args = {"width": cfg.width, "levels": cfg.levels, "head": self.method.head,
                           "head_kwargs": self.method.head_kwargs(), "aux_heads": sorted(model.aux)}
        if cfg.init and not state:
            self._init_from(model, Path(cfg.init))
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.model, self.optimizer = self.fabric.setup(model, optimizer)
        self.raw_model = self.model.module
        self.step, self.best_metric, self.best_step = 0, None, None
        self.metrics = MetricsLog(self.out / "metrics.csv")
        if state:
            self._restore(state)

    def _init_from(self, model: torch.nn.Module, run: Path) -> None:
        path = run / "checkpoints" / "best.pt"
        path = path if path.is_file() else ckpt.run_checkpoint(run, "last")
        state = ckpt.load_checkpoint(path)
        loaded, skipped = ckpt.load_weights_into(model, state["model"])
        if not loaded:
            raise UserError(f"--init {run}: no tensor of {path} fits this model (different width or levels?)")
        note = f"init: {len(loaded)} tensors from {path}"
        if skipped:
            note += f"; left as initialised ({len(skipped)}): " + ", ".join(skipped[:4]) + (" ..." if len(skipped) > 4 else "")
        self.console.print(note)

    def _restore(self, state: dict[str, Any]) -> None:
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state.get("method_state") or {})
        self.step = int(state["step"])
        self.best_metric, self.best_step = state.get("best_metric"), state.get("best_step")
        ckpt.set_rng_state(state["rng"])
        self.metrics.load(up_to_step=self.step)
        self.console.print(f"resuming {self.out} at step {self.step}")

    # ------------------------------------------------------------------------------------ state

    def _state(self, full: bool) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT, "dspseg_version": __version__,
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict() if full else None,
            "method_state": self.method.state_dict() if full else {},
            "config": self.cfg.model_dump(mode="json"), "step": self.step, "data_position": self.step,
            "best_metric": self.best_metric, "best_step": self.best_step,
            "rng": ckpt.rng_state() if full else None,
            "normalisation": self.train_set.normalisation.to_dict(), "classes": self.classes,
            "ignore_index": self.train_set.ignore_index, "in_channels": self.train_set.in_channels,
            "model_args": self.model_args,
        }

    def _save(self, best: bool) -> None:
        if not self.fabric.is_global_zero:
            return
        ckpt.save_checkpoint(self._state(full=True), self.out / "checkpoints" / "last.pt")
        if best:
            ckpt.save_checkpoint(self._state(full=False), self.out / "checkpoints" / "best.pt")

    # ------------------------------------------------------------------------------------ loop

    def _loader(self) -> torch.utils.data.DataLoader:
        sampler = EpochBatchSampler(**self.sampler_args, start_batch=self.step * self.cfg.accumulate)
        on_gpu = self.fabric.device.type == "cuda"
        workers = self.cfg.num_workers if self.cfg.num_workers is not None else (2 if on_gpu else 0)
        return torch.utils.data.DataLoader(
            self.train_set, batch_sampler=sampler, num_workers=workers,
            collate_fn=partial(collate, ignore_index=self.train_set.ignore_index),
            pin_memory=on_gpu, generator=torch.Generator(), persistent_workers=workers > 0)

    def _validate(self) -> dict[str, float]:
        if len(self.val_set) == 0 or not self.fabric.is_global_zero:
            return {}
        res = dice_on_dataset(self.raw_model, self.val_set, tile=self.cfg.tile, batch_size=self.cfg.batch_size,
                              autocast=self.fabric.autocast)
        row = {"val_mean_dice": res.mean}
        row.update({f"val_dice_{c}": float(v) for c, v in zip(self.classes, res.per_class)})
        return row

    def _check(self, window: list[torch.Tensor], names: list[str], first_step: int) -> np.ndarray:
        """(k, T) term values of the last k steps; TrainingError on the first non-finite one."""
        values = torch.stack(window).cpu().numpy()
        bad = ~np.isfinite(values)
        if bad.any():
            k, t = (int(v[0]) for v in np.nonzero(bad))
            if self.fabric.is_global_zero:
                self.metrics.flush()
            kept = self.out / "checkpoints" / "last.pt"
            kept_note = (f"the last good checkpoint {kept} was kept" if kept.is_file()
                         else "no checkpoint had been written yet")
            raise TrainingError(f"training stopped at step {first_step + k}: the loss term '{names[t]}' is "
                                f"{values[k, t]} (not finite); {kept_note}. Try a lower learning rate "
                                "(--set lr=...) or --precision 32-true")
        return values

    def fit(self) -> TrainResult:
        """Set up, train to the step budget, validate, checkpoint; return where the run stands.

        ``threads`` changes torch's thread count only while training (restored afterwards).
        """
        threads = torch.get_num_threads()
        try:
            return self._fit()
        finally:
            torch.set_num_threads(threads)

    def _fit(self) -> TrainResult:
        t_start = time.perf_counter()
        self._setup()
        cfg, fabric = self.cfg, self.fabric
        if fabric.is_global_zero:
            self.out.mkdir(parents=True, exist_ok=True)
            write_config(self.out, cfg)
            write_env(self.out, environment(cfg, fabric.device.type, torch.get_num_threads()))
        elapsed0 = float(self.metrics.rows[-1].get("elapsed_s", 0.0)) if self.metrics.rows else 0.0
        if self.step >= self.total:
            self.console.print(f"{self.out} already reached {self.step} steps; raise --steps to train further")
            return self._result(elapsed0)
        check_every = 1 if fabric.device.type == "cpu" else cfg.log_every
        reporter = Reporter(self.console, self.total, self.step, cfg.log_every)
        names: list[str] = []
        window: list[torch.Tensor] = []
        pending: list[np.ndarray] = []
        window_start = self.step + 1
        t0 = time.perf_counter()
        self.model.train()
        loader = iter(self._loader())
        try:
            while self.step < self.total:
                k = cfg.accumulate
                self.optimizer.zero_grad(set_to_none=True)
                micro_terms = []
                for micro in range(k):  # gradient accumulation: k micro-batches per optimiser step
                    batch = fabric.to_device(next(loader))
                    with fabric.no_backward_sync(self.model, enabled=micro < k - 1):
                        terms = self.method.step(self.model, batch)
                        fabric.backward(sum(terms.values()) / k)
                    micro_terms.append(terms)
                if not names:
                    names = list(micro_terms[0])
                terms = {n: sum(t[n].detach() for t in micro_terms) / k for n in names}
                self.optimizer.step()
                self.step += 1
                reporter.tick(self.step)
                window.append(torch.stack([t.detach().float() for t in terms.values()]))
                validate = self.step == self.total or (cfg.val_every > 0 and self.step % cfg.val_every == 0)
                log = validate or self.step % cfg.log_every == 0
                if log or self.step % check_every == 0:
                    pending.append(self._check(window, names, window_start))
                    window, window_start = [], self.step + 1
                if not log:
                    continue
                values = np.concatenate(pending)
                pending = []
                row: dict[str, Any] = {"step": self.step,
                                       "epoch": round(self.step * cfg.accumulate / self.batches_per_epoch, 3)}
                row.update({n: float(v) for n, v in zip(names, values.mean(0))})
                row["loss"] = float(values.sum(1).mean())
                row["lr"] = self.optimizer.param_groups[0]["lr"]
                if validate:
                    row.update(self._validate())
                    self._track_best(row)
                row["elapsed_s"] = round(elapsed0 + time.perf_counter() - t0, 3)
                self.metrics.log(row)
                reporter.update(self.step, row)
                if validate and fabric.is_global_zero:
                    self._save(best=row.get("val_mean_dice") is not None and self.best_step == self.step)
                    self.metrics.flush()
                    plot_progress(self.metrics, self.out / "progress.png", title=f"{cfg.method} — {self.out.name}")
                elif fabric.is_global_zero:
                    self.metrics.flush()
        finally:
            reporter.close()
        if self.best_metric is None and fabric.is_global_zero:  # no val split (or no countable class)
            self.best_step = self.step
            self._save(best=True)
        fabric.barrier()
        result = self._result(elapsed0 + time.perf_counter() - t0)
        self.console.print(f"done: {self.step} steps in {time.perf_counter() - t_start:.1f} s; "
                           + (f"best val mean Dice {self.best_metric:.3f} at step {self.best_step}"
                              if self.best_metric is not None else "no val split: best.pt is the final model"))
        return result

    def _track_best(self, row: dict[str, Any]) -> None:
        score = row.get("val_mean_dice")
        if score is None or not math.isfinite(score):
            return
        if self.best_metric is None or score > self.best_metric:
            self.best_metric, self.best_step = float(score), self.step

    def _result(self, elapsed: float) -> TrainResult:
        return TrainResult(self.out, self.step, self.best_metric, self.best_step,
                           self.out / "checkpoints" / "last.pt", self.out / "checkpoints" / "best.pt", elapsed)


def train(data: str | Path, out: str | Path, cfg: TrainConfig, resume: bool = False, console: Any = None) -> TrainResult:
    """Train ``cfg.method`` on ``data`` into the run folder ``out`` (see :class:`Trainer`)."""
    return Trainer(data, out, cfg, resume=resume, console=console).fit()
