"""Request counters of the service client: requests, bytes, retries, statuses, time.

:class:`RequestStats` is thread-safe (one per :class:`~ps1dask.client.PS1Service`, shared
by all threads using it), picklable (the lock is not pickled) and mergeable, so a task on a
dask worker can return ``stats.snapshot()`` and the job layer can add them up::

    total = RequestStats()
    for snap in results:
        total.merge(snap)
    print(total.summary())
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

#: Plain counters (ints) of a snapshot.
_COUNTS = ("calls", "requests", "responses", "retries", "failures", "bytes")
#: Accumulated seconds of a snapshot.
_TIMES = ("wait_seconds", "flight_seconds", "backoff_seconds")
#: Keyed counters of a snapshot (dict of str -> int).
_KEYED = ("by_status", "by_kind", "errors", "retried_errors")


class RequestStats:
    """Thread-safe request/bytes/retry counters.

    Attributes (read them through :meth:`snapshot` for a consistent view):

    - ``calls``: logical calls (one ``cutout_fits`` = one call, whatever its retries);
    - ``requests``: HTTP requests sent (attempts, retries included);
    - ``responses``: HTTP answers received (any status);
    - ``retries``: attempts that failed transiently and were retried;
    - ``failures``: calls that raised after their last attempt (or a non-retryable error);
    - ``bytes``: body bytes received from the wire;
    - ``wait_seconds``: time spent waiting for a throttle slot;
    - ``flight_seconds``: time spent holding a slot (request in flight);
    - ``backoff_seconds``: time slept between attempts (never while holding a slot);
    - ``by_status``: answers per HTTP status (keys are strings, e.g. ``"200"``);
    - ``by_kind``: requests per kind (``list``, ``list-many``, ``cutout``, ``image``,
      ``download``, ``head``, ``range``);
    - ``errors``: failed attempts per error class name;
    - ``retried_errors``: retried attempts per error class name.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset_unlocked()

    def _reset_unlocked(self) -> None:
        self.calls = 0
        self.requests = 0
        self.responses = 0
        self.retries = 0
        self.failures = 0
        self.bytes = 0
        self.wait_seconds = 0.0
        self.flight_seconds = 0.0
        self.backoff_seconds = 0.0
        self.by_status: Counter[str] = Counter()
        self.by_kind: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.retried_errors: Counter[str] = Counter()

    def reset(self) -> None:
        with self._lock:
            self._reset_unlocked()

    # -- recording (called by PS1Service) ------------------------------------------------

    def record_call(self) -> None:
        with self._lock:
            self.calls += 1

    def record_request(self, kind: str, wait_seconds: float = 0.0) -> None:
        with self._lock:
            self.requests += 1
            self.by_kind[kind] += 1
            self.wait_seconds += wait_seconds

    def record_response(self, status: int, nbytes: int, flight_seconds: float) -> None:
        with self._lock:
            self.responses += 1
            self.by_status[str(status)] += 1
            self.bytes += nbytes
            self.flight_seconds += flight_seconds

    def record_transfer(self, nbytes: int, flight_seconds: float) -> None:
        """Bytes and time of an attempt that broke off without a complete answer."""
        with self._lock:
            self.bytes += nbytes
            self.flight_seconds += flight_seconds

    def record_error(self, error: BaseException) -> None:
        with self._lock:
            self.errors[type(error).__name__] += 1

    def record_retry(self, error: BaseException | None, sleep_seconds: float) -> None:
        with self._lock:
            self.retries += 1
            self.backoff_seconds += sleep_seconds
            if error is not None:
                self.retried_errors[type(error).__name__] += 1

    def record_failure(self) -> None:
        with self._lock:
            self.failures += 1

    # -- reading, merging, pickling ------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A consistent plain-dict copy (ints, floats and dicts of str -> int)."""
        with self._lock:
            out: dict[str, Any] = {name: getattr(self, name) for name in _COUNTS + _TIMES}
            for name in _KEYED:
                out[name] = dict(getattr(self, name))
        return out

    def merge(self, other: RequestStats | Mapping[str, Any]) -> RequestStats:
        """Add another stats object (or a :meth:`snapshot` dict) into this one; returns self."""
        snap = other.snapshot() if isinstance(other, RequestStats) else other
        with self._lock:
            for name in _COUNTS + _TIMES:
                setattr(self, name, getattr(self, name) + snap.get(name, 0))
            for name in _KEYED:
                getattr(self, name).update(snap.get(name, {}))
        return self

    @classmethod
    def from_snapshot(cls, snap: Mapping[str, Any]) -> RequestStats:
        return cls().merge(snap)

    def __add__(self, other: RequestStats | Mapping[str, Any]) -> RequestStats:
        return RequestStats().merge(self).merge(other)

    def __getstate__(self) -> dict[str, Any]:
        return self.snapshot()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._reset_unlocked()
        self.merge(state)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestStats):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    def summary(self) -> str:
        """One line for logs and job summaries."""
        s = self.snapshot()
        mb = s["bytes"] / 1e6
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(s["by_status"].items()))
        text = (
            f"{s['calls']} calls, {s['requests']} requests ({s['retries']} retries, "
            f"{s['failures']} failed), {mb:.1f} MB; in flight {s['flight_seconds']:.1f} s, "
            f"waiting for a slot {s['wait_seconds']:.1f} s, backing off "
            f"{s['backoff_seconds']:.1f} s"
        )
        return f"{text}; status {statuses}" if statuses else text

    def __repr__(self) -> str:
        return f"RequestStats({self.summary()})"
