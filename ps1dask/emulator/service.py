"""Handlers of the emulated service: ``ps1filenames.py``, ``fitscut.cgi``, whole files, the
cutout page, and the emulator's own ``/_emulator/*`` endpoints."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar

from aiohttp import web
from multidict import CIMultiDict

from ps1dask.emulator import page
from ps1dask.emulator.cutout_processes import CutoutProcesses
from ps1dask.emulator.cutter import SkyCutter
from ps1dask.emulator.files import WholeFileCache
from ps1dask.emulator.metrics import ServiceState
from ps1dask.emulator.middleware import ServiceMiddleware
from ps1dask.emulator.params import (
    degrees_of,
    float_param,
    is_local_control_request,
    loads_json,
    param_values,
    parse_byte_range,
    parse_position_lines,
)
from ps1dask.emulator.replies import Reply, hold, json_response, text_reply
from ps1dask.emulator.s3 import S3Bucket, bucket_route_pattern
from ps1dask.emulator.service_rules import (
    FILTERS,
    parse_filters,
    parse_types,
)
from ps1dask.emulator.sky import ImageRef, SyntheticSky
from ps1dask.exceptions import HTTPFailure, InvalidParameterError
from ps1dask.tessellation import SkycellId, locate, skycell_center
from ps1dask.wire import CUTOUTS_PAGE_PATH, FILES_PREFIX, FITSCUT_PATH, LIST_PATH, LISTING_COLUMNS

T = TypeVar("T")

#: Types the real service lists but the emulator does not synthesise (catalogues, PSFs):
#: accepted and silently empty, like a type with no files.
UNSYNTHESISED_TYPES = frozenset({"stack.psf", "stack.mdc", "stack.cmf", "warp.cmf", "warp.mdc"})
SEPARATORS = {"": " ", "space": " ", " ": " ", "comma": ",", ",": ",", "tab": "\t", "\t": "\t"}
#: Largest request body (bytes): a position file of MAX_POSITIONS_PER_REQUEST lines is far less.
MAX_BODY_BYTES = 1024**2
#: Most ``ra dec`` lines one POSTed position file may hold (ps1dask's client sends 5000).
MAX_POSITIONS_PER_REQUEST = 10_000
#: Most rows one ``ps1filenames.py`` answer may have (about 200 bytes each).
MAX_LISTING_ROWS = 1_000_000
#: Listing answers are made and sent in chunks of about this many bytes.
LISTING_CHUNK_BYTES = 64 * 1024


class Service:
    """Handlers of the emulated service around one sky, file cache and state."""

    def __init__(
        self,
        sky: SyntheticSky,
        cache: WholeFileCache,
        state: ServiceState,
        executor: ThreadPoolExecutor,
        bind_host: str = "127.0.0.1",
        max_renders: int | None = None,
        cutout_processes: CutoutProcesses | None = None,
    ) -> None:
        self.sky = sky
        self.bind_host = bind_host
        self.cache = cache
        self.state = state
        self.executor = executor
        self.cutter = SkyCutter(sky)
        #: worker processes that cut fitscut answers (None: this process's thread pool)
        self.cutout_processes = cutout_processes
        if max_renders is None:
            max_renders = min(8, max(2, os.cpu_count() or 2))
        #: whole-file renders at once (each holds ~0.3 GB for a few seconds): a flood of
        #: GETs of new files queues here, holding neither threads nor memory
        self.max_renders = int(max_renders)
        self._render_slots = asyncio.Semaphore(self.max_renders)
        self.s3 = S3Bucket(self)

    # ----- the sky's images (the cutter's caches) ----------------------------------------

    def listed_images(
        self, skycell: SkycellId, bands: str, types: tuple[str, ...]
    ) -> tuple[ImageRef, ...]:
        """What ``ps1filenames.py`` lists for one skycell (cached)."""
        return self.cutter.listed_images(skycell, bands, types)

    def lookup(self, name: str) -> ImageRef:
        """The ImageRef of a listed file name; 404 unless the service lists it."""
        return self.cutter.lookup(name)

    async def open_file(self, ref: ImageRef, head: bool) -> tuple[BinaryIO | None, int]:
        """``(open file, size)`` of ``ref``'s whole file, rendered first if need be; for a
        HEAD ``(None, size)``. The caller closes the file.

        A HEAD renders nothing: the size follows from the header
        (:meth:`WholeFileCache.size`). At most :attr:`max_renders` files render at once,
        service and S3 GETs together; the requests waiting for a render hold no thread.
        """
        if head:
            return None, await self.run(self.cache.size, ref)
        opened = await self.run(self.cache.open_existing, ref)
        if opened is None:
            async with self._render_slots:
                opened = await self.run(self.cache.open, ref)
        return opened

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
        # Everything that can fail is checked before the first byte; the rows are then made
        # and sent a chunk at a time, so a long answer never sits in memory.
        rows = await self.run(self.listing_rows, params, file_text)
        return Reply(200, {"Content-Type": "text/plain; charset=utf-8"}, stream=self._chunks(rows))

    async def _chunks(self, pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
        """The items of a blocking iterator, each made in the thread pool."""
        while True:
            piece = await self.run(next, pieces, None)
            if piece is None:
                return
            yield piece

    def listing_text(self, params: Mapping[str, Any], file_text: str | None) -> str:
        """The whole ``ps1filenames.py`` answer as text (for small answers and tests)."""
        return b"".join(self.listing_rows(params, file_text)).decode("utf-8")

    def listing_rows(self, params: Mapping[str, Any], file_text: str | None) -> Iterator[bytes]:
        """The ``ps1filenames.py`` answer as chunks of lines (runs in the thread pool).

        Checks every parameter and the answer's size first (at most
        :data:`MAX_POSITIONS_PER_REQUEST` positions and :data:`MAX_LISTING_ROWS` rows), so the
        errors come before any row; the rows themselves are made as the chunks are consumed.
        """
        sep_name = str(params.get("sep", "") or "")
        if sep_name.lower() in SEPARATORS:
            sep = SEPARATORS[sep_name.lower()]
        elif sep_name in SEPARATORS:
            sep = SEPARATORS[sep_name]
        else:
            raise InvalidParameterError(f"sep={sep_name!r}: use space, comma or tab")
        filters = parse_filters(",".join(param_values(params, "filters")).lower() or FILTERS)
        wanted = [
            t.strip().lower()
            for t in ",".join(param_values(params, "type")).split(",")
            if t.strip()
        ] or ["stack"]
        real = [t for t in wanted if t not in UNSYNTHESISED_TYPES]
        types = parse_types(real) if real else ()

        # (skycell, ra text, dec text) of every position that has images, in input order
        cells: list[tuple[SkycellId, str, str]] = []
        skycell = str(params.get("skycell") or "").strip()
        if skycell:
            sid = SkycellId.parse(skycell)  # InvalidSkycellError -> 400
            ra, dec = skycell_center(sid)
            cells.append((sid, repr(ra), repr(dec)))
        else:
            if file_text is not None:
                lines_in = parse_position_lines(file_text)
                if len(lines_in) > MAX_POSITIONS_PER_REQUEST:
                    raise HTTPFailure(
                        413,
                        f"the position file has {len(lines_in)} positions; one request takes "
                        f"at most {MAX_POSITIONS_PER_REQUEST}: split it",
                    )
                texts = [(r, d) for _, r, d in lines_in]
                where = [f"line {n} of the position file" for n, _, _ in lines_in]
            elif params.get("ra") not in (None, "") and params.get("dec") not in (None, ""):
                texts = [(str(params["ra"]).strip(), str(params["dec"]).strip())]
                where = ["ra/dec"]
            else:
                raise InvalidParameterError(
                    "give ra and dec (degrees), skycell=PPPP.SSS, or POST a 'file' of "
                    "'ra dec' lines"
                )
            coords = [degrees_of(r, d, w) for (r, d), w in zip(texts, where)]
            if coords:
                located = locate([c[0] for c in coords], [c[1] for c in coords])
                for (ra, dec), projcell, subcell, inside in zip(
                    coords, located["projcell"], located["subcell"], located["in_footprint"]
                ):
                    if inside:
                        cells.append((SkycellId(int(projcell), int(subcell)), repr(ra), repr(dec)))
        if types:
            cells = [c for c in cells if self.sky.has_data(c[0])]
        else:
            cells = []
        n_rows = sum(len(self.cutter.listed_images(c[0], filters, types)) for c in cells)
        if n_rows > MAX_LISTING_ROWS:
            raise HTTPFailure(
                413,
                f"the answer would have {n_rows} rows; one request lists at most "
                f"{MAX_LISTING_ROWS}: ask for fewer positions, filters or types",
            )
        return self._listing_chunks(sep, filters, types, cells)

    def _listing_chunks(
        self,
        sep: str,
        filters: str,
        types: tuple[str, ...],
        cells: list[tuple[SkycellId, str, str]],
    ) -> Iterator[bytes]:
        lines = [sep.join(LISTING_COLUMNS)]
        size = 0
        for sid, ra_s, dec_s in cells:
            head = sep.join((str(sid.projcell), str(sid.subcell), ra_s, dec_s))
            for ref in self.cutter.listed_images(sid, filters, types):
                mjd = "0.0" if ref.mjd is None else repr(float(ref.mjd))
                filename = ref.filename
                line = sep.join(
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
                lines.append(line)
                size += len(line)
                if size >= LISTING_CHUNK_BYTES:
                    yield ("\n".join(lines) + "\n").encode("utf-8")
                    lines, size = [], 0
        if lines:
            yield ("\n".join(lines) + "\n").encode("utf-8")

    # ----- fitscut.cgi ---------------------------------------------------------------------

    async def fitscut(self, request: web.Request, params: CIMultiDict) -> Reply:
        if self.cutout_processes is not None:
            body, content_type, npix = await self.cutout_processes.fitscut_body(params)
        else:
            body, content_type, npix = await self.run(self.cutter.fitscut_body, params)
        work = self.state.knobs.work_per_mpix
        if work > 0:
            await hold(request, work * npix / 1e6)
        return Reply(200, {"Content-Type": content_type}, body)

    # ----- whole files ---------------------------------------------------------------------

    async def whole_file(self, request: web.Request, params: CIMultiDict) -> Reply:
        info = request.match_info
        name = f"/rings.v3.skycell/{info['projcell']}/{info['subcell']}/{info['name']}"
        ref = await self.run(self.lookup, name)  # parses the name: never a raw path join
        fh, size = await self.open_file(ref, request.method == "HEAD")
        try:
            return self._file_reply(request, ref, fh, size)
        except BaseException:
            if fh is not None:
                fh.close()
            raise

    def _file_reply(
        self, request: web.Request, ref: ImageRef, fh: BinaryIO | None, size: int
    ) -> Reply:
        if fh is not None and request.method == "HEAD":
            fh.close()
            fh = None
        etag = hashlib.sha1(
            f"{getattr(self.sky, 'seed', 0)}:{ref.filename}:{size}".encode()
        ).hexdigest()[:20]
        headers = {
            "Content-Type": "image/fits",
            "Accept-Ranges": "bytes",
            "ETag": f'"{etag}"',
            "Last-Modified": "Mon, 28 Jan 2019 00:00:00 GMT",  # the DR2 release date
        }
        start, end = 0, size - 1
        status = 200
        spec = request.headers.get("Range")
        if spec is not None:
            self.state.metrics.add("range_requests")
            byte_range = parse_byte_range(spec, size)  # HTTPFailure 416 if unsatisfiable
            if byte_range is not None:
                start, end = byte_range
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                status = 206
        return Reply(
            status,
            headers,
            file=fh,
            offset=start,
            length=end - start + 1,
            head_only=fh is None,
        )

    # ----- ps1cutouts and the index ----------------------------------------------------------

    async def cutouts_page(self, request: web.Request, params: CIMultiDict) -> Reply:
        html, status = await self.run(page.cutouts_page, self, params)
        return text_reply(html, status, content_type="text/html")

    async def index(self, request: web.Request, params: CIMultiDict) -> Reply:
        return text_reply(page.index_page(self.state.knobs.as_dict()), content_type="text/html")

    # ----- emulator endpoints ------------------------------------------------------------------

    async def truth(self, request: web.Request) -> web.Response:
        try:
            ra = float_param(request.query, "ra")
            dec = float_param(request.query, "dec")
            radius = float_param(request.query, "radius", 60.0)
            mjd = float_param(request.query, "mjd")
            if ra is None or dec is None:
                raise InvalidParameterError("truth needs ra and dec (degrees)")
            if abs(dec) > 90:
                raise InvalidParameterError(f"dec={dec} is not in -90..90")
            if not 0 < radius <= 3600:  # type: ignore[operator]
                raise InvalidParameterError("radius (arcsec) must be in (0, 3600]")
        except InvalidParameterError as err:
            return json_response({"error": str(err)}, status=400)
        data = await self.run(self.truth_list, ra, dec, radius, mjd)
        return json_response(data)

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
        return json_response(self.state.metrics.snapshot())

    async def flights(self, request: web.Request) -> web.Response:
        for _ in range(3):
            await asyncio.sleep(0)  # as metrics(): after the work already queued
        return json_response(self.state.metrics.flights())

    async def metrics_reset(self, request: web.Request) -> web.Response:
        refused = self._refuse_control(request, needs_json=False)
        if refused is not None:
            return refused
        self.state.metrics.reset()
        return json_response(self.state.metrics.snapshot())

    def _refuse_control(self, request: web.Request, needs_json: bool) -> web.Response | None:
        """An error answer unless this state-changing request is the local user's own."""
        if not is_local_control_request(
            request.host, request.headers.get("Origin"), self.bind_host
        ):
            return json_response(
                {"error": "refused: emulator settings change only from its own host"}, 403
            )
        if needs_json and request.content_type != "application/json":
            return json_response(
                {"error": "POST the settings as Content-Type: application/json"}, 415
            )
        return None

    async def config(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            refused = self._refuse_control(request, needs_json=True)
            if refused is not None:
                return refused
            try:
                changes = loads_json(await request.text())
                if not isinstance(changes, dict):
                    raise InvalidParameterError("POST a JSON object of settings")
                self.state.configure(**changes)
            except InvalidParameterError as err:
                return json_response({"error": str(err)}, status=400)
        return json_response(self.state.knobs.as_dict())

    async def emulator_info(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "service": "ps1dask emulator of ps1images.stsci.edu",
                "seed": getattr(self.sky, "seed", None),
                "knobs": self.state.knobs.as_dict(),
                "endpoints": {
                    "truth": "/_emulator/truth?ra=&dec=&radius=&mjd=",
                    "metrics": "/_emulator/metrics",
                    "metrics_reset": "POST /_emulator/metrics/reset",
                    "flights": "/_emulator/metrics/flights",
                    "config": "GET|POST /_emulator/config",
                    "s3": "GET|HEAD /stpubdata/panstarrs/ps1/public/rings.v3.skycell/...",
                },
            }
        )

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
        app = web.Application(
            middlewares=[ServiceMiddleware(self.state).middleware], client_max_size=MAX_BODY_BYTES
        )
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
        # The S3 mode: every other first path segment is a bucket (only stpubdata exists).
        bucket = bucket_route_pattern()
        s3: Callable = self.s3.handle  # answers a Reply, like svc(): the middleware sends it
        app.router.add_route("*", "/" + bucket, s3)
        app.router.add_route("*", "/" + bucket + "/", s3)
        app.router.add_route("*", "/" + bucket + "/{key:.+}", s3)
        app.router.add_get("/_emulator/truth", self.truth)
        app.router.add_get("/_emulator/metrics", self.metrics)
        app.router.add_post("/_emulator/metrics/reset", self.metrics_reset)
        app.router.add_get("/_emulator/metrics/flights", self.flights)
        app.router.add_get("/_emulator/config", self.config)
        app.router.add_post("/_emulator/config", self.config)
        app.router.add_get("/_emulator/", self.emulator_info)
        app.router.add_get("/_emulator", self.emulator_info)
        return app
