"""Volume prediction runs each tile of a section's grid through the model once (engine/tile_reuse.py):
neighbouring blocks share the tiles that reach into both, the probabilities are those of predicting
each block alone bit for bit, the store stays within its budget and is empty after the sweep."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dspseg.data.dataset import Normalisation
from dspseg.data.volumes import ChunkCache, open_volume
from dspseg.engine.tile_reuse import TileStore
from dspseg.engine.tiling import tile_starts
from dspseg.engine.volume_blocks import SectionPredictor, block_grid
from dspseg.models import build_model
from volume_files import SHAPE, volume_data, write_ngff

TILE, OVERLAP, BLOCK = 16, 0.25, (4, 16, 16)  # sections 48 x 40: 4 x 4 tiles, 3 x 3 blocks each


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    return write_ngff(tmp_path_factory.mktemp("tiles") / "cell.ome.zarr", volume_data("uint16"))


@pytest.fixture(scope="module")
def run() -> SimpleNamespace:
    torch.manual_seed(0)
    model = build_model(1, 3, width=2, levels=2).eval()
    return SimpleNamespace(model=model, normalisation=Normalisation((0.5,), (0.3,)))


def _sweep(volume: Path, run: SimpleNamespace, tile_bytes: int, passes: list[str], order=lambda b: b):
    """(probabilities of the whole volume, tiles the model ran, the predictor) over every block."""
    predictor = SectionPredictor(open_volume({"url": str(volume)}, cache=ChunkCache()), run, TILE, OVERLAP, 2,
                                 tile_bytes=tile_bytes)
    ran = []
    hook = run.model.register_forward_hook(lambda m, inp, out: ran.append(len(inp[0])))
    out = torch.full((3, *SHAPE), float("nan"))
    try:
        for lo, hi in order(list(block_grid(SHAPE, BLOCK))):
            out[(slice(None), *(slice(a, b) for a, b in zip(lo, hi)))] = predictor.block(lo, hi, passes)
            assert predictor.tiles.bytes <= predictor.tiles.max_bytes
    finally:
        hook.remove()
    return out, sum(ran), predictor


def test_each_tile_runs_once_and_the_voxels_are_those_of_each_block_alone(volume: Path, run: SimpleNamespace) -> None:
    alone, ran_alone, _ = _sweep(volume, run, tile_bytes=0, passes=["xy"])
    shared, ran_shared, predictor = _sweep(volume, run, tile_bytes=64 << 20, passes=["xy"])
    section_tiles = SHAPE[0] * len(tile_starts(SHAPE[1], TILE, OVERLAP)) * len(tile_starts(SHAPE[2], TILE, OVERLAP))
    assert ran_shared == section_tiles == predictor.tiles.misses  # every tile of every section once
    assert ran_alone > 2 * section_tiles  # alone, the tiles straddling a block edge ran again for each block
    assert not torch.isnan(shared).any()
    assert torch.equal(shared, alone)  # each tile runs in its fixed batch, each voxel sums them in one order
    assert len(predictor.tiles) == 0 and predictor.tiles.bytes == 0  # the last block released every tile
    assert 0 < predictor.tiles.peak_bytes <= 64 << 20


def test_a_small_budget_or_another_block_order_only_recomputes(volume: Path, run: SimpleNamespace) -> None:
    full, ran_full, _ = _sweep(volume, run, tile_bytes=64 << 20, passes=["xy"])
    one_tile = 3 * TILE * TILE * 4  # float32 probabilities of 3 classes
    small, ran_small, p_small = _sweep(volume, run, tile_bytes=3 * one_tile, passes=["xy"])
    backwards, ran_back, _ = _sweep(volume, run, tile_bytes=64 << 20, passes=["xy"], order=lambda b: b[::-1])
    assert p_small.tiles.peak_bytes <= 3 * one_tile and ran_full < ran_small and ran_full < ran_back
    for other in (small, backwards):
        assert torch.equal(other, full)


def test_three_passes_share_their_tiles_too(volume: Path, run: SimpleNamespace) -> None:
    passes = ["xy", "xz", "yz"]
    alone, ran_alone, _ = _sweep(volume, run, tile_bytes=0, passes=passes)
    shared, ran_shared, predictor = _sweep(volume, run, tile_bytes=256 << 20, passes=passes)
    assert ran_shared < ran_alone and torch.equal(shared, alone)
    assert len(predictor.tiles) == 0


def test_the_store_keeps_a_tile_until_its_last_block() -> None:
    store = TileStore(max_bytes=2 * 4 * 4)  # room for two tiles of 4 float32
    t = torch.zeros(4)
    store.put("a", t, last=(0, 1, 0), current=(0, 0, 0))
    store.put("b", t, last=(0, 0, 1), current=(0, 0, 0))
    store.put("c", t, last=(1, 0, 0), current=(0, 0, 0))  # over the budget: not kept
    store.put("d", t, last=(0, 0, 0), current=(0, 0, 0))  # no later block needs it: not kept
    assert len(store) == 2 and store.get("c") is None and store.get("a") is t and (store.hits, store.misses) == (1, 1)
    store.release((0, 0, 1))  # b's last block is done
    assert store.get("b") is None and store.get("a") is t and store.bytes == 16
    store.release((0, 1, 0))
    assert len(store) == 0 and store.bytes == 0 and store.peak_bytes == 32
    with pytest.raises(ValueError, match="max_bytes"):
        TileStore(-1)
