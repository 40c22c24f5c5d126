"""What the package's comments and docstrings point a reader to exists: every ``leuktune.x.y``
they name is a module, or a name in one."""

from __future__ import annotations

import ast
import importlib
import io
import re
import tokenize
from pathlib import Path

import leuktune

PACKAGE = Path(leuktune.__file__).parent
DOTTED = re.compile(r"(?<![\w/.])leuktune(?:\.[A-Za-z_]\w*)+")


def _prose(source: str) -> list[str]:
    """The comments and docstrings of a module."""
    texts = [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            texts.append(ast.get_docstring(node) or "")
    return texts


def _exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                found = getattr(found, name)
        except AttributeError:
            return False
        return True
    return False


def test_every_module_or_name_that_comments_and_docstrings_name_exists():
    missing = sorted({f"{path.relative_to(PACKAGE.parent)}: {name}" for path in PACKAGE.rglob("*.py")
                      for text in _prose(path.read_text()) for name in DOTTED.findall(text) if not _exists(name)})
    assert not missing, "named in comments or docstrings, but no such module or name:\n" + "\n".join(missing)
