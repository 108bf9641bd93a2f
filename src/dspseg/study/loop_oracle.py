"""The simulated expert of the annotation loop: answers a request with exactly the kind asked for,
from the full masks, and charges what that answer really costs.

An answer is derived as the ACR simulation derives weak labels (:func:`dspseg.data.acr.reduce_records`,
:func:`dspseg.data.weak.derive_weak_labels`, interior points): a ``box`` request gets one tight box
per connected component of every class, a ``point`` request one interior point per component, an
``image`` request the classes present, a ``mask`` request the mask file. Its cost follows
:mod:`dspseg.study.costs` (per mask image; per box, point or label): the *actual* cost, which the
loop charges against the round's budget, whatever a strategy estimated beforehand.

:func:`spend` answers a strategy's requests in its order while they fit the budget::

    oracle = Oracle(load_manifest("syn96"), AnnotationCosts())
    answers, records = spend(requests, previous.images, oracle, budget_s=900)
    sum(a.actual_s for a in answers if a.answered) <= 900      # always

This module does not import torch.
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from dspseg.data.manifest import ImageRecord, Manifest
from dspseg.data.weak import WeakLabels
from dspseg.errors import DatasetError
from dspseg.study.costs import AnnotationCosts, annotation_counts, annotation_hours
from dspseg.vocabulary import KINDS, POSITIVE_KINDS, Kind

#: the kinds a request may ask for, strongest first
REQUEST_KINDS = POSITIVE_KINDS
#: the record field each requested kind fills
FIELD = {Kind.MASK: "mask", Kind.BOX: "boxes", Kind.POINT: "points", Kind.IMAGE: "labels"}


@dataclass(frozen=True)
class LoopRequest:
    """A strategy's request: annotate ``image`` (a record's ``file``) with ``kind``; ``estimate_s`` is what
    the strategy expected it to cost, ``reason`` why it asked."""

    image: str
    kind: str
    estimate_s: float
    reason: str = ""


@dataclass(frozen=True)
class Answer:
    """What became of a request: its actual cost and whether it was answered (``note``: why not)."""

    request: LoopRequest
    actual_s: float
    answered: bool
    note: str = ""

    def to_json(self) -> dict:
        return {**asdict(self.request), "actual_s": round(self.actual_s, 6), "answered": self.answered,
                "note": self.note}


def has_kind(record: ImageRecord, kind: str) -> bool:
    """Whether ``record`` already holds ``kind`` (a mask holds every kind)."""
    return record.mask is not None or getattr(record, FIELD[kind]) is not None


def stronger_kinds(record: ImageRecord, kinds: Iterable[str] = REQUEST_KINDS) -> list[str]:
    """The kinds of ``kinds`` stronger than the record's own (``mask > box > point > image > none``)."""
    rank = KINDS.index(record.annotation_type)
    return [k for k in kinds if KINDS.index(k) < rank]


class Oracle:
    """Answers requests about the training images of ``source``, a fully masked dataset (file records)."""

    def __init__(self, source: Manifest, costs: AnnotationCosts, seed: int = 0) -> None:
        self.source = source
        self.costs = costs
        self.seed = seed
        self.index = {posixpath.normpath(r.file): i for i, r in enumerate(source.images) if r.file is not None}
        self._weak: dict[int, WeakLabels] = {}

    def _record(self, image: str) -> tuple[int, ImageRecord]:
        i = self.index.get(posixpath.normpath(image))
        if i is None or self.source.images[i].mask is None:
            raise DatasetError(f"{self.source.root / 'dataset.json'}: no masked image '{image}'; the loop's oracle "
                               "answers from the full masks of the dataset given as --data")
        return i, self.source.images[i]

    def weak(self, image: str) -> WeakLabels:
        """Boxes, interior points and labels of ``image``'s full mask (as the ACR simulation derives them)."""
        from dspseg.data.io import read_mask
        from dspseg.data.weak import derive_weak_labels

        i, rec = self._record(image)
        if i not in self._weak:
            mask = read_mask(self.source.path(rec.mask))
            self._weak[i] = derive_weak_labels(mask, self.source.classes, self.source.ignore_index,
                                               point_mode="interior", rng=np.random.default_rng([self.seed, i]))
        return self._weak[i]

    def annotation(self, image: str, kind: str) -> ImageRecord:
        """A record of ``image`` holding exactly the requested ``kind`` and nothing else."""
        if kind not in FIELD:
            raise ValueError(f"kind '{kind}': a request asks for one of {', '.join(REQUEST_KINDS)}")
        _, rec = self._record(image)
        out = ImageRecord(file=rec.file)
        if kind == Kind.MASK:
            out.mask = rec.mask
        else:
            setattr(out, FIELD[kind], list(getattr(self.weak(image), FIELD[kind])))
        return out

    def cost_s(self, image: str, kind: str) -> float:
        """Seconds the answer to (``image``, ``kind``) costs (:mod:`dspseg.study.costs`' rules)."""
        if kind == Kind.MASK:
            self._record(image)
            return float(self.costs.mask)
        counts = annotation_counts([self.annotation(image, kind)], [kind])
        return annotation_hours(counts, self.costs) * 3600.0

    def answer(self, record: ImageRecord, kind: str) -> ImageRecord:
        """``record`` with the answer to a ``kind`` request added (what it already holds is kept)."""
        new = record.model_copy(deep=True)
        setattr(new, FIELD[kind], getattr(self.annotation(record.file, kind), FIELD[kind]))
        return new


def spend(requests: Sequence[LoopRequest], records: Sequence[ImageRecord], oracle: Oracle,
          budget_s: float) -> tuple[list[Answer], list[ImageRecord]]:
    """Answer ``requests`` in order while their *actual* costs fit in ``budget_s``.

    A request is skipped (answered False, with the reason) when its image is not a training record,
    already holds the kind, was already asked about this round, or its actual cost would take the
    round over the budget. Returns the answers (one per request) and the new records (in the order of
    ``records``; unchanged ones are the same objects).
    """
    where = {posixpath.normpath(r.file): i for i, r in enumerate(records) if r.file is not None}
    out = list(records)
    answers: list[Answer] = []
    spent, asked = 0.0, set()
    for req in requests:
        i = where.get(posixpath.normpath(req.image))
        note = ""
        if i is None or records[i].split != "train":
            note = "not a training image of the dataset"
        elif i in asked:
            note = "this image was already asked about this round"
        elif req.kind not in FIELD:
            note = f"'{req.kind}' is not a kind that can be requested"
        elif has_kind(records[i], req.kind):
            note = f"the image already has {req.kind} annotation"
        if note:
            answers.append(Answer(req, 0.0, False, note))
            continue
        asked.add(i)
        actual = oracle.cost_s(req.image, req.kind)
        if spent + actual > budget_s + 1e-9:
            answers.append(Answer(req, actual, False, f"over the budget: {actual:.1f} s with "
                                                       f"{budget_s - spent:.1f} s left"))
            continue
        spent += actual
        out[i] = oracle.answer(out[i], req.kind)
        answers.append(Answer(req, actual, True))
    return answers, out
