"""The train, evaluate and predict commands end to end: exit codes, messages, the files they write."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from dspseg.methods import METHODS

from engine_common import easy  # noqa: F401  (fixture)


def _app() -> typer.Typer:
    from dspseg.engine.commands import evaluate, predict
    from dspseg.engine.commands import train as train_cmd

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(name="train")(train_cmd)
    app.command(name="evaluate")(evaluate)
    app.command(name="predict")(predict)
    return app


def test_cli_train_evaluate_predict(easy: Path, tmp_path: Path) -> None:
    app, runner = _app(), CliRunner()
    out = tmp_path / "run"
    args = ["train", str(easy), "--out", str(out), "--steps", "4", "--width", "4", "--batch-size", "4",
            "--val-every", "2", "--set", "levels=3", "--set", "crop_size=32", "--set", "log_every=2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "step 4/4" in r.output and (out / "checkpoints/best.pt").is_file()

    r = runner.invoke(app, args)  # same OUT again
    assert r.exit_code == 2 and "is not empty" in r.output and "Traceback" not in r.output

    r = runner.invoke(app, ["train", str(easy), "--out", str(tmp_path / "x"), "--set", "lrr=1"])
    assert r.exit_code == 2 and "did you mean 'lr'" in r.output and not (tmp_path / "x").exists()

    r = runner.invoke(app, ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "y"), "--steps", "1"])
    assert r.exit_code == 1 and "Traceback" not in r.output

    r = runner.invoke(app, ["evaluate", str(out), str(easy), "--split", "test"])
    assert r.exit_code == 0, r.output
    assert "rect" in r.output and "background included" in r.output
    assert json.loads((out / "eval/test.json").read_text())["images"] == 4

    r = runner.invoke(app, ["evaluate", str(tmp_path / "norun"), str(easy)])
    assert r.exit_code == 2 and "does not exist" in r.output

    r = runner.invoke(app, ["predict", str(out), str(easy / "i0.tif"), "--out", str(tmp_path / "pred"), "--overlay"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "pred/i0.tif").is_file() and (tmp_path / "pred/i0_overlay.png").is_file()


def test_cli_help_lists_methods() -> None:
    r = CliRunner().invoke(_app(), ["train", "--help"])
    assert r.exit_code == 0
    for name, cls in METHODS.items():
        assert name in r.output
    assert "paper uses 64" in r.output and "--resume" in r.output


def test_cli_device_flags_reach_the_config(easy: Path, tmp_path: Path) -> None:
    import yaml

    app, runner = _app(), CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", str(easy), "--out", str(out), "--steps", "1", "--width", "4", "--batch-size", "4",
                            "--accelerator", "cpu", "--devices", "1", "--num-nodes", "1", "--set", "levels=3",
                            "--set", "crop_size=32", "--threads", "1"])
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["accelerator"], cfg["devices"], cfg["num_nodes"]) == ("cpu", 1, 1)
    r = runner.invoke(app, ["train", str(easy), "--out", str(tmp_path / "bad"), "--steps", "1",
                            "--accelerator", "abacus"])
    assert r.exit_code == 2 and "accelerator" in r.output and "Traceback" not in r.output
