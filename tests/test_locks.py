"""One writer per folder (dspseg.fslock): a second writer is refused with one sentence naming the first,
a lock whose process is gone is taken over with a note, and two `dspseg train` on one --out never mix."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from engine_common import easy, tiny_cfg  # noqa: F401  (easy is a fixture)
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.engine.runfolder import RunFolder
from dspseg.engine.trainer import train
from dspseg.errors import FolderLockedError
from dspseg.fslock import LOCK_NAME, entries, folder_lock, read_owner, sibling_lock_file
from dspseg.fsutil import new_folder

HOLD = ("import sys, time\nfrom dspseg.fslock import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")


def holder(folder: Path) -> subprocess.Popen:
    """A process that holds ``folder``'s lock until it is killed (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    proc = holder(folder)
    try:
        with pytest.raises(FolderLockedError) as e:
            with folder_lock(folder):
                pass
        text = str(e.value)
        assert f"pid {proc.pid} on {socket.gethostname()}" in text and "started 20" in text
        assert "is being written by" in text and "choose another folder" in text and "\n" not in text
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_note(tmp_path: Path, capfd) -> None:
    folder = tmp_path / "out"
    proc = holder(folder)
    dead = proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_owner(folder / LOCK_NAME)["pid"] == dead  # its note is left behind
    with folder_lock(folder):
        assert read_owner(folder / LOCK_NAME)["pid"] == os.getpid()
        with folder_lock(folder):  # re-entrant in one process (a sweep worker, then the trainer)
            pass
    err = capfd.readouterr().err
    assert f"left locked by pid {dead}" in err and "no longer running; taking it over" in err
    assert read_owner(folder / LOCK_NAME) is None  # released: no note left


def test_lock_files_do_not_count_and_an_unused_new_folder_is_removed(tmp_path: Path) -> None:
    with folder_lock(tmp_path / "new"):
        assert (tmp_path / "new").is_dir() and entries(tmp_path / "new") == []
        RunFolder(tmp_path / "new").check_new(resume=False)  # only lock files: still a new folder
    assert not (tmp_path / "new").exists()
    # a folder built whole and renamed into place (convert, import, export) is locked through a hidden sibling
    script = HOLD.replace("import folder_lock", "import folder_lock, sibling_lock_file").replace(
        "folder_lock(sys.argv[1])", "folder_lock(sys.argv[1], sibling_lock_file(sys.argv[1]))")
    other = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "conv")], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=f"pid {other.pid}"):
            with new_folder(tmp_path / "conv"):
                pass
        assert not (tmp_path / "conv").exists() and sibling_lock_file(tmp_path / "conv").exists()
    finally:
        other.kill()
        other.wait()


def test_two_trainings_on_one_out_the_second_refuses_and_the_first_is_intact(easy: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "dspseg.cli", "train", str(easy), "--out", str(out), "--steps",
                              "12", "--width", "4", "--batch-size", "4", "--set", "levels=3", "--set", "crop_size=32",
                              "--set", "val_every=6", "--threads", "1", "--seed", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while read_owner(out / LOCK_NAME) is None:
            assert first.poll() is None and time.monotonic() < deadline, "the first training never took the lock"
            time.sleep(0.05)
        r = CliRunner().invoke(app, ["train", str(easy), "--out", str(out), "--steps", "2", "--width", "8", "--resume"])
        assert r.exit_code == 2, r.output
        assert f"is being written by pid {first.pid}" in r.output and "`dspseg train " in r.output, r.output
        assert "Traceback" not in r.output
        with pytest.raises(FolderLockedError):  # the library call refuses the same way
            train(easy, out, tiny_cfg(steps=2))
    finally:
        output = first.communicate(timeout=300)[0]
    assert first.returncode == 0, output
    run = RunFolder(out)
    last, best = (torch.load(p, weights_only=True) for p in (run.last, run.best))
    assert last["step"] == 12 and best["config"]["width"] == 4 == last["config"]["width"]
    assert run.metrics.read_text().count("step,") == 1 and "width: 4" in run.config.read_text()
    assert read_owner(out / LOCK_NAME) is None
