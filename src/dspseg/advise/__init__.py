"""The annotation advisor: which images to annotate next, and with which annotation type, within H hours.

    dspseg advise RUN DATA --hours 0.25 [--cost mask=3600] [--out DIR]

From a trained run and its dataset (the current annotations), every training record that can still
gain information is predicted (:mod:`~dspseg.advise.beliefs`); each annotation type it may still get
(never what it has or what its annotation subsumes) gets an estimated cost in seconds and value in
nats of resolved uncertainty (:mod:`~dspseg.advise.estimate`); requests are chosen by value per
second under the budget, kept diverse (:mod:`~dspseg.advise.rank`). ``advice.csv``, ``advice.md`` and
``advice.png`` are written by :mod:`~dspseg.advise.report`. docs/advisor.md explains the design and
the measurements behind it.

    >>> Request("images/a.tif", Kind.BOX, 70.0, 12.5, "boxes: ...").kind
    'box'

torch is imported inside the functions (this package imports nothing heavy at import time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dspseg.costs import AnnotationCosts
from dspseg.errors import OptionError
from dspseg.vocabulary import Kind

#: ``rank_by`` values: the advisor, and the uncertainty-only baseline (MONAI Label's ranking)
RANKINGS = ("value", "uncertainty")


@dataclass(frozen=True)
class Request:
    """One annotation request: which record, which type, what it is estimated to cost and be worth."""

    image: str  # the record's "file" as written in dataset.json (a volume section: its source text)
    kind: str  # Kind.MASK | Kind.BOX | Kind.POINT | Kind.IMAGE
    cost_s: float  # estimated seconds of annotation for this request
    value: float  # the estimate it was ranked by (higher first)
    reason: str  # one sentence a user can read


@dataclass
class Advice:
    """Everything one call of the advisor produced: the ranked ``requests`` plus what the outputs
    (:mod:`dspseg.advise.report`) need to explain them."""

    requests: list[Request]
    hours: float
    costs: AnnotationCosts
    rank_by: str
    kinds: tuple[str, ...]
    candidates: int  # images that could still gain information
    run: str
    data: str
    classes: list[str]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)  # per requested image: item, gain, objects...
    loaded: Any = field(default=None, repr=False)  # the run (engine.checkpoint.LoadedRun), for the picture
    dataset: Any = field(default=None, repr=False)  # its whole-image training split
    calibration: Any = None  # advise.calibrate.Calibration the beliefs were corrected with

    @property
    def seconds(self) -> float:
        return sum(r.cost_s for r in self.requests)


def record_key(record: Any) -> str:
    """The key of a record in requests: its ``file`` as written, or a volume section's source text."""
    return record.file if record.file is not None else record.source


def check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    """The requestable kinds asked for (default: all four, strongest first); OptionError otherwise."""
    from dspseg.advise.estimate import REQUEST_KINDS

    if kinds is None:
        return REQUEST_KINDS
    out = tuple(dict.fromkeys(kinds))
    bad = [k for k in out if k not in REQUEST_KINDS]
    if bad or not out:
        raise OptionError(f"kinds: {bad or 'none given'} cannot be requested; choose from {', '.join(REQUEST_KINDS)}")
    return out


def advise(run: str | Path, data: str | Path, hours: float, costs: AnnotationCosts | None = None, *,
           kinds: Sequence[str] | None = None, rank_by: str = "value", images: Sequence[str] | None = None,
           seed: int = 0, device: str = "auto", threads: int | None = None) -> list[Request]:
    """Ranked requests whose summed cost_s ≤ hours*3600. kinds: allowed kinds (default all four);
    rank_by="value" is the advisor; rank_by="uncertainty" ranks images by mean predictive entropy only and
    asks for the first allowed kind (the 'uncertainty-masks' baseline is kinds=[Kind.MASK], rank_by="uncertainty").
    images: candidate record images (default: every train-split record that can still gain information).
    Never requests what a record already has or what it subsumes (no boxes on a masked image; a mask
    request on a boxed image is allowed — it adds information). At most one request per image.

    Raises :class:`~dspseg.errors.UserError` subclasses for a run or dataset that cannot be used, a
    dataset whose classes or channels are not the run's, ``hours`` ≤ 0, unknown kinds or images."""
    return advise_run(run, data, hours, costs, kinds=kinds, rank_by=rank_by, images=images, seed=seed,
                      device=device, threads=threads).requests


def advise_run(run: str | Path, data: str | Path, hours: float, costs: AnnotationCosts | None = None, *,
               kinds: Sequence[str] | None = None, rank_by: str = "value", images: Sequence[str] | None = None,
               seed: int = 0, device: str = "auto", threads: int | None = None) -> Advice:
    """:func:`advise` with everything the outputs need (:class:`Advice`)."""
    from dspseg.advise.plan import plan

    if not isinstance(hours, (int, float)) or not hours > 0 or hours != hours:
        raise OptionError(f"--hours: expected a positive number of hours of annotation, got {hours!r}")
    if rank_by not in RANKINGS:
        raise OptionError(f"rank_by: expected one of {', '.join(RANKINGS)}, got {rank_by!r}")
    return plan(run, data, float(hours), costs or AnnotationCosts(), check_kinds(kinds), rank_by, images, seed,
                device, threads)


__all__ = ["RANKINGS", "Advice", "Request", "advise", "advise_run", "record_key"]
