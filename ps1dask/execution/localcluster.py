"""The LocalCluster ps1dask starts when it is given no cluster, whose workers die with it.

A LocalCluster runs its scheduler and its nannies inside the process that started it, and
one worker process per nanny. If that process dies without closing the cluster (SIGKILL,
the OOM killer, a crashed notebook kernel), its workers have lost their scheduler: they
must stop requesting (the throttle sees to that) and go away, so that a rerun started at
once does not compete with them for the service's 10 slots.

distributed already makes each worker process exit when a pipe from its parent closes.
ps1dask adds its own watch as a second line: every worker process of a cluster made by
:func:`start_local_cluster` runs this module as a worker preload, which starts a daemon
thread that exits the process as soon as its parent is no longer the process that started
the cluster (a dead parent's children are re-parented). The parent's PID travels in the
worker's environment, so a parent that died before the preload ran is noticed too.

``prctl(PR_SET_PDEATHSIG)`` is not used: on Linux it fires when the parent *thread* that
spawned the worker exits, and distributed spawns worker processes from helper threads,
which would tie the workers' lives to those threads' rather than to the process's.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

import dask.config
import distributed
from dask.utils import parse_timedelta

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)

__all__ = ["PARENT_PID_ENV", "start_local_cluster", "watch_parent"]

#: Environment variable giving a worker process the PID of the process that started its
#: cluster.
PARENT_PID_ENV = "PS1DASK_CLUSTER_PARENT_PID"
#: Exit status of a worker process whose parent died.
PARENT_DIED_EXIT_STATUS = 70

_WATCH_LOCK = threading.Lock()
_WATCHING: list[int] = []


def start_local_cluster(
    n_workers: int = 2,
    threads_per_worker: int | None = None,
    *,
    silence_logs: int = logging.ERROR,
    dashboard_address: str | None = None,
) -> distributed.LocalCluster:
    """A LocalCluster of ``n_workers`` worker processes that exit soon after the death of
    this process (within ``ps1dask.cluster.parent-watch-interval``). Close it (or use it as
    a context manager) as any LocalCluster. Its dashboard listens at ``dashboard_address``,
    by default ``ps1dask.cluster.dashboard-address`` (loopback: it has no authentication).
    Dask's worker profiler is on only if ``ps1dask.cluster.worker-profile`` is true.
    ``threads_per_worker`` defaults to ``ps1dask.cluster.threads-per-worker``."""
    if threads_per_worker is None:
        threads_per_worker = int(dask.config.get("ps1dask.cluster.threads-per-worker"))
    preload = list(dask.config.get("distributed.worker.preload", None) or [])
    if __name__ not in preload:
        preload.append(__name__)
    profile = bool(dask.config.get("ps1dask.cluster.worker-profile"))
    # The nannies hand the configuration current at their creation to their worker processes.
    with dask.config.set({"distributed.worker.profile.enabled": profile}):
        return _local_cluster(
            n_workers, threads_per_worker, silence_logs, dashboard_address, preload
        )


def _local_cluster(
    n_workers: int,
    threads_per_worker: int,
    silence_logs: int,
    dashboard_address: str | None,
    preload: list[str],
) -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        dashboard_address=(
            dashboard_address
            if dashboard_address is not None
            else dask.config.get("ps1dask.cluster.dashboard-address")
        ),
        silence_logs=silence_logs,
        preload=preload,
        env={PARENT_PID_ENV: str(os.getpid())},
    )


def watch_parent(parent: int, interval: float) -> None:
    """Start (once per process) a daemon thread that exits this process as soon as its
    parent is no longer ``parent``, checking every ``interval`` seconds."""
    with _WATCH_LOCK:
        if _WATCHING:
            return
        _WATCHING.append(parent)
    threading.Thread(
        target=_watch, args=(parent, interval), name="ps1dask-parent-watch", daemon=True
    ).start()


def _watch(parent: int, interval: float) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    # The cluster's scheduler died with the parent: nothing left to finish or report.
    # os._exit, as distributed's own parent watch does: no cleanup that could hang.
    message = f"ps1dask: worker process {os.getpid()} exits: its parent {parent} died\n"
    try:
        os.write(sys.stderr.fileno(), message.encode())
    except (OSError, ValueError):
        pass
    os._exit(PARENT_DIED_EXIT_STATUS)


def dask_setup(worker: Any) -> None:
    """Worker preload hook: watch the parent process named in the environment."""
    from ps1dask import config  # noqa: F401  (registers the ps1dask.* defaults)

    parent = int(os.environ.get(PARENT_PID_ENV) or os.getppid())
    interval = float(
        parse_timedelta(dask.config.get("ps1dask.cluster.parent-watch-interval"), default="s")
    )
    watch_parent(parent, interval)
