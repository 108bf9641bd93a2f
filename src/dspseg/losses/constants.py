"""Defaults of the losses, one home for the function, its Module twin and the method's options.

Torch-free on purpose: :mod:`dspseg.methods` reads these at import time, and the method registry must
stay instant (``dspseg train --help``). smp's ``losses/constants.py`` is the model.

    >>> DSP_DEFAULT_VARIANT in DSP_VARIANTS
    True
"""

from __future__ import annotations

#: the two forms of eq. 6–9 (:mod:`dspseg.losses.dsp`): ``paper`` on exp(s/τ), ``reference`` on the
#: softmax probabilities as the authors' released code (class-weighting bug fixed)
DSP_VARIANTS: tuple[str, ...] = ("paper", "reference")
#: ``reference`` trains better: on the synthetic ``mixed`` scenario at ACR 8 and 32 over 2 splits it
#: beat ``paper`` in all four comparisons, by 7–17 Dice points (BENCHMARKS.md)
DSP_DEFAULT_VARIANT = "reference"
#: λ of every annotation type in eq. 9 (paper: 0.1 each)
DSP_DEFAULT_LAMBDA = 0.1
#: temperature τ of eq. 3 and eq. 6–8 (paper: 0.05)
DSP_DEFAULT_TAU = 0.05
