"""Fixtures of the study tests (tests/study/ mirrors dspseg.study); helpers live in study_common.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def hand(tmp_path_factory) -> Path:
    """A sweep folder holding only the hand-made results.csv of tests/study/study_common.py."""
    from study_common import hand_rows, write_results

    root = tmp_path_factory.mktemp("hand")
    write_results(root, hand_rows())
    return root
