"""``dspseg predict ... --backend ray`` on a local Ray instance of 2 workers: the blocks written by Ray
tasks equal the single-process output (every level and the probabilities), the progress shows the
time left, and a stop (SIGTERM, handled as Ctrl-C) cancels the tasks and stops the local instance,
its processes included; the folder then resumes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.engine.predict_volume import DONE, Progress, predict_volume
from dspseg.engine.trainer import train
from dspseg.errors import UserError
from engine_common import make_easy_dataset, tiny_cfg
from volume_files import volume_data, write_ngff

ray = pytest.importorskip("ray", reason="Ray is the optional extra dspseg[ray] (in dev)")

OPTS = {"tile": 32, "block": (4, 32, 16), "levels": 2, "probabilities": True}  # 18 + 4 blocks
ARRAYS = ("labels/segmentation/s0", "labels/segmentation/s1", "probabilities/s0")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("predray")
    train(make_easy_dataset(root / "data", n=(4, 1, 0)), root / "run", tiny_cfg(steps=4, val_every=0))
    return root / "run", write_ngff(root / "cell.ome.zarr", volume_data("uint16"))


def _arrays(out: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(out), mode="r")
    return {name: np.asarray(group[name][...]) for name in ARRAYS}


@pytest.mark.slow
def test_ray_tasks_write_the_single_process_output_and_stop_cleanly(setup: tuple[Path, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`dspseg predict ... --backend ray --workers 2` stopped by SIGTERM (as `kill` or a scheduler stops it;
    Ctrl-C takes the same path) once both pyramid levels have started on Ray, then resumed in this process."""
    run, cell = setup
    local = tmp_path / "local.ome.zarr"
    total = predict_volume(run, str(cell), local, **OPTS)["computed"]
    out = tmp_path / "ray.ome.zarr"
    ray_processes: list[psutil.Process] = []
    before = {p.pid for p in psutil.Process().children(recursive=True)}  # e.g. pytest-xvfb's X server
    block_done = Progress.block_done

    def then_stop(progress: Progress) -> None:
        block_done(progress)
        if progress.counts["computed"] == 1:  # the local instance is up: the processes it started
            ray_processes.extend(p for p in psutil.Process().children(recursive=True) if p.pid not in before)
        if progress.counts["computed"] == total - 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Progress, "block_done", then_stop)
    result = CliRunner().invoke(app, ["predict", str(run), str(cell), "--out", str(out), "--tile", "32", "--block",
                                      "4,32,16", "--levels", "2", "--probabilities", "--backend", "ray", "--workers", "2"])
    assert result.exit_code == 130, result.output
    assert "interrupted; the files written so far are kept" in result.output
    assert f"block {total - 2}/{total} (" in result.output and "s left" in result.output
    assert not ray.is_initialized()
    assert len(ray_processes) >= 3  # GCS, raylet and the task workers at least
    _, alive = psutil.wait_procs(ray_processes, timeout=30)
    assert not alive, [p.cmdline()[:2] for p in alive]
    written = sum(1 for p in (out / DONE).rglob("*_*_*"))
    assert total - 2 <= written <= total
    assert len(list((out / DONE / "s1").iterdir())) >= 2  # pyramid blocks written by Ray tasks

    monkeypatch.undo()
    resumed = predict_volume(run, str(cell), out, **OPTS)  # resumed here: the same folder, the same rules
    assert resumed["skipped"] == written and resumed["computed"] == total - written
    ours, theirs = _arrays(out), _arrays(local)
    for name in ARRAYS:
        assert np.array_equal(ours[name], theirs[name]), name


def test_backend_and_thread_options(setup: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    run, cell = setup
    with pytest.raises(UserError, match="--backend must be local or ray, got 'dask'"):
        predict_volume(run, str(cell), tmp_path / "a.ome.zarr", backend="dask")
    with pytest.raises(UserError, match="--address is for --backend ray"):
        predict_volume(run, str(cell), tmp_path / "b.ome.zarr", address="auto")
    with pytest.raises(UserError, match="--threads must be at least 1, got 0"):
        predict_volume(run, str(cell), tmp_path / "c.ome.zarr", threads=0)
    assert not any((tmp_path / name).exists() for name in ("a.ome.zarr", "b.ome.zarr", "c.ome.zarr"))
    torch.set_num_threads(2)  # conftest's one_thread fixture restores the suite's setting
    predict_volume(run, str(cell), tmp_path / "d.ome.zarr", threads=1, **OPTS)
    assert torch.get_num_threads() == 2  # the process's own setting comes back


def test_a_failed_task_is_one_sentence() -> None:
    """What ``ray.get`` raises for a task that failed: the task's own user error as it is, anything else
    as one sentence naming the block, what went wrong and how to go on."""
    from ray.exceptions import RayTaskError

    from dspseg.engine.predict_volume_ray import _failure
    from dspseg.errors import VolumeError

    def raised(cause: Exception) -> Exception:
        return RayTaskError("_write_block", "Traceback (most recent call last):\n  ...", cause).as_instanceof_cause()

    unreadable = VolumeError("/data/cell.ome.zarr", "url", "no such folder on this node", "put it on shared storage")
    assert _failure(raised(unreadable), 0, (0, 0, 0)) is unreadable
    e = _failure(raised(OSError("[Errno 28] No space left on device")), 1, (4, 0, 16))
    assert isinstance(e, UserError) and "\n" not in str(e)
    assert str(e).startswith("the Ray task writing block 4_0_16 of level s1 failed (OSError: [Errno 28] No space left")
    assert str(e).endswith("then run the same command again to resume")
