"""Volume sections as dataset items, read per window: the lazy side of :mod:`dspseg.data.dataset`.

A volume record (:mod:`dspseg.data.volume_records`) keeps nothing in memory but its record and its
section's (H, W), taken from the volume's metadata. :meth:`VolumeReader.window` reads the window
``(r0, c0, h, w)`` of the section from the image volume (and of the label volume or 2D mask file)
through the bounded :class:`~dspseg.data.volumes.ChunkCache`, scales it by the one intensity rule
(:func:`dspseg.data.intensity.to_unit`) and rasterises the annotation for that window only
(:func:`dspseg.data.rasterise.rasterise` with ``window``); the arrays are the caller's and are
dropped after the step. Memory is the crop and the cache budget, never the volume.

Volumes are opened lazily, once per process: a DataLoader worker (forked or spawned) reopens them on
its first read, since HDF5 and TIFF handles cannot be shared across processes.

Derived weak labels of a masked window (``derive_weak``) come from the window's own mask: an object
cut by the window's edge gives a box and a point inside the window.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dspseg.data.intensity import to_unit
from dspseg.data.io import read_mask
from dspseg.data.manifest import ImageRecord, Manifest, resolve_inside
from dspseg.data.rasterise import Annotation, rasterise
from dspseg.data.volume_records import VolumeMask, resolve_ref
from dspseg.data.volumes import ChunkCache, Volume, VolumeRef, open_volume
from dspseg.errors import VolumeError

SAMPLE_SECTIONS = 8
"""Sections read (at most ``SAMPLE_SIDE`` square, centred) to estimate the normalisation."""
SAMPLE_SIDE = 512


@dataclass
class LazyItem:
    """One volume section of a split: its record, (H, W), kind and label; no pixels."""

    record: ImageRecord
    shape: tuple[int, int]
    kind: str
    file: str
    owner: object  # the SegmentationDataset: its window_of(item, r0, c0, h, w) reads the arrays

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The whole section's item arrays, read now (evaluation of whole sections); not kept."""
        return self.owner.window_of(self, 0, 0, *self.shape)

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_") or name in ("record", "shape", "kind", "file", "owner"):
            raise AttributeError(name)
        arrays = self.arrays
        if name in arrays:
            return arrays[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


class VolumeReader:
    """Opens a manifest's volumes once per process and reads windows of their sections.

    ``cache``: the chunk cache of every volume it opens (None = the process-wide one).
    """

    def __init__(self, manifest: Manifest, cache: ChunkCache | None = None):
        self.root = Path(manifest.root)
        self.cache = cache
        self._volumes: dict[str, Volume] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        # handles are reopened in the new process, and its cache is a new one of the same budget
        budget = None if self.cache is None else self.cache.max_bytes
        return {**self.__dict__, "_volumes": {}, "cache": None, "_budget": budget, "_pid": -1}

    def __setstate__(self, state: dict) -> None:
        budget = state.pop("_budget")
        self.__dict__.update(state, cache=None if budget is None else ChunkCache(budget))

    def volume(self, ref: VolumeRef) -> Volume:
        """The opened volume of ``ref`` (metadata only), reopened in a new process (a forked worker
        also gets a new cache of the same budget: the parent's lock may be held at the fork)."""
        if self._pid != os.getpid():
            if self._pid != -1 and self.cache is not None:
                self.cache = ChunkCache(self.cache.max_bytes)
            self._volumes, self._pid = {}, os.getpid()
        key = ref.key()
        if key not in self._volumes:
            self._volumes[key] = open_volume(resolve_ref(self.root, ref), cache=self.cache)
        return self._volumes[key]

    def shape(self, record: ImageRecord) -> tuple[int, int]:
        """(H, W) of the record's section, from metadata; the index is checked against the volume."""
        vol = self.volume(record.volume)
        size = vol.size(record.section_axis)
        if not 0 <= record.index < size:
            raise VolumeError(record.volume.url, "index", f"section {record.index} is outside the {size} "
                              f"sections along {record.section_axis}", f"use 0 <= index < {size}")
        return vol.section_shape(record.section_axis)

    def stored(self, record: ImageRecord, window: tuple[int, int, int, int]) -> np.ndarray:
        """(1, h, w) stored pixels of the window of the record's section."""
        return self.volume(record.volume).section(record.section_axis, record.index, window)[None]

    def mask(self, record: ImageRecord, window: tuple[int, int, int, int], ignore_index: int,
             classes: list[str]) -> np.ndarray | None:
        """(h, w) int64 class ids of the window (``ignore_index`` where unannotated), or None."""
        if record.mask is None:
            return None
        r0, c0, h, w = window
        if isinstance(record.mask, VolumeMask):
            stored = self.volume(record.mask.volume).section(record.section_axis, record.index, window)
            return record.mask.class_ids(stored, classes, ignore_index)
        return read_mask(resolve_inside(self.root, record.mask))[r0:r0 + h, c0:c0 + w]

    def annotation(self, record: ImageRecord, classes: list[str], ignore_index: int, shape: tuple[int, int],
                   window: tuple[int, int, int, int], derive_weak: bool) -> Annotation:
        """The record's annotation rasterised on ``window`` of its (H, W) section."""
        return rasterise(record, classes, ignore_index, shape, mask=self.mask(record, window, ignore_index, classes),
                         derive_weak=derive_weak, window=window)

    def sample(self, records: list[ImageRecord]) -> list[np.ndarray]:
        """Scaled (1, h, w) windows of up to :data:`SAMPLE_SECTIONS` sections spread over ``records``
        (centred, at most :data:`SAMPLE_SIDE` square): the normalisation's estimate."""
        if not records:
            return []
        picks = sorted(set(np.linspace(0, len(records) - 1, min(SAMPLE_SECTIONS, len(records))).round().astype(int)))
        out = []
        for k in picks:
            h, w = self.shape(records[k])
            sh, sw = min(h, SAMPLE_SIDE), min(w, SAMPLE_SIDE)
            out.append(to_unit(self.stored(records[k], ((h - sh) // 2, (w - sw) // 2, sh, sw))))
        return out


def record_mask(manifest: Manifest, record: ImageRecord, reader: VolumeReader | None = None) -> np.ndarray:
    """(H, W) int64 class ids (``ignore_index`` where unannotated) of any masked record's whole mask:
    its mask file, or its section of a label volume (one section read, never the volume). Pass one
    ``reader`` when reading many, so each volume is opened once."""
    if record.volume is None:
        return read_mask(manifest.path(record.mask))
    reader = reader if reader is not None else VolumeReader(manifest)
    return reader.mask(record, (0, 0, *reader.shape(record)), manifest.ignore_index, manifest.classes)


def section_mask(manifest: Manifest, record: ImageRecord) -> np.ndarray:
    """(H, W) int64 class ids of a volume record's whole mask section (:func:`record_mask`, one reader each call)."""
    return record_mask(manifest, record)
