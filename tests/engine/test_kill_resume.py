"""SIGKILL in the middle of `dspseg train`, then --resume: the same final weights and metrics as an
uninterrupted run with the same seed (issue 8)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from engine_common import make_easy_dataset

ARGS = ["--steps", "14", "--batch-size", "4", "--width", "4", "--threads", "1", "--val-every", "4",
        "--set", "levels=3", "--set", "crop_size=32", "--set", "log_every=2", "--set", "lr=0.01"]


def dspseg(*args: str) -> list[str]:
    return [sys.executable, "-c", "from dspseg.cli import app; app()", *args]


def last_logged_step(run: Path) -> int:
    try:
        rows = list(csv.DictReader((run / "metrics.csv").open()))
    except (FileNotFoundError, csv.Error):
        return 0
    return int(rows[-1]["step"]) if rows else 0


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    data = make_easy_dataset(tmp_path / "data")
    subprocess.run(dspseg("train", str(data), "--out", str(tmp_path / "whole"), *ARGS), check=True,
                   capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(dspseg("train", str(data), "--out", str(run), *ARGS),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while last_logged_step(run) < 9 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = last_logged_step(run)
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 0 < saved < 14 and killed_at < 14

    resumed = subprocess.run(dspseg("train", str(data), "--out", str(run), "--resume", *ARGS),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 14
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    rows_a = list(csv.DictReader((tmp_path / "whole" / "metrics.csv").open()))
    rows_b = list(csv.DictReader((run / "metrics.csv").open()))
    drop = {"elapsed_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_a] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows_b]
