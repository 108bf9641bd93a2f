"""The annotation time behind a study run: its training annotations counted by type, priced in hours.

The prices (:class:`AnnotationCosts`, seconds per mask, box, point and image-level label, with
their sources) live in :mod:`dspseg.costs` and are re-exported here. Every study run gets the
annotation *time* of the training annotations its method learns from, so a sweep can be read as
Dice against hours of expert work (``dspseg report``) and queried for the best use of a budget
(``dspseg budget``)::

    cost(run) = Σ_{train images the method uses}  mask: t_mask            (per image)
                                                  box:   t_box   · #boxes  (per object)
                                                  point: t_point · #points (per object)
                                                  image: t_label · #labels (per class present)
                                                  none:  0

This module does not import torch.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from dspseg.costs import AnnotationCosts, costs_text
from dspseg.study import COUNT_COLUMNS
from dspseg.vocabulary import COST_KEY, COST_KEYS, COST_UNIT, Kind

__all__ = ["COST_KEYS", "AnnotationCosts", "annotation_counts", "annotation_hours", "costs_text"]


def annotation_counts(records: Iterable[Any], uses: Iterable[str]) -> dict[str, int]:
    """Training annotations a method learns from, by type.

    ``records``: manifest :class:`~dspseg.data.manifest.ImageRecord` s (the training split);
    ``uses``: the method's annotation kinds. Returns ``images_<kind>`` for every kind (images of
    that kind the method uses) and the object counts ``boxes``, ``points``, ``labels`` on them.
    """
    uses = set(uses)
    counts: Counter[str] = Counter()
    for r in records:
        kind = r.annotation_type
        if kind not in uses:
            continue
        counts[f"images_{kind}"] += 1
        unit = COST_UNIT.get(COST_KEY.get(kind, ""))
        if unit is not None:  # boxes, points or labels: the record's field of that name
            counts[unit] += len(getattr(r, unit) or [])
    return {column: counts[column] for column in COUNT_COLUMNS}


def annotation_hours(counts: dict[str, int], costs: AnnotationCosts) -> float:
    """Hours of annotation behind ``counts`` (from :func:`annotation_counts`)."""
    seconds = sum((counts[f"images_{Kind.MASK}"] if unit is None else counts[unit]) * getattr(costs, key)
                  for key, unit in COST_UNIT.items())
    return seconds / 3600.0
