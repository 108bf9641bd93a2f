"""TrainConfig: defaults, YAML + flags + --set precedence, dotted method options, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from dspseg.engine.config import (ConfigError, TrainConfig, check_resume_changes, config_to_yaml, parse_set,
                                  resolve_config)
from dspseg.methods import METHODS, register
from dspseg.methods.base import Method


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mask: float = 0.1


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tau: float = Field(0.05, gt=0)
    lambdas: _Inner = Field(default_factory=_Inner)


@pytest.fixture
def opts_method():
    @register
    class OptsMethod(Method):
        name = "cfgtest"
        summary = "test-only method with options"
        uses = frozenset({"mask"})
        Options = _Opts

        def loss(self, outputs, batch):
            return {"zero": outputs["logits"].sum() * 0}

    yield OptsMethod
    METHODS.pop("cfgtest", None)


def test_defaults_are_the_papers_optimiser() -> None:
    cfg = resolve_config()
    assert (cfg.method, cfg.lr, cfg.betas, cfg.weight_decay) == ("basic", 6e-5, (0.9, 0.999), 0.01)
    assert (cfg.steps, cfg.epochs, cfg.batch_size, cfg.crop_size, cfg.width) == (1000, None, 8, 128, 16)
    assert cfg.precision == "32-true" and cfg.method_options == {"augment": True, "weak_jitter": 0.2}


def test_precedence_yaml_then_flags_then_set(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.001\nbatch_size: 4\nwidth: 32\nseed: 3\n")
    cfg = resolve_config(f, flags={"batch_size": 2, "width": None}, sets=["width=8", "betas=[0.8, 0.99]"])
    assert cfg.lr == 0.001 and cfg.seed == 3  # from the file
    assert cfg.batch_size == 2  # flag beats file; a None flag is "not given"
    assert cfg.width == 8 and cfg.betas == (0.8, 0.99)  # --set beats everything


def test_dotted_method_options_are_validated_and_filled(opts_method) -> None:
    cfg = resolve_config(sets=["method=cfgtest", "method_options.tau=0.1", "method_options.lambdas.mask=0.5"])
    assert cfg.method_options == {"tau": 0.1, "lambdas": {"mask": 0.5}}
    cfg = resolve_config(sets=["method=cfgtest"])
    assert cfg.method_options == {"tau": 0.05, "lambdas": {"mask": 0.1}}  # defaults written out


def test_steps_and_epochs_later_source_wins(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 5\n")
    assert (resolve_config(f, flags={"steps": 7}).steps, resolve_config(f, flags={"steps": 7}).epochs) == (7, None)
    cfg = resolve_config(f)
    assert (cfg.steps, cfg.epochs) == (None, 5)
    f.write_text("epochs: 5\nsteps: 3\n")
    with pytest.raises(ConfigError, match="either steps or epochs"):
        resolve_config(f)


def test_yaml_round_trip(tmp_path: Path, opts_method) -> None:
    cfg = resolve_config(flags={"steps": 12}, sets=["method=cfgtest", "method_options.tau=0.2", "init=runs/a"])
    f = tmp_path / "config.yaml"
    f.write_text(config_to_yaml(cfg))
    assert resolve_config(f) == cfg


@pytest.mark.parametrize("sets, pieces", [
    (["lrr=0.1"], ["unknown option 'lrr'", "--set lrr=0.1", "did you mean 'lr'"]),
    (["batch_size=abc"], ["'batch_size'", "'abc'", "--set batch_size=abc", "integer"]),
    (["precision=fp16"], ["'precision'", "'fp16'", "'32-true'", "'bf16-mixed'"]),
    (["steps=0"], ["'steps'", "0", "greater than or equal to 1"]),
    (["betas=[0.9]"], ["'betas'", "[0.9]", "wrong number of entries"]),
    (["method=basc"], ["unknown method 'basc'", "did you mean 'basic'"]),
    (["method_options.tau=1"], ["method_options.tau", "allowed keys: weak_jitter, augment"]),
    (["lr"], ["--set 'lr' has no '='"]),
    (["lr.x=1"], ["only method_options takes dotted keys"]),
    (["lr=[1, 2"], ["--set lr=[1, 2", "not valid YAML"]),
])
def test_errors_are_one_clear_sentence(sets: list[str], pieces: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config(sets=sets)
    message = str(err.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message


def test_unknown_method_option_suggests_closest(opts_method) -> None:
    with pytest.raises(ConfigError, match=r"method_options.taus.*did you mean 'tau'"):
        resolve_config(sets=["method=cfgtest", "method_options.taus=1"])
    with pytest.raises(ConfigError, match=r"method_options.tau.*-1.*greater than 0"):
        resolve_config(sets=["method=cfgtest", "method_options.tau=-1"])


def test_yaml_file_errors_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("lr: 0.1\nwidth: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML at line \d+"):
        resolve_config(f)
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        resolve_config(f)
    f.write_text("widht: 8\n")
    with pytest.raises(ConfigError, match=r"unknown option 'widht' \(from the config file .*bad.yaml\); did you mean 'width'"):
        resolve_config(f)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        resolve_config(tmp_path / "missing.yaml")


def test_parse_set_values_are_yaml() -> None:
    assert parse_set("a=1e-4") == (["a"], 1e-4)
    assert parse_set("method_options.x.y=true") == (["method_options", "x", "y"], True)
    assert parse_set("init=runs/a=b") == (["init"], "runs/a=b")


def test_resume_may_change_only_the_budget_and_machine() -> None:
    saved = TrainConfig(steps=10)
    check_resume_changes(saved, TrainConfig(steps=20, threads=2, val_every=5))
    with pytest.raises(ConfigError, match="cannot change 'lr' when resuming"):
        check_resume_changes(saved, TrainConfig(steps=20, lr=1e-3))


def test_commands_and_methods_import_without_torch() -> None:
    """`dspseg --help` must stay instant: the command module, the config and every registered method
    load without torch (methods import it inside their functions)."""
    import subprocess
    import sys

    code = ("import sys, dspseg.engine.commands, dspseg.engine.config, dspseg.methods; "
            "heavy = [m for m in ('torch', 'lightning_fabric', 'matplotlib') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
