"""Running the real ``ps1dask`` entry point in a child process (not a test module)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_ps1dask(
    *args: str, cwd: Path | None = None, stdin: str | None = None, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """``python -m ps1dask ARGS`` with this interpreter and environment (PYTHONPATH kept)."""
    return subprocess.run(
        [sys.executable, "-m", "ps1dask", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        input=stdin,
        env={**os.environ},
    )
