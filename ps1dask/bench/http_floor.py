"""The requests a service-bound job sent, sent again by plain threads: the floor of any Python
client of the emulator on this machine.

The 10-slot bound (``n_requests x latency / 10``) counts no time between two requests on a
slot. Every real client has some: its HTTP stack builds the request and reads the answer,
the emulator's event loop parses one and sends the other, and here both share two cores with
the emulator's cutout processes. :func:`replay_seconds` sends a job's requests again from 10
threads of ``requests`` (a Session each; bodies read whole and dropped) with no Dask, no
cluster-wide slots lent between processes, no FITS parsing and no store: what is left of the
gap to the bound is the HTTP round trip itself. A benchmark prints the job's time against
both, measured in the same run, on a fresh emulator of the same sky (cold caches, like the
job's).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ps1dask.bench.bounds import SERVICE_SLOTS

__all__ = ["Replay", "replay_seconds", "stack_replay", "warp_replay"]


@dataclass
class Replay:
    """What a job sent: ``posts`` (path, form, ``file`` field) one after the other first, then
    ``gets`` (path, query) concurrently."""

    posts: list[tuple[str, dict[str, str], str]] = field(default_factory=list)
    gets: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def n_requests(self) -> int:
        return len(self.posts) + len(self.gets)


def replay_seconds(url: str, replay: Replay, threads: int = SERVICE_SLOTS) -> tuple[float, int]:
    """Send ``replay`` to the service at ``url``: its POSTs in order, then its GETs on
    ``threads`` threads. Returns the seconds it took and how many answers were not 2xx."""
    import requests

    failed = 0
    lock = threading.Lock()
    t0 = time.perf_counter()
    with requests.Session() as session:
        for path, form, text in replay.posts:
            answer = session.post(url + path, data=form, files={"file": ("p.txt", text)})
            failed += not answer.ok
    work: queue.SimpleQueue[tuple[str, dict[str, str]]] = queue.SimpleQueue()
    for get in replay.gets:
        work.put(get)

    def client() -> None:
        nonlocal failed
        with requests.Session() as own:
            while True:
                try:
                    path, params = work.get_nowait()
                except queue.Empty:
                    return
                answer = own.get(url + path, params=params)
                _ = answer.content
                if not answer.ok:
                    with lock:
                        failed += 1

    pool = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - t0, failed


def _cutout_get(filename: str, ra: float, dec: float, size: int) -> tuple[str, dict[str, str]]:
    from ps1dask.client.service import _fitscut_fits_params
    from ps1dask.wire import FITSCUT_PATH

    params, _ = _fitscut_fits_params(filename, ra, dec, size)
    return FITSCUT_PATH, params


def stack_replay(store: Any, size: int) -> Replay:
    """The ``cutout`` strategy's requests of a stack store's job: one fitscut per (position
    in the footprint, filter)."""
    import ps1dask
    from ps1dask.conventions import image_filename
    from ps1dask.tessellation import SkycellId

    ds = ps1dask.open_store(store, input_order=False)
    replay = Replay()
    for i, cell in enumerate(ds["skycell"].values.tolist()):
        if not cell:
            continue
        sid = SkycellId.parse(cell)
        ra, dec = float(ds["ra"].values[i]), float(ds["dec"].values[i])
        for band in [str(f) for f in ds["filter"].values]:
            replay.gets.append(_cutout_get(image_filename(sid, band, "stack"), ra, dec, size))
    return replay


def warp_replay(store: Any, size: int) -> Replay:
    """A warp store's job as the ``cutout`` strategy sends it: the listing POST (one
    position per skycell), then one fitscut per listed (position, filter, epoch)."""
    import ps1dask
    from ps1dask.client.listing import format_positions
    from ps1dask.conventions import image_filename
    from ps1dask.tessellation import SkycellId
    from ps1dask.wire import LIST_PATH

    ds = ps1dask.open_store(store, input_order=False)
    bands = [str(f) for f in ds["filter"].values]
    cells = ds["skycell"].values.tolist()
    ra, dec = ds["ra"].values, ds["dec"].values
    listed, n_epochs = ds["warp_mjd_listed"].values, ds["n_epochs"].values
    first: dict[str, int] = {}
    for i, cell in enumerate(cells):
        if cell:
            first.setdefault(cell, i)
    reps = np.array(sorted(first.values()), dtype=np.int64)
    replay = Replay()
    if reps.size:
        form = {"filters": "".join(bands), "type": "warp"}
        replay.posts.append((LIST_PATH, form, format_positions(ra[reps], dec[reps])))
    for i, cell in enumerate(cells):
        if not cell:
            continue
        sid = SkycellId.parse(cell)
        for b, band in enumerate(bands):
            for mjd in listed[i, b, : int(n_epochs[i, b])].tolist():
                name = image_filename(sid, band, "warp", mjd)
                replay.gets.append(_cutout_get(name, float(ra[i]), float(dec[i]), size))
    return replay
