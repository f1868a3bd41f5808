"""The HTTP layer of the service client: settings, shared sessions, error classification,
answer bodies (memory or file sinks) and wire-level checks (Content-Length, Content-Range).

Nothing here knows what a request means; :class:`ps1dask.client.service.PS1Service` does.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

import dask.config
import requests
import requests.adapters
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError, SSLError

from ps1dask import config
from ps1dask.client.retry import RetryPolicy, _seconds, parse_retry_after
from ps1dask.exceptions import (
    BadFITSError,
    BadImageError,
    BadRequestError,
    BadResponseError,
    InvalidParameterError,
    NotFoundError,
    ServiceConnectionError,
    ServiceError,
    ServiceHTTPError,
    ServiceTimeoutError,
    ServiceUnavailableError,
    TruncatedResponseError,
)

#: Bytes of an error answer kept for the error message.
ERROR_BODY_LIMIT = 64 * 1024
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


# --- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HTTPSettings:
    """Timeouts, retry policy and identity of a :class:`PS1Service` (``ps1dask.http.*``)."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    user_agent: str = "ps1dask"
    chunk_size: int = 1 << 20  # bytes per read of a streamed answer (whole files run to 100 MB)

    @classmethod
    def from_config(cls) -> HTTPSettings:
        get = dask.config.get
        connect = _seconds(get("ps1dask.http.connect-timeout"), "connect-timeout")
        read = _seconds(get("ps1dask.http.read-timeout"), "read-timeout")
        if connect <= 0 or read <= 0:
            raise InvalidParameterError("ps1dask.http.connect-timeout and read-timeout must be > 0")
        return cls(
            connect_timeout=connect,
            read_timeout=read,
            retry=RetryPolicy.from_config(),
            user_agent=str(get("ps1dask.http.user-agent")),
        )

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


# --- sessions ----------------------------------------------------------------------------

_SESSIONS_LOCK = threading.Lock()
_SESSIONS: dict[tuple[int, str, int], requests.Session] = {}


def new_session(pool_size: int) -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(
        pool_connections=4, pool_maxsize=max(pool_size, 10), max_retries=0, pool_block=False
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def shared_session(url: str | None = None, pool_size: int = 10) -> requests.Session:
    """A ``requests.Session`` shared by every service of this process for ``url``.

    Use it to build cheap per-task services on a dask worker that reuse connections:
    ``PS1Service(url, session=shared_session(url))``. Never close it.
    """
    key = (os.getpid(), config.service_url(url), max(pool_size, 10))
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = new_session(pool_size)
        return session


# --- classification ----------------------------------------------------------------------


def is_retryable(error: BaseException) -> bool:
    """Whether a failed attempt is worth another try (see the client's retry rules)."""
    if isinstance(error, ServiceUnavailableError):
        return True
    if isinstance(error, ServiceHTTPError):
        return error.status >= 500 or error.status in (408, 429)
    return isinstance(
        error,
        (
            ServiceConnectionError,
            ServiceTimeoutError,
            TruncatedResponseError,
            BadFITSError,
            BadImageError,
            BadResponseError,
        ),
    )


def transport_error(err: requests.RequestException, url: str) -> ServiceError:
    cause = err.args[0] if err.args else None
    if isinstance(err, requests.Timeout) or isinstance(cause, ReadTimeoutError):
        return ServiceTimeoutError(f"timed out: {err}", url)
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return TruncatedResponseError(f"answer broken off: {err}", url)
    if isinstance(err, requests.exceptions.ContentDecodingError):
        return BadResponseError(f"undecodable answer: {err}", url)
    if isinstance(err, requests.ConnectionError):
        return ServiceConnectionError(f"connection failed: {err}", url)
    return ServiceError(f"request failed: {err}", url)


def _server_message(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace")
    text = " ".join(_TAG.sub(" ", text).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def status_error(
    status: int, reason: str, body: bytes, headers: Mapping[str, str], url: str
) -> ServiceError:
    message = _server_message(body) or reason or "no message"
    text = f"HTTP {status} {reason}: {message}"
    if status == 400:
        return BadRequestError(text, status, url)
    if status == 404:
        return NotFoundError(text, status, url)
    err: ServiceHTTPError
    if status in (429, 503):
        err = ServiceUnavailableError(text, status, url)
    else:
        err = ServiceHTTPError(text, status, url)
    err.retry_after = parse_retry_after(headers.get("Retry-After"))  # type: ignore[attr-defined]
    return err


# --- body sinks ----------------------------------------------------------------------------


def read_whole_body(resp: requests.Response) -> bytes:
    """The whole body of a streamed answer, in one read into one new bytes object.

    ``iter_content`` reads a body chunk by chunk, each chunk a new object (two copies of it
    on the way up from the socket), and the chunks are then joined: three copies of every
    byte, each in fresh memory. Read at once, the bytes go from the socket straight into
    one object of the body's size. Errors become what ``iter_content`` raises for them.
    """
    try:
        data = resp.raw.read(decode_content=True)
    except ProtocolError as err:
        raise requests.exceptions.ChunkedEncodingError(err) from err
    except DecodeError as err:
        raise requests.exceptions.ContentDecodingError(err) from err
    except ReadTimeoutError as err:
        raise requests.exceptions.ConnectionError(err) from err
    except SSLError as err:
        raise requests.exceptions.SSLError(err) from err
    return bytes(data) if data is not None else b""


class MemorySink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def start(self) -> None:
        self.chunks = []

    def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def value(self) -> bytes:
        return b"".join(self.chunks)


class FileSink:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def start(self) -> None:
        self.handle.seek(0)
        self.handle.truncate()

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)

    def value(self) -> bytes:
        return b""


@dataclass
class Answer:
    status: int
    headers: requests.structures.CaseInsensitiveDict[str]
    body: bytes
    url: str


# --- wire checks ----------------------------------------------------------------------------


def wire_bytes(resp: requests.Response) -> int:
    try:
        return int(resp.raw.tell())
    except Exception:  # noqa: BLE001 - a non-urllib3 transport
        return 0


def check_length(resp: requests.Response, url: str) -> None:
    """The body must be as long as Content-Length says (bytes on the wire)."""
    announced = resp.headers.get("Content-Length")
    if announced is None or not announced.strip().isdigit():
        return
    received = wire_bytes(resp)
    if received != int(announced):
        raise TruncatedResponseError(
            f"answer has {received} bytes, Content-Length announced {announced}", url
        )


def check_content_range(
    value: str | None, start: int, stop: int, url: str
) -> tuple[int, int, int | None]:
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        raise BadResponseError(f"206 answer without a usable Content-Range ({value!r})", url)
    first, last = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    clipped_at_end = total is not None and last == total - 1 and last < stop - 1
    if first != start or not (last == stop - 1 or clipped_at_end) or last < first:
        raise BadResponseError(
            f"Content-Range {value!r} does not match the requested bytes {start}-{stop - 1}", url
        )
    return first, last, total
