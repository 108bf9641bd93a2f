"""What a sweep runs: every (method, scenario, ACR, split), where it lives, what it starts from.

    >>> spec = StudySpec(data="syn", methods=["basic", "dsp:variant=reference"], scenarios=["mixed"],
    ...                  acrs=[1, 8], splits=2)
    >>> [r.key for r in spec.runs()][:3]
    ['shared/acr1/split0/basic', 'shared/acr1/split1/basic', 'shared/acr8/split0/basic']

Paper §5.2: the basic U-Net, trained on the masks alone, "serves as initialization for all
remaining methods". ``init_from_basic`` (the default) does the same: every other run of an
(ACR, split) starts from the weights of that cell's ``basic`` run, which is therefore always part
of the study.

Fine-tuned methods then train N steps on top of basic's N: 2N steps from random weights against
basic's N, and an undertrained reference flatters them (at ACR 1 on the synthetic default, basic
scores 0.418 after 300 steps and 0.632 after 600; BENCHMARKS.md). ``step_budget="matched"`` (the
default) therefore also continues ``basic`` for the same N steps from its own weights — the run
``basic-matched``, masks only, the reference of the report, the savings and the budget — so every
method the report compares has trained as many steps from random weights. ``step_budget="added"``
is the paper's protocol as written (no such run; the reference is the N-step ``basic``).

Methods that learn from masks only see the same images in every scenario (the kept masks depend on
ACR and split, not on what the other images get), so they are trained once per
(ACR, split) under ``runs/shared/`` and reported in every scenario.

This module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dspseg.study.costs import AnnotationCosts
from dspseg.vocabulary import SCENARIOS

SHARED = "shared"


def acr_name(acr: float) -> str:
    """``8.0`` → ``"8"``, ``1.5`` → ``"1.5"`` (folder names and tables)."""
    return f"{float(acr):g}"


@dataclass(frozen=True)
class MethodSpec:
    """A method with its own options: ``"dsp:variant=reference:tau=0.5"``.

    ``label`` is the text as written (the ``method`` column of results.csv), ``name`` the registered
    method, ``options`` its ``method_options`` (YAML values).
    """

    label: str
    name: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        from dspseg.methods import get_method

        text = text.strip()
        name, *items = text.split(":")
        try:
            method = get_method(name)
        except ValueError as e:
            raise ValueError(f"--methods '{text}': {e}") from None
        options: dict[str, Any] = {}
        for item in items:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--methods '{text}': '{item}' is not KEY=VALUE; write e.g. dsp:tau=0.5:prototypes=1")
            value = yaml.safe_load(raw) if raw.strip() else None
            node = options
            *parents, last = key.strip().split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        try:
            method.Options.model_validate(options)
        except Exception as e:  # pydantic's message names the field
            first = str(e).splitlines()
            raise ValueError(f"--methods '{text}': bad option for {name} ({'; '.join(first[1:3]).strip()}); "
                             f"`dspseg train --help` and the method's docs list its options") from None
        return cls(text, name, options)

    @property
    def folder(self) -> str:
        """Folder name: the label with ':' → '+' (``dsp+variant=reference``)."""
        return self.label.replace(":", "+").replace("/", "_")

    @property
    def uses(self) -> frozenset[str]:
        from dspseg.methods import get_method

        return get_method(self.name).uses

    @property
    def mask_only(self) -> bool:
        return self.uses == frozenset({"mask"})


BASIC = MethodSpec("basic", "basic")
# `basic` continued from its own weights for the steps the fine-tuned methods train on top of it
BASIC_MATCHED = MethodSpec("basic-matched", "basic")


@dataclass(frozen=True)
class RunSpec:
    """One training run of a study."""

    method: MethodSpec
    scenario: str  # SHARED for mask-only methods
    acr: float
    split: int

    @property
    def key(self) -> str:
        return f"{self.scenario}/acr{acr_name(self.acr)}/split{self.split}/{self.method.folder}"

    def run_dir(self, root: Path) -> Path:
        return Path(root) / "runs" / self.key

    def log_file(self, root: Path) -> Path:
        return Path(root) / "logs" / (self.key.replace("/", "_") + ".log")


def data_dir(root: Path, scenario: str, acr: float, split: int) -> Path:
    """The simulated dataset of one (scenario, ACR, split)."""
    return Path(root) / "data" / f"{scenario}-acr{acr_name(acr)}-split{split}"


class StudySpec(BaseModel):
    """A whole sweep; written to ``DIR/study.yaml``. ``train`` holds TrainConfig keys (no method)."""

    model_config = ConfigDict(extra="forbid")
    data: str
    methods: list[str] = Field(min_length=1)
    scenarios: list[str] = Field(default_factory=lambda: ["mixed"], min_length=1)
    acrs: list[float] = Field(min_length=1)
    splits: int = Field(3, ge=1, description="cross-validation splits run (0 .. splits-1)")
    n_splits: int = Field(3, ge=1, description="cross-validation splits the data is divided into (>= splits)")
    seed: int = Field(0, ge=0, description="seed of the splits and image order (dspseg simulate --seed)")
    init_from_basic: bool = True
    step_budget: Literal["matched", "added"] = Field(
        "matched", description="matched: basic is also continued for the steps the others train on top of it "
        "(basic-matched, the reference); added: the paper's protocol, the reference has half their steps")
    train: dict[str, Any] = Field(default_factory=dict)
    costs: AnnotationCosts = Field(default_factory=AnnotationCosts)

    @model_validator(mode="after")
    def _enough_splits(self) -> StudySpec:
        if self.n_splits < self.splits:
            self.n_splits = self.splits
        return self

    @field_validator("scenarios")
    @classmethod
    def _scenarios(cls, v: list[str]) -> list[str]:
        for s in v:
            if s not in SCENARIOS:
                raise ValueError(f"unknown scenario '{s}'; choose from {', '.join(SCENARIOS)}")
        return list(dict.fromkeys(v))

    @field_validator("acrs")
    @classmethod
    def _acrs(cls, v: list[float]) -> list[float]:
        for a in v:
            if not a >= 1:
                raise ValueError(f"ACR {a} is below 1; an ACR keeps masks on 1 in ACR training images")
        return sorted(set(float(a) for a in v))

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        specs = [MethodSpec.parse(m) for m in v]
        labels = [s.label for s in specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"a method is listed twice in {', '.join(labels)}")
        return labels

    @property
    def fine_tunes(self) -> bool:
        """Whether some method of the study starts from the basic U-Net."""
        return self._fine_tunes([MethodSpec.parse(m) for m in self.methods])

    def _fine_tunes(self, specs: list[MethodSpec]) -> bool:
        return self.init_from_basic and any(s != BASIC for s in specs)

    def method_specs(self) -> list[MethodSpec]:
        """The methods, with ``basic`` first when other methods start from it, and ``basic-matched``
        right after it when the step budget is matched."""
        specs = [MethodSpec.parse(m) for m in self.methods]
        if self._fine_tunes(specs):
            if BASIC not in specs:
                specs.insert(0, BASIC)
            if self.step_budget == "matched":
                specs.insert(specs.index(BASIC) + 1, BASIC_MATCHED)
        return specs

    @property
    def reference(self) -> str:
        """The method label the report, the savings and the budget compare against."""
        return BASIC_MATCHED.label if self.fine_tunes and self.step_budget == "matched" else BASIC.label

    def scenario_of(self, method: MethodSpec, scenario: str) -> str:
        return SHARED if method.mask_only else scenario

    def runs(self) -> list[RunSpec]:
        """Every run once (mask-only methods once per ACR and split), dependencies first."""
        out: dict[str, RunSpec] = {}
        for method in self.method_specs():
            for scenario in self.scenarios:
                for acr in self.acrs:
                    for split in range(self.splits):
                        r = RunSpec(method, self.scenario_of(method, scenario), acr, split)
                        out.setdefault(r.key, r)
        return sorted(out.values(), key=lambda r: (self.init_parent(r) is not None, r.acr, r.split, r.key))

    def init_parent(self, run: RunSpec) -> RunSpec | None:
        """The run whose weights ``run`` starts from (None: from scratch)."""
        if not self.init_from_basic or run.method == BASIC:
            return None
        return RunSpec(BASIC, SHARED, run.acr, run.split)

    def budget_text(self) -> str:
        """One sentence: how many steps each method of the study trains from random weights."""
        steps = self.train.get("steps")
        n = f"{steps}" if steps else "N"
        n2 = f"{2 * steps}" if steps else "2N"
        if not self.fine_tunes:
            return f"Every method trains {n} steps from random weights."
        if self.step_budget == "matched":
            return (f"Step-matched budgets: the fine-tuned methods train {n} steps on top of the {n}-step `basic`, and "
                    f"`basic-matched` continues `basic` for the same {n} steps on its masks, so every method but the "
                    f"initialisation `basic` has trained {n2} steps from random weights; `basic-matched` is the reference.")
        return (f"Added budgets (the paper's protocol): the fine-tuned methods train {n} steps on top of the "
                f"{n}-step `basic`, {n2} from random weights, while the reference `basic` has trained {n}.")

    def dataset_of(self, root: Path, run: RunSpec) -> Path:
        """The simulated dataset a run trains on (a shared run uses its first scenario's dataset:
        the masks, the splits and the image normalisation are the same in every scenario)."""
        scenario = self.scenarios[0] if run.scenario == SHARED else run.scenario
        return data_dir(root, scenario, run.acr, run.split)

    def cells(self) -> list[tuple[str, float, int]]:
        """Every (scenario, ACR, split) whose simulated dataset the study needs."""
        return [(s, a, k) for s in self.scenarios for a in self.acrs for k in range(self.splits)]

    def rows_for(self, run: RunSpec) -> list[tuple[str, RunSpec]]:
        """The (scenario, run) rows ``run`` stands for in results.csv (a shared run: every scenario)."""
        if run.scenario != SHARED:
            return [(run.scenario, run)]
        return [(s, run) for s in self.scenarios]
