"""Fixtures shared by the whole suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # test helper modules (methods_common) import by name

from methods_common import mixed_dataset  # noqa: E402


@pytest.fixture(scope="session")
def mixed(tmp_path_factory):
    """A tiny mixed-annotation training set (30 synthetic 48² images at ACR 2: masks, boxes,
    points, image labels, unlabeled), built once for every method test."""
    return mixed_dataset(tmp_path_factory.mktemp("mixed"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny CPU tests run fastest on one thread (and do not fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
