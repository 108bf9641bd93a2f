"""Property: random bytes, random JSON and random TIFF headers given as dataset.json, a mask or an image
never give a traceback or a hang through `dspseg validate` and `dspseg train` — a sentence and an exit
code 0, 1 or 2, within a bounded time (issue 16). A few dozen examples, seconds in all."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.data.io import write_image, write_mask

runner = CliRunner()
SECONDS = 60  # one command on one example; a hang is a failure, not a stuck suite

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
#: a dataset.json whose top level has the right keys with random values, or any JSON value at all
manifests = st.one_of(
    json_values,
    st.fixed_dictionaries({"classes": json_values, "images": json_values}, optional={"ignore_index": json_values}),
    st.fixed_dictionaries({"classes": st.just(["bg", "fg"]),
                           "images": st.lists(st.dictionaries(st.sampled_from(["file", "mask", "boxes", "points",
                                                                                "labels", "split", "group"]),
                                                              json_values, max_size=4), max_size=3)}))
tiff_headers = st.builds(lambda order, rest: order + rest, st.sampled_from([b"II*\x00", b"MM\x00*", b"II+\x00"]),
                         st.binary(max_size=200))
file_bytes = st.binary(max_size=300) | tiff_headers


@contextmanager
def bounded(seconds: int):
    """Fail (rather than hang) when the body takes longer than ``seconds``."""
    def stop(*_):
        raise TimeoutError(f"no answer within {seconds} s: a hang")
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _good_dataset(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    records = []
    for k in range(2):
        write_image(root / f"images/a{k}.tif", rng.random((32, 32)).astype(np.float32))
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 8:20] = 1
        write_mask(root / f"images/m{k}.tif", mask)
        records.append({"file": f"images/a{k}.tif", "mask": f"images/m{k}.tif"})
    (root / "dataset.json").write_text(json.dumps({"classes": ["bg", "fg"], "images": records}))


def _run(args: list[str]) -> None:
    with bounded(SECONDS):
        result = runner.invoke(app, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"dspseg {' '.join(args)} raised {type(result.exception).__name__}: {result.exception}"
                             f"\n{result.output}") from result.exception
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output


def _commands(root: Path) -> list[list[str]]:
    return [["validate", str(root)],
            ["train", str(root), "--out", str(root / "run"), "--steps", "1", "--width", "4", "--threads", "1",
             "--batch-size", "2", "--set", "levels=2", "--set", "crop_size=16", "--val-every", "0"]]


FUZZ = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("target", ["dataset.json", "images/m0.tif", "images/a0.tif"])
@FUZZ
@given(content=st.one_of(manifests.map(lambda v: json.dumps(v).encode()), file_bytes))
def test_random_files_give_a_sentence(target: str, content: bytes) -> None:
    root = Path(tempfile.mkdtemp(prefix="fuzz"))
    try:
        _good_dataset(root)
        (root / target).write_bytes(content)
        for args in _commands(root):
            _run(args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
