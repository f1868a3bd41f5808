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

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlencode

import numpy as np
import numpy.typing as npt
import pandas as pd
import requests
import requests.adapters
from astropy.io import fits

from ps1dask import config
from ps1dask.client.answers import (
    JPEG_MAGIC,
    PNG_MAGIC,
    body_text,
    parse_fits_answer,
    parse_fits_cutout,
)
from ps1dask.client.listing import (
    assign_positions,
    empty_listing,
    format_positions,
    parse_listing,
)
from ps1dask.client.params import (
    degrees,
    file_path,
    number_param,
    position_arrays,
    shortname,
    size_param,
    skycell_param,
)
from ps1dask.client.retry import retry_call
from ps1dask.client.stats import RequestStats
from ps1dask.client.throttle import RequestThrottle
from ps1dask.client.transport import (
    ERROR_BODY_LIMIT,
    Answer,
    FileSink,
    HTTPSettings,
    MemorySink,
    check_content_range,
    check_length,
    is_retryable,
    new_session,
    read_whole_body,
    shared_session,
    status_error,
    transport_error,
    wire_bytes,
)
from ps1dask.conventions import parse_filters, parse_types
from ps1dask.exceptions import (
    BadFITSError,
    BadImageError,
    BadResponseError,
    InvalidParameterError,
    RangeNotSupportedError,
    ServiceError,
    TruncatedResponseError,
)
from ps1dask.tessellation import SkycellLike
from ps1dask.wire import FITSCUT_PATH, LIST_PATH

__all__ = ["HTTPSettings", "PS1Service", "is_retryable", "shared_session"]


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
            session if session is not None else new_session(self.throttle.max_concurrency)
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
            params["skycell"] = skycell_param(skycell)
        else:
            if ra is None or dec is None:
                raise InvalidParameterError("list_images needs ra and dec, or skycell")
            ra_f, dec_f = degrees(ra, dec)
            params["ra"], params["dec"] = repr(ra_f), repr(dec_f)
        params["filters"] = parse_filters(filters)
        params["type"] = ",".join(parse_types(types))
        return self._request(
            "GET",
            LIST_PATH,
            kind="list",
            params=params,
            parse=lambda answer: parse_listing(body_text(answer.body), url=answer.url),
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
        ra_arr, dec_arr = position_arrays(ra, dec)
        if int(batch_size) != batch_size or batch_size < 1:
            raise InvalidParameterError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        form = {"filters": parse_filters(filters), "type": ",".join(parse_types(types))}
        frames = []
        for start in range(0, ra_arr.size, int(batch_size)):
            ra_b = ra_arr[start : start + int(batch_size)]
            dec_b = dec_arr[start : start + int(batch_size)]
            payload = format_positions(ra_b, dec_b).encode("ascii")

            def parse(
                answer: Answer,
                ra_b: np.ndarray = ra_b,
                dec_b: np.ndarray = dec_b,
                start: int = start,
            ) -> pd.DataFrame:
                frame = parse_listing(body_text(answer.body), url=answer.url)
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
        params, (width, height) = _fitscut_fits_params(filename, ra, dec, size)

        def parse(answer: Answer) -> fits.PrimaryHDU:
            hdu = parse_fits_answer(answer.body, answer.url, raw, expected_shape=(height, width))
            if hdu.data is None or hdu.data.shape != (height, width):
                shape = None if hdu.data is None else hdu.data.shape
                raise BadFITSError(
                    f"cutout has shape {shape}, expected (height, width) = {(height, width)}",
                    answer.url,
                )
            return hdu

        return self._request("GET", FITSCUT_PATH, kind="cutout", params=params, parse=parse)

    def cutout_pixels(
        self,
        filename: str,
        ra: float,
        dec: float,
        size: int | str | tuple[int, int] = 240,
    ) -> tuple[npt.NDArray[np.float32], fits.Header]:
        """``(pixels, header)`` of :meth:`cutout_fits` (``raw=False``) without the HDU:
        linear float32 pixels of shape (height, width) and the repaired header. The same
        request, checks and retries; what jobs use, one HDU less per cutout."""
        params, (width, height) = _fitscut_fits_params(filename, ra, dec, size)

        def parse(answer: Answer) -> tuple[npt.NDArray[np.float32], fits.Header]:
            pixels, header = parse_fits_cutout(
                answer.body, answer.url, expected_shape=(height, width)
            )
            if pixels.shape != (height, width):
                raise BadFITSError(
                    f"cutout has shape {pixels.shape}, expected (height, width) = "
                    f"{(height, width)}",
                    answer.url,
                )
            return pixels, header

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
        ra_f, dec_f = degrees(ra, dec)
        size_text, _ = size_param(size)
        params: dict[str, str] = {
            "red": file_path(red),
            "ra": repr(ra_f),
            "dec": repr(dec_f),
            "size": size_text,
            "format": fmt,
        }
        if green is not None and blue is not None:
            params["green"] = file_path(green)
            params["blue"] = file_path(blue)
        if output_size is not None:
            if int(output_size) != output_size or output_size < 1:
                raise InvalidParameterError(
                    f"output_size must be a positive integer, got {output_size!r}"
                )
            params["output_size"] = str(int(output_size))
        if autoscale is not None:
            params["autoscale"] = number_param(autoscale, "autoscale")
        if min is not None:
            params["min"] = number_param(min, "min")
        if max is not None:
            params["max"] = number_param(max, "max")
        if asinh is not None:
            params["asinh"] = "True" if asinh else "False"
        if invert:
            params["invert"] = "True"
        magic = JPEG_MAGIC if fmt == "jpg" else PNG_MAGIC

        def parse(answer: Answer) -> bytes:
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
            target = target / shortname(filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
        tmp = Path(tmp_name)
        try:
            with open(fd, "w+b") as handle:
                self._request(
                    "GET", file_path(filename), kind="download", sink=lambda: FileSink(handle)
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

        def parse(answer: Answer) -> int:
            length = answer.headers.get("Content-Length")
            if length is None or not length.strip().isdigit():
                raise BadResponseError(
                    f"HEAD answer has no usable Content-Length ({length!r})", answer.url
                )
            return int(length)

        return self._request("HEAD", file_path(filename), kind="head", parse=parse)

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
            check_content_range(resp.headers.get("Content-Range"), start, stop, url)

        def parse(answer: Answer) -> bytes:
            first, last, _total = check_content_range(
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
            file_path(filename),
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
        sink: Callable[[], MemorySink | FileSink] | None = None,
        parse: Callable[[Answer], Any] | None = None,
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
        sink: Callable[[], MemorySink | FileSink] | None,
        parse: Callable[[Answer], Any] | None,
        compressed: bool,
    ) -> Any:
        """One attempt: slot -> send -> read the whole body -> release -> classify."""
        request_headers = {
            "User-Agent": self.settings.user_agent,
            "Accept-Encoding": "gzip, deflate" if compressed else "identity",
        }
        if headers:
            request_headers.update(headers)
        target = sink() if sink is not None else MemorySink()
        status = 0
        answer: Answer | None = None
        # What Session.request does before it sends, done before taking a slot: while it
        # runs (URL, body and header encoding, the environment's proxy settings: about 0.7
        # ms of CPU and GIL) the slot would sit idle between two requests.
        session = self._session
        prepared: requests.PreparedRequest | None = None
        unprepared: requests.RequestException | None = None
        send_settings: dict[str, Any] = {}
        try:
            prepared = session.prepare_request(
                requests.Request(
                    method.upper(),
                    url,
                    headers=request_headers,
                    files=files,
                    data=data or {},
                    params=params or {},
                )
            )
            send_settings = session.merge_environment_settings(
                prepared.url or url, {}, True, None, None
            )
        except requests.RequestException as err:
            unprepared = err  # raised below where a failed send is, with the same accounting
        try:
            with self.throttle.slot() as waited:
                self.stats.record_request(kind, waited)
                started = _now()
                nbytes = 0
                try:
                    if unprepared is not None:
                        raise unprepared
                    assert prepared is not None
                    resp = session.send(
                        prepared,
                        timeout=self.settings.timeout,
                        allow_redirects=True,
                        **send_settings,
                    )
                except requests.RequestException as err:
                    self.stats.record_transfer(0, _now() - started)
                    raise transport_error(err, shown) from err
                try:
                    status = resp.status_code
                    failed = status >= 400
                    if not failed and check_headers is not None:
                        check_headers(resp, shown)  # may refuse the answer before its body
                    target.start()
                    if failed:
                        target = MemorySink()
                        kept = 0
                        for chunk in resp.iter_content(self.settings.chunk_size):
                            target.write(chunk)
                            kept += len(chunk)
                            if kept >= ERROR_BODY_LIMIT:
                                break
                    elif method != "HEAD":
                        if isinstance(target, MemorySink):
                            target.write(read_whole_body(resp))
                        else:  # a file: streamed, never whole in memory
                            for chunk in resp.iter_content(self.settings.chunk_size):
                                target.write(chunk)
                        check_length(resp, shown)
                    nbytes = wire_bytes(resp)
                except requests.RequestException as err:
                    self.stats.record_transfer(wire_bytes(resp), _now() - started)
                    raise transport_error(err, shown) from err
                except ServiceError:
                    self.stats.record_response(status, wire_bytes(resp), _now() - started)
                    raise
                finally:
                    resp.close()
                self.stats.record_response(status, nbytes, _now() - started)
                answer = Answer(status, resp.headers, target.value(), shown)
            # -- the slot is released: classify and parse --
            if status >= 300:
                raise status_error(status, resp.reason or "", answer.body, resp.headers, shown)
            return parse(answer) if parse is not None else answer
        except ServiceError as err:
            self.stats.record_error(err)
            raise


def _now() -> float:
    return time.monotonic()


def _fitscut_fits_params(
    filename: str, ra: float, dec: float, size: int | str | tuple[int, int]
) -> tuple[dict[str, str], tuple[int, int]]:
    """``fitscut.cgi``'s query for a FITS cutout, and the (width, height) it must have."""
    ra_f, dec_f = degrees(ra, dec)
    size_text, shape = size_param(size)
    params = {
        "red": file_path(filename),
        "ra": repr(ra_f),
        "dec": repr(dec_f),
        "size": size_text,
        "format": "fits",
    }
    return params, shape
