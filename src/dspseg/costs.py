"""What an annotation costs: seconds per full mask, per box, per point and per image-level label.

The paper's ACR counts images and treats every weak type alike; its §6 names that as a limitation.
Here every annotation has a price in seconds of expert work, so a sweep can be read as Dice against
hours (``dspseg report``), queried for the best use of a budget (``dspseg budget``), and the advisor
can say which image to annotate next and how (``dspseg advise``)::

    cost = mask:  t_mask            (per image)
           box:   t_box   · #boxes  (per object)
           point: t_point · #points (per object)
           image: t_label · #labels (per class present)
           none:  0

Defaults come from timed annotation studies on natural images (override them for your domain):

* ``mask = 239.7 s`` per image — full per-pixel labelling of a PASCAL VOC image (Bearman, Russakovsky,
  Ferrari, Fei-Fei, *What's the point: semantic segmentation with point supervision*, ECCV 2016, §5).
* ``point = 2.4 s`` per object — one click on an object instance (Bearman et al. 2016).
* ``label = 1.0 s`` per class — an image-level yes/no per class (Bearman et al. 2016).
* ``box = 7.0 s`` per object — a bounding box by extreme clicking (Papadopoulos, Uijlings, Keller,
  Ferrari, *Extreme clicking for efficient object annotation*, ICCV 2017); drawing boxes the classic
  way took 34.5 s (their comparison with Su et al. 2012).

Dense organelle masks in EM take far longer than a VOC image (often an hour or more per 2D section
of a crowded cell): set ``mask`` to what your annotators measure, e.g. ``--cost mask=3600``.

A words-level module (it imports only :mod:`dspseg.vocabulary` and pydantic), so the advisor (below
the study layer) and the study share it; :mod:`dspseg.study.costs` re-exports it beside the counts
of a run's annotations.

    >>> AnnotationCosts.from_items(["box=10"]).box
    10.0
"""

from __future__ import annotations

from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field

from dspseg.vocabulary import COST_KEYS


class AnnotationCosts(BaseModel):
    """Seconds of annotation work: per mask image, per box, per point, per image-level label."""

    model_config = ConfigDict(extra="forbid")
    mask: float = Field(239.7, ge=0, description="seconds per fully masked image (Bearman et al. 2016)")
    box: float = Field(7.0, ge=0, description="seconds per box (extreme clicking, Papadopoulos et al. 2017)")
    point: float = Field(2.4, ge=0, description="seconds per point click (Bearman et al. 2016)")
    label: float = Field(1.0, ge=0, description="seconds per image-level class label (Bearman et al. 2016)")

    @classmethod
    def from_items(cls, items: Iterable[str], base: dict[str, float] | None = None) -> AnnotationCosts:
        """Parse ``["mask=3600", "box=10"]`` (``--cost`` flags) over ``base``; ValueError naming the item."""
        values: dict[str, float] = dict(base or {})
        for item in items:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in COST_KEYS:
                raise ValueError(f"--cost '{item}': write KIND=SECONDS with KIND one of {', '.join(COST_KEYS)}, "
                                 "e.g. --cost mask=3600")
            try:
                values[key] = float(raw)
            except ValueError:
                raise ValueError(f"--cost '{item}': '{raw}' is not a number of seconds") from None
            if values[key] < 0:
                raise ValueError(f"--cost '{item}': seconds cannot be negative")
        return cls(**values)


def costs_text(costs: AnnotationCosts, unit: str = " s") -> str:
    """``"mask 239.7 s, box 7 s, point 2.4 s, label 1 s"`` (``unit=""`` for the bare numbers)."""
    return ", ".join(f"{k} {getattr(costs, k):g}{unit}" for k in COST_KEYS)
