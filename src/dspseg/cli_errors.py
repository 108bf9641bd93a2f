"""How every command turns a user's mistake into one sentence and an exit code (never a traceback).

Exit codes belong to the error classes (:mod:`dspseg.errors`): 1 — the data cannot be used; 2 — a
bad option, path or run folder; 130 — interrupted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

err_console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def fail(message: str, code: int = 2) -> None:
    """Print ``error: <message>`` (rich markup escaped) on stderr and exit with ``code``."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False)
    raise typer.Exit(code)


def fail_with(e: BaseException) -> None:
    """:func:`fail` with the error's own sentence and exit code (:mod:`dspseg.errors`; 2 for an error
    outside them, such as an ``OSError``)."""
    sentence = getattr(e, "sentence", None)
    fail(sentence() if callable(sentence) else str(e), getattr(e, "exit_code", 2))


def guarded(fn: Callable[[], T], interrupted: str = "interrupted; nothing was left half-written") -> T | Any:
    """Call ``fn()``; a :class:`~dspseg.errors.UserError` or :class:`~dspseg.errors.TrainingError`
    becomes :func:`fail` with its own sentence and exit code, Ctrl-C exit code 130."""
    from dspseg.errors import EXIT_INTERRUPTED, TrainingError, UserError

    try:
        return fn()
    except (UserError, TrainingError) as e:
        fail_with(e)
    except KeyboardInterrupt:
        fail(interrupted, EXIT_INTERRUPTED)
