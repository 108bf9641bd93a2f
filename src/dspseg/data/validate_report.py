"""What ``dspseg validate`` hands back, and how it is printed.

:func:`~dspseg.data.validate.validate_dataset` returns a :class:`ValidationReport`: every
:class:`~dspseg.data.manifest.Problem` found (errors and warnings, in discovery order), the
:class:`DatasetSummary` of what the dataset holds, and what it had to read on the way (the parsed
manifest, every image's ``(C, H, W)`` and, when asked, every mask), so that a caller such as the
trainer need not parse the manifest or read the masks a second time. :func:`render_report` prints
it for the command line: each problem as file, place, message and fix, then either a failure line or
the summary tables.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dspseg.data.manifest import Manifest, Problem
from dspseg.vocabulary import KINDS


@dataclass
class DatasetSummary:
    """What a valid dataset holds. ``per_type``: images per annotation kind; ``class_pixels``: mask
    pixels per class; ``class_images``: images known to contain each class (from masks, labels, boxes
    and points); ``sizes``: Counter of (H, W); ``channels``: Counter of C; ``groups``: number of
    sub-volumes; ``splits``: Counter over ``train``/``val``/``test``/``none``."""

    n_images: int
    per_type: dict[str, int]
    class_pixels: dict[str, int]
    class_images: dict[str, int]
    sizes: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)
    groups: int = 0
    splits: Counter = field(default_factory=Counter)


@dataclass
class ValidationReport:
    """All problems found and, if the manifest could be read at all, the summary. ``file`` is the
    manifest's path.

    What was read on the way: ``manifest``, the parsed manifest (``None`` when even its top level is
    unusable; with structural errors it holds only the records that parsed); ``sizes``, record
    ``file`` → ``(C, H, W)`` of every image opened; ``masks``, record ``mask`` → the (H, W) mask as
    stored (its file's integer type), filled only when ``validate_dataset(..., keep_masks=True)``.
    """

    problems: list[Problem]
    summary: DatasetSummary | None
    file: str = ""
    manifest: Manifest | None = None
    sizes: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when nothing makes the dataset unusable (warnings allowed)."""
        return not self.errors


def _table(console: Console, title: str, columns: list[tuple[str, str]], rows: list[list[str]]) -> None:
    """Print a bold ``title`` line and a table of ``rows`` under ``(name, justify)`` columns."""
    console.print(Text(title, style="bold"))
    t = Table()
    for col, just in columns:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for row in rows:
        t.add_row(*row)
    console.print(t)


def render_report(report: ValidationReport, console: Console) -> None:
    """Print every problem (errors, then warnings), then either a failure line or the summary tables."""
    for p in report.errors + report.warnings:
        colour = "red" if p.severity == "error" else "yellow"
        loc = p.where + (f", field '{p.field}'" if p.field else "")
        console.print(Text.assemble((f"{p.severity}: ", f"bold {colour}"), (p.file, "bold"), f": {loc}"))
        console.print(Text.assemble("    ", p.message))
        console.print(Text.assemble(("    fix: ", "green"), p.fix))
    n_err, n_warn = len(report.errors), len(report.warnings)
    if not report.ok:
        console.print(Text(f"{report.file}: {n_err} error(s), {n_warn} warning(s); fix the errors and run "
                           "`dspseg validate` again.", style="bold red"))
        return
    s = report.summary
    if s is None:
        return
    console.print(Text(f"{report.file}: OK, {s.n_images} images" + (f", {n_warn} warning(s)" if n_warn else ""),
                       style="bold green"))
    total = max(s.n_images, 1)
    _table(console, "Images per annotation type", [("type", "left"), ("images", "right"), ("%", "right")],
           [[kind, str(s.per_type.get(kind, 0)), f"{100 * s.per_type.get(kind, 0) / total:.1f}"] for kind in KINDS])
    pixels = max(sum(s.class_pixels.values()), 1)
    _table(console, "Classes: pixels in masks, images known to contain the class",
           [("id", "right"), ("class", "left"), ("mask pixels", "right"), ("% of pixels", "right"),
            ("images", "right")],
           [[str(c), name, str(n), f"{100 * n / pixels:.2f}", str(s.class_images.get(name, 0))]
            for c, (name, n) in enumerate(s.class_pixels.items())])
    _table(console, "Image sizes", [("rows x columns", "right"), ("images", "right")],
           [[f"{h} x {w}", str(n)] for (h, w), n in sorted(s.sizes.items(), key=lambda kv: (-kv[1], kv[0]))])
    chans = ", ".join(f"{c} ({n} images)" for c, n in sorted(s.channels.items())) or "not checked"
    splits = ", ".join(f"{k}: {s.splits[k]}" for k in ("train", "val", "test", "none") if s.splits.get(k))
    console.print(Text(f"channels: {chans}; groups: {s.groups}; splits: {splits or '-'}"))
