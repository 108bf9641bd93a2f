"""Classes, grey levels and the per-group "sub-volume" style of the synthetic FIB-SEM data.

Every image of one group shares a :class:`GroupStyle`: cell size and packing, organelle densities,
staining (grey levels), and the imaging parameters (contrast, dose, noise, blur, drift, curtaining).
Groups differ in all of them, which is the domain shift between crops of a real FIB-SEM volume.

Grey levels are brightness in ``[0, 1]`` before imaging: membranes are dark (~0.25), cytosol is
mid-grey (~0.55), nucleoplasm is lighter (~0.64), extracellular space is light and smooth (~0.78).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

SYNTH_CLASSES: list[str] = [
    "extracellular",    # 0  outside every cell: light, smooth
    "cytosol",          # 1  mid-grey granular background inside cells
    "plasma_membrane",  # 2  dark line bounding each cell
    "nucleus",          # 3  light nucleoplasm, heterochromatin, nucleolus and the double envelope
    "mitochondrion",    # 4  dark-rimmed oval with dark cristae
    "er",               # 5  thin dark tubules and paired sheets (membranes + lumen)
    "golgi",            # 6  stack of curved cisternae and the vesicles budding at their ends
    "vesicle",          # 7  small round membrane-bounded bodies
    "lipid_droplet",    # 8  dark homogeneous disc with a sharp edge
]

EXTRACELLULAR, CYTOSOL, PLASMA_MEMBRANE, NUCLEUS, MITO, ER, GOLGI, VESICLE, LIPID = range(9)

REFERENCE_AREA = 128 * 128
"""Organelle rates in :class:`GroupStyle` are expected counts per image of this many pixels."""


@dataclass(frozen=True)
class GroupStyle:
    """Appearance shared by the images of one group (sub-volume). Lengths are in pixels.

    Layout: ``cell_radius`` (typical cell radius), ``cell_spacing`` (centre spacing / 2 radius),
    ``ecs_pocket`` (largest radius of the extracellular pockets where three cells meet; between two
    cells there is only a thin cleft), ``pm_width`` (plasma-membrane band).
    Content: ``nucleus_prob`` (chance a cell has a nucleus), ``*_presence`` (chance that an image
    contains Golgi / mitochondria / ER / vesicles / lipid droplets at all - this is what makes
    image-level labels informative), ``mito_rate``/``er_rate``/``vesicle_rate``/``lipid_rate``
    (mean counts per 128 x 128 image where present, scaled per image by a Gamma(2)/2 factor),
    ``organelle_scale`` (size factor of mitochondria, droplets and Golgi).
    Staining: ``cytosol_level``, ``extracellular_level``, ``membrane_level`` (grey levels in [0, 1]),
    ``nucleus_level`` (how much lighter nucleoplasm is than cytosol) and ``grain`` (amplitude of
    the granular cytosol texture).
    Imaging: ``blur`` (Gaussian sigma, px), ``photons`` (mean electrons per unit brightness, the
    Poisson dose), ``read_noise`` (Gaussian sigma), ``contrast`` and ``brightness`` (affine grey map),
    ``drift`` (relative amplitude of the slow intensity drift) and ``curtaining`` (amplitude of the
    vertical stripes that FIB milling leaves).
    """

    cell_radius: float = 90.0
    cell_spacing: float = 0.95
    ecs_pocket: float = 12.0
    pm_width: float = 2.5
    nucleus_prob: float = 0.8
    golgi_presence: float = 0.45
    mito_presence: float = 0.85
    er_presence: float = 0.85
    vesicle_presence: float = 0.75
    lipid_presence: float = 0.5
    mito_rate: float = 3.0
    er_rate: float = 3.0
    vesicle_rate: float = 10.0
    lipid_rate: float = 1.2
    organelle_scale: float = 1.0
    cytosol_level: float = 0.56
    nucleus_level: float = 0.09
    extracellular_level: float = 0.8
    membrane_level: float = 0.17
    grain: float = 0.05
    blur: float = 0.7
    photons: float = 40.0
    read_noise: float = 0.02
    contrast: float = 1.0
    brightness: float = 0.0
    drift: float = 0.08
    curtaining: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not np.isfinite(value) or (value < 0 and f.name != "brightness"):
                raise ValueError(f"GroupStyle.{f.name} must be a finite number >= 0, got {value!r}")
        for name in ("cell_radius", "cell_spacing", "pm_width", "organelle_scale", "photons", "contrast"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GroupStyle.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("nucleus_prob", "golgi_presence", "mito_presence", "er_presence",
                     "vesicle_presence", "lipid_presence"):
            if getattr(self, name) > 1:
                raise ValueError(f"GroupStyle.{name} is a probability in [0, 1], got {getattr(self, name)!r}")

    @classmethod
    def sample(cls, rng: np.random.Generator) -> GroupStyle:
        """Draw the style of one group; ranges are wide enough for a visible domain shift."""
        u = rng.uniform
        return cls(
            cell_radius=float(np.exp(u(np.log(110.0), np.log(380.0)))),
            cell_spacing=float(u(0.85, 1.0)),
            ecs_pocket=float(u(0.0, 30.0)),
            pm_width=float(u(2.2, 3.0)),
            nucleus_prob=float(u(0.6, 0.95)),
            golgi_presence=float(u(0.3, 0.6)),
            mito_presence=float(u(0.7, 0.95)),
            er_presence=float(u(0.75, 0.95)),
            vesicle_presence=float(u(0.6, 0.9)),
            lipid_presence=float(u(0.4, 0.7)),
            mito_rate=float(u(2.0, 4.5)),
            er_rate=float(u(2.0, 4.5)),
            vesicle_rate=float(u(6.0, 16.0)),
            lipid_rate=float(u(1.0, 2.5)),
            organelle_scale=float(u(0.85, 1.2)),
            cytosol_level=float(u(0.5, 0.6)),
            nucleus_level=float(u(0.05, 0.13)),
            extracellular_level=float(u(0.72, 0.86)),
            membrane_level=float(u(0.12, 0.22)),
            grain=float(u(0.03, 0.07)),
            blur=float(u(0.4, 0.8)),
            photons=float(np.exp(u(np.log(30.0), np.log(150.0)))),
            read_noise=float(u(0.005, 0.03)),
            contrast=float(u(0.85, 1.25)),
            brightness=float(u(-0.08, 0.08)),
            drift=float(u(0.0, 0.15)),
            curtaining=float(u(0.0, 0.035)) if rng.random() < 0.5 else 0.0,
        )

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}
