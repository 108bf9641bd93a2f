"""The Train widget: ``dspseg train`` with a progress bar, a live loss / validation-Dice plot and Cancel.

The fields are the command's main options (dataset, run folder, method, steps, width, batch size,
validation interval, seed, threads, resume) plus "more options", ``--set`` items separated by spaces
(``lr=1e-4 crop_size=64``). Training runs the engine's trainer (:func:`dspseg.engine.trainer.train`,
the same run folder as the command line) in a worker thread, so the viewer stays responsive; its
``on_step`` hook moves the bar, feeds the plot (:mod:`.plot`) and the log lines, and Cancel stops
after the current step with ``last.pt`` written: "resume" is then ticked, and Train continues the run.
"""

from __future__ import annotations

import shlex
import threading
from pathlib import Path
from typing import Any

from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, ProgressBar, PushButton,
                              SpinBox, TextEdit)
from qtpy.QtCore import QObject, Signal

from dspseg.engine.config import TrainConfig
from dspseg.errors import UserError
from dspseg.napari_plugin.messages import sentence, show_error
from dspseg.napari_plugin.plot import ProgressPlot


class _Bridge(QObject):
    """Signals from the worker thread to the widget (Qt queues them onto the main thread)."""

    step = Signal(int, int)
    row = Signal(object)
    line = Signal(str)


class _Lines:
    """A file for rich's Console that emits each complete line."""

    def __init__(self, emit: Any):
        self.emit, self.buffer = emit, ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            if line.strip():
                self.emit(line.rstrip())
        return len(text)

    def flush(self) -> None:
        pass


def _default(name: str) -> Any:
    return TrainConfig.model_fields[name].default


class TrainWidget(Container):
    """See the module docstring. ``worker`` is the running worker (None when idle); ``outcome`` the last
    :class:`~dspseg.engine.trainer.TrainResult` or error sentence."""

    def __init__(self, viewer: Any = None):
        from dspseg.methods import method_table

        super().__init__(labels=True)
        self.viewer = viewer
        self.worker: Any = None
        self.outcome: Any = None
        self._stop = threading.Event()
        self.data = FileEdit(label="dataset folder", mode="d")
        self.out = FileEdit(label="run folder", mode="d", tooltip="a new or empty folder (or the run to resume)")
        self.method = ComboBox(label="method", choices=[name for name, _ in method_table()], value=_default("method"))
        self.method.tooltip = "\n".join(f"{name}: {summary}" for name, summary in method_table())
        self.steps = SpinBox(label="steps", min=1, max=10_000_000, value=1000)
        self.width_ = SpinBox(label="width", min=1, max=512, value=_default("width"),
                              tooltip="U-Net channels at full resolution (the paper uses 64)")
        self.batch_size = SpinBox(label="batch size", min=1, max=4096, value=_default("batch_size"))
        self.val_every = SpinBox(label="validate every", min=0, max=10_000_000, value=_default("val_every"),
                                 tooltip="steps between validations and checkpoints (0: at the end)")
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=_default("seed"))
        self.threads = SpinBox(label="threads", min=0, max=1024, value=0, tooltip="CPU threads (0: all cores)")
        self.resume = CheckBox(text="resume the run in the run folder")
        self.sets = LineEdit(label="more options", tooltip="--set items separated by spaces: lr=1e-4 crop_size=64")
        self.train = PushButton(text="Train")
        self.cancel = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # a long sentence wraps; the dock keeps its width
        self.log = TextEdit(label="log")
        self.log.read_only = True
        self.plot = ProgressPlot()
        self.extend([self.data, self.out, self.method, self.steps, self.width_, self.batch_size, self.val_every,
                     self.seed, self.threads, self.resume, self.sets,
                     Container(widgets=[self.train, self.cancel], layout="horizontal", labels=False),
                     self.progress, self.status, self.log])
        self.native.layout().addWidget(self.plot)
        self.bridge = _Bridge()
        self.bridge.step.connect(self._on_step)
        self.bridge.row.connect(self.plot.add)
        self.bridge.line.connect(self._on_line)
        self.train.changed.connect(self.start)
        self.cancel.changed.connect(self.stop)
        self.native.destroyed.connect(lambda *_: self._closed())

    # ------------------------------------------------------------------------------ running

    def settings(self) -> tuple[Path, Path, dict[str, Any], list[str]]:
        """(dataset, run folder, flags, --set items) from the fields; UserError for a missing folder."""
        data, out = Path(self.data.value), Path(self.out.value)
        if not str(self.data.value).strip(". "):
            raise UserError("choose the dataset folder (holding dataset.json)")
        if not str(self.out.value).strip(". "):
            raise UserError("choose the run folder: a new or empty folder, or the run to resume")
        flags = {"method": self.method.value, "steps": self.steps.value, "width": self.width_.value,
                 "batch_size": self.batch_size.value, "val_every": self.val_every.value, "seed": self.seed.value,
                 "threads": self.threads.value or None}
        try:
            sets = shlex.split(self.sets.value)
        except ValueError as e:
            raise UserError(f"more options: {e}; write key=value items separated by spaces") from None
        return data, out, flags, sets

    def start(self, _value: Any = None) -> Any:
        """Start training in a worker thread; return the worker (None when the fields are refused)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return self.worker
        try:
            data, out, flags, sets = self.settings()
        except UserError as e:
            self._finish(sentence(e))
            return None
        resume = bool(self.resume.value)
        self._stop.clear()
        self.outcome = None
        self.log.value = ""
        self.status.value = "starting ..."
        self.progress.value = 0
        self.plot.start(out / "metrics.csv" if resume else None, title=f"{self.method.value} — {out.name}")
        self.worker = create_worker(self._run, data, out, flags, sets, resume, _start_thread=False,
                                    _connect={"returned": self._returned, "errored": lambda e: show_error(self._finish, e)})
        self.train.enabled, self.cancel.enabled = False, True
        self.worker.start()
        return self.worker

    def _run(self, data: Path, out: Path, flags: dict[str, Any], sets: list[str], resume: bool) -> Any:
        """In the worker thread: the command line's ``train``, reporting through the bridge."""
        from rich.console import Console

        from dspseg.engine.trainer import resolve_run_config, train

        console = Console(file=_Lines(self.bridge.line.emit), width=120, color_system=None, force_terminal=False)
        cfg = resolve_run_config(out, resume, None, flags, sets)

        def on_step(step: int, total: int, row: dict[str, Any] | None) -> bool:
            self.bridge.step.emit(step, total)
            if row is not None:
                self.bridge.row.emit(dict(row))
            return self._stop.is_set()

        return train(data, out, cfg, resume=resume, console=console, on_step=on_step)

    def stop(self, _value: Any = None) -> None:
        """Cancel: the run stops after its current step, resumable."""
        if self.worker is not None:
            self._stop.set()
            self.status.value = "stopping after this step ..."

    def _closed(self) -> None:
        """The widget is gone (its viewer closed): a running run stops after its step, resumable, and
        reports to nothing."""
        self._stop.set()
        try:
            signals = [self.bridge.step, self.bridge.row, self.bridge.line]
            if self.worker is not None:
                signals += [self.worker.returned, self.worker.errored]
        except RuntimeError:  # the bridge or worker went first (Python exiting): nothing left to report to
            return
        for signal in signals:
            try:
                signal.disconnect()
            except (TypeError, RuntimeError):
                pass  # nothing connected, or already gone

    # ------------------------------------------------------------------------------ main thread

    def _on_step(self, step: int, total: int) -> None:
        self.progress.max = total
        self.progress.value = step
        self.status.value = f"step {step} of {total}"

    def _on_line(self, line: str) -> None:
        self.log.value = f"{self.log.value}\n{line}" if self.log.value else line

    def _returned(self, result: Any) -> None:
        if result.stopped:
            self.resume.value = True
            text = f"stopped at step {result.step}; the run is resumable: press Train to continue"
        else:
            best = (f"best validation Dice {result.best_metric:.3f} at step {result.best_step}"
                    if result.best_metric is not None else "no val split: best.pt is the final model")
            text = f"done: {result.step} steps; {best}"
        self._finish(text, result)

    def _finish(self, text: str, outcome: Any = None) -> None:
        self.outcome = outcome if outcome is not None else text
        self.status.value = text
        self.worker = None
        self.train.enabled, self.cancel.enabled = True, False
