"""The layers of docs/architecture.md hold: no module imports a layer above its own.

words < data < models, losses < methods < engine < advise < study < command line; a package's
``commands.py`` (typer functions the CLI registers) belongs to the command line. Imports inside
functions count too (they are dependencies all the same); imports under ``if TYPE_CHECKING:`` do not
(typing only).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "dspseg"
WORDS = {"vocabulary", "errors", "fsutil", "fslock", "cli_support", "colours", "costs", "__init__"}
LAYERS = {"data": 1, "models": 2, "losses": 2, "methods": 3, "engine": 4, "advise": 5, "study": 6}
COMMAND_LINE = 7


def layer(module: str) -> int:
    """The layer of ``dspseg.X.Y``: words 0 ... command line 7."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in WORDS:
        return 0
    if parts[-1] == "commands" or parts[0] not in LAYERS:
        return COMMAND_LINE  # cli, cli_errors, data_commands, io_commands, demo, napari_plugin, <package>/commands
    return LAYERS[parts[0]]


def _is_module(name: str) -> bool:
    return (SRC / f"{name}.py").is_file() or (SRC / name / "__init__.py").is_file()


def _typing_only(tree: ast.Module) -> set[int]:
    """Line numbers of the imports under ``if TYPE_CHECKING:``."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines.update(n.lineno for n in ast.walk(node) if isinstance(n, ast.ImportFrom))
    return lines


def upward_imports() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = "dspseg." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _typing_only(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("dspseg"):
                continue
            if node.lineno in skip:
                continue
            # ``from dspseg import X``: a module X, or a name of dspseg/__init__.py (words)
            targets = ([f"dspseg.{a.name}" if _is_module(a.name) else "dspseg" for a in node.names]
                       if node.module == "dspseg" else [node.module])
            found += [f"{module} (layer {layer(module)}) imports {t} (layer {layer(t)}), line {node.lineno}"
                      for t in targets if layer(t) > layer(module)]
    return found


def test_the_layer_map_knows_every_top_level_module():
    tops = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    # napari_plugin: a user interface, the command line's rank (it may import every layer; none imports it)
    assert tops - WORDS - set(LAYERS) == {"cli", "cli_errors", "data_commands", "io_commands", "demo", "napari_plugin"}


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports() == []


def test_the_command_line_loads_neither_napari_nor_qt():
    """``dspseg --help`` stays instant: the CLI's modules import no user-interface toolkit (the napari
    plugin is imported by napari alone)."""
    import subprocess
    import sys

    code = ("import sys, dspseg.cli; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6', 'magicgui', 'vispy', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
