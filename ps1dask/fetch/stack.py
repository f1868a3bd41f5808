"""Fetching one work unit's stack cutouts with the three strategies.

Every strategy ends in the same two layer-5 functions, :func:`linear_pixels` and
:func:`cut`, so all give identical pixels:

- ``cutout``: the service cuts and linearises (``fitscut.cgi``), one request per cutout;
- ``skycell``: the whole file is downloaded once into a local cache, then its row tiles are
  decoded locally;
- ``range``: only the needed row tiles are read with HTTP Range requests.

Inside a unit, requests run on a small thread pool so that a unit can keep all of the
cluster's request slots busy; the global throttle in the client caps them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ps1dask.client import PS1Service
from ps1dask.conventions import CutoutBox, cut, header_zeropoint, image_filename, linear_pixels
from ps1dask.exceptions import NotFoundError, ServiceError, ServiceUnavailableError
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.fetch.tiles import CompressedImageIndex
from ps1dask.planning.cost import ServiceProfile, choose_strategy, row_runs
from ps1dask.planning.plan import WorkUnit
from ps1dask.storage.layout import MASK_OFF_IMAGE, STACK_VARIABLES, STATUS
from ps1dask.tessellation import SkycellId

logger = logging.getLogger("ps1dask.fetch")

ReadRange = Callable[[int, int], bytes]


@dataclass
class UnitResult:
    """What a unit fetched, ready to be written to its chunks."""

    images: dict[str, np.ndarray]
    status: npt.NDArray[np.uint8]
    zeropoint: npt.NDArray[np.float32]
    strategies: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    unavailable: bool = False
    seconds: float = 0.0

    @property
    def n_cutouts(self) -> int:
        return int(np.count_nonzero(self.status == STATUS["ok"]))


# Tile indexes of remote files, per process: a unit often needs a skycell another unit
# already indexed (its header and tile table cost two requests).
_INDEX_CACHE: OrderedDict[tuple[str, str], CompressedImageIndex] = OrderedDict()
_INDEX_LOCK = threading.Lock()
_INDEX_CACHE_SIZE = 256


def _remote_index(service: PS1Service, filename: str) -> CompressedImageIndex:
    key = (service.url, filename)
    with _INDEX_LOCK:
        if key in _INDEX_CACHE:
            _INDEX_CACHE.move_to_end(key)
            return _INDEX_CACHE[key]
    index = CompressedImageIndex.read(lambda a, b: service.read_range(filename, a, b))
    with _INDEX_LOCK:
        _INDEX_CACHE[key] = index
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)
    return index


def _local_reader(handle: Any) -> ReadRange:
    fd = handle.fileno()
    return lambda a, b: os.pread(fd, b - a, a)


def _to_store_dtype(pixels: np.ndarray, image_type: str) -> np.ndarray:
    if STACK_VARIABLES[image_type][1] == "uint16":
        return np.where(np.isnan(pixels), MASK_OFF_IMAGE, pixels).astype(np.uint16)
    return pixels


@dataclass
class _Group:
    skycell: SkycellId
    band_index: int
    band: str
    image_type: str
    members: np.ndarray  # local indices in the unit
    strategy: str = "cutout"


class StackUnitFetcher:
    """Fetch all cutouts of one :class:`WorkUnit` (one Dask task)."""

    def __init__(
        self,
        unit: WorkUnit,
        *,
        filters: str,
        types: tuple[str, ...],
        width: int,
        height: int,
        strategy: str,
        service: PS1Service,
        cache: LocalFileCache | None,
        profile: ServiceProfile,
    ) -> None:
        self.unit = unit
        self.filters = filters
        self.types = types
        self.width = width
        self.height = height
        self.strategy = strategy
        self.service = service
        self.cache = cache
        self.profile = profile
        n, nf = unit.n_positions, len(filters)
        self.result = UnitResult(
            images={
                STACK_VARIABLES[t][0]: np.full(
                    (n, nf, height, width),
                    MASK_OFF_IMAGE if STACK_VARIABLES[t][1] == "uint16" else np.nan,
                    dtype=STACK_VARIABLES[t][1],
                )
                for t in types
            },
            status=np.where(unit.fetch[:, None], STATUS["pending"], STATUS["outside_footprint"])
            .repeat(nf, axis=1)
            .astype(np.uint8),
            zeropoint=np.full((n, nf), np.nan, dtype=np.float32),
        )
        # per (position, band, type) outcome before they are combined into one status
        self._outcome: dict[tuple[int, int, str], int] = {}
        self._lock = threading.Lock()

    # -- planning inside the unit ------------------------------------------------------

    def _groups(self) -> list[_Group]:
        groups = []
        for (projcell, subcell), members in self.unit.skycell_groups():
            sid = SkycellId(projcell, subcell)
            runs = row_runs(self.unit.y0[members], self.height, self.profile.image_rows)
            for bi, band in enumerate(self.filters):
                for image_type in self.types:
                    strategy = self.strategy
                    if strategy == "auto":
                        filename = image_filename(sid, band, image_type)
                        cached = self.cache is not None and self.cache.contains(filename)
                        strategy = choose_strategy(
                            len(members), self.width, self.height, runs, self.profile, cached=cached
                        )
                    groups.append(_Group(sid, bi, band, image_type, members, strategy))
        return groups

    # -- recording ----------------------------------------------------------------------

    def _record(self, i: int, group: _Group, pixels: np.ndarray | None, outcome: int, header: Any = None) -> None:
        with self._lock:
            if pixels is not None:
                var = STACK_VARIABLES[group.image_type][0]
                self.result.images[var][i, group.band_index] = _to_store_dtype(pixels, group.image_type)
                if group.image_type == "stack" and header is not None and "EXPTIME" in header:
                    self.result.zeropoint[i, group.band_index] = header_zeropoint(header)
            self._outcome[(i, group.band_index, group.image_type)] = outcome

    def _fail(self, group: _Group, members: Any, err: BaseException) -> None:
        outcome = STATUS["no_data"] if isinstance(err, NotFoundError) else STATUS["failed"]
        with self._lock:
            if outcome == STATUS["failed"]:
                self.result.errors.append(f"{group.skycell} {group.band} {group.image_type}: {err}")
                if isinstance(err, ServiceUnavailableError):
                    self.result.unavailable = True
        for i in np.atleast_1d(members):
            self._record(int(i), group, None, outcome)

    # -- strategies ---------------------------------------------------------------------

    def _fetch_cutout(self, group: _Group, i: int) -> None:
        filename = image_filename(group.skycell, group.band, group.image_type)
        try:
            hdu = self.service.cutout_fits(
                filename, float(self.unit.ra[i]), float(self.unit.dec[i]), (self.width, self.height)
            )
        except ServiceError as err:
            self._fail(group, i, err)
            return
        pixels = np.asarray(hdu.data, dtype=np.float32)
        if pixels.shape != (self.height, self.width):
            self._fail(group, i, ServiceError(f"cutout has shape {pixels.shape}", filename))
            return
        self._record(i, group, pixels, STATUS["ok"], hdu.header)

    def _cut_from_tiles(self, group: _Group, index: CompressedImageIndex, read: ReadRange) -> None:
        members = group.members
        runs = row_runs(self.unit.y0[members], self.height, index.naxis2, max_gap=self.height)
        decoded: list[tuple[int, int, np.ndarray]] = []
        for a, b in runs:
            raw = index.read_rows(read, slice(a, b))
            decoded.append((a, b, linear_pixels(raw, index.header)))
        for i in members.tolist():
            box = CutoutBox(int(self.unit.x0[i]), int(self.unit.y0[i]), self.width, self.height)

            def rows_reader(rows: slice, cols: slice) -> np.ndarray:
                for a, b, pixels in decoded:
                    if a <= rows.start and rows.stop <= b:
                        return pixels[rows.start - a : rows.stop - a, cols]
                raise AssertionError("a cutout's rows fall outside the decoded runs")

            self._record(i, group, cut(box, index.naxis1, index.naxis2, rows_reader), STATUS["ok"], index.header)

    def _fetch_skycell(self, group: _Group) -> None:
        assert self.cache is not None
        filename = image_filename(group.skycell, group.band, group.image_type)
        try:
            handle, _ = self.cache.open(filename, self.service)
        except ServiceError as err:
            self._fail(group, group.members, err)
            return
        with handle:
            read = _local_reader(handle)
            self._cut_from_tiles(group, CompressedImageIndex.read(read), read)

    def _fetch_range(self, group: _Group) -> None:
        filename = image_filename(group.skycell, group.band, group.image_type)
        try:
            index = _remote_index(self.service, filename)
            self._cut_from_tiles(group, index, lambda a, b: self.service.read_range(filename, a, b))
        except ServiceError as err:
            self._fail(group, group.members, err)

    # -- running ------------------------------------------------------------------------

    def run(self) -> UnitResult:
        t0 = time.perf_counter()
        groups = self._groups()
        jobs: list[Callable[[], None]] = []
        for g in groups:
            self.result.strategies[g.strategy] = self.result.strategies.get(g.strategy, 0) + len(g.members)
            if g.strategy == "cutout":
                jobs.extend(lambda g=g, i=i: self._fetch_cutout(g, i) for i in g.members.tolist())
            elif g.strategy == "skycell":
                jobs.append(lambda g=g: self._fetch_skycell(g))
            else:
                jobs.append(lambda g=g: self._fetch_range(g))
        workers = max(1, min(len(jobs), self.profile.concurrency))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ps1dask-fetch") as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()
        self._combine()
        self.result.seconds = time.perf_counter() - t0
        return self.result

    def _combine(self) -> None:
        status = self.result.status
        flux = self.result.images["stack_flux"]
        for i in np.flatnonzero(self.unit.fetch).tolist():
            for bi in range(len(self.filters)):
                outcomes = [self._outcome.get((i, bi, t), STATUS["failed"]) for t in self.types]
                main = self._outcome.get((i, bi, "stack"), STATUS["failed"])
                if STATUS["failed"] in outcomes:
                    status[i, bi] = STATUS["failed"]
                elif main == STATUS["no_data"]:
                    status[i, bi] = STATUS["no_data"]
                elif not np.any(np.isfinite(flux[i, bi])):
                    status[i, bi] = STATUS["blank"]
                else:
                    status[i, bi] = STATUS["ok"]
