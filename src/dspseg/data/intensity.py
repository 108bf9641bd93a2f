"""The one rule from stored pixel values to the network's input, used by train, evaluate, predict and export.

**The rule** (:data:`RULE`): an image stored with an integer pixel type is divided by the largest
value of that type (``uint8 / 255``, ``uint16 / 65535``, ``int16 / 32767``); a boolean image is 0/1;
a float image is used as stored. The result, ``(Cin, H, W)`` float32, is then normalised per channel
with the training images' mean and std (:class:`dspseg.data.dataset.Normalisation`):
``x = (stored / divisor(dtype) - mean_c) / std_c``. ``model.json`` of an export carries both
(:func:`scaling_description`), so a pipeline outside dspseg computes exactly the same input.

**Where the rule gives different scales.** Two images whose content spans the same range but that are
stored differently enter the network at different brightness: a float32 image holding 0..255 among
uint8 images is used 255× brighter; a 12-bit camera image in uint16 (0..4095) among uint8 images
16× darker. :func:`scale_findings` finds such images from their scaled maxima, so ``dspseg validate``
warns (the fix: store every image with one pixel type and range).

    >>> divisor(np.dtype("uint16")), divisor(np.dtype("float32"))
    (65535.0, 1.0)
    >>> to_unit(np.array([[[0, 255]]], np.uint8)).tolist()
    [[[0.0, 1.0]]]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

RULE = ("integer images are divided by the largest value of their pixel type (uint8 / 255, uint16 / 65535, "
        "int16 / 32767), boolean images are 0/1, float images are used as stored; then (x - mean) / std per channel")
#: pixel types dspseg reads (the keys of model.json's ``input.scaling.divide_by``)
DTYPES = ("bool", "uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32", "float64")
#: scaled maxima of two pixel types (or of two float images) further apart than this factor are warned about
SCALE_FACTOR = 4.0


def divisor(dtype: np.dtype) -> float:
    """What the rule divides stored values of ``dtype`` by; ValueError for a type dspseg does not read."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or np.issubdtype(dtype, np.floating):
        return 1.0
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    raise ValueError(f"pixel type {dtype} is not supported")


def to_unit(stored: np.ndarray) -> np.ndarray:
    """``stored`` (any shape, a type of :data:`DTYPES`) → float32 by the rule: ``stored / divisor``.

    Computed as ``float32(stored) / float32(divisor)``, the same operation :data:`RULE` describes to
    outside pipelines, so their input equals dspseg's bit for bit.
    """
    d = divisor(stored.dtype)
    out = stored.astype(np.float32)
    return out if d == 1.0 else out / np.float32(d)


def scaling_description(dtypes: Sequence[str] = ()) -> dict[str, object]:
    """``model.json``'s ``input.scaling``: the rule in words, the divisor of every pixel type, and the
    pixel types of the training images (``trained_on``; empty for runs trained before it was recorded)."""
    return {"rule": RULE, "divide_by": {name: divisor(np.dtype(name)) for name in DTYPES},
            "trained_on": list(dtypes)}


@dataclass(frozen=True)
class ScaleFinding:
    """An image whose scaled values lie on another scale than most of the dataset's."""

    index: int  # position in the sequence given to :func:`scale_findings`
    message: str
    fix: str


def _median(values: Iterable[float]) -> float:
    return float(np.median(np.fromiter(values, float)))


def scale_findings(images: Sequence[tuple[str, float]]) -> list[ScaleFinding]:
    """Images whose scaled maximum is :data:`SCALE_FACTOR` times above or below the rest's.

    ``images``: ``(dtype name, scaled maximum)`` per image (the maximum of :func:`to_unit`'s result).
    Images are grouped by pixel type; an image of another type than the most common one is reported
    when its maximum differs from that type's median maximum by the factor; within the most common
    type, only float images are compared (with their median: floats are not scaled, so their range is
    whatever the file holds); integer images of one type share one scale by construction.
    """
    if len(images) < 2:
        return []
    groups: dict[str, list[int]] = {}
    for i, (dtype, _) in enumerate(images):
        groups.setdefault(dtype, []).append(i)
    major = max(groups, key=lambda d: len(groups[d]))
    ref = _median(images[i][1] for i in groups[major])
    fix = ("store every image with one pixel type and value range (e.g. all uint8, or all float32 in 0..1); "
           "dspseg divides integers by their type's maximum and uses floats as they are")
    out: list[ScaleFinding] = []
    for dtype, members in groups.items():
        if dtype != major:
            for i in (i for i in members if _apart(images[i][1], ref)):
                out.append(ScaleFinding(i, f"the image is {dtype} and reaches {images[i][1]:.4g} by the intensity rule, "
                                           f"while the {len(groups[major])} {major} image(s) reach about {ref:.4g}: "
                                           f"it enters the network {_ratio(images[i][1], ref)}", fix))
        elif dtype.startswith("float") and len(members) > 1:
            med = _median(images[i][1] for i in members)
            for i in (i for i in members if _apart(images[i][1], med)):
                out.append(ScaleFinding(i, f"the {dtype} image reaches {images[i][1]:.4g} while the dataset's {dtype} "
                                           f"images reach about {med:.4g} (floats are used as stored): it enters "
                                           f"the network {_ratio(images[i][1], med)}", fix))
    return sorted(out, key=lambda f: f.index)


def _apart(a: float, b: float) -> bool:
    a, b = abs(a), abs(b)
    lo, hi = min(a, b), max(a, b)
    return hi > 0 and (lo == 0 or hi / lo > SCALE_FACTOR)


def _ratio(value: float, ref: float) -> str:
    value, ref = abs(value), abs(ref)
    if ref == 0 or value == 0:
        return "on another scale than the others"
    r = value / ref
    return f"{r:.3g}× brighter than the others" if r > 1 else f"{1 / r:.3g}× darker than the others"
