"""The class probabilities of one block of a volume, section by section (the pyramid: :mod:`dspseg.data.volumes.pyramid`).

A block is a box ``[lo, hi)`` of the volume's spatial axes (stored order, e.g. ``zyx``). A *pass*
segments it along one axis: ``xy`` takes the sections along ``z``, ``xz`` along ``y``, ``yz`` along
``x`` (rows and columns of a section are the two other axes, see :class:`~dspseg.data.volumes.Volume`).
Per section, the block's window is widened by a *halo*: exactly the 2D tiles of the whole section's
tile grid (:func:`dspseg.engine.tiling.tile_starts`) that reach into the block, read and blended
(:func:`dspseg.engine.tiling.blend_windows`) as on the whole section. So every voxel of a block equals
the whole-section prediction of :func:`dspseg.engine.evaluate.predict_labels`, whatever the block
size, and memory is one block's probabilities plus one section window (block + ≤ 1 tile a side),
plus the tiles a later block shares (:mod:`dspseg.engine.tile_reuse`: each tile runs through the
model once, at most ``tile_bytes`` kept). A tile always runs in the same batch (its tile row's tiles
in runs of ``batch_size``, :meth:`SectionPredictor._batch`), so the voxels are bitwise the same
whatever order the blocks are taken in — Ray workers (:mod:`dspseg.engine.predict_volume_ray`) included:

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

from dspseg.engine.tile_reuse import DEFAULT_BYTES as TILE_BYTES
from dspseg.engine.tile_reuse import TileStore
from dspseg.engine.tiling import _pad_to, gaussian_window, tile_starts, window_probs

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
    rule (:func:`dspseg.data.intensity.to_unit`) and the run's normalisation. Tiles that a later
    block also needs are kept in ``tiles`` (:class:`~dspseg.engine.tile_reuse.TileStore`, at most
    ``tile_bytes``) and run through the model once; the block size is the largest block seen.
    """

    def __init__(self, volume: Any, run: Any, tile: int, overlap: float, batch_size: int,
                 tile_bytes: int = TILE_BYTES):
        self.volume, self.run, self.tile, self.overlap, self.batch_size = volume, run, tile, overlap, batch_size
        self.norm = run.normalisation
        param = next(run.model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")
        self.tiles = TileStore(tile_bytes)
        self._weight = gaussian_window(tile)
        self._block: tuple[int, ...] = (1, 1, 1)
        self._current: tuple[int, ...] = (0, 0, 0)

    def _input(self, axis: str, index: int, window: tuple[int, int, int, int]) -> torch.Tensor:
        from dspseg.data.intensity import to_unit

        stored = self.volume.section(axis, index, window=window)
        return torch.from_numpy(self.norm.apply(to_unit(stored)[None]))

    def _last(self, axis: str, index: int, y: int, x: int, extent: tuple[int, int]) -> tuple[int, ...]:
        """Grid coordinates of the last block (C order) that needs the section window at ``(y, x)``
        of ``extent`` rows × columns (:mod:`dspseg.engine.tile_reuse`)."""
        d = self.volume.spatial_axes.index(axis)
        r, c = (k for k in range(3) if k != d)
        rows, cols = self.volume.section_shape(axis)
        last = [0, 0, 0]
        last[d] = index // self._block[d]
        last[r] = (min(y + extent[0], rows) - 1) // self._block[r]
        last[c] = (min(x + extent[1], cols) - 1) // self._block[c]
        return tuple(last)

    def section(self, axis: str, index: int, lo: tuple[int, int], hi: tuple[int, int]) -> torch.Tensor:
        """(C, hi[0] - lo[0], hi[1] - lo[1]) float32 probabilities of rows/cols ``[lo, hi)`` of a section."""
        rows, cols = self.volume.section_shape(axis)
        if rows <= self.tile and cols <= self.tile:
            key = (axis, index, "whole")
            probs = self.tiles.get(key)
            if probs is None:
                x = self._input(axis, index, (0, 0, rows, cols))
                with torch.no_grad():
                    out = self.run.model(x[None].to(self.device))
                logits = out["logits"] if isinstance(out, dict) else out
                probs = torch.softmax(logits.float(), dim=1)[0].cpu()
                self.tiles.put(key, probs, self._last(axis, index, 0, 0, (rows, cols)), self._current)
            return probs[:, lo[0]:hi[0], lo[1]:hi[1]]
        r0, c0, windows = self._windows(rows, cols, lo, hi)
        keys = [(axis, index, r0 + y, c0 + x) for y, x in windows]
        probs = [self.tiles.get(k) for k in keys]
        for i, key in enumerate(keys):
            if probs[i] is None:
                batch = self._batch(axis, index, rows, cols, key[2], key[3])
                probs = [p if p is not None else batch.get(k) for k, p in zip(keys, probs)]
        # blend inside the block only: each voxel sums the same tiles in the same order as the whole window would
        a0, a1, b0, b1 = lo[0] - r0, hi[0] - r0, lo[1] - c0, hi[1] - c0
        acc = torch.zeros(probs[0].shape[0], a1 - a0, b1 - b0)
        wsum = torch.zeros(acc.shape[1:])
        for (y, x), p in zip(windows, probs):
            ys, ye, xs, xe = max(y, a0), min(y + self.tile, a1), max(x, b0), min(x + self.tile, b1)
            if ys < ye and xs < xe:
                acc[:, ys - a0:ye - a0, xs - b0:xe - b0] += p[:, ys - y:ye - y, xs - x:xe - x]
                wsum[ys - a0:ye - a0, xs - b0:xe - b0] += self._weight[ys - y:ye - y, xs - x:xe - x]
        return acc / wsum

    def _batch(self, axis: str, index: int, rows: int, cols: int, y: int, x: int) -> dict[tuple, torch.Tensor]:
        """Weighted probabilities of the *fixed batch* holding the section's tile at ``(y, x)``: the tiles of
        its tile row cut into runs of ``batch_size`` from the row's start, whichever block asks first.

        A CPU model's float sums depend on the batch a tile runs in (batch 1 against 4: about 4e-7 in
        the logits), so a tile run with whatever its first block was missing would change with the
        order of the blocks (Ray workers take them in any order). A fixed batch makes every tile, and so
        every voxel, the same bit for bit in any order; the tiles are kept for the blocks after."""
        xs_all = [0] if cols <= self.tile else tile_starts(cols, self.tile, self.overlap)
        k = xs_all.index(x) // self.batch_size * self.batch_size
        xs = xs_all[k:k + self.batch_size]
        h, w = self.tile, xs[-1] - xs[0] + self.tile  # a side shorter than the tile is padded
        image = _pad_to(self._input(axis, index, (y, xs[0], min(h, rows - y), min(w, cols - xs[0]))), h, w)
        out: dict[tuple, torch.Tensor] = {}
        for chunk, probs in window_probs(self.run.model, image, [(0, s - xs[0]) for s in xs], self.tile,
                                         self.batch_size, self.device):
            for (_, s), p in zip(chunk, probs):
                key = (axis, index, y, xs[0] + s)
                out[key] = p
                self.tiles.put(key, p.clone(), self._last(axis, index, y, xs[0] + s, (self.tile, self.tile)),
                               self._current)
        return out

    def _windows(self, rows: int, cols: int, lo: tuple[int, int], hi: tuple[int, int]) -> tuple[int, int, list[tuple[int, int]]]:
        """``(r0, c0, windows)``: the section's tiles reaching into rows/cols ``[lo, hi)``, top-left
        relative to ``(r0, c0)`` (module docstring)."""
        r0, _, ys = _span(rows, self.tile, self.overlap, lo[0], hi[0])
        c0, _, xs = _span(cols, self.tile, self.overlap, lo[1], hi[1])
        return r0, c0, [(y, x) for y in ys for x in xs]

    def block(self, lo: Sequence[int], hi: Sequence[int], passes: Sequence[str]) -> torch.Tensor:
        """(C, *block shape) float32: the probabilities of block ``[lo, hi)`` averaged over ``passes``."""
        spatial = self.volume.spatial_axes
        self._block = tuple(max(b, h - l) for b, l, h in zip(self._block, lo, hi))
        self._current = tuple(l // b for l, b in zip(lo, self._block))
        acc: torch.Tensor | None = None
        for n, name in enumerate(passes):
            axis = PASS_AXIS[name]
            d = spatial.index(axis)
            others = [k for k in range(3) if k != d]
            for index in range(lo[d], hi[d]):
                p = self.section(axis, index, tuple(lo[k] for k in others), tuple(hi[k] for k in others))
                if acc is None:
                    acc = torch.empty((p.shape[0], *[b - a for a, b in zip(lo, hi)]))
                out = acc.select(1 + d, index - lo[d])
                out.copy_(p) if n == 0 else out.add_(p)  # the first pass fills every voxel
        self.tiles.release(self._current)
        if acc is None:  # unreachable: a block has at least one section per pass
            raise RuntimeError("SectionPredictor.block: empty block")
        return acc / len(passes) if len(passes) > 1 else acc
