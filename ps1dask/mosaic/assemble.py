"""Assembling mosaics: fetch the owned parts of every skycell, paste or reproject them.

One Dask task assembles the mosaics of its positions (one each, usually), a band of output
rows at a time (``ps1dask.mosaic.band-rows``, the store's y chunk), so a task holds one band
of each image type plus the pieces that fill it, whatever the size of the mosaic:

1. the owners of the band's pixels (:func:`~ps1dask.mosaic._core.ownership`);
2. for each owning skycell, filter and image type, the box of its pixels the band needs is
   fetched through the job's fetch strategy (``range``, ``skycell``, ...; never the
   service's ``fitscut``, which cuts one file and at most 6000 pixels): the same code, the
   same request slots, retries and linearisation as every cutout;
3. pieces of the position's own projection cell are pasted at their integer offset (the
   source files' pixels exactly); pieces of other projection cells are reprojected onto the
   output grid with ``reproject`` (flux-conserving for flux and variance, nearest pixel for
   masks and maps), and flux and variance are rescaled to the output's zero point;
4. the band is written to the store's chunks it owns, with the provenance array
   ``mosaic_skycell`` (``projcell * 1000 + subcell`` of each pixel's source, -1 for none).

The statuses are written last (by the task), so a killed task leaves its positions pending.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dask.config
import numpy as np
import numpy.typing as npt

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.client import PS1Service
from ps1dask.conventions import header_zeropoint, image_filename
from ps1dask.exceptions import InvalidParameterError, NotFoundError, ServiceError
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.fetch.engine import CutoutEngine, run_strategy_tasks
from ps1dask.fetch.group import ImageGroup
from ps1dask.fetch.strategies import AUTO, FetchContext, FetchStrategy, file_index
from ps1dask.mosaic._core import (
    NO_SOURCE,
    MosaicGrid,
    MosaicSource,
    apply_homography,
    owned_box,
    ownership,
    shifted_homography,
    source_box,
    tangent_homography,
)
from ps1dask.planning.cost import ServiceProfile
from ps1dask.storage.layout import MASK_OFF_IMAGE, STACK_VARIABLES, STATUS
from ps1dask.tessellation import SkycellId

#: Extra source pixels around what a reprojected block covers: the kernels reach beyond.
REPROJECT_MARGIN = 8
#: Output rows resampled per call of the kernel: bounds its coordinate arrays, and the
#: strips share the task's resampling threads.
RESAMPLE_STRIP_ROWS = 256
#: Image types resampled by nearest pixel (bit masks and maps of counts/times).
NEAREST_TYPES = frozenset({"stack.mask", "stack.num", "stack.exp", "stack.expwt"})
#: Image types that scale with the flux zero point (flux: x f; variance: x f^2).
FLUX_POWER = {"stack": 1, "stack.wt": 2}


def mosaic_strategies(strategies: Mapping[str, FetchStrategy]) -> dict[str, FetchStrategy]:
    """The strategies that can serve mosaics (they cut any box of a file locally)."""
    return {name: s for name, s in strategies.items() if getattr(s, "serves_mosaics", True)}


def check_mosaic_strategy(strategy: str, strategies: Mapping[str, FetchStrategy]) -> None:
    """Raise :class:`InvalidParameterError` if ``strategy`` cannot serve mosaics."""
    usable = mosaic_strategies(strategies)
    if strategy != AUTO and strategy not in usable:
        raise InvalidParameterError(
            f"strategy {strategy!r} (--strategy) cannot make mosaics (mosaic=True, --mosaic): "
            "it takes one service cutout from one file, at most 6000 pixels. Use a strategy "
            "that reads the files' pixels itself, e.g. 'range' or 'skycell', or 'auto'"
        )
    if not usable:
        raise InvalidParameterError(
            "no registered fetch strategy can make mosaics (mosaic=True, --mosaic)"
        )


@dataclass
class _Piece:
    """One fetched box of one skycell file: pixels or the error."""

    pixels: npt.NDArray[np.float32] | None = None
    header: Any = None
    error: ServiceError | None = None


@dataclass
class PieceFetcher:
    """Fetch boxes of service files through the job's strategies, concurrently.

    Each box is a group of one member with its own size: the strategies' own tasks do the
    work (so requests take the service's slots, retry, and decode as for every cutout), run
    on one thread pool per strategy pool, as the cutout engine runs them.
    """

    service: PS1Service
    cache: LocalFileCache | None
    profile: ServiceProfile
    strategy: str
    strategies: Mapping[str, FetchStrategy]
    used: dict[str, int] = field(default_factory=dict)

    def _choose(self, group: ImageGroup, width: int, height: int) -> FetchStrategy:
        engine = CutoutEngine(
            width=width,
            height=height,
            service=self.service,
            cache=self.cache,
            profile=self.profile,
            on_cutout=lambda *a: None,
            on_failure=lambda *a: None,
            strategies=self.strategies,
        )
        return engine.strategy(engine.choose(group, self.strategy))

    def fetch(self, boxes: Mapping[Any, tuple[str, int, int, int, int]]) -> dict[Any, _Piece]:
        """``{key: (filename, x0, y0, width, height)}`` -> ``{key: _Piece}``."""
        pieces: dict[Any, _Piece] = {key: _Piece() for key in boxes}
        lock = threading.Lock()
        batches: list[tuple[FetchStrategy, list[Any]]] = []
        for key, (filename, x0, y0, width, height) in boxes.items():
            group = ImageGroup(
                filename,
                np.array([0], dtype=np.int64),
                np.array([np.nan]),
                np.array([np.nan]),
                np.array([x0], dtype=np.int64),
                np.array([y0], dtype=np.int64),
            )
            strategy = self._choose(group, width, height)
            group.strategy = strategy.name
            self.used[strategy.name] = self.used.get(strategy.name, 0) + 1

            def on_cutout(member: int, pixels: Any, header: Any, key: Any = key) -> None:
                with lock:
                    pieces[key].pixels = np.asarray(pixels, dtype=np.float32)
                    pieces[key].header = header

            def on_failure(members: Any, err: ServiceError, key: Any = key) -> None:
                with lock:
                    pieces[key].error = err

            context = FetchContext(
                width=width,
                height=height,
                service=self.service,
                cache=self.cache,
                profile=self.profile,
                on_cutout=on_cutout,
                on_failure=on_failure,
            )
            batches.append((strategy, strategy.tasks(group, context)))
        run_strategy_tasks(batches, self.profile, "ps1dask-mosaic")
        return pieces


#: reproject's options for flux and variance (see :func:`_reproject`).
_ADAPTIVE_OPTIONS: dict[str, Any] = {
    "conserve_flux": True,
    "kernel": "hann",
    "boundary_mode": "ignore_threshold",
    "bad_value_mode": "ignore",
}


@functools.cache
def _adaptive_kernel() -> Any:
    """reproject's adaptive resampling routine, which takes any coordinate transformer (the
    one :func:`reproject.reproject_adaptive` calls with its WCS transformer); None if this
    version of reproject has none of that name (then the public API is used)."""
    try:
        from reproject.adaptive.deforest import map_coordinates
    except ImportError:  # pragma: no cover - depends on the installed reproject
        return None
    return map_coordinates


class _PlaneToPlane:
    """reproject's coordinate transformer for an output block onto a piece of a source:
    output block pixels (x, y) in the last axis -> the piece's pixels, by the exact
    homography between the two tangent planes (NaN behind the source's plane)."""

    def __init__(self, matrix: npt.NDArray[np.float64]) -> None:
        self.matrix = matrix

    def __call__(self, pixel_out: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = apply_homography(self.matrix, pixel_out[..., 0], pixel_out[..., 1])
        return np.stack([x, y], axis=-1)


def _reproject(
    pixels: npt.NDArray[np.float32],
    source: MosaicSource,
    box: tuple[int, int, int, int],
    grid: MosaicGrid,
    rows: slice,
    cols: slice,
    image_type: str,
) -> npt.NDArray[np.float32]:
    """A piece of another projection cell resampled onto the output block ``[rows, cols]``.

    Flux and variance: reproject's adaptive (DeForest 2004, Jacobian-weighted) resampling
    with ``conserve_flux``: both grids have 0.25" pixels, so surface brightness and totals
    are kept; NaN (blank) pixels are left out. The Hann kernel smooths less than the
    default Gaussian (the resampled noise keeps ~3/4 of its per-pixel scatter rather than
    ~1/2). Its coordinate transform is the exact plane-to-plane homography
    (:func:`~ps1dask.mosaic._core.tangent_homography`) rather than two WCS transforms
    through the sky per pixel, which cost twice the resampling itself; the result is the
    same as :func:`reproject.reproject_adaptive` with the two WCSs (to float rounding).
    Masks and maps: the nearest source pixel (``reproject_interp``'s nearest-neighbour
    rule, on the same exact coordinates).
    """
    x0, y0 = box[0], box[1]
    matrix = shifted_homography(tangent_homography(grid, source), cols.start, rows.start, x0, y0)
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    if image_type in NEAREST_TYPES:
        return _nearest(pixels, matrix, shape)
    kernel = _adaptive_kernel()
    if kernel is None:  # pragma: no cover - a reproject without it
        return _reproject_adaptive_wcs(pixels, source, box, grid, rows, cols)
    source_cube = np.ascontiguousarray(pixels, dtype=np.float32)[None]
    out = np.empty((1, *shape), dtype=np.float32)

    def strip(start: int) -> None:
        # rows [start, start + strip) of the block: the map counted from that row
        stop = min(start + RESAMPLE_STRIP_ROWS, shape[0])
        moved = shifted_homography(matrix, 0.0, float(start), 0.0, 0.0)
        kernel(
            source_cube,
            out[:, start:stop],
            _PlaneToPlane(moved),
            out_of_range_nan=True,
            **_ADAPTIVE_OPTIONS,
        )

    starts = range(0, shape[0], RESAMPLE_STRIP_ROWS)
    threads = min(len(starts), resample_threads())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if threads <= 1:
            for start in starts:
                strip(start)
        else:
            # the kernel releases the GIL: strips resample on several cores at once (a
            # filter's task alone on a machine, e.g. the last of three on two workers)
            with ThreadPoolExecutor(threads, thread_name_prefix="ps1dask-resample") as pool:
                for done in [pool.submit(strip, start) for start in starts]:
                    done.result()
    return out[0]


def resample_threads() -> int:
    """Threads one task resamples with (``ps1dask.mosaic.resample-threads``, >= 1)."""
    threads = int(dask.config.get("ps1dask.mosaic.resample-threads"))
    if threads < 1:
        raise InvalidParameterError(f"ps1dask.mosaic.resample-threads must be >= 1, got {threads}")
    return threads


def _reproject_adaptive_wcs(
    pixels: npt.NDArray[np.float32],
    source: MosaicSource,
    box: tuple[int, int, int, int],
    grid: MosaicGrid,
    rows: slice,
    cols: slice,
) -> npt.NDArray[np.float32]:
    """:func:`_reproject` of flux through reproject's public API (the two WCSs)."""
    from reproject import reproject_adaptive

    x0, y0, width, height = box
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = reproject_adaptive(
            (pixels, source.wcs(x0, y0, (height, width))),
            grid.wcs(rows, cols),
            shape_out=(rows.stop - rows.start, cols.stop - cols.start),
            roundtrip_coords=False,
            return_footprint=False,
            **_ADAPTIVE_OPTIONS,
        )
    return np.asarray(out, dtype=np.float32)


def _nearest(
    pixels: npt.NDArray[np.float32], matrix: npt.NDArray[np.float64], shape: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """The source pixel nearest each output pixel (NaN off the piece), a strip at a time."""
    out = np.full(shape, np.nan, dtype=np.float32)
    ny, nx = pixels.shape
    c = np.arange(shape[1], dtype=np.float64)[None, :]
    for a in range(0, shape[0], 256):
        r = np.arange(a, min(a + 256, shape[0]), dtype=np.float64)[:, None]
        sx, sy = apply_homography(matrix, c, r)
        with np.errstate(invalid="ignore"):
            # as reproject_interp: the outer half of the border pixels is still the image
            ok = (sx >= -0.5) & (sx < nx - 0.5) & (sy >= -0.5) & (sy < ny - 0.5)
        ix = np.clip(np.floor(np.where(ok, sx, 0.0) + 0.5).astype(np.intp), 0, nx - 1)
        iy = np.clip(np.floor(np.where(ok, sy, 0.0) + 0.5).astype(np.intp), 0, ny - 1)
        out[a : a + r.shape[0]] = np.where(ok, pixels[iy, ix], np.float32(np.nan))
    return out


@dataclass
class MosaicOutcome:
    """What assembling one position's mosaic gave, per filter."""

    status: npt.NDArray[np.uint8]
    zeropoint: npt.NDArray[np.float32]
    errors: list[str] = field(default_factory=list)


class MosaicAssembler:
    """Assemble the mosaics of one position in every filter and image type, band by band.

    ``write(name, band_index, rows, values)`` stores ``values`` (the band's rows of one
    variable: ``(rows, width)`` for ``mosaic_skycell``, ``(filter, rows, width)`` for
    images) and is called once per variable and band.
    """

    def __init__(
        self,
        grid: MosaicGrid,
        sources: list[MosaicSource],
        *,
        filters: str,
        types: tuple[str, ...],
        band_rows: int,
        fetcher: PieceFetcher,
    ) -> None:
        self.grid = grid
        self.sources = sources
        self.filters = filters
        self.types = types
        self.band_rows = max(1, int(band_rows))
        self.fetcher = fetcher
        nf = len(filters)
        self.zp_out = np.full(nf, np.nan)
        self.failed = np.zeros(nf, dtype=bool)
        self.found = np.zeros(nf, dtype=bool)  # some piece of the flux was there
        self.finite = np.zeros(nf, dtype=bool)  # some flux pixel is finite
        self.errors: list[str] = []

    def bands(self) -> list[slice]:
        h = self.grid.height
        return [slice(a, min(a + self.band_rows, h)) for a in range(0, h, self.band_rows)]

    def run(self, write: Any) -> MosaicOutcome:
        for band in self.bands():
            owner = ownership(self.grid, self.sources, band, slice(0, self.grid.width))
            codes = np.array([s.code for s in self.sources] + [NO_SOURCE], dtype=np.int32)
            write("mosaic_skycell", band, codes[owner])  # owner -1 -> the last: NO_SOURCE
            boxes = self._boxes(owner, band)
            for bi, band_name in enumerate(self.filters):
                images = self._assemble(owner, band, boxes, bi, band_name)
                for image_type, values in images.items():
                    write(image_type, band, values, bi)
        status = np.full(len(self.filters), STATUS["ok"], dtype=np.uint8)
        status[~self.finite] = STATUS["blank"]
        status[~self.found] = STATUS["no_data"]
        status[self.failed] = STATUS["failed"]
        return MosaicOutcome(status, self.zp_out.astype(np.float32), self.errors)

    def _boxes(
        self, owner: npt.NDArray[np.int16], band: slice
    ) -> dict[int, tuple[slice, slice, tuple[int, int, int, int]]]:
        """Per owning source: its owned bbox in the band (band-relative rows) and the box of
        its file to fetch."""
        out = {}
        present = np.flatnonzero(np.bincount(owner.ravel() + 1)) - 1
        for index in present.tolist():
            if index == NO_SOURCE:
                continue
            found = owned_box(owner, int(index))
            assert found is not None
            rows, cols = found
            abs_rows = slice(band.start + rows.start, band.start + rows.stop)
            box = source_box(self.grid, self.sources[index], abs_rows, cols, REPROJECT_MARGIN)
            if box is not None:
                out[int(index)] = (rows, cols, box)
        return out

    def _own_zeropoint(self, band_name: str) -> float:
        """The zero point of the position's own skycell (its header), read if not yet seen."""
        sid = SkycellId(self.grid.projcell, self.grid.subcell)
        filename = image_filename(sid, band_name, "stack")
        service = self.fetcher.service

        def read(a: int, b: int) -> bytes:
            return service.read_range(filename, a, b)

        return float(header_zeropoint(file_index(service, filename, read).header))

    def _assemble(
        self,
        owner: npt.NDArray[np.int16],
        band: slice,
        boxes: dict[int, tuple[slice, slice, tuple[int, int, int, int]]],
        bi: int,
        band_name: str,
    ) -> dict[str, np.ndarray]:
        height, width = band.stop - band.start, self.grid.width
        requests = {}
        for index, (_, _, (x0, y0, w, h)) in boxes.items():
            src = self.sources[index]
            sid = SkycellId(src.projcell, src.subcell)
            for image_type in self.types:
                requests[(index, image_type)] = (
                    image_filename(sid, band_name, image_type),
                    x0,
                    y0,
                    w,
                    h,
                )
        pieces = self.fetcher.fetch(requests)
        # the output's zero point: the position's own skycell's (else one of its cell's)
        for (index, image_type), piece in pieces.items():
            src = self.sources[index]
            usable = image_type == "stack" and src.same_grid and piece.header is not None
            first = src.subcell == self.grid.subcell or np.isnan(self.zp_out[bi])
            if usable and first and "EXPTIME" in piece.header:
                self.zp_out[bi] = header_zeropoint(piece.header)
        out: dict[str, np.ndarray] = {}
        for image_type in self.types:
            _, dtype, _, _ = STACK_VARIABLES[image_type]
            values = np.full((height, width), np.nan, dtype=np.float32)
            for index, (rows, cols, box) in boxes.items():
                piece = pieces[(index, image_type)]
                src = self.sources[index]
                if piece.error is not None:
                    if not isinstance(piece.error, NotFoundError):
                        self.failed[bi] = True
                        if len(self.errors) < 20:
                            self.errors.append(
                                f"{src.skycell} {band_name} {image_type}: {piece.error}"
                            )
                    continue
                if piece.pixels is None:
                    continue
                if image_type == "stack":
                    self.found[bi] = True
                mask = owner[rows, cols] == index
                if src.same_grid:
                    part = piece.pixels  # exactly the file's pixels: the box is the block
                else:
                    abs_rows = slice(band.start + rows.start, band.start + rows.stop)
                    part = _reproject(piece.pixels, src, box, self.grid, abs_rows, cols, image_type)
                    power = FLUX_POWER.get(image_type)
                    if power is not None:
                        part *= np.float32(self._scale(bi, band_name, pieces, index) ** power)
                block = values[rows, cols]
                block[mask] = part[mask]
            if image_type == "stack" and np.isfinite(values).any():
                self.finite[bi] = True
            if dtype == "uint16":
                values = np.where(np.isnan(values), MASK_OFF_IMAGE, values).astype(np.uint16)
            out[image_type] = values
        return out

    def _scale(self, bi: int, band_name: str, pieces: dict[Any, _Piece], index: int) -> float:
        """Factor from a source's stack zero point to the output's: 10**(0.4 (zp_out - zp))."""
        if np.isnan(self.zp_out[bi]):
            try:
                self.zp_out[bi] = self._own_zeropoint(band_name)
            except ServiceError:
                return 1.0
        flux = pieces.get((index, "stack"))
        header = flux.header if flux is not None else None
        if header is None or "EXPTIME" not in header:
            src = self.sources[index]
            sid = SkycellId(src.projcell, src.subcell)
            filename = image_filename(sid, band_name, "stack")
            service = self.fetcher.service
            try:
                header = file_index(
                    service, filename, lambda a, b: service.read_range(filename, a, b)
                ).header
            except ServiceError:
                return 1.0
        return float(10.0 ** (0.4 * (self.zp_out[bi] - header_zeropoint(header))))
