"""The fetch engine shared by stack and warp units: cut boxes out of service images.

A unit hands the engine :class:`ImageGroup` s, one per service image (a file name) with the
positions to cut from it. The engine picks a strategy per group (or uses the one given),
runs the requests on a thread pool so a unit can keep all the cluster's request slots busy
(the client's throttle caps them), and reports each cutout or failure through callbacks.
The engine is built on the task's thread and pins its service's throttle there
(:meth:`PS1Service.bound`): the pool's threads have no distributed context of their own, and
if the scheduler is lost their requests must stop (``SchedulerLostError``, the unit is not
done) rather than go on under a process-local limit.

Every strategy ends in the same two layer-5 functions, :func:`linear_pixels` and
:func:`cut`, so all give identical pixels:

- ``cutout``: the service cuts and linearises (``fitscut.cgi``), one request per cutout;
- ``skycell``: the whole file is downloaded once into a local cache, then the row tiles the
  cutouts touch are decoded locally;
- ``range``: only those row tiles are read, with HTTP Range requests.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ps1dask.client import PS1Service
from ps1dask.conventions import CutoutBox, cut, linear_pixels
from ps1dask.exceptions import ServiceError
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.fetch.tiles import CompressedImageIndex
from ps1dask.planning.cost import ServiceProfile, choose_strategy, row_runs

ReadRange = Callable[[int, int], bytes]
#: ``on_cutout(member, pixels, header)``: a cutout (linear float32, NaN off-image) is ready.
OnCutout = Callable[[int, npt.NDArray[np.float32], Any], None]
#: ``on_failure(members, error)``: these members of the group could not be fetched.
OnFailure = Callable[[Sequence[int], ServiceError], None]


@dataclass
class ImageGroup:
    """One service image and the cutouts to take from it.

    ``members`` are the caller's indices (reported back); ``ra``, ``dec``, ``x0``, ``y0``
    give each member's position and fitscut box origin (0-based) in the image.
    """

    filename: str
    members: npt.NDArray[np.int64]
    ra: npt.NDArray[np.float64]
    dec: npt.NDArray[np.float64]
    x0: npt.NDArray[np.int64]
    y0: npt.NDArray[np.int64]
    strategy: str = "cutout"

    @classmethod
    def for_unit(
        cls, unit: Any, filename: str, local: npt.NDArray[np.int64], members: npt.NDArray[np.int64]
    ) -> ImageGroup:
        """The group of a work unit's positions ``local`` (indices in the unit) in one image."""
        return cls(
            filename, members, unit.ra[local], unit.dec[local], unit.x0[local], unit.y0[local]
        )


# Tile indexes of service files, per process: another unit often needs a skycell this one
# already indexed (its header and tile table cost a request, or parsing the cached file).
# A file's index is the same whether it is read remotely or from the local cache.
_INDEX_CACHE: OrderedDict[tuple[str, str], CompressedImageIndex] = OrderedDict()
_INDEX_LOCK = threading.Lock()
_INDEX_CACHE_SIZE = 256


def _file_index(service: PS1Service, filename: str, read: ReadRange) -> CompressedImageIndex:
    key = (service.url, filename)
    with _INDEX_LOCK:
        if key in _INDEX_CACHE:
            _INDEX_CACHE.move_to_end(key)
            return _INDEX_CACHE[key]
    index = CompressedImageIndex.read(read)
    with _INDEX_LOCK:
        _INDEX_CACHE[key] = index
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    return index


class CutoutEngine:
    """Fetch groups of cutouts with the chosen strategies (one instance per work unit)."""

    def __init__(
        self,
        *,
        width: int,
        height: int,
        service: PS1Service,
        cache: LocalFileCache | None,
        profile: ServiceProfile,
        on_cutout: OnCutout,
        on_failure: OnFailure,
    ) -> None:
        self.width = width
        self.height = height
        # Built on the task's thread: pin the throttle to this thread's distributed context
        # now, for the pool's threads have none (a no-op if the task pinned it already).
        self.service = service.bound()
        self.cache = cache
        self.profile = profile
        self.on_cutout = on_cutout
        self.on_failure = on_failure

    def choose(self, group: ImageGroup, strategy: str) -> str:
        """``strategy`` itself, or for ``auto`` the cost model's choice for this group."""
        if strategy != "auto":
            return strategy
        runs = row_runs(group.y0, self.height, self.profile.image_rows)
        cached = self.cache is not None and self.cache.contains(group.filename, self.service.url)
        return choose_strategy(
            len(group.members), self.width, self.height, runs, self.profile, cached=cached
        )

    # -- strategies ---------------------------------------------------------------------

    def _fetch_cutout(self, group: ImageGroup, k: int) -> None:
        member = int(group.members[k])
        try:
            hdu = self.service.cutout_fits(
                group.filename, float(group.ra[k]), float(group.dec[k]), (self.width, self.height)
            )
        except ServiceError as err:
            self.on_failure([member], err)
            return
        self.on_cutout(member, np.asarray(hdu.data, dtype=np.float32), hdu.header)

    def _cut_from_tiles(
        self, group: ImageGroup, index: CompressedImageIndex, read: ReadRange
    ) -> None:
        runs = row_runs(group.y0, self.height, index.naxis2, max_gap=self.height)
        # Decompress whole row tiles, but linearise only the pixels each cutout takes
        # (elementwise, so the same values as linearising the rows first).
        decoded = [(a, b, index.read_rows(read, slice(a, b))) for a, b in runs]

        def rows_reader(rows: slice, cols: slice) -> np.ndarray:
            for a, b, raw in decoded:
                if a <= rows.start and rows.stop <= b:
                    return linear_pixels(raw[rows.start - a : rows.stop - a, cols], index.header)
            raise AssertionError("a cutout's rows fall outside the decoded runs")

        for k, member in enumerate(group.members.tolist()):
            box = CutoutBox(int(group.x0[k]), int(group.y0[k]), self.width, self.height)
            self.on_cutout(member, cut(box, index.naxis1, index.naxis2, rows_reader), index.header)

    def _fetch_skycell(self, group: ImageGroup) -> None:
        if self.cache is None:
            raise RuntimeError("the skycell strategy needs a file cache")
        try:
            handle, _ = self.cache.open(group.filename, self.service)
        except ServiceError as err:
            self.on_failure(group.members.tolist(), err)
            return
        with handle:
            fd = handle.fileno()

            def read(a: int, b: int) -> bytes:
                return os.pread(fd, b - a, a)

            self._cut_from_tiles(group, _file_index(self.service, group.filename, read), read)

    def _fetch_range(self, group: ImageGroup) -> None:
        try:

            def read(a: int, b: int) -> bytes:
                return self.service.read_range(group.filename, a, b)

            self._cut_from_tiles(group, _file_index(self.service, group.filename, read), read)
        except ServiceError as err:
            self.on_failure(group.members.tolist(), err)

    # -- running ------------------------------------------------------------------------

    def run(self, groups: Sequence[ImageGroup]) -> dict[str, int]:
        """Fetch every group; returns cutouts per strategy used."""
        jobs: list[Callable[[], None]] = []
        used: dict[str, int] = {}
        for g in groups:
            used[g.strategy] = used.get(g.strategy, 0) + len(g.members)
            if g.strategy == "cutout":
                jobs.extend(
                    lambda g=g, k=k: self._fetch_cutout(g, k) for k in range(len(g.members))
                )
            elif g.strategy == "skycell":
                jobs.append(lambda g=g: self._fetch_skycell(g))
            else:
                jobs.append(lambda g=g: self._fetch_range(g))
        workers = max(1, min(len(jobs), self.profile.concurrency))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ps1dask-fetch")
        try:
            for future in [pool.submit(job) for job in jobs]:
                future.result()
        except BaseException:
            # e.g. SchedulerLostError: what has not started never will (the unit is not done)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return used
