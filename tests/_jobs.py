"""Helpers shared by the job, cluster, fault, object-store and bad-input tests (not a test
module)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dask.config
import numpy as np
import pandas as pd
import zarr

import ps1dask
from ps1dask.client import PS1Service
from ps1dask.storage import STATUS, StoreLocation
from ps1dask.tessellation import locate, skycell_center

#: HTTP settings that make faults cheap to survive in tests: short read timeout (stalls),
#: short backoff, more attempts (so 20% faults never exhaust them).
FAST_HTTP = {
    "ps1dask.http.connect-timeout": 2,
    "ps1dask.http.read-timeout": 0.5,
    "ps1dask.http.backoff-initial": 0.05,
    "ps1dask.http.backoff-max": 0.4,
    "ps1dask.http.attempts": 10,
}


def positions_in_one_skycell(n: int, seed: int = 0, cell: str = "1405.053") -> pd.DataFrame:
    ra0, dec0 = skycell_center(cell)
    rng = np.random.default_rng(seed)
    ra = ra0 + rng.uniform(-0.15, 0.15, n)
    dec = dec0 + rng.uniform(-0.15, 0.15, n)
    keep = locate(ra, dec).skycell.to_numpy() == f"skycell.{cell}"
    return pd.DataFrame(
        {"name": [f"p{i:03d}" for i in range(int(keep.sum()))], "ra": ra[keep], "dec": dec[keep]}
    )


def service(url: str, **settings: object) -> PS1Service:
    """A PS1Service whose HTTP settings (pickled with it to the workers) are ``settings``."""
    with dask.config.set({**FAST_HTTP, **settings}):
        return PS1Service(url)


def arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    out: dict[str, np.ndarray] = {}

    def visit(g: zarr.Group, prefix: str) -> None:
        for name, arr in g.arrays():
            out[prefix + name] = np.asarray(arr[:])
        for name, sub in g.groups():
            visit(sub, prefix + name + "/")

    visit(group, "")
    return out


def assert_same_store(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
    xa, xb = arrays(a), arrays(b)
    assert sorted(xa) == sorted(xb)
    for name in xa:
        if xa[name].dtype.kind == "f":
            np.testing.assert_array_equal(xa[name], xb[name], err_msg=name)
        else:
            assert (xa[name] == xb[name]).all(), name


def tree_digest(path: str | os.PathLike[str]) -> dict[str, str]:
    """sha1 of every file under ``path`` (byte-compare a store before/after)."""
    root = Path(path)
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def emulator_knobs(emu: object, **knobs: object) -> Iterator[None]:
    """Set emulator knobs for a block, restoring a fault-free emulator afterwards."""
    emu.configure(**knobs)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        emu.configure(  # type: ignore[attr-defined]
            latency=0.0,
            fault_rate=0.0,
            retry_after=1.0,
            stall_seconds=30.0,
            seed=0,
            fault_kinds=("503", "429", "reset", "truncate", "stall"),
        )


def cutout_job(
    positions: Any,
    store: Any,
    service: str | PS1Service,
    client: Any,
    *,
    filters: str = "gr",
    size: int = 24,
    unit: int = 4,
    strategy: str = "cutout",
    **kw: Any,
) -> Any:
    """``ps1dask.cutouts`` as the cluster, fault and object-store tests run it: fitscut
    cutouts (by default), units of ``unit`` positions, no progress bar."""
    return ps1dask.cutouts(
        positions,
        store,
        filters=filters,
        size=size,
        strategy=strategy,
        service=service,
        client=client,
        progress=False,
        max_unit_positions=unit,
        **kw,
    )


def cutouts_args(
    csv: str | os.PathLike[str],
    store: str | os.PathLike[str],
    service_url: str,
    *options: str,
    filters: str = "gr",
    size: int | str = 24,
    strategy: str = "cutout",
) -> list[str]:
    """The arguments of ``ps1dask cutouts`` for the same job on the command line."""
    return [
        "cutouts",
        str(csv),
        "-o",
        str(store),
        "--filters",
        filters,
        "--size",
        str(size),
        "--strategy",
        strategy,
        "--service",
        service_url,
        *options,
    ]


def cutouts_cmd(*args: Any, **kw: Any) -> list[str]:
    """``python -m ps1dask`` + :func:`cutouts_args`: a command to run in a child process."""
    return [sys.executable, "-m", "ps1dask", *cutouts_args(*args, **kw)]


def ok_positions(
    store: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> int:
    """Positions of a stack store (a path or URL) whose every filter is stored ok (0 before
    its status array exists)."""
    where = StoreLocation.of(store, storage_options)
    if not where.has("stack_status/zarr.json"):
        return 0
    status = np.asarray(zarr.open_array(where.zarr_store(), path="stack_status", mode="r")[:])
    return int((status == STATUS["ok"]).all(axis=1).sum())


def kill_group_when(
    proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120.0
) -> None:
    """SIGKILL ``proc``'s process group (it was started in a session of its own: a job's
    client and its local workers) once ``ready()`` (or it exited, or ``timeout`` passed),
    and reap it."""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            if ready():
                break
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)


def kill_when_stored(
    proc: subprocess.Popen,
    store: str | os.PathLike[str],
    at_least: int,
    timeout: float = 120.0,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """:func:`kill_group_when` ``at_least`` positions of ``store`` are stored ok."""
    kill_group_when(proc, lambda: ok_positions(store, storage_options) >= at_least, timeout)


def wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout: float = 60.0,
    proc: subprocess.Popen | None = None,
) -> None:
    """Wait until ``condition()``; an AssertionError naming ``what`` after ``timeout`` s, or
    as soon as ``proc`` (the job waited on) ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
