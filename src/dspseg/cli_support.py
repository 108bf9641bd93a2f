"""What every command needs from its options: comma lists, "did you mean" and output-folder checks.

One home for each, below every package (it imports only :mod:`dspseg.errors` and :mod:`dspseg.fslock`),
so ``data/``, ``engine/`` and ``study/`` may call it as well as the commands.

* **Lists.** ``--methods basic,dsp``, ``--classes a,b``, ``--crops 1,7``: :func:`split_list` (items
  stripped, empty items dropped) and :func:`parse_list` (at least one item, each cast, else
  :class:`~dspseg.errors.OptionError`).
* **Suggestions.** One matcher, :func:`closest` (difflib ratio >= :data:`CUTOFF`), and its two
  spellings: :func:`did_you_mean` (``"; did you mean 'lr'?"``) and :func:`closest_class` for class
  names (case, then a unique abbreviation, then :func:`closest`). The sentence around it stays the
  caller's.
* **Output folders.** dspseg never overwrites what it did not write: :func:`refuse_used_folder` for
  an ``--out`` that must be new or empty, :func:`not_ours` for the commands that may replace their
  own earlier output (``demo``, ``sweep``, ``simulate``, ``synth``).
* Help texts read training defaults from :class:`~dspseg.engine.config.TrainConfig` through
  :func:`dspseg.engine.config.train_option` (beside the defaults it quotes).

    >>> split_list(" basic, dsp,,")
    ['basic', 'dsp']
    >>> did_you_mean("fixmach", ["basic", "fixmatch", "dsp"])
    "; did you mean 'fixmatch'?"
    >>> closest_class("Mitochondria", ["background", "mito", "er"])
    'mito'
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from dspseg.errors import OptionError, OutputFolderError, UserError

T = TypeVar("T")

#: least difflib ratio for a suggestion ('lrr' -> 'lr' is 0.8; 'tau' -> 'augment' is 0.4)
CUTOFF = 0.6


# -------------------------------------------------------------------------------------------- lists


def split_list(text: str | None) -> list[str] | None:
    """``"a, b,,"`` → ``["a", "b"]`` (possibly empty); ``None`` stays ``None`` (option not given)."""
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def parse_list(text: str, option: str, example: str = "a,b", cast: Callable[[str], T] = str) -> list[T]:
    """The items of a comma-separated ``--option``, each passed through ``cast``.

    Raises :class:`~dspseg.errors.OptionError` for a list with no item (the message gives ``example``) or
    an item ``cast`` refuses (``cast`` is a number type: the message asks for numbers).
    """
    items = split_list(text) or []
    if not items:
        raise OptionError(f"--{option} is empty; give a comma-separated list, e.g. --{option} {example}")
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise OptionError(f"--{option} '{text}': every item must be a number, e.g. --{option} 1,2,4,8") from None


# -------------------------------------------------------------------------------------- suggestions


def closest(word: str, choices: Iterable[str], fold_case: bool = False) -> str | None:
    """The choice ``word`` most likely misspells (difflib ratio >= :data:`CUTOFF`), or ``None``.

    With ``fold_case`` the comparison ignores case and the choice is returned as spelt in ``choices``.
    """
    choices = list(choices)
    if not fold_case:
        match = difflib.get_close_matches(word, choices, n=1, cutoff=CUTOFF)
        return match[0] if match else None
    lower = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=CUTOFF)
    return lower[match[0]] if match else None


def did_you_mean(word: str, choices: Iterable[str], otherwise: str = "") -> str:
    """``"; did you mean 'x'?"`` for the closest choice, else ``otherwise`` (e.g. ``"; allowed keys: ..."``)."""
    match = closest(word, choices)
    return f"; did you mean '{match}'?" if match else otherwise


def closest_class(name: str, classes: Iterable[str]) -> str | None:
    """The known class a misspelt ``name`` most likely means: a case-insensitive match, then a unique
    prefix either way of at least 3 letters (abbreviations: 'mito' / 'mitochondria'), then
    :func:`closest` ignoring case."""
    lower = {c.lower(): c for c in classes}
    key = name.lower()
    if key in lower:
        return lower[key]
    prefix = [c for c in lower if min(len(c), len(key)) >= 3 and (c.startswith(key) or key.startswith(c))]
    if len(prefix) == 1:
        return lower[prefix[0]]
    return closest(name, lower.values(), fold_case=True)


# ----------------------------------------------------------------------------------- output folders


def holds_anything(folder: Path) -> bool:
    """Whether ``folder`` is a folder with at least one entry (its lock files, :mod:`dspseg.fslock`,
    do not count)."""
    from dspseg.fslock import entries

    return bool(entries(folder))


def refuse_used_folder(out: Path, error: type[UserError] = OutputFolderError, note: str = "") -> None:
    """Raise ``error`` when ``out`` exists and is not an empty folder (a new or empty ``--out`` only).

    ``error`` is the command's own class (``ConvertError``, ``ExportError``...); ``note`` ends the sentence.
    """
    if out.exists() and (not out.is_dir() or holds_anything(out)):
        raise error(f"--out {out} exists and is not an empty folder; choose a new folder{note}")


def not_ours(out: Path, what: str, fix: str, error: type[UserError] = OutputFolderError,
             label: str | None = None) -> UserError:
    """The error for a non-empty output folder that holds something else than this command's own output.

    ``"{label} is not empty and {what}; {fix}"`` with ``label`` ``--out OUT`` unless given, e.g.
    ``not_ours(out, "holds no sweep", "give a new folder")``. Returned, for the caller to raise.
    """
    return error(f"{label or f'--out {out}'} is not empty and {what}; {fix}")
