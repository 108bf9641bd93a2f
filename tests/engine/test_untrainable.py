"""Data a network cannot learn from is refused by `train` with the fix (and `validate` warns, see
tests/data/test_validate.py): every mask pixel ignore_index (loss 0), or a single class (Dice 1.000)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from dspseg.engine.trainer import train
from dspseg.errors import DatasetError
from engine_common import make_easy_dataset, tiny_cfg


def _rewrite_masks(data: Path, value: int) -> None:
    for f in data.glob("m*.tif"):
        tifffile.imwrite(f, np.full(tifffile.imread(f).shape, value, np.uint8))


@pytest.mark.parametrize("value, says", [(255, "annotate nothing .*every mask pixel is ignore_index 255"),
                                         (1, "annotate a single class \\('rect'.*annotate at least one more class")])
def test_untrainable_data_is_refused(tmp_path: Path, value: int, says: str) -> None:
    data = make_easy_dataset(tmp_path / "d", n=(3, 1, 0))
    _rewrite_masks(data, value)
    with pytest.raises(DatasetError, match=says):
        train(data, tmp_path / "run", tiny_cfg(steps=1))
    assert not (tmp_path / "run" / "checkpoints").exists()
