"""What a widget shows when something fails: the error's own sentence, as the command line prints it."""

from __future__ import annotations


def sentence(e: BaseException) -> str:
    """``error: <sentence>`` of dspseg's errors (:mod:`dspseg.errors`); a file-system error names its
    file; anything else (a bug) shows its type, so it can be reported."""
    said = getattr(e, "sentence", None)
    if callable(said):
        return f"error: {said()}"
    if isinstance(e, OSError) and e.filename:
        return f"error: {e.filename}: {e.strerror or e}"
    return f"error ({type(e).__name__}): {e}"


def show_error(finish, e: BaseException) -> None:
    """A worker's error: ``finish(sentence)``; one that is not a user's (a bug) is raised again after,
    so napari shows its traceback."""
    from dspseg.errors import TrainingError, UserError

    finish(sentence(e))
    if not isinstance(e, (UserError, TrainingError, OSError)):
        raise e
