"""The public S3 copy of the PS1 images as a byte source (what the ``s3`` strategy reads).

The bucket (``stpubdata``, anonymous) holds every service file under a prefix:
``s3://stpubdata/panstarrs/ps1/public`` + ``/rings.v3.skycell/1784/059/...stk.r.unconv.fits``.
:class:`S3Source` is the small picklable description of such a source (bucket, prefix,
endpoint, limits, what a probe measured); it travels to the workers inside the strategy, so
that they need neither the client's dask config nor a network look-up.

Reads are anonymous byte-range GETs through obstore (Rust ``object_store``). Measured on the
same 2,000 tile ranges of 10 kB against a loopback S3 server with 30 ms first-byte latency
(50 files, 40 ranges each, 2 cores): obstore ``get_range`` on 32 threads 2.6 s (766
ranges/s; 200 threads: 2,050/s), obstore ``get_ranges`` per file 0.74 s (2,700/s); s3fs
``cat_ranges`` with 32 or 200 at once 10.5 s / 8.8 s (190-230 ranges/s, CPU-bound in
botocore: ~4 ms of CPU per request). obstore it is, about ten times s3fs.

Limits and retries are ours, not the library's: every request is one attempt on this
process's pool of ``ps1dask.s3.max-concurrency`` threads (so that is the most S3 requests in
flight per process, whatever the number of tasks), obstore's own retries are off, and
transient failures (503 SlowDown, 500, resets, timeouts) are retried with backoff by
:func:`ps1dask.client.retry.retry_call`, the one retry policy of ps1dask (``ps1dask.http.*``),
sleeping outside the pool. S3 requests never take the service's request slots.
"""

from __future__ import annotations

import datetime
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import dask.config
import obstore
import obstore.exceptions
from obstore.store import S3Store

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.client.retry import RetryPolicy, _seconds, retry_call
from ps1dask.client.stats import RequestStats
from ps1dask.client.transport import is_retryable
from ps1dask.exceptions import (
    InvalidParameterError,
    NotFoundError,
    S3SourceError,
    ServiceConnectionError,
    ServiceError,
    ServiceHTTPError,
    ServiceTimeoutError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    from obstore.store import ClientConfig

__all__ = ["S3Source"]

_STATUS = re.compile(r"status code: (\d{3})")


@dataclass(frozen=True)
class S3Source:
    """Where and how to read the S3 copy of the PS1 files (see the module notes).

    ``bucket`` and ``prefix`` come from ``ps1dask.s3.url``; ``endpoint`` is None for AWS or an
    http(s) URL (path-style requests); ``max_concurrency`` requests in flight per process;
    ``latency_s`` (seconds to first byte) and ``bandwidth_bps`` (bytes/s of one answer) feed
    the cost model, measured by :meth:`probe`.
    """

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str = "us-east-1"
    max_concurrency: int = 64
    fallback_to_service: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    latency_s: float = 0.05
    bandwidth_bps: float = 50e6
    #: The job this source serves (set when the job starts): what a process learns of the
    #: bucket (missing keys) holds for one job; the next one looks again.
    job: str = ""

    @classmethod
    def from_config(cls, endpoint: str | None = None) -> S3Source:
        """The source configured under ``ps1dask.s3.*`` (``endpoint`` overrides
        ``ps1dask.s3.endpoint-url``); timeouts and retries as ``ps1dask.http.*``."""
        get = dask.config.get
        url = str(get("ps1dask.s3.url"))
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise S3SourceError(
                f"ps1dask.s3.url={url!r} is not an s3://bucket/prefix URL "
                "(default s3://stpubdata/panstarrs/ps1/public)"
            )
        chosen = endpoint if endpoint is not None else get("ps1dask.s3.endpoint-url")
        if chosen is not None:
            chosen = str(chosen).rstrip("/")
            ep = urlsplit(chosen)
            if ep.scheme not in ("http", "https") or not ep.netloc:
                raise S3SourceError(
                    f"S3 endpoint {chosen!r} (--s3-endpoint, s3_endpoint=, "
                    "ps1dask.s3.endpoint-url) is not an http(s) URL"
                )
        limit = int(get("ps1dask.s3.max-concurrency"))
        if limit < 1:
            raise InvalidParameterError(f"ps1dask.s3.max-concurrency must be >= 1, got {limit}")
        return cls(
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            endpoint=chosen,
            region=str(get("ps1dask.s3.region")),
            max_concurrency=limit,
            fallback_to_service=bool(get("ps1dask.s3.fallback-to-service")),
            connect_timeout=_seconds(get("ps1dask.http.connect-timeout"), "connect-timeout"),
            read_timeout=_seconds(get("ps1dask.http.read-timeout"), "read-timeout"),
            retry=RetryPolicy.from_config(),
        )

    # -- naming ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def ident(self) -> str:
        """The source in one string (URL and endpoint): a key for per-process caches."""
        return f"{self.url} [{self.endpoint or 'AWS'}]"

    @property
    def where(self) -> str:
        """The source for messages: its URL and endpoint."""
        return f"{self.url} at {self.endpoint or 'AWS'}"

    def path(self, filename: str) -> str:
        """The key of a service file below the prefix (its path without the leading /)."""
        name = filename.strip()
        if not name or "://" in name:
            raise InvalidParameterError(f"give the service file name, not {filename!r}")
        return name.lstrip("/")

    def address(self, filename: str) -> str:
        """A file's full address, for messages and caches."""
        return f"{self.url}/{self.path(filename)} [{self.endpoint or 'AWS'}]"

    # -- reads ----------------------------------------------------------------------------

    def read_range(self, filename: str, start: int, stop: int, stats: RequestStats) -> memoryview:
        """Bytes ``[start, stop)`` of a file (fewer at its end), retried with backoff."""
        return self.read_ranges(filename, [(start, stop)], stats)[0]

    def read_ranges(
        self, filename: str, ranges: Sequence[tuple[int, int]], stats: RequestStats
    ) -> list[memoryview]:
        """Bytes of each ``[start, stop)`` range of a file, all requested at once (views of
        the buffers obstore received into: not copied).

        One GET per range (merge neighbouring ranges before: the ``s3`` strategy passes the
        tile spans :meth:`~ps1dask.fetch.tiles.CompressedImageIndex.row_byte_ranges`
        merged). A key missing from the bucket raises
        :class:`~ps1dask.exceptions.NotFoundError`; other failures the
        :class:`~ps1dask.exceptions.ServiceError` of their kind once retries are spent.
        """
        client = _client(self)
        path = self.path(filename)
        shown = self.address(filename)
        firsts = [client.pool.submit(client.get, path, a, b, stats, shown) for a, b in ranges]
        out = []
        for first, (a, b) in zip(firsts, ranges):
            pending: list[Future[memoryview]] = [first]

            def attempt(
                a: int = a, b: int = b, pending: list[Future[memoryview]] = pending
            ) -> memoryview:
                future = (
                    pending.pop()
                    if pending
                    else client.pool.submit(client.get, path, a, b, stats, shown)
                )
                return future.result()

            def on_retry(error: BaseException, attempt_no: int, sleep: float) -> None:
                stats.record_retry(error, sleep)

            stats.record_call()
            try:
                out.append(
                    retry_call(
                        attempt,
                        policy=self.retry,
                        retryable=is_retryable,
                        on_retry=on_retry,
                        describe=f"S3 GET {shown} bytes {a}-{b - 1}",
                    )
                )
            except BaseException:
                stats.record_failure()
                for rest in firsts:
                    rest.cancel()
                raise
        return out

    # -- presence (per process) -------------------------------------------------------------

    def known_missing(self, filename: str) -> bool:
        """Whether this process already found the file missing from the bucket in this job."""
        with _MISSING_LOCK:
            return (self.job, self.address(filename)) in _MISSING

    def mark_missing(self, filename: str) -> None:
        """Remember that the bucket has no such file: one failed GET per file, process and
        job (instead of a HEAD before every file: the first read of a file that is there is
        needed anyway)."""
        with _MISSING_LOCK:
            if len(_MISSING) >= _MISSING_MAX:
                _MISSING.clear()
            _MISSING.add((self.job, self.address(filename)))

    # -- job start --------------------------------------------------------------------------

    def probe(self) -> S3Source:
        """Check that the endpoint answers and has the bucket, and time it: a copy whose
        ``latency_s`` is the time of one listing of the prefix's top level (``delimiter=/``:
        a few entries, whatever the bucket holds). Raises
        :class:`~ps1dask.exceptions.S3SourceError` with what to check otherwise, after at
        most 3 quick attempts (this runs when the job starts)."""
        store = _new_store(self)

        def listing() -> float:
            t0 = time.perf_counter()
            try:
                obstore.list_with_delimiter(store)
            except Exception as err:
                raise _service_error(err, self.url) from err
            return time.perf_counter() - t0

        # a few quick attempts: a 503 at the start must not stop a job, and an endpoint
        # that is not there must be said soon
        quick = replace(
            self.retry,
            attempts=min(self.retry.attempts, 3),
            backoff_max=min(self.retry.backoff_max, 2.0),
        )
        try:
            latency = retry_call(
                listing, policy=quick, retryable=is_retryable, describe=f"S3 listing {self.where}"
            )
        except ServiceError as mapped:
            err = mapped.__cause__ or mapped
            if isinstance(mapped, NotFoundError):
                reason = "it has no such bucket"
            elif isinstance(mapped, ServiceHTTPError):
                reason = f"HTTP {mapped.status}"
            else:
                reason = "it does not answer"
            raise S3SourceError(
                f"cannot read the S3 copy of the PS1 images {self.where}: {reason} "
                f"({_first_line(err)}). Check --s3-endpoint / s3_endpoint= / "
                "ps1dask.s3.endpoint-url and ps1dask.s3.url, or use the service "
                "(--strategy range)"
            ) from None
        return replace(self, latency_s=latency)


# --- per-process clients ------------------------------------------------------------------


def _first_line(err: BaseException) -> str:
    return str(err).split("\n", 1)[0][:300]


def _service_error(err: BaseException, url: str) -> ServiceError:
    """An obstore error as the ps1dask error of the same meaning (so that statuses and
    retries follow the service client's rules)."""
    text = f"S3: {_first_line(err)}"
    if isinstance(err, obstore.exceptions.NotFoundError):
        return NotFoundError(text, 404, url)
    match = _STATUS.search(str(err))
    if match:
        status = int(match.group(1))
        if status == 404:
            return NotFoundError(text, status, url)
        if status in (429, 503):
            return ServiceUnavailableError(text, status, url)
        return ServiceHTTPError(text, status, url)
    if isinstance(err, obstore.exceptions.PermissionDeniedError | PermissionError):
        return ServiceHTTPError(text, 403, url)
    if isinstance(err, obstore.exceptions.GenericError | OSError):
        if "timed out" in text.lower() or "timeout" in text.lower():
            return ServiceTimeoutError(text, url)
        return ServiceConnectionError(text, url)  # resets, refused, broken-off bodies
    return ServiceError(text, url)


def _new_store(source: S3Source) -> S3Store:
    options: ClientConfig = {
        "allow_http": True,
        "connect_timeout": f"{source.connect_timeout}s",
        "timeout": f"{source.read_timeout}s",
        "pool_max_idle_per_host": str(max(source.max_concurrency, 10)),
    }
    kwargs: dict[str, Any] = {}
    if source.endpoint is not None:
        kwargs["endpoint"] = source.endpoint
        kwargs["virtual_hosted_style_request"] = False
    return S3Store(
        source.bucket,
        prefix=source.prefix or None,
        region=source.region,
        skip_signature=True,
        client_options=options,
        # our retry helper retries (module notes); obstore's own retries stay off
        retry_config={
            "max_retries": 0,
            "retry_timeout": datetime.timedelta(seconds=source.read_timeout),
        },
        **kwargs,
    )


class _Client:
    """One process's store and request pool for one source."""

    def __init__(self, source: S3Source) -> None:
        self.store = _new_store(source)
        self.pool = ThreadPoolExecutor(source.max_concurrency, thread_name_prefix="ps1dask-s3")

    def get(self, path: str, start: int, stop: int, stats: RequestStats, shown: str) -> memoryview:
        """One GET attempt (runs on the pool: the pool's size caps requests in flight).

        The answer is a view of the buffer obstore received it into: a dense job reads
        gigabytes, and a copy into ``bytes`` holds the GIL all along (the process's other
        threads, decoding, wait meanwhile)."""
        stats.record_request("s3-range")
        t0 = time.monotonic()
        try:
            data = memoryview(obstore.get_range(self.store, path, start=start, end=stop))
        except Exception as err:  # noqa: BLE001 - mapped to the ServiceError of its kind
            stats.record_transfer(0, time.monotonic() - t0)
            mapped = _service_error(err, shown)
            stats.record_error(mapped)
            raise mapped from None
        stats.record_response(206, len(data), time.monotonic() - t0)
        return data


_CLIENTS: dict[tuple[Any, ...], _Client] = {}
_CLIENTS_LOCK = threading.Lock()
_MISSING: set[tuple[str, str]] = set()
_MISSING_MAX = 100_000
_MISSING_LOCK = threading.Lock()


def _client(source: S3Source) -> _Client:
    key = (
        source.bucket,
        source.prefix,
        source.endpoint,
        source.region,
        source.max_concurrency,
        source.connect_timeout,
        source.read_timeout,
    )
    with _CLIENTS_LOCK:
        found = _CLIENTS.get(key)
        if found is None:
            found = _CLIENTS[key] = _Client(source)
        return found
