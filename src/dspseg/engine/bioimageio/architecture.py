"""The architecture file of a bioimage.io package: dspseg's model source, bundled into one module.

bioimage.io's ``pytorch_state_dict`` weights name a Python file and a callable in it; a consumer
(bioimageio.core, ilastik, ...) imports that file alone — without dspseg installed — calls the
callable with the package's ``kwargs`` and loads the state dict into the module it returns.

:func:`architecture_source` builds that file from dspseg's own model modules (:data:`BUNDLED`, in
dependency order): each module's body without its import statements, one shared import block, and
:data:`FOOTER`, which defines the callable :data:`CALLABLE` — the model of
:func:`dspseg.models.build_model` (U-Net + head) whose ``forward`` returns the logits tensor instead of
the head's dict. Nothing is copied by hand, so the file cannot drift from the code that trained the
model; a model module that gains an import from outside torch, or a name clash between the modules,
stops the export with an ExportError naming it (tests/engine/test_bioimageio.py builds it for real).

    >>> src = architecture_source()
    >>> "class DSPSegLogits(SegmentationModel)" in src and "import dspseg" not in src
    True

The state dict is the inference model's (``backbone.*``, ``head.*``: the checkpoint's weights less
the auxiliary training heads), so its keys equal :func:`dspseg.engine.checkpoint.build_model_from_checkpoint`'s.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from typing import Any

from dspseg import __version__
from dspseg.errors import ExportError

#: the model modules the file holds, each after the modules it imports from
BUNDLED = ("dspseg.models.cosine_rows", "dspseg.models.unet", "dspseg.models.heads")
#: top-level packages a bundled module may import from besides the bundled modules themselves
ALLOWED = ("__future__", "torch")
#: the callable the package's ``architecture`` names
CALLABLE = "DSPSegLogits"
#: the file name inside the package
FILE_NAME = "dspseg_model.py"

FOOTER = '''HEADS = {"linear": LinearHead, "prototype": PrototypeHead}


class DSPSegLogits(SegmentationModel):
    """dspseg's inference model (U-Net backbone + head) for bioimage.io: (B, Cin, H, W) -> logits (B, C, H, W).

    Built like ``dspseg.models.build_model(in_channels, n_classes, width, head, levels, **head_kwargs)``;
    the input is the normalised image (the package's preprocessing), H and W multiples of
    2 ** (levels - 1) (others are padded inside and cropped back); labels = logits.argmax(1).
    """

    def __init__(self, in_channels: int, n_classes: int, width: int, levels: int, head: str,
                 head_kwargs: dict | None = None) -> None:
        backbone = UNet(in_channels=in_channels, width=width, levels=levels)
        super().__init__(backbone, HEADS[head](backbone.out_channels, n_classes, **dict(head_kwargs or {})))
        self.eval()

    def forward(self, image: Tensor) -> Tensor:
        return super().forward(image, aux=False)["logits"]
'''


def _module_parts(name: str) -> tuple[list[ast.Import | ast.ImportFrom], list[str], set[str]]:
    """``(import statements kept, body chunks, top-level names)`` of the module ``name``.

    Imports of bundled modules are dropped (their names are defined earlier in the file); imports
    from :data:`ALLOWED` packages are kept; any other import raises ExportError.
    """
    module = importlib.import_module(name)
    source = inspect.getsource(module)
    tree = ast.parse(source)
    lines = source.splitlines()
    imports, body, names = [], [], set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            roots = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for root in roots:
                if root in BUNDLED:
                    continue
                if root.split(".")[0] not in ALLOWED:
                    raise ExportError(f"the bioimage.io architecture file cannot bundle {name}: it imports {root}, "
                                      f"and the file may only need {' and '.join(ALLOWED[1:])}; keep the model "
                                      "modules free of other imports or add the module to BUNDLED")
                imports.append(node)
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node is tree.body[0]:
            continue  # the module docstring
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        chunk = "\n".join(lines[start - 1:node.end_lineno])
        body.append(chunk)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return imports, body, names


def _import_lines(nodes: list[ast.Import | ast.ImportFrom]) -> list[str]:
    """One line per module imported from (names merged, first-seen order), ``__future__`` first."""
    plain: list[str] = []
    names: dict[str, list[str]] = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            plain += [line for line in [ast.unparse(node)] if line not in plain]
            continue
        have = names.setdefault(node.module or "", [])
        have += [ast.unparse(a) for a in node.names if ast.unparse(a) not in have]
    froms = [f"from {m} import {', '.join(n)}" for m, n in names.items()]
    future = [line for line in froms if line.startswith("from __future__ ")]
    return future + plain + [line for line in froms if line not in future]


def architecture_source() -> str:
    """The text of :data:`FILE_NAME`: the bundled modules' code and :data:`FOOTER`; it imports only torch."""
    imports: list[ast.Import | ast.ImportFrom] = []
    chunks: list[str] = []
    seen: dict[str, str] = {}
    for name in BUNDLED:
        mod_imports, body, names = _module_parts(name)
        for n in names:
            if n in seen:
                raise ExportError(f"the bioimage.io architecture file cannot bundle {name}: it defines {n}, "
                                  f"as {seen[n]} does; rename one of them")
            seen[n] = name
        imports += mod_imports
        chunks.append(f"# ---- from {name} " + "-" * max(0, 80 - len(name)) + "\n\n" + "\n\n\n".join(body))
    lines = _import_lines(imports)
    future = [line for line in lines if line.startswith("from __future__ ")]
    rest = [line for line in lines if line not in future]
    header = (f'"""dspseg {__version__} model for bioimage.io: the modules {", ".join(BUNDLED)} in one file.\n\n'
              f"Generated by `dspseg export --format bioimageio` from dspseg's source (MIT license); it needs only\n"
              f"torch. The callable {CALLABLE}(**kwargs) returns the inference model (logits out).\n"
              '"""\n')
    return "\n".join([header, *future, "", *rest, "", "", "\n\n\n".join(chunks), "", "", FOOTER.strip("\n"), ""])


def architecture_kwargs(state: dict[str, Any]) -> dict[str, Any]:
    """The callable's keyword arguments for a checkpoint ``state`` (plain YAML values)."""
    args = state["model_args"]
    return {"in_channels": int(state["in_channels"]), "n_classes": len(state["classes"]),
            "width": int(args["width"]), "levels": int(args["levels"]), "head": str(args["head"]),
            "head_kwargs": {str(k): v for k, v in dict(args.get("head_kwargs") or {}).items()}}
