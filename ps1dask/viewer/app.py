"""The viewer's HTTP server: JSON about positions, PNGs rendered on demand.

Routes (all GET):

* ``/``: the page (:mod:`ps1dask.viewer.page`);
* ``/api/info``: the store (positions, filters, size, warps, defaults);
* ``/api/positions?offset=&limit=&q=``: positions with labels (``q`` matches id or skycell);
* ``/api/position/{i}``: one position, with its warp epochs (MJD, status) per filter;
* ``/image/{i}.png?band=g|colour&epoch=&stretch=&autoscale=&contrast=&invert=&min=&max=
  &method=&colour=&size=``: a picture (grey of one filter, or the colour composite);
* ``/lightcurve/{i}.png``, ``/api/lightcurve/{i}``: the aperture light curve of the warps.

The store is opened lazily; only the small per-position metadata is read at start. Pixels
are read and rendered in a thread pool (never on the event loop), and the last PNGs are
kept in a small cache, so blinking through epochs is smooth.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import numpy as np
from aiohttp import web

from ps1dask.background_server import BackgroundServer, bind_socket
from ps1dask.exceptions import InvalidParameterError
from ps1dask.render import (
    COLOUR_METHODS,
    STRETCHES,
    Display,
    aperture_lightcurve,
    colour_bytes,
    cutout_bytes,
    default_colour_filters,
    has_warps,
    store_filters,
)
from ps1dask.render.parallel import PLOT_LOCK
from ps1dask.render.store import load, status_codes
from ps1dask.storage import mjd_days, open_store
from ps1dask.storage.layout import STATUS_NAMES
from ps1dask.storage.location import StoreLike, StoreLocation
from ps1dask.viewer.page import PAGE_HTML

log = logging.getLogger("ps1dask.viewer")

_NO_STORE = {"Cache-Control": "no-store"}
_CACHE = {"Cache-Control": "private, max-age=600"}


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class _LRU:
    """A small thread-safe LRU cache of bytes."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = value
            self._size += len(value)
            while self._size > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)


class ViewerState:
    """The opened store and its per-position metadata (read once)."""

    def __init__(self, store: StoreLike) -> None:
        self.path = StoreLocation.of(store)
        self.ds = open_store(self.path)
        ds = self.ds
        self.filters = store_filters(ds)
        self.n = int(ds.sizes["position"])
        self.width = int(ds.sizes["x"])
        self.height = int(ds.sizes["y"])
        self.warps = has_warps(ds)
        self.n_epoch_axis = int(ds.sizes.get("epoch", 0))
        names = [
            v
            for v in ("id", "ra", "dec", "skycell", "stack_status", "warp_status", "n_epochs")
            if v in ds.variables
        ]
        meta = load(ds[names])
        self.ids = (
            [_text(v) for v in meta["id"].values]
            if "id" in meta
            else [str(i) for i in range(self.n)]
        )
        self.ra = meta["ra"].values.astype(float) if "ra" in meta else np.full(self.n, np.nan)
        self.dec = meta["dec"].values.astype(float) if "dec" in meta else np.full(self.n, np.nan)
        self.skycells = (
            [_text(v) for v in meta["skycell"].values] if "skycell" in meta else [""] * self.n
        )
        self.status = status_codes(meta).astype(int)
        self.n_epochs = (
            meta["n_epochs"].values.astype(int) if (self.warps and "n_epochs" in meta) else None
        )
        self._search = [f"{a} {b}".lower() for a, b in zip(self.ids, self.skycells)]
        try:
            self.colour_default = "".join(b or "" for b in default_colour_filters(self.filters))
        except InvalidParameterError:
            self.colour_default = ""

    def index(self, raw: str) -> int:
        try:
            i = int(raw)
        except ValueError:
            raise InvalidParameterError(f"position {raw!r} is not a number") from None
        if not 0 <= i < self.n:
            raise InvalidParameterError(f"position {i} is not in 0..{self.n - 1}")
        return i

    def label(self, i: int) -> dict[str, Any]:
        out = {
            "index": i,
            "id": self.ids[i],
            "ra": float(self.ra[i]) if math.isfinite(self.ra[i]) else None,
            "dec": float(self.dec[i]) if math.isfinite(self.dec[i]) else None,
            "skycell": self.skycells[i],
            "status": {
                f: STATUS_NAMES.get(int(self.status[i, k]), "unknown")
                for k, f in enumerate(self.filters)
            },
        }
        if self.n_epochs is not None:
            out["n_epochs"] = {f: int(self.n_epochs[i, k]) for k, f in enumerate(self.filters)}
        return out

    def search(self, q: str) -> list[int]:
        q = q.strip().lower()
        if not q:
            return list(range(self.n))
        return [i for i, s in enumerate(self._search) if q in s]

    def epochs(self, i: int) -> dict[str, list[dict[str, Any]]]:
        """Warp epochs of position ``i`` per filter: index, MJD, status (read on demand)."""
        if not self.warps:
            return {}
        ds = self.ds
        names = [v for v in ("warp_mjd", "warp_status") if v in ds.variables]
        sub = load(ds[names].isel(position=i))
        out: dict[str, list[dict[str, Any]]] = {}
        for k, f in enumerate(self.filters):
            n = int(self.n_epochs[i, k]) if self.n_epochs is not None else self.n_epoch_axis
            rows = []
            for e in range(min(n, self.n_epoch_axis)):
                mjd = (
                    float(mjd_days(sub["warp_mjd"].values[k, e])) if "warp_mjd" in sub else math.nan
                )
                st = int(sub["warp_status"].values[k, e]) if "warp_status" in sub else 1
                rows.append(
                    {
                        "epoch": e,
                        "mjd": mjd if math.isfinite(mjd) else None,
                        "status": STATUS_NAMES.get(st, "unknown"),
                    }
                )
            out[f] = rows
        return out


class ViewerApp:
    """Handlers of the viewer (one per store)."""

    def __init__(self, state: ViewerState, executor: ThreadPoolExecutor) -> None:
        self.state = state
        self.executor = executor
        self.cache = _LRU()

    async def run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(func, *args, **kwargs))

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.router.add_get("/", self.page)
        app.router.add_get("/api/info", self.info)
        app.router.add_get("/api/positions", self.positions)
        app.router.add_get("/api/position/{i}", self.position)
        app.router.add_get("/api/lightcurve/{i}", self.lightcurve_json)
        app.router.add_get("/image/{i}.png", self.image)
        app.router.add_get("/lightcurve/{i}.png", self.lightcurve_png)
        return app

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[..., Any]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except InvalidParameterError as err:
            return web.json_response({"error": str(err)}, status=400, headers=_NO_STORE)

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(
            text=PAGE_HTML, content_type="text/html", charset="utf-8", headers=_NO_STORE
        )

    async def info(self, request: web.Request) -> web.Response:
        s = self.state
        ds = s.ds
        return web.json_response(
            {
                "store": str(s.path),
                "name": s.path.url.rstrip("/").rsplit("/", 1)[-1],
                "n_positions": s.n,
                "filters": s.filters,
                "width": s.width,
                "height": s.height,
                "warps": s.warps,
                "colour": s.colour_default,
                "stretches": list(STRETCHES),
                "methods": list(COLOUR_METHODS),
                "defaults": Display().to_dict(),
                "created": str(ds.attrs.get("created", "")),
                "service_url": str(ds.attrs.get("service_url", "")),
            },
            headers=_NO_STORE,
        )

    async def positions(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        try:
            offset = max(0, int(request.query.get("offset", 0)))
            limit = min(1000, max(1, int(request.query.get("limit", 200))))
        except ValueError:
            raise InvalidParameterError("offset and limit must be whole numbers") from None
        hits = await self.run(self.state.search, q) if q else range(self.state.n)
        items = [self.state.label(i) for i in list(hits[offset : offset + limit])]
        return web.json_response(
            {"total": len(hits), "offset": offset, "items": items}, headers=_NO_STORE
        )

    async def position(self, request: web.Request) -> web.Response:
        i = self.state.index(request.match_info["i"])
        out = self.state.label(i)
        out["epochs"] = await self.run(self.state.epochs, i)
        return web.json_response(out, headers=_NO_STORE)

    def _render(self, i: int, params: dict[str, str]) -> bytes:
        s = self.state
        display = Display.from_params(params)
        band = params.get("band") or "colour"
        epoch_raw = params.get("epoch", "")
        epoch = None if epoch_raw in ("", "stack", "none") else int(epoch_raw)
        size_raw = params.get("size", "")
        size = int(size_raw) if size_raw else None
        if size is not None and not 16 <= size <= 2048:
            raise InvalidParameterError(f"size={size} must be 16..2048 pixels")
        if band == "colour":
            method = params.get("method") or "lupton"
            return colour_bytes(
                s.ds,
                i,
                params.get("colour") or None,
                display,
                fmt="png",
                method=method,
                epoch=epoch,
                size=size,
            )
        return cutout_bytes(s.ds, i, band, display, fmt="png", epoch=epoch, size=size)

    async def image(self, request: web.Request) -> web.Response:
        i = self.state.index(request.match_info["i"])
        params = {k: v for k, v in request.query.items()}
        key = ("image", i, tuple(sorted(params.items())))
        data = self.cache.get(key)
        if data is None:
            try:
                data = await self.run(self._render, i, params)
            except ValueError as err:
                if isinstance(err, InvalidParameterError):
                    raise
                raise InvalidParameterError(str(err)) from err
            self.cache.put(key, data)
        return web.Response(body=data, content_type="image/png", headers=_CACHE)

    def _lightcurve_png(self, i: int) -> bytes:
        from ps1dask.plots import figure_png, lightcurve_figure

        df = aperture_lightcurve(self.state.ds, i)
        with PLOT_LOCK:
            fig = lightcurve_figure(
                df,
                title=f"{self.state.ids[i]}: aperture photometry of the warps",
                figsize=(7.0, 2.8),
            )
            return figure_png(fig, dpi=90)

    async def lightcurve_png(self, request: web.Request) -> web.Response:
        i = self.state.index(request.match_info["i"])
        if not self.state.warps:
            raise web.HTTPNotFound(text="this store has no warps")
        key = ("lightcurve", i)
        data = self.cache.get(key)
        if data is None:
            data = await self.run(self._lightcurve_png, i)
            self.cache.put(key, data)
        return web.Response(body=data, content_type="image/png", headers=_CACHE)

    async def lightcurve_json(self, request: web.Request) -> web.Response:
        i = self.state.index(request.match_info["i"])
        df = await self.run(aperture_lightcurve, self.state.ds, i)
        rows = json.loads(df.to_json(orient="records"))
        return web.json_response(
            {"flux_unit": df.attrs.get("flux_unit"), "rows": rows}, headers=_NO_STORE
        )


class Viewer:
    """The viewer of one store, served from a background thread (:meth:`wait` blocks on it).

    Parameters
    ----------
    store : str, Path or StoreLocation
        The ps1dask store shown: a directory, a URL (``s3://bucket/field.zarr``), or a
        :class:`~ps1dask.storage.StoreLocation` for a URL with storage options.
    host : str
        Address the server listens on (default loopback only).
    port : int
        TCP port; 0 for any free one (see :attr:`url` once started).
    workers : int, optional
        Threads that read the store and draw the pictures.

    Examples
    --------
    >>> with Viewer("cutouts.zarr") as v:          # doctest: +SKIP
    ...     print(v.url)
    """

    def __init__(
        self,
        store: StoreLike,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int | None = None,
    ) -> None:
        # a path, a URL or a StoreLocation (a URL with its storage options)
        self.store = StoreLocation.of(store)
        self.host = host
        self._bind_port = int(port)
        self.port: int | None = None
        self._workers = workers or min(8, (os.cpu_count() or 2) + 2)
        self._server = BackgroundServer("ps1dask-viewer", shutdown_timeout=1.0)
        self._executor: ThreadPoolExecutor | None = None
        self.state: ViewerState | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the viewer is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _prepare(self) -> socket.socket:
        self.state = ViewerState(self.store)
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="ps1dask-viewer")
        sock = bind_socket(self.host, self._bind_port, backlog=128)
        self.port = sock.getsockname()[1]
        return sock

    def _make_app(self) -> web.Application:
        assert self.state is not None and self._executor is not None
        return ViewerApp(self.state, self._executor).make_app()

    def start(self) -> Self:
        """Serve from a background thread; returns when the server accepts connections."""
        if self._server.running:
            return self
        self._server.start(self._prepare(), self._make_app)
        return self

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C interrupts the wait with KeyboardInterrupt)."""
        self._server.join()

    def _shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def stop(self) -> None:
        self._server.stop()
        self._shutdown_executor()
        self.port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
