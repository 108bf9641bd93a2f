"""What a simulated annotation loop runs (``dspseg study loop``): its settings, its tasks, where they live.

A loop folder explains itself::

    DIR/loop.yaml                               the resolved loop (:class:`LoopSpec`)
    DIR/data/split<k>/start/                    the ACR protocol's mixed reduction at the start ACR
                                                (``dspseg simulate``; hard links to DATA's files)
    DIR/data/split<k>/<strategy>/round<r>/      the dataset after round r: the previous round's plus
                                                the answers to this round's requests; round.json
                                                (written last) lists every request, its estimated and
                                                its actual cost, and whether it was answered
    DIR/runs/split<k>/start/                    the start model, trained once per split (every
                                                strategy starts from it)
    DIR/runs/split<k>/<strategy>/round<r>/      round r's model: the previous round's best weights
                                                trained on round r's dataset for the same steps
    DIR/results.csv, DIR/loop.png, DIR/report.md

A task is one run: the start of a split, or one (strategy, split, round), which depends on the
previous round of its strategy and split (round 1 on the start). This module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dspseg.study.costs import AnnotationCosts

#: the strategies a loop compares (``--strategies``)
STRATEGIES = ("advisor", "random", "masks-random", "uncertainty-masks", "boxes-random", "points-random",
              "labels-random", "none")
START = "start"
LOOP_FILE = "loop.yaml"
ROUND_FILE = "round.json"


class LoopSpec(BaseModel):
    """A whole loop; written to ``DIR/loop.yaml``. ``train`` holds TrainConfig keys (no method, no init)."""

    model_config = ConfigDict(extra="forbid")
    data: str = Field(description="the fully masked dataset the oracle answers from")
    start_acr: float = Field(32.0, ge=1, description="ACR of the mixed start (1 in ACR training images masked)")
    rounds: int = Field(3, ge=1)
    hours_per_round: float = Field(0.25, gt=0, description="annotation hours each strategy may spend per round")
    strategies: list[str] = Field(min_length=1)
    splits: int = Field(3, ge=1, description="cross-validation splits run (0 .. splits-1)")
    n_splits: int = Field(3, ge=1, description="cross-validation splits the data is divided into (>= splits)")
    seed: int = Field(0, ge=0, description="seed of the splits, the image order and the random strategies")
    method: str = Field("dsp", description="training method of every run (it must learn from every kind)")
    train: dict[str, Any] = Field(default_factory=dict)
    start_steps: int | None = Field(None, ge=1, description="training steps of the start model (None: the rounds' "
                                    "steps); more lets the start converge, so that a round's gain is its annotation")
    costs: AnnotationCosts = Field(default_factory=AnnotationCosts)

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, v: list[str]) -> list[str]:
        from dspseg.cli_support import did_you_mean

        for s in v:
            if s not in STRATEGIES:
                raise ValueError(f"unknown strategy '{s}'{did_you_mean(s, STRATEGIES)}; choose from "
                                 f"{', '.join(STRATEGIES)}")
        if len(set(v)) != len(v):
            raise ValueError(f"a strategy is listed twice in {', '.join(v)}")
        return list(v)

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        from dspseg.methods import get_method
        from dspseg.vocabulary import POSITIVE_KINDS

        uses = get_method(v).uses  # ValueError naming the methods for an unknown one
        missing = [k for k in POSITIVE_KINDS if k not in uses]
        if missing:
            raise ValueError(f"method '{v}' does not learn from {', '.join(missing)} annotations, which the loop "
                             "asks for; use a method that learns from every kind, e.g. dsp")
        return v

    def model_post_init(self, _: Any) -> None:
        self.n_splits = max(self.n_splits, self.splits)

    @property
    def budget_s(self) -> float:
        """Seconds of annotation each strategy may spend in one round."""
        return self.hours_per_round * 3600.0

    def tasks(self) -> list[LoopTask]:
        """Every task, each after the one it starts from: the starts, then round 1 of every strategy, ..."""
        out = [LoopTask(START, k, 0) for k in range(self.splits)]
        out += [LoopTask(s, k, r) for r in range(1, self.rounds + 1) for k in range(self.splits)
                for s in self.strategies]
        return out


@dataclass(frozen=True)
class LoopTask:
    """One run of a loop: the start model of a split (``strategy == START``, round 0) or a round."""

    strategy: str
    split: int
    round: int

    @property
    def key(self) -> str:
        return f"split{self.split}/{START}" if self.is_start else f"split{self.split}/{self.strategy}/round{self.round}"

    @property
    def is_start(self) -> bool:
        return self.strategy == START

    @property
    def parent(self) -> LoopTask | None:
        """The task whose model and dataset this one starts from (None for a start)."""
        if self.is_start:
            return None
        return LoopTask(START, self.split, 0) if self.round == 1 else LoopTask(self.strategy, self.split, self.round - 1)

    def run_dir(self, root: Path) -> Path:
        return Path(root) / "runs" / self.key

    def data_dir(self, root: Path) -> Path:
        return Path(root) / "data" / self.key

    def log_file(self, root: Path) -> Path:
        return Path(root) / "logs" / (self.key.replace("/", "_") + ".log")
