"""Naming a volume: :class:`VolumeRef` (which array, where) and :class:`SectionRange` (which sections).

A reference is small and serialisable (a later ``dataset.json`` volume record embeds it)::

    {"url": "s3://bucket/cell.zarr", "array": "em/fibsem-uint8", "level": 1, "axes": "zyx"}

``url`` is a local path or an fsspec URL (``file://``, ``s3://`` read anonymously unless
``storage_options`` say otherwise, ``https://``). ``format`` is detected from the URL and the store
when left at ``auto``. ``array`` is the key inside a container (zarr group path, N5 dataset, HDF5
dataset); ``level`` picks an OME-Zarr multiscale level (its index, finest = 0, or its path);
``axes`` (letters of ``tczyx``) declares or checks the stored axis order; ``select`` fixes the index
of each non-spatial axis (``{"c": 0}``); ``region`` makes the volume a box of the array
(:class:`Region`: ``start`` and ``stop`` voxels of the chosen level along z, y, x, half-open), e.g. an
annotated crop of a large FIB-SEM volume: its sections, sizes and translation are then the box's.
Every mistake is one :class:`~dspseg.errors.VolumeError` sentence naming the URL, the field and the fix.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dspseg.errors import VolumeError

FORMATS = ("auto", "ome-zarr", "zarr", "n5", "hdf5", "tiff")
SPATIAL = "zyx"
AXIS_LETTERS = "tczyx"


class Region(BaseModel):
    """A box of an array: voxels ``start`` (inclusive) to ``stop`` (exclusive) along z, y, x (the
    spatial axes in this order, whatever the stored order), in voxels of the chosen level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: tuple[int, int, int], info: Any) -> tuple[int, int, int]:
        start = info.data.get("start")
        if start is not None and (min(start) < 0 or any(b <= a for a, b in zip(start, v))):
            raise ValueError(f"a region needs 0 <= start < stop along z, y and x, got start {list(start)}, stop {list(v)}")
        return v

    def text(self) -> str:
        """``z1:4,y3:19,x2:22`` (for names and messages)."""
        return ",".join(f"{a}{s}:{e}" for a, s, e in zip("zyx", self.start, self.stop))


class VolumeRef(BaseModel):
    """Where an array lives and how to read it (see the module docstring for each field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)
    format: Literal["auto", "ome-zarr", "zarr", "n5", "hdf5", "tiff"] = "auto"
    array: str | None = None
    level: int | str | None = None
    axes: str | None = None
    select: dict[str, int] = Field(default_factory=dict)
    storage_options: dict[str, Any] = Field(default_factory=dict)
    region: Region | None = None

    @field_validator("axes")
    @classmethod
    def _axes(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower()
        if any(a not in AXIS_LETTERS for a in v) or len(set(v)) != len(v) or not set(SPATIAL) <= set(v):
            raise ValueError(f"axes are distinct letters of '{AXIS_LETTERS}' including z, y and x, got {v!r}")
        return v

    @field_validator("select")
    @classmethod
    def _select(cls, v: dict[str, int]) -> dict[str, int]:
        for axis, index in v.items():
            if axis not in "tc" or len(axis) != 1 or index < 0:
                raise ValueError(f"select maps a non-spatial axis 't' or 'c' to an index >= 0, got {axis!r}: {index}")
        return v

    @classmethod
    def parse(cls, data: Any, where: str = "volume reference") -> VolumeRef:
        """A reference from a dict or a plain URL string; a bad one raises one VolumeError sentence."""
        if isinstance(data, str):
            data = {"url": data}
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "url"
            fix = {"url": "give the path or URL of the volume",
                   "format": f"use one of {', '.join(FORMATS)}",
                   "axes": "write the stored axis order, e.g. 'zyx' or 'czyx'",
                   "select": "write e.g. {\"c\": 0}",
                   "region": "write e.g. {\"start\": [0, 0, 0], \"stop\": [16, 256, 256]} (z, y, x voxels)"}.get(field.split(".")[0], "remove or correct the field")
            if first["type"] == "extra_forbidden":
                fix = f"remove it (the fields are {', '.join(cls.model_fields)})"
            url = data.get("url", where) if isinstance(data, dict) else where
            raise VolumeError(url, field, first["msg"].removeprefix("Value error, "), fix) from None

    def key(self) -> str:
        """A string that identifies the volume (the array, and its region if any)."""
        level = "" if self.level in (None, 0) else self.level  # no level = the finest, level 0
        key = f"{self.format}:{self.url}:{self.array or ''}:{level}"
        return key + (f":{self.region.text()}" if self.region is not None else "")

    def name(self) -> str:
        """``url[array]`` plus ``{z1:4,y3:19,x2:22}`` for a region: the volume, for messages and groups."""
        return (f"{self.url}{f'[{self.array}]' if self.array else ''}"
                + (f"{{{self.region.text()}}}" if self.region is not None else ""))


class SectionRange(BaseModel):
    """A run of sections along one axis: ``start`` to ``stop`` (exclusive, None = the end) every
    ``step``, less ``exclude`` — how a record will say "every section but the annotated ones"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    axis: Literal["z", "y", "x"] = "z"
    start: int = Field(0, ge=0)
    stop: int | None = Field(None, ge=0)
    step: int = Field(1, ge=1)
    exclude: tuple[int, ...] = ()

    def indices(self, size: int, where: str = "volume") -> list[int]:
        """The section indices along an axis of ``size`` sections; out of range is a VolumeError."""
        stop = size if self.stop is None else self.stop
        if self.start >= size or stop > size:
            raise VolumeError(where, "stop" if stop > size else "start",
                              f"sections {self.start}..{stop} do not fit the {size} sections along {self.axis}",
                              f"keep start < {size} and stop <= {size}")
        drop = set(self.exclude)
        return [i for i in range(self.start, stop, self.step) if i not in drop]
