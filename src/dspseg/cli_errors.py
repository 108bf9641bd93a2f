"""How every command turns a user's mistake into one sentence and an exit code (never a traceback).

Exit codes: 1 — the data cannot be used (bad dataset, unreadable image, a run stopped by a
non-finite loss); 2 — a bad option, path or run folder; 130 — interrupted.
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


def guarded(fn: Callable[[], T], interrupted: str = "interrupted; nothing was left half-written") -> T | Any:
    """Call ``fn()``; known user-facing errors become :func:`fail` with the right exit code."""
    from dspseg.data.io import ImageReadError
    from dspseg.data.manifest import ManifestError
    from dspseg.engine.config import UserError

    try:
        return fn()
    except ManifestError as e:
        fail(f"the dataset cannot be used:\n{e}", 1)
    except ImageReadError as e:
        fail(str(e), 1)
    except UserError as e:
        from dspseg.data.dataset import DatasetError

        fail(str(e), 1 if isinstance(e, DatasetError) else 2)
    except KeyboardInterrupt:
        fail(interrupted, 130)
    except Exception as e:  # training failures carry a full sentence already
        from dspseg.engine.trainer import TrainingError

        if isinstance(e, TrainingError):
            fail(str(e), 1)
        raise
