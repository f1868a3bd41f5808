"""Every module that reads a ``ps1dask.*`` setting registers the package defaults itself.

``import ps1dask`` is lazy (it does not import Dask), so the defaults of ``ps1dask.yaml``
are registered by :mod:`ps1dask.config` when a module that reads them imports it. A module
that forgets works in most programs (someone else imported it first) and fails with
``KeyError: 'ps1dask'`` in the rest, e.g. a fresh notebook kernel that only starts the
emulator. This walks the package's sources for such reads.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ps1dask

PACKAGE = Path(ps1dask.__file__).parent


def _reads_ps1dask_setting(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            first = node.args[0]
            text = first.value if isinstance(first, ast.Constant) else None
            if isinstance(first, ast.JoinedStr) and first.values:
                head = first.values[0]
                text = head.value if isinstance(head, ast.Constant) else None
            if isinstance(text, str) and text.startswith("ps1dask."):
                return True
    return False


def _imports_config(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.module == "ps1dask" and any(a.name == "config" for a in node.names):
                return True
            if node.module == "ps1dask.config":
                return True
        if isinstance(node, ast.Import) and any(a.name == "ps1dask.config" for a in node.names):
            return True
    return False


def test_modules_reading_settings_register_the_defaults():
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "config.py" and path.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text(), str(path))
        if _reads_ps1dask_setting(tree) and not _imports_config(tree):
            missing.append(str(path.relative_to(PACKAGE)))
    assert missing == [], f"read ps1dask.* settings without importing ps1dask.config: {missing}"
