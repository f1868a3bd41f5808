"""Where a warp has pixels and how many exposures cover a stack pixel, in integer arithmetic.

Separable detector gap patterns (cells and OTAs), dead cells and field-of-view edges, in the
projection cell's global pixel grid; stack exposure/number maps are exact sums of it.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from ps1dask.emulator.noise import uniform_pair
from ps1dask.emulator.survey import (
    Exposure,
)

_IntArray = npt.NDArray[np.int64]
_FloatArray = npt.NDArray[np.float64]
_BoolArray = npt.NDArray[np.bool_]

# --------------------------------------------------------------------------------------
# warp coverage
# --------------------------------------------------------------------------------------

_DEAD_CELL_PROB = 0.012

# Pixel grids are always contiguous ranges of global coordinates: a 1-D grid is (start, stop).
Span = tuple[int, int]


@functools.lru_cache(maxsize=4096)
def _sep_1d(span: Span, origin: int, cell: int, gap: int, ota_gap: int) -> _BoolArray:
    """Along one axis: True where the camera has pixels (not in a cell or OTA gap)."""
    period = 8 * cell + ota_gap
    u = (np.arange(*span, dtype=np.int64) - origin) % period
    out = (u < 8 * cell) & ((u % cell) >= gap)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4096)
def _cell_runs(span: Span, origin: int, cell: int, ota_gap: int) -> tuple[tuple[int, slice], ...]:
    """(global cell number, index slice into the span) of each detector cell along one axis.

    Integer arithmetic cell by cell (a span crosses a handful): OTA ``k`` holds the cells
    ``8k .. 8k + 7`` at ``origin + k * period + c * cell``, then a gap of ``ota_gap`` pixels.
    """
    period = 8 * cell + ota_gap
    start, stop = span
    rel, end = start - origin, stop - origin
    runs = []
    while rel < end:
        ota, u = divmod(rel, period)
        if u >= 8 * cell:  # in the gap after an OTA
            rel = (ota + 1) * period
            continue
        c = u // cell
        last = min(ota * period + (c + 1) * cell, end)
        runs.append((ota * 8 + c, slice(rel + origin - start, last + origin - start)))
        rel = last
    return tuple(runs)


def _dead_cells(exposure: Exposure, xs: Span, ys: Span) -> list[tuple[slice, slice]]:
    """(rows, cols) of the dead detector cells of an exposure on the grid ``ys x xs``, row
    by row (a cell is dead where :func:`~ps1dask.emulator.noise.uniform_pair` of its global
    numbers is below ``_DEAD_CELL_PROB``)."""
    lay = exposure.layout
    runs_x = _cell_runs(xs, lay.ox, lay.cell_x, lay.ota_gap_x)
    runs_y = _cell_runs(ys, lay.oy, lay.cell_y, lay.ota_gap_y)
    key = lay.dead_cell_key
    return [
        (rows, cols)
        for gy, rows in runs_y
        for gx, cols in runs_x
        if uniform_pair(key, gx, gy) < _DEAD_CELL_PROB
    ]


Footprint = tuple[str, _IntArray | None, _IntArray | None]


def footprint(exposure: Exposure, xs: Span, ys: Span) -> Footprint:
    """Where the field-of-view circle leaves the grid: ("in"|"out"|"cross", a, b).

    For "cross", row ``i`` has pixels in the columns ``a[i]:b[i]`` (exact integer arithmetic
    on pixel centres: inside means ``dx**2 + dy**2 <= R**2``).
    """
    circle = exposure.layout.circle
    if circle is None:
        return ("in", None, None)
    cx, cy, r = circle
    x0, x1, y0, y1 = xs[0], xs[1] - 1, ys[0], ys[1] - 1
    nx, ny = min(max(cx, x0), x1), min(max(cy, y0), y1)
    if (nx - cx) ** 2 + (ny - cy) ** 2 > r * r:
        return ("out", None, None)
    fx, fy = max(abs(x0 - cx), abs(x1 - cx)), max(abs(y0 - cy), abs(y1 - cy))
    if fx * fx + fy * fy <= r * r:
        return ("in", None, None)
    r2 = r * r - (np.arange(*ys, dtype=np.int64) - cy) ** 2
    h = np.floor(np.sqrt(np.maximum(r2, 0).astype(np.float64))).astype(np.int64)
    h = np.where((h + 1) ** 2 <= r2, h + 1, h)
    h = np.where(h * h > r2, h - 1, h)
    a = np.clip(cx - h - x0, 0, x1 - x0 + 1)
    b = np.clip(cx + h - x0 + 1, 0, x1 - x0 + 1)
    empty = (r2 < 0) | (b <= a)
    return ("cross", np.where(empty, 0, a), np.where(empty, 0, b))


def _inside(
    fp: Footprint, ncols: int, rows: slice = slice(None), cols: slice = slice(None)
) -> _BoolArray:
    """The "cross" footprint as a boolean block (rows x cols of the grid)."""
    _, a, b = fp
    assert a is not None and b is not None
    c = np.arange(ncols, dtype=np.int64)[cols]
    return (c[None, :] >= a[rows, None]) & (c[None, :] < b[rows, None])


def _separable(exposure: Exposure, xs: Span, ys: Span) -> tuple[_BoolArray, _BoolArray]:
    lay = exposure.layout
    return (
        _sep_1d(xs, lay.ox, lay.cell_x, lay.cell_gap_x, lay.ota_gap_x),
        _sep_1d(ys, lay.oy, lay.cell_y, lay.cell_gap_y, lay.ota_gap_y),
    )


def dead_parts(
    exposure: Exposure, xs: Span, ys: Span, sepx: _BoolArray, sepy: _BoolArray, fp: Footprint
) -> list[tuple[slice, slice, _BoolArray]]:
    """Dead cells: (rows, cols, pixels the exposure would otherwise have there)."""
    parts = []
    for rows, cols in _dead_cells(exposure, xs, ys):
        part = sepy[rows][:, None] & sepx[cols][None, :]
        if fp[0] == "cross":
            part &= _inside(fp, xs[1] - xs[0], rows, cols)
        parts.append((rows, cols, part))
    return parts


def warp_coverage(
    exposure: Exposure, xs: Span, ys: Span
) -> tuple[_BoolArray, list[tuple[slice, slice, _BoolArray]]]:
    """Where one exposure has pixels on the grid ``ys x xs``, and its dead-cell parts."""
    shape = (ys[1] - ys[0], xs[1] - xs[0])
    fp = footprint(exposure, xs, ys)
    if fp[0] == "out":
        return np.zeros(shape, dtype=bool), []
    sepx, sepy = _separable(exposure, xs, ys)
    cov = sepy[:, None] & sepx[None, :]
    if fp[0] == "cross":
        _, a, b = fp
        assert a is not None and b is not None
        for i, (ai, bi) in enumerate(zip(a.tolist(), b.tolist())):
            cov[i, :ai] = False
            cov[i, bi:] = False
    dead = dead_parts(exposure, xs, ys, sepx, sepy, fp)
    for rows, cols, part in dead:
        cov[rows, cols] &= ~part
    return cov, dead


def stack_coverage(
    exposures: tuple[Exposure, ...],
    xs: Span,
    ys: Span,
    weights: tuple[tuple[float, ...], ...],
) -> list[_FloatArray]:
    """Exact weighted counts of covering exposures: one map per weight vector.

    Weights must be exactly representable sums (integers, multiples of 1/256), so that the
    result does not depend on the order of summation (BLAS) and regions agree with wholes.
    """
    n = len(exposures)
    sx = np.zeros((n, xs[1] - xs[0]))
    sy = np.zeros((ys[1] - ys[0], n))
    crossing: list[tuple[int, _IntArray, _IntArray]] = []
    dead: list[tuple[int, list[tuple[slice, slice, _BoolArray]]]] = []
    for i, e in enumerate(exposures):
        fp = footprint(e, xs, ys)
        if fp[0] == "out":
            continue
        sepx, sepy = _separable(e, xs, ys)
        sx[i] = sepx
        sy[:, i] = sepy
        if fp[0] == "cross":
            assert fp[1] is not None and fp[2] is not None
            crossing.append((i, fp[1], fp[2]))
        parts = dead_parts(e, xs, ys, sepx, sepy, fp)
        if parts:
            dead.append((i, parts))
    # Separable part: sum_e w_e sy[r, e] sx[e, c]. Rows (and columns) fall in few classes of
    # identical "which exposures" bit patterns, so build a small class x class table and
    # gather (a BLAS matmul would do, but OpenBLAS threads crawl on a busy machine).
    bit = np.left_shift(np.uint64(1), np.arange(n, dtype=np.uint64))
    row_codes = (sy.astype(np.uint64) * bit[None, :]).sum(axis=1, dtype=np.uint64)
    col_codes = (sx.T.astype(np.uint64) * bit[None, :]).sum(axis=1, dtype=np.uint64)
    row_classes, row_index = np.unique(row_codes, return_inverse=True)
    col_classes, col_index = np.unique(col_codes, return_inverse=True)
    row_bits = (row_classes[:, None] & bit[None, :]) != 0
    col_bits = (col_classes[:, None] & bit[None, :]) != 0
    out = []
    for w in weights:
        wv = np.asarray(w, dtype=np.float64)
        table = np.zeros((row_classes.size, col_classes.size))
        for k in range(n):
            table += np.multiply.outer(row_bits[:, k] * wv[k], col_bits[:, k])
        total = np.take(table[row_index.reshape(-1)], col_index.reshape(-1), axis=1)
        for i, a, b in crossing:
            # outside the field of view, row by row (each row's inside is one interval)
            wsx = wv[i] * sx[i]
            for r in np.flatnonzero(sy[:, i]).tolist():
                ai, bi = int(a[r]), int(b[r])
                total[r, :ai] -= wsx[:ai]
                total[r, bi:] -= wsx[bi:]
        for i, parts in dead:
            for rows, cols, part in parts:
                total[rows, cols] -= wv[i] * part
        out.append(total)
    return out
