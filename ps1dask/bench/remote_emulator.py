"""The emulator in its own process, as the real service is on its own machine.

Benchmarks run the service stand-in out of process so that its CPU work (rendering pixels)
does not share the benchmark client's interpreter (and GIL) with the Dask scheduler.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests


class EmulatorProcess:
    """A running ``ps1dask emulator`` subprocess: ``url``, ``metrics()``, ``configure()``."""

    def __init__(self, url: str, proc: subprocess.Popen[str]) -> None:
        self.url = url
        self.proc = proc

    def metrics(self) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/_emulator/metrics", timeout=30).json())

    def flights(self) -> dict[str, Any]:
        """When each service request arrived and was answered (``time.monotonic()`` s)."""
        return dict(requests.get(f"{self.url}/_emulator/metrics/flights", timeout=60).json())

    def reset_metrics(self) -> None:
        requests.post(f"{self.url}/_emulator/metrics/reset", timeout=30).raise_for_status()

    def configure(self, **knobs: Any) -> None:
        requests.post(f"{self.url}/_emulator/config", json=knobs, timeout=30).raise_for_status()

    def render_files(self, filenames: list[str]) -> None:
        """Make the emulator render (and cache) whole files, as the real service has them on
        disk: a one-byte GET of each (a HEAD renders nothing: sizes come from headers), as
        many at once as there are CPUs (the emulator bounds its renders itself)."""

        def render(name: str) -> None:
            answer = requests.get(f"{self.url}{name}", headers={"Range": "bytes=0-0"}, timeout=600)
            answer.raise_for_status()

        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            list(pool.map(render, filenames))


@contextlib.contextmanager
def emulator_process(cache_dir: str | Path, **knobs: Any) -> Iterator[EmulatorProcess]:
    """Start ``python -m ps1dask emulator --port 0`` with knobs as flags; stop it on exit.

    The child also stops by itself if this process is killed (``--stop-with-parent``).
    """
    cmd = [
        sys.executable,
        "-m",
        "ps1dask",
        "emulator",
        "--port",
        "0",
        "--cache-dir",
        str(cache_dir),
        "--stop-with-parent",
    ]
    for key, value in knobs.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"emulator did not start (printed {url!r})")
        yield EmulatorProcess(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
