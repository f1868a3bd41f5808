"""The global request limit: at most N requests to the service in flight, cluster-wide.

``docs/design.md`` invariant: at most 10 HTTP requests to the STScI service in flight at any
instant, across the whole cluster, under faults, retries and worker deaths.

How
---
:class:`RequestThrottle` hands out *slots* (``with throttle.slot(): ...``). The client holds
a slot from just before it sends a request until the whole answer has been read, and never
while sleeping between retries. Where the slots come from is decided at every
:meth:`RequestThrottle.slot` call:

- inside a dask ``distributed`` worker (``distributed.get_worker()`` succeeds, or a thread
  of this process belongs to a running worker), or when a distributed ``Client`` is current:
  a ``distributed.Semaphore(max_leases=N, name=<ps1dask.http.semaphore-name>)``, created
  **by name inside this process** and cached per process in a module-level dict keyed by
  (scheduler address, name). The scheduler keeps one lease table per name, so every worker
  process (and the client process) shares the same N leases.
- otherwise: a process-local ``threading.BoundedSemaphore(N)``, shared by every throttle of
  this process with the same name (a different N for the same name replaces it only while
  no slot is held, and is refused otherwise, as the scheduler refuses it on a cluster).

Hand-off
--------
On a cluster, the leases a process holds go through its
:class:`~ps1dask.client.leases.LeasePool` (one per Semaphore): a slot freed while another
thread of the same process waits is handed straight to it -- the lease stays held at the
scheduler, and no scheduler round trip separates the two requests -- at most
``ps1dask.http.lease-handoffs`` times in a row (default 20); then the lease goes back to the
scheduler, so that other workers and other jobs waiting there get their turn. 0 takes
every slot from the scheduler and gives it back there. Each request still runs under a
distinct lease this process holds (a pool never lends more leases than it holds), so the
scheduler's N leases still bound the requests in flight. :func:`lease_counts` says how this
process took its slots (``acquired`` from the scheduler + ``handed_off`` = requests).

Lost scheduler
--------------
No request is sent without a lease from a live scheduler when the work runs on a cluster.
A thread a task starts has no distributed context of its own, so the task pins its throttle
on its own thread (:meth:`RequestThrottle.bind`, a :class:`ClusterContext` holding the
worker) and hands that to its threads. Before each acquire, and again once a lease is
granted or handed over, the context is checked: a worker that is closing or lost its
scheduler connection, a Client that is not running, a closed event loop, or an acquire that
fails raise :class:`~ps1dask.exceptions.SchedulerLostError` -- the request is not sent and
the unit counts as not done; the lease is dropped locally (``_forget_lease``), never
released through a lost scheduler nor handed over, and threads waiting for a hand-off
re-check their context at least every ``leases.WAIT_CHECK_S`` seconds. An unpinned
throttle in a process whose worker is closing raises too. A process-local semaphore is
used only where there is no cluster at all.

A ``distributed.Semaphore`` is never pickled into a task: a Semaphore deserialised on a
process worker outside a task may not bind to the worker's event loop, its lease-refresh
callback never starts, the scheduler expires its leases after the lease timeout while
requests are still in flight, and the limit silently breaks. ``RequestThrottle`` therefore
pickles to ``(max_concurrency, name, url, mode)`` only and re-resolves its semaphore by
name on the other side.

Lease timeout
-------------
A lease is kept alive by refreshes from the holding process every
``lease-timeout / 5`` seconds; the scheduler expires leases not refreshed within
``distributed.scheduler.locks.lease-timeout`` (default 30 s) -- that is how the slots of a
dead worker come back. If refreshes stop while a request is still running (e.g. the
worker's event loop is blocked), the lease expires and another request may start: one too
many in flight. A request that makes no progress is cut after at most
``connect-timeout + read-timeout`` seconds, so that sum must stay below the lease timeout.
:meth:`RequestThrottle.check_lease_timeout` (called by ``PS1Service``) compares them and
warns (:class:`~ps1dask.exceptions.LeaseTimeoutWarning`) or raises, according to
``ps1dask.http.lease-check`` (``warn`` default, ``raise``, ``ignore``). Fix a mismatch by
lowering ``ps1dask.http.read-timeout`` or raising ``distributed.scheduler.locks.lease-timeout``
(on the scheduler and workers). Slots held longer than the lease timeout are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import dask.config
from dask.utils import parse_timedelta

from ps1dask import config
from ps1dask.client.leases import Lease, LeaseCounts, LeasePool
from ps1dask.exceptions import InvalidParameterError, LeaseTimeoutWarning, SchedulerLostError

__all__ = [
    "ClusterContext",
    "RequestThrottle",
    "current_cluster_context",
    "lease_counts",
    "lease_handoffs",
    "lease_timeout_seconds",
]

logger = logging.getLogger("ps1dask.client")

Mode = Literal["auto", "local", "distributed"]

# Process-wide registries. Keys: local name -> (limit, semaphore); distributed (scheduler
# address, name) -> Semaphore.
_REGISTRY_LOCK = threading.Lock()
_LOCAL_SEMAPHORES: dict[str, tuple[int, threading.BoundedSemaphore]] = {}
_DISTRIBUTED_SEMAPHORES: dict[tuple[str, str], Any] = {}
# The pool of leases of each distributed semaphore (same keys), and per semaphore name how
# this process obtained its cluster slots: a lease just granted, or one handed over.
_LEASE_POOLS: dict[tuple[str, str], LeasePool] = {}
_LEASE_COUNTS: dict[str, LeaseCounts] = {}
# Slots held by this process, per semaphore name, and the peak since the last reset.
_IN_USE: dict[str, int] = {}
_PEAK: dict[str, int] = {}
_WARNED_LEASES: set[tuple[float, float, float]] = set()


def lease_timeout_seconds() -> float | None:
    """``distributed.scheduler.locks.lease-timeout`` in seconds (None if ``inf``)."""
    value = dask.config.get("distributed.scheduler.locks.lease-timeout", "30s")
    if value in (None, "inf", float("inf")):
        return None
    return float(parse_timedelta(value, default="s"))


@dataclass(frozen=True, eq=False)
class ClusterContext:
    """Where request slots come from on a cluster: a worker (in a task) or a client.

    Captured on a thread that has the context (a task's own thread, or a thread with a
    current Client) and handed explicitly to the threads that thread starts, which have
    none of their own. :meth:`check_alive` says whether a live scheduler can still grant
    leases through it.
    """

    address: str
    scheduler: Any  # the scheduler rpc the Semaphore talks through
    loop: Any
    worker: Any = None  # distributed.Worker
    client: Any = None  # distributed.Client

    @classmethod
    def of_worker(cls, worker: Any) -> ClusterContext:
        return cls(worker.scheduler.address, worker.scheduler, worker.loop, worker=worker)

    @classmethod
    def of_client(cls, client: Any) -> ClusterContext:
        scheduler = client.scheduler
        address = getattr(scheduler, "address", None) or client.scheduler_info().get("address")
        return cls(str(address), scheduler, client.loop, client=client)

    def lost(self) -> str | None:
        """Why no live scheduler can grant a lease through this context (None if one can)."""
        if _loop_closed(self.loop):
            return "its event loop is closed"
        if self.worker is not None:
            status = _status_name(self.worker)
            if status not in _WORKER_ALIVE:
                return f"the dask worker {self.worker.address} is {status}"
            stream = getattr(self.worker, "batched_stream", None)
            comm = getattr(stream, "comm", None)
            if comm is None or comm.closed():
                return f"the dask worker {self.worker.address} lost its scheduler connection"
            return None
        status = _status_name(self.client)
        if status != "running":
            return f"the distributed Client is {status}"
        return None

    def check_alive(self) -> None:
        """Raise :class:`~ps1dask.exceptions.SchedulerLostError` unless a live scheduler can
        grant leases through this context."""
        why = self.lost()
        if why is not None:
            raise SchedulerLostError(
                f"no request sent: the Dask scheduler {self.address} cannot grant request "
                f"slots ({why}); this work unit counts as not done, rerun to resume it"
            )


# Worker statuses in which the scheduler still hands out work and leases (a worker that
# retires gracefully still finishes its tasks under its scheduler's leases).
_WORKER_ALIVE = frozenset({"running", "paused", "closing_gracefully"})


def _status_name(obj: Any) -> str:
    status = getattr(obj, "status", None)
    return str(getattr(status, "name", status))


def current_cluster_context() -> ClusterContext | None:
    """The distributed context of the calling thread; None in a plain local run.

    In order: the worker running the current task, the current Client, any running worker
    of this process (a thread a task started without handing it the task's context).
    Raises :class:`~ps1dask.exceptions.SchedulerLostError` when this process belongs to a
    cluster but no live scheduler can grant leases (a lost scheduler, a closing worker, a
    Client that is reconnecting): never a fallback to a process-local semaphore then.
    """
    try:
        import distributed
        from distributed.worker import Worker
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        worker = distributed.get_worker()
    except ValueError:
        worker = None
    if worker is not None:
        context = ClusterContext.of_worker(worker)
        context.check_alive()
        return context
    try:
        client = distributed.default_client()
    except ValueError:
        client = None
    if client is not None:
        context = ClusterContext.of_client(client)
        context.check_alive()
        return context
    workers = list(Worker._instances)
    for candidate in workers:
        if _status_name(candidate) in _WORKER_ALIVE and candidate.scheduler is not None:
            context = ClusterContext.of_worker(candidate)
            if context.lost() is None:
                return context
    # A worker process whose worker is closing (or failed): the threads its tasks started
    # must stop, not carry on under a process-local limit. (A closed worker is left out: in
    # a process that merely hosted an in-process cluster, local runs may follow.)
    stopping = [w for w in workers if _status_name(w) != "closed"]
    if stopping:
        raise SchedulerLostError(
            f"no request sent: this process is a dask worker that cannot reach a live "
            f"scheduler ({_status_name(stopping[0])}); its work units count as not done"
        )
    return None


def _loop_closed(loop: Any) -> bool:
    asyncio_loop = getattr(loop, "asyncio_loop", None)
    return asyncio_loop is None or asyncio_loop.is_closed()


def _usable(sem: Any, scheduler: Any) -> bool:
    # Bound to this very connection (a new Client to the same address gets a new one) and
    # to a live event loop.
    return sem is not None and sem._scheduler is scheduler and not _loop_closed(sem.loop)


def _get_distributed_semaphore(
    address: str, scheduler: Any, loop: Any, name: str, limit: int
) -> Any:
    key = (address, name)
    with _REGISTRY_LOCK:
        sem = _DISTRIBUTED_SEMAPHORES.get(key)
        if sem is not None and _usable(sem, scheduler):
            if sem.max_leases != limit:
                raise InvalidParameterError(
                    f"request semaphore {name!r} already has max_leases={sem.max_leases} in "
                    f"this process; cannot use it with max_concurrency={limit} (choose another "
                    f"ps1dask.http.semaphore-name)"
                )
            return sem
    from distributed import Semaphore

    sem = Semaphore(max_leases=limit, name=name, scheduler_rpc=scheduler, loop=loop)
    try:
        sem.register()
    except ValueError as err:  # the scheduler knows this name with another limit
        raise InvalidParameterError(
            f"request semaphore {name!r} exists on the scheduler with another limit ({err}); "
            f"every process must use the same ps1dask.http.max-concurrency, or another "
            f"ps1dask.http.semaphore-name"
        ) from err
    with _REGISTRY_LOCK:
        existing = _DISTRIBUTED_SEMAPHORES.get(key)
        if _usable(existing, scheduler):
            # Another thread won the race; ours holds no lease: stop its refresh callback.
            callback = getattr(sem, "refresh_callback", None)
            if callback is not None:
                callback.stop()
            return existing
        _DISTRIBUTED_SEMAPHORES[key] = sem
    logger.debug("request semaphore %r (max %d) obtained by name from %s", name, limit, address)
    return sem


async def _register_on_worker(name: str, limit: int, dask_worker: Any = None) -> None:
    """Obtain (and so register) this worker process's request semaphore, as its first slot
    would (run on its event loop by :meth:`RequestThrottle.register_on_workers`)."""
    context = ClusterContext.of_worker(dask_worker)
    if context.lost() is not None:
        return
    # on a thread: the registration waits on this very event loop
    await asyncio.get_running_loop().run_in_executor(
        None,
        _get_distributed_semaphore,
        context.address,
        context.scheduler,
        context.loop,
        name,
        limit,
    )


def _counts_of(name: str) -> LeaseCounts:
    with _REGISTRY_LOCK:
        counts = _LEASE_COUNTS.get(name)
        if counts is None:
            counts = _LEASE_COUNTS[name] = LeaseCounts()
        return counts


def _lease_pool(address: str, name: str, sem: Any) -> LeasePool:
    counts = _counts_of(name)
    key = (address, name)
    with _REGISTRY_LOCK:
        pool = _LEASE_POOLS.get(key)
        if pool is None or pool.semaphore is not sem:
            # A new semaphore (a new connection to the scheduler): a new pool. Leases lent
            # from the old one go back through it (a Lease knows its pool).
            pool = _LEASE_POOLS[key] = LeasePool(sem, _forget_lease, counts)
        return pool


def lease_handoffs() -> int:
    """``ps1dask.http.lease-handoffs``: consecutive hand-offs of a lease between threads of
    one process before it goes back to the scheduler (0: every slot from the scheduler)."""
    value = dask.config.get("ps1dask.http.lease-handoffs", 20)
    try:
        handoffs = int(value)
    except (TypeError, ValueError):
        handoffs = -1
    if handoffs < 0 or handoffs != value:
        raise InvalidParameterError(
            f"ps1dask.http.lease-handoffs must be an integer >= 0, got {value!r}"
        )
    return handoffs


def lease_counts(name: str | None = None) -> dict[str, int]:
    """How this process took its cluster slots of semaphore ``name`` (default
    ``ps1dask.http.semaphore-name``): ``acquired`` (a lease just granted by the scheduler),
    ``handed_off`` (a lease handed over by another thread of this process) and
    ``returned_unused`` (grants that found no thread waiting). ``acquired + handed_off`` is
    the requests sent under cluster slots; ``acquired + returned_unused`` the scheduler's
    grants to this process."""
    key = str(name if name is not None else dask.config.get("ps1dask.http.semaphore-name"))
    return _counts_of(key).snapshot()


def _get_local_semaphore(name: str, limit: int) -> threading.BoundedSemaphore:
    with _REGISTRY_LOCK:
        entry = _LOCAL_SEMAPHORES.get(name)
        if entry is not None and entry[0] != limit:
            if _IN_USE.get(name, 0):
                raise InvalidParameterError(
                    f"request semaphore {name!r} is in use with max_concurrency={entry[0]} in "
                    f"this process; cannot use it with max_concurrency={limit} at the same "
                    f"time (choose another ps1dask.http.semaphore-name)"
                )
            entry = None  # idle: the new limit replaces the old one
        if entry is None:
            entry = _LOCAL_SEMAPHORES[name] = (limit, threading.BoundedSemaphore(limit))
        return entry[1]


class RequestThrottle:
    """At most ``max_concurrency`` requests in flight across the cluster (see module doc).

    Parameters
    ----------
    max_concurrency
        Slots; default ``config.max_concurrency(url)`` (``ps1dask.http.max-concurrency``).
        Never above 10 for the STScI host.
    name
        Semaphore name; default ``ps1dask.http.semaphore-name``. Every process that must
        share the limit must use the same name and the same ``max_concurrency``.
    url
        Service URL the limit protects (default ``ps1dask.service.url``).
    mode
        ``"auto"`` (distributed when in a worker or with a current Client, else local),
        ``"local"`` or ``"distributed"`` (error without a distributed context).
    """

    def __init__(
        self,
        max_concurrency: int | None = None,
        *,
        name: str | None = None,
        url: str | None = None,
        mode: Mode = "auto",
    ) -> None:
        self.url = config.service_url(url)
        limit = config.max_concurrency(self.url) if max_concurrency is None else max_concurrency
        if int(limit) != limit or int(limit) < 1:
            raise InvalidParameterError(f"max_concurrency must be an integer >= 1, got {limit!r}")
        limit = int(limit)
        host = urlsplit(self.url).hostname or ""
        if host in config.STSCI_HOSTS and limit > config.STSCI_MAX_CONCURRENCY:
            raise InvalidParameterError(
                f"max_concurrency={limit} exceeds STScI's limit of "
                f"{config.STSCI_MAX_CONCURRENCY} simultaneous requests for {host}"
            )
        if mode not in ("auto", "local", "distributed"):
            raise InvalidParameterError(
                f"mode must be 'auto', 'local' or 'distributed', got {mode!r}"
            )
        self.max_concurrency: int = limit
        self.name: str = str(
            name if name is not None else dask.config.get("ps1dask.http.semaphore-name")
        )
        self.mode: Mode = mode
        #: The distributed context this throttle is pinned to (see :meth:`bind`); None:
        #: resolved at every slot from the calling thread.
        self.context: ClusterContext | None = None

    # -- pickling: name and limit only, never a Semaphore --------------------------------

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_rebuild_throttle, (self.max_concurrency, self.name, self.url, self.mode))

    def __repr__(self) -> str:
        return (
            f"RequestThrottle(max_concurrency={self.max_concurrency}, name={self.name!r}, "
            f"mode={self.mode!r})"
        )

    # -- backend resolution --------------------------------------------------------------

    def bind(self, context: ClusterContext | None = None) -> RequestThrottle:
        """A copy pinned to ``context`` (default: the calling thread's distributed context).

        Call it on a task's own thread and hand the copy to the threads the task starts:
        they have no distributed context of their own. A pinned throttle takes every slot
        from its context's scheduler and refuses
        (:class:`~ps1dask.exceptions.SchedulerLostError`) once that scheduler is lost or the
        worker is closing; it never falls back to a process-local semaphore. Without any
        distributed context (a plain local run) this throttle itself is returned. Pickling
        drops the pin (the other side resolves its own context).
        """
        if self.mode == "local" or (context is None and self.context is not None):
            return self
        pinned = context if context is not None else current_cluster_context()
        if pinned is None:
            return self
        clone = _rebuild_throttle(self.max_concurrency, self.name, self.url, self.mode)
        clone.context = pinned
        return clone

    def _resolve(self) -> tuple[str, Any, ClusterContext | None]:
        if self.mode != "local":
            context = self.context
            if context is not None:
                context.check_alive()
            else:
                context = current_cluster_context()
            if context is not None:
                return (
                    "distributed",
                    _get_distributed_semaphore(
                        context.address,
                        context.scheduler,
                        context.loop,
                        self.name,
                        self.max_concurrency,
                    ),
                    context,
                )
            if self.mode == "distributed":
                raise InvalidParameterError(
                    "RequestThrottle(mode='distributed') used outside a dask worker and "
                    "without a current distributed Client"
                )
        return "local", _get_local_semaphore(self.name, self.max_concurrency), None

    def backend(self) -> tuple[str, Any]:
        """``("distributed", Semaphore)`` or ``("local", BoundedSemaphore)`` for this call.

        Resolved each time (cheap dict lookups), so a throttle made before a Client started,
        or unpickled on a worker, uses the right semaphore where it runs. Raises
        :class:`~ps1dask.exceptions.SchedulerLostError` where a cluster's scheduler is lost.
        """
        kind, sem, _ = self._resolve()
        return kind, sem

    @property
    def kind(self) -> str:
        """``"distributed"`` or ``"local"``: the backend a slot would use right now."""
        return self.backend()[0]

    def register_on_workers(self, dask_client: Any) -> None:
        """Have every worker of ``dask_client`` register this throttle's semaphore now, in
        the background (nothing is waited for, no lease is taken).

        A job calls it as soon as it has its cluster: a worker's first slot otherwise costs a
        register round trip to the scheduler (65-78 ms measured at the start of a sparse job,
        while all 10 slots wait), which then overlaps the job's planning, listing or probe.
        A worker that joins later, or a call that fails, registers at its first slot as before.
        """
        if self.mode == "local":
            return
        try:
            dask_client.run(
                _register_on_worker, self.name, self.max_concurrency, wait=False, on_error="ignore"
            )
        except Exception as err:  # noqa: BLE001 - an optimisation: the first slot registers
            logger.debug("could not register %r on the workers ahead: %s", self.name, err)

    # -- slots ---------------------------------------------------------------------------

    @contextmanager
    def slot(self) -> Iterator[float]:
        """Hold one request slot; yields the seconds spent waiting for it."""
        _, sem, context = self._resolve()
        started = time.monotonic()
        lease: Lease | None = None
        handoffs = 0
        if context is not None:
            if sem.asynchronous:
                raise RuntimeError(
                    "RequestThrottle.slot() is blocking: do not call it from the event loop"
                )
            handoffs = lease_handoffs()
            if handoffs > 0:
                lease = self._take_lease(sem, context)
            else:
                self._acquire_lease(sem, context)
        else:
            sem.acquire()
        acquired = time.monotonic()
        with _REGISTRY_LOCK:
            now = _IN_USE.get(self.name, 0) + 1
            _IN_USE[self.name] = now
            _PEAK[self.name] = max(_PEAK.get(self.name, 0), now)
        try:
            yield acquired - started
        finally:
            with _REGISTRY_LOCK:
                _IN_USE[self.name] = _IN_USE.get(self.name, 1) - 1
            held = time.monotonic() - acquired
            if lease is not None and context is not None:
                lease.pool.give_back(lease, context, handoffs)
            elif context is not None and context.lost() is not None:
                # Releasing through a lost scheduler would only wait for connect timeouts.
                _forget_lease(sem)
            elif context is not None:
                try:
                    released = sem.release()
                except Exception:
                    logger.exception("releasing a lease of %r failed; it will time out", self.name)
                    released = False
                if released is False:
                    logger.warning(
                        "lease of %r was not released at once; it will time out", self.name
                    )
            else:
                sem.release()
            lease_timeout = lease_timeout_seconds() if context is not None else None
            if lease_timeout is not None and held > lease_timeout:
                logger.warning(
                    "a request held its slot of %r for %.1f s, longer than "
                    "distributed.scheduler.locks.lease-timeout=%.0f s: the limit relied on "
                    "lease refreshes",
                    self.name,
                    held,
                    lease_timeout,
                )

    def _take_lease(self, sem: Any, context: ClusterContext) -> Lease:
        """A lease from this process's pool of ``sem`` (handed over, or newly granted)."""
        pool = _lease_pool(context.address, self.name, sem)
        try:
            return pool.take(context)
        except SchedulerLostError:
            raise
        except (Exception, asyncio.CancelledError) as err:
            raise self._acquire_failed(context, err) from err

    def _acquire_lease(self, sem: Any, context: ClusterContext) -> None:
        """One lease straight from the scheduler (``ps1dask.http.lease-handoffs`` = 0)."""
        try:
            granted = sem.acquire()  # no timeout: returns True once granted
        except (Exception, asyncio.CancelledError) as err:
            # The scheduler died while we waited, the worker closed its connections...:
            # no lease, so no request.
            raise self._acquire_failed(context, err) from err
        if granted is not True:
            raise RuntimeError(f"could not acquire request semaphore {self.name!r}")
        if context.lost() is not None:
            # Granted just before the scheduler was lost or the worker began closing.
            _forget_lease(sem)
            context.check_alive()
        _counts_of(self.name).add(acquired=1)

    @staticmethod
    def _acquire_failed(context: ClusterContext, err: BaseException) -> SchedulerLostError:
        return SchedulerLostError(
            f"no request sent: could not obtain a request slot from the Dask scheduler "
            f"{context.address} ({type(err).__name__}: {err}); this work unit counts as not "
            f"done, rerun to resume it"
        )

    # -- observation (tests, progress) ---------------------------------------------------

    @property
    def in_use(self) -> int:
        """Slots of this semaphore name held by this process right now."""
        with _REGISTRY_LOCK:
            return _IN_USE.get(self.name, 0)

    @property
    def peak_in_use(self) -> int:
        """Most slots of this name held at once by this process since :meth:`reset_peak`."""
        with _REGISTRY_LOCK:
            return _PEAK.get(self.name, 0)

    def reset_peak(self) -> None:
        with _REGISTRY_LOCK:
            _PEAK[self.name] = _IN_USE.get(self.name, 0)

    def cluster_in_use(self) -> int:
        """Slots held across the cluster (the scheduler's lease count) or, locally, here."""
        kind, sem = self.backend()
        if kind == "distributed":
            return int(sem.get_value())
        return self.in_use

    # -- lease timeout relation ----------------------------------------------------------

    def check_lease_timeout(self, connect_timeout: float, read_timeout: float) -> None:
        """Check ``connect + read timeout < distributed.scheduler.locks.lease-timeout``.

        Only where slots come from a distributed Semaphore. Acts per
        ``ps1dask.http.lease-check``: ``warn`` (default; once per process and values),
        ``raise`` (:class:`~ps1dask.exceptions.InvalidParameterError`) or ``ignore``.
        """
        action = str(dask.config.get("ps1dask.http.lease-check", "warn")).lower()
        if action == "ignore" or self.mode == "local":
            return
        lease = lease_timeout_seconds()
        if lease is None:
            return
        if self.mode == "auto" and self.context is None and not _in_cluster():
            return
        bound = float(connect_timeout) + float(read_timeout)
        if bound < lease:
            return
        message = (
            f"ps1dask.http.connect-timeout + read-timeout = {bound:g} s is not below "
            f"distributed.scheduler.locks.lease-timeout = {lease:g} s: if a worker stops "
            f"refreshing its leases, a stalled request could outlive its lease and more than "
            f"{self.max_concurrency} requests could be in flight. Lower ps1dask.http.read-timeout "
            f"or raise distributed.scheduler.locks.lease-timeout (on scheduler and workers)."
        )
        if action == "raise":
            raise InvalidParameterError(message)
        key = (float(connect_timeout), float(read_timeout), lease)
        with _REGISTRY_LOCK:
            if key in _WARNED_LEASES:
                return
            _WARNED_LEASES.add(key)
        warnings.warn(message, LeaseTimeoutWarning, stacklevel=3)


def _in_cluster() -> bool:
    """Whether the calling thread works for a cluster (even one whose scheduler is lost)."""
    try:
        return current_cluster_context() is not None
    except SchedulerLostError:
        return True


def _forget_lease(sem: Any) -> None:
    """Drop one lease of ``sem`` in this process without telling its (lost) scheduler.

    What ``Semaphore.release`` does before its network call: the lease is no longer
    refreshed, so a scheduler that is in fact still there expires it after its lease
    timeout (as it does for a dead worker's leases). Uses the Semaphore's private lease
    deque: there is no public way to give up a lease locally.
    """
    leases = getattr(sem, "_leases", None)
    with contextlib.suppress(AttributeError, IndexError):
        leases.popleft()  # type: ignore[union-attr]
    logger.info("a lease of %r was dropped with its lost scheduler", getattr(sem, "name", "?"))


def _rebuild_throttle(max_concurrency: int, name: str, url: str, mode: Mode) -> RequestThrottle:
    return RequestThrottle(max_concurrency, name=name, url=url, mode=mode)
