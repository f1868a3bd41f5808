"""What a job gives back: its summary, and the handle of a job running in the background.

:class:`JobSummary` is what ``ps1dask.cutouts`` and ``ps1dask.warps`` return;
:class:`JobHandle` what they return with ``compute=False``; the job's Dask client is started
on first use by a :class:`JobCluster` (one cluster per job, whatever needs it).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import distributed

from ps1dask.client.throttle import RequestThrottle
from ps1dask.execution.runner import RunControl, cluster_client

__all__ = ["JobCluster", "JobHandle", "JobProgress", "JobSummary"]


@dataclass
class JobSummary:
    """What a job did: statuses of every (position, filter), requests, time.

    Parameters
    ----------
    store : str
        The store's path.
    n_positions : int
        Positions of the job.
    filters : str
        Filters of the job (e.g. ``"grizy"``).
    statuses : dict of str to int
        Number of (position, filter) cutouts (warps: epochs) per status name.
    units_total : int
        Tasks of the job's plan.
    units_run : int
        Tasks run by this call (the rest were already in the store).
    requests : dict
        Request counts and bytes by kind, from the service client's statistics.
    strategies : dict of str to int
        How many times each fetch strategy was used, by name.
    seconds : float
        Wall time of the job, seconds.
    errors : list of str
        Error messages of failed cutouts (at most five per task).
    """

    store: str
    n_positions: int
    filters: str
    statuses: dict[str, int]
    units_total: int
    units_run: int
    requests: dict[str, Any] = field(default_factory=dict)
    strategies: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def cutouts_fetched(self) -> int:
        return int(sum(int(r) for r in self.strategies.values()))

    @property
    def image_requests(self) -> int:
        return int(self.requests.get("requests", 0))

    def __str__(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()) if v)
        rate = self.statuses.get("ok", 0) / self.seconds if self.seconds > 0 else 0.0
        mb = self.requests.get("bytes", 0) / 1e6
        lines = [
            f"store        {self.store}",
            f"positions    {self.n_positions} x filters {self.filters}",
            f"status       {statuses}",
            (
                f"work units   {self.units_run} run of {self.units_total} "
                f"({self.units_total - self.units_run} already complete)"
            ),
            (
                f"requests     {self.requests.get('requests', 0)} "
                f"({self.requests.get('retries', 0)} retries), {mb:.1f} MB"
            ),
            f"strategies   {', '.join(f'{k} {v}' for k, v in sorted(self.strategies.items())) or '-'}",
            f"time         {self.seconds:.1f} s, {rate:.1f} cutouts/s",
        ]
        if self.errors:
            lines.append("first errors " + "\n             ".join(self.errors[:5]))
        return "\n".join(lines)


class JobCluster:
    """The job's Dask client, started on first use: one cluster per job, whatever needs it
    (listing warps, probing the service, running units); closed by :meth:`close`."""

    def __init__(
        self,
        client: distributed.Client | str | None,
        n_workers: int | None,
        quiet: bool,
        throttle: RequestThrottle | None = None,
    ) -> None:
        self._args = (client, n_workers, quiet)
        #: the service's throttle, whose semaphore the workers register as the cluster is got
        self._throttle = throttle
        self._stack = contextlib.ExitStack()
        self._client: distributed.Client | None = None

    def get(self) -> distributed.Client:
        if self._client is None:
            client, n_workers, quiet = self._args
            self._client = self._stack.enter_context(
                cluster_client(client, n_workers=n_workers, quiet=quiet)
            )
            if self._throttle is not None:
                self._throttle.register_on_workers(self._client)
        return self._client

    def close(self) -> None:
        self._client = None
        self._stack.close()


@dataclass(frozen=True)
class JobProgress:
    """How far a background job is: work units and positions collected, of the total."""

    units_done: int
    units_total: int
    positions_done: int
    positions_total: int

    def __str__(self) -> str:
        return (
            f"{self.units_done}/{self.units_total} work units, "
            f"{self.positions_done}/{self.positions_total} positions"
        )


class JobHandle:
    """A job running in the background (``cutouts(..., compute=False)``, ``warps(...)``).

    The call returns once the store exists and the cluster is up; the units are submitted
    and collected by a background thread while the notebook goes on. ``result()`` waits and gives the :class:`JobSummary`
    (or raises what the job raised), ``done()`` asks, ``progress()`` counts, ``futures`` are
    the Dask futures of the units not yet collected, and ``cancel()`` stops the job: units
    not started never start, running ones finish their writes, the store stays consistent
    and a rerun resumes. A local cluster the job started closes when the job ends.

    Parameters
    ----------
    store : str
        The store's path.
    run : callable
        Runs the job to its summary, honouring the :class:`RunControl` it is given
        (cancellation, futures); called once on the background thread.
    """

    def __init__(self, store: str, run: Callable[[RunControl], JobSummary]) -> None:
        self.store = store
        self._control = RunControl()
        self._future: Future[JobSummary] = Future()
        context = contextvars.copy_context()  # e.g. the caller's current Dask client
        self._thread = threading.Thread(
            target=context.run, args=(self._run, run), name="ps1dask-job", daemon=True
        )
        self._thread.start()

    def _run(self, run: Callable[[RunControl], JobSummary]) -> None:
        try:
            summary = run(self._control)
        except BaseException as err:  # noqa: BLE001 - re-raised by result()
            self._future.set_exception(err)
        else:
            self._future.set_result(summary)

    def result(self, timeout: float | None = None) -> JobSummary:
        """Wait (at most ``timeout`` seconds, default no limit) and return the summary."""
        return self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> None:
        """Stop the job if it has not finished; ``result()`` then raises
        :class:`JobAbortedError` (the store stays consistent: a rerun resumes)."""
        self._control.cancel()

    @property
    def futures(self) -> list[distributed.Future]:
        """The Dask futures of the work units not collected yet."""
        return self._control.futures

    def progress(self) -> JobProgress:
        c = self._control
        return JobProgress(c.units_done, c.units_total, c.positions_done, c.positions_total)

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<JobHandle {self.store}: {state}, {self.progress()}>"
