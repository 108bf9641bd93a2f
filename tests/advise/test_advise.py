"""dspseg advise on a tiny trained run, through the library and the command line, the way a user calls it."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dspseg.advise import Request, advise, advise_run
from dspseg.advise.rank import STRENGTH
from dspseg.cli import app
from dspseg.costs import AnnotationCosts
from dspseg.data.manifest import load_manifest
from dspseg.errors import CheckpointError, DatasetError, OptionError
from dspseg.vocabulary import Kind

runner = CliRunner()


def kinds_now(data: Path) -> dict[str, str]:
    m = load_manifest(data)
    return {r.file: r.annotation_type for r in m.images if r.split == "train"}


def test_requests_fit_the_budget_and_never_repeat_what_a_record_has(tiny):
    run, data = tiny
    has = kinds_now(data)
    for hours in (0.01, 0.05, 1.0):
        asked = advise(run, data, hours, threads=1)
        assert asked and all(isinstance(r, Request) for r in asked)
        assert sum(r.cost_s for r in asked) <= hours * 3600 + 1e-6
        assert len({r.image for r in asked}) == len(asked)  # one request per image
        assert all(STRENGTH[r.kind] > STRENGTH[has[r.image]] for r in asked)  # nothing it has or subsumes
        assert [r.value for r in asked] == sorted((r.value for r in asked), reverse=True)
        assert all(r.reason and r.cost_s > 0 for r in asked)
    assert not {r.image for r in asked} & {f for f, k in has.items() if k == Kind.MASK}


def test_kinds_images_costs_and_the_uncertainty_baseline(tiny):
    run, data = tiny
    has = kinds_now(data)
    boxed = [f for f, k in has.items() if k == Kind.BOX]
    masks = advise(run, data, 0.2, kinds=[Kind.MASK], rank_by="uncertainty", threads=1)
    assert masks and {r.kind for r in masks} == {Kind.MASK} and len(masks) == int(0.2 * 3600 // 239.7)
    assert [r.value for r in masks] == sorted((r.value for r in masks), reverse=True)  # mean entropy, highest first
    only = advise(run, data, 1.0, kinds=[Kind.MASK, Kind.BOX], images=boxed, threads=1)
    assert {r.image for r in only} == set(boxed) and {r.kind for r in only} == {Kind.MASK}  # a boxed image: masks
    slow = AnnotationCosts.from_items(["mask=100000", "box=100000", "point=100000"])
    assert {r.kind for r in advise(run, data, 0.05, slow, threads=1)} == {Kind.IMAGE}
    advice = advise_run(run, data, 0.05, threads=1)
    assert advice.candidates == sum(1 for k in has.values() if k != Kind.MASK)


def test_bad_input_is_one_sentence(tiny, tmp_path):
    run, data = tiny
    with pytest.raises(OptionError, match="--hours"):
        advise(run, data, 0)
    with pytest.raises(OptionError, match="kinds"):
        advise(run, data, 1, kinds=["scribble"])
    with pytest.raises(OptionError, match="not a training record"):
        advise(run, data, 1, images=["nowhere.tif"])
    with pytest.raises(CheckpointError):
        advise(tmp_path / "no-run", data, 1)
    other = tmp_path / "other"
    shutil.copytree(data, other)
    manifest = json.loads((other / "dataset.json").read_text())
    manifest["classes"] = manifest["classes"][::-1]
    (other / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="classes"):
        advise(run, other, 1)


def test_the_command_writes_csv_markdown_and_picture(tiny, tmp_path):
    run, data = tiny
    out = tmp_path / "advice"
    res = runner.invoke(app, ["advise", str(run), str(data), "--hours", "0.05", "--cost", "box=5", "--out", str(out),
                              "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "request(s)" in res.output
    rows = list(csv.DictReader((out / "advice.csv").open()))
    assert rows and [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert sum(float(r["cost_s"]) for r in rows) <= 0.05 * 3600 + 0.1 * len(rows)
    assert float(rows[-1]["cumulative_s"]) <= 180.0 + 0.1
    assert all(r["kind"] in (Kind.MASK, Kind.BOX, Kind.POINT, Kind.IMAGE) and r["reason"] for r in rows)
    md = (out / "advice.md").read_text()
    assert "| # | image | request |" in md and "## Totals" in md and "box 5 s" in md
    assert (out / "advice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = runner.invoke(app, ["advise", str(run), str(data), "--hours", "0.05", "--out", str(out), "--threads", "1"])
    assert again.exit_code == 0, again.output  # an earlier advice is replaced


@pytest.mark.parametrize("args, code, words", [
    (["RUN", "DATA", "--hours", "0"], 2, "--hours"),
    (["RUN", "DATA", "--hours", "1", "--cost", "scribble=3"], 2, "--cost 'scribble=3'"),
    (["RUN", "DATA", "--hours", "1", "--kinds", "mask,scribble"], 2, "kinds"),
    (["NORUN", "DATA", "--hours", "1"], 2, "no-run does not exist"),
    (["RUN", "NODATA", "--hours", "1"], 1, "dataset.json"),
])
def test_the_command_refuses_bad_input_in_one_sentence(tiny, tmp_path, args, code, words):
    run, data = tiny
    subs = {"RUN": str(run), "DATA": str(data), "NORUN": str(tmp_path / "no-run"), "NODATA": str(tmp_path)}
    res = runner.invoke(app, ["advise", *[subs.get(a, a) for a in args], "--out", str(tmp_path / "out")])
    assert res.exit_code == code, res.output
    assert "error:" in res.output and words in res.output and "Traceback" not in res.output


def test_a_budget_nothing_fits_in_says_so(tiny, tmp_path):
    run, data = tiny
    out = tmp_path / "advice"
    res = runner.invoke(app, ["advise", str(run), str(data), "--hours", "0.0001", "--out", str(out), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "0 request(s)" in res.output and "Nothing fits the budget" in (out / "advice.md").read_text()
    assert (out / "advice.csv").read_text().startswith("rank,image,kind,cost_s") and (out / "advice.png").is_file()
