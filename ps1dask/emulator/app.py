"""The emulated ps1images.stsci.edu: an aiohttp application and its in-process runner.

Service endpoints (the real paths, parameters and answer formats; see
``docs``/``PS1-SERVICE.md``):

``GET|POST /cgi-bin/ps1filenames.py``
    image list (``ra``/``dec``, ``skycell`` or a POSTed ``file`` of ``ra dec`` lines;
    ``filters``, ``type``, ``sep``).
``GET /cgi-bin/fitscut.cgi``
    cutouts as FITS (linear float32), JPEG or PNG, grey or colour.
``GET|HEAD /rings.v3.skycell/PPPP/SSS/<shortname>``
    whole tile-compressed skycell files, with single ``Range: bytes=`` requests (206/416).
``GET /cgi-bin/ps1cutouts``
    the HTML cutout page.

Emulator endpoints (never counted, faulted or throttled):

``GET /_emulator/truth?ra=&dec=&radius=[&mjd=]``
    the synthetic sources near a position (JSON).
``GET /_emulator/metrics``, ``POST /_emulator/metrics/reset``
    request counters (JSON).
``GET|POST /_emulator/config``
    the knobs (JSON), see :class:`~ps1dask.emulator.faults.Knobs`.

Every CPU-heavy step (listing, rendering pixels, writing whole files, encoding) runs in a
thread pool, never on the event loop, so slow cutouts do not hold back other requests.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import socket
import struct
import tempfile
import threading
import warnings
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
from aiohttp import web
from astropy.io import fits
from multidict import CIMultiDict

from ps1dask.background_server import BackgroundServer, bind_socket
from ps1dask.conventions import (
    FILTERS,
    cut,
    cutout_box,
    cutout_header,
    linear_pixels,
    parse_filters,
    parse_size,
    parse_types,
    position_pixel,
)
from ps1dask.emulator import page
from ps1dask.emulator.faults import FaultInjector, Knobs, format_retry_after
from ps1dask.exceptions import InvalidParameterError, PS1DaskError, ServiceHTTPError
from ps1dask.imaging import (
    DEFAULT_AUTOSCALE,
    IMAGE_FORMATS,
    encode_image,
    fitscut_grey,
    fitscut_rgb,
    output_shape,
    resize_image,
)
from ps1dask.tessellation import SkycellId, locate, skycell_center
from ps1dask.wire import CUTOUTS_PAGE_PATH, FILES_PREFIX, FITSCUT_PATH, LIST_PATH, LISTING_COLUMNS

try:  # the synthetic sky (ImageRef may live in sky.py or files.py)
    from ps1dask.emulator.sky import ImageRef, SyntheticSky
except ImportError:  # pragma: no cover - depends on the sky module's layout
    from ps1dask.emulator.files import ImageRef  # type: ignore[no-redef]
    from ps1dask.emulator.sky import SyntheticSky
from ps1dask.emulator.files import WholeFileCache

log = logging.getLogger("ps1dask.emulator")

# PS1 headers carry HIERARCH keywords (FPA.ZP, ...): copying them into cutout headers is
# expected, and the server thread should not fill the user's console with it. (A targeted,
# process-wide filter: catch_warnings is not thread-safe in the rendering threads.)
warnings.filterwarnings(
    "ignore",
    message=r"Keyword name .* HIERARCH card will be created",
    category=fits.verify.VerifyWarning,
)

T = TypeVar("T")

#: Types the real service lists but the emulator does not synthesise (catalogues, PSFs):
#: accepted and silently empty, like a type with no files.
UNSYNTHESISED_TYPES = frozenset({"stack.psf", "stack.mdc", "stack.cmf", "warp.cmf", "warp.mdc"})
SEPARATORS = {"": " ", "space": " ", " ": " ", "comma": ",", ",": ",", "tab": "\t", "\t": "\t"}

EMULATOR_PREFIX = "/_emulator/"
#: Endpoint names of ``requests_by_endpoint``.
ENDPOINTS = (FITSCUT_PATH, LIST_PATH, CUTOUTS_PAGE_PATH, "files", "other")

DEFAULT_CUTOUT_SIZE = 240
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off", ""}


def endpoint_of(path: str) -> str | None:
    """Metrics name of a request path; None for the emulator's own ``/_emulator/*``."""
    if path.startswith(EMULATOR_PREFIX) or path == EMULATOR_PREFIX.rstrip("/"):
        return None
    if path in (FITSCUT_PATH, LIST_PATH, CUTOUTS_PAGE_PATH):
        return path
    if path.startswith(FILES_PREFIX):
        return "files"
    return "other"


# --------------------------------------------------------------------------- metrics


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
class _Flight:
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
        self._flights: dict[str, list[_Flight]] = defaultdict(list)

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
    def enter(self, request: web.BaseRequest, endpoint: str) -> _Flight:
        """Count a service request in flight (before any await); refuse it over the limit."""
        m = self.metrics
        # A request whose client hung up (timed out during a stall, say) is no longer in
        # flight from anyone's point of view: stop counting it now, not when its handler ends.
        for flights in list(self._flights.values()):
            for old in list(flights):
                if old.client_gone():
                    self.leave(old)
        address = request.remote or "?"
        flight = _Flight(request, address)
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

    def leave(self, flight: _Flight) -> None:
        if flight.done:
            return
        flight.done = True
        mine = self._flights.get(flight.address)
        if mine is not None and flight in mine:
            mine.remove(flight)
            if not mine:
                del self._flights[flight.address]
        self.metrics.add("in_flight", -1)


# --------------------------------------------------------------------------- replies


class HTTPFailure(Exception):
    """Ends a service request with an HTTP error status and a plain-text message."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


@dataclass
class Reply:
    """A service answer, sent by the middleware (throttled, maybe truncated)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: Path | None = None
    offset: int = 0
    length: int = 0

    @property
    def size(self) -> int:
        return self.length if self.file is not None else len(self.body)

    def pieces(self, limit: int, chunk: int) -> Iterator[bytes]:
        """The first ``limit`` body bytes in chunks."""
        if self.file is None:
            view = memoryview(self.body)[:limit]
            for start in range(0, len(view), chunk):
                yield bytes(view[start : start + chunk])
            return
        with open(self.file, "rb") as fh:
            fh.seek(self.offset)
            left = min(limit, self.length)
            while left > 0:
                data = fh.read(min(chunk, left))
                if not data:
                    return
                left -= len(data)
                yield data


def text_reply(
    text: str,
    status: int = 200,
    content_type: str = "text/plain",
    headers: Mapping[str, str] | None = None,
) -> Reply:
    hdrs = {"Content-Type": f"{content_type}; charset=utf-8", **(headers or {})}
    return Reply(status, hdrs, text.encode("utf-8"))


def _error_reply(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    return text_reply(message.rstrip("\n") + "\n", status, headers=headers)


# --------------------------------------------------------------------------- parsing helpers


def parse_byte_range(value: str, size: int) -> tuple[int, int] | None:
    """Inclusive byte range of a ``Range`` header for a body of ``size`` bytes.

    None means "ignore the header and send everything" (malformed, or several ranges, as
    RFC 9110 allows); :class:`HTTPFailure` 416 means unsatisfiable.
    """
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not match or (match[1] == "" and match[2] == ""):
        return None
    unsatisfiable = HTTPFailure(
        416,
        f"range {value!r} not satisfiable for {size} bytes",
        {"Content-Range": f"bytes */{size}"},
    )
    if match[1] == "":
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - suffix), size - 1
    start = int(match[1])
    if match[2] and int(match[2]) < start:
        return None  # "bytes=9-5" is malformed: ignored
    if start >= size:
        raise unsatisfiable
    end = int(match[2]) if match[2] else size - 1
    return start, min(end, size - 1)


def _values(params: Mapping[str, Any], name: str) -> list[str]:
    """Every non-empty value of a (possibly repeated) parameter, as text."""
    getall = getattr(params, "getall", None)
    values = getall(name, []) if getall is not None else [params.get(name)]
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def _float_param(
    params: Mapping[str, str], name: str, default: float | None = None
) -> float | None:
    raw = params.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidParameterError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidParameterError(f"{name}={raw!r} is not a finite number")
    return value


def _limits_param(params: Mapping[str, Any], name: str, colour: bool) -> Any:
    """``min``/``max``: one number, or (colour) one per channel as ``a,b,c``."""
    raw = params.get(name)
    if raw is None or str(raw).strip() == "":
        return None
    parts = [p for p in str(raw).split(",") if p.strip()]
    if len(parts) > (3 if colour else 1):
        raise InvalidParameterError(f"{name}={raw!r}: too many values")
    values = [_float_param({name: p}, name) for p in parts]
    return values if colour else values[0]


def _bool_param(params: Mapping[str, str], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidParameterError(f"{name}={raw!r}: expected true or false")


def parse_position_lines(text: str) -> list[tuple[int, str, str]]:
    """``(line number, ra, dec)`` of the ``ra dec`` lines of a POSTed position file (blank
    and ``#`` lines skipped; commas count as spaces)."""
    out: list[tuple[int, str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.replace(",", " ").split()
        if len(parts) < 2:
            raise InvalidParameterError(
                f"line {number} of the position file: {line!r} is not 'ra dec' in degrees"
            )
        out.append((number, parts[0], parts[1]))
    return out


def _degrees(ra_text: str, dec_text: str, where: str) -> tuple[float, float]:
    try:
        ra, dec = float(ra_text), float(dec_text)
    except ValueError:
        raise InvalidParameterError(
            f"{where}: ra={ra_text!r} dec={dec_text!r} are not numbers in degrees"
        ) from None
    if not (math.isfinite(ra) and math.isfinite(dec)) or abs(dec) > 90:
        raise InvalidParameterError(
            f"{where}: ra={ra_text!r} dec={dec_text!r}: need finite degrees with |dec| <= 90"
        )
    return ra, dec


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _strict(value: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, np.generic):
        return _strict(value.item())
    return value


def _json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(_strict(data), default=_json_default, allow_nan=False),
        status=status,
        content_type="application/json",
    )


def _loads_json(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        raise InvalidParameterError(f"request body is not JSON: {err}") from None


# --------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class _CutPlan:
    ref: Any
    position: tuple[str, float, float] | None


class Service:
    """Handlers of the emulated service around one sky, file cache and state."""

    def __init__(
        self,
        sky: SyntheticSky,
        cache: WholeFileCache,
        state: ServiceState,
        executor: ThreadPoolExecutor,
    ) -> None:
        self.sky = sky
        self.cache = cache
        self.state = state
        self.executor = executor
        self._header = functools.lru_cache(maxsize=4096)(self._header_uncached)
        self._listing = functools.lru_cache(maxsize=16384)(self._listing_uncached)
        self._images = functools.lru_cache(maxsize=4096)(self._images_uncached)

    # ----- the sky, cached -------------------------------------------------------------

    def _header_uncached(self, ref: Any) -> fits.Header:
        return self.sky.image_header(ref)

    def _images_uncached(self, skycell: SkycellId, bands: str, types: tuple[str, ...]) -> tuple:
        return tuple(self.sky.images(skycell, bands, types))

    def _listing_uncached(self, skycell: SkycellId, band: str, image_type: str) -> frozenset[str]:
        return frozenset(r.filename for r in self._images(skycell, band, (image_type,)))

    def lookup(self, name: str) -> Any:
        """The ImageRef of a listed file name; 404 unless the service lists it."""
        text = (name or "").strip()
        try:
            ref = ImageRef.from_filename(text)
        except (InvalidParameterError, ValueError):
            raise HTTPFailure(404, f"{text!r} is not a PS1 image file name") from None
        if "/" in text and "/" + text.lstrip("/") != ref.filename:
            raise HTTPFailure(404, f"{text!r}: no such file (it would be {ref.filename})")
        if not self.sky.has_data(ref.skycell):
            raise HTTPFailure(
                404, f"{text!r}: no PS1 data for {ref.skycell} (outside the 3pi footprint)"
            )
        if ref.filename not in self._listing(ref.skycell, ref.band, ref.image_type):
            raise HTTPFailure(404, f"{text!r}: no such image (not listed by ps1filenames.py)")
        return ref

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU or disk work in the thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    # ----- ps1filenames.py ---------------------------------------------------------------

    async def filenames(self, request: web.Request, params: CIMultiDict) -> Reply:
        file_text: str | None = None
        if "file" in params:
            raw = params.getone("file")
            if isinstance(raw, web.FileField):
                file_text = raw.file.read().decode("utf-8", errors="replace")
            else:
                file_text = str(raw)
        text = await self.run(self.listing_text, params, file_text)
        return text_reply(text)

    def listing_text(self, params: Mapping[str, Any], file_text: str | None) -> str:
        """The ``ps1filenames.py`` answer (runs in the thread pool)."""
        sep_name = str(params.get("sep", "") or "")
        if sep_name.lower() in SEPARATORS:
            sep = SEPARATORS[sep_name.lower()]
        elif sep_name in SEPARATORS:
            sep = SEPARATORS[sep_name]
        else:
            raise InvalidParameterError(f"sep={sep_name!r}: use space, comma or tab")
        filters = parse_filters(",".join(_values(params, "filters")).lower() or FILTERS)
        wanted = [
            t.strip().lower() for t in ",".join(_values(params, "type")).split(",") if t.strip()
        ] or ["stack"]
        real = [t for t in wanted if t not in UNSYNTHESISED_TYPES]
        types = parse_types(real) if real else ()

        lines = [sep.join(LISTING_COLUMNS)]

        def emit(sid: SkycellId, ra_s: str, dec_s: str) -> None:
            if not types or not self.sky.has_data(sid):
                return
            head = sep.join((str(sid.projcell), str(sid.subcell), ra_s, dec_s))
            for ref in self._images(sid, filters, types):
                mjd = "0.0" if ref.mjd is None else repr(float(ref.mjd))
                filename = ref.filename
                lines.append(
                    sep.join(
                        (
                            head,
                            ref.band,
                            mjd,
                            ref.image_type,
                            filename,
                            filename.rsplit("/", 1)[-1],
                            "0",
                        )
                    )
                )

        skycell = str(params.get("skycell") or "").strip()
        if skycell:
            sid = SkycellId.parse(skycell)  # InvalidSkycellError -> 400
            ra, dec = skycell_center(sid)
            emit(sid, repr(ra), repr(dec))
            return "\n".join(lines) + "\n"

        if file_text is not None:
            lines_in = parse_position_lines(file_text)
            texts = [(r, d) for _, r, d in lines_in]
            where = [f"line {n} of the position file" for n, _, _ in lines_in]
        elif params.get("ra") not in (None, "") and params.get("dec") not in (None, ""):
            texts = [(str(params["ra"]).strip(), str(params["dec"]).strip())]
            where = ["ra/dec"]
        else:
            raise InvalidParameterError(
                "give ra and dec (degrees), skycell=PPPP.SSS, or POST a 'file' of 'ra dec' lines"
            )
        coords = [_degrees(r, d, w) for (r, d), w in zip(texts, where)]
        if not coords:
            return "\n".join(lines) + "\n"
        located = locate([c[0] for c in coords], [c[1] for c in coords])
        for (ra, dec), projcell, subcell, inside in zip(
            coords, located["projcell"], located["subcell"], located["in_footprint"]
        ):
            if inside:
                emit(SkycellId(int(projcell), int(subcell)), repr(ra), repr(dec))
        return "\n".join(lines) + "\n"

    # ----- fitscut.cgi ---------------------------------------------------------------------

    async def fitscut(self, request: web.Request, params: CIMultiDict) -> Reply:
        body, content_type, npix = await self.run(self.fitscut_body, params)
        work = self.state.knobs.work_per_mpix
        if work > 0:
            await _hold(request, work * npix / 1e6)
        return Reply(200, {"Content-Type": content_type}, body)

    def _position(self, params: Mapping[str, Any]) -> tuple[str, float, float] | None:
        ra = _float_param(params, "ra")
        dec = _float_param(params, "dec")
        if ra is not None or dec is not None:
            if ra is None or dec is None:
                raise InvalidParameterError("give both ra and dec (degrees)")
            return ("radec", ra, dec)
        x = _float_param(params, "x")
        y = _float_param(params, "y")
        if x is None and y is None:
            return None
        if x is None or y is None:
            raise InvalidParameterError("give both x and y")
        if _bool_param(params, "wcs", False):
            return ("radec", x, y)
        return ("pixel", x, y)

    def cut_linear(
        self, ref: Any, position: tuple[str, float, float] | None, size: tuple[int, int]
    ) -> tuple[np.ndarray, Any, fits.Header]:
        """Linear float32 cutout of one image, the fitscut way (thread pool)."""
        header = self._header(ref)
        naxis1, naxis2 = int(header["NAXIS1"]), int(header["NAXIS2"])
        if position is None:
            xc, yc = naxis1 / 2 + 0.5, naxis2 / 2 + 0.5
        elif position[0] == "radec":
            _, ra, dec = position
            if abs(dec) > 90:
                raise InvalidParameterError(f"dec={dec} is not in -90..90")
            xc, yc = position_pixel(header, ra, dec)
        else:
            xc, yc = position[1] + 1.0, position[2] + 1.0  # 0-based pixel -> 1-based
        if not (math.isfinite(xc) and math.isfinite(yc)):
            raise InvalidParameterError(
                f"position {position[1:]} does not project onto {ref.shortname}"
            )  # type: ignore[index]
        box = cutout_box(xc, yc, size)
        sky = self.sky
        pixels = cut(
            box,
            naxis1,
            naxis2,
            lambda rows, cols: linear_pixels(sky.render_disk(ref, rows, cols), header),
        )
        return pixels, box, header

    def fitscut_body(self, params: Mapping[str, Any]) -> tuple[bytes, str, int]:
        """``(body, content type, pixels cut)`` of a fitscut request (thread pool)."""
        fmt = str(params.get("format") or "jpg").strip().lower()
        if fmt != "fits" and fmt not in IMAGE_FORMATS:
            raise InvalidParameterError(f"format={fmt!r}: use fits, jpg or png")
        size = parse_size(str(params.get("size") or DEFAULT_CUTOUT_SIZE))
        names = {c: str(params.get(c) or "").strip() for c in ("red", "green", "blue")}
        if not names["red"]:
            raise InvalidParameterError("red= is required: a file name listed by ps1filenames.py")
        colour = bool(names["green"] or names["blue"])
        if colour and fmt == "fits":
            raise InvalidParameterError(
                "colour FITS is not offered: request one FITS cutout per image"
            )
        position = self._position(params)
        refs = {c: self.lookup(n) for c, n in names.items() if n}
        if fmt == "fits":
            pixels, box, header = self.cut_linear(refs["red"], position, size)
            hdr = cutout_header(header, box.x0, box.y0, box.width, box.height)
            buf = io.BytesIO()
            fits.PrimaryHDU(data=pixels, header=hdr).writeto(buf, output_verify="silentfix")
            return buf.getvalue(), "image/fits", pixels.size

        display = {
            "autoscale": _float_param(params, "autoscale", DEFAULT_AUTOSCALE),
            "vmin": _limits_param(params, "min", colour),
            "vmax": _limits_param(params, "max", colour),
            "asinh": _bool_param(params, "asinh", True),
            "inverted": _bool_param(params, "invert", False),
        }
        _bool_param(params, "compass", False)  # accepted; no compass is drawn
        output_size = _float_param(params, "output_size")
        zoom = _float_param(params, "zoom")
        if output_size is not None and not output_size.is_integer():
            raise InvalidParameterError(f"output_size={output_size} is not a whole number")
        planes = {c: self.cut_linear(r, position, size)[0] for c, r in refs.items()}
        if colour:
            image = fitscut_rgb(
                planes.get("red"), planes.get("green"), planes.get("blue"), **display
            )
        else:
            image = fitscut_grey(planes["red"], **display)
        height, width = image.shape[:2]
        out_w, out_h = output_shape(width, height, int(output_size or 0) or None, zoom)
        image = resize_image(image, out_w, out_h)
        return encode_image(image, fmt), IMAGE_FORMATS[fmt][1], sum(p.size for p in planes.values())

    # ----- whole files ---------------------------------------------------------------------

    async def whole_file(self, request: web.Request, params: CIMultiDict) -> Reply:
        info = request.match_info
        name = f"/rings.v3.skycell/{info['projcell']}/{info['subcell']}/{info['name']}"
        ref = await self.run(self.lookup, name)  # parses the name: never a raw path join
        path = Path(await self.run(self.cache.path, ref))
        size = path.stat().st_size
        etag = hashlib.sha1(
            f"{getattr(self.sky, 'seed', 0)}:{ref.filename}:{size}".encode()
        ).hexdigest()[:20]
        headers = {
            "Content-Type": "image/fits",
            "Accept-Ranges": "bytes",
            "ETag": f'"{etag}"',
            "Last-Modified": "Mon, 28 Jan 2019 00:00:00 GMT",  # the DR2 release date
        }
        spec = request.headers.get("Range")
        if spec is not None:
            self.state.metrics.add("range_requests")
            byte_range = parse_byte_range(spec, size)
            if byte_range is not None:
                start, end = byte_range
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                return Reply(206, headers, file=path, offset=start, length=end - start + 1)
        return Reply(200, headers, file=path, offset=0, length=size)

    # ----- ps1cutouts and the index ----------------------------------------------------------

    async def cutouts_page(self, request: web.Request, params: CIMultiDict) -> Reply:
        html, status = await self.run(page.cutouts_page, self, params)
        return text_reply(html, status, content_type="text/html")

    async def index(self, request: web.Request, params: CIMultiDict) -> Reply:
        return text_reply(page.index_page(self.state.knobs.as_dict()), content_type="text/html")

    # ----- emulator endpoints ------------------------------------------------------------------

    async def truth(self, request: web.Request) -> web.Response:
        try:
            ra = _float_param(request.query, "ra")
            dec = _float_param(request.query, "dec")
            radius = _float_param(request.query, "radius", 60.0)
            mjd = _float_param(request.query, "mjd")
            if ra is None or dec is None:
                raise InvalidParameterError("truth needs ra and dec (degrees)")
            if abs(dec) > 90:
                raise InvalidParameterError(f"dec={dec} is not in -90..90")
            if not 0 < radius <= 3600:  # type: ignore[operator]
                raise InvalidParameterError("radius (arcsec) must be in (0, 3600]")
        except InvalidParameterError as err:
            return _json_response({"error": str(err)}, status=400)
        data = await self.run(self.truth_list, ra, dec, radius, mjd)
        return _json_response(data)

    def truth_list(self, ra: float, dec: float, radius: float, mjd: float | None) -> list[dict]:
        sources = [dict(s) for s in self.sky.sources(ra, dec, radius)]
        if mjd is not None:
            for src in sources:
                src["mjd_utc"] = mjd
                src["mag_at_mjd"] = {
                    band: float(self.sky.true_mag(src, band, mjd)) for band in FILTERS
                }
        return sources

    async def metrics(self, request: web.Request) -> web.Response:
        for _ in range(3):
            await asyncio.sleep(0)  # as Emulator.metrics(): after the work already queued
        return _json_response(self.state.metrics.snapshot())

    async def metrics_reset(self, request: web.Request) -> web.Response:
        self.state.metrics.reset()
        return _json_response(self.state.metrics.snapshot())

    async def config(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                changes = _loads_json(await request.text())
                if not isinstance(changes, dict):
                    raise InvalidParameterError("POST a JSON object of settings")
                self.state.configure(**changes)
            except InvalidParameterError as err:
                return _json_response({"error": str(err)}, status=400)
        return _json_response(self.state.knobs.as_dict())

    async def emulator_info(self, request: web.Request) -> web.Response:
        return _json_response(
            {
                "service": "ps1dask emulator of ps1images.stsci.edu",
                "seed": getattr(self.sky, "seed", None),
                "knobs": self.state.knobs.as_dict(),
                "endpoints": {
                    "truth": "/_emulator/truth?ra=&dec=&radius=&mjd=",
                    "metrics": "/_emulator/metrics",
                    "metrics_reset": "POST /_emulator/metrics/reset",
                    "config": "GET|POST /_emulator/config",
                },
            }
        )

    # ----- the middleware: accounting, limits, faults, latency, bandwidth ----------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        endpoint = endpoint_of(request.path)
        if endpoint is None:
            return await handler(request)
        state = self.state
        flight = state.enter(request, endpoint)  # before any await
        try:
            knobs = state.knobs
            if flight.refused:
                reply = _error_reply(
                    503,
                    f"too many simultaneous requests from {flight.address} (limit "
                    f"{knobs.max_concurrency}); slow down",
                    {"Retry-After": format_retry_after(knobs.retry_after)},
                )
                return await self._transmit(request, reply, None, knobs)
            fault = state.faults.draw(knobs.fault_rate, knobs.fault_kinds)
            # The service works on the answer while the latency runs: latency is the time to
            # the first byte, server work included (work longer than it adds to it).
            working = None
            if fault not in ("503", "429", "reset"):
                working = asyncio.ensure_future(self._reply(request, handler))
            if knobs.latency > 0 and not await _hold(request, knobs.latency):
                if working is not None:
                    working.cancel()
                return web.Response()  # the client hung up; nothing to send
            if fault in ("503", "429"):
                state.metrics.fault(fault)
                message = (
                    "service temporarily unavailable" if fault == "503" else "too many requests"
                )
                reply = _error_reply(
                    int(fault),
                    f"{message} (emulated fault)",
                    {"Retry-After": format_retry_after(knobs.retry_after)},
                )
                return await self._transmit(request, reply, None, knobs)
            if fault == "reset":
                state.metrics.fault(fault)
                _reset_connection(request)
                return web.Response()
            if fault == "stall":
                state.metrics.fault(fault)
                if not await _hold(request, knobs.stall_seconds):
                    if working is not None:
                        working.cancel()
                    return web.Response()
            assert working is not None
            reply = await working
            if fault == "truncate":
                if reply.size < 2 or request.method == "HEAD":
                    fault = "reset"  # nothing to cut short: reset instead
                    state.metrics.fault(fault)
                    _reset_connection(request)
                    return web.Response()
                state.metrics.fault(fault)
            return await self._transmit(request, reply, fault, knobs)
        finally:
            state.leave(flight)

    async def _reply(self, request: web.Request, handler: Callable) -> Reply:
        try:
            result = await handler(request)
        except HTTPFailure as err:
            return _error_reply(err.status, str(err), err.headers)
        except web.HTTPException as exc:
            headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "location")}
            return _error_reply(exc.status, exc.text or exc.reason, headers)
        except ServiceHTTPError as err:  # e.g. the sky's NotFoundError for a missing warp
            return _error_reply(err.status, str(err))
        except (InvalidParameterError, PS1DaskError, ValueError) as err:
            return _error_reply(400, str(err))
        except asyncio.CancelledError:
            raise
        except Exception as err:  # pragma: no cover - a bug; still answer like a server
            log.exception("emulator error on %s", request.path_qs)
            return _error_reply(500, f"internal error in the emulator: {err!r}")
        if isinstance(result, Reply):
            return result
        raise TypeError(f"service handler returned {type(result).__name__}")  # pragma: no cover

    async def _transmit(
        self, request: web.Request, reply: Reply, fault: str | None, knobs: Knobs
    ) -> web.StreamResponse:
        metrics = self.state.metrics
        metrics.status(reply.status)
        resp = web.StreamResponse(status=reply.status, headers=reply.headers)
        total = reply.size
        resp.content_length = total
        try:
            await resp.prepare(request)
            if request.method == "HEAD":
                await resp.write_eof()
                return resp
            limit = total // 2 if fault == "truncate" else total
            bandwidth = knobs.bandwidth
            chunk = 256 * 1024
            if bandwidth:
                chunk = int(min(256 * 1024, max(4096, bandwidth * 1e6 * 0.02)))
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            sent = 0
            for piece in reply.pieces(limit, chunk):
                await resp.write(piece)
                sent += len(piece)
                metrics.add("bytes_sent", len(piece))
                if bandwidth:
                    delay = t0 + sent / (bandwidth * 1e6) - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
            if fault == "truncate":
                transport = request.transport
                if transport is not None:
                    transport.close()  # flushes what was written, then FIN
                return resp
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away mid-answer
        return resp

    # ----- routing ----------------------------------------------------------------------------

    def _service(self, method: Callable) -> Callable:
        async def handler(request: web.Request) -> Reply:
            params: CIMultiDict = CIMultiDict(request.query)
            if request.method == "POST":
                form = await request.post()
                for key, value in form.items():
                    params.add(key, value)
            return await method(request, params)

        return handler

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=256 * 1024**2)
        svc = self._service
        app.router.add_route("GET", LIST_PATH, svc(self.filenames))
        app.router.add_route("POST", LIST_PATH, svc(self.filenames))
        app.router.add_route("GET", FITSCUT_PATH, svc(self.fitscut))
        app.router.add_route("POST", FITSCUT_PATH, svc(self.fitscut))
        app.router.add_route("GET", CUTOUTS_PAGE_PATH, svc(self.cutouts_page))
        app.router.add_route("POST", CUTOUTS_PAGE_PATH, svc(self.cutouts_page))
        # Whole files: GET also answers HEAD.
        app.router.add_get(
            FILES_PREFIX + r"{projcell:\d{4}}/{subcell:\d{3}}/{name:[A-Za-z0-9._]+}",
            svc(self.whole_file),
        )
        app.router.add_get("/", svc(self.index))
        app.router.add_get("/_emulator/truth", self.truth)
        app.router.add_get("/_emulator/metrics", self.metrics)
        app.router.add_post("/_emulator/metrics/reset", self.metrics_reset)
        app.router.add_get("/_emulator/config", self.config)
        app.router.add_post("/_emulator/config", self.config)
        app.router.add_get("/_emulator/", self.emulator_info)
        app.router.add_get("/_emulator", self.emulator_info)
        return app


async def _hold(request: web.BaseRequest, seconds: float) -> bool:
    """Wait ``seconds``; False as soon as the client has hung up."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        remaining = end - loop.time()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(remaining, 0.05))


def _reset_connection(request: web.BaseRequest) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), as a crashed front end would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:  # pragma: no cover
            pass
    transport.abort()


# --------------------------------------------------------------------------- in-process runner


class Emulator:
    """The emulated PS1 image service, served from a background thread.

    >>> from ps1dask.emulator import Emulator
    >>> with Emulator(seed=0) as emu:                            # doctest: +SKIP
    ...     requests.get(f"{emu.url}/cgi-bin/ps1filenames.py?skycell=1405.053").text

    Parameters
    ----------
    seed
        seed of the synthetic sky and of the fault generator.
    latency, bandwidth, fault_rate, fault_kinds, retry_after, stall_seconds, max_concurrency,
    work_per_mpix
        the knobs (see :class:`~ps1dask.emulator.faults.Knobs`); change them live with
        :meth:`configure` or ``POST /_emulator/config``.
    cache_dir
        where whole skycell files are written (None: a temporary directory removed at
        :meth:`stop`).
    host, port
        address to bind (port 0 picks a free port; see :attr:`url`).
    workers
        threads rendering pixels and files (default: CPUs + 4, at most 16).
    sky
        a :class:`SyntheticSky` to serve instead of ``SyntheticSky(seed=seed)``.
    """

    def __init__(
        self,
        seed: int = 0,
        latency: float = 0.0,
        bandwidth: float | None = None,
        fault_rate: float = 0.0,
        cache_dir: str | os.PathLike | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fault_kinds: Any = Knobs.fault_kinds,
        retry_after: float = 1.0,
        stall_seconds: float = 30.0,
        max_concurrency: int = 10,
        work_per_mpix: float = 0.0,
        workers: int | None = None,
        sky: SyntheticSky | None = None,
    ) -> None:
        self.knobs0 = Knobs(
            latency=latency,
            bandwidth=bandwidth,
            work_per_mpix=work_per_mpix,
            fault_rate=fault_rate,
            fault_kinds=fault_kinds,
            retry_after=retry_after,
            stall_seconds=stall_seconds,
            seed=seed,
            max_concurrency=max_concurrency,
        )
        self.seed = seed
        self.sky = sky if sky is not None else SyntheticSky(seed=seed)
        self.host = host
        self._bind_port = int(port)
        self.port = int(port)  # the bound port once started
        self._cache_dir = cache_dir
        self._tmpdir: str | None = None
        self._finalizer: weakref.finalize | None = None
        self._workers = workers or min(16, (os.cpu_count() or 2) + 4)
        self.state = ServiceState(self.knobs0)
        self.cache: WholeFileCache | None = None
        self._server = BackgroundServer("ps1dask-emulator", shutdown_timeout=0.5, backlog=512)
        self._executor: ThreadPoolExecutor | None = None
        self._url: str | None = None

    # ----- life cycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server.running

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("the emulator is not running; call start() or use 'with'")
        return self._url

    def start(self) -> Emulator:
        if self.running:
            return self
        if self._cache_dir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="ps1dask-emulator-")
            # removed at stop(), or at exit if the emulator is never stopped
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
            directory = Path(self._tmpdir)
        else:
            directory = Path(self._cache_dir)
            directory.mkdir(parents=True, exist_ok=True)
        self.cache = WholeFileCache(self.sky, directory)
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="ps1dask-emulator")
        sock = bind_socket(self.host, self._bind_port, backlog=512)
        self.port = sock.getsockname()[1]
        self._url = f"http://{_url_host(self.host)}:{self.port}"
        try:
            self._server.start(sock, self._make_app)
        except RuntimeError:
            self._url = None
            self._cleanup_files()
            raise
        log.info("ps1dask emulator serving at %s", self._url)
        return self

    def _make_app(self) -> web.Application:
        assert self.cache is not None and self._executor is not None
        self.service = Service(self.sky, self.cache, self.state, self._executor)
        return self.service.make_app()

    def stop(self) -> None:
        """Stop serving, wait for the thread, and remove a temporary cache directory."""
        self._server.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._url = None
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._url or "not running"
        return f"<Emulator {where} seed={self.seed}>"

    # ----- knobs and metrics ---------------------------------------------------------------------

    @property
    def knobs(self) -> Knobs:
        return self.state.knobs

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change knobs live (e.g. ``fault_rate=0.2, fault_kinds="503,reset"``); returns all."""
        return self.state.configure(**knobs).as_dict()

    def metrics(self) -> dict[str, Any]:
        """Counters of service requests (see ``/_emulator/metrics``).

        Taken on the server's event loop, after the work already queued there: a response
        the caller has just received is never still counted in flight.
        """
        return self._on_loop(self.state.metrics.snapshot)

    def reset_metrics(self) -> None:
        """Zero the counters (``in_flight`` is a live gauge and is kept)."""
        self._on_loop(self.state.metrics.reset)

    def _on_loop(self, fn: Callable[[], T]) -> T:
        loop = self._server.loop
        if (
            loop is None
            or not loop.is_running()
            or self._server.thread is threading.current_thread()
        ):
            return fn()

        async def settled() -> T:
            # Let the callbacks already queued run first (e.g. the end of a handler whose
            # last bytes the client has just read).
            for _ in range(3):
                await asyncio.sleep(0)
            return fn()

        future = asyncio.run_coroutine_threadsafe(settled(), loop)
        try:
            return future.result(timeout=10)
        except Exception:  # noqa: BLE001  # pragma: no cover - loop stopping or stuck: read directly
            future.cancel()
            return fn()


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
