"""`dspseg sweep` owns its workers: SIGTERM (like Ctrl-C and SIGHUP) stops them and exits 130, a SIGKILL of
the sweep takes its workers down with it (parent-death signal), and the same command then finishes every
run once: no orphan process, no run trained twice, results.csv consistent."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dspseg.data.synthetic import write_synthetic_dataset

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers")

RUN = Path("runs/shared/acr1/split0/basic")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sigdata") / "syn"
    write_synthetic_dataset(root, n_images=30, size=48, seed=1, groups=6)  # as tests/study/test_sweep.py
    return root


def command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "dspseg.cli", "sweep", "--data", str(data), "--out", str(out), "--methods", "basic",
            "--acrs", "1", "--splits", "1", "--workers", "1", "--steps", "120", "--width", "4", "--batch-size", "2",
            "--set", "levels=2", "--set", "val_every=3", "--set", "crop_size=48", "--set", "threads=1"]


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_and_wait_for_a_checkpoint(data: Path, out: Path) -> tuple[subprocess.Popen, list[int]]:
    sweep = subprocess.Popen(command(data, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (out / RUN / "checkpoints" / "last.pt").is_file():
        assert sweep.poll() is None, sweep.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.1)
    workers = children(sweep.pid)
    assert workers, "the sweep has no worker process"
    return sweep, workers


def gone(pids: list[int], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(alive(p) for p in pids)


def finish_and_check(data: Path, out: Path) -> str:
    """Run the same command again: it resumes the interrupted run and finishes it, once."""
    again = subprocess.run(command(data, out), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    rows = list(csv.DictReader(open(out / "results.csv", newline="", encoding="utf-8")))
    assert [(r["method"], r["status"], r["steps"]) for r in rows] == [("basic", "done", "120")]
    steps = [int(line.split(",")[0]) for line in (out / RUN / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 120  # one history: nothing logged twice
    return again.stdout + again.stderr


@pytest.mark.slow
def test_sigterm_stops_the_workers_and_the_run_resumes(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    sweep, workers = start_and_wait_for_a_checkpoint(data, out)
    sweep.send_signal(signal.SIGTERM)
    output = sweep.communicate(timeout=60)[0]
    assert sweep.returncode == 130, output
    assert "interrupted; run the same command again to resume the sweep" in output and "Traceback" not in output
    assert gone(workers, 5), "a worker outlived the sweep"
    assert not (out / RUN / "result.json").exists() and (out / RUN / "checkpoints" / "last.pt").is_file()
    assert not list((out / RUN).rglob("*.tmp"))  # the stopped worker left no half-written file
    finish_and_check(data, out)


@pytest.mark.slow
def test_a_killed_sweep_takes_its_workers_with_it(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    sweep, workers = start_and_wait_for_a_checkpoint(data, out)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.communicate(timeout=30)
    assert gone(workers), "an orphaned worker kept running after its sweep was killed"
    output = finish_and_check(data, out)
    assert "no longer running; taking it over" in output  # the dead sweep's lock note
