"""RunFolder: every path of a run folder, and the checks on it before training, resuming and loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from dspseg.engine.runfolder import RunFolder
from dspseg.errors import CheckpointError, UserError


def test_paths_of_a_run_folder(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    assert run.config == tmp_path / "run" / "config.yaml" and run.metrics.name == "metrics.csv"
    assert run.checkpoint("last") == run.last == tmp_path / "run" / "checkpoints" / "last.pt"
    assert run.best.parent == run.checkpoints and run.eval_json("val") == tmp_path / "run" / "eval" / "val.json"
    assert RunFolder.progress == Path("progress.png") and RunFolder.result == Path("result.json")
    with pytest.raises(CheckpointError, match="'best' or 'last', got 'final'"):
        run.checkpoint("final")


def test_checks_before_training_resuming_and_loading(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    run.check_new(resume=False)  # does not exist yet: fine
    with pytest.raises(CheckpointError, match="does not exist"):
        run.existing_checkpoint()
    run.last.parent.mkdir(parents=True)
    assert not run.can_resume()
    with pytest.raises(UserError, match="nothing to resume"):
        run.check_resumable()
    with pytest.raises(UserError, match="is not empty.*--resume"):
        run.check_new(resume=False)
    run.last.write_bytes(b"x")
    run.config.write_text("steps: 1\n")
    assert run.can_resume() and run.init_checkpoint() == run.last  # no best.pt: --init takes last.pt
    run.best.write_bytes(b"x")
    assert run.init_checkpoint() == run.best == run.existing_checkpoint("best")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file"):
        RunFolder(tmp_path / "file").check_new(resume=True)
