"""THE retry helper of ps1dask: exponential backoff with full jitter, honouring Retry-After.

Every retried operation in ps1dask goes through :func:`retry_call` (built on tenacity), so
there is one policy to configure and reason about:

- attempt ``n`` (1-based) failed transiently -> sleep a random time, uniform in
  ``[backoff_initial / 2, min(backoff_max, backoff_initial * 2**(n-1))]`` ("full jitter" with a
  floor of half the initial window, so that a persistent failure is never a hot loop);
- if the error carries a server ``retry_after`` (seconds, from a ``Retry-After`` header),
  sleep at least that long (plus up to 10% jitter, to spread a herd of clients); a
  ``retry_after`` above ``retry_after_max`` stops the retries at once: the server asked us
  to go away for longer than we are prepared to wait;
- give up after ``attempts`` attempts (first try included) and re-raise the last error,
  with a note saying how many attempts were made.

Sleeping happens in the caller's thread between attempts: callers must not hold a request
slot while calling :func:`retry_call` (the client acquires its slot inside each attempt).
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import dask.config
import tenacity
from dask.utils import parse_timedelta

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.exceptions import InvalidParameterError

__all__ = [
    "RetryPolicy",
    "parse_retry_after",
    "retry_after_of",
    "retry_call",
]

T = TypeVar("T")
logger = logging.getLogger("ps1dask.client")


def _seconds(value: Any, key: str) -> float:
    try:
        seconds = float(parse_timedelta(value, default="s"))
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{key}={value!r} is not a duration in seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidParameterError(f"{key}={value!r} must be a finite duration >= 0")
    return seconds


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry (see the module docstring)."""

    attempts: int = 6
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 120.0

    def __post_init__(self) -> None:
        if int(self.attempts) != self.attempts or self.attempts < 1:
            raise InvalidParameterError(f"attempts must be an integer >= 1, got {self.attempts!r}")
        for name in ("backoff_initial", "backoff_max", "retry_after_max"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InvalidParameterError(f"{name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def from_config(cls) -> RetryPolicy:
        """The policy configured under ``ps1dask.http.*`` in dask.config."""
        get = dask.config.get
        return cls(
            attempts=int(get("ps1dask.http.attempts")),
            backoff_initial=_seconds(get("ps1dask.http.backoff-initial"), "backoff-initial"),
            backoff_max=_seconds(get("ps1dask.http.backoff-max"), "backoff-max"),
            retry_after_max=_seconds(get("ps1dask.http.retry-after-max"), "retry-after-max"),
        )

    @property
    def min_backoff(self) -> float:
        """The shortest sleep between two attempts without Retry-After."""
        return min(self.backoff_initial, self.backoff_max) / 2.0

    def backoff_window(self, attempt: int) -> tuple[float, float]:
        """(low, high) of the jittered sleep after failed attempt ``attempt`` (1-based)."""
        exponent = min(max(attempt - 1, 0), 62)
        high = min(self.backoff_max, self.backoff_initial * 2.0**exponent)
        return min(self.min_backoff, high), high

    def backoff(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to sleep after failed attempt ``attempt`` (1-based)."""
        rand = rng or random
        low, high = self.backoff_window(attempt)
        sleep = rand.uniform(low, high)
        if retry_after is not None:
            honoured = min(max(retry_after, 0.0), self.retry_after_max)
            sleep = max(sleep, honoured + rand.uniform(0.0, 0.1 * honoured))
        return sleep


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP-date); None if absent
    or unreadable. Dates in the past give 0."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = now or datetime.now(UTC)
        seconds = (when - current).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def retry_after_of(error: BaseException | None) -> float | None:
    """The server-requested delay carried by an error (its ``retry_after`` attribute)."""
    value = getattr(error, "retry_after", None)
    return float(value) if value is not None else None


@dataclass
class _Call:
    """One :func:`retry_call`: what the shared controller's callbacks read from the
    ``RetryCallState`` (its ``args[0]``)."""

    fn: Callable[[], Any]
    policy: RetryPolicy
    retryable: Callable[[BaseException], bool]
    on_retry: Callable[[BaseException, int, float], None] | None
    describe: str
    sleep: Callable[[float], None]
    rng: random.Random | None
    attempts: int = 0

    def attempt(self) -> Any:
        self.attempts += 1
        return self.fn()


def _call_of(retry_state: tenacity.RetryCallState) -> _Call:
    call = retry_state.args[0]
    assert isinstance(call, _Call)
    return call


def _error_of(retry_state: tenacity.RetryCallState) -> BaseException | None:
    return retry_state.outcome.exception() if retry_state.outcome else None


class _RetryIfRetryable(tenacity.retry_base):
    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        error = _error_of(retry_state)
        return error is not None and _call_of(retry_state).retryable(error)


class _Stop(tenacity.stop.stop_base):
    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        policy = _call_of(retry_state).policy
        if retry_state.attempt_number >= policy.attempts:
            return True
        delay = retry_after_of(_error_of(retry_state))
        return delay is not None and delay > policy.retry_after_max


class _Wait(tenacity.wait.wait_base):
    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        call = _call_of(retry_state)
        delay = retry_after_of(_error_of(retry_state))
        return call.policy.backoff(retry_state.attempt_number, delay, call.rng)


def _log_and_sleep(retry_state: tenacity.RetryCallState) -> None:
    call = _call_of(retry_state)
    error = _error_of(retry_state)
    delay = retry_state.upcoming_sleep
    logger.info(
        "retrying %s in %.2f s (attempt %d/%d failed: %s: %s)",
        call.describe,
        delay,
        retry_state.attempt_number,
        call.policy.attempts,
        type(error).__name__,
        error,
    )
    if call.on_retry is not None and error is not None:
        call.on_retry(error, retry_state.attempt_number, delay)
    # the call's own sleep (tests pass a fake clock); the controller's sleep does nothing
    call.sleep(delay)


#: The one tenacity controller of the process, shared by every call and thread (its state
#: is thread-local). Not one per call: each ``Retrying`` holds a ``threading.local`` in a
#: reference cycle, so the cyclic GC frees it, and on CPython 3.11 a ``threading.local``
#: freed by a collection that starts inside ``sys._current_frames()`` deadlocks the thread
#: (the call holds the interpreter's thread-list lock, which the local's clean-up takes
#: again). Dask's worker profiler calls ``sys._current_frames()`` on the worker's event
#: loop every 10 ms: a worker whose loop deadlocked that way hung full test runs.
_RETRYING = tenacity.Retrying(
    stop=_Stop(),
    wait=_Wait(),
    retry=_RetryIfRetryable(),
    before_sleep=_log_and_sleep,
    sleep=lambda _seconds: None,
    reraise=True,
)


def retry_call(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy | None = None,
    retryable: Callable[[BaseException], bool],
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    describe: str = "operation",
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn()`` until it returns, retrying errors for which ``retryable(err)`` is true.

    ``on_retry(error, attempt, sleep_seconds)`` is called before each sleep (for stats);
    every retry is logged on the ``ps1dask.client`` logger at INFO level. Errors that are
    not retryable propagate at once; after the last attempt the last error propagates with a
    note (``add_note``) saying how many attempts were made over how long.
    """
    pol = policy or RetryPolicy.from_config()
    started = time.monotonic()
    call = _Call(fn, pol, retryable, on_retry, describe, sleep, rng)
    try:
        return cast(T, _RETRYING(_Call.attempt, call))
    except BaseException as err:
        if call.attempts > 1 or (retryable(err) and isinstance(err, Exception)):
            elapsed = time.monotonic() - started
            delay = retry_after_of(err)
            if delay is not None and delay > pol.retry_after_max:
                err.add_note(
                    f"gave up: the server asked to retry after {delay:.0f} s, more than "
                    f"ps1dask.http.retry-after-max={pol.retry_after_max:g} s"
                )
            else:
                err.add_note(
                    f"gave up after {call.attempts} attempt(s) over {elapsed:.1f} s "
                    f"(ps1dask.http.attempts={pol.attempts})"
                )
        raise
