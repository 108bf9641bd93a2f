"""`dspseg train --accelerator cpu --devices 2` runs DSP as two DDP processes (gloo) end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
import yaml

from dspseg.data.acr import simulate_dataset
from dspseg.data.synthetic import write_synthetic_dataset


def test_two_process_dsp_training_through_the_cli(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "syn", n_images=32, size=64, seed=0, groups=8)
    simulate_dataset(tmp_path / "syn", tmp_path / "sim", acr=4, scenario="mixed", split=0, n_splits=3)
    out = tmp_path / "run"
    # the console script, not `python -c`: Fabric starts the second process by re-running the command line
    cmd = [str(Path(sys.executable).parent / "dspseg"), "train", str(tmp_path / "sim"),
           "--method", "dsp", "--out", str(out), "--steps", "2", "--batch-size", "4", "--width", "4",
           "--threads", "1", "--accelerator", "cpu", "--devices", "2", "--val-every", "2",
           "--set", "levels=3", "--set", "crop_size=64", "--set", "method_options.compile=false"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("done: 2 steps") == 1  # only rank 0 reports
    assert yaml.safe_load((out / "config.yaml").read_text())["devices"] == 2
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
