"""Real microscopy: the ndev-sampledata scratch assay (OME-TIFF, CTYX: Hoechst, oblique, nuclei labels,
cytoplasm labels) → a 3-class dataset (background, cytoplasm, nucleus) via `convert labels` → a few
training steps. The package is a required test dependency ([dev] extra): missing means failure, not a skip.
The file is read with tifffile directly, without importing the package (whose import needs bioio).
"""

from __future__ import annotations

import importlib.metadata
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dspseg.data.convert import convert_dataset
from dspseg.data.io import read_image, write_image, write_mask
from dspseg.data.validate import validate_dataset
from dspseg.engine.config import resolve_config
from dspseg.engine.trainer import train

SAMPLE = "ndev_sampledata/samples/scratch-assay-labeled-10T-2Ch.tiff"
CLASSES = ["background", "cytoplasm", "nucleus"]


def sample_path() -> Path:
    try:
        dist = importlib.metadata.distribution("ndev-sampledata")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("the real-data example needs ndev-sampledata==0.0.3 (pip install -e '.[dev]')")
    path = Path(str(dist.locate_file(SAMPLE)))
    if not path.is_file():
        pytest.fail(f"ndev-sampledata is installed but {SAMPLE} is missing; reinstall ndev-sampledata==0.0.3")
    return path


def split_scratch_assay(path: Path, images: Path, labels: Path, frames: list[int]) -> None:
    """One 2-channel image (Hoechst, oblique; uint16) and one label image per time frame.

    Label image: 0 background, 1 cytoplasm (cell label > 0, outside nuclei), 2 nucleus (nuclei label > 0).
    """
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        assert series.axes == "CTYX", series.axes
        data = series.asarray()
    for t in frames:
        write_image(images / f"frame{t:02d}.tif", data[:2, t])
        mask = np.zeros(data.shape[2:], np.uint8)
        mask[data[3, t] > 0] = 1
        mask[data[2, t] > 0] = 2
        write_mask(labels / f"frame{t:02d}_labels.tif", mask)


def test_scratch_assay_to_dataset_and_training(tmp_path: Path) -> None:
    split_scratch_assay(sample_path(), tmp_path / "images", tmp_path / "labels", frames=[0, 3, 6, 9])
    result = convert_dataset("labels", tmp_path / "labels", tmp_path / "images", tmp_path / "data",
                             classes=CLASSES, group_pattern=r"^frame(\d)")
    m = result.manifest
    assert m.classes == CLASSES and len(m.images) == 4 and all(r.mask for r in m.images)
    assert [r.group for r in m.images] == ["0", "0", "0", "0"]
    report = validate_dataset(tmp_path / "data")
    assert report.ok, [str(p) for p in report.problems]
    assert all(report.summary.class_pixels[c] > 0 for c in CLASSES)
    image = read_image(tmp_path / "data" / m.images[0].file)
    assert image.shape == (2, 210, 576)  # channels first, non-square

    cfg = resolve_config(flags={"steps": 3, "width": 4, "levels": 3, "batch_size": 2, "crop_size": 64,
                                "val_every": 0, "threads": 1, "log_every": 1})
    run = train(tmp_path / "data", tmp_path / "run", cfg)
    assert run.step == 3
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    losses = [float(line.split(",")[header.index("loss")]) for line in lines[1:]]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
