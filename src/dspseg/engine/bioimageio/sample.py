"""The package's test image: a real validation image of the run's dataset, cropped to a valid size.

bioimage.io's test tensors are the example every consumer runs first; ``bioimageio.core`` checks that
the package reproduces the test output from the test input. :func:`pick_sample` takes the first
image of the ``val`` split (else ``test``, else ``train``: said in a note) whose sides reach the
U-Net's multiple, and crops its centre to at most ``side`` pixels a side, rounded down to that
multiple (the package's valid sizes: multiples of ``2 ** (levels - 1)``). File records are read with
:func:`dspseg.data.io.read_image_stored`, volume sections through
:class:`dspseg.data.volume_items.VolumeReader` (only the window is read).

The pixels stay as stored (uint8 stays uint8), so the package's preprocessing does the scaling; only
types bioimage.io has no name for change, by dspseg's own rule: bool → float32 0/1, float16 → float32.

    >>> crop_window(100, 37, side=64, multiple=8)
    (18, 2, 64, 32)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dspseg.data.manifest import Manifest
from dspseg.errors import ExportError

#: the splits searched, in order
SPLITS = ("val", "test", "train")
#: pixel types a bioimage.io tensor can declare (bool and float16 are converted, see the module doc)
SPEC_DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32", "float64")


@dataclass
class Sample:
    """``stored`` (Cin, h, w) pixels in a :data:`SPEC_DTYPES` type; where they come from, in words."""

    stored: np.ndarray
    source: str
    split: str
    notes: list[str] = field(default_factory=list)


def crop_window(height: int, width: int, side: int, multiple: int) -> tuple[int, int, int, int]:
    """``(r0, c0, h, w)``: the centred window of at most ``side`` pixels a side, sides multiples of ``multiple``."""
    h = min(height, side) // multiple * multiple
    w = min(width, side) // multiple * multiple
    return (height - h) // 2, (width - w) // 2, h, w


def spec_pixels(stored: np.ndarray) -> np.ndarray:
    """``stored`` in a type bioimage.io names: bool → float32 (0/1), float16 → float32, others unchanged."""
    if stored.dtype == np.bool_ or stored.dtype == np.float16:
        return stored.astype(np.float32)
    return stored


def pick_sample(manifest: Manifest, in_channels: int, multiple: int, side: int) -> Sample:
    """The test image (see the module doc). ExportError when no record of any split is at least
    ``multiple`` pixels a side, or the chosen image has another number of channels than the run."""
    from dspseg.data.io import read_image_stored
    from dspseg.data.volume_items import VolumeReader

    side = max(multiple, side // multiple * multiple)
    reader = VolumeReader(manifest) if manifest.has_volumes else None
    for split in SPLITS:
        for record in manifest.records(split):
            whole = None if record.volume is not None else read_image_stored(manifest.path(record.file))
            height, width = reader.shape(record) if whole is None else whole.shape[-2:]
            if min(height, width) < multiple:
                continue
            r0, c0, h, w = crop_window(height, width, side, multiple)
            stored = reader.stored(record, (r0, c0, h, w)) if whole is None else whole[:, r0:r0 + h, c0:c0 + w]
            if stored.shape[0] != in_channels:
                raise ExportError(f"{record.source} in {manifest.root} has {stored.shape[0]} channel(s) but the run "
                                  f"was trained on {in_channels}; give --data the dataset the run was trained on")
            notes = []
            if split != "val":
                notes.append(f"the dataset has no usable 'val' image; the test image is from the '{split}' split")
            crop = "" if (h, w) == (height, width) else f", centre {h}×{w} of {height}×{width}"
            return Sample(spec_pixels(np.ascontiguousarray(stored)), f"{record.source} ({split}{crop})", split, notes)
    raise ExportError(f"no image of {manifest.root} is at least {multiple}×{multiple} pixels (the model's smallest "
                      "input); give --data the dataset the run was trained on")
