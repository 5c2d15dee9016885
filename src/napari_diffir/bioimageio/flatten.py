"""One self-contained Python file from several of the project's modules, for a package's architecture.

A bioimage.io package names its architecture as a single source file and a callable in it; the
consumer (bioimage.io's own tools, deepImageJ's Python bridge, ilastik) imports that file without
napari-diffir installed. The models are ordinary modules of this project, so the file is built
from their source: concatenated in dependency order, with the imports between them removed
(their names are then globals of the one file). Anything the concatenation cannot keep correct
raises instead of producing a file that imports but computes something else: a relative import
that is not at module level, or two modules defining the same top-level name differently.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Sequence

__all__ = ["single_file"]

_ROOT = "napari_diffir"


def single_file(modules: Sequence[str], *, header: str) -> str:
    """The source of ``modules`` (dotted names, dependencies first) as one importable file.

    :param header: a comment block put at the top (what the file is, where it came from).
    """
    parts = ["from __future__ import annotations", "", "__all__ = []  # read by name: see the package's rdf.yaml", ""]
    defined: dict[str, tuple[str, str]] = {}
    for name in modules:
        source = _source(name)
        parts.append(f"# {'-' * 20} {name} {'-' * 20}")
        parts.append(_strip(name, source, defined))
    comment = "\n".join(f"# {line}".rstrip() for line in header.strip().splitlines())
    text = comment + "\n\n" + "\n".join(parts).rstrip() + "\n"
    compile(text, "<packaged architecture>", "exec")  # a syntax error here is a bug of this module
    return text


def _source(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ValueError(f"Cannot read the source of module {name!r}")
    with open(spec.origin, encoding="utf-8") as f:
        return f.read()


def _strip(module: str, source: str, defined: dict[str, tuple[str, str]]) -> str:
    """``source`` without its docstring, ``__future__`` and intra-project imports and ``__all__``."""
    tree = ast.parse(source)
    lines = source.splitlines()
    drop: set[int] = set()
    for i, node in enumerate(tree.body):
        span = range(_first_line(node) - 1, node.end_lineno)
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            drop.update(span)
        elif isinstance(node, ast.ImportFrom) and (node.level or node.module == "__future__"
                                                   or (node.module or "").startswith(_ROOT)):
            drop.update(span)
        elif _is_all(node):
            drop.update(span)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            drop.update(span)  # imports for annotations only (annotations are strings here)
        else:
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith(_ROOT)):
                    raise ValueError(f"{module} imports {'.' * inner.level}{inner.module} inside a block "
                                     f"(line {inner.lineno}); move it to module level to package it")
            for name in _top_names(node):
                text = ast.get_source_segment(source, node) or ""
                if name in defined and defined[name][1] != text:
                    raise ValueError(f"{module} and {defined[name][0]} both define {name!r} differently; "
                                     "they cannot share one packaged file")
                defined.setdefault(name, (module, text))
    return "\n".join(line for k, line in enumerate(lines) if k not in drop)


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", None) or []
    return min([node.lineno, *(d.lineno for d in decorators)])


def _is_all(node: ast.stmt) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []
