"""The PS1 image service client: image lists, cutouts, whole files and byte ranges.

Every HTTP request (GET, POST, HEAD, Range) goes through :meth:`PS1Service._request`, which
for each attempt acquires a throttle slot, sends with ``(connect, read)`` timeouts, reads the
whole body while holding the slot (verifying Content-Length), releases the slot and only
then classifies the answer; transient failures are retried by
:func:`ps1dask.client.retry.retry_call` outside the slot.

Settings come from dask.config (``ps1dask.http.*``) when the service is constructed, and
travel with it when it is pickled to a dask worker (only the URL, the settings and the
throttle's name/limit are pickled; the other side reuses a per-process ``requests.Session``).
"""

from __future__ import annotations

import io
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Self
from urllib.parse import quote, urlencode

import dask.config
import numpy as np
import numpy.typing as npt
import pandas as pd
import requests
import requests.adapters
from astropy.io import fits
from urllib3.exceptions import ReadTimeoutError

from ps1dask import config
from ps1dask.client.listing import (
    assign_positions,
    empty_listing,
    format_positions,
    parse_listing,
)
from ps1dask.client.retry import RetryPolicy, _seconds, parse_retry_after, retry_call
from ps1dask.client.stats import RequestStats
from ps1dask.client.throttle import RequestThrottle
from ps1dask.conventions import linear_pixels, parse_filters, parse_size, parse_types, repair_header
from ps1dask.exceptions import (
    BadFITSError,
    BadImageError,
    BadRequestError,
    BadResponseError,
    InvalidParameterError,
    InvalidPositionError,
    InvalidSkycellError,
    NotFoundError,
    RangeNotSupportedError,
    ServiceConnectionError,
    ServiceError,
    ServiceHTTPError,
    ServiceTimeoutError,
    ServiceUnavailableError,
    TruncatedResponseError,
)
from ps1dask.tessellation import SkycellId, SkycellLike
from ps1dask.wire import FITSCUT_PATH, LIST_PATH, SKYCELL_ID_EXPECTED, SKYCELL_ID_RE

__all__ = ["HTTPSettings", "PS1Service", "is_retryable", "shared_session"]

#: Bytes of an error answer kept for the error message.
ERROR_BODY_LIMIT = 64 * 1024
#: Keywords that describe stored (not linear float32) pixels; dropped from repaired headers.
_SCALING_KEYWORDS = ("BZERO", "BSCALE", "BLANK", "BSOFTEN", "BOFFSET")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def _new_session(pool_size: int) -> requests.Session:
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
            session = _SESSIONS[key] = _new_session(pool_size)
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


def _wrap_transport_error(err: requests.RequestException, url: str) -> ServiceError:
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


def _status_error(
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


class _MemorySink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def start(self) -> None:
        self.chunks = []

    def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def value(self) -> bytes:
        return b"".join(self.chunks)


class _FileSink:
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
class _Answer:
    status: int
    headers: requests.structures.CaseInsensitiveDict[str]
    body: bytes
    url: str


# --- argument checks -----------------------------------------------------------------------


def _degrees(ra: Any, dec: Any) -> tuple[float, float]:
    try:
        ra_f, dec_f = float(ra), float(dec)
    except (TypeError, ValueError):
        raise InvalidPositionError(f"ra={ra!r}, dec={dec!r}: expected numbers in degrees") from None
    if not (math.isfinite(ra_f) and math.isfinite(dec_f)) or abs(dec_f) > 90.0:
        raise InvalidPositionError(
            f"ra={ra!r}, dec={dec!r}: coordinates must be finite degrees with |dec| <= 90"
        )
    return ra_f, dec_f


def _position_arrays(ra: npt.ArrayLike, dec: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    try:
        ra_arr = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec_arr = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise InvalidPositionError(f"ra and dec must be numbers in degrees: {err}") from None
    if ra_arr.ndim != 1 or dec_arr.shape != ra_arr.shape:
        raise InvalidPositionError(
            f"ra and dec must be 1-d and of equal length, got shapes {ra_arr.shape} and {dec_arr.shape}"
        )
    bad = ~np.isfinite(ra_arr) | ~np.isfinite(dec_arr) | (np.abs(dec_arr) > 90.0)
    if bad.any():
        idx = np.flatnonzero(bad)
        shown = ", ".join(f"{i} (ra={ra_arr[i]!r}, dec={dec_arr[i]!r})" for i in idx[:10])
        more = f" and {idx.size - 10} more" if idx.size > 10 else ""
        raise InvalidPositionError(
            f"invalid position at index {shown}{more}: coordinates must be finite degrees with "
            "|dec| <= 90",
            rows=idx.tolist(),
        )
    return ra_arr, dec_arr


def _skycell_param(skycell: SkycellLike) -> str:
    """``PPPP.SSS`` for the service; the format is checked here, existence by the service."""
    if isinstance(skycell, str):
        match = SKYCELL_ID_RE.match(skycell)
        if not match:
            raise InvalidSkycellError(f"{skycell!r} is not a skycell id ({SKYCELL_ID_EXPECTED})")
        projcell, subcell = int(match["projcell"]), int(match["subcell"])
    else:
        try:
            projcell, subcell = (int(v) for v in skycell)
        except (TypeError, ValueError):
            raise InvalidSkycellError(
                f"{skycell!r} is not a skycell id (expected a string or (projcell, subcell))"
            ) from None
    if not (0 <= projcell <= 9999 and 0 <= subcell <= 999):
        raise InvalidSkycellError(f"{skycell!r} is not a skycell id")
    return SkycellId(projcell, subcell).short


def _number(value: Any, name: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidParameterError(f"{name}={value!r} is not finite")
    return repr(number) if not number.is_integer() else str(int(number))


def _size_param(size: int | str | tuple[int, int]) -> tuple[str, tuple[int, int]]:
    width, height = parse_size(size)
    return (str(width) if width == height else f"{width},{height}"), (width, height)


def _shortname(filename: str) -> str:
    name = filename.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise InvalidParameterError(f"{filename!r} has no file name")
    return name


# --- FITS ------------------------------------------------------------------------------------


def _parse_fits(body: bytes, url: str, raw: bool) -> fits.PrimaryHDU:
    """The first image of a FITS answer; BadFITSError if unreadable or truncated."""
    if len(body) < 2880 or not body.startswith(b"SIMPLE  ="):
        head = body[:80].decode("ascii", errors="replace")
        raise BadFITSError(f"answer is not FITS ({len(body)} bytes, starting {head!r})", url)
    try:
        with fits.open(
            io.BytesIO(body),
            memmap=False,
            lazy_load_hdus=False,
            do_not_scale_image_data=not raw,
        ) as hdul:
            hdu = next((h for h in hdul if h.is_image and h.header.get("NAXIS", 0) >= 2), None)
            if hdu is None:
                raise BadFITSError("FITS answer holds no 2-d image", url)
            header = hdu.header
            bitpix = abs(int(header["BITPIX"]))
            naxes = [int(header[f"NAXIS{i}"]) for i in range(1, int(header["NAXIS"]) + 1)]
            if not hdu.header.get("ZIMAGE", False):
                needed = hdu.fileinfo()["datLoc"] + bitpix // 8 * int(np.prod(naxes))
                if len(body) < needed:
                    raise BadFITSError(
                        f"FITS answer truncated: {len(body)} bytes, the image needs {needed}", url
                    )
            data = np.array(hdu.data, copy=True)
            header = header.copy()
    except BadFITSError:
        raise
    except Exception as err:  # noqa: BLE001 - bytes from the network: whatever astropy
        # raises on them (OSError, ValueError, zlib.error, its CfitsioException, MemoryError
        # for a garbled NAXIS, ...) means the answer is unreadable, and retryable
        raise BadFITSError(f"unreadable FITS answer: {type(err).__name__}: {err}", url) from None
    if data.ndim != 2:
        raise BadFITSError(f"FITS answer image has shape {data.shape}, expected 2-d", url)
    if raw:
        return fits.PrimaryHDU(data=data, header=header)
    pixels = linear_pixels(data, header)
    fixed = repair_header(header)
    for key in _SCALING_KEYWORDS:
        fixed.remove(key, ignore_missing=True, remove_all=True)
    for key in ("XTENSION", "EXTNAME", "PCOUNT", "GCOUNT"):
        fixed.remove(key, ignore_missing=True, remove_all=True)
    hdu_out = fits.PrimaryHDU(data=pixels, header=fixed)
    hdu_out.header["BITPIX"] = -32
    return hdu_out


# --- the client ------------------------------------------------------------------------------


class PS1Service:
    """Client of the PS1 image service (or of :class:`ps1dask.emulator.Emulator`).

    Parameters
    ----------
    url
        Service base URL; default ``ps1dask.service.url``.
    session
        A ``requests.Session`` to use (not closed by :meth:`close`); default a new one.
    throttle
        The request limit; default ``RequestThrottle(url=url)`` (cluster-wide semaphore on
        dask, process-wide otherwise).
    stats
        Counters to add to; default a new :class:`RequestStats` (``service.stats``).

    Timeouts, attempts and backoff are read from ``ps1dask.http.*`` at construction
    (``service.settings``). Thread-safe: many threads may share one service.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        session: requests.Session | None = None,
        throttle: RequestThrottle | None = None,
        stats: RequestStats | None = None,
    ) -> None:
        self.url: str = config.service_url(url)
        self.settings: HTTPSettings = HTTPSettings.from_config()
        self.throttle: RequestThrottle = (
            throttle if throttle is not None else RequestThrottle(url=self.url)
        )
        self.stats: RequestStats = stats if stats is not None else RequestStats()
        self._owns_session = session is None
        self._session = (
            session if session is not None else _new_session(self.throttle.max_concurrency)
        )
        self.throttle.check_lease_timeout(self.settings.connect_timeout, self.settings.read_timeout)

    # -- lifecycle, pickling, cheap copies -----------------------------------------------------

    def close(self) -> None:
        """Close the session if this service created it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Never the session, the stats' lock or a Semaphore: URL, settings, throttle name/limit.
        return {"url": self.url, "settings": self.settings, "throttle": self.throttle}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.url = state["url"]
        self.settings = state["settings"]
        self.throttle = state["throttle"]
        self.stats = RequestStats()
        self._owns_session = False
        self._session = shared_session(self.url, self.throttle.max_concurrency)

    def with_stats(self, stats: RequestStats | None = None) -> PS1Service:
        """A copy sharing session, throttle and settings, counting into ``stats`` (new by
        default): cheap per-task services with their own counters."""
        clone = object.__new__(PS1Service)
        clone.url = self.url
        clone.settings = self.settings
        clone.throttle = self.throttle
        clone.stats = stats if stats is not None else RequestStats()
        clone._owns_session = False
        clone._session = self._session
        return clone

    def bound(self) -> PS1Service:
        """A copy (same session, settings and stats) whose throttle keeps the distributed
        context of the calling thread (:meth:`RequestThrottle.bind`).

        Call it on a task's own thread and give the copy to the threads the task starts:
        their requests then take slots from the task's scheduler and stop when it is lost,
        instead of looking for a context those threads do not have.
        """
        throttle = self.throttle.bind()
        if throttle is self.throttle:
            return self
        clone = self.with_stats(self.stats)
        clone.throttle = throttle
        return clone

    def __repr__(self) -> str:
        return f"PS1Service({self.url!r}, throttle={self.throttle!r})"

    # -- image lists -----------------------------------------------------------------------

    def list_images(
        self,
        ra: float | None = None,
        dec: float | None = None,
        *,
        skycell: SkycellLike | None = None,
        filters: str | list[str] | tuple[str, ...] = "grizy",
        types: str | list[str] | tuple[str, ...] = ("stack",),
    ) -> pd.DataFrame:
        """Images at one position (the best skycell) or of one skycell.

        Returns the service's table as a DataFrame with columns ``projcell subcell ra dec
        filter mjd type filename shortname badflag`` (an empty frame with those columns when
        nothing matches). An invalid skycell raises
        :class:`~ps1dask.exceptions.BadRequestError` (the service's HTTP 400).
        """
        params: dict[str, str] = {}
        if skycell is not None:
            if ra is not None or dec is not None:
                raise InvalidParameterError("give either ra/dec or skycell, not both")
            params["skycell"] = _skycell_param(skycell)
        else:
            if ra is None or dec is None:
                raise InvalidParameterError("list_images needs ra and dec, or skycell")
            ra_f, dec_f = _degrees(ra, dec)
            params["ra"], params["dec"] = repr(ra_f), repr(dec_f)
        params["filters"] = parse_filters(filters)
        params["type"] = ",".join(parse_types(types))
        return self._request(
            "GET",
            LIST_PATH,
            kind="list",
            params=params,
            parse=lambda answer: parse_listing(_text(answer.body), url=answer.url),
            compressed=True,
        )

    def list_images_many(
        self,
        ra: npt.ArrayLike,
        dec: npt.ArrayLike,
        *,
        filters: str | list[str] | tuple[str, ...] = "grizy",
        types: str | list[str] | tuple[str, ...] = ("stack",),
        batch_size: int = 5000,
    ) -> pd.DataFrame:
        """Images at many positions, with POSTs of ``batch_size`` positions each.

        Like the service page's bulk script: a ``file`` field of ``ra dec`` lines. Adds a
        ``position`` column, the 0-based index of each row's input position (positions with
        no images have no rows).
        """
        ra_arr, dec_arr = _position_arrays(ra, dec)
        if int(batch_size) != batch_size or batch_size < 1:
            raise InvalidParameterError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        form = {"filters": parse_filters(filters), "type": ",".join(parse_types(types))}
        frames = []
        for start in range(0, ra_arr.size, int(batch_size)):
            ra_b = ra_arr[start : start + int(batch_size)]
            dec_b = dec_arr[start : start + int(batch_size)]
            payload = format_positions(ra_b, dec_b).encode("ascii")

            def parse(
                answer: _Answer,
                ra_b: np.ndarray = ra_b,
                dec_b: np.ndarray = dec_b,
                start: int = start,
            ) -> pd.DataFrame:
                frame = parse_listing(_text(answer.body), url=answer.url)
                frame["position"] = assign_positions(
                    frame, ra_b, dec_b, offset=start, url=answer.url
                )
                return frame

            frames.append(
                self._request(
                    "POST",
                    LIST_PATH,
                    kind="list-many",
                    data=form,
                    files={"file": ("positions.txt", payload, "text/plain")},
                    parse=parse,
                    compressed=True,
                )
            )
        if not frames:
            frame = empty_listing()
            frame["position"] = np.zeros(0, dtype=np.int64)
            return frame
        return pd.concat(frames, ignore_index=True)

    # -- cutouts -----------------------------------------------------------------------------

    def cutout_fits(
        self,
        filename: str,
        ra: float,
        dec: float,
        size: int | str | tuple[int, int] = 240,
        *,
        raw: bool = False,
    ) -> fits.PrimaryHDU:
        """A FITS cutout from ``fitscut.cgi``: linear float32 pixels, repaired header.

        Pixels pass through :func:`~ps1dask.conventions.linear_pixels` (cutouts are already
        linear; this only guards against scaled answers), the header through
        :func:`~ps1dask.conventions.repair_header` (CDi_j, RADESYS, TIMESYS) with scaling
        keywords removed. ``raw=True`` returns the answer's HDU unrepaired. The image shape is
        checked against ``size``; unreadable or truncated FITS is retried.
        """
        ra_f, dec_f = _degrees(ra, dec)
        size_text, (width, height) = _size_param(size)
        params = {
            "red": _path(filename),
            "ra": repr(ra_f),
            "dec": repr(dec_f),
            "size": size_text,
            "format": "fits",
        }

        def parse(answer: _Answer) -> fits.PrimaryHDU:
            hdu = _parse_fits(answer.body, answer.url, raw)
            if hdu.data is None or hdu.data.shape != (height, width):
                shape = None if hdu.data is None else hdu.data.shape
                raise BadFITSError(
                    f"cutout has shape {shape}, expected (height, width) = {(height, width)}",
                    answer.url,
                )
            return hdu

        return self._request("GET", FITSCUT_PATH, kind="cutout", params=params, parse=parse)

    def cutout_image(
        self,
        red: str,
        ra: float,
        dec: float,
        size: int | str | tuple[int, int] = 240,
        *,
        green: str | None = None,
        blue: str | None = None,
        format: str = "jpg",
        output_size: int | None = None,
        autoscale: float | None = None,
        min: float | None = None,
        max: float | None = None,
        asinh: bool | None = None,
        invert: bool = False,
    ) -> bytes:
        """A JPEG or PNG cutout (colour when ``green``/``blue`` are given); the image bytes."""
        fmt = str(format).lower()
        fmt = {"jpeg": "jpg"}.get(fmt, fmt)
        if fmt not in ("jpg", "png"):
            raise InvalidParameterError(
                f"format {format!r}: expected 'jpg' or 'png' (FITS: cutout_fits)"
            )
        if (green is None) != (blue is None):
            raise InvalidParameterError("colour images need both green and blue")
        ra_f, dec_f = _degrees(ra, dec)
        size_text, _ = _size_param(size)
        params: dict[str, str] = {
            "red": _path(red),
            "ra": repr(ra_f),
            "dec": repr(dec_f),
            "size": size_text,
            "format": fmt,
        }
        if green is not None and blue is not None:
            params["green"] = _path(green)
            params["blue"] = _path(blue)
        if output_size is not None:
            if int(output_size) != output_size or output_size < 1:
                raise InvalidParameterError(
                    f"output_size must be a positive integer, got {output_size!r}"
                )
            params["output_size"] = str(int(output_size))
        if autoscale is not None:
            params["autoscale"] = _number(autoscale, "autoscale")
        if min is not None:
            params["min"] = _number(min, "min")
        if max is not None:
            params["max"] = _number(max, "max")
        if asinh is not None:
            params["asinh"] = "True" if asinh else "False"
        if invert:
            params["invert"] = "True"
        magic = _JPEG_MAGIC if fmt == "jpg" else _PNG_MAGIC

        def parse(answer: _Answer) -> bytes:
            if not answer.body.startswith(magic):
                head = answer.body[:60]
                raise BadImageError(
                    f"answer is not a {fmt.upper()} image (starts {head!r})", answer.url
                )
            return answer.body

        return self._request("GET", FITSCUT_PATH, kind="image", params=params, parse=parse)

    # -- whole files and byte ranges -----------------------------------------------------------

    def download(self, filename: str, dest: str | os.PathLike[str]) -> Path:
        """Download a whole file to ``dest`` (a path, or a directory: then its short name).

        Streamed to a temporary file in the destination directory, its length checked
        against Content-Length, then moved into place atomically (``os.replace``): ``dest``
        either does not change or holds the complete file. Returns the final path.
        """
        target = Path(dest)
        if target.is_dir():
            target = target / _shortname(filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
        tmp = Path(tmp_name)
        try:
            with open(fd, "w+b") as handle:
                self._request(
                    "GET", _path(filename), kind="download", sink=lambda: _FileSink(handle)
                )
                handle.flush()
                os.fsync(handle.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def file_size(self, filename: str) -> int:
        """Size in bytes of a file on the service (HEAD request, Content-Length)."""

        def parse(answer: _Answer) -> int:
            length = answer.headers.get("Content-Length")
            if length is None or not length.strip().isdigit():
                raise BadResponseError(
                    f"HEAD answer has no usable Content-Length ({length!r})", answer.url
                )
            return int(length)

        return self._request("HEAD", _path(filename), kind="head", parse=parse)

    def read_range(self, filename: str, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of a file, with an HTTP Range request.

        Expects ``206 Partial Content`` with a matching ``Content-Range`` (a range ending
        past the end of the file gives the bytes up to the end, like slicing). A server that
        ignores Range (answers 200) raises :class:`~ps1dask.exceptions.RangeNotSupportedError`
        at once, without reading the whole file.
        """
        if int(start) != start or int(stop) != stop or start < 0 or stop < start:
            raise InvalidParameterError(
                f"byte range [{start}, {stop}) must satisfy 0 <= start <= stop"
            )
        start, stop = int(start), int(stop)
        if stop == start:
            return b""

        def check_headers(resp: requests.Response, url: str) -> None:
            if resp.status_code == 200:
                raise RangeNotSupportedError(
                    f"the server ignored the Range header (HTTP 200, whole file) for bytes "
                    f"{start}-{stop - 1}; use download() or the skycell strategy",
                    url,
                )
            if resp.status_code != 206:
                raise BadResponseError(
                    f"expected HTTP 206 to a Range request, got {resp.status_code}", url
                )
            _check_content_range(resp.headers.get("Content-Range"), start, stop, url)

        def parse(answer: _Answer) -> bytes:
            first, last, _total = _check_content_range(
                answer.headers.get("Content-Range"), start, stop, answer.url
            )
            if len(answer.body) != last - first + 1:
                raise TruncatedResponseError(
                    f"range answer has {len(answer.body)} bytes, Content-Range says {last - first + 1}",
                    answer.url,
                )
            return answer.body

        return self._request(
            "GET",
            _path(filename),
            kind="range",
            headers={"Range": f"bytes={start}-{stop - 1}"},
            check_headers=check_headers,
            parse=parse,
        )

    # -- the one request path --------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        kind: str,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        check_headers: Callable[[requests.Response, str], None] | None = None,
        sink: Callable[[], _MemorySink | _FileSink] | None = None,
        parse: Callable[[_Answer], Any] | None = None,
        compressed: bool = False,
    ) -> Any:
        """Send one logical request with retries; every HTTP request of the client is here."""
        url = self.url + path
        shown = url + ("?" + urlencode(params) if params else "")
        self.stats.record_call()

        def on_retry(error: BaseException, attempt: int, sleep: float) -> None:
            self.stats.record_retry(error, sleep)

        try:
            return retry_call(
                lambda: self._attempt(
                    method,
                    url,
                    shown,
                    kind,
                    params,
                    data,
                    files,
                    headers,
                    check_headers,
                    sink,
                    parse,
                    compressed,
                ),
                policy=self.settings.retry,
                retryable=is_retryable,
                on_retry=on_retry,
                describe=f"{method} {path}",
            )
        except BaseException:
            self.stats.record_failure()
            raise

    def _attempt(
        self,
        method: str,
        url: str,
        shown: str,
        kind: str,
        params: Mapping[str, str] | None,
        data: Mapping[str, str] | None,
        files: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        check_headers: Callable[[requests.Response, str], None] | None,
        sink: Callable[[], _MemorySink | _FileSink] | None,
        parse: Callable[[_Answer], Any] | None,
        compressed: bool,
    ) -> Any:
        """One attempt: slot -> send -> read the whole body -> release -> classify."""
        request_headers = {
            "User-Agent": self.settings.user_agent,
            "Accept-Encoding": "gzip, deflate" if compressed else "identity",
        }
        if headers:
            request_headers.update(headers)
        target = sink() if sink is not None else _MemorySink()
        status = 0
        answer: _Answer | None = None
        try:
            with self.throttle.slot() as waited:
                self.stats.record_request(kind, waited)
                started = _now()
                nbytes = 0
                try:
                    resp = self._session.request(
                        method,
                        url,
                        params=params,
                        data=data,
                        files=files,
                        headers=request_headers,
                        timeout=self.settings.timeout,
                        stream=True,
                        allow_redirects=True,
                    )
                except requests.RequestException as err:
                    self.stats.record_transfer(0, _now() - started)
                    raise _wrap_transport_error(err, shown) from err
                try:
                    status = resp.status_code
                    failed = status >= 400
                    if not failed and check_headers is not None:
                        check_headers(resp, shown)  # may refuse the answer before its body
                    target.start()
                    if failed:
                        target = _MemorySink()
                        kept = 0
                        for chunk in resp.iter_content(self.settings.chunk_size):
                            target.write(chunk)
                            kept += len(chunk)
                            if kept >= ERROR_BODY_LIMIT:
                                break
                    elif method != "HEAD":
                        for chunk in resp.iter_content(self.settings.chunk_size):
                            target.write(chunk)
                        _check_length(resp, shown)
                    nbytes = _wire_bytes(resp)
                except requests.RequestException as err:
                    self.stats.record_transfer(_wire_bytes(resp), _now() - started)
                    raise _wrap_transport_error(err, shown) from err
                except ServiceError:
                    self.stats.record_response(status, _wire_bytes(resp), _now() - started)
                    raise
                finally:
                    resp.close()
                self.stats.record_response(status, nbytes, _now() - started)
                answer = _Answer(status, resp.headers, target.value(), shown)
            # -- the slot is released: classify and parse --
            if status >= 300:
                raise _status_error(status, resp.reason or "", answer.body, resp.headers, shown)
            return parse(answer) if parse is not None else answer
        except ServiceError as err:
            self.stats.record_error(err)
            raise


def _now() -> float:
    return time.monotonic()


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def _path(filename: str) -> str:
    """A service file name as a URL path (``/rings.v3.skycell/...``), percent-quoted."""
    if not isinstance(filename, str) or not filename.strip():
        raise InvalidParameterError(f"file name {filename!r} is empty")
    name = filename.strip()
    if "://" in name:
        raise InvalidParameterError(f"give the service file name, not a URL: {filename!r}")
    if not name.startswith("/"):
        name = "/" + name
    return quote(name, safe="/:@!$&'()*+,;=-._~")


def _wire_bytes(resp: requests.Response) -> int:
    try:
        return int(resp.raw.tell())
    except Exception:  # noqa: BLE001 - a non-urllib3 transport
        return 0


def _check_length(resp: requests.Response, url: str) -> None:
    """The body must be as long as Content-Length says (bytes on the wire)."""
    announced = resp.headers.get("Content-Length")
    if announced is None or not announced.strip().isdigit():
        return
    received = _wire_bytes(resp)
    if received != int(announced):
        raise TruncatedResponseError(
            f"answer has {received} bytes, Content-Length announced {announced}", url
        )


def _check_content_range(
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
