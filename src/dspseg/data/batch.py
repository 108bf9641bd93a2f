"""The typed batch: every field a method trains on, declared once, produced by :func:`collate`.

:class:`Batch` (with its :class:`Bags`, the positive bags of eq. 9) is the one table of fields.
Each array field's ``metadata`` says its shape, dtype and how it is padded, collated and moved:

========== ============================================================================================
role       meaning
========== ============================================================================================
``pixels`` a per-pixel map ``(B, ..., h, w)``: padded with ``fill`` past an image (a crop past its
           edge, a smaller image of the batch); augmentation moves it pixel by pixel
``image``  one row per image ``(B, ...)``, stacked
``table``  rows of a named layout (:mod:`dspseg.vocabulary`) behind the image index ``b``; an item
           holds the rows without ``b`` (a one-column table is 1-D); augmentation moves point rows
           (``row``, ``col``) and box rows (``x0, y0, x1, y1``)
``concat`` one value per instance, concatenated over the images
========== ============================================================================================

An *item* (one image, :meth:`dspseg.data.dataset.SegmentationDataset.__getitem__`) is a dict of
arrays named like these fields, without the batch axis, plus ``kind``, ``index`` and ``file``.
``fill = IGNORE`` pads with the dataset's ``ignore_index``. Padding pixels carry no annotation:
``valid`` is False there and every consumer must use it (``allowed`` is all True, ``target`` is
``ignore_index``, ``instances`` is 0).

A batch moves to a device with :meth:`Batch.to` (Lightning Fabric's ``to_device`` calls it) and
pickles, so DataLoader workers can build it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dspseg.vocabulary import BATCH_BOX, BATCH_LABEL, BATCH_POINT, Layout

PIXELS, IMAGE, TABLE, CONCAT = "pixels", "image", "table", "concat"
IGNORE = "ignore_index"  # fill marker: the dataset's ignore_index


def _array(shape: str, dtype: str, role: str, fill: Any = None, layout: Layout | None = None) -> Any:
    """A declared array field: its batch ``shape`` (for readers), numpy ``dtype``, ``role`` (module
    docstring), padding ``fill`` (``pixels``) and column ``layout`` (``table``)."""
    return field(metadata={"shape": shape, "dtype": dtype, "role": role, "fill": fill, "layout": layout})


@dataclass
class Bags:
    """The positive bags of eq. 9 in collated layout (components, points, boxes, image labels)."""

    #: batch-unique mask component ids 1..M, 0 = none (an item's ids are 1..m)
    instances: Tensor = _array("(B, h, w)", "int64", PIXELS, fill=0)
    #: class of component k at index k-1
    instance_classes: Tensor = _array("(M,)", "int64", CONCAT)
    #: clicked pixels, :data:`~dspseg.vocabulary.BATCH_POINT` rows [b, class, row, col]
    points: Tensor = _array("(P, 4)", "int64", TABLE, layout=BATCH_POINT)
    #: half-open boxes, :data:`~dspseg.vocabulary.BATCH_BOX` rows [b, class, x0, y0, x1, y1] (x = column)
    boxes: Tensor = _array("(Nb, 6)", "int64", TABLE, layout=BATCH_BOX)
    #: image-level positives (whole-image mean), :data:`~dspseg.vocabulary.BATCH_LABEL` rows [b, class]
    image_labels: Tensor = _array("(L, 2)", "int64", TABLE, layout=BATCH_LABEL)


@dataclass
class Batch:
    """B images padded to ``h × w`` with C classes; ``kinds[b]`` is image b's annotation kind."""

    #: normalised intensities (0 = the training mean, also on padding)
    image: Tensor = _array("(B, Cin, h, w)", "float32", PIXELS, fill=0.0)
    #: cross-entropy target: mask class ids, ``ignore_index`` where unannotated or padding
    target: Tensor = _array("(B, h, w)", "int64", PIXELS, fill=IGNORE)
    #: admissible classes A_j of every pixel (eq. 8; DESIGN §1)
    allowed: Tensor = _array("(B, C, h, w)", "bool", PIXELS, fill=True)
    #: False on padding
    valid: Tensor = _array("(B, h, w)", "bool", PIXELS, fill=False)
    #: "the image's classes" I of each image
    image_classes: Tensor = _array("(B, C)", "bool", IMAGE)
    #: the positive bags of eq. 9
    bags: Bags
    #: annotation kind of every image (:data:`dspseg.vocabulary.KINDS`)
    kinds: list[str]
    #: the images' positions in their dataset, (B,) int64
    index: Tensor | None = None
    #: the images' files
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def map(self, pixels: Callable[[Tensor], Tensor], points: Callable[[Tensor], Tensor] | None = None,
            boxes: Callable[[Tensor], Tensor] | None = None) -> Batch:
        """A copy with every ``pixels`` field (bags included) passed through ``pixels`` and the point
        and box tables through ``points`` and ``boxes`` (left as they are when None); the other
        fields are shared. Augmentation moves a batch with it."""
        def move(obj: Any) -> Any:
            changes = {}
            for f in fields(obj):
                value, role, layout = getattr(obj, f.name), f.metadata.get("role"), f.metadata.get("layout")
                if isinstance(value, Bags):
                    changes[f.name] = move(value)
                elif role == PIXELS:
                    changes[f.name] = pixels(value)
                elif role == TABLE and "x0" in layout.columns and boxes is not None:
                    changes[f.name] = boxes(value)
                elif role == TABLE and "row" in layout.columns and points is not None:
                    changes[f.name] = points(value)
            return replace(obj, **changes)

        return move(self)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch with every tensor on ``device``."""
        return _apply(self, lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """The batch in pinned host memory (DataLoader's ``pin_memory``)."""
        return _apply(self, lambda t: t.pin_memory())

    def of_kinds(self, kinds: frozenset[str] | set[str]) -> Tensor:
        """(B,) bool on the batch's device: image b's kind is in ``kinds``."""
        return torch.tensor([k in kinds for k in self.kinds], dtype=torch.bool, device=self.image.device)

    def rows_of_kinds(self, table: Tensor, kinds: frozenset[str] | set[str]) -> Tensor:
        """The rows of a bag table (points, boxes, image_labels: column ``b`` first) whose image's kind
        is in ``kinds``; e.g. the boxes a box-only method may learn from."""
        return table[self.of_kinds(kinds)[table[:, BATCH_LABEL.b].long()]]  # column b: 0 in every layout


def _apply(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    changes = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Tensor):
            changes[f.name] = fn(value)
        elif isinstance(value, Bags):
            changes[f.name] = _apply(value, fn)
    return replace(obj, **changes)


def array_fields() -> Iterator[Field]:
    """Every declared array field: the batch's own, then its bags'."""
    yield from (f for f in fields(Batch) if "role" in f.metadata)
    yield from fields(Bags)


#: the names of the array fields (the keys of an item's arrays)
ARRAYS: tuple[str, ...] = tuple(f.name for f in array_fields())
_BAG_NAMES = frozenset(f.name for f in fields(Bags))


def fill_value(f: Field, ignore_index: int) -> float | int | bool:
    """The padding value of a ``pixels`` field."""
    return ignore_index if f.metadata["fill"] == IGNORE else f.metadata["fill"]


def item_array(name: str, a: np.ndarray) -> np.ndarray:
    """One image's array for field ``name`` in its declared dtype and item shape (a table's rows
    without the ``b`` column; 1-D for a one-column table). Copies only when the dtype differs."""
    f = next(f for f in array_fields() if f.name == name)
    out = np.asarray(a, dtype=f.metadata["dtype"])
    if f.metadata["role"] == TABLE:
        width = f.metadata["layout"].width - 1
        out = out.reshape(-1, width) if width > 1 else out.reshape(-1)
    return np.ascontiguousarray(out)


def collate(items: list[dict[str, Any]], ignore_index: int = 255) -> Batch:
    """Stack items into a :class:`Batch` padded to the largest (h, w) of the batch (padding as for
    crops); the instance ids are made unique across the batch (1..M) and every table gets its image
    index ``b``. The copying is done by numpy (single-threaded: small multi-threaded torch copies
    stall when the cores are busy with the model)."""
    if not items:
        raise ValueError("collate: empty batch")
    arr = [{k: np.asarray(it[k]) for k in ARRAYS} for it in items]
    h = max(a["image"].shape[-2] for a in arr)
    w = max(a["image"].shape[-1] for a in arr)

    def stack(name: str, fill: float | int | bool) -> np.ndarray:
        ts = [a[name] for a in arr]
        if all(t.shape[-2:] == (h, w) for t in ts):
            return np.stack(ts)
        out = np.full((len(ts), *ts[0].shape[:-2], h, w), fill, dtype=ts[0].dtype)
        for b, t in enumerate(ts):
            out[b, ..., : t.shape[-2], : t.shape[-1]] = t
        return out

    def table(name: str, width: int) -> np.ndarray:
        parts = [np.concatenate([np.full((a[name].shape[0], 1), b, dtype=np.int64),
                                 a[name].reshape(-1, width).astype(np.int64)], axis=1) for b, a in enumerate(arr)]
        return np.concatenate(parts)

    out: dict[str, np.ndarray] = {}
    for f in array_fields():
        role = f.metadata["role"]
        if role == PIXELS:
            out[f.name] = stack(f.name, fill_value(f, ignore_index))
        elif role == IMAGE:
            out[f.name] = np.stack([a[f.name] for a in arr])
        elif role == TABLE:
            out[f.name] = table(f.name, f.metadata["layout"].width - 1)
        else:
            out[f.name] = np.concatenate([a[f.name] for a in arr]).astype(f.metadata["dtype"])
    offset = 0
    for b, a in enumerate(arr):  # instance ids 1..m per image → 1..M over the batch
        m = a["instance_classes"].size
        if m and offset:
            out["instances"][b] += np.where(out["instances"][b] > 0, offset, 0)
        offset += m
    t = {k: torch.from_numpy(v) for k, v in out.items()}
    bags = Bags(**{k: v for k, v in t.items() if k in _BAG_NAMES})
    return Batch(**{k: v for k, v in t.items() if k not in _BAG_NAMES}, bags=bags,
                 kinds=[it["kind"] for it in items], index=torch.tensor([it["index"] for it in items]),
                 files=[it["file"] for it in items])
