"""The class probabilities of one block of a volume, section by section (the pyramid: :mod:`dspseg.data.volumes.pyramid`).

A block is a box ``[lo, hi)`` of the volume's spatial axes (stored order, e.g. ``zyx``). A *pass*
segments it along one axis: ``xy`` takes the sections along ``z``, ``xz`` along ``y``, ``yz`` along
``x`` (rows and columns of a section are the two other axes, see :class:`~dspseg.data.volumes.Volume`).
Per section, the block's window is widened by a *halo*: exactly the 2D tiles of the whole section's
tile grid (:func:`dspseg.engine.tiling.tile_starts`) that reach into the block, read and blended
(:func:`dspseg.engine.tiling.blend_windows`) as on the whole section. So every voxel of a block equals
the whole-section prediction of :func:`dspseg.engine.evaluate.predict_labels`, whatever the block
size, and memory is one block's probabilities plus one section window (block + ≤ 1 tile a side):

    along a side of length L > tile:   windows = {s in tile_starts(L) : s < hi and s + tile > lo}
    along a side of length L ≤ tile:   the whole side (padded to the tile as predict_tiled pads it)

A section no larger than the tile in both sides goes through the model whole (as ``predict_labels``
does). With several passes the probabilities are averaged: ``p = (1 / |passes|) Σ_pass p_pass``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from dspseg.engine.tiling import _pad_to, blend_windows, tile_starts

#: pass name → the axis its sections are taken along
PASS_AXIS = {"xy": "z", "xz": "y", "yz": "x"}


def block_grid(shape: Sequence[int], block: Sequence[int]) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(lo, hi)`` of every block of size ``block`` tiling ``shape`` (the last ones clipped), in C order."""
    ranges = [range(0, s, b) for s, b in zip(shape, block)]
    for lo in itertools.product(*ranges):
        yield tuple(lo), tuple(min(a + b, s) for a, b, s in zip(lo, block, shape))


def _span(length: int, tile: int, overlap: float, lo: int, hi: int) -> tuple[int, int, list[int]]:
    """``(start, stop, window starts relative to start)`` of the section's side covering ``[lo, hi)``."""
    if length <= tile:
        return 0, length, [0]
    starts = [s for s in tile_starts(length, tile, overlap) if s < hi and s + tile > lo]
    return starts[0], starts[-1] + tile, [s - starts[0] for s in starts]


class SectionPredictor:
    """Class probabilities of block windows of ``volume``'s sections with a loaded run.

    ``run`` is a :class:`~dspseg.engine.checkpoint.LoadedRun`; stored values are scaled by the one
    rule (:func:`dspseg.data.intensity.to_unit`) and the run's normalisation.
    """

    def __init__(self, volume: Any, run: Any, tile: int, overlap: float, batch_size: int):
        self.volume, self.run, self.tile, self.overlap, self.batch_size = volume, run, tile, overlap, batch_size
        self.norm = run.normalisation
        param = next(run.model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")

    def _input(self, axis: str, index: int, window: tuple[int, int, int, int]) -> torch.Tensor:
        from dspseg.data.intensity import to_unit

        stored = self.volume.section(axis, index, window=window)
        return torch.from_numpy(self.norm.apply(to_unit(stored)[None]))

    def section(self, axis: str, index: int, lo: tuple[int, int], hi: tuple[int, int]) -> torch.Tensor:
        """(C, hi[0] - lo[0], hi[1] - lo[1]) float32 probabilities of rows/cols ``[lo, hi)`` of a section."""
        rows, cols = self.volume.section_shape(axis)
        if rows <= self.tile and cols <= self.tile:
            x = self._input(axis, index, (0, 0, rows, cols))
            with torch.no_grad():
                out = self.run.model(x[None].to(self.device))
            logits = out["logits"] if isinstance(out, dict) else out
            probs = torch.softmax(logits.float(), dim=1)[0].cpu()
            return probs[:, lo[0]:hi[0], lo[1]:hi[1]]
        r0, r1, ys = _span(rows, self.tile, self.overlap, lo[0], hi[0])
        c0, c1, xs = _span(cols, self.tile, self.overlap, lo[1], hi[1])
        x = self._input(axis, index, (r0, c0, r1 - r0, c1 - c0))
        padded = _pad_to(x, max(r1 - r0, self.tile), max(c1 - c0, self.tile))
        probs = blend_windows(self.run.model, padded, [(y, w) for y in ys for w in xs], self.tile,
                              self.batch_size, self.device)
        return probs[:, lo[0] - r0:hi[0] - r0, lo[1] - c0:hi[1] - c0]

    def block(self, lo: Sequence[int], hi: Sequence[int], passes: Sequence[str]) -> torch.Tensor:
        """(C, *block shape) float32: the probabilities of block ``[lo, hi)`` averaged over ``passes``."""
        spatial = self.volume.spatial_axes
        acc: torch.Tensor | None = None
        for name in passes:
            axis = PASS_AXIS[name]
            d = spatial.index(axis)
            others = [k for k in range(3) if k != d]
            for index in range(lo[d], hi[d]):
                p = self.section(axis, index, tuple(lo[k] for k in others), tuple(hi[k] for k in others))
                if acc is None:
                    acc = torch.zeros((p.shape[0], *[b - a for a, b in zip(lo, hi)]))
                acc.select(1 + d, index - lo[d]).add_(p)
        if acc is None:  # unreachable: a block has at least one section per pass
            raise RuntimeError("SectionPredictor.block: empty block")
        return acc / len(passes)
