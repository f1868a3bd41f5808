"""Planning a stack job: locate, order by skycell, chunk, and cut into work units.

No network here. The plan fixes the store's position order (grouped by skycell, then input
order), the chunking of the position axis, and work units made of whole chunks, so that
every chunk has exactly one writer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import dask.config
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.conventions import cutout_origin, parse_filters, parse_size, part_types
from ps1dask.exceptions import InvalidParameterError
from ps1dask.planning.cost import ServiceProfile, row_runs
from ps1dask.planning.row_pieces import job_row_pieces, piece_rows_for
from ps1dask.positions import PositionTable
from ps1dask.storage.layout import (
    STATUS,
    StackRequest,
    StorePositions,
    position_chunk_size,
    positions_digest,
)
from ps1dask.tessellation import (
    HEADER_CDELT_DEG,
    LOCATE_BLOCK,
    load_grid,
    locate_columns,
    project,
    skycell_names,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass
class WorkUnit:
    """Positions ``[start, stop)`` of the store (whole chunks): one Dask task.

    Arrays hold one element per position of the unit, in store order.
    """

    index: int
    start: int
    stop: int
    ra: FloatArray
    dec: FloatArray
    projcell: IntArray
    subcell: IntArray
    x0: IntArray  #: 0-based skycell column of the cutout's first pixel (fitscut rule)
    y0: IntArray
    fetch: npt.NDArray[np.bool_]  #: in the 3pi footprint: something to fetch
    #: rows [read_lo, read_hi) of the image a ``range`` read claims for the box: the job's
    #: piece(s) of needed rows that the box touches (:mod:`ps1dask.planning.row_pieces`)
    read_lo: npt.NDArray[np.int32] | None = None
    read_hi: npt.NDArray[np.int32] | None = None

    @property
    def n_positions(self) -> int:
        return self.stop - self.start

    def work_pixels(self, width: int, height: int, profile: ServiceProfile) -> float:
        """Its CPU work for a strategy that decodes whole rows (:func:`unit_work_pixels`)."""
        return unit_work_pixels(self, width, height, profile)

    def skycell_groups(self) -> list[tuple[tuple[int, int], IntArray]]:
        """(projcell, subcell) -> local indices of the unit's positions to fetch there."""
        idx = np.flatnonzero(self.fetch)
        keys = self.projcell[idx] * 1000 + self.subcell[idx]
        groups = []
        for key in np.unique(keys):
            members = idx[keys == key]
            groups.append(((int(key // 1000), int(key % 1000)), members))
        return groups


#: CPU of one cutout pixel (cut, linearised and written) in decoded pixels of whole-file
#: rows. Fitted to the task streams of ``bench s3-dense`` (two block splits of its 35 units
#: between two one-core workers: a 120 px position cost as much as ~10 rows of 6,250 px).
CUTOUT_PIXEL_COST = 4.0


def unit_work_pixels(
    unit: WorkUnit,
    width: int,
    height: int,
    profile: ServiceProfile | None = None,
    images: Mapping[tuple[int, int], int] | None = None,
) -> float:
    """CPU work of ``unit`` (boxes of ``width`` x ``height`` pixels) for a strategy that
    decodes whole row tiles (``range``, ``s3``, ``skycell``), in decoded pixels: the rows
    its boxes touch in each of its skycells (merged as the cost model merges them,
    :func:`ps1dask.planning.cost.row_runs`) times a row's pixels, plus its cutout pixels at
    :data:`CUTOUT_PIXEL_COST`, once per image of that skycell (``images[(projcell,
    subcell)]``, default 1: per image of a stack job's band). Image sizes come from
    ``profile`` (default: a PS1 skycell). Dense units at a field's edge or across two
    skycells touch twice the rows of others."""
    p = profile if profile is not None else ServiceProfile()
    total = 0.0
    for cell, members in unit.skycell_groups():
        n_images = 1 if images is None else images.get(cell, 0)
        rows = sum(b - a for a, b in row_runs(unit.y0[members], height, p.image_rows))
        cutouts = len(members) * width * height * CUTOUT_PIXEL_COST
        total += n_images * (rows * p.image_cols + cutouts)
    return total


@dataclass
class StackPlan:
    """Everything a stack job needs before it runs."""

    request: StackRequest
    order: IntArray  #: store position -> input row
    positions: StorePositions
    chunk: int
    units: list[WorkUnit]
    initial_status: npt.NDArray[np.uint8]
    n_outside: int

    @property
    def filters(self) -> str:
        return self.request.filters

    @property
    def types(self) -> tuple[str, ...]:
        return self.request.types


def fitscut_boxes(
    ra: FloatArray, dec: FloatArray, projcell: IntArray, subcell: IntArray, width: int, height: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, IntArray, IntArray]:
    """Vectorised fitscut boxes from the skycell headers' own WCS (CDELT as written).

    Returns crval1, crval2, crpix1, crpix2 of each skycell and the 0-based box origin
    (x0, y0) with the same arithmetic as :func:`ps1dask.conventions.position_pixel`.
    """
    grid = load_grid()
    rows = np.searchsorted(grid.projcell, projcell, side="right") - 1
    ira = projcell - grid.projcell[rows]
    crval1 = ira * 360.0 / grid.nband[rows]
    crval2 = grid.dec[rows]
    k, j = subcell % 10, subcell // 10
    px = grid.xcell[rows] - 480
    py = grid.ycell[rows] - 480
    crpix1 = grid.crpix1[rows] + px * (5 - k)
    crpix2 = grid.crpix2[rows] + py * (5 - j)
    x, y = project(ra, dec, crval1, crval2, HEADER_CDELT_DEG)
    xc = x + crpix1
    yc = y + crpix2
    x0, y0 = cutout_origin(xc, yc, width, height)
    return crval1, crval2, crpix1, crpix2, x0, y0


def _cutout_wcs(
    ra: FloatArray, dec: FloatArray, projcell: IntArray, subcell: IntArray, width: int, height: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, IntArray, IntArray]:
    """CRVAL1/2, the cutout's own 1-based CRPIX1/2 and box origin x0, y0 of each position
    (NaN and 0 where there is no skycell), computed in blocks that stay in the CPU caches."""
    n = len(ra)
    crval1, crval2 = np.full(n, np.nan), np.full(n, np.nan)
    crpix1, crpix2 = np.full(n, np.nan), np.full(n, np.nan)
    x0, y0 = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for start in range(0, n, LOCATE_BLOCK):
        block = slice(start, start + LOCATE_BLOCK)
        has_cell = projcell[block] >= 0
        cells = np.flatnonzero(has_cell) + start if not has_cell.all() else block
        if has_cell.any():
            c1, c2, p1, p2, bx, by = fitscut_boxes(
                ra[cells], dec[cells], projcell[cells], subcell[cells], width, height
            )
            crval1[cells], crval2[cells] = c1, c2
            # the cutout's own CRPIX, 1-based, as the fitscut header gives it
            crpix1[cells], crpix2[cells] = p1 - bx, p2 - by
            x0[cells], y0[cells] = bx, by
    return crval1, crval2, crpix1, crpix2, x0, y0


@dataclass
class PositionPlan:
    """The part of a plan shared by stack and warp jobs: order, per-position WCS, units."""

    order: IntArray  #: store position -> input row
    positions: StorePositions
    chunk: int
    units: list[WorkUnit]
    inside: npt.NDArray[np.bool_]  #: in store order: in the 3pi footprint
    ids: pa.Array | npt.NDArray[np.object_]  #: in input order (Arrow strings, normally)
    ra: FloatArray  #: in input order
    dec: FloatArray

    @property
    def n_positions(self) -> int:
        return len(self.order)

    @property
    def n_outside(self) -> int:
        return int((~self.inside).sum())

    @property
    def digest(self) -> str:
        return positions_digest(self.ids, self.ra, self.dec)


def plan_positions(
    positions: PositionTable,
    width: int,
    height: int,
    *,
    chunk: int,
    max_unit_positions: int = 64,
    piece_rows: int | None = None,
) -> PositionPlan:
    """Locate, order by skycell (then image row), compute fitscut boxes, cut into units.

    ``piece_rows``: the units carry each box's claim of the job's pieces of rows of at most
    that many rows (:mod:`ps1dask.planning.row_pieces`), which ``range`` reads; None: none
    (each unit reads its own rows)."""
    if int(max_unit_positions) < 1:
        raise InvalidParameterError(
            f"max_unit_positions (--unit-size) must be >= 1, got {max_unit_positions}"
        )
    frame = positions.frame
    n = len(frame)
    ra = frame["ra"].to_numpy(dtype=np.float64)
    dec = frame["dec"].to_numpy(dtype=np.float64)
    loc = locate_columns(ra, dec)
    inside = loc["in_footprint"]
    projcell = loc["projcell"]
    subcell = loc["subcell"]
    # Footprint positions grouped by skycell (the service's file cache likes this order)
    # and, within a skycell, by image row, so that a unit's cutouts share row tiles when
    # cut from whole files; then the positions outside, which need no task at all.
    image_row = np.nan_to_num(loc["y"], nan=0.0).astype(np.int64)
    order = _store_order(~inside, projcell, subcell, image_row)
    del loc, image_row
    ra_o, dec_o = ra[order], dec[order]
    pc_o, sc_o, in_o = projcell[order], subcell[order], inside[order]

    crval1, crval2, crpix1, crpix2, x0, y0 = _cutout_wcs(ra_o, dec_o, pc_o, sc_o, width, height)
    n_inside = int(in_o.sum())  # the first n_inside positions (store order)
    read_lo = read_hi = None
    if piece_rows is not None:
        read_lo, read_hi = _read_pieces(pc_o, sc_o, y0, n_inside, height, piece_rows)

    chunk = max(1, int(chunk))  # an existing store's chunking is never changed
    per_unit = max(chunk, (max_unit_positions // chunk) * chunk)
    units: list[WorkUnit] = []
    # Units cover whole chunks; the last one with footprint positions may include a few
    # positions outside, which the task simply marks again.
    fetch_stop = -(-n_inside // chunk) * chunk if n_inside else 0
    for start in range(0, min(fetch_stop, n), per_unit):
        stop = min(start + per_unit, fetch_stop, n)
        sl = slice(start, stop)
        units.append(
            WorkUnit(
                index=len(units),
                start=start,
                stop=stop,
                ra=ra_o[sl],
                dec=dec_o[sl],
                projcell=pc_o[sl],
                subcell=sc_o[sl],
                x0=x0[sl],
                y0=y0[sl],
                fetch=in_o[sl],
                read_lo=None if read_lo is None else read_lo[sl],
                read_hi=None if read_hi is None else read_hi[sl],
            )
        )
    ids = _id_strings(frame["id"])
    store_positions = StorePositions(
        input_row=order,
        id=ids.take(order),
        ra=ra_o,
        dec=dec_o,
        skycell=skycell_names(pc_o, sc_o),
        crval1=crval1,
        crval2=crval2,
        crpix1=crpix1,
        crpix2=crpix2,
        cutout_x0=x0,
        cutout_y0=y0,
    )
    return PositionPlan(
        order=order,
        positions=store_positions,
        chunk=chunk,
        units=units,
        inside=in_o,
        ids=ids,
        ra=ra,
        dec=dec,
    )


def _read_pieces(
    projcell: IntArray,
    subcell: IntArray,
    y0: IntArray,
    n_inside: int,
    height: int,
    piece_rows: int,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Each position's :func:`job_row_pieces` claim in its skycell (0, 0 outside); the
    footprint positions come first, grouped by skycell (store order)."""
    read_lo = np.zeros(len(y0), dtype=np.int32)
    read_hi = np.zeros(len(y0), dtype=np.int32)
    cell = projcell[:n_inside] * 1000 + subcell[:n_inside]  # sorted: store order
    # in blocks that end at a skycell's end (a skycell's rows in one call) and stay in the
    # CPU caches: 10^7 positions at once took seconds and a GB of temporaries
    start = 0
    while start < n_inside:
        stop = min(start + LOCATE_BLOCK, n_inside)
        stop = int(np.searchsorted(cell, cell[stop - 1], side="right"))
        block = slice(start, stop)
        read_lo[block], read_hi[block] = job_row_pieces(cell[block], y0[block], height, piece_rows)
        start = stop
    return read_lo, read_hi


def _store_order(*keys: npt.NDArray[np.integer] | npt.NDArray[np.bool_]) -> IntArray:
    """Input rows sorted by ``keys`` (most significant first), then by row.

    The order of ``np.lexsort((rows, *reversed(keys)))``, from one ``np.sort`` of the keys
    and the row packed into an int64 (several times faster for 10^7 positions), when they
    fit in 63 bits.
    """
    n = len(keys[0])
    lows = [int(k.min()) if n else 0 for k in keys]
    widths = [(int(k.max()) - low).bit_length() if n else 0 for k, low in zip(keys, lows)]
    row_width = max(n - 1, 0).bit_length()
    if sum(widths) + row_width > 63:
        return np.lexsort((np.arange(n), *reversed(keys))).astype(np.int64)
    packed = np.zeros(n, dtype=np.int64)
    for key, low, width in zip(keys, lows, widths):
        packed <<= width
        packed |= key.astype(np.int64) - low
    packed <<= row_width
    packed |= np.arange(n, dtype=np.int64)
    packed.sort()  # the rows make every key distinct: any sort gives the lexsort order
    packed &= (1 << row_width) - 1
    return packed


def _id_strings(ids: pd.Series) -> pa.Array | npt.NDArray[np.object_]:
    """The ids as an Arrow string array (no copy of pandas 3's Arrow-backed ``str``)."""
    try:
        strings = pa.array(ids, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):  # a hand-made PositionTable: mixed ids
        return ids.to_numpy(dtype=object)
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    if pa.types.is_string(strings.type) or pa.types.is_large_string(strings.type):
        return strings
    return ids.to_numpy(dtype=object)


def plan_stack_job(
    positions: PositionTable,
    *,
    filters: str = "grizy",
    size: int | str | tuple[int, int] = 240,
    types: str | tuple[str, ...] = ("stack",),
    service_url: str,
    max_unit_positions: int = 64,
    chunk: int | None = None,
) -> StackPlan:
    """Plan a stack cutout job (pure: no network, no store).

    Parameters are those of :func:`ps1dask.cutouts`; ``max_unit_positions`` bounds the
    positions (and so memory and time) of one task.
    """
    bands = parse_filters(filters)
    width, height = parse_size(size, pair_order="yx")  # the Python API's pairs: (ny, nx)
    kinds = part_types(types, "stack")
    if chunk is None:
        chunk = min(position_chunk_size(len(bands), width, height), max_unit_positions)
    most_rows = int(dask.config.get("ps1dask.http.range-piece-rows"))
    if most_rows < 1:
        raise InvalidParameterError(f"ps1dask.http.range-piece-rows must be >= 1, got {most_rows}")
    piece_rows = piece_rows_for(
        len(bands) * len(kinds),
        most_rows,
        int(dask.config.get("ps1dask.cache.decoded-rows-bytes")),
        int(load_grid().xcell.max()) * 4,  # a decoded row of the widest skycell (int32)
    )
    base = plan_positions(
        positions,
        width,
        height,
        chunk=chunk,
        max_unit_positions=max_unit_positions,
        piece_rows=piece_rows,
    )
    initial = np.zeros((base.n_positions, len(bands)), dtype=np.uint8)
    initial[~base.inside] = STATUS["outside_footprint"]
    request = StackRequest(
        filters=bands,
        width=width,
        height=height,
        types=kinds,
        n_positions=base.n_positions,
        positions_digest=base.digest,
        service_url=service_url,
    )
    return StackPlan(
        request=request,
        order=base.order,
        positions=base.positions,
        chunk=base.chunk,
        units=base.units,
        initial_status=initial,
        n_outside=base.n_outside,
    )
