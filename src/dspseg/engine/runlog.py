"""What a run folder says about its run: ``config.yaml``, ``env.json``, ``metrics.csv``, ``progress.png``,
and the console lines and loss checks behind them (the paths: :class:`~dspseg.engine.runfolder.RunFolder`).

``metrics.csv`` holds one row per logged step: step, epoch, every loss term, loss, lr,
val_mean_dice and val_dice_<class> at validation steps, elapsed_s. It is kept in memory and
rewritten atomically at every log or validation interval (a few thousand rows at most), so it is
never half-written and a resumed run continues it cleanly (rows after the checkpoint's step are
dropped). Loss values wait on the device in a :class:`LossWindow` until they are checked or logged.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dspseg.engine.config import TrainConfig, config_to_yaml
from dspseg.engine.runfolder import RunFolder
from dspseg.fsutil import atomic_write, write_text_atomic

PACKAGES = ("torch", "numpy", "scipy", "lightning-fabric", "pydantic", "typer", "pyyaml", "rich",
            "tifffile", "imageio", "connected-components-3d", "matplotlib")


def write_config(run: RunFolder, cfg: TrainConfig) -> Path:
    """``RUN/config.yaml``: the resolved configuration (re-run with ``--config RUN/config.yaml``)."""
    return write_text_atomic(run.config, config_to_yaml(cfg))


def git_commit() -> str | None:
    """``git rev-parse HEAD`` run in the folder of the dspseg package, or None (not a checkout, no git)."""
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = res.stdout.strip()
    return commit if res.returncode == 0 and commit else None


def environment(cfg: TrainConfig, accelerator: str, threads: int) -> dict[str, Any]:
    """What ran and where: versions, git commit, seed, host, CPU count, threads, accelerator."""
    from dspseg import __version__

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "dspseg": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "seed": cfg.seed,
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "accelerator": accelerator,
        "precision": cfg.precision,
        "command": sys.argv,
    }


def write_env(run: RunFolder, env: dict[str, Any]) -> Path:
    """``RUN/env.json``: :func:`environment`."""
    return write_text_atomic(run.env, json.dumps(env, indent=1) + "\n")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


class MetricsLog:
    """Rows of ``metrics.csv`` kept in memory; :meth:`flush` rewrites the file atomically.

    Columns: ``step, epoch``, the loss terms in the order first seen, ``loss, lr``, the validation
    columns, ``elapsed_s``. A row may leave columns empty (validation columns between validations).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = ["step", "epoch"]

    def _add_columns(self, row: dict[str, Any]) -> None:
        for key in row:
            if key not in self.columns:
                self.columns.append(key)
        head = [c for c in self.columns if c in ("step", "epoch")]
        tail = [c for c in ("loss", "lr") if c in self.columns]
        val = [c for c in self.columns if c.startswith("val_")]
        terms = [c for c in self.columns if c not in head + tail + val + ["elapsed_s"]]
        end = ["elapsed_s"] if "elapsed_s" in self.columns else []
        self.columns = head + terms + tail + val + end

    def log(self, row: dict[str, Any]) -> None:
        """Add a row (or merge into the last one when it has the same step)."""
        self._add_columns(row)
        if self.rows and self.rows[-1].get("step") == row.get("step"):
            self.rows[-1].update(row)
        else:
            self.rows.append(dict(row))

    def flush(self) -> None:
        """Rewrite the CSV file (atomically) with every row so far."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([_cell(row.get(c)) for c in self.columns])
        write_text_atomic(self.path, buf.getvalue())

    def load(self, up_to_step: int) -> None:
        """Read an existing file (resume), keeping only rows with ``step <= up_to_step``."""
        if not self.path.is_file():
            return
        with self.path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for raw in reader:
                row: dict[str, Any] = {}
                for k, v in raw.items():
                    if v in ("", None):
                        continue
                    try:
                        row[k] = int(v) if k == "step" else float(v)
                    except ValueError:
                        row[k] = v
                if int(row.get("step", 0)) <= up_to_step:
                    self.log(row)
            for c in reader.fieldnames or []:
                if c not in self.columns:
                    self.columns.append(c)
            self._add_columns({})

    def series(self, column: str) -> tuple[list[int], list[float]]:
        """(steps, values) of the rows where ``column`` is set."""
        pts = [(int(r["step"]), float(r[column])) for r in self.rows if r.get(column) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]


def plot_progress(log: MetricsLog, path: str | Path, title: str = "") -> Path:
    """``progress.png``: :func:`draw_progress` on a 10 x 4 inch figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    draw_progress(fig, log, title)
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)
    return path


def draw_progress(fig: Any, log: MetricsLog, title: str = "") -> None:
    """Draw on the matplotlib ``fig`` (cleared first): loss terms (log scale where positive) on the left,
    val Dice on the right. progress.png and the napari plugin's live plot."""
    fig.clear()
    ax_loss, ax_dice = fig.subplots(1, 2)
    terms = [c for c in log.columns if c not in ("step", "epoch", "lr", "elapsed_s", "loss")
             and not c.startswith("val_")]
    curves = (["loss"] if "loss" in log.columns else []) + (terms if len(terms) > 1 else [])
    finite: list[float] = []
    for name in curves:
        steps, values = log.series(name)
        if steps:
            label = name if name != "loss" or len(terms) != 1 else f"loss ({terms[0]})"
            ax_loss.plot(steps, values, label=label, lw=1.6 if name == "loss" else 1.0)
            finite += [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    if finite:
        ax_loss.legend(fontsize=8)
    steps, values = log.series("val_mean_dice")
    if steps:
        ax_dice.plot(steps, values, "o-", color="black", label="mean Dice")
        for c in log.columns:
            if c.startswith("val_dice_"):
                s, v = log.series(c)
                ax_dice.plot(s, v, lw=0.8, alpha=0.6, label=c[len("val_dice_"):])
        ax_dice.legend(fontsize=7, ncol=2, loc="upper left", framealpha=0.6)
    else:
        ax_dice.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax_dice.transAxes)
    ax_dice.set_ylim(0, 1)
    ax_dice.set_xlabel("step")
    ax_dice.set_ylabel("validation Dice")
    if title:
        fig.suptitle(title)
    fig.tight_layout()


class Reporter:
    """Training progress for people: a rich progress bar on a terminal, else one plain line per log row."""

    def __init__(self, console: Any, total: int, start: int, log_every: int) -> None:
        self.console, self.total = console, total
        self.live = bool(getattr(console, "is_terminal", False))
        self.progress: Any = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                     TextColumn("{task.fields[info]}"), console=console)
            self.task = self.progress.add_task("train", total=total, completed=start, info="")
            self.progress.start()

    @staticmethod
    def describe(row: dict[str, Any]) -> str:
        """``loss 0.512 (ce 0.512)  val mean Dice 0.634`` from a metrics row."""
        skip = {"step", "epoch", "loss", "lr", "elapsed_s"}
        terms = [f"{k} {v:.4g}" for k, v in row.items() if k not in skip and not k.startswith("val_")]
        text = f"loss {row.get('loss', float('nan')):.4g}"
        if len(terms) > 1:
            text += " (" + ", ".join(terms) + ")"
        if row.get("val_mean_dice") is not None:
            text += f"  val mean Dice {row['val_mean_dice']:.3f}"
        return text

    def tick(self, step: int) -> None:
        """Advance the bar (cheap; rendering happens on rich's own thread)."""
        if self.progress is not None:
            self.progress.update(self.task, completed=step)

    def update(self, step: int, row: dict[str, Any]) -> None:
        """Show a logged row."""
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=self.describe(row))
        else:
            self.console.print(f"step {step}/{self.total} (epoch {row.get('epoch', 0):g})  {self.describe(row)}  "
                               f"lr {row.get('lr', 0):.3g}  {row.get('elapsed_s', 0):.1f} s", highlight=False,
                               soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class LossWindow:
    """Loss terms of the steps not yet checked, kept on the device (one (T,) tensor per step), and the
    checked values of the steps not yet logged, on the host; ``names`` are the T terms' names."""

    def __init__(self, first_step: int) -> None:
        self.names: list[str] = []
        self.window: list[torch.Tensor] = []
        self.pending: list[np.ndarray] = []
        self.first = first_step  # the step of window[0]

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        """One step's terms (scalars); the names are those of the first step."""
        if not self.names:
            self.names = list(terms)
        self.window.append(torch.stack([terms[n].detach().float() for n in self.names]))

    def check(self, step: int) -> tuple[int, str, float] | None:
        """Move the window to the host (one synchronisation); ``(step, term, value)`` of the first
        non-finite value, else None (the values wait for :meth:`take`; the window restarts at ``step + 1``)."""
        values = torch.stack(self.window).cpu().numpy()
        bad = ~np.isfinite(values)
        if bad.any():
            k, t = (int(v[0]) for v in np.nonzero(bad))
            return self.first + k, self.names[t], values[k, t]
        self.pending.append(values)
        self.window, self.first = [], step + 1
        return None

    def take(self) -> np.ndarray:
        """(k, T) values of the checked steps since the last take."""
        values = np.concatenate(self.pending)
        self.pending = []
        return values
