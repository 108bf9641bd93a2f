"""Parametrise the shared method tests from their class (tests/methods_common.py: MethodTester)."""

from __future__ import annotations


def pytest_generate_tests(metafunc):
    """``kinds`` from the class's ``kinds_cases``, ``opts`` from its ``opts_cases``."""
    cls = metafunc.cls
    for arg in ("kinds", "opts"):
        if cls is not None and arg in metafunc.fixturenames and hasattr(cls, f"{arg}_cases"):
            metafunc.parametrize(arg, getattr(cls, f"{arg}_cases"))
