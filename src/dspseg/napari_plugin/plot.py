"""The Train widget's live plot: progress.png's two panels (:func:`dspseg.engine.runlog.draw_progress`),
redrawn as the run logs its rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from dspseg.engine.runlog import MetricsLog, draw_progress


class ProgressPlot(FigureCanvasQTAgg):
    """Loss terms (left) and validation Dice (right) of the rows so far; ``log`` holds them."""

    def __init__(self) -> None:
        super().__init__(Figure(figsize=(5, 2.6), dpi=80))
        self.setMinimumHeight(200)
        self.start(None)

    def start(self, metrics: Path | None, title: str = "") -> None:
        """Begin a run's plot: empty, or a resumed run's ``metrics.csv`` rows."""
        self.log = MetricsLog(metrics or "metrics.csv")
        if metrics is not None:
            self.log.load(up_to_step=2**62)
        self.title = title
        self.redraw()

    def add(self, row: dict[str, Any]) -> None:
        """One logged row (loss terms, and val Dice at validation steps)."""
        self.log.log(row)
        self.redraw()

    def redraw(self) -> None:
        draw_progress(self.figure, self.log, self.title)
        self.draw_idle()
