"""Class names from other tools → the dataset's classes: ``--class-map``, case, and the final class list.

A tool spells classes its own way (QuPath: ``Nucleus``; a napari file name: ``cell01_nuc.csv``).
Each name an annotation carries goes through :meth:`ClassNames.name`, in this order:

1. ``--class-map tool_name=class,...`` renames it (exact spelling of the tool's name);
2. a class of the dataset spelt exactly so is taken as it is;
3. a class of the dataset spelt the same ignoring case is taken (``Nucleus`` → ``nucleus``);
4. otherwise the name stays, and :func:`resolve_classes` refuses it when the classes are fixed
   (an existing dataset or ``--classes``) or appends it to the class list when they are not (names
   that differ only in case then become one class, spelt as first seen).

Every rename of steps 1 and 3 is reported once with its first file and its count (:meth:`ClassNames.notes`).

    >>> names = ClassNames(["background", "nucleus"], parse_class_map("Nuc=nucleus"))
    >>> names.name("Nuc", "a.csv"), names.name("NUCLEUS", "b.geojson"), names.name("nucleus", "c.tif")
    ('nucleus', 'nucleus', 'nucleus')
    >>> names.notes()
    ["--class-map: 'Nuc' taken as 'nucleus' (1 annotation(s), first in a.csv)", "class 'NUCLEUS' taken as 'nucleus' (case ignored; 1 annotation(s), first in b.geojson)"]
"""

from __future__ import annotations

from dspseg.cli_support import closest_class, split_list
from dspseg.errors import ConvertError


def parse_class_map(text: str | None) -> dict[str, str]:
    """``"Nuc=nucleus, Cyto=cytoplasm"`` → ``{"Nuc": "nucleus", "Cyto": "cytoplasm"}``; ``None`` → ``{}``."""
    out: dict[str, str] = {}
    for item in split_list(text) or []:
        tool, eq, cls = (s.strip() for s in item.partition("="))
        if not eq or not tool or not cls or "=" in cls:
            raise ConvertError(f"--class-map item '{item}' is not TOOL_NAME=CLASS; write e.g. "
                               "--class-map Nucleus=nucleus,Cyto=cytoplasm")
        if tool in out and out[tool] != cls:
            raise ConvertError(f"--class-map maps '{tool}' twice ('{out[tool]}' and '{cls}'); keep one")
        out[tool] = cls
    return out


class ClassNames:
    """Turns the class names of annotations into the dataset's (see the module docstring).

    ``known`` is the fixed class list (an existing dataset's or ``--classes``), ``None`` when the
    classes come from the annotations.
    """

    def __init__(self, known: list[str] | None, class_map: dict[str, str] | None = None):
        self.known = list(known) if known is not None else None
        self.class_map = dict(class_map or {})
        self.seen: list[str] = []  # canonical names in order of first appearance
        self.first_seen: dict[str, str] = {}
        self._renames: dict[tuple[str, str, str], list] = {}  # (kind, from, to) -> [count, first where]

    def _rename(self, kind: str, raw: str, to: str, where: str) -> None:
        entry = self._renames.setdefault((kind, raw, to), [0, where])
        entry[0] += 1

    def name(self, raw: str, where: str) -> str:
        """The dataset's name for the class ``raw`` of the annotation at ``where``."""
        cls = str(raw).strip()
        if not cls:
            raise ConvertError(f"{where}: the class name is empty; give every annotation a class")
        if cls in self.class_map:
            self._rename("map", cls, self.class_map[cls], where)
            cls = self.class_map[cls]
        pool = self.known if self.known is not None else self.seen
        if cls not in pool:
            folded = [c for c in pool if c.lower() == cls.lower()]
            if len(folded) == 1:
                self._rename("case", cls, folded[0], where)
                cls = folded[0]
        if cls not in self.first_seen:
            self.first_seen[cls] = where
            self.seen.append(cls)
        return cls

    def notes(self) -> list[str]:
        """One line per rename: which name became which class, how often, first where."""
        out = []
        for (kind, raw, to), (count, where) in self._renames.items():
            how = "--class-map: " if kind == "map" else "class "
            why = "" if kind == "map" else "case ignored; "
            out.append(f"{how}'{raw}' taken as '{to}' ({why}{count} annotation(s), first in {where})")
        return out

    def unused_map(self) -> list[str]:
        """The ``--class-map`` names no annotation carried."""
        used = {raw for (kind, raw, _) in self._renames if kind == "map"}
        return [t for t in self.class_map if t not in used]


def resolve_classes(names: ClassNames, classes: list[str] | None, dataset: str | None = None) -> list[str]:
    """The dataset's final class list; every class an annotation named must be in it.

    ``dataset`` is the ``--into`` folder when it already holds a dataset (its classes are
    ``names.known`` and fixed); else ``classes`` (``--classes``, already through ``names``) fixes
    the list, else the classes in order of appearance.
    """
    if names.known is None:
        if not names.seen:
            raise ConvertError("the annotations name no class; pass --classes")
        return list(names.seen)
    known = names.known
    if not known or len(set(known)) != len(known):
        raise ConvertError(f"--classes must list distinct names, got {classes}")
    for cls in names.seen:
        if cls not in known:
            close = closest_class(cls, known)
            hint = f" (did you mean '{close}'?)" if close else ""
            fix = (f"map it with --class-map '{cls}={close or known[0]}'" if dataset else
                   "add it to --classes or map it with --class-map")
            owner = f"the classes of {dataset} ({', '.join(known)})" if dataset else "--classes"
            raise ConvertError(f"{names.first_seen[cls]}: class '{cls}' is not in {owner}{hint}; {fix}")
    return list(known)
