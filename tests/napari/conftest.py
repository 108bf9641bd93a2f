"""The napari plugin's tests: a real napari viewer (napari's ``make_napari_viewer`` fixture, pytest-qt)
on a virtual X display with Mesa's software OpenGL.

pytest-xvfb starts Xvfb for the session and sets DISPLAY (``make setup`` installs Debian's xvfb and
the Qt/OpenGL libraries when run as root, ``scripts/install_display_libs.sh``). Qt's offscreen
platform is no substitute here: it gives napari's canvas no OpenGL context. Without any display the
tests skip, saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine_common import make_easy_dataset


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "xcb"  # napari's canvas needs GLX (offscreen has no OpenGL)
        return
    skip = pytest.mark.skip(reason="no X display for napari's OpenGL canvas: Xvfb is not installed (make setup "
                            "installs it as root; else apt-get install xvfb)")
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def easy_data(tmp_path_factory) -> Path:
    """A tiny dataset (3 train, 1 val image of 32 x 48, classes bg, rect, disc) with masks."""
    return make_easy_dataset(tmp_path_factory.mktemp("easy"), n=(3, 1, 0))


@pytest.fixture(scope="session")
def tiny_run(easy_data: Path, tmp_path_factory) -> Path:
    """A 3-step run of width 4 on ``easy_data`` (trained by the engine, not the widget)."""
    from dspseg.engine.trainer import train
    from engine_common import tiny_cfg

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(easy_data, out, tiny_cfg(steps=3, val_every=0, levels=2))
    return out
