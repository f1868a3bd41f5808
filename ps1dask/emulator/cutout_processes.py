"""``fitscut.cgi`` answers cut in worker processes, so the emulator's front door keeps time.

In one process, the threads that cut pixels run the synthetic sky's Python and hold the GIL
for most of each cutout, and the event loop that starts and ends every request waits for it.
At the service's pace (10 requests in flight, 0.2 s each: 50 cutouts/s of ~15 ms of CPU) the
loop then sends answers milliseconds after their latency has run and reads new requests late:
the emulated service is slower than its knobs say, and a benchmark of the client measures the
emulator. A real service's front end does not share an interpreter with its cutout servers;
with :class:`CutoutProcesses` the emulator's does not either. The pixels are the same: each
process cuts with a :class:`~ps1dask.emulator.cutter.SkyCutter` of the same sky.

Off by default (``ps1dask.emulator.cutout-processes: 0``): tests and small jobs do not pay a
process start. Benchmarks of the 10-slot bound turn it on.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from multidict import CIMultiDict

from ps1dask.emulator.cutter import SkyCutter
from ps1dask.emulator.sky import SyntheticSky
from ps1dask.exceptions import HTTPFailure, PS1DaskError, ServiceHTTPError

log = logging.getLogger("ps1dask.emulator")

#: The cutter of a worker process (set by its initializer).
_CUTTER: SkyCutter | None = None


def _start_process(sky: SyntheticSky) -> None:
    global _CUTTER
    _CUTTER = SkyCutter(sky)


def _process_id(pause: float) -> int:
    time.sleep(pause)  # hold this process, so that the next call starts or finds another one
    return os.getpid()


def _fitscut_in_process(params: CIMultiDict) -> tuple[Any, ...]:
    """``("ok", body, content type, pixels)`` or ``("error", status, message, headers)``:
    the service's own errors cross back as data (they do not all pickle as exceptions)."""
    assert _CUTTER is not None, "the process initializer did not run"
    try:
        return ("ok", *_CUTTER.fitscut_body(params))
    except HTTPFailure as err:
        return ("error", err.status, str(err), err.headers)
    except ServiceHTTPError as err:
        return ("error", err.status, str(err), {})
    except (PS1DaskError, ValueError) as err:
        return ("error", 400, str(err), {})


class CutoutProcesses:
    """A pool of ``processes`` worker processes answering ``fitscut.cgi`` for one sky."""

    def __init__(self, sky: SyntheticSky, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"cutout processes must be at least 1, got {processes}")
        self.sky = sky
        self.processes = int(processes)
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: forking a process that runs threads (the event loop, the render pool) can
        # copy a lock some thread holds
        return ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_process,
            initargs=(self.sky,),
        )

    def warm(self, timeout: float = 120.0) -> None:
        """Start every process (each imports numpy and astropy: seconds), so that the first
        requests do not wait for them."""
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < self.processes and time.monotonic() < deadline:
            calls = [self._pool.submit(_process_id, 0.05) for _ in range(self.processes)]
            seen.update(
                call.result(timeout=max(deadline - time.monotonic(), 1.0)) for call in calls
            )

    async def fitscut_body(self, params: CIMultiDict) -> tuple[bytes, str, int]:
        """``(body, content type, pixels cut)`` of a fitscut request, cut in a process."""
        # only text values cross: a fitscut form has no file fields worth sending
        plain: CIMultiDict = CIMultiDict((k, v) for k, v in params.items() if isinstance(v, str))
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            answer = await loop.run_in_executor(pool, _fitscut_in_process, plain)
        except BrokenProcessPool:
            # a process died (killed, out of memory): answer this request as a server
            # error, and cut the next ones in a new pool
            if self._pool is pool:
                log.warning("an emulator cutout process died; starting new ones")
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise HTTPFailure(500, "the emulator's cutout process died; retry") from None
        if answer[0] == "error":
            _, status, message, headers = answer
            raise HTTPFailure(status, message, headers)
        _, body, content_type, npix = answer
        return body, content_type, npix

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
