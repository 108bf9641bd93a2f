"""COSEM / CellMap label ids and how dspseg merges them into 17 organelle classes (and the OpenOrganelle
datasets of the paper, with their default source).

OpenOrganelle ground-truth crops store *atomic* label ids in their ``all`` array (one id per voxel,
e.g. 3 = mitochondrial membrane, 4 = mitochondrial lumen). Many atomic classes are too rare or too
specialised to learn per sub-volume, so — as in the DSP paper (§5, "we merge classes into 17 classes
following a biologically consistent class-hierarchy") — every atomic id is mapped to the organelle it
belongs to::

    merged_class(voxel) = MERGE[all_id(voxel)]      (None → ignore index: not annotated / not used)

The ids and names follow the public CellMap class table (field name, id, long name); group ids
(37 = nucleus, 50 = mitochondria, ...) are mapped too, in case a crop stores them. Id 0 is
"not annotated". Ids without an unambiguous organelle in the hierarchy (``cell``, ``er_mem_all``,
which mixes ER and nuclear envelope) and organelles foreign to the four cell lines of the paper
(chloroplast, vacuole, yolk, insulin granule, red blood cell, t-bar, ...) map to ``None``.

This module imports numpy only inside :func:`merge_lut` / :func:`apply_lut`, so command-line help can
render the table instantly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: where OpenOrganelle's datasets are read from by default (anonymous S3)
DEFAULT_SOURCE = "s3://janelia-cosem-datasets"
#: the four datasets of the DSP paper (CVPR 2023, §5)
DATASETS: dict[str, str] = {
    "jrc_hela-2": "HeLa cell (human cervical cancer line), FIB-SEM",
    "jrc_hela-3": "HeLa cell (human cervical cancer line), FIB-SEM",
    "jrc_jurkat-1": "Jurkat cell (human T-lymphocyte line), FIB-SEM",
    "jrc_macrophage-2": "macrophage (mouse), FIB-SEM",
}

# The 17 merged classes, in class-id order of a full import (rare ones are dropped afterwards).
CLASSES: tuple[str, ...] = (
    "ecs", "pm", "cytosol", "mito", "golgi", "er", "nucleus", "vesicle", "endosome", "lysosome",
    "lipid_droplet", "peroxisome", "microtubule", "centrosome", "ribosome", "vimentin", "glycogen",
)

CLASS_DESCRIPTIONS: dict[str, str] = {
    "ecs": "extracellular space",
    "pm": "plasma membrane",
    "cytosol": "cytosol",
    "mito": "mitochondria (membrane, lumen, mitochondrial ribosomes / DNA)",
    "golgi": "Golgi apparatus (membrane, lumen)",
    "er": "endoplasmic reticulum (membrane, lumen, ER exit sites)",
    "nucleus": "nucleus (envelope, pores, chromatin, nucleoplasm, nucleolus)",
    "vesicle": "vesicles (membrane, lumen)",
    "endosome": "endosomes / multivesicular bodies (membrane, lumen)",
    "lysosome": "lysosomes (membrane, lumen)",
    "lipid_droplet": "lipid droplets (membrane, lumen)",
    "peroxisome": "peroxisomes (membrane, lumen)",
    "microtubule": "microtubules (outer and inner part)",
    "centrosome": "centrosome (with distal and subdistal appendages)",
    "ribosome": "cytosolic ribosomes",
    "vimentin": "vimentin filaments",
    "glycogen": "glycogen",
}

# (id, CellMap field name, description, merged dspseg class or None = ignore)
COSEM_LABELS: tuple[tuple[int, str, str, str | None], ...] = (
    (1, "ecs", "extracellular space", "ecs"),
    (2, "pm", "plasma membrane", "pm"),
    (3, "mito_mem", "mitochondrial membrane", "mito"),
    (4, "mito_lum", "mitochondrial lumen", "mito"),
    (5, "mito_ribo", "mitochondrial ribosome (mitochondrial DNA in early COSEM releases)", "mito"),
    (6, "golgi_mem", "Golgi membrane", "golgi"),
    (7, "golgi_lum", "Golgi lumen", "golgi"),
    (8, "ves_mem", "vesicle membrane", "vesicle"),
    (9, "ves_lum", "vesicle lumen", "vesicle"),
    (10, "endo_mem", "endosome membrane", "endosome"),
    (11, "endo_lum", "endosome lumen", "endosome"),
    (12, "lyso_mem", "lysosome membrane", "lysosome"),
    (13, "lyso_lum", "lysosome lumen", "lysosome"),
    (14, "ld_mem", "lipid droplet membrane", "lipid_droplet"),
    (15, "ld_lum", "lipid droplet lumen", "lipid_droplet"),
    (16, "er_mem", "ER membrane", "er"),
    (17, "er_lum", "ER lumen", "er"),
    (18, "eres_mem", "ER exit site membrane", "er"),
    (19, "eres_lum", "ER exit site lumen", "er"),
    (20, "ne_mem", "nuclear envelope membrane", "nucleus"),
    (21, "ne_lum", "nuclear envelope lumen", "nucleus"),
    (22, "np_out", "nuclear pore, outer part", "nucleus"),
    (23, "np_in", "nuclear pore, inner part", "nucleus"),
    (24, "hchrom", "heterochromatin", "nucleus"),
    (25, "nhchrom", "nucleolus-associated heterochromatin", "nucleus"),
    (26, "echrom", "euchromatin", "nucleus"),
    (27, "nechrom", "nucleolus-associated euchromatin", "nucleus"),
    (28, "nucpl", "nucleoplasm", "nucleus"),
    (29, "nucleo", "nucleolus", "nucleus"),
    (30, "mt_out", "microtubule, outer part", "microtubule"),
    (31, "cent", "centrosome", "centrosome"),
    (32, "cent_dapp", "centrosome distal appendage", "centrosome"),
    (33, "cent_sdapp", "centrosome subdistal appendage", "centrosome"),
    (34, "ribo", "ribosomes", "ribosome"),
    (35, "cyto", "cytosol", "cytosol"),
    (36, "mt_in", "microtubule, inner part", "microtubule"),
    (37, "nuc", "nucleus (group of 20-29)", "nucleus"),
    (38, "vim", "vimentin", "vimentin"),
    (39, "glyco", "glycogen", "glycogen"),
    (40, "golgi", "Golgi (group of 6-7)", "golgi"),
    (41, "ves", "vesicle (group of 8-9)", "vesicle"),
    (42, "endo", "endosome (group of 10-11)", "endosome"),
    (43, "lyso", "lysosome (group of 12-13)", "lysosome"),
    (44, "ld", "lipid droplet (group of 14-15)", "lipid_droplet"),
    (45, "rbc", "red blood cell", None),
    (46, "eres", "ER exit site (group of 18-19)", "er"),
    (47, "perox_mem", "peroxisome membrane", "peroxisome"),
    (48, "perox_lum", "peroxisome lumen", "peroxisome"),
    (49, "perox", "peroxisome (group of 47-48)", "peroxisome"),
    (50, "mito", "mitochondria (group of 3-5)", "mito"),
    (51, "er", "ER (group of 16-23)", "er"),
    (52, "ne", "nuclear envelope (group of 20-23)", "nucleus"),
    (53, "np", "nuclear pore (group of 22-23)", "nucleus"),
    (54, "chrom", "chromatin (group of 24-27)", "nucleus"),
    (55, "mt", "microtubule (group of 30, 36)", "microtubule"),
    (56, "isg_mem", "insulin secretory granule membrane", None),
    (57, "isg_lum", "insulin secretory granule lumen", None),
    (58, "isg_ins", "insulin secretory granule insulin", None),
    (59, "isg", "insulin secretory granule (group of 56-58)", None),
    (60, "cell", "whole cell (group of most ids)", None),
    (61, "actin", "actin", None),
    (62, "tbar", "t-bar (synapse)", None),
    (63, "bm", "basement membrane", None),
    (64, "er_mem_all", "ER and nuclear envelope membranes (group of 16, 18, 20)", None),
    (65, "ne_mem_all", "nuclear envelope membranes (group of 20, 22, 23)", "nucleus"),
    (66, "cent_all", "centrosome (group of 31-33)", "centrosome"),
    (67, "chlor_mem", "chloroplast membrane", None),
    (68, "chlor_lum", "chloroplast lumen", None),
    (69, "chlor_sg", "chloroplast starch granule", None),
    (70, "chlor", "chloroplast (group of 67-69)", None),
    (71, "vac_mem", "vacuole membrane", None),
    (72, "vac_lum", "vacuole lumen", None),
    (73, "vac", "vacuole (group of 71-72)", None),
    (74, "pd", "plasmodesmata", None),
    (75, "yolk_mem", "yolk organelle membrane", None),
    (76, "yolk_lum", "yolk organelle lumen", None),
    (77, "yolk", "yolk organelle (group of 75-76)", None),
)

MERGE: dict[int, str | None] = {i: target for i, _, _, target in COSEM_LABELS}
COSEM_NAMES: dict[int, str] = {i: name for i, name, _, _ in COSEM_LABELS}
MAX_ID = max(MERGE)
IGNORE = 255  # mask value of unmapped ids and of rare classes


def merge_lut() -> np.ndarray:
    """(MAX_ID + 1,) uint8: atomic COSEM id → index into :data:`CLASSES`, IGNORE for unmapped ids."""
    import numpy as np

    lut = np.full(MAX_ID + 1, IGNORE, np.uint8)
    for i, target in MERGE.items():
        if target is not None:
            lut[i] = CLASSES.index(target)
    return lut


def apply_lut(ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map integer ``ids`` (any shape) through ``lut``; ids outside the table (or negative) → IGNORE."""
    import numpy as np

    ids = np.asarray(ids)
    out = np.full(ids.shape, IGNORE, np.uint8)
    ok = (ids >= 0) & (ids < lut.size)
    out[ok] = lut[ids[ok].astype(np.int64)]
    return out


def sources_of(merged: str) -> list[tuple[int, str]]:
    """The (id, field name) pairs merged into ``merged``, in id order."""
    if merged not in CLASSES:
        raise ValueError(f"sources_of: unknown merged class {merged!r}; choose one of {', '.join(CLASSES)}")
    return [(i, name) for i, name, _, target in COSEM_LABELS if target == merged]


def class_map_lines(width: int = 14) -> list[str]:
    """One line per merged class: ``name  <- field(id), field(id), ...`` (for --help and docs)."""
    lines = []
    for c in CLASSES:
        src = ", ".join(f"{name}({i})" for i, name in sources_of(c))
        lines.append(f"{c:<{width}}<- {src}")
    ignored = ", ".join(f"{name}({i})" for i, name, _, t in COSEM_LABELS if t is None)
    lines.append(f"{'(ignored)':<{width}}<- 0 (not annotated), {ignored}, any other id")
    return lines
