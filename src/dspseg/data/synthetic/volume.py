"""Write a synthetic FIB-SEM volume as an OME-Zarr image with an NGFF label image, slab by slab.

Layout (NGFF 0.5 on zarr v3; ``ome_zarr.writer`` writes every attribute)::

    OUT/                         image group: multiscales (axes z, y, x in nanometer), levels s0, s1, ...
    OUT/s0, OUT/s1 ...           uint8 grey levels; level k is 2^k coarser (mean of 2 x 2 x 2 voxels)
    OUT/labels/organelles/       image-label: one property per class (label-value k = SYNTH_CLASSES[k],
                                 its name and colour); levels by mode of 2 x 2 x 2 voxels
    OUT/.dspseg-synthetic-volume.json   the arguments and the volume's GroupStyle

The scene (:mod:`.volume_scene`) is planned once; slabs of ``2^(levels-1) * chunk_z`` planes are
rendered (:mod:`.volume_render`) and written into whole chunks of every level, so every chunk is
written once and memory is one slab (a few arrays of ``slab x Y x X``), whatever the depth ``Z``.
The volume is built in a temporary sibling and renamed into place (:func:`dspseg.fsutil.new_folder`).
Values: label k is class k (0 = ``extracellular``), as in the 2D masks; no Golgi is drawn in volumes.

    >>> write_synthetic_volume("cell.ome.zarr", shape=(32, 128, 128), seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dspseg.colours import image_label_colors
from dspseg.data.synthetic.style import SYNTH_CLASSES, GroupStyle
from dspseg.data.synthetic.volume_render import render_slab
from dspseg.data.synthetic.volume_scene import plan_volume
from dspseg.data.volumes.pyramid import level_datasets, mean_downsample, mode_downsample
from dspseg.fsutil import new_folder, write_text_atomic

LABEL_NAME = "organelles"
MARKER = ".dspseg-synthetic-volume.json"
def downsample(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One pyramid step of a slab (D, Y, X), every side even: image by the mean of each 2 x 2 x 2 block
    (rounded), labels by its most frequent class (ties: the lowest class id)."""
    return mean_downsample(image), mode_downsample(labels, len(SYNTH_CLASSES))


def _multiscale(group: Any, levels: int, voxel: tuple[float, float, float], fmt: Any) -> list[str]:
    from ome_zarr.writer import write_multiscales_metadata

    datasets = level_datasets(levels, voxel)
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=axes)
    return [d["path"] for d in datasets]


def _check(shape: tuple[int, int, int], chunks: tuple[int, int, int], levels: int) -> None:
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be (Z, Y, X) with every side >= 16, got {shape}")
    if levels < 1 or any(s % (2 ** (levels - 1)) for s in shape):
        raise ValueError(f"with levels={levels} every side of shape {shape} must be a multiple of {2 ** (levels - 1)}")
    if len(chunks) != 3 or min(chunks) < 1:
        raise ValueError(f"chunks must be 3 positive numbers, got {chunks}")


def write_synthetic_volume(out: str | Path, shape: tuple[int, int, int] = (64, 256, 256), seed: int = 0,
                           voxel_size: tuple[float, float, float] = (8.0, 8.0, 8.0),
                           chunks: tuple[int, int, int] = (16, 64, 64), levels: int = 2,
                           style: GroupStyle | None = None) -> Path:
    """Write the OME-Zarr image ``out`` (see the module docstring); ``out`` must be new or empty.

    ``shape`` is (Z, Y, X) voxels of ``voxel_size`` nm; the style is drawn from ``seed`` unless
    given (cells kept small enough for a few to fit: radius 60-140 px; extracellular pockets
    of at most 12 px, since a cleft cut obliquely already shows wide). Returns ``out``.
    """
    import zarr

    with warnings.catch_warnings():  # ome_zarr.writer's import warns about its own deprecated Scaler
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.format import FormatV05
        from ome_zarr.writer import write_label_metadata
    shape, chunks = tuple(int(v) for v in shape), tuple(int(v) for v in chunks)
    _check(shape, chunks, levels)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not empty; give a new folder for the volume")
    rng = np.random.default_rng([seed, 0])
    if style is None:
        style = GroupStyle.sample(rng)
        style = dataclasses.replace(style, cell_radius=float(np.exp(rng.uniform(np.log(60), np.log(140)))),
                                    ecs_pocket=min(style.ecs_pocket, 12.0))
    scene = plan_volume(shape, style, int(seed))
    fmt = FormatV05()
    with new_folder(out, "volume") as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        labels_root = root.create_group("labels")
        label = labels_root.create_group(LABEL_NAME)
        paths = _multiscale(root, levels, voxel_size, fmt)
        _multiscale(label, levels, voxel_size, fmt)
        write_label_metadata(labels_root, LABEL_NAME, fmt=fmt,
                             colors=image_label_colors(len(SYNTH_CLASSES)),
                             properties=[{"label-value": k, "class": name} for k, name in enumerate(SYNTH_CLASSES)])
        arrays = []
        for k, path in enumerate(paths):
            level_shape = tuple(s // 2 ** k for s in shape)
            level_chunks = tuple(min(c, s) for c, s in zip(chunks, level_shape))
            arrays.append((root.create_array(path, shape=level_shape, chunks=level_chunks, dtype="uint8"),
                           label.create_array(path, shape=level_shape, chunks=level_chunks, dtype="uint8",
                                              fill_value=0, dimension_names=list("zyx"))))
        depth = chunks[0] * 2 ** (levels - 1)
        for z0 in range(0, shape[0], depth):
            z1 = min(z0 + depth, shape[0])
            image, labels = render_slab(scene, z0, z1)
            for k, (img_arr, lab_arr) in enumerate(arrays):
                if k:
                    image, labels = downsample(image, labels)
                img_arr[z0 // 2 ** k:z0 // 2 ** k + len(image)] = image
                lab_arr[z0 // 2 ** k:z0 // 2 ** k + len(labels)] = labels
        write_text_atomic(tmp / MARKER, json.dumps({"shape": shape, "seed": seed, "voxel_size": list(voxel_size),
                                                    "chunks": chunks, "levels": levels, "style": style.to_dict(),
                                                    "classes": SYNTH_CLASSES}, indent=1))
    return out
