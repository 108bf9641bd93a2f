"""Every error a user can fix, and the exit code the command line gives it.

One home for the error classes, below every package (it imports nothing of dspseg), so ``data/``
raises the same classes as ``engine/`` and ``study/`` without importing them. Each class carries its
``exit_code``; :func:`dspseg.cli_errors.guarded` prints ``error: <sentence>`` and exits with it:

    1 — the data cannot be used (bad dataset, unreadable image, a run stopped by a non-finite loss),
        or the disk is full (:class:`DiskFullError`)
    2 — a bad option, path, configuration or run folder; a folder another process is writing
        (:class:`FolderLockedError`)
    3 — done, but some inputs were skipped and reported (``EXIT_SKIPPED``)
    130 — interrupted (``KeyboardInterrupt``; not a class here)

Messages are one sentence naming the file or option, the field, and the fix. Every user error is a
``ValueError`` too (a bad value the user gave), so library callers may catch either.

    >>> e = DatasetError("no images in split 'test'. Fix: run dspseg simulate")
    >>> e.exit_code, isinstance(e, ValueError)
    (1, True)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # pragma: no cover - typing only
    from dspseg.data.manifest import Problem

#: exit code of an interrupted command (Ctrl-C)
EXIT_INTERRUPTED = 130
#: exit code of a command that did its work but skipped some inputs it reported (``convert --on-unmatched skip``)
EXIT_SKIPPED = 3


def _rebuilt(cls: type, args: tuple, state: dict) -> BaseException:
    """An error unpickled as it was (its message and fields), whatever its ``__init__`` takes."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class UserError(ValueError):
    """A mistake the user can fix: a bad option, path, configuration or run folder (exit code 2).

    Every subclass pickles as it is (a DataLoader worker or a Ray task sends it back whole), even
    when its ``__init__`` takes other arguments than the message."""

    exit_code: ClassVar[int] = 2

    def sentence(self) -> str:
        """What the command line prints after ``error:``."""
        return str(self)

    def __reduce__(self) -> tuple:
        return _rebuilt, (type(self), self.args, dict(self.__dict__))


class DataError(UserError):
    """The data cannot be used as it is (exit code 1)."""

    exit_code: ClassVar[int] = 1


# ------------------------------------------------------------------------------------ options


class ConfigError(UserError):
    """A bad configuration key or value (``--set``, ``--config``, a flag)."""


class OptionError(UserError):
    """A command-line option outside what it accepts (``--acr``, ``--scenario``, ``--split``...)."""


class OutputFolderError(UserError):
    """An output folder that would overwrite something dspseg did not write."""


class FolderLockedError(OutputFolderError):
    """Another process is writing the folder (run, sweep or output folder); the sentence names it
    (pid, host, command, start time). Raised by :func:`dspseg.fslock.folder_lock`."""


class DiskFullError(UserError):
    """No space left (or a quota reached) while writing a file; the sentence names the file and what
    was kept (the previous version, or nothing). Raised by :mod:`dspseg.fsutil`'s writers whatever
    exception class the writing library raised (exit code 1)."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, path: str | Path = ""):
        self.path = str(path)
        super().__init__(message)


# --------------------------------------------------------------------------------------- data


class ManifestError(DataError):
    """A dataset that cannot be used; carries every :class:`~dspseg.data.manifest.Problem` found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        head = f"{len(errors)} problem(s) in the dataset"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in errors))

    def sentence(self) -> str:
        return f"the dataset cannot be used:\n{self}"


class PathEscapeError(DataError):
    """A path in the manifest points outside the dataset folder."""


class ImageReadError(DataError):
    """An image or mask file cannot be used; ``path``, ``reason`` and ``fix`` are kept separately."""

    def __init__(self, path: str | Path, reason: str, fix: str):
        self.path, self.reason, self.fix = str(path), reason, fix
        super().__init__(f"cannot use {self.path}: {reason}. Fix: {fix}")


class VolumeError(DataError):
    """A volume reference that cannot be used (no such array, index out of range, axes that do not
    match); ``where`` (the file or URL), ``field``, ``reason`` and ``fix`` are kept separately."""

    def __init__(self, where: str | Path, field: str, reason: str, fix: str):
        self.where, self.field, self.reason, self.fix = str(where), field, reason, fix
        super().__init__(f"volume {self.where}, field '{field}': {reason}. Fix: {fix}")


class VolumeReadError(DataError):
    """A chunk of an opened volume that could not be read or decoded while reading a section (training,
    validation, prediction). ``transient``: the store or filesystem did not answer (worth running
    again as is); else the stored bytes are bad (corrupt or missing: the volume needs re-exporting).
    ``where`` (URL or path), ``array``, ``section`` (``"z=5"``), ``chunk`` (grid index), ``reason``
    and ``fix`` are kept separately; ``then`` says how the command goes on once fixed (a caller that
    knows, such as the trainer, replaces it with :meth:`but`).

        >>> e = VolumeReadError("cell.zarr", "s0", (1, 0, 0), "the chunk is corrupt (RuntimeError: bad)",
        ...                     "re-export the volume", transient=False, section="z=5")
        >>> print(e)  # doctest: +NORMALIZE_WHITESPACE
        cannot read volume cell.zarr, array 's0', section z=5, chunk (1, 0, 0): the chunk is corrupt
        (RuntimeError: bad). Fix: re-export the volume, then run the same command again
    """

    def __init__(self, where: str | Path, array: str | None, chunk: tuple[int, ...] | None, reason: str, fix: str,
                 transient: bool, section: str | None = None, then: str = "then run the same command again"):
        self.where, self.array, self.chunk, self.reason, self.fix = str(where), array, chunk, reason, fix
        self.transient, self.section, self.then = transient, section, then
        place = "".join([f", array '{array}'" if array else "", f", section {section}" if section else "",
                         f", chunk {tuple(chunk)}" if chunk is not None else ""])
        super().__init__(f"cannot read volume {self.where}{place}: {reason}. Fix: {fix}, {then}")

    def but(self, **changes: object) -> VolumeReadError:
        """The same error with some fields changed (``section``, ``then``...)."""
        names = ("where", "array", "chunk", "reason", "fix", "transient", "section", "then")
        return VolumeReadError(**{**{k: getattr(self, k) for k in names}, **changes})


class DatasetError(DataError):
    """A dataset that cannot be used for this purpose (no images in a split, bad file...)."""


class InputsFailed(DataError):
    """Some inputs of a batch command (``predict`` on a folder) could not be used; the others were done.
    ``failures`` holds ``(path, reason)`` pairs; the message lists them all."""

    def __init__(self, failures: list[tuple[str, str]], done: str, fix: str):
        self.failures = list(failures)
        lines = "\n".join(f"  - {path}: {reason}" for path, reason in self.failures)
        super().__init__(f"{len(self.failures)} input(s) failed ({done}):\n{lines}\nFix: {fix}")


class ConvertError(UserError):
    """Annotations that cannot be converted; the message names the file, the entry and the fix."""


class OpenOrganelleError(UserError):
    """The source cannot be read, or its layout or metadata is not the OpenOrganelle one."""


# ------------------------------------------------------------------------------- runs, models


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says what happened and what was kept
    (exit code 1). A ``RuntimeError``, not a ``UserError``: the data and options were accepted."""

    exit_code: ClassVar[int] = 1

    def sentence(self) -> str:
        return str(self)


class CheckpointError(UserError):
    """A checkpoint or run folder that cannot be used (missing, corrupt, foreign)."""


class ExportError(UserError):
    """The run cannot be exported as asked (format, folder, missing optional package, exporter failure)."""


# -------------------------------------------------------------------------------------- study


class ResultsError(UserError):
    """A results.csv that is missing or cannot be read."""


class NothingFits(UserError):
    """No option of the sweep fits the budget."""
