"""The emulator's module structure: no import cycles, no process-wide side effects on import.

Read from the source with ``ast`` (module-level and function-level imports alike), so a lazy
import inside a function counts too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ps1dask.emulator

EMULATOR_DIR = Path(ps1dask.emulator.__file__).parent
PACKAGE = "ps1dask.emulator"


def _emulator_modules() -> dict[str, Path]:
    return {
        f"{PACKAGE}.{path.stem}" if path.stem != "__init__" else PACKAGE: path
        for path in sorted(EMULATOR_DIR.glob("*.py"))
    }


def _imported_modules(path: Path) -> set[str]:
    """Every module an emulator source file imports (``from a import b`` counts ``a`` and, when
    ``a.b`` is a module of the emulator, ``a.b``)."""
    modules = _emulator_modules()
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if f"{node.module}.{alias.name}" in modules
            )
    return out


def test_no_import_cycles_between_emulator_modules() -> None:
    modules = _emulator_modules()
    graph = {
        name: {m for m in _imported_modules(path) if m in modules and m not in (name, PACKAGE)}
        for name, path in modules.items()
    }
    assert graph[f"{PACKAGE}.render"] and graph[f"{PACKAGE}.sky"]  # the walk sees imports
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_importing_the_emulator_installs_no_warnings_filter() -> None:
    # Third-party libraries and the package root install their own filters: import them
    # first, so that only what importing the emulator's modules adds is compared.
    code = (
        "import warnings\n"
        "import aiohttp.web, astropy.io.fits, astropy.wcs, numpy, PIL.Image, requests, scipy.special\n"
        "import ps1dask, ps1dask.conventions, ps1dask.imaging, ps1dask.tessellation\n"
        "before = list(warnings.filters)\n"
        "import ps1dask.emulator.app, ps1dask.emulator.service, ps1dask.emulator.sky\n"
        "import ps1dask.emulator.files, ps1dask.emulator.headers, ps1dask.emulator.render\n"
        "assert warnings.filters == before, [f for f in warnings.filters if f not in before]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


#: What the emulator may import from the package: itself, the tessellation (checked against
#: real service answers) and plain infrastructure. Never the client's conventions or
#: imaging: the emulator is an independent implementation of the service's rules.
ALLOWED_PACKAGE_IMPORTS = (
    "ps1dask.emulator",
    "ps1dask.tessellation",
    "ps1dask.exceptions",
    "ps1dask.wire",
    "ps1dask.background_server",
    "ps1dask.config",  # the package defaults (ps1dask.yaml)
)


def test_emulator_does_not_import_the_clients_conventions_or_imaging() -> None:
    seen: dict[str, set[str]] = {}
    for name, path in _emulator_modules().items():
        for module in _imported_modules(path):
            if module == "ps1dask" or module.startswith("ps1dask."):
                seen.setdefault(module, set()).add(name)
    assert "ps1dask.tessellation" in seen  # the walk sees the package imports
    forbidden = {
        module: sorted(users)
        for module, users in seen.items()
        if not any(module == ok or module.startswith(ok + ".") for ok in ALLOWED_PACKAGE_IMPORTS)
    }
    assert forbidden == {}
    assert not any(m.startswith(("ps1dask.conventions", "ps1dask.imaging")) for m in seen)
