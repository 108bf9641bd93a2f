"""Tiles shared by neighbouring blocks of a volume prediction, run through the model once.

A section's tile grid (:func:`dspseg.engine.tiling.tile_starts`) does not follow the block grid, so
with the default block (16, 256, 256) and 256² tiles most tiles reach into two blocks along each
side: predicting every block on its own ran each tile 2-4 times (2.56 × the section-by-section
tiles on 1024² sections; ``benchmarks/volumes_predict.py``). :class:`TileStore` keeps the weighted
class probabilities of a tile (``softmax(logits) · gaussian window``, what the blend adds) from the
block that computed it until the last block that needs it:

* a tile of the section at ``index`` along pass axis ``d`` with top-left ``(y, x)`` (rows along
  stored axis ``r``, columns along ``c``) is needed by every block whose ranges meet ``index``,
  ``[y, y + tile)`` and ``[x, x + tile)``; the *last* of them in the C order of the block grid
  (the order :func:`dspseg.engine.volume_blocks.block_grid` yields and predict writes) has grid
  coordinates ``index // B_d``, ``(min(y + tile, L_r) - 1) // B_r``, ``(min(x + tile, L_c) - 1) // B_c``
  (``B`` the block size, ``L`` the section's sides);
* after each block, :meth:`TileStore.release` drops every tile whose last block is not after it,
  so in C order what is held is the frontier: the tiles reaching into the next block column and
  the next block row of the sections of the current slab (about ``B_z · L_c / stride`` tiles);
* a tile is kept only while the store holds at most ``max_bytes`` (nothing is evicted to make room:
  in a row-by-row sweep the tiles kept first are the ones needed first). Blocks taken in another
  order (Ray tasks spread over workers) only recompute more tiles; values never depend on the store.

A tile's probabilities come from the same model on the same input in the same fixed batch whichever
block computes it (:meth:`dspseg.engine.volume_blocks.SectionPredictor._batch`), and each voxel sums
the same tiles in the same order, so the blended voxels are those of predicting each block alone,
bit for bit, in any block order and with any budget (``tests/engine/test_tile_reuse.py``).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch

DEFAULT_BYTES = 512 << 20
"""Default budget of a prediction's tile store (512 MiB: the frontier of 16 sections 2048 wide at 9 classes)."""


@dataclass
class _Kept:
    probs: torch.Tensor
    last: tuple[int, ...]  # grid coordinates of the last block (C order) that needs the tile


class TileStore:
    """Weighted tile probabilities keyed by ``(axis, index, y, x)``, bounded by ``max_bytes`` (module docstring).

    ``hits`` counts tiles taken from the store, ``misses`` tiles the caller had to compute,
    ``bytes``/``peak_bytes`` the probabilities held now / at most.
    """

    def __init__(self, max_bytes: int = DEFAULT_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._tiles: dict[Hashable, _Kept] = {}
        self.bytes = self.peak_bytes = self.hits = self.misses = 0

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The kept probabilities of ``key`` (a hit), or None (a miss: the caller computes them)."""
        kept = self._tiles.get(key)
        if kept is None:
            self.misses += 1
            return None
        self.hits += 1
        return kept.probs

    def put(self, key: Hashable, probs: torch.Tensor, last: tuple[int, ...], current: tuple[int, ...]) -> None:
        """Keep ``probs`` while a block after ``current`` (C order) needs it (``last`` > ``current``) and it fits."""
        size = probs.element_size() * probs.nelement()
        if last <= current or key in self._tiles or self.bytes + size > self.max_bytes:
            return
        self._tiles[key] = _Kept(probs, last)
        self.bytes += size
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def release(self, current: tuple[int, ...]) -> None:
        """Drop every tile whose last block is not after ``current`` (the block just predicted)."""
        for key in [k for k, kept in self._tiles.items() if kept.last <= current]:
            kept = self._tiles.pop(key)
            self.bytes -= kept.probs.element_size() * kept.probs.nelement()

    def __len__(self) -> int:
        return len(self._tiles)
