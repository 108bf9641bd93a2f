"""The run folder that explains itself: one home for every path in it.

    RUN/
      config.yaml        the fully resolved TrainConfig (re-run with --config RUN/config.yaml)
      env.json           versions, git commit, seed, machine, threads, accelerator
      metrics.csv        one row per logged step: step, epoch, every loss term, loss, lr,
                         val_mean_dice and val_dice_<class> at validation steps, elapsed_s
      progress.png       loss terms and validation Dice over steps
      checkpoints/       last.pt (resume) and best.pt (best validation mean Dice; the final model
                         without a val split)
      eval/<split>.json  written by `dspseg evaluate`
      result.json        a sweep run's result row (written last: the run is done)
      .dspseg.lock       held by the one process writing the run (:meth:`RunFolder.lock`)

Every module that reads or writes one of these takes its path from :class:`RunFolder`; the
contents are described where they are written (:mod:`~dspseg.engine.runlog`,
:mod:`~dspseg.engine.checkpoint`, :mod:`~dspseg.engine.evaluate`, :mod:`~dspseg.study.runner`).

    >>> run = RunFolder("runs/basic")
    >>> str(run.checkpoint("last")), str(run.eval_json("test"))
    ('runs/basic/checkpoints/last.pt', 'runs/basic/eval/test.json')
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from dspseg.errors import CheckpointError, UserError
from dspseg.fslock import check_free, entries, folder_lock

#: the checkpoints a run keeps: ``last`` to resume, ``best`` for evaluation, prediction and export
CHECKPOINTS = ("best", "last")


class _Entry:
    """A fixed path inside the run folder: ``RunFolder(root).<name>`` is ``root / relative``
    (``RunFolder.<name>`` itself is the relative path)."""

    def __init__(self, relative: str) -> None:
        self.relative = Path(relative)

    def __get__(self, run: RunFolder | None, owner: type) -> Path:
        return self.relative if run is None else run.root / self.relative


class RunFolder:
    """The paths of the run folder ``root`` (nothing is created or read until asked)."""

    config = _Entry("config.yaml")
    env = _Entry("env.json")
    metrics = _Entry("metrics.csv")
    progress = _Entry("progress.png")
    checkpoints = _Entry("checkpoints")
    last = _Entry("checkpoints/last.pt")
    best = _Entry("checkpoints/best.pt")
    result = _Entry("result.json")  # a sweep run's result row

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    @property
    def name(self) -> str:
        return self.root.name

    def checkpoint(self, which: str) -> Path:
        """``RUN/checkpoints/<which>.pt``, ``which`` in :data:`CHECKPOINTS` (CheckpointError otherwise)."""
        if which not in CHECKPOINTS:
            raise CheckpointError(f"checkpoint must be 'best' or 'last', got {which!r}")
        return self.last if which == "last" else self.best

    def eval_json(self, split: str) -> Path:
        """``RUN/eval/<split>.json``: the scores ``dspseg evaluate`` writes."""
        return self.root / "eval" / f"{split}.json"

    def existing_checkpoint(self, which: str = "best") -> Path:
        """The ``which`` checkpoint of a finished (or interrupted) run; CheckpointError if missing."""
        path = self.checkpoint(which)
        if not self.root.is_dir():
            raise CheckpointError(f"the run folder {self.root} does not exist; give the --out folder of a "
                                  "`dspseg train` run")
        if not path.is_file():
            raise CheckpointError(f"{self.root} has no checkpoints/{which}.pt; is it a dspseg run folder, and did "
                                  "training reach its first checkpoint?")
        return path

    def init_checkpoint(self) -> Path:
        """The weights ``--init RUN`` starts from: ``best.pt``, else ``last.pt`` (CheckpointError if neither)."""
        return self.best if self.best.is_file() else self.existing_checkpoint("last")

    def can_resume(self) -> bool:
        """Whether the folder holds what ``--resume`` needs: ``checkpoints/last.pt`` and ``config.yaml``."""
        return self.last.is_file() and self.config.is_file()

    def check_resumable(self) -> None:
        """UserError unless :meth:`can_resume`; FolderLockedError while another process writes the run."""
        if _writing_rank():
            check_free(self.root)
        if not self.can_resume():
            raise UserError(f"nothing to resume in {self.root}: it has no checkpoints/last.pt and config.yaml; "
                            "give the --out folder of an earlier run, or drop --resume to start a new one")

    def lock(self) -> AbstractContextManager:
        """Hold the run folder for one writer (:func:`dspseg.fslock.folder_lock`, re-entrant): ``train``
        and a sweep's run take it for their whole work; a second writer gets FolderLockedError naming
        the first. Under ``torch.distributed`` only rank 0 writes the folder, so only rank 0 locks it."""
        if not _writing_rank():
            return nullcontext(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--out {self.root} is a file; give a folder for the run")
        return folder_lock(self.root)

    def check_new(self, resume: bool) -> None:
        """UserError if the folder cannot take a run: a file, or (unless ``resume``) a non-empty folder
        (its lock files do not count); FolderLockedError while another process writes it (the other
        ranks of a distributed run do not check: rank 0, which holds the lock, started them)."""
        if _writing_rank():
            check_free(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"--out {self.root} is a file; give a folder for the run")
        if not resume and entries(self.root):
            raise UserError(f"the run folder {self.root} is not empty; choose a new --out folder, or add --resume "
                            "to continue the run saved there")


def _writing_rank() -> bool:
    """Whether this process writes run folders: rank 0 of a ``torch.distributed`` job, or the only process."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("", "0")
