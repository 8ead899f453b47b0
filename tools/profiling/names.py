"""Names a person can act on: Python qualnames read from the source (memray and
tracemalloc give bare function names or lines), paths relative to the build tree,
site-packages or the standard library (not basenames), and which frames the target's
editable scope covers. Applied to every profile's frames before it is stored."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

from autoopt.tools.profiling.model import Frame

_LIB = re.compile(r"(?:^|/)(?:site|dist)-packages/(.+)$")
_STDLIB = re.compile(r"/lib/python\d[\d.]*t?/(.+)$")


def short_path(file: str, bases: Iterable[str] = ()) -> str:
    """site-packages/x/y.py -> x/y.py; /usr/lib/python3.11/json/decoder.py ->
    json/decoder.py; below a base folder -> relative to it; otherwise unchanged."""
    m = _LIB.search(file)
    if m:
        return m[1]
    if not file.startswith("/"):
        return file
    m = _STDLIB.search(file)
    if m:
        return m[1]
    for base in bases:
        prefix = base.rstrip("/") + "/"
        if file.startswith(prefix):
            return file[len(prefix):]
    return file


@lru_cache(maxsize=512)
def _spans(path: str, mtime: float) -> tuple[tuple[int, int, str], ...]:
    """(first line, last line, qualname) of every def and class, outer before inner."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return ()
    spans: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = prefix + child.name
                spans.append((child.lineno, child.end_lineno or child.lineno, name))
                local = "." if isinstance(child, ast.ClassDef) else ".<locals>."
                visit(child, name + local)
            else:
                visit(child, prefix)

    visit(tree, "")
    return tuple(spans)


def enclosing(path: str, line: int) -> str | None:
    """The qualname of the innermost def or class around `line` of a Python file."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    inside = [s for s in _spans(path, mtime) if s[0] <= line <= s[1]]
    return max(inside, key=lambda s: s[0])[2] if inside else None


def qualname(path: str, line: int, name: str) -> str | None:
    """`Class.method` for a frame named `method` at `line`, when the source agrees."""
    if "." in name or name == "<module>":
        return None
    outer = enclosing(path, line)
    if outer is None:
        return None
    if outer.rsplit(".", 1)[-1] == name:
        return outer
    return f"{outer}.<locals>.{name}" if name.startswith("<") else None


def qualify(frames: Iterable[Frame], tree: str | None, is_editable: Callable[[str], bool],
            bases: Iterable[str] = ()) -> None:
    """In place: qualnames, `editable` (a tree-relative file the scope covers), then
    short paths. Frames are already relativized to the tree (model.relativize)."""
    bases = list(bases)
    for f in frames:
        if not f.file:
            continue
        in_tree = not f.file.startswith(("/", "<"))
        if f.file.endswith(".py") and f.line:
            path = os.path.join(tree, f.file) if in_tree and tree else f.file
            f.name = qualname(path, f.line, f.name) or f.name
        f.editable = in_tree and is_editable(f.file)
        f.file = short_path(f.file, bases)
