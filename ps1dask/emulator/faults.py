"""The emulator's knobs (latency, bandwidth, faults, limits) and its seeded fault generator.

Pure Python, no I/O: :mod:`ps1dask.emulator.app` applies what these decide.

Fault kinds, drawn once per accepted service request (``/_emulator/*`` is never faulted):

``503``
    HTTP 503 Service Unavailable with ``Retry-After`` (S3 mode: 503 ``SlowDown``).
``429``
    HTTP 429 Too Many Requests with ``Retry-After`` (S3 mode, which has no 429: 503
    ``SlowDown``).
``reset``
    the TCP connection is reset (RST) before any byte of the answer.
``truncate``
    the full ``Content-Length`` is announced, part of the body sent, then the connection
    closed.
``stall``
    the request is held ``stall_seconds`` before it is answered normally (a client with a
    shorter read timeout sees a timeout). A stalled request whose client hangs up stops
    counting as in flight.
``500``
    HTTP 500 Internal Server Error (S3 mode: 500 ``InternalError``). Not drawn unless asked
    for: the default kinds are :data:`DEFAULT_FAULT_KINDS`.

S3 requests (``/stpubdata/...``) get the same faults, answered in S3's XML.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
import random
import reprlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ps1dask.exceptions import InvalidParameterError

#: Every fault kind, in a fixed order (the seeded draw indexes into the configured subset).
FAULT_KINDS: tuple[str, ...] = ("503", "429", "reset", "truncate", "stall", "500")
#: Kinds drawn unless told otherwise (``500`` came later: the default draws stay as they were).
DEFAULT_FAULT_KINDS: tuple[str, ...] = ("503", "429", "reset", "truncate", "stall")


def _parse_kinds(kinds: str | Iterable[str | int]) -> tuple[str, ...]:
    if not isinstance(kinds, (str, list, tuple, set, frozenset)):
        raise InvalidParameterError(
            f"fault_kinds={reprlib.repr(kinds)}: give a list or comma-separated text"
        )
    items = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    names = [str(k).strip().lower() for k in items if str(k).strip()]
    unknown = [k for k in names if k not in FAULT_KINDS]
    if unknown:
        raise InvalidParameterError(
            f"fault kinds {reprlib.repr(unknown)} unknown; choose from {', '.join(FAULT_KINDS)}"
        )
    # Keep FAULT_KINDS order so the same set always draws the same way.
    return tuple(k for k in FAULT_KINDS if k in names)


def _number(name: str, value: Any, lo: float = 0.0, hi: float = math.inf) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidParameterError(f"{name}={reprlib.repr(value)} is not a number") from None
    if not math.isfinite(out) or not lo <= out <= hi:
        raise InvalidParameterError(f"{name}={reprlib.repr(value)} must be in [{lo:g}, {hi:g}]")
    return out


#: Upper bound of each numeric knob (the lower bound is 0, or 1 for max_concurrency).
KNOB_LIMITS: dict[str, float] = {
    "latency": 600.0,
    "bandwidth": 1e6,
    "work_per_mpix": 600.0,
    "retry_after": 3600.0,
    "stall_seconds": 3600.0,
    "body_timeout": 600.0,
    "max_concurrency": 10_000.0,
}


def _bounded(name: str, value: Any, lo: float = 0.0) -> float:
    return _number(name, value, lo, KNOB_LIMITS[name])


@dataclass(frozen=True)
class Knobs:
    """Behaviour of the emulated service; change with ``Emulator.configure(**knobs)``.

    latency
        seconds from a service request to the first byte of its answer; the server works on
        the answer meanwhile (work that takes longer adds to it), as a real service's time
        to first byte includes its own work.
    bandwidth
        MB/s (10**6 bytes) per response body, sent in chunks with sleeps; None = unlimited.
    work_per_mpix
        extra server-side seconds per million pixels a ``fitscut.cgi`` request cuts
        (emulates slow decompression on the real service); 0 = none.
    fault_rate
        probability that a service request gets a fault.
    fault_kinds
        which faults to draw from (subset of ``503, 429, reset, truncate, stall, 500``;
        default all but ``500``).
    retry_after
        seconds announced in ``Retry-After`` (503/429 faults and over-limit refusals);
        written as an integer when whole, else as a decimal (``0.2``).
    stall_seconds
        how long a ``stall`` fault holds a request.
    seed
        seed of the fault generator (setting it restarts the sequence).
    max_concurrency
        service requests one client address may have in flight; one more is refused at
        once with 503 (counted in ``refused_over_limit``).
    body_timeout
        seconds a client has to send a POST body; a slower one gets 408. A request counts
        as in flight only once its body is read.
    s3_missing_fraction
        fraction (0..1) of the S3 mode's keys absent from the bucket: a key is absent when a
        hash of it falls below this value (:func:`s3_key_missing`), so the same keys are
        missing on every run, and raising the fraction only removes more. Absent keys answer
        ``NoSuchKey`` and are not listed; the service path still serves the file.

    Every value is bounded (:data:`KNOB_LIMITS`): the knobs are reachable over HTTP, and a
    latency of 1e300 s would hang every request.
    """

    latency: float = 0.0
    bandwidth: float | None = None
    work_per_mpix: float = 0.0
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = DEFAULT_FAULT_KINDS
    retry_after: float = 1.0
    stall_seconds: float = 30.0
    seed: int | None = 0
    max_concurrency: int = 10
    body_timeout: float = 10.0
    s3_missing_fraction: float = 0.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "latency", _bounded("latency", self.latency))
        bw = None if self.bandwidth is None else _bounded("bandwidth", self.bandwidth)
        set_(self, "bandwidth", bw or None)  # 0 means unlimited
        set_(self, "work_per_mpix", _bounded("work_per_mpix", self.work_per_mpix))
        set_(self, "fault_rate", _number("fault_rate", self.fault_rate, 0.0, 1.0))
        set_(self, "fault_kinds", _parse_kinds(self.fault_kinds))
        if self.fault_rate > 0 and not self.fault_kinds:
            raise InvalidParameterError("fault_rate > 0 needs at least one fault kind")
        set_(self, "retry_after", _bounded("retry_after", self.retry_after))
        set_(self, "stall_seconds", _bounded("stall_seconds", self.stall_seconds))
        set_(self, "body_timeout", _bounded("body_timeout", self.body_timeout))
        set_(
            self,
            "s3_missing_fraction",
            _number("s3_missing_fraction", self.s3_missing_fraction, 0.0, 1.0),
        )
        if not self.body_timeout > 0:
            raise InvalidParameterError(f"body_timeout={self.body_timeout!r} must be > 0")
        if self.seed is not None:
            # JSON may bring anything here: only integers (or their text) are seeds.
            if isinstance(self.seed, bool) or not isinstance(self.seed, (numbers.Integral, str)):
                raise InvalidParameterError(f"seed={reprlib.repr(self.seed)} is not an integer")
            try:
                seed = int(str(self.seed).strip()[:30])  # 30 digits: past any valid seed
            except ValueError:
                raise InvalidParameterError(
                    f"seed={reprlib.repr(self.seed)} is not an integer"
                ) from None
            if not 0 <= seed < 2**64:
                raise InvalidParameterError(f"seed={reprlib.repr(self.seed)} must be in [0, 2**64)")
            set_(self, "seed", seed)
        limit = _bounded("max_concurrency", self.max_concurrency, 1.0)
        if not limit.is_integer():
            raise InvalidParameterError(
                f"max_concurrency={reprlib.repr(self.max_concurrency)} is not an integer"
            )
        set_(self, "max_concurrency", int(limit))

    def replace(self, **changes: Any) -> Knobs:
        """A copy with some knobs changed (validated); unknown names raise."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise InvalidParameterError(
                f"unknown emulator setting(s) {unknown}; known: {sorted(names)}"
            )
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["fault_kinds"] = list(self.fault_kinds)
        return out

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Knobs:
        return cls().replace(**dict(values))


def s3_key_missing(key: str, fraction: float) -> bool:
    """True if the S3 mode hides ``key`` (without a leading slash) at this missing fraction.

    A fixed hash of the key alone (not the seed): the same keys are missing on every run,
    and the keys missing at a fraction are also missing at any larger one.
    """
    if fraction <= 0:
        return False
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def format_retry_after(seconds: float) -> str:
    """``Retry-After`` value: ``1`` for whole seconds, ``0.25`` otherwise."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


@dataclass
class FaultInjector:
    """Seeded per-request fault draws (thread-safe).

    Every draw consumes exactly two numbers of a ``random.Random(seed)``, whatever the
    knobs, so a given seed gives the same sequence of decisions for the same sequence of
    requests.
    """

    seed: int | None = 0
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self.seed = seed
            self._rng = random.Random(seed)

    def draw(self, rate: float, kinds: tuple[str, ...]) -> str | None:
        """The fault for the next request, or None."""
        with self._lock:
            u, v = self._rng.random(), self._rng.random()
        if rate <= 0 or not kinds or u >= rate:
            return None
        return kinds[min(int(v * len(kinds)), len(kinds) - 1)]
