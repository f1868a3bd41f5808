"""Request accounting of the emulated service: counters, requests in flight, knobs.

:class:`ServiceState` is what one emulator's middleware reads and writes: the live
:class:`~ps1dask.emulator.faults.Knobs`, the seeded fault generator and the
:class:`Metrics` served at ``/_emulator/metrics``.
"""

from __future__ import annotations

import socket
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ps1dask.emulator.faults import FaultInjector, Knobs
from ps1dask.wire import CUTOUTS_PAGE_PATH, FILES_PREFIX, FITSCUT_PATH, LIST_PATH

EMULATOR_PREFIX = "/_emulator/"
#: Endpoint names of ``requests_by_endpoint``.
ENDPOINTS = (FITSCUT_PATH, LIST_PATH, CUTOUTS_PAGE_PATH, "files", "other")


def endpoint_of(path: str) -> str | None:
    """Metrics name of a request path; None for the emulator's own ``/_emulator/*``."""
    if path.startswith(EMULATOR_PREFIX) or path == EMULATOR_PREFIX.rstrip("/"):
        return None
    if path in (FITSCUT_PATH, LIST_PATH, CUTOUTS_PAGE_PATH):
        return path
    if path.startswith(FILES_PREFIX):
        return "files"
    return "other"


class Metrics:
    """Service request counters (thread-safe; the event loop writes, anyone reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
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
            }

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults_injected += 1
            self.faults_by_kind[kind] += 1

    def status(self, status: int) -> None:
        with self._lock:
            self.responses_by_status[str(status)] += 1


@dataclass(eq=False)
class Flight:
    """One service request being handled."""

    request: web.BaseRequest
    address: str
    refused: bool = False
    done: bool = False

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
        """Count a service request in flight (before any await); refuse it over the limit."""
        m = self.metrics
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
        mine = self._flights.get(flight.address)
        if mine is not None and flight in mine:
            mine.remove(flight)
            if not mine:
                del self._flights[flight.address]
        self.metrics.add("in_flight", -1)
