"""The training loop, on Lightning Fabric (one code path for CPU, one GPU, several GPUs, mixed precision).

    >>> cfg = resolve_config(flags={"steps": 200, "width": 16})
    >>> result = train(data="synthetic/", out="runs/basic", cfg=cfg)        # doctest: +SKIP
    >>> result.best_metric                                                  # doctest: +SKIP

One step: a batch from the in-memory training set (random crops; the batch policy of
:mod:`dspseg.data.sampling`) → ``method.step(model, batch)`` → named loss terms → their sum is
back-propagated → AdamW (paper defaults: lr 6e-5, betas (0.9, 0.999), weight decay 0.01, constant
learning rate). Every ``val_every`` steps (and at the end) the model is evaluated on the ``val``
split (whole images, mean Dice over classes), ``checkpoints/last.pt`` is written, and
``checkpoints/best.pt`` when the mean Dice improved (without a val split, best.pt is the final
model). Loss values stay on the device between checks: on the CPU every step is checked for
non-finite terms, elsewhere every ``log_every`` steps (one synchronisation), always before saving,
so a NaN never reaches a checkpoint. A volume chunk that cannot be read (the network drops, a
corrupt chunk; :class:`~dspseg.errors.VolumeReadError`, also from a data loader worker:
:mod:`~dspseg.engine.worker_errors`) stops the run with one sentence and the fix; last.pt stays as it
was, to resume from. Every path comes from :class:`~dspseg.engine.runfolder.RunFolder`.

The loop as named steps: :meth:`Trainer.setup` assembles the run (:mod:`dspseg.engine.assembly`),
then per step :meth:`~Trainer.train_step` (``accumulate`` micro-batches) and, when due,
:meth:`~Trainer.check_finite`, :meth:`~Trainer.maybe_validate`, :meth:`~Trainer.log` and
:meth:`~Trainer.maybe_checkpoint`. ``is_main`` (rank 0) alone validates, prints and writes.

Exact resume: the data order and the crops are pure functions of (seed, epoch, position), the
checkpoint holds model, optimiser, method state, the global RNG states and the number of batches
consumed, and the data loader draws from its own generator; so N steps + ``--resume`` N steps gives
the weights of 2N steps (bitwise on the CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from dspseg import __version__
from dspseg.data.batch import collate
from dspseg.engine import checkpoint as ckpt
from dspseg.engine.assembly import Assembly
from dspseg.engine.config import TrainConfig, check_resume_changes, read_yaml, resolve_config
from dspseg.engine.evaluate import dice_on_dataset
from dspseg.engine.runfolder import RunFolder
from dspseg.engine.runlog import LossWindow, Reporter, environment, plot_progress, write_config, write_env
from dspseg.engine.worker_errors import CarryErrors, collate_carrying, raise_failed
from dspseg.errors import TrainingError, VolumeReadError
from dspseg.fslock import entries


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
    stopped: bool = False  # stopped early by ``on_step`` (last.pt holds the step: continue with resume)


def resolve_run_config(out: str | Path, resume: bool, config: str | Path | None = None,
                       flags: dict[str, Any] | None = None, sets: list[str] | None = None) -> TrainConfig:
    """The configuration of a new run, or of a resumed one (its ``config.yaml`` + allowed changes)."""
    if not resume:
        return resolve_config(config, flags, sets)
    run = RunFolder(out)
    run.check_resumable()
    saved = resolve_config(base=read_yaml(run.config))
    cfg = resolve_config(config, flags, sets, base=saved.model_dump(mode="json"))
    check_resume_changes(saved, cfg)
    return cfg


#: ``on_step(step, total, row)`` after every step; ``row`` is the metrics row when the step was logged
#: (else None); a true return stops the run there, resumable (:meth:`Trainer.stop_here`)
OnStep = Callable[[int, int, "dict[str, Any] | None"], "bool | None"]


class Trainer(Assembly):
    """One training run into the folder ``out``: :meth:`setup` assembles it (:mod:`~dspseg.engine.assembly`),
    :meth:`fit` runs it (see the module docstring). ``on_step`` (:data:`OnStep`) lets a user interface
    follow the run and stop it (the napari plugin's Train widget)."""

    on_step: OnStep | None = None

    # ------------------------------------------------------------------------------------ steps

    def loader(self) -> torch.utils.data.DataLoader:
        """Batches from the current step on (``step · accumulate`` micro-batches already consumed)."""
        on_gpu = self.fabric.device.type == "cuda"
        workers = self.cfg.num_workers if self.cfg.num_workers is not None else (2 if on_gpu else 0)
        # a read error in a worker comes back as itself, not as torch's traceback text (worker_errors)
        return torch.utils.data.DataLoader(
            CarryErrors(self.train_set), batch_sampler=self.plan.sampler(start_batch=self.step * self.cfg.accumulate),
            num_workers=workers, pin_memory=on_gpu, generator=torch.Generator(), persistent_workers=workers > 0,
            collate_fn=partial(collate_carrying, collate=partial(collate, ignore_index=self.train_set.ignore_index)))

    def train_step(self, batches: Any) -> dict[str, torch.Tensor]:
        """One optimiser step from ``accumulate`` micro-batches; the terms averaged over them (on the device)."""
        k, fabric = self.cfg.accumulate, self.fabric
        self.optimizer.zero_grad(set_to_none=True)
        micro_terms = []
        for micro in range(k):
            batch = fabric.to_device(raise_failed(next(batches)))
            with fabric.no_backward_sync(self.model, enabled=micro < k - 1):
                terms = self.method.step(self.model, batch)
                fabric.backward(sum(terms.values()) / k)
            micro_terms.append(terms)
        self.optimizer.step()
        self.step += 1
        return {n: sum(t[n].detach() for t in micro_terms) / k for n in micro_terms[0]}

    def due_validation(self) -> bool:
        return self.step == self.total or (self.cfg.val_every > 0 and self.step % self.cfg.val_every == 0)

    def due_log(self) -> bool:
        return self.due_validation() or self.step % self.cfg.log_every == 0

    def check_finite(self) -> None:
        """Bring the window's loss values to the host; TrainingError on the first non-finite one."""
        bad = self.losses.check(self.step)
        if bad is None:
            return
        step, name, value = bad
        if self.is_main:
            self.metrics.flush()
        kept = self.run.last
        kept_note = f"the last good checkpoint {kept} was kept" if kept.is_file() else "no checkpoint had been written yet"
        raise TrainingError(f"training stopped at step {step}: the loss term '{name}' is {value} (not finite); "
                            f"{kept_note}. Try a lower learning rate (--set lr=...) or --precision 32-true")

    def loss_row(self) -> dict[str, Any]:
        """A metrics row of the steps since the last one: step, epoch, mean terms, loss, lr."""
        values = self.losses.take()
        row: dict[str, Any] = {"step": self.step,
                               "epoch": round(self.step * self.cfg.accumulate / self.batches_per_epoch, 3)}
        row.update({n: float(v) for n, v in zip(self.losses.names, values.mean(0))})
        row["loss"] = float(values.sum(1).mean())
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        return row

    def maybe_validate(self, row: dict[str, Any]) -> None:
        """At validation steps: val mean Dice and Dice per class into ``row``; track the best."""
        if not self.due_validation():
            return
        if len(self.val_set) and self.is_main:
            res = dice_on_dataset(self.raw_model, self.val_set, tile=self.cfg.tile, batch_size=self.cfg.batch_size,
                                  autocast=self.fabric.autocast)
            row["val_mean_dice"] = res.mean
            row.update({f"val_dice_{c}": float(v) for c, v in zip(self.classes, res.per_class)})
        score = row.get("val_mean_dice")
        if score is not None and math.isfinite(score) and (self.best_metric is None or score > self.best_metric):
            self.best_metric, self.best_step = float(score), self.step

    def log(self, row: dict[str, Any]) -> None:
        """Stamp the elapsed time on ``row``; metrics.csv (in memory) and the console get it."""
        row["elapsed_s"] = round(self.elapsed0 + time.perf_counter() - self.t0, 3)
        self.metrics.log(row)
        self.reporter.update(self.step, row)

    def maybe_checkpoint(self, row: dict[str, Any]) -> None:
        """Rank 0: at validation steps last.pt (best.pt when the Dice improved) and progress.png; metrics.csv."""
        if not self.is_main:
            return
        if self.due_validation():
            self.save(best=row.get("val_mean_dice") is not None and self.best_step == self.step)
            self.metrics.flush()
            plot_progress(self.metrics, self.run.progress, title=f"{self.cfg.method} — {self.run.name}")
        else:
            self.metrics.flush()

    def state(self, full: bool) -> dict[str, Any]:
        """The checkpoint (see :mod:`dspseg.engine.checkpoint`); ``full=False`` leaves out what only resuming needs."""
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

    def save(self, best: bool) -> None:
        """Rank 0: ``last.pt`` (full state), and ``best.pt`` (inference state) when ``best``."""
        if not self.is_main:
            return
        ckpt.save_checkpoint(self.state(full=True), self.run.last)
        if best:
            ckpt.save_checkpoint(self.state(full=False), self.run.best)

    # ------------------------------------------------------------------------------------ loop

    def fit(self) -> TrainResult:
        """Set up, train to the step budget, validate, checkpoint; return where the run stands.

        ``threads`` changes torch's thread count only while training (restored afterwards).
        """
        threads = torch.get_num_threads()
        try:
            t_start = time.perf_counter()
            self.setup()
            return self._train(t_start)
        except VolumeReadError as e:  # the network dropped, a chunk is corrupt: one sentence, last.pt as it was
            raise e.but(then=self.how_to_go_on()) from None
        finally:
            torch.set_num_threads(threads)

    def how_to_go_on(self) -> str:
        """How to continue after a stop that left the run folder as it was (after the fix)."""
        if self.run.can_resume():
            again = "run the same command again" if self.resume else "run it again with --resume"
            return f"then {again}: training continues from {self.run.last}, which was kept"
        if entries(self.run.root):
            return "then run it again into a new --out folder (no checkpoint had been written yet)"
        return "then run the same command again"

    def _train(self, t_start: float) -> TrainResult:
        cfg = self.cfg
        if self.is_main:
            self.run.root.mkdir(parents=True, exist_ok=True)
            write_config(self.run, cfg)
            write_env(self.run, environment(cfg, self.fabric.device.type, torch.get_num_threads()))
        self.elapsed0 = float(self.metrics.rows[-1].get("elapsed_s", 0.0)) if self.metrics.rows else 0.0
        if self.step >= self.total:
            self.console.print(f"{self.out} already reached {self.step} steps; raise --steps to train further")
            return self._result(self.elapsed0)
        check_every = 1 if self.fabric.device.type == "cpu" else cfg.log_every
        self.reporter = Reporter(self.console, self.total, self.step, cfg.log_every)
        self.losses = LossWindow(first_step=self.step + 1)
        self.t0 = time.perf_counter()
        self.model.train()
        batches = iter(self.loader())
        try:
            while self.step < self.total:
                self.losses.add(self.train_step(batches))
                self.reporter.tick(self.step)
                if self.due_log() or self.step % check_every == 0:
                    self.check_finite()
                row = None
                if self.due_log():
                    row = self.loss_row()
                    self.maybe_validate(row)
                    self.log(row)
                    self.maybe_checkpoint(row)
                if self.on_step is not None and self.on_step(self.step, self.total, row) and self.step < self.total:
                    self.stop_here(row)
                    self.console.print(f"stopped at step {self.step} of {self.total}; {self.run.last} holds it "
                                       "(continue with --resume)", highlight=False, soft_wrap=True)
                    return self._result(self.elapsed0 + time.perf_counter() - self.t0, stopped=True)
        finally:
            self.reporter.close()
        if self.best_metric is None and self.is_main:  # no val split (or no countable class)
            self.best_step = self.step
            self.save(best=True)
        self.fabric.barrier()
        result = self._result(self.elapsed0 + time.perf_counter() - self.t0)
        self.console.print(f"done: {self.step} steps in {time.perf_counter() - t_start:.1f} s; "
                           + (f"best val mean Dice {self.best_metric:.3f} at step {self.best_step}"
                              if self.best_metric is not None else "no val split: best.pt is the final model"))
        return result

    def stop_here(self, row: dict[str, Any] | None) -> None:
        """Stop before the step budget, resumable: the steps not yet logged become a metrics row, and
        ``last.pt`` (full state at this step, checked finite) and progress.png are written."""
        if self.losses.window:
            self.check_finite()
        if row is None and self.losses.pending:
            row = self.loss_row()
            self.log(row)
        if self.is_main:
            self.save(best=False)
            self.metrics.flush()
            plot_progress(self.metrics, self.run.progress, title=f"{self.cfg.method} — {self.run.name}")

    def _result(self, elapsed: float, stopped: bool = False) -> TrainResult:
        return TrainResult(self.out, self.step, self.best_metric, self.best_step, self.run.last, self.run.best, elapsed,
                           stopped)


def train(data: str | Path, out: str | Path, cfg: TrainConfig, resume: bool = False, console: Any = None,
          on_step: OnStep | None = None) -> TrainResult:
    """Train ``cfg.method`` on ``data`` into the run folder ``out`` (see :class:`Trainer`), holding the
    folder's lock throughout (:meth:`RunFolder.lock`: a second writer is refused with one sentence).
    ``on_step``: see :data:`OnStep`."""
    with RunFolder(out).lock():
        trainer = Trainer(data, out, cfg, resume=resume, console=console)
        trainer.on_step = on_step
        return trainer.fit()
