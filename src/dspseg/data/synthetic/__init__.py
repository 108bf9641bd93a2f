"""Built-in synthetic FIB-SEM-like organelle data (see docs/synthetic.md).

``generate_image`` draws one section for a :class:`GroupStyle`; ``write_synthetic_dataset`` writes
a whole dataset folder (TIFF images, TIFF masks, ``dataset.json``) in groups of shared style;
``write_synthetic_volume`` writes one 3D volume (OME-Zarr image + NGFF label image) whose organelles
are 3D bodies.
"""

from __future__ import annotations

from dspseg.data.synthetic.scene import generate_image
from dspseg.data.synthetic.style import SYNTH_CLASSES, GroupStyle
from dspseg.data.synthetic.volume import write_synthetic_volume
from dspseg.data.synthetic.writer import group_styles, iter_synthetic, write_synthetic_dataset

__all__ = [
    "SYNTH_CLASSES",
    "GroupStyle",
    "generate_image",
    "group_styles",
    "iter_synthetic",
    "write_synthetic_dataset",
    "write_synthetic_volume",
]
