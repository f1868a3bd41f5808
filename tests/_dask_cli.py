"""A Dask cluster started from the command line (``dask scheduler``, ``dask worker``) in
processes of their own, as a deployment runs it (not a test module)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def dask_cli() -> list[str]:
    """The ``dask`` command (or ``python -m dask`` where it is not on the PATH)."""
    exe = shutil.which("dask")
    return [exe] if exe else [sys.executable, "-m", "dask"]


def scheduler_cmd(port: int) -> list[str]:
    """A scheduler on loopback ``port`` (its dashboard on any free loopback port)."""
    return [
        *dask_cli(),
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-address",
        "127.0.0.1:0",
    ]


def worker_cmd(address: str, name: str, *options: str) -> list[str]:
    """A worker of 2 threads named ``name`` on loopback, joining the scheduler ``address``."""
    return [
        *dask_cli(),
        "worker",
        address,
        "--host",
        "127.0.0.1",
        "--name",
        name,
        "--nthreads",
        "2",
        *options,
        "--no-dashboard",
        "--memory-limit",
        "2GiB",
    ]


def start_logged(
    cmd: list[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """Start ``cmd`` in a session of its own (so that its whole group can be killed by the
    PID we get), stdout and stderr to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
