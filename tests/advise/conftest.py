"""Fixtures of the advisor tests (tests/advise/ mirrors dspseg.advise): a tiny trained run on mixed data."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, dataset folder): 30 synthetic 48² images, split 0 of 3 at ACR 2 mixed (masks,
    boxes, points, image labels and unlabeled training images), dsp trained for 6 steps at width 4."""
    from dspseg.data.acr import simulate_dataset
    from dspseg.data.synthetic import write_synthetic_dataset
    from dspseg.engine.config import resolve_config
    from dspseg.engine.trainer import train

    root = tmp_path_factory.mktemp("advise")
    write_synthetic_dataset(root / "syn", n_images=30, size=48, seed=1, groups=6)
    simulate_dataset(root / "syn", root / "data", acr=2, scenario="mixed", split=0)
    cfg = resolve_config(flags={"method": "dsp", "steps": 6, "width": 4, "levels": 2, "batch_size": 4,
                                "crop_size": 48, "val_every": 0, "log_every": 3, "threads": 1}, sets=["lr=0.01"])
    train(root / "data", root / "run", cfg)
    return root / "run", root / "data"
