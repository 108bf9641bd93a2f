"""Every writer on a REAL full filesystem (a small tmpfs mounted for the test): one sentence naming the file
and what was kept (DiskFullError, exit code 1), the previous files intact, no temporary file left behind.
Skipped, with the reason, where a tmpfs cannot be mounted (not root / no CAP_SYS_ADMIN)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_common import easy  # noqa: F401  (a fixture)
from rich.console import Console
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.data.synthetic import write_synthetic_dataset
from dspseg.engine.checkpoint import save_checkpoint
from dspseg.engine.runlog import MetricsLog, plot_progress
from dspseg.errors import DiskFullError
from dspseg.fsutil import atomic_write, new_folder


@pytest.fixture
def small_disk(tmp_path: Path):
    """``mount(kib)`` → a fresh tmpfs of ``kib`` KiB (unmounted after the test)."""
    mounted: list[Path] = []

    def mount(kib: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root (CI runs the suite as root)")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()} (needs CAP_SYS_ADMIN)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` up, then free ``leave`` bytes again."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass  # this chunk size no longer fits: go on with the smaller one
    finally:
        os.close(fd)
    size = (disk / "filler").stat().st_size
    os.truncate(disk / "filler", max(0, size - leave))


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "filler"}


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".synth." in p.name]


def test_torch_save_on_a_full_disk_is_one_sentence_and_keeps_the_checkpoint(small_disk) -> None:
    disk = small_disk(512)
    path = disk / "last.pt"
    save_checkpoint({"step": 1, "w": torch.zeros(1000)}, path)
    fill(disk, leave=64 * 1024)  # room for a part of the file: torch fails inside its zip writer
    with pytest.raises(DiskFullError) as e:
        save_checkpoint({"step": 2, "w": torch.zeros(100_000)}, path)
    assert str(e.value).startswith(f"no space left on the disk while writing {path}")
    assert "the previous last.pt is intact" in str(e.value) and "--resume" in str(e.value)
    assert e.value.exit_code == 1 and torch.load(path, weights_only=True)["step"] == 1 and no_temporaries(disk)


def test_metrics_progress_and_any_atomic_write_on_a_full_disk(small_disk) -> None:
    disk = small_disk(256)
    log = MetricsLog(disk / "metrics.csv")
    log.log({"step": 1, "loss": 0.5})
    log.flush()
    plot_progress(log, disk / "progress.png")
    before = digests(disk)
    for i in range(2, 2000):
        log.log({"step": i, "loss": 1 / i, "ce": 1 / i, "lr": 1e-3, "elapsed_s": float(i)})
    fill(disk)
    with pytest.raises(DiskFullError, match="while writing .*metrics.csv.*previous metrics.csv is intact"):
        log.flush()
    with pytest.raises(DiskFullError, match="while writing .*progress.png.*previous progress.png is intact"):
        plot_progress(log, disk / "progress.png")
    with pytest.raises(DiskFullError, match=r"while writing .*new.txt \(No space left on device\); no new.txt was written"):
        atomic_write(disk / "new.txt", lambda f: f.write("x" * 100_000))
    assert digests(disk) == before and no_temporaries(disk)


def test_a_folder_built_whole_leaves_nothing_on_a_full_disk(small_disk) -> None:
    disk = small_disk(128)
    with pytest.raises(DiskFullError, match="nothing was written to .*out .the partial folder was removed"):
        with new_folder(disk / "out", "convert") as tmp:  # convert, import and export build their folder so
            (tmp / "big.bin").write_bytes(b"\1" * 400_000)
    assert sorted(p.name for p in disk.iterdir() if not p.name.endswith(".lock")) == []


def test_synth_on_a_full_disk_leaves_no_partial_dataset(small_disk) -> None:
    disk = small_disk(256)
    with pytest.raises(DiskFullError, match=f"writing {disk / 'syn'}.*nothing was written to .*partial one was removed"):
        write_synthetic_dataset(disk / "syn", n_images=64, size=64, seed=0, groups=2)
    assert not (disk / "syn").exists() and no_temporaries(disk)
    write_synthetic_dataset(disk / "syn", n_images=4, size=32, seed=0, groups=2)  # a small one fits
    before = digests(disk / "syn")
    with pytest.raises(DiskFullError, match="the previous dataset in .* is intact"):
        write_synthetic_dataset(disk / "syn", n_images=64, size=64, seed=1, groups=2)
    assert digests(disk / "syn") == before and no_temporaries(disk)


def test_train_resume_on_a_full_disk_says_so_and_keeps_the_run(small_disk, easy: Path) -> None:  # noqa: F811
    disk = small_disk(2048)
    out = disk / "run"
    args = ["train", str(easy), "--out", str(out), "--steps", "2", "--width", "4", "--batch-size", "2",
            "--set", "levels=2", "--set", "crop_size=32", "--threads", "1"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    before = digests(out)
    fill(disk)
    r = CliRunner().invoke(app, [*args[:5], "4", *args[6:], "--resume"])
    assert r.exit_code == 1, r.output
    assert "error: no space left on the disk while writing" in r.output and "intact" in r.output
    assert "Traceback" not in r.output and digests(out) == before and no_temporaries(out)


def test_a_sweep_stops_on_a_full_disk_with_one_sentence(small_disk, tmp_path: Path) -> None:
    from dspseg.study.plan import StudySpec
    from dspseg.study.runner import execute
    from dspseg.study.sweep import prepare, run_sweep

    class Inline:  # runs each run in this process, as a worker would
        name, slots, threads = "inline", 1, 1

        rows: dict = {}

        def submit(self, p):
            self.rows[p["key"]] = execute(p)
            return p["key"]

        def wait_one(self, handles):
            return handles[0], self.rows.pop(handles[0])

        def close(self, stop: bool = False) -> None:
            """Nothing runs in the background to stop: every run ran inside ``submit``."""

    data = tmp_path / "syn"
    write_synthetic_dataset(data, n_images=30, size=48, seed=1, groups=6)
    disk = small_disk(4096)
    spec = StudySpec(data=str(data), methods=["basic"], acrs=[1], splits=1,
                     train={"steps": 2, "width": 4, "batch_size": 2, "levels": 2, "val_every": 0, "crop_size": 48,
                            "threads": 1})
    study = prepare(spec, disk / "sweep", Console(quiet=True))
    before = digests(disk / "sweep")
    fill(disk)
    with pytest.raises(DiskFullError, match="no space left on the disk.*the sweep stopped.*run the same sweep command"):
        run_sweep(spec, disk / "sweep", Inline(), Console(quiet=True), study)
    after = digests(disk / "sweep")
    assert {k: after[k] for k in before} == before and not (disk / "sweep" / "results.csv").exists()
    assert np.all([not p.name.endswith(".tmp") for p in (disk / "sweep").rglob("*")])


def test_convert_and_simulate_copying_images_onto_a_full_disk_are_one_sentence(small_disk, tmp_path: Path) -> None:
    """The two tracebacks of benchmarks/probe_hostile.py: image files copied (another filesystem than the
    source, so no hard link) into a convert or simulate folder on a full disk."""
    data = tmp_path / "data"
    manifest = write_synthetic_dataset(data, n_images=16, size=64, seed=2, groups=8)  # seed 2: splittable
    classes = ",".join(manifest.classes)
    disk = small_disk(128)
    fill(disk, leave=16 * 1024)
    r = CliRunner().invoke(app, ["convert", "labels", str(data / "masks"), "--images", str(data / "images"),
                                 "--classes", classes, "--out", str(disk / "c")])
    assert r.exit_code == 1, r.output
    assert "no space left on the disk" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # nothing half-written is left
    r = CliRunner().invoke(app, ["simulate", str(data), "--acr", "2", "--out", str(disk / "s")])
    assert r.exit_code == 1, r.output
    assert "no space left on the disk" in r.output and "nothing was written" in r.output
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]
