"""The Train widget, driven as a user: fill the fields, click Train, watch the bar and the plot move
while the viewer's event loop runs, read the run folder; Cancel stops a long run resumable, and
Train again continues it."""

from __future__ import annotations

from pathlib import Path

import torch

from dspseg.napari_plugin.train import TrainWidget

TINY = "crop_size=32 levels=2 log_every=1 lr=0.01"
# waits end when the worker does (seconds on an idle machine); the limits allow a machine shared by many


def _fill(widget: TrainWidget, data: Path, out: Path, steps: int) -> None:
    widget.data.value, widget.out.value = data, out
    widget.method.value = "dsp"
    widget.steps.value, widget.width_.value, widget.batch_size.value = steps, 4, 2
    widget.val_every.value, widget.threads.value = 2, 1
    widget.sets.value = TINY


def test_train_runs_in_a_worker_with_progress_and_a_live_plot(make_napari_viewer, qtbot, easy_data: Path,
                                                               tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    _fill(widget, easy_data, tmp_path / "run", steps=3)
    steps_seen = []
    widget.bridge.step.connect(lambda step, total: steps_seen.append(step))
    widget.train.native.click()
    assert widget.worker is not None and not widget.train.enabled and widget.cancel.enabled
    qtbot.waitUntil(lambda: widget.worker is None, timeout=600_000)
    result = widget.outcome
    assert not isinstance(result, str), result
    assert result.step == 3 and not result.stopped
    assert steps_seen == [1, 2, 3] and widget.progress.value == widget.progress.max == 3
    assert [r["step"] for r in widget.plot.log.rows] == [1, 2, 3]
    assert widget.plot.log.series("val_mean_dice")[0] == [2, 3]  # the plot's Dice panel has the validations
    assert widget.plot.figure.axes[0].lines  # the loss curve is drawn
    assert "done: 3 steps" in widget.status.value and "done: 3 steps" in widget.log.value
    run = tmp_path / "run"
    assert (run / "checkpoints/best.pt").is_file() and (run / "progress.png").is_file()
    assert "method: dsp" in (run / "config.yaml").read_text()

    widget.out.value = tmp_path / "run"  # not empty: refused with one sentence, nothing started
    widget.train.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert widget.status.value.startswith("error:") and "--resume" in widget.status.value


def test_cancel_leaves_the_run_resumable_and_train_continues_it(make_napari_viewer, qtbot, easy_data: Path,
                                                                tmp_path: Path) -> None:
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    _fill(widget, easy_data, tmp_path / "run", steps=10_000)
    widget.train.native.click()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=600_000)
    widget.cancel.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    stopped = widget.outcome
    assert not isinstance(stopped, str), stopped
    assert stopped.stopped and 1 <= stopped.step < 10_000 and widget.resume.value
    last = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert last["step"] == stopped.step and "resumable" in widget.status.value
    widget.steps.value = stopped.step + 2
    widget.train.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=600_000)
    assert not isinstance(widget.outcome, str), widget.outcome
    assert widget.outcome.step == stopped.step + 2 and not widget.outcome.stopped
    assert f"resuming {tmp_path / 'run'} at step {stopped.step}" in widget.log.value
