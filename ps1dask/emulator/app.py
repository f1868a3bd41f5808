"""The emulated ps1images.stsci.edu in-process: :class:`Emulator` serves the aiohttp application
of :mod:`ps1dask.emulator.service` from a background thread.

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

S3 mode (:mod:`~ps1dask.emulator.s3`; the public ``stpubdata`` bucket, path-style):

``GET|HEAD /stpubdata/panstarrs/ps1/public/rings.v3.skycell/PPPP/SSS/<shortname>``
    the same whole files, with S3's headers, ranges and XML errors.
``GET /stpubdata?list-type=2&prefix=&delimiter=/&max-keys=&continuation-token=``
    ListObjectsV2.

Emulator endpoints (never counted, faulted or throttled):

``GET /_emulator/truth?ra=&dec=&radius=[&mjd=]``
    the synthetic sources near a position (JSON).
``GET /_emulator/metrics``, ``POST /_emulator/metrics/reset``
    request counters (JSON).
``GET /_emulator/metrics/flights``
    when each service request arrived and was answered (JSON, ``time.monotonic()`` seconds).
``GET|POST /_emulator/config``
    the knobs (JSON), see :class:`~ps1dask.emulator.faults.Knobs`.

Every CPU-heavy step (listing, rendering pixels, writing whole files, encoding) runs in a
thread pool, never on the event loop, so slow cutouts do not hold back other requests;
``fitscut.cgi`` answers can be cut in worker processes instead (``cutout_processes``).
The modules: :mod:`~ps1dask.emulator.cutter` (listings, headers and cutouts of the sky),
:mod:`~ps1dask.emulator.metrics` (accounting), :mod:`~ps1dask.emulator.replies` (answers),
:mod:`~ps1dask.emulator.params` (parameter parsing), :mod:`~ps1dask.emulator.middleware`
(limits, faults, throttling) and
:mod:`~ps1dask.emulator.service` (the handlers).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

import dask.config
from aiohttp import web

import ps1dask.config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.background_server import BackgroundServer, bind_socket
from ps1dask.emulator.cutout_processes import CutoutProcesses
from ps1dask.emulator.faults import Knobs
from ps1dask.emulator.files import WholeFileCache
from ps1dask.emulator.metrics import ServiceState
from ps1dask.emulator.service import Service
from ps1dask.emulator.sky import SyntheticSky

__all__ = ["Emulator"]

log = logging.getLogger("ps1dask.emulator")

T = TypeVar("T")


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
    work_per_mpix, s3_missing_fraction
        the knobs (see :class:`~ps1dask.emulator.faults.Knobs`); change them live with
        :meth:`configure` or ``POST /_emulator/config``.
    cache_dir
        where whole skycell files are written (None: a temporary directory removed at
        :meth:`stop`).
    cache_max_bytes
        bytes of whole files kept there (None: ``ps1dask.emulator.cache-max-bytes``); the
        least recently used go first and are rendered again when asked for.
    host, port
        address to bind (port 0 picks a free port; see :attr:`url`).
    workers
        threads rendering pixels and files (default: CPUs + 4, at most 16).
    sky
        a :class:`SyntheticSky` to serve instead of ``SyntheticSky(seed=seed)``.
    cutout_processes
        worker processes that cut ``fitscut.cgi`` answers (None:
        ``ps1dask.emulator.cutout-processes``; 0: the rendering threads of this process). Under
        a load near the 10-slot limit they keep answers on time (see
        :mod:`~ps1dask.emulator.cutout_processes`); each costs a process start at
        :meth:`start`, and a ``sky`` given here must pickle.
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
        cache_max_bytes: int | None = None,
        s3_missing_fraction: float = 0.0,
        cutout_processes: int | None = None,
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
            s3_missing_fraction=s3_missing_fraction,
        )
        self.seed = seed
        self.sky = sky if sky is not None else SyntheticSky(seed=seed)
        self.host = host
        self._bind_port = int(port)
        self.port = int(port)  # the bound port once started
        self._cache_dir = cache_dir
        self._cache_max_bytes = cache_max_bytes
        self._tmpdir: str | None = None
        self._finalizer: weakref.finalize | None = None
        self._workers = workers or min(16, (os.cpu_count() or 2) + 4)
        self.state = ServiceState(self.knobs0)
        self.cache: WholeFileCache | None = None
        self._server = BackgroundServer("ps1dask-emulator", shutdown_timeout=0.5, backlog=512)
        self._executor: ThreadPoolExecutor | None = None
        if cutout_processes is None:
            cutout_processes = int(dask.config.get("ps1dask.emulator.cutout-processes"))
        if cutout_processes < 0:
            raise ValueError(f"cutout_processes must be 0 or more, got {cutout_processes}")
        self._cutout_process_count = cutout_processes
        self._cutout_processes: CutoutProcesses | None = None
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

    def start(self) -> Self:
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
        self.cache = WholeFileCache(self.sky, directory, self._cache_max_bytes)
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="ps1dask-emulator")
        if self._cutout_process_count:
            self._cutout_processes = CutoutProcesses(self.sky, self._cutout_process_count)
            self._cutout_processes.warm()
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
        self.service = Service(
            self.sky,
            self.cache,
            self.state,
            self._executor,
            self.host,
            cutout_processes=self._cutout_processes,
        )
        return self.service.make_app()

    def stop(self) -> None:
        """Stop serving, wait for the thread, and remove a temporary cache directory."""
        self._server.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._cutout_processes is not None:
            self._cutout_processes.shutdown()
            self._cutout_processes = None
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

    def flights(self) -> dict[str, Any]:
        """When each service request arrived and was answered (see
        :meth:`~ps1dask.emulator.metrics.Metrics.flights`)."""
        return self._on_loop(self.state.metrics.flights)

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
