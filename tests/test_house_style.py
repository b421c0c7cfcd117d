"""House style that a reader relies on (DESIGN.md): modules of at most 400 lines, functions of
at most 60 lines of code (docstrings, comments and blank lines not counted), a docstring on
every package saying what it holds."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "constrained_align"
MODULE_LINES = 400
FUNCTION_CODE_LINES = 60


def code_lines(source: str, node: ast.AST) -> int:
    """Lines of ``node`` that hold code: not blank, not only a comment, not its docstring."""
    lines = source.splitlines()[node.lineno - 1 : node.end_lineno]
    skip: set[int] = set()
    body = getattr(node, "body", [])
    first = body[0] if body else None
    is_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if is_doc and isinstance(first.value.value, str):
        skip = set(range(first.lineno, first.end_lineno + 1))
    text = "\n".join(lines)
    comments = {
        tok.start[0] + node.lineno - 1
        for tok in tokenize.generate_tokens(io.StringIO(text).readline)
        if tok.type == tokenize.COMMENT
        and not text.splitlines()[tok.start[0] - 1].split("#")[0].strip()
    }
    return sum(
        1
        for number, line in enumerate(lines, node.lineno)
        if line.strip() and number not in skip and number not in comments
    )


def test_modules_and_functions_stay_short():
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(PACKAGE.parent)
        if len(source.splitlines()) > MODULE_LINES:
            long_modules.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                count = code_lines(source, node)
                if count > FUNCTION_CODE_LINES:
                    long_functions.append(f"{name}:{node.lineno} {node.name}: {count} lines")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def test_every_package_says_what_it_holds():
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 40, f"{init.relative_to(PACKAGE.parent)} has no real docstring"
        for stale in ("to come", "comes next", "(to come)"):
            assert stale not in doc, f"{init.relative_to(PACKAGE.parent)} says {stale!r}"
