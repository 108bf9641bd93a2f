"""Torch dataset of a manifest split: files decoded once into memory, volume sections read per crop;
cropped per step (then collated by :func:`dspseg.data.batch.collate` into a :class:`~dspseg.data.batch.Batch`).

**Which records.** :func:`select_records` returns the records whose ``split`` is the one asked
for. A manifest whose records carry no ``split`` at all is treated as all-training: every record is
``train`` and ``val``/``test`` are empty (run ``dspseg simulate`` to make proper splits).

**Cache.** Every image is read, normalised and rasterised (:func:`dspseg.data.rasterise.rasterise`
with ``derive_weak=True``, so mask images also carry their boxes, points and image labels) once, when
the dataset is built; the per-step work is slicing tensors (memory: about 4 · Cin + C + 16 bytes per
pixel; a crop that is the whole image is handed out without copying).

**Volume sections** (records with ``volume``, :mod:`dspseg.data.volume_records`) are not read at
start: an item is a :class:`~dspseg.data.volume_items.LazyItem` (record and (H, W) from metadata)
and every crop reads its window from the volume through the bounded chunk cache and rasterises the
annotation for that window only (:mod:`dspseg.data.volume_items`); the item's arrays are dropped
after the step. Files and sections share this interface: :meth:`SegmentationDataset.window_of` cuts
a window from the cached arrays (the fast special case) or reads it.

**Normalisation.** Stored pixels become the input by the one rule of :mod:`dspseg.data.intensity`
(integers divided by their type's maximum, floats as stored), then ``(x - mean_c) / std_c`` per input
channel, with mean and std over every pixel of the training images and of a sample of the training
volume sections (:meth:`~dspseg.data.volume_items.VolumeReader.sample`; :func:`compute_normalisation`),
which also records the training images' pixel types. It is saved in checkpoints, applied again at
evaluation and prediction time, and written to an export's ``model.json``. What the reader noted
(a series chosen, pages read as channels) is kept in ``notes`` for the trainer to print.

**Crops (training).** A ``crop × crop`` window at a random offset; the offset comes from a generator
seeded by the key the sampler passes (seed, epoch, position), so an epoch's crops are reproducible
and independent of worker processes. Along an axis shorter than the crop the image sits at offset 0
and the rest is padding, each field with its declared fill (:mod:`dspseg.data.batch`: the image 0 =
the mean after normalisation, ``valid`` False; padding carries no annotation). Bags follow the crop:
points are shifted and dropped when outside; boxes are shifted and clipped to the image part of the
crop (a clipped box's rows (or columns) no longer all cross its object); instances are renumbered
1..m over those present; ``image_labels`` are kept only when the crop holds the whole image (a crop
may miss the labelled class).
Without a crop size (validation, test) an item is the whole image.

(Over 300 lines: the one item interface for files and volume sections — window, pad, bags — stays
in one class; the volume reading itself is :mod:`dspseg.data.volume_items`.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dspseg.data.batch import ARRAYS, PIXELS, array_fields, fill_value, item_array
from dspseg.data.intensity import to_unit
from dspseg.data.io import read_image_stored, read_mask
from dspseg.data.manifest import ImageRecord, Manifest
from dspseg.data.rasterise import crop_instances, rasterise, shift_boxes, shift_points
from dspseg.data.volume_items import LazyItem, VolumeReader
from dspseg.data.volumes import ChunkCache
from dspseg.errors import DatasetError, VolumeReadError
from dspseg.vocabulary import BOX, POINT


def select_records(manifest: Manifest, split: str) -> list[tuple[int, ImageRecord]]:
    """``(index in manifest.images, record)`` of the records in ``split`` (module docstring)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    if not any(r.split is not None for r in manifest.images):
        return list(enumerate(manifest.images)) if split == "train" else []
    return [(i, r) for i, r in enumerate(manifest.images) if r.split == split]


@dataclass(frozen=True)
class Normalisation:
    """Per-channel ``mean`` and ``std`` (each length Cin): ``x_norm = (x - mean) / std``, for ``x`` scaled
    by :func:`dspseg.data.intensity.to_unit`; ``dtypes``: the training images' stored pixel types
    (empty for checkpoints written before they were recorded)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    dtypes: tuple[str, ...] = ()

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(Cin, H, W) float → normalised float32; ValueError if Cin differs from len(mean)."""
        if image.ndim != 3 or image.shape[0] != len(self.mean):
            raise ValueError(f"normalisation: image must be ({len(self.mean)}, H, W), got {image.shape}")
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return ((image - mean) / std).astype(np.float32)

    def to_dict(self) -> dict[str, list[Any]]:
        return {"mean": list(self.mean), "std": list(self.std), "dtypes": list(self.dtypes)}

    @classmethod
    def from_dict(cls, d: dict[str, Sequence[Any]]) -> Normalisation:
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]),
                   tuple(str(v) for v in d.get("dtypes", ())))


def compute_normalisation(images: Sequence[np.ndarray], dtypes: Sequence[str] = ()) -> Normalisation:
    """Mean and std per channel over all pixels of ``images`` (each (Cin, H, W), scaled); std < 1e-6 → 1.
    ``dtypes``: the stored pixel types of those images (recorded, sorted and unique)."""
    if not images:
        raise DatasetError("no training images to compute the intensity normalisation from")
    n = sum(im.shape[1] * im.shape[2] for im in images)
    s = sum(im.reshape(im.shape[0], -1).sum(1, dtype=np.float64) for im in images)
    mean = s / n
    ss = sum(((im.reshape(im.shape[0], -1) - mean[:, None]) ** 2).sum(1, dtype=np.float64) for im in images)
    std = np.sqrt(ss / n)
    std = np.where(std < 1e-6, 1.0, std)
    return Normalisation(tuple(float(v) for v in mean), tuple(float(v) for v in std), tuple(sorted(set(dtypes))))


@dataclass
class _Cached:
    """One image: its item arrays (:data:`dspseg.data.batch.ARRAYS`, whole image), kind and file.
    An array also reads as an attribute of its field's name (``item.image``, ``item.target``)."""

    arrays: dict[str, np.ndarray]
    kind: str
    file: str

    @property
    def shape(self) -> tuple[int, int]:
        return self.arrays["image"].shape[-2:]

    def __getattr__(self, name: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


class SegmentationDataset(Dataset):
    """One split of a manifest, held in memory (module docstring).

    Args:
        manifest: the loaded manifest.
        split: ``train``, ``val`` or ``test`` (see :func:`select_records`).
        normalisation: intensity normalisation; None computes it from this split's images.
        crop_size: side of training crops; None gives whole images.
        derive_weak: give mask images their derived boxes, points and image labels (training).
        progress: optional callback ``(done, total)`` while reading.
        cache: chunk cache of the volume sections' reads (None = the process-wide one).

    Items are dicts of tensors named and shaped as the fields of :class:`~dspseg.data.batch.Batch`
    without the batch axis (:data:`~dspseg.data.batch.ARRAYS`), plus kind str, index int, file str.
    ``dataset[i]`` is image i whole (or cropped at a generator seeded by i); ``dataset[(i, key)]``
    crops with a generator seeded by ``key``. Items may share memory with the cache: do not modify
    them in place (:func:`collate` copies). The work is done in numpy, single-threaded: small
    multi-threaded torch copies stall when the cores are busy with the model.
    """

    def __init__(self, manifest: Manifest, split: str, normalisation: Normalisation | None = None,
                 crop_size: int | None = None, derive_weak: bool = True,
                 progress: Callable[[int, int], None] | None = None, cache: ChunkCache | None = None) -> None:
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
        self.notes: list[str] = []  # what the reader noted (a TIFF series chosen, pages read as channels)
        self.dtypes: list[str] = []  # stored pixel type per image
        self.reader = VolumeReader(manifest, cache)
        raw = self._read_images(progress)
        lazy = {i: self._lazy(i) for i, (_, r) in enumerate(self.records) if r.volume is not None}
        sample = [] if normalisation else self.reader.sample([self.records[i][1] for i in lazy])
        channels = {im.shape[0] for im in [*raw.values(), *sample]} | ({1} if lazy else set())
        if len(channels) > 1:
            raise DatasetError(f"the {split} images and volume sections of {self.manifest.root / 'dataset.json'} "
                               f"have {sorted(channels)} channels; all need the same channels")
        self.in_channels = channels.pop() if channels else 0
        if normalisation is None and (raw or sample):
            normalisation = compute_normalisation([*raw.values(), *sample], self.dtypes)
        self.normalisation = normalisation
        del sample
        if (raw or lazy) and len(self.normalisation.mean) != self.in_channels:
            raise DatasetError(f"the {split} images have {self.in_channels} channel(s) but the normalisation "
                               f"(from the training images or the model) has {len(self.normalisation.mean)}")
        self.items = [lazy[i] if i in lazy else self._cache(i, raw.pop(i)) for i in range(len(self.records))]

    def _where(self, i: int) -> str:
        index, record = self.records[i]
        return f"{self.manifest.root / 'dataset.json'}: images[{index}] ({record.source})"

    def _lazy(self, i: int) -> LazyItem:
        record = self.records[i][1]
        try:
            shape = self.reader.shape(record)
        except (ValueError, OSError) as e:
            raise DatasetError(f"{self._where(i)}: {e}") from None
        self.dtypes.append(self.reader.volume(record.volume).dtype.name)
        return LazyItem(record, shape, kind=record.annotation_type, file=record.source, owner=self)

    def _read_images(self, progress: Callable[[int, int], None] | None) -> dict[int, np.ndarray]:
        """The scaled (Cin, H, W) image of every file record, by position in ``self.records``."""
        out: dict[int, np.ndarray] = {}
        for i, (_, record) in enumerate(self.records):
            if record.volume is not None:
                continue
            try:
                stored = read_image_stored(self.manifest.path(record.file), self.notes)
            except (ValueError, OSError) as e:
                raise DatasetError(f"{self._where(i)}: {e}") from None
            image = to_unit(stored)
            self.dtypes.append(stored.dtype.name)
            first = next(iter(out), None)
            if first is not None and image.shape[0] != out[first].shape[0]:
                raise DatasetError(f"{self._where(i)}: the image has {image.shape[0]} channel(s) but "
                                   f"{self.records[first][1].file} has {out[first].shape[0]}; all images need the same channels")
            out[i] = image
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
        # the annotation's arrays (rasterise's Annotation names them like the batch fields) + image, valid
        arrays = {k: item_array(k, getattr(ann, k)) for k in ARRAYS if k not in ("image", "valid")}
        arrays.update(image=self.normalisation.apply(image), valid=np.ones(image.shape[1:], dtype=bool))
        return _Cached(arrays, kind=ann.kind, file=record.file)

    def __len__(self) -> int:
        return len(self.items)

    def kinds(self) -> list[str]:
        """Annotation kind of every item (``mask``, ``box``, ``point``, ``image``, ``none``)."""
        return [it.kind for it in self.items]

    def annotated_classes(self) -> set[int]:
        """Class ids that some annotation of this split names: mask pixels (not ``ignore_index``),
        points, boxes, image labels. Fewer than two: nothing to tell apart (the trainer refuses)."""
        found: set[int] = set()
        for it in self.items:
            if isinstance(it, LazyItem):
                found.update(self._named_classes(it))
                continue
            t = it.arrays["target"]
            found.update(np.unique(t[t != self.ignore_index]).tolist())
            found.update(it.arrays["points"][:, POINT.c].tolist())
            found.update(it.arrays["boxes"][:, BOX.c].tolist())
            found.update(it.arrays["image_labels"].reshape(-1).tolist())
        return {int(c) for c in found if 0 <= c < self.n_classes}

    def _named_classes(self, it: LazyItem) -> set[int]:
        """Class ids a volume section's annotation names (its mask read one window at a time)."""
        rec, ids = it.record, {c: i for i, c in enumerate(self.classes)}
        found = {ids[c] for c in [*(rec.labels or []), *(b.cls for b in rec.boxes or []),
                                  *(p.cls for p in rec.points or [])] if c in ids}
        if rec.mask is not None:
            h, w = it.shape
            for r0 in range(0, h, 512):
                m = self.reader.mask(rec, (r0, 0, min(512, h - r0), w), self.ignore_index, self.classes)
                found.update(np.unique(m[m != self.ignore_index]).tolist())
        return found

    def indices_of_kinds(self, kinds: set[str] | frozenset[str]) -> list[int]:
        """Items whose kind is in ``kinds`` (the batch policy's usable images)."""
        return [i for i, it in enumerate(self.items) if it.kind in kinds]

    def __getitem__(self, key: int | tuple[int, Any]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, key)
        h, w = self.items[index].shape
        if self.crop_size is None:
            arrays = self.window(index, 0, 0, h, w)
        else:
            rng = np.random.default_rng(seed)
            c = self.crop_size
            r0 = int(rng.integers(0, h - c + 1)) if h > c else 0
            c0 = int(rng.integers(0, w - c + 1)) if w > c else 0
            arrays = self.window(index, r0, c0, c, c)
        it = self.items[index]
        item: dict[str, Any] = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        item.update(kind=it.kind, index=index, file=it.file)
        return item

    def window(self, index: int, r0: int, c0: int, ch: int, cw: int) -> dict[str, np.ndarray]:
        """Arrays of the ``ch × cw`` window at (r0, c0) of item ``index``, padded past the image (see
        the module docstring). A window that is exactly a file's image returns the cached arrays."""
        return self.window_of(self.items[index], r0, c0, ch, cw)

    def window_of(self, item: _Cached | LazyItem, r0: int, c0: int, ch: int, cw: int) -> dict[str, np.ndarray]:
        """:meth:`window` of an item: cut from a file's cached arrays, or read from a volume."""
        h, w = item.shape
        vh, vw = min(ch, h - r0), min(cw, w - c0)  # the part of the window inside the image
        if isinstance(item, LazyItem):
            try:
                it = self._read_window(item.record, (h, w), (r0, c0, vh, vw))
            except VolumeReadError:
                raise  # one sentence already: volume, array, section, chunk and fix
            except (ValueError, OSError) as e:
                raise DatasetError(f"{item.file}: {e}") from None
            out = self._pad(it, 0, 0, vh, vw, ch, cw)
            if (vh, vw) != (h, w):
                out["image_labels"] = out["image_labels"][:0]
            return out
        if (vh, vw) == (h, w) == (ch, cw):
            return dict(item.arrays)
        out = self._pad(item.arrays, r0, c0, vh, vw, ch, cw)
        if (vh, vw) != (h, w):
            out["image_labels"] = out["image_labels"][:0]
        return out

    def _read_window(self, record: ImageRecord, shape: tuple[int, int], window: tuple[int, int, int, int]) -> dict:
        """The (h, w) item arrays of ``window`` of a volume record's section, read and rasterised now."""
        image = to_unit(self.reader.stored(record, window))
        ann = self.reader.annotation(record, self.classes, self.ignore_index, shape, window, self.derive_weak)
        arrays = {k: item_array(k, getattr(ann, k)) for k in ARRAYS if k not in ("image", "valid")}
        arrays.update(image=self.normalisation.apply(image), valid=np.ones(image.shape[1:], dtype=bool))
        return arrays

    def _pad(self, it: dict[str, np.ndarray], r0: int, c0: int, vh: int, vw: int, ch: int, cw: int) -> dict:
        """The ``vh × vw`` part at (r0, c0) of ``it``, padded to ``ch × cw`` with each field's fill."""
        rows, cols = slice(r0, r0 + vh), slice(c0, c0 + vw)

        def cut(a: np.ndarray, fill: float | int | bool) -> np.ndarray:
            if (vh, vw) == (ch, cw):
                return a[..., rows, cols].copy()
            o = np.full((*a.shape[:-2], ch, cw), fill, dtype=a.dtype)
            o[..., :vh, :vw] = a[..., rows, cols]
            return o

        out = {f.name: cut(it[f.name], fill_value(f, self.ignore_index))
               for f in array_fields() if f.metadata["role"] == PIXELS}
        out["instances"], out["instance_classes"] = crop_instances(out["instances"], it["instance_classes"])
        out.update(points=shift_points(it["points"], r0, c0, vh, vw), boxes=shift_boxes(it["boxes"], r0, c0, vh, vw),
                   image_labels=it["image_labels"], image_classes=it["image_classes"])
        return out

