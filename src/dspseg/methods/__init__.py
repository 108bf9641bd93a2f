"""Training methods: a plain dict registry filled by the :func:`register` decorator.

    >>> from dspseg.methods import METHODS, get_method
    >>> sorted(METHODS)[:1]
    ['basic']
    >>> get_method("basic").uses
    frozenset({'mask'})

Adding a method: write ``methods/<name>.py`` with a :class:`~dspseg.methods.base.Method` subclass
decorated with ``@register`` and add its import at the bottom of this file. Method modules must not
import torch at module level (see :mod:`dspseg.methods.base`): this package is imported by
``dspseg train --help``.
"""

from __future__ import annotations

import difflib

from dspseg.methods.base import VIEWS, Method, NoOptions
from dspseg.vocabulary import KINDS

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add ``cls`` to :data:`METHODS` under ``cls.name`` after checking its attributes."""
    if not isinstance(cls, type) or not issubclass(cls, Method):
        raise TypeError(f"register: expected a Method subclass, got {cls!r}")
    if not cls.name or not cls.name.replace("-", "_").isidentifier():
        raise ValueError(f"register: {cls.__name__}.name must be a short identifier, got {cls.name!r}")
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"register: method name {cls.name!r} is already taken by {METHODS[cls.name].__name__}")
    if not cls.summary or "\n" in cls.summary:
        raise ValueError(f"register: {cls.__name__}.summary must be one non-empty line, got {cls.summary!r}")
    unknown = set(cls.uses) - set(KINDS)
    if not cls.uses or unknown:
        raise ValueError(f"register: {cls.__name__}.uses must be a non-empty subset of {KINDS}, got {sorted(cls.uses)}")
    if cls.head not in ("linear", "prototype"):
        raise ValueError(f"register: {cls.__name__}.head must be 'linear' or 'prototype', got {cls.head!r}")
    if cls.views not in VIEWS:
        raise ValueError(f"register: {cls.__name__}.views must be one of {VIEWS}, got {cls.views!r}")
    if not cls.implements_terms():
        raise TypeError(f"register: {cls.__name__} must implement terms(views) or loss(outputs, batch)")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    """The method class called ``name``; a ``ValueError`` naming the choices (and the closest) otherwise."""
    if name in METHODS:
        return METHODS[name]
    close = difflib.get_close_matches(name, list(METHODS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ValueError(f"unknown method '{name}'{hint} Available: {', '.join(sorted(METHODS))}")


def method_table() -> list[tuple[str, str]]:
    """``(name, summary)`` of every registered method, sorted by name (for ``--help``)."""
    return [(name, METHODS[name].summary) for name in sorted(METHODS)]


# Built-in methods register themselves on import (keep these imports last).
from dspseg.methods import basic, boxinst, clsbranch, con2r, dsp, fixmatch, pointbranch, pseudolabel  # noqa: E402,F401

__all__ = ["KINDS", "METHODS", "Method", "NoOptions", "get_method", "method_table", "register"]
