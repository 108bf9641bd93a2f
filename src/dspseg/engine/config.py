"""Training configuration: defaults < YAML file (``--config``) < command-line flags < ``--set``.

    >>> cfg = resolve_config(sets=["lr=1e-4", "method_options={}"], flags={"steps": 50})
    >>> cfg.lr, cfg.steps
    (0.0001, 50)

``--set key=value`` takes a dotted key (``method_options.tau=0.05``) and a YAML value (``1e-4``,
``[0.9, 0.99]``, ``true``). Every mistake raises :class:`ConfigError` with one sentence naming the
key, the value, where it came from and what is allowed (with the closest key for typos).
The method's own options (``method_options``) are validated by the method's ``Options`` model.
This module imports neither torch nor lightning (the CLI's ``--help`` must stay instant).
"""

from __future__ import annotations

import itertools
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dspseg.cli_support import did_you_mean
from dspseg.errors import ConfigError

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


class TrainConfig(BaseModel):
    """Every setting of a training run; written to ``OUT/config.yaml`` fully resolved."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    method: str = Field("basic", description="training method (see `dspseg train --help`)")
    steps: int | None = Field(None, ge=1, description="optimiser steps; default 1000 unless epochs is set")
    epochs: int | None = Field(None, ge=1, description="passes over the usable training images (instead of steps)")
    batch_size: int = Field(8, ge=1, description="images per step (per device)")
    crop_size: int = Field(128, ge=8, description="side of the random training crops, pixels")
    mask_share: float = Field(0.25, ge=0, lt=1, description="least share of every batch drawn from the fully "
                              "masked images (at least 1 image) when fewer of the usable images have masks; "
                              "epochs then count passes over the others (0: batches drawn from all alike; "
                              "0.25, the default, added 8-19 Dice points to dsp and fixmatch at ACR 8-64 on "
                              "3 splits and changes nothing where a quarter of the images are masked; "
                              "see BENCHMARKS.md)")
    width: int = Field(16, ge=1, description="U-Net channels at full resolution (paper: 64)")
    levels: int = Field(5, ge=1, le=8, description="U-Net resolution levels (paper: 5)")
    lr: float = Field(6e-5, gt=0, description="AdamW learning rate (paper: 6e-5)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas (paper: 0.9, 0.999)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (paper: 0.01)")
    seed: int = Field(0, ge=0, description="seed of weights, data order and crops")
    val_every: int = Field(100, ge=0, description="validate every N steps (0: only at the end)")
    log_every: int = Field(10, ge=1, description="log a line / metrics.csv row every N steps")
    tile: int = Field(256, ge=16, description="tile side for validating images larger than it")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice)")
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = Field("32-true", description="numeric precision")
    accumulate: int = Field(1, ge=1, description="micro-batches of batch_size per optimiser step (gradient "
                            "accumulation; DSP's eq. 8 then normalises over each micro-batch)")
    accelerator: str = Field("auto", description="cpu, cuda, mps, gpu or auto")
    devices: int | str = Field(1, description="number of devices, or 'auto'")
    num_nodes: int = Field(1, ge=1, description="machines in a multi-node run (torchrun / SLURM)")
    num_workers: int | None = Field(None, ge=0, description="data loader worker processes (default: 0 on a CPU, "
                                    "2 on a GPU, where they overlap batch assembly with compute)")
    init: str | None = Field(None, description="run folder whose model weights to start from")
    method_options: dict[str, Any] = Field(default_factory=dict, description="the method's own options")

    @model_validator(mode="before")
    @classmethod
    def _default_budget(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("steps") is None and data.get("epochs") is None:
            data = {**data, "steps": DEFAULT_STEPS}
        return data

    @model_validator(mode="after")
    def _budget(self) -> TrainConfig:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        if not 0.0 <= self.betas[0] < 1.0 or not 0.0 <= self.betas[1] < 1.0:
            raise ValueError(f"betas must both be in [0, 1), got {list(self.betas)}")
        return self

    def budget(self) -> str:
        """``"1000 steps"`` or ``"20 epochs"``."""
        return f"{self.epochs} epochs" if self.epochs is not None else f"{self.steps} steps"


DEFAULT_STEPS = 1000

# Settings that may differ when resuming a run (they do not change what is computed).
RESUMABLE = frozenset({"steps", "epochs", "val_every", "log_every", "threads", "num_workers",
                       "accelerator", "devices", "num_nodes", "tile"})


def _closest(key: str, choices: list[str]) -> str:
    return did_you_mean(key, choices, otherwise=f"; allowed keys: {', '.join(choices)}")


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_set(item: str) -> tuple[list[str], Any]:
    """``"a.b=VALUE"`` → (["a", "b"], yaml.safe_load(VALUE)); ConfigError on a missing '='."""
    if "=" not in item:
        raise ConfigError(f"--set '{item}' has no '='; write --set key=value, e.g. --set lr=1e-4")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set '{item}' has an empty key; write --set key=value, e.g. --set lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}={raw}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    return key.split("."), value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (``{}`` if empty); ConfigError naming the file otherwise."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read the config file {p} ({e.strerror or e}); check the path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"the config file {p} is not valid YAML{where}; fix its syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"the config file {p} must hold a mapping of keys to values (key: value lines), "
                          f"got a {type(data).__name__}")
    return data


def _describe_error(err: ValidationError, sources: dict[str, str], values: dict[str, Any]) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    top = str(e["loc"][0]) if e["loc"] else ""
    if e["type"] == "extra_forbidden":
        fields = list(TrainConfig.model_fields)
        return f"unknown option '{loc}' (from {sources.get(top, 'the configuration')}){_closest(top, fields)}"
    if not top:
        return f"invalid configuration: {e['msg']}"
    field = TrainConfig.model_fields.get(top)
    desc = f" ({field.description})" if field is not None and field.description else ""
    msg = e["msg"].rstrip(".")
    if len(e["loc"]) > 1 and e["type"] in ("missing", "too_long", "too_short"):
        msg = "wrong number of entries"
    return (f"option '{top}'{desc} got {values.get(top)!r} from {sources.get(top, 'the configuration')}: "
            f"{msg}")


def _validate_method_options(cfg: TrainConfig, sources: dict[str, str]) -> TrainConfig:
    from dspseg.methods import get_method

    try:
        method = get_method(cfg.method)
    except ValueError as e:
        raise ConfigError(f"option 'method' (from {sources.get('method', 'the default')}): {e}") from None
    try:
        opts = method.Options.model_validate(cfg.method_options)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(str(p) for p in e["loc"])
        where = sources.get("method_options", "the configuration")
        if e["type"] == "extra_forbidden":
            fields = list(method.Options.model_fields)
            hint = _closest(key, fields) if fields else f"; method '{cfg.method}' takes no options"
            raise ConfigError(f"unknown option 'method_options.{key}' for method '{cfg.method}' "
                              f"(from {where}){hint}") from None
        raise ConfigError(f"option 'method_options.{key}' = {e.get('input')!r} (from {where}) is not "
                          f"allowed for method '{cfg.method}': {e['msg'].rstrip('.')}") from None
    cfg.method_options = opts.model_dump(mode="json")
    return cfg


def resolve_config(config: str | Path | None = None, flags: dict[str, Any] | None = None,
                   sets: list[str] | None = None, base: dict[str, Any] | None = None) -> TrainConfig:
    """Merge ``base`` (e.g. a resumed run's config) < YAML file < ``flags`` (None values skipped) < ``sets``.

    Returns a validated :class:`TrainConfig` whose ``method_options`` hold every option of the
    method with its default filled in. Raises :class:`ConfigError` on any unknown key or bad value.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    rank: dict[str, int] = {}  # when each key was last set, to let the later of steps/epochs win
    counter = itertools.count()

    def put(key: str, value: Any, source: str) -> None:
        values[key], sources[key], rank[key] = value, source, next(counter)

    for k, v in (base or {}).items():
        put(k, v, "the resumed run's config.yaml")
    if config is not None:
        for k, v in read_yaml(config).items():
            put(str(k), v, f"the config file {config}")
    for k, v in (flags or {}).items():
        if v is not None:
            put(k, v, f"--{k.replace('_', '-')}")
    for item in sets or []:
        keys, value = parse_set(item)
        if len(keys) == 1:
            put(keys[0], value, f"--set {item}")
            continue
        if keys[0] != "method_options":
            raise ConfigError(f"--set {item}: only method_options takes dotted keys "
                              f"(e.g. --set method_options.tau=0.1); '{keys[0]}' is a plain option")
        node = values.get("method_options") or {}
        put("method_options", node, f"--set {item}")
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item}: method_options is {node!r}, not a mapping")
        node = values["method_options"] = dict(node)
        for part in keys[1:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[keys[-1]] = value
    if values.get("steps") is not None and values.get("epochs") is not None:
        # the later source wins: a --steps flag overrides epochs from a config file and vice versa
        if sources["steps"] == sources["epochs"]:
            raise ConfigError(f"give either steps or epochs, not both ({sources['steps']} sets both)")
        values["epochs" if rank["steps"] > rank["epochs"] else "steps"] = None
    try:
        cfg = TrainConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_describe_error(err, sources, values)) from None
    return _validate_method_options(cfg, sources)


def config_to_yaml(cfg: TrainConfig) -> str:
    """The resolved configuration as YAML text (keys in definition order)."""
    data = cfg.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def check_resume_changes(saved: TrainConfig, new: TrainConfig) -> None:
    """ConfigError if ``new`` changes a setting outside :data:`RESUMABLE` compared with ``saved``."""
    a, b = saved.model_dump(mode="json"), new.model_dump(mode="json")
    changed = [k for k in a if k not in RESUMABLE and a[k] != b[k]]
    if changed:
        k = changed[0]
        raise ConfigError(f"cannot change '{k}' when resuming (run: {a[k]!r}, given: {b[k]!r}); "
                          f"only {', '.join(sorted(RESUMABLE))} may change; start a new run with a new --out")


# ------------------------------------------------------------------------- help texts of the flags


@lru_cache(maxsize=1)
def _train_defaults() -> Any:
    return TrainConfig()


def train_default(name: str) -> str:
    """A training option's default as help texts print it: ``train_default("steps")`` → ``"1000"``."""
    return str(getattr(_train_defaults(), name))


def train_option(name: str, *flags: str, help: str, **kwargs: Any) -> Any:
    """A typer option for the training setting ``name`` that defaults to ``None`` (the config decides).

    ``{default}`` in ``help`` becomes :func:`train_default` of ``name``; the option's least value
    (``min``) is the field's ``ge`` bound unless given. ``train_option("steps", "--steps",
    help="Training steps of every run (default: {default}).")`` prints ``(default: 1000)`` and ``x>=1``.
    """
    import typer  # only command modules call this

    if "min" not in kwargs:
        bounds = [getattr(m, "ge") for m in TrainConfig.model_fields[name].metadata if hasattr(m, "ge")]
        if bounds:
            kwargs["min"] = bounds[0]
    return typer.Option(None, *flags, help=help.format(default=train_default(name)), **kwargs)
