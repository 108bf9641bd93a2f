"""Torch dataset of a manifest split: decoded once into memory, cropped and collated per step.

**Which records.** :func:`select_records` returns the records whose ``split`` is the one asked
for. A manifest whose records carry no ``split`` at all is treated as all-training: every record is
``train`` and ``val``/``test`` are empty (run ``dspseg simulate`` to make proper splits).

**Cache.** Every image is read, normalised and rasterised (:func:`dspseg.data.rasterise.rasterise`
with ``derive_weak=True``, so mask images also carry their boxes, points and image labels) once, when
the dataset is built; the per-step work is slicing tensors (memory: about 4 · Cin + C + 16 bytes per
pixel; a crop that is the whole image is handed out without copying).

**Normalisation.** ``(x - mean_c) / std_c`` per input channel, with mean and std over every pixel of
the training images (:func:`compute_normalisation`). It is saved in checkpoints and applied again at
prediction time.

**Crops (training).** A ``crop × crop`` window at a random offset; the offset comes from a generator
seeded by the key the sampler passes (seed, epoch, position), so an epoch's crops are reproducible and
independent of worker processes. Along an axis shorter than the crop the image sits at offset 0 and
the rest is zero padding (zero = the mean after normalisation) with ``valid = False``, ``target =
ignore_index``, ``instances = 0`` and ``allowed`` all True (padding carries no annotation; every
consumer must use ``valid``). Bags follow the crop: points are shifted and dropped when outside;
boxes are shifted and clipped to the image part of the crop (a clipped box's rows (or columns) no
longer all cross its object); instances are renumbered 1..m over those present; ``image_labels`` are
kept only when the crop holds the whole image (a crop may miss the labelled class).
Without a crop size (validation, test) an item is the whole image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dspseg.errors import DatasetError
from dspseg.data.io import read_image, read_mask
from dspseg.data.manifest import ImageRecord, Manifest
from dspseg.data.rasterise import rasterise
from dspseg.errors import UserError


def select_records(manifest: Manifest, split: str) -> list[tuple[int, ImageRecord]]:
    """``(index in manifest.images, record)`` of the records in ``split`` (module docstring)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if not any(r.split is not None for r in manifest.images):
        return list(enumerate(manifest.images)) if split == "train" else []
    return [(i, r) for i, r in enumerate(manifest.images) if r.split == split]


@dataclass(frozen=True)
class Normalisation:
    """Per-channel ``mean`` and ``std`` (each length Cin): ``x_norm = (x - mean) / std``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(Cin, H, W) float → normalised float32; ValueError if Cin differs from len(mean)."""
        if image.ndim != 3 or image.shape[0] != len(self.mean):
            raise ValueError(f"normalisation: image must be ({len(self.mean)}, H, W), got {image.shape}")
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return ((image - mean) / std).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Sequence[float]]) -> Normalisation:
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))


def compute_normalisation(images: Sequence[np.ndarray]) -> Normalisation:
    """Mean and std per channel over all pixels of ``images`` (each (Cin, H, W)); std < 1e-6 → 1."""
    if not images:
        raise DatasetError("no training images to compute the intensity normalisation from")
    n = sum(im.shape[1] * im.shape[2] for im in images)
    s = sum(im.reshape(im.shape[0], -1).sum(1, dtype=np.float64) for im in images)
    mean = s / n
    ss = sum(((im.reshape(im.shape[0], -1) - mean[:, None]) ** 2).sum(1, dtype=np.float64) for im in images)
    std = np.sqrt(ss / n)
    std = np.where(std < 1e-6, 1.0, std)
    return Normalisation(tuple(float(v) for v in mean), tuple(float(v) for v in std))


@dataclass
class _Cached:
    image: np.ndarray  # (Cin, H, W) float32, normalised
    target: np.ndarray  # (H, W) int64
    allowed: np.ndarray  # (C, H, W) bool
    valid: np.ndarray  # (H, W) bool, all True
    instances: np.ndarray  # (H, W) int64, 1..M
    instance_classes: np.ndarray  # (M,) int64
    points: np.ndarray  # (P, 3) [class, row, col]
    boxes: np.ndarray  # (Nb, 5) [class, x0, y0, x1, y1]
    image_labels: np.ndarray  # (L,)
    image_classes: np.ndarray  # (C,) bool
    kind: str
    file: str


_ARRAYS = ("image", "target", "allowed", "valid", "instances", "instance_classes", "points", "boxes",
           "image_labels", "image_classes")


class SegmentationDataset(Dataset):
    """One split of a manifest, held in memory (module docstring).

    Args:
        manifest: the loaded manifest.
        split: ``train``, ``val`` or ``test`` (see :func:`select_records`).
        normalisation: intensity normalisation; None computes it from this split's images.
        crop_size: side of training crops; None gives whole images.
        derive_weak: give mask images their derived boxes, points and image labels (training).
        progress: optional callback ``(done, total)`` while reading.

    Items are dicts of tensors: image (Cin, h, w) float32, target (h, w) long, allowed (C, h, w)
    bool, valid (h, w) bool, instances (h, w) long, instance_classes (m,) long, points (P, 3),
    boxes (Nb, 5), image_labels (L,), image_classes (C,) bool; plus kind str, index int, file str.
    ``dataset[i]`` is image i whole (or cropped at a generator seeded by i); ``dataset[(i, key)]``
    crops with a generator seeded by ``key``. Items may share memory with the cache: do not modify
    them in place (:func:`collate` copies). The work is done in numpy, single-threaded: small
    multi-threaded torch copies stall when the cores are busy with the model.
    """

    def __init__(self, manifest: Manifest, split: str, normalisation: Normalisation | None = None,
                 crop_size: int | None = None, derive_weak: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.manifest = manifest
        self.split = split
        self.classes = list(manifest.classes)
        self.n_classes = manifest.n_classes
        self.ignore_index = manifest.ignore_index
        if crop_size is not None and crop_size < 1:
            raise ValueError(f"crop_size must be a positive integer, got {crop_size}")
        self.crop_size = crop_size
        self.derive_weak = derive_weak
        self.records = select_records(manifest, split)
        raw = self._read_images(progress)
        self.in_channels = raw[0].shape[0] if raw else 0
        self.normalisation = normalisation or (compute_normalisation(raw) if raw else None)
        if raw and len(self.normalisation.mean) != self.in_channels:
            raise DatasetError(f"the {split} images have {self.in_channels} channel(s) but the normalisation "
                               f"(from the training images or the model) has {len(self.normalisation.mean)}")
        self.items = [self._cache(i, image) for i, image in enumerate(raw)]

    def _where(self, i: int) -> str:
        index, record = self.records[i]
        return f"{self.manifest.root / 'dataset.json'}: images[{index}] ({record.file})"

    def _read_images(self, progress: Callable[[int, int], None] | None) -> list[np.ndarray]:
        out = []
        for i, (_, record) in enumerate(self.records):
            try:
                image = read_image(self.manifest.path(record.file))
            except (ValueError, OSError) as e:
                raise DatasetError(f"{self._where(i)}: {e}") from None
            if out and image.shape[0] != out[0].shape[0]:
                raise DatasetError(f"{self._where(i)}: the image has {image.shape[0]} channel(s) but "
                                   f"{self.records[0][1].file} has {out[0].shape[0]}; all images need the same channels")
            out.append(image)
            if progress is not None:
                progress(i + 1, len(self.records))
        return out

    def _cache(self, i: int, image: np.ndarray) -> _Cached:
        _, record = self.records[i]
        try:
            mask = read_mask(self.manifest.path(record.mask)) if record.mask is not None else None
            ann = rasterise(record, self.classes, self.ignore_index, image.shape[1:], mask=mask,
                            derive_weak=self.derive_weak)
        except (ValueError, OSError) as e:
            raise DatasetError(f"{self._where(i)}: {e}") from None
        return _Cached(
            image=self.normalisation.apply(image),
            target=ann.target.astype(np.int64),
            allowed=np.ascontiguousarray(ann.allowed, dtype=bool),
            valid=np.ones(image.shape[1:], dtype=bool),
            instances=ann.instances.astype(np.int64),
            instance_classes=ann.instance_classes.astype(np.int64),
            points=ann.points.astype(np.int64).reshape(-1, 3),
            boxes=ann.boxes.astype(np.int64).reshape(-1, 5),
            image_labels=ann.image_labels.astype(np.int64),
            image_classes=ann.image_classes.astype(bool),
            kind=ann.kind, file=record.file,
        )

    def __len__(self) -> int:
        return len(self.items)

    def kinds(self) -> list[str]:
        """Annotation kind of every item (``mask``, ``box``, ``point``, ``image``, ``none``)."""
        return [it.kind for it in self.items]

    def indices_of_kinds(self, kinds: set[str] | frozenset[str]) -> list[int]:
        """Items whose kind is in ``kinds`` (the batch policy's usable images)."""
        return [i for i, it in enumerate(self.items) if it.kind in kinds]

    def __getitem__(self, key: int | tuple[int, Any]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, key)
        h, w = self.items[index].image.shape[-2:]
        if self.crop_size is None:
            arrays = self.window(index, 0, 0, h, w)
        else:
            rng = np.random.default_rng(seed)
            c = self.crop_size
            r0 = int(rng.integers(0, h - c + 1)) if h > c else 0
            c0 = int(rng.integers(0, w - c + 1)) if w > c else 0
            arrays = self.window(index, r0, c0, c, c)
        it = self.items[index]
        item: dict[str, Any] = {k: torch.from_numpy(v) for k, v in arrays.items()}
        item.update(kind=it.kind, index=index, file=it.file)
        return item

    def window(self, index: int, r0: int, c0: int, ch: int, cw: int) -> dict[str, np.ndarray]:
        """Arrays of the ``ch × cw`` window at (r0, c0) of item ``index``, padded past the image (see
        the module docstring). A window that is exactly the image returns the cached arrays."""
        it = self.items[index]
        h, w = it.image.shape[-2:]
        vh, vw = min(ch, h - r0), min(cw, w - c0)  # the part of the window inside the image
        if (vh, vw) == (h, w) == (ch, cw):
            return {k: getattr(it, k) for k in _ARRAYS}
        rows, cols = slice(r0, r0 + vh), slice(c0, c0 + vw)

        def cut(a: np.ndarray, fill: float | int | bool) -> np.ndarray:
            if (vh, vw) == (ch, cw):
                return a[..., rows, cols].copy()
            o = np.full((*a.shape[:-2], ch, cw), fill, dtype=a.dtype)
            o[..., :vh, :vw] = a[..., rows, cols]
            return o

        instances, instance_classes = crop_instances(cut(it.instances, 0), it.instance_classes)
        return {
            "image": cut(it.image, 0.0), "target": cut(it.target, self.ignore_index),
            "allowed": cut(it.allowed, True), "valid": cut(it.valid, False),
            "instances": instances, "instance_classes": instance_classes,
            "points": shift_points(it.points, r0, c0, vh, vw), "boxes": shift_boxes(it.boxes, r0, c0, vh, vw),
            "image_labels": it.image_labels if (vh, vw) == (h, w) else it.image_labels[:0],
            "image_classes": it.image_classes,
        }


def crop_instances(window: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instance ids (1..M) of a window renumbered 1..m over those present; their classes (m,)."""
    if classes.size == 0:
        return window, classes
    present = np.unique(window)
    present = present[present > 0]
    lut = np.zeros(classes.size + 1, dtype=np.int64)
    lut[present] = np.arange(1, present.size + 1)
    return lut[window], classes[present - 1]


def shift_points(points: np.ndarray, r0: int, c0: int, vh: int, vw: int) -> np.ndarray:
    """(P, 3) [class, row, col] → moved by (-r0, -c0), keeping those inside [0, vh) × [0, vw)."""
    p = points - np.array([0, r0, c0], dtype=points.dtype)
    keep = (p[:, 1] >= 0) & (p[:, 1] < vh) & (p[:, 2] >= 0) & (p[:, 2] < vw)
    return p[keep]


def shift_boxes(boxes: np.ndarray, r0: int, c0: int, vh: int, vw: int) -> np.ndarray:
    """(Nb, 5) [class, x0, y0, x1, y1] (half-open, x = column) → moved by (-c0, -r0), clipped to
    [0, vw] × [0, vh], dropping boxes left empty."""
    b = boxes - np.array([0, c0, r0, c0, r0], dtype=boxes.dtype)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, vw)
    b[:, [2, 4]] = b[:, [2, 4]].clip(0, vh)
    keep = (b[:, 3] > b[:, 1]) & (b[:, 4] > b[:, 2])
    return b[keep]


def collate(items: list[dict[str, Any]], ignore_index: int = 255) -> dict[str, Any]:
    """Stack items into a batch padded to the largest (h, w) of the batch (padding as for crops).

    Returns image (B, Cin, h, w), target (B, h, w), allowed (B, C, h, w), valid (B, h, w),
    instances (B, h, w) with ids made unique across the batch (1..M, 0 = none), instance_classes (M,),
    points (P, 4) [b, class, row, col], boxes (Nb, 6) [b, class, x0, y0, x1, y1],
    image_labels (L, 2) [b, class], image_classes (B, C), kinds list[str], index (B,), files list[str].
    The copying is done by numpy (single-threaded, see :class:`SegmentationDataset`).
    """
    if not items:
        raise ValueError("collate: empty batch")
    arr = [{k: np.asarray(it[k]) for k in _ARRAYS} for it in items]
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

    instances = stack("instances", 0)
    offset = 0
    for b, a in enumerate(arr):
        m = a["instance_classes"].size
        if m and offset:
            instances[b] += np.where(instances[b] > 0, offset, 0)
        offset += m

    def bags(name: str, width: int) -> np.ndarray:
        parts = [np.concatenate([np.full((a[name].shape[0], 1), b, dtype=np.int64),
                                 a[name].reshape(-1, width).astype(np.int64)], axis=1) for b, a in enumerate(arr)]
        return np.concatenate(parts)

    batch = {
        "image": stack("image", 0.0), "target": stack("target", ignore_index),
        "allowed": stack("allowed", True), "valid": stack("valid", False), "instances": instances,
        "instance_classes": np.concatenate([a["instance_classes"] for a in arr]).astype(np.int64),
        "points": bags("points", 3), "boxes": bags("boxes", 5), "image_labels": bags("image_labels", 1),
        "image_classes": np.stack([a["image_classes"] for a in arr]),
        "index": np.array([it["index"] for it in items], dtype=np.int64),
    }
    out: dict[str, Any] = {k: torch.from_numpy(v) for k, v in batch.items()}
    out["kinds"] = [it["kind"] for it in items]
    out["files"] = [it["file"] for it in items]
    return out
