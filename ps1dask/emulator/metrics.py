"""Request accounting of the emulated service: counters, requests in flight, knobs.

:class:`ServiceState` is what one emulator's middleware reads and writes: the live
:class:`~ps1dask.emulator.faults.Knobs`, the seeded fault generator and the
:class:`Metrics` served at ``/_emulator/metrics``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ps1dask.emulator.faults import FaultInjector, Knobs
from ps1dask.wire import CUTOUTS_PAGE_PATH, FILES_PREFIX, FITSCUT_PATH, LIST_PATH

EMULATOR_PREFIX = "/_emulator/"
#: Service requests whose times :class:`Metrics` keeps (the newest; benchmarks read them).
FLIGHT_LOG_SIZE = 200_000
#: Endpoint names of ``requests_by_endpoint``.
ENDPOINTS = (FITSCUT_PATH, LIST_PATH, CUTOUTS_PAGE_PATH, "files", "other")
#: Endpoint name of every S3-mode request (counted apart, under ``s3``).
S3_ENDPOINT = "s3"
#: First path segments of the service (and of the emulator's own endpoints): every other
#: first segment names an S3 bucket.
SERVICE_SEGMENTS = frozenset(
    {"", EMULATOR_PREFIX.strip("/"), FILES_PREFIX.strip("/"), LIST_PATH.split("/")[1]}
)


def s3_bucket_of(path: str) -> str | None:
    """The bucket an S3-mode (path-style) request names; None for a service path."""
    segment = path.lstrip("/").split("/", 1)[0]
    return None if segment in SERVICE_SEGMENTS else segment


def endpoint_of(path: str) -> str | None:
    """Metrics name of a request path; None for the emulator's own ``/_emulator/*``."""
    if path.startswith(EMULATOR_PREFIX) or path == EMULATOR_PREFIX.rstrip("/"):
        return None
    if path in (FITSCUT_PATH, LIST_PATH, CUTOUTS_PAGE_PATH):
        return path
    if path.startswith(FILES_PREFIX):
        return "files"
    if s3_bucket_of(path) is not None:
        return S3_ENDPOINT
    return "other"


class S3Metrics:
    """Counters of the S3 mode (guarded by the owning :class:`Metrics`' lock)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.range_requests = 0
        self.max_in_flight = self.in_flight
        self.bytes_sent = 0
        self.faults_injected = 0
        self.faults_by_kind: dict[str, int] = defaultdict(int)
        self.responses_by_status: dict[str, int] = defaultdict(int)

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "range_requests": self.range_requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "bytes_sent": self.bytes_sent,
            "faults_injected": self.faults_injected,
            "faults_by_kind": dict(self.faults_by_kind),
            "responses_by_status": dict(self.responses_by_status),
        }


class Metrics:
    """Request counters (thread-safe; the event loop writes, anyone reads).

    The top-level counters are the service's routes only; the S3 mode's requests are
    counted apart, under ``s3`` (:class:`S3Metrics`): they never take the service's slots.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.s3 = S3Metrics()
        #: (arrived, answered) of the newest service requests, ``time.monotonic()`` seconds
        #: (the system's monotonic clock: comparable with other processes' on this host)
        self.flight_log: deque[tuple[float, float]] = deque(maxlen=FLIGHT_LOG_SIZE)
        self._reset_locked()

    def _reset_locked(self) -> None:
        self.requests_total = 0
        self.max_in_flight = self.in_flight
        self.bytes_sent = 0
        self.faults_injected = 0
        self.refused_over_limit = 0
        self.range_requests = 0
        self.requests_by_endpoint: dict[str, int] = defaultdict(int)
        self.faults_by_kind: dict[str, int] = defaultdict(int)
        self.responses_by_status: dict[str, int] = defaultdict(int)
        self.max_in_flight_by_address: dict[str, int] = defaultdict(int)
        self.flight_log.clear()
        self.s3.reset()

    def reset(self) -> None:
        """Zero the counters; ``in_flight`` is a live gauge and ``max_in_flight`` restarts
        from it."""
        with self._lock:
            self._reset_locked()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_total": self.requests_total,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "bytes_sent": self.bytes_sent,
                "faults_injected": self.faults_injected,
                "refused_over_limit": self.refused_over_limit,
                "range_requests": self.range_requests,
                "requests_by_endpoint": dict(self.requests_by_endpoint),
                "faults_by_kind": dict(self.faults_by_kind),
                "responses_by_status": dict(self.responses_by_status),
                "max_in_flight_by_address": dict(self.max_in_flight_by_address),
                "s3": self.s3.snapshot(),
            }

    def flights(self) -> dict[str, Any]:
        """When each logged service request arrived and was answered (``time.monotonic()``
        seconds), and the clock now: what a benchmark needs to see idle slots over time."""
        with self._lock:
            log = list(self.flight_log)
        return {
            "now": time.monotonic(),
            "in_flight": self.in_flight,
            "arrived": [a for a, _ in log],
            "answered": [b for _, b in log],
        }

    def _counters(self, s3: bool) -> Any:
        return self.s3 if s3 else self

    def add(self, name: str, amount: int = 1, s3: bool = False) -> None:
        with self._lock:
            target = self._counters(s3)
            setattr(target, name, getattr(target, name) + amount)

    def answered(self, arrived: float) -> None:
        """A service request that arrived at ``arrived`` (``time.monotonic()``) is answered:
        out of flight, and logged for :meth:`flights`."""
        answered = time.monotonic()
        with self._lock:
            self.in_flight -= 1
            self.flight_log.append((arrived, answered))

    def fault(self, kind: str, s3: bool = False) -> None:
        with self._lock:
            target = self._counters(s3)
            target.faults_injected += 1
            target.faults_by_kind[kind] += 1

    def status(self, status: int, s3: bool = False) -> None:
        with self._lock:
            self._counters(s3).responses_by_status[str(status)] += 1

    def enter_s3(self) -> None:
        """Count an S3 request in flight (no limit: S3 is built for parallel reads)."""
        with self._lock:
            s3 = self.s3
            s3.requests += 1
            s3.in_flight += 1
            s3.max_in_flight = max(s3.max_in_flight, s3.in_flight)


@dataclass(eq=False)
class Flight:
    """One service request being handled."""

    request: web.BaseRequest
    address: str
    refused: bool = False
    done: bool = False
    #: an S3-mode request: counted under ``s3``, never limited
    s3: bool = False
    #: when it arrived (``time.monotonic()``)
    arrived: float = field(default_factory=time.monotonic)

    def client_gone(self, deep: bool = False) -> bool:
        """True once the client has hung up. ``deep`` also peeks at the socket, to catch a
        close whose EOF the event loop has not processed yet."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            return True
        if not deep:
            return False
        sock = transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            # asyncio only exposes a TransportSocket: peek through a duplicate descriptor.
            with socket.fromfd(sock.fileno(), sock.family, sock.type) as dup:
                return dup.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False  # open, nothing to read: still waiting for its answer
        except ConnectionError:
            return True  # reset by the peer
        except (OSError, ValueError):
            return False


class ServiceState:
    """Knobs, fault generator, metrics and the requests in flight of one emulator."""

    def __init__(self, knobs: Knobs) -> None:
        self._knobs = knobs
        self._knobs_lock = threading.Lock()
        self.faults = FaultInjector(knobs.seed)
        self.metrics = Metrics()
        self._flights: dict[str, list[Flight]] = defaultdict(list)

    @property
    def knobs(self) -> Knobs:
        return self._knobs

    def configure(self, **changes: Any) -> Knobs:
        with self._knobs_lock:
            new = self._knobs.replace(**changes)
            self._knobs = new
            if "seed" in changes:
                self.faults.reseed(new.seed)
        return new

    # Called on the event loop only, but metrics are read from other threads.
    def enter(self, request: web.BaseRequest, endpoint: str) -> Flight:
        """Count a request in flight (before any await); refuse a service request over the
        limit. S3-mode requests are counted apart and never refused."""
        m = self.metrics
        if endpoint == S3_ENDPOINT:
            m.enter_s3()
            return Flight(request, request.remote or "?", s3=True)
        # A request whose client hung up (timed out during a stall, say) is no longer in
        # flight from anyone's point of view: stop counting it now, not when its handler ends.
        for flights in list(self._flights.values()):
            for old in list(flights):
                if old.client_gone():
                    self.leave(old)
        address = request.remote or "?"
        flight = Flight(request, address)
        mine = self._flights[address]
        if len(mine) >= self._knobs.max_concurrency:
            # About to refuse: make sure the requests we count are really still wanted (a
            # client that timed out and retried at once must not be refused for its ghost).
            for old in list(mine):
                if old.client_gone(deep=True):
                    self.leave(old)
            mine = self._flights[address]
        mine.append(flight)
        with m._lock:
            m.requests_total += 1
            m.requests_by_endpoint[endpoint] += 1
            m.in_flight += 1
            m.max_in_flight = max(m.max_in_flight, m.in_flight)
            m.max_in_flight_by_address[address] = max(
                m.max_in_flight_by_address[address], len(mine)
            )
            if len(mine) > self._knobs.max_concurrency:
                flight.refused = True
                m.refused_over_limit += 1
        return flight

    def leave(self, flight: Flight) -> None:
        if flight.done:
            return
        flight.done = True
        if flight.s3:
            self.metrics.add("in_flight", -1, s3=True)
            return
        mine = self._flights.get(flight.address)
        if mine is not None and flight in mine:
            mine.remove(flight)
            if not mine:
                del self._flights[flight.address]
        self.metrics.answered(flight.arrived)
