"""Running work units on a Dask cluster: submission order, progress, summary, abort."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.config
import distributed
import numpy as np
import numpy.typing as npt

# tqdm comes with the job machinery, not with a job's first progress bar: that bar is made
# right after the units are submitted, and importing tqdm there held the client's GIL while
# the first units started (up to 0.1 s on 2 cores in bench warps; `ps1dask --help` does not
# import this module).
import tqdm.std  # noqa: F401
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker

from ps1dask.client import RequestStats
from ps1dask.exceptions import JobAbortedError, OutputLocationError, PS1DaskError
from ps1dask.execution.localcluster import start_local_cluster
from ps1dask.progress import progress_bar

logger = logging.getLogger("ps1dask.execution")


@contextlib.contextmanager
def _remote_client(address: str) -> Iterator[distributed.Client]:
    """A Client of the scheduler at ``address``, closed on exit. If the scheduler was lost,
    the Client's cancelled reconnection attempt is not logged as an error with a traceback:
    the job reports the loss in one line."""
    client = distributed.Client(address)
    try:
        yield client
    finally:
        lost = client.status != "running"
        quiet = logging.getLogger("distributed.client")
        level = quiet.level
        if lost:
            quiet.setLevel(logging.CRITICAL)
        try:
            client.close()
        finally:
            quiet.setLevel(level)


@contextlib.contextmanager
def cluster_client(
    client: distributed.Client | str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    quiet: bool = False,
) -> Iterator[distributed.Client]:
    """The Dask client to run on: the one given, a scheduler address, the current default
    client, the dask config ``scheduler-address`` (``DASK_SCHEDULER_ADDRESS``), or a new
    LocalCluster of worker processes (closed on exit, and gone soon after this process
    dies: :func:`~ps1dask.execution.localcluster.start_local_cluster`).

    Clients made here are closed, not exited (``Client.__exit__`` would reset the current
    client, which fails when a background job ends in another thread than it began)."""
    if isinstance(client, distributed.Client):
        _announce(client, quiet)
        yield client
        return
    if isinstance(client, str):
        with _remote_client(client) as c:
            _announce(c, quiet)
            yield c
        return
    try:
        current = distributed.get_client()
    except ValueError:
        current = None
    if current is not None:
        _announce(current, quiet)
        yield current
        return
    configured = dask.config.get("scheduler-address", None)
    if configured:
        with _remote_client(configured) as c:
            _announce(c, quiet)
            yield c
        return
    with (
        start_local_cluster(n_workers or 2, threads_per_worker) as cluster,
        contextlib.closing(distributed.Client(cluster)) as c,
    ):
        _announce(c, quiet)
        yield c


def _announce(c: distributed.Client, quiet: bool) -> None:
    """Print the dashboard link (whoever made the cluster: it is where a job is watched),
    and forward the workers' ps1dask log records (retries, refusals) when INFO is on here."""
    if not quiet:
        print(f"Dask dashboard: {c.dashboard_link}", file=sys.stderr, flush=True)
    forward_worker_logs(c)


def _set_log_level(level: int, dask_worker: Any = None) -> None:
    logging.getLogger("ps1dask").setLevel(level)


def forward_worker_logs(c: distributed.Client) -> None:
    """Send the workers' ``ps1dask`` log records at this process's level (when INFO or
    finer is enabled here, e.g. ``ps1dask ... -v``) to this process's ``ps1dask`` logger."""
    level = logging.getLogger("ps1dask").getEffectiveLevel()
    if level > logging.INFO:
        return
    try:
        c.run(_set_log_level, level, on_error="ignore")
        c.forward_logging("ps1dask", level=level)
    except (OSError, distributed.TimeoutError) as err:  # a best effort: never fail a job
        logger.warning("could not forward the workers' log records: %s", err)


@dataclass
class RunControl:
    """Shared by a running :func:`run_units` and whoever watches it from another thread
    (a :class:`~ps1dask.jobs.JobHandle`): the futures not yet collected, counts, a stop."""

    units_total: int = 0
    positions_total: int = 0
    units_done: int = 0
    positions_done: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    _pending: list[distributed.Future] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def futures(self) -> list[distributed.Future]:
        """The Dask futures of the units not yet collected."""
        with self._lock:
            return list(self._pending)

    def cancel(self) -> None:
        """Stop: units not started never will; the running ones finish their writes."""
        self.stop.set()
        for future in self.futures:
            future.cancel()


@dataclass
class RunOutcome:
    """What the units reported, aggregated by the client."""

    reports: list[Any] = field(default_factory=list)
    requests: RequestStats = field(default_factory=RequestStats)
    seconds: float = 0.0
    aborted: str | None = None


def _executing_keys(prefix: str, dask_worker: Any = None) -> list[str]:
    """Keys starting with ``prefix`` that this worker is still running (cancelled or not)."""
    state = getattr(dask_worker, "state", None)
    running = set(getattr(state, "executing", ())) | set(getattr(state, "long_running", ()))
    return [str(ts.key) for ts in running if str(ts.key).startswith(prefix)]


def wait_for_running_units(
    dask_client: distributed.Client, key_prefix: str, timeout: float = 600.0
) -> int:
    """Wait until no worker still runs a task of this job (e.g. after cancelling its futures:
    Dask cannot stop a running task, which goes on writing its chunks). Returns how many
    were still running at the timeout (0 normally)."""
    deadline = time.monotonic() + timeout
    remaining = 0
    while True:
        try:
            found = dask_client.run(_executing_keys, key_prefix, on_error="return")
        except (OSError, distributed.TimeoutError):  # the cluster is gone: nothing runs
            return 0
        remaining = sum(len(v) for v in found.values() if isinstance(v, list))
        if remaining == 0 or time.monotonic() > deadline:
            return remaining
        time.sleep(0.2)


@dataclass(frozen=True)
class NeighbourPlacement:
    """Where each of ``n_units`` units (plan order) should run: one contiguous block of
    units per worker, so that neighbours (same skycell, adjacent rows) share what a worker
    process keeps. The restriction is loose: a unit runs elsewhere if its worker is gone,
    and idle workers still steal queued units at the end.

    ``weights`` (one per unit, e.g. :func:`ps1dask.planning.unit_work_pixels`): the blocks
    carry equal shares of the total weight rather than equal numbers of units. In a dense
    field, units at a field's edge or across two skycells decode twice the rows of others;
    split by count, one block of ``bench s3-dense`` had 25% more rows to decode than the
    other, and its worker ran 0.6 s after the other had finished."""

    workers: tuple[str, ...]
    n_units: int
    weights: tuple[float, ...] | None = None

    @property
    def per_block(self) -> int:
        return -(-self.n_units // len(self.workers))

    @functools.cached_property
    def _blocks(self) -> npt.NDArray[np.int64]:
        """The block (worker index) of every unit, non-decreasing in plan order."""
        k = len(self.workers)
        total = sum(self.weights) if self.weights is not None else 0.0
        if self.weights is None or not total > 0:
            return np.arange(self.n_units, dtype=np.int64) // self.per_block
        # a unit goes to the block its middle falls in: a heavy unit at a boundary goes to
        # the lighter side
        middle = np.cumsum(self.weights) - np.asarray(self.weights) / 2.0
        return np.minimum((middle * k / total).astype(np.int64), k - 1)

    def where(self, i: int) -> dict[str, Any]:
        """``Client.submit`` keywords for unit ``i``."""
        return {"workers": [self.workers[int(self._blocks[i])]], "allow_other_workers": True}

    def submission_order(self) -> list[int]:
        """The units in the order to submit them: the blocks interleaved (the first unit of
        each block, then the second of each, ...), so that every worker has work from the
        start. Submitted block after block, the workers of later blocks sat idle while the
        first block's units arrived, and the scheduler's work stealing gave them units from
        the middle of that block: its skycells' rows were then read by two processes."""
        blocks = self._blocks
        rank = np.arange(self.n_units) - np.searchsorted(blocks, blocks)
        return [int(i) for i in np.lexsort((blocks, rank))]


def neighbour_placement(
    dask_client: distributed.Client, n_units: int, weights: Sequence[float] | None = None
) -> NeighbourPlacement | None:
    """The :class:`NeighbourPlacement` of ``n_units`` units (of ``weights``, if given) on
    the client's workers, or None when there is one worker or none known (nothing to
    choose)."""
    workers = sorted(dask_client.scheduler_info(n_workers=-1)["workers"])
    if len(workers) < 2 or n_units < 2:
        return None
    return NeighbourPlacement(
        tuple(workers), n_units, None if weights is None else tuple(map(float, weights))
    )


def run_units(
    dask_client: distributed.Client,
    func: Callable[..., Any],
    units: Sequence[Any],
    spec: Any,
    *,
    key_prefix: str,
    progress_total: int,
    progress_label: str = "positions",
    show_progress: bool | None = None,
    abort_after_unavailable: int = 3,
    control: RunControl | None = None,
    neighbours_together: bool = False,
    weights: Sequence[float] | None = None,
    submitted: Callable[[], None] | None = None,
) -> RunOutcome:
    """Submit one task per unit in plan order and collect their reports as they finish.

    Aborts (cancelling what has not started, and waiting for the units already running to
    finish writing) after ``abort_after_unavailable`` units in a row report that the service
    kept refusing requests; the store stays consistent because each unit writes its status
    last. A unit whose workers kept dying, a lost scheduler and a failed write to the store
    raise :class:`JobAbortedError` / :class:`~ps1dask.exceptions.OutputLocationError`.

    Each finished future is released at once: a worker that dies later must not make Dask
    recompute units that are already stored. The spec travels inside each task (it is
    small) rather than scattered, because scattered data dies with the workers holding it.

    ``neighbours_together``: consecutive units go to the same worker
    (:func:`neighbour_placement`), for units that share what a worker process keeps
    (decoded rows of the same skycell files), each worker's block carrying an equal share
    of ``weights`` (one per unit) when they are given.

    ``submitted`` is called once every unit is submitted (e.g. to start creating the store
    the units will write to).

    ``control``, if given, shows the pending futures and counts to another thread, whose
    ``control.cancel()`` stops the run as an abort does (:class:`JobAbortedError`).
    """
    outcome = RunOutcome()
    t0 = time.perf_counter()
    control = control if control is not None else RunControl()
    placement = (
        neighbour_placement(dask_client, len(units), weights) if neighbours_together else None
    )
    order = range(len(units)) if placement is None else placement.submission_order()
    pending = {
        dask_client.submit(
            func,
            units[i],
            spec,
            key=f"{key_prefix}-{units[i].index}",
            priority=-i,
            pure=False,
            **({} if placement is None else placement.where(i)),
        )
        for i in order
    }
    with control._lock:
        control._pending[:] = pending
        control.units_total, control.positions_total = len(units), progress_total
    if control.stop.is_set():  # cancelled before the units were submitted
        control.cancel()
    if submitted is not None:
        submitted()
    bar = progress_bar(
        progress_total, desc="ps1dask", unit=progress_label[:3], progress=show_progress
    )
    unavailable_streak = 0
    cutouts = 0
    failure: BaseException | None = None
    stopping = False  # stopping on our own: wait for running units before returning
    scheduler_lost = False
    try:
        with dask_client.as_current():
            completed = distributed.as_completed(pending)
        for future in completed:
            pending.discard(future)
            with control._lock:
                control._pending[:] = pending
            if control.stop.is_set():
                future.release()
                outcome.aborted = "cancelled (control.cancel())"
                stopping = True
                break
            try:
                report = future.result()
            except KilledWorker as err:
                failure = JobAbortedError(
                    f"stopped: the workers running a work unit kept dying (out of memory? "
                    f"pre-empted?): {err}"
                )
            except CommClosedError as err:
                failure = JobAbortedError(
                    f"stopped: lost the connection to the Dask scheduler ({err})"
                )
                scheduler_lost = True
            except FutureCancelledError as err:
                # e.g. reason "scheduler-connection-lost": the scheduler died
                failure = JobAbortedError(
                    f"stopped: Dask cancelled a work unit ({err.reason}); the store is "
                    "consistent, rerun the same command to resume"
                )
                scheduler_lost = err.reason == "scheduler-connection-lost"
            except PS1DaskError as err:
                failure = err
            except OSError as err:
                store = getattr(spec, "store", None)
                failure = OutputLocationError(
                    f"writing the store{f' {store}' if store else ''} failed on a worker: "
                    f"{type(err).__name__}: {err} (full disk, quota, permissions?). The store "
                    "is consistent: fix the cause and rerun to resume."
                )
            finally:
                future.release()
            if failure is not None:
                # Without a scheduler there is nobody to ask which units still run (and
                # they stop at their next request: see RequestThrottle).
                stopping = not scheduler_lost
                break
            outcome.reports.append(report)
            outcome.requests.merge(report.requests)
            ok = report.statuses.get("ok", 0)
            cutouts += ok
            with control._lock:
                control.units_done += 1
                control.positions_done += report.n_positions
            bar.update(report.n_positions)
            bar.set_postfix(
                cutouts=cutouts,
                requests=outcome.requests.snapshot().get("requests", 0),
                refresh=False,
            )
            unavailable_streak = unavailable_streak + 1 if report.unavailable else 0
            if unavailable_streak >= abort_after_unavailable:
                outcome.aborted = (
                    f"the service kept refusing requests (HTTP 503/429) after every retry in "
                    f"{unavailable_streak} work units in a row"
                )
                stopping = True
                break
    finally:
        bar.close()
        for f in pending:
            f.cancel()  # what has not started never will
        pending.clear()
        with control._lock:
            control._pending.clear()
        if stopping:
            # Dask cannot stop a running task: let those finish their writes before we
            # return, so that a rerun (or the user) never races a leftover task on the store.
            still = wait_for_running_units(dask_client, key_prefix)
            if still:
                logger.warning(
                    "%d work unit(s) of %s were still running when ps1dask stopped",
                    still,
                    key_prefix,
                )
        outcome.seconds = time.perf_counter() - t0
    if failure is not None:
        raise failure
    return outcome
