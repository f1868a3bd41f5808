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

import logging
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

import dask.config
from dask.utils import parse_timedelta

from ps1dask import config
from ps1dask.exceptions import InvalidParameterError, LeaseTimeoutWarning

__all__ = ["RequestThrottle", "lease_timeout_seconds"]

logger = logging.getLogger("ps1dask.client")

Mode = Literal["auto", "local", "distributed"]

# Process-wide registries. Keys: local name -> (limit, semaphore); distributed (scheduler
# address, name) -> Semaphore.
_REGISTRY_LOCK = threading.Lock()
_LOCAL_SEMAPHORES: dict[str, tuple[int, threading.BoundedSemaphore]] = {}
_DISTRIBUTED_SEMAPHORES: dict[tuple[str, str], Any] = {}
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


def _distributed_context() -> tuple[str, Any, Any] | None:
    """(scheduler address, scheduler rpc, loop) of this process's distributed context."""
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
        return worker.scheduler.address, worker.scheduler, worker.loop
    try:
        client = distributed.default_client()
    except ValueError:
        client = None
    if client is not None and client.status in ("running", "connecting", "newly-created"):
        scheduler = client.scheduler
        address = getattr(scheduler, "address", None) or client.scheduler_info().get("address")
        return str(address), scheduler, client.loop
    # A thread the task started itself (contextvars do not follow it): any running worker
    # of this process serves, they all talk to one scheduler.
    for candidate in list(Worker._instances):
        status = getattr(candidate, "status", None)
        if getattr(status, "name", str(status)) == "running" and candidate.scheduler is not None:
            return candidate.scheduler.address, candidate.scheduler, candidate.loop
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

    # -- pickling: name and limit only, never a Semaphore --------------------------------

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_rebuild_throttle, (self.max_concurrency, self.name, self.url, self.mode))

    def __repr__(self) -> str:
        return (
            f"RequestThrottle(max_concurrency={self.max_concurrency}, name={self.name!r}, "
            f"mode={self.mode!r})"
        )

    # -- backend resolution --------------------------------------------------------------

    def backend(self) -> tuple[str, Any]:
        """``("distributed", Semaphore)`` or ``("local", BoundedSemaphore)`` for this call.

        Resolved each time (cheap dict lookups), so a throttle made before a Client started,
        or unpickled on a worker, uses the right semaphore where it runs.
        """
        if self.mode != "local":
            context = _distributed_context()
            if context is not None:
                address, scheduler, loop = context
                return "distributed", _get_distributed_semaphore(
                    address, scheduler, loop, self.name, self.max_concurrency
                )
            if self.mode == "distributed":
                raise InvalidParameterError(
                    "RequestThrottle(mode='distributed') used outside a dask worker and "
                    "without a current distributed Client"
                )
        return "local", _get_local_semaphore(self.name, self.max_concurrency)

    @property
    def kind(self) -> str:
        """``"distributed"`` or ``"local"``: the backend a slot would use right now."""
        return self.backend()[0]

    # -- slots ---------------------------------------------------------------------------

    @contextmanager
    def slot(self) -> Iterator[float]:
        """Hold one request slot; yields the seconds spent waiting for it."""
        kind, sem = self.backend()
        started = time.monotonic()
        if kind == "distributed":
            if sem.asynchronous:
                raise RuntimeError(
                    "RequestThrottle.slot() is blocking: do not call it from the event loop"
                )
            if sem.acquire() is not True:  # no timeout: returns True once granted
                raise RuntimeError(f"could not acquire request semaphore {self.name!r}")
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
            if kind == "distributed":
                try:
                    released = sem.release()
                except Exception:
                    logger.exception("releasing a lease of %r failed; it will time out", self.name)
                    released = False
                if released is False:
                    logger.warning(
                        "lease of %r was not released at once; it will time out", self.name
                    )
                lease = lease_timeout_seconds()
                if lease is not None and held > lease:
                    logger.warning(
                        "a request held its slot of %r for %.1f s, longer than "
                        "distributed.scheduler.locks.lease-timeout=%.0f s: the limit relied on "
                        "lease refreshes",
                        self.name,
                        held,
                        lease,
                    )
            else:
                sem.release()

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
        if self.mode == "auto" and _distributed_context() is None:
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


def _rebuild_throttle(max_concurrency: int, name: str, url: str, mode: Mode) -> RequestThrottle:
    return RequestThrottle(max_concurrency, name=name, url=url, mode=mode)
