"""`dspseg train` and `dspseg predict` on a volume whose chunks stop reading after it was validated (a
corrupt chunk file; an HTTP store answering 500): one sentence naming the volume, the array, the
section and the chunk, with the fix and how to go on; no traceback; exit code 1; the run's last.pt
(and predict's block markers) left as they were, and the run resumes from them once fixed.

One run of 2 steps (last.pt at step 2) is trained once; each test resumes a copy of it on a copy of
the data (a new path: no chunk of it is in this process's chunk cache)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from dspseg.cli import app
from dspseg.data.synthetic import SYNTH_CLASSES, write_synthetic_volume
from dspseg.engine.predict_volume import DONE
from volume_files import serve_http

TRAIN = ["--width", "4", "--batch-size", "2", "--threads", "1", "--set", "levels=3", "--set", "crop_size=64",
         "--set", "log_every=1", "--val-every", "2"]


def _dataset(root: Path, url: str = "cell.ome.zarr") -> Path:
    """dataset.json: sections 1 and 2 to train on (whole 64 x 64 sections: every step reads image chunk
    (0, 0, 0)), section 9 to validate (groups of 4 sections); masks from the label volume."""
    root.mkdir(parents=True, exist_ok=True)
    mask = {"mask": {"volume": {"url": url, "array": "labels/organelles"}}}
    images = [{"volume": {"url": url}, "axis": "z", "index": i, "split": split, **mask}
              for i, split in ((1, "train"), (2, "train"), (9, "val"))]
    (root / "dataset.json").write_text(json.dumps({"format": "dspseg/2", "classes": SYNTH_CLASSES,
                                                   "ignore_index": 255, "group_every": 4, "images": images}))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder, run folder trained 2 steps on it: last.pt and best.pt at step 2)."""
    root = tmp_path_factory.mktemp("readerr")
    write_synthetic_volume(root / "data/cell.ome.zarr", shape=(16, 64, 64), seed=1, chunks=(4, 32, 32), levels=1)
    data = _dataset(root / "data")
    r = CliRunner().invoke(app, ["train", str(data), "--out", str(root / "run"), "--steps", "2", *TRAIN])
    assert r.exit_code == 0, r.output
    return data, root / "run"


def _copies(trained: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, bytes]:
    data, run = trained
    shutil.copytree(data, tmp_path / "data")
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "data", tmp_path / "run", (tmp_path / "run/checkpoints/last.pt").read_bytes()


def _error_line(r: Result) -> str:
    """The command's error: it exited with code 1 by itself (not by an exception it let through), and
    its last line, the only one starting with ``error:``, is the sentence."""
    output = r.output
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (repr(r.exception), output)
    lines = output.strip().splitlines()
    errors = [k for k, line in enumerate(lines) if line.startswith("error:")]
    assert "Traceback" not in output and errors == [len(lines) - 1], output
    return lines[-1]


@pytest.mark.parametrize("workers", [0, 1])
def test_train_stops_at_a_corrupt_chunk_with_one_sentence(trained: tuple[Path, Path], tmp_path: Path,
                                                          workers: int) -> None:
    """A chunk file of the image overwritten after the run began: read in the trainer (0 workers) or in
    a DataLoader worker (1) — the same sentence; last.pt as it was; resumable once restored."""
    data, run, last = _copies(trained, tmp_path)
    chunk = data / "cell.ome.zarr/s0/c/0/0/0"
    good = chunk.read_bytes()
    chunk.write_bytes(b"not a zstd frame " * 20)
    resume = ["train", str(data), "--out", str(run), "--steps", "4", "--resume", "--set", f"num_workers={workers}",
              *TRAIN]
    r = CliRunner().invoke(app, resume)
    line = _error_line(r)
    assert line.startswith(f"error: cannot read volume {data / 'cell.ome.zarr'}, array 's0', section z="), line
    assert ", chunk (0, 0, 0): the chunk is corrupt (RuntimeError: Zstd decompression error" in line, line
    assert "Fix: re-export the volume" in line, line
    last_pt = run / "checkpoints/last.pt"
    assert f"then run the same command again: training continues from {last_pt}, which was kept" in line, line
    assert (run / "checkpoints/last.pt").read_bytes() == last
    chunk.write_bytes(good)  # restored: the same command goes on from step 2
    r = CliRunner().invoke(app, resume)
    assert r.exit_code == 0 and "resuming" in r.output and "step 4/4" in r.output, r.output


def test_train_stops_when_the_store_stops_answering(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """The image's chunks served over HTTP answer 500 after the dataset was validated (its label
    chunks still answer): one sentence naming the URL and the connection fix; last.pt as it was."""
    data, run, last = _copies(trained, tmp_path)
    with serve_http(data) as server:
        remote = _dataset(tmp_path / "remote", url=f"{server.url}/cell.ome.zarr")
        server.fail, server.only = "500", "/cell.ome.zarr/s0/c/"
        r = CliRunner().invoke(app, ["train", str(remote), "--out", str(run), "--steps", "4", "--resume", *TRAIN])
    line = _error_line(r)
    assert line.startswith(f"error: cannot read volume {server.url}/cell.ome.zarr, array 's0', section z="), line
    assert "the store did not deliver it (ClientResponseError: 500" in line, line
    assert "Fix: check the connection and that the store is readable" in line, line
    assert f"training continues from {run / 'checkpoints/last.pt'}, which was kept" in line, line
    assert (run / "checkpoints/last.pt").read_bytes() == last


def test_predict_on_a_volume_stops_at_a_corrupt_chunk_and_resumes(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Blocks of 4 sections: the 4 blocks of sections 0-3 are written, the first block of sections 4-7
    meets the corrupt chunk (1, 0, 0): one sentence; the 4 markers kept; restored, the same command
    keeps them and finishes."""
    data, run, _ = _copies(trained, tmp_path)
    chunk = data / "cell.ome.zarr/s0/c/1/0/0"
    good = chunk.read_bytes()
    chunk.write_bytes(b"not a zstd frame " * 20)
    out = tmp_path / "seg.ome.zarr"
    command = ["predict", str(run), str(data / "cell.ome.zarr"), "--out", str(out), "--tile", "32",
               "--block", "4,32,32", "--levels", "1"]
    r = CliRunner().invoke(app, command)
    line = _error_line(r)
    assert f"cannot read volume {data / 'cell.ome.zarr'}, array 's0', section z=4, chunk (1, 0, 0): the chunk " \
           "is corrupt" in line and "Fix: re-export the volume" in line, line
    assert f"then run the same command again: it keeps the 4 finished block(s) of {out}" in line, line
    assert len(list((out / DONE / "s0").iterdir())) == 4
    chunk.write_bytes(good)
    r = CliRunner().invoke(app, command)
    assert r.exit_code == 0, r.output
    assert "12 block(s) computed, 4 kept from an earlier run" in r.output.replace("\n", " "), r.output
