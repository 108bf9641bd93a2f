"""Problems: one thing wrong with a dataset, and pydantic's errors translated into them.

A :class:`Problem` names the file, the place (``images[3] (images/a.tif)`` or ``manifest``), the JSON
field, what is wrong and the fix. :func:`problems_from_validation_error` turns pydantic's structural
errors on ``dataset.json`` (:class:`~dspseg.data.manifest.Manifest`) into Problems: one per record and
field, with fixes a person can act on (a coordinate list of the wrong length is one problem saying how
many numbers it found; an unknown key gets the allowed keys and the closest spelling).

    >>> str(Problem("dataset.json", "images[0] (a.tif)", "boxes[0].xyxy", "needs exactly 4 numbers, got 3",
    ...             "write a box as [x0, y0, x1, y1]"))
    "error: dataset.json: images[0] (a.tif), field 'boxes[0].xyxy': needs exactly 4 numbers, got 3. Fix: write a box as [x0, y0, x1, y1]"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from dspseg.cli_support import closest


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, phrased for the person who has to fix it.

    ``where`` names the record (``images[3] (images/a.tif)``) or ``manifest``; ``field`` is the JSON
    path inside it (``boxes[0].xyxy``); ``severity`` is ``error`` (unusable) or ``warning``.
    """

    file: str
    where: str
    field: str
    message: str
    fix: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        loc = f"{self.file}: {self.where}"
        if self.field:
            loc += f", field '{self.field}'"
        return f"{self.severity}: {loc}: {self.message}. Fix: {self.fix}"


# ----------------------------------------------------------------------------------------- translation


def _record_label(raw: object, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("images"), list) and index < len(raw["images"]):
        rec = raw["images"][index]
        if isinstance(rec, dict) and isinstance(rec.get("file"), str):
            return f"images[{index}] ({rec['file']})"
    return f"images[{index}]"


_FIXES = {
    "missing": "add the field",
    "literal_error": "use one of the allowed values",
    "int_parsing": "write a whole number",
    "int_from_float": "write a whole number (no decimals)",
    "int_type": "write a whole number",
    "string_type": "write a string in double quotes",
    "list_type": "write a JSON list [...]",
    "tuple_type": "write a JSON list [...]",
    "too_short": "give the required number of entries",
    "too_long": "give the required number of entries",
    "dict_type": "write a JSON object {...}",
    "model_type": "write a JSON object {...}",
}

_COORDS = {"xyxy": (4, "a box as [x0, y0, x1, y1] (half-open, x = column)"),
           "xy": (2, "a point as [x, y] (x = column, y = row)")}


def _lookup(raw: object, loc: list) -> object:
    """The raw JSON value at ``loc`` (pydantic error location), or ``None`` if it is not there."""
    for part in loc:
        if isinstance(part, int) and isinstance(raw, list) and 0 <= part < len(raw):
            raw = raw[part]
        elif isinstance(part, str) and isinstance(raw, dict) and part in raw:
            raw = raw[part]
        else:
            return None
    return raw


def _field_name(parts: list) -> str:
    field = ""
    for part in parts:
        field += f"[{part}]" if isinstance(part, int) else (("." if field else "") + str(part))
    return field


def _unknown_field_fix(loc: list, fields: dict[str, tuple[str, ...]]) -> str:
    """Fix text for an unknown key: the allowed keys at that level and the closest spelling."""
    name = str(loc[-1])
    parent = [p for p in loc[:-1] if isinstance(p, str)]
    level = "manifest" if not parent else ("record" if parent == ["images"] else parent[-1])
    allowed = fields.get(level, ())
    close = closest(name, allowed, fold_case=True)
    first = f"rename it to '{close}'" if close else "remove it or correct its spelling"
    return f"{first} (allowed here: {', '.join(allowed)})"


def problems_from_validation_error(err: ValidationError, file: str, raw: object,
                                   fields: dict[str, tuple[str, ...]]) -> list[Problem]:
    """Turn pydantic's errors into :class:`Problem` s that name record, field and fix.

    ``raw`` is the parsed JSON that failed (for the file names of records and the lengths of lists);
    ``fields`` the keys allowed at each level (``manifest``, ``record``, ``boxes``, ``points``), from
    the schema (:data:`dspseg.data.manifest.FIELDS`).

    A coordinate list of the wrong length (``"xyxy": [1, 2, 3]``) gives one problem saying how many
    numbers were found, not pydantic's per-position "Field required".
    """
    out: list[Problem] = []
    seen: set[tuple[str, str, str]] = set()
    for e in err.errors():
        loc = list(e["loc"])
        if len(loc) >= 2 and loc[0] == "images" and isinstance(loc[1], int):
            where = _record_label(raw, loc[1])
            rest = loc[2:]
        else:
            where, rest = "manifest", loc
        message, fix = e["msg"], _FIXES.get(e["type"], "correct the value")
        prefix = loc[: len(loc) - len(rest)]
        # "xyxy": [1, 2, 3] fails as "missing" at xyxy[3]: report it once, on the list itself.
        if len(rest) >= 2 and isinstance(rest[-1], int) and rest[-2] in _COORDS:
            rest_coord = rest[:-1]
        else:
            rest_coord = rest
        if rest_coord and rest_coord[-1] in _COORDS and e["type"] in ("missing", "too_short", "too_long"):
            rest = rest_coord
            value = _lookup(raw, prefix + rest)
            got = f"{len(value)}" if isinstance(value, list) else repr(value)
            n, what = _COORDS[rest[-1]]
            message, fix = f"needs exactly {n} numbers, got {got}", f"write {what}"
        elif e["type"] in ("model_type", "dict_type"):
            message = "must be a JSON object {...}"
            if where != "manifest" and not rest:
                fix = 'write the image record as {"file": "images/a.tif", ...}'
        elif e["type"] == "extra_forbidden":
            message, fix = f"unknown field '{loc[-1]}'", _unknown_field_fix(loc, fields)
        elif e["type"] == "literal_error" and "expected" in (e.get("ctx") or {}):
            fix = f"use {e['ctx']['expected']}"
        elif e["type"] in ("too_short", "too_long") and rest == ["classes"]:
            fix = 'list at least one class name, e.g. "classes": ["background", "mito"]'
        field = _field_name(rest)
        if (where, field, message) in seen:
            continue
        seen.add((where, field, message))
        out.append(Problem(file, where, field, message, fix))
    return out
