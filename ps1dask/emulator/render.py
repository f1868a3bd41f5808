"""Pixels and headers of the emulator's images, any region bit-identical to the whole file.

Every value is a function of the pixel's *global* coordinates in its projection cell's grid
(:class:`~ps1dask.emulator.sky._ProjcellFrame`), never of the region asked for:

- noise: a counter-based hash (splitmix64 in uint64 numpy arithmetic) of
  (seed, projcell, filter, image, X, Y), turned into a Gaussian by Box-Muller;
- stars: pixel-integrated Gaussian PSFs truncated at ``ceil(5 sigma)`` pixels from the star's
  centre pixel and normalised so the stamp holds the whole flux; a region adds, in source-id
  order, every star whose stamp reaches it, so each pixel sums the same terms in the same
  order whatever the region;
- warp coverage: separable detector gap patterns, dead cells and field-of-view edges, all in
  integer arithmetic; stack exposure/number maps are exact sums of it.

Stacks: ``flux = BOFFSET + stars(mean flux) + noise`` in counts of zero point
``25 + 2.5 log10(EXPTIME)``, stored asinh-scaled (BSOFTEN ~ the per-pixel noise, BOFFSET = the
residual sky level). Warps: ``sky + stars(flux at mid-exposure) + noise + cosmic rays`` in
counts of zero point ``FPA.ZP + 2.5 log10(EXPTIME)``, linear, NaN (BLANK) off coverage.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from scipy.special import erf

from ps1dask.conventions import (
    MaskBit,
    abmag_to_flux,
    asinh_encode_flux,
    quantize_to_disk,
    stack_zeropoint,
    warp_zeropoint,
)
from ps1dask.emulator.sky import (
    _BAND_INDEX,
    _C_MAG,
    _FPA_ZP_NOMINAL,
    _SATURATION_COUNTS,
    _SEEING_MEDIAN,
    _STACK_DEPTH,
    _STACK_DEPTH_NREF,
    _TAG_CR,
    _TAG_STACK,
    _TAG_WARP,
    _WARP_DEPTH,
    _WARP_EXPTIME,
    ImageRef,
    _Exposure,
    _hash_ints,
    _projcell_exposures,
    _projcell_frame,
    _star_mags_at,
    _stars_for_global_box,
)
from ps1dask.exceptions import InvalidParameterError
from ps1dask.tessellation._core import HEADER_CDELT_DEG, PIXEL_SCALE_DEG

if TYPE_CHECKING:  # pragma: no cover
    from ps1dask.emulator.sky import SyntheticSky

_IntArray = npt.NDArray[np.int64]
_FloatArray = npt.NDArray[np.float64]
_BoolArray = npt.NDArray[np.bool_]

_BLANK = -32768
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_PIXEL_ARCSEC = PIXEL_SCALE_DEG * 3600.0
_PSF_TRUNCATION_SIGMA = 5.0
#: Rows per block when rendering large regions (bounded memory, parallel blocks).
_BLOCK_ROWS = 128
_CR_BLOCK = 1024
_CR_PER_BLOCK = 6.0

# --------------------------------------------------------------------------------------
# counter-based noise
# --------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31, _S32 = (np.uint64(s) for s in (27, 30, 31, 32))
_COORD_OFFSET = 1 << 31


def _hash_grid(key: int, X: _IntArray, Y: _IntArray) -> npt.NDArray[np.uint64]:
    """splitmix64 of every (X, Y) pair of the grid ``Y x X`` under a 64-bit ``key``."""
    xs = (np.asarray(X, dtype=np.int64) + _COORD_OFFSET).astype(np.uint64)
    ys = (np.asarray(Y, dtype=np.int64) + _COORD_OFFSET).astype(np.uint64)
    z = (ys[:, None] << _S32) | xs[None, :]
    z *= _GOLDEN
    z += np.uint64(key)
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def _gauss_grid(key: int, X: _IntArray, Y: _IntArray) -> npt.NDArray[np.float32]:
    """A standard normal deviate per grid pixel (float32 Box-Muller on 2 x 24 hash bits)."""
    z = np.ascontiguousarray(_hash_grid(key, X, Y))
    halves = z.view(np.uint32).reshape(z.shape + (2,))
    if np.little_endian:
        lo_w, hi_w = halves[..., 0], halves[..., 1]
    else:  # pragma: no cover
        hi_w, lo_w = halves[..., 0], halves[..., 1]
    u1 = (hi_w >> np.uint32(8)).astype(np.float32)
    u2 = (lo_w >> np.uint32(8)).astype(np.float32)
    u1 += np.float32(0.5)
    u1 *= np.float32(2.0**-24)
    u2 *= np.float32(2.0 * math.pi * 2.0**-24)
    np.log(u1, out=u1)
    u1 *= np.float32(-2.0)
    np.sqrt(u1, out=u1)
    np.cos(u2, out=u2)
    u1 *= u2
    return u1


def _uniform_pairs(key: int, a: _IntArray, b: _IntArray) -> _FloatArray:
    """Uniform [0, 1) per (a, b) pair of the grid ``b x a``, from the same hash."""
    return (_hash_grid(key, a, b) >> np.uint64(11)).astype(np.float64) * 2.0**-53


# --------------------------------------------------------------------------------------
# image models (all header-visible numbers rounded so they survive FITS text exactly)
# --------------------------------------------------------------------------------------


def _r12(x: float) -> float:
    return float(f"{x:.12g}")


def _scale_for(vmin: float, vmax: float) -> tuple[float, float]:
    """(BZERO, BSCALE) mapping [vmin, vmax] into int16 with a little room to spare."""
    bscale = _r12((vmax - vmin) / 65000.0)
    bzero = _r12(0.5 * (vmax + vmin))
    return bzero, bscale


def _sigma_px(fwhm_arcsec: float) -> float:
    return fwhm_arcsec / _FWHM_PER_SIGMA / _PIXEL_ARCSEC


def _poisson_k(band: str) -> float:
    """Stack counts per detected electron-equivalent: var(stack) from sources = k * flux."""
    return 10.0 ** (0.4 * (25.0 - _FPA_ZP_NOMINAL[band]))


@dataclass(frozen=True)
class _StackModel:
    projcell: int
    band: str
    n_total: int
    exptime: float
    zeropoint: float
    fwhm: float
    sigma_psf: float
    sigma_full: float  #: per-pixel noise with every exposure covering
    boffset: float
    bsoften: float
    poisson_k: float
    flux_sat: float
    bzero: float
    bscale: float
    wt_bsoften: float
    wt_boffset: float
    wt_bzero: float
    wt_bscale: float
    exp_bzero: float
    exp_bscale: float
    expwt_bzero: float
    expwt_bscale: float
    exp_times: tuple[float, ...]
    exp_weights: tuple[float, ...]  #: exptime x relative weight (multiples of 1/256)
    noise_key: int


@functools.lru_cache(maxsize=1024)
def _stack_model(seed: int, projcell: int, band: str) -> _StackModel:
    exposures = _projcell_exposures(seed, projcell, band)
    n = len(exposures)
    times = tuple(e.epoch.exptime for e in exposures)
    total = float(sum(times))
    zp = stack_zeropoint(total)
    rng = np.random.Generator(
        np.random.PCG64(_hash_ints(seed, _TAG_STACK, projcell, _BAND_INDEX[band]))
    )
    u = rng.random(4)
    fwhm = round(1.1 + 0.2 * float(u[0]), 3)
    sig = _sigma_px(fwhm)
    depth = _STACK_DEPTH[band] + 1.25 * math.log10(n / _STACK_DEPTH_NREF)
    f5 = 10.0 ** (0.4 * (zp - depth))
    sigma_full = f5 / (5.0 * math.sqrt(4.0 * math.pi) * sig)
    bsoften = _r12(sigma_full)
    boffset = _r12(0.5 + 3.5 * float(u[1]))
    k = _poisson_k(band)
    flux_sat = _SATURATION_COUNTS * k * n
    v_lo = float(asinh_encode_flux(boffset - 40.0 * bsoften, bsoften, boffset))
    v_hi = float(asinh_encode_flux(boffset + 1.05 * flux_sat, bsoften, boffset))
    bzero, bscale = _scale_for(v_lo, v_hi)
    wt_bsoften, wt_boffset = _r12(sigma_full**2), 0.0
    var_max = sigma_full**2 * n + k * 1.05 * flux_sat
    wt_bzero, wt_bscale = _scale_for(0.0, float(asinh_encode_flux(var_max, wt_bsoften, wt_boffset)))
    weights = []
    for e in exposures:
        rel = (
            10.0 ** (0.8 * (e.epoch.fpa_zp - _FPA_ZP_NOMINAL[band]))
            * (_SEEING_MEDIAN[band] / e.epoch.seeing_fwhm_arcsec) ** 2
        )
        weights.append(round(e.epoch.exptime * rel * 256.0) / 256.0)
    exp_bzero, exp_bscale = _scale_for(0.0, total)
    expwt_bzero, expwt_bscale = _scale_for(0.0, max(float(sum(weights)), 1.0))
    return _StackModel(
        projcell=projcell,
        band=band,
        n_total=n,
        exptime=total,
        zeropoint=zp,
        fwhm=fwhm,
        sigma_psf=sig,
        sigma_full=sigma_full,
        boffset=boffset,
        bsoften=bsoften,
        poisson_k=k,
        flux_sat=flux_sat,
        bzero=bzero,
        bscale=bscale,
        wt_bsoften=wt_bsoften,
        wt_boffset=wt_boffset,
        wt_bzero=wt_bzero,
        wt_bscale=wt_bscale,
        exp_bzero=exp_bzero,
        exp_bscale=exp_bscale,
        expwt_bzero=expwt_bzero,
        expwt_bscale=expwt_bscale,
        exp_times=times,
        exp_weights=tuple(weights),
        noise_key=_hash_ints(seed, _TAG_STACK, projcell, _BAND_INDEX[band], 1),
    )


@dataclass(frozen=True)
class _WarpModel:
    exposure: _Exposure
    zeropoint: float
    sigma_psf: float
    sigma_sky: float  #: per-pixel sky noise (counts)
    sky: float
    grad_amp: tuple[float, float]
    grad_period: tuple[float, float]
    grad_phase: tuple[float, float]
    bzero: float
    bscale: float
    wt_bzero: float
    wt_bscale: float
    noise_key: int
    cr_key: int


def _warp_sky_sigma(band: str) -> float:
    """Per-pixel sky noise (counts) giving the nominal warp depth at median seeing."""
    t = _WARP_EXPTIME[band]
    zp = warp_zeropoint(_FPA_ZP_NOMINAL[band], t)
    f5 = 10.0 ** (0.4 * (zp - _WARP_DEPTH[band]))
    return f5 / (5.0 * math.sqrt(4.0 * math.pi) * _sigma_px(_SEEING_MEDIAN[band]))


@functools.lru_cache(maxsize=8192)
def _warp_model(seed: int, exposure: _Exposure) -> _WarpModel:
    ep = exposure.epoch
    bidx = _BAND_INDEX[exposure.band]
    sig_sky = _warp_sky_sigma(exposure.band)
    rng = np.random.Generator(
        np.random.PCG64(_hash_ints(seed, _TAG_WARP, exposure.projcell, bidx, ep.index))
    )
    u = rng.random(8)
    sky = 0.3 * sig_sky * (u[0] - 0.5)
    bzero, bscale = _scale_for(-40.0 * sig_sky, _SATURATION_COUNTS)
    wt_bzero, wt_bscale = _scale_for(0.0, sig_sky**2 + 1.05 * _SATURATION_COUNTS)
    return _WarpModel(
        exposure=exposure,
        zeropoint=warp_zeropoint(ep.fpa_zp, ep.exptime),
        sigma_psf=_sigma_px(ep.seeing_fwhm_arcsec),
        sigma_sky=sig_sky,
        sky=float(sky),
        grad_amp=(0.15 * sig_sky * float(u[1]), 0.15 * sig_sky * float(u[2])),
        grad_period=(8000.0 + 30000.0 * float(u[3]), 8000.0 + 30000.0 * float(u[4])),
        grad_phase=(2 * math.pi * float(u[5]), 2 * math.pi * float(u[6])),
        bzero=bzero,
        bscale=bscale,
        wt_bzero=wt_bzero,
        wt_bscale=wt_bscale,
        noise_key=_hash_ints(seed, _TAG_WARP, exposure.projcell, bidx, ep.index, 1),
        cr_key=_hash_ints(seed, _TAG_CR, exposure.projcell, bidx, ep.index),
    )


# --------------------------------------------------------------------------------------
# warp coverage
# --------------------------------------------------------------------------------------

_DEAD_CELL_PROB = 0.012

# Pixel grids are always contiguous ranges of global coordinates: a 1-D grid is (start, stop).
_Span = tuple[int, int]


@functools.lru_cache(maxsize=4096)
def _sep_1d(span: _Span, origin: int, cell: int, gap: int, ota_gap: int) -> _BoolArray:
    """Along one axis: True where the camera has pixels (not in a cell or OTA gap)."""
    period = 8 * cell + ota_gap
    u = (np.arange(*span, dtype=np.int64) - origin) % period
    out = (u < 8 * cell) & ((u % cell) >= gap)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4096)
def _cell_runs(span: _Span, origin: int, cell: int, ota_gap: int) -> tuple[tuple[int, slice], ...]:
    """(global cell number, index slice into the span) of each detector cell along one axis."""
    period = 8 * cell + ota_gap
    rel = np.arange(*span, dtype=np.int64) - origin
    ota = rel // period
    u = rel - ota * period
    none = np.iinfo(np.int64).min
    cid = np.where(u < 8 * cell, ota * 8 + u // cell, none)
    if cid.size == 0:
        return ()
    edges = np.flatnonzero(np.diff(cid)) + 1
    starts = np.concatenate([[0], edges]).tolist()
    stops = np.concatenate([edges, [cid.size]]).tolist()
    return tuple((int(cid[a]), slice(a, b)) for a, b in zip(starts, stops) if cid[a] != none)


def _dead_cells(exposure: _Exposure, xs: _Span, ys: _Span) -> list[tuple[slice, slice]]:
    """(rows, cols) of the dead detector cells of an exposure on the grid ``ys x xs``."""
    lay = exposure.layout
    runs_x = _cell_runs(xs, lay.ox, lay.cell_x, lay.ota_gap_x)
    runs_y = _cell_runs(ys, lay.oy, lay.cell_y, lay.ota_gap_y)
    if not runs_x or not runs_y:
        return []
    gx = np.array([c for c, _ in runs_x], dtype=np.int64)
    gy = np.array([c for c, _ in runs_y], dtype=np.int64)
    u = _uniform_pairs(lay.dead_cell_key, gx, gy)
    return [(runs_y[iy][1], runs_x[ix][1]) for iy, ix in zip(*np.nonzero(u < _DEAD_CELL_PROB))]


_Footprint = tuple[str, _IntArray | None, _IntArray | None]


def _footprint(exposure: _Exposure, xs: _Span, ys: _Span) -> _Footprint:
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
    fp: _Footprint, ncols: int, rows: slice = slice(None), cols: slice = slice(None)
) -> _BoolArray:
    """The "cross" footprint as a boolean block (rows x cols of the grid)."""
    _, a, b = fp
    assert a is not None and b is not None
    c = np.arange(ncols, dtype=np.int64)[cols]
    return (c[None, :] >= a[rows, None]) & (c[None, :] < b[rows, None])


def _separable(exposure: _Exposure, xs: _Span, ys: _Span) -> tuple[_BoolArray, _BoolArray]:
    lay = exposure.layout
    return (
        _sep_1d(xs, lay.ox, lay.cell_x, lay.cell_gap_x, lay.ota_gap_x),
        _sep_1d(ys, lay.oy, lay.cell_y, lay.cell_gap_y, lay.ota_gap_y),
    )


def _dead_parts(
    exposure: _Exposure, xs: _Span, ys: _Span, sepx: _BoolArray, sepy: _BoolArray, fp: _Footprint
) -> list[tuple[slice, slice, _BoolArray]]:
    """Dead cells: (rows, cols, pixels the exposure would otherwise have there)."""
    parts = []
    for rows, cols in _dead_cells(exposure, xs, ys):
        part = sepy[rows][:, None] & sepx[cols][None, :]
        if fp[0] == "cross":
            part &= _inside(fp, xs[1] - xs[0], rows, cols)
        parts.append((rows, cols, part))
    return parts


def _warp_coverage(
    exposure: _Exposure, xs: _Span, ys: _Span
) -> tuple[_BoolArray, list[tuple[slice, slice, _BoolArray]]]:
    """Where one exposure has pixels on the grid ``ys x xs``, and its dead-cell parts."""
    shape = (ys[1] - ys[0], xs[1] - xs[0])
    fp = _footprint(exposure, xs, ys)
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
    dead = _dead_parts(exposure, xs, ys, sepx, sepy, fp)
    for rows, cols, part in dead:
        cov[rows, cols] &= ~part
    return cov, dead


def _stack_coverage(
    exposures: tuple[_Exposure, ...],
    xs: _Span,
    ys: _Span,
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
        fp = _footprint(e, xs, ys)
        if fp[0] == "out":
            continue
        sepx, sepy = _separable(e, xs, ys)
        sx[i] = sepx
        sy[:, i] = sepy
        if fp[0] == "cross":
            assert fp[1] is not None and fp[2] is not None
            crossing.append((i, fp[1], fp[2]))
        parts = _dead_parts(e, xs, ys, sepx, sepy, fp)
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
        for e in range(n):
            table += np.multiply.outer(row_bits[:, e] * wv[e], col_bits[:, e])
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


# --------------------------------------------------------------------------------------
# stars
# --------------------------------------------------------------------------------------


@dataclass
class _StarField:
    """Stars of a region: integer centre pixel, normalised 1-D profiles, flux (id order)."""

    ic: _IntArray
    jc: _IntArray
    half: int
    fpy: _FloatArray  # flux * y profile, (n, 2h+1)
    px: _FloatArray  # x profile, (n, 2h+1)

    def __len__(self) -> int:
        return int(self.ic.size)

    def subset(self, keep: _BoolArray) -> _StarField:
        return _StarField(self.ic[keep], self.jc[keep], self.half, self.fpy[keep], self.px[keep])

    def touching(self, X0: int, X1: int, Y0: int, Y1: int) -> _BoolArray:
        h = self.half
        return (self.ic + h >= X0) & (self.ic - h < X1) & (self.jc + h >= Y0) & (self.jc - h < Y1)


def _profiles(centre: _FloatArray, ic: _IntArray, sigma: float, half: int) -> _FloatArray:
    edges = np.arange(-half, half + 2, dtype=np.float64) - 0.5
    arg = ((ic - centre)[:, None] + edges[None, :]) / (math.sqrt(2.0) * sigma)
    prof = 0.5 * np.diff(erf(arg), axis=1)
    return prof / prof.sum(axis=1, keepdims=True)


def _star_field(
    seed: int,
    projcell: int,
    band: str,
    mjd_utc: float | None,
    zeropoint: float,
    sigma: float,
    X0: int,
    X1: int,
    Y0: int,
    Y1: int,
) -> _StarField:
    """Stars whose stamps reach the global box [X0, X1) x [Y0, Y1)."""
    half = math.ceil(_PSF_TRUNCATION_SIGMA * sigma)
    table, gx, gy = _stars_for_global_box(
        seed, projcell, X0 - half - 1.0, X1 + half + 1.0, Y0 - half - 1.0, Y1 + half + 1.0
    )
    ic = np.floor(gx + 0.5).astype(np.int64)
    jc = np.floor(gy + 0.5).astype(np.int64)
    keep = (ic + half >= X0) & (ic - half < X1) & (jc + half >= Y0) & (jc - half < Y1)
    table, gx, gy, ic, jc = table[keep], gx[keep], gy[keep], ic[keep], jc[keep]
    if mjd_utc is None:
        mags = table[:, _C_MAG + _BAND_INDEX[band]]
    else:
        mags = _star_mags_at(table, band, mjd_utc)
    flux = abmag_to_flux(mags, zeropoint)
    px = _profiles(gx, ic, sigma, half)
    py = _profiles(gy, jc, sigma, half)
    return _StarField(ic, jc, half, py * flux[:, None], px)


def _paint(stars: _StarField, X0: int, Y0: int, shape: tuple[int, int]) -> _FloatArray:
    """Sum of the stamps over the grid starting at global (X0, Y0), in star order."""
    out = np.zeros(shape, dtype=np.float64)
    h = stars.half
    rows, cols = shape
    for k in range(len(stars)):
        xa, ya = int(stars.ic[k]) - h, int(stars.jc[k]) - h
        x0, x1 = max(xa, X0), min(xa + 2 * h + 1, X0 + cols)
        y0, y1 = max(ya, Y0), min(ya + 2 * h + 1, Y0 + rows)
        if x0 >= x1 or y0 >= y1:
            continue
        stamp = stars.fpy[k, y0 - ya : y1 - ya, None] * stars.px[k, None, x0 - xa : x1 - xa]
        out[y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0] += stamp
    return out


# --------------------------------------------------------------------------------------
# cosmic rays (warps)
# --------------------------------------------------------------------------------------

_CR_DIRS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))


@functools.lru_cache(maxsize=8192)
def _cr_block(key: int, bx: int, by: int) -> tuple[tuple[_IntArray, _IntArray, _FloatArray], ...]:
    rng = np.random.Generator(np.random.PCG64(_hash_ints(key, bx, by)))
    n = int(rng.poisson(_CR_PER_BLOCK))
    u = rng.random((n, 6))
    hits = []
    for k in range(n):
        length = 1 + int(u[k, 0] * 4)
        dx, dy = _CR_DIRS[int(u[k, 1] * 8)]
        x0 = bx * _CR_BLOCK + int(u[k, 2] * _CR_BLOCK)
        y0 = by * _CR_BLOCK + int(u[k, 3] * _CR_BLOCK)
        steps = np.arange(length, dtype=np.int64)
        amp = (300.0 + 3000.0 * u[k, 4]) * (0.6 + 0.4 * np.cos(steps * (1.0 + u[k, 5])))
        hit = (x0 + dx * steps, y0 + dy * steps, amp)
        for arr in hit:
            arr.setflags(write=False)
        hits.append(hit)
    return tuple(hits)


def _cosmic_rays(
    key: int, X0: int, X1: int, Y0: int, Y1: int
) -> list[tuple[_IntArray, _IntArray, _FloatArray]]:
    """Cosmic-ray pixels (global X, Y, counts) reaching the box, in a fixed order."""
    out = []
    for by in range((Y0 - 4) // _CR_BLOCK, (Y1 + 4) // _CR_BLOCK + 1):
        for bx in range((X0 - 4) // _CR_BLOCK, (X1 + 4) // _CR_BLOCK + 1):
            for xs, ys, amp in _cr_block(key, bx, by):
                inside = (xs >= X0) & (xs < X1) & (ys >= Y0) & (ys < Y1)
                if np.any(inside):
                    out.append((xs[inside], ys[inside], amp[inside]))
    return out


# --------------------------------------------------------------------------------------
# block renderers
# --------------------------------------------------------------------------------------


@dataclass
class _Job:
    """What every block of one image render shares."""

    seed: int
    ref: ImageRef
    off_x: int
    off_y: int
    stack: _StackModel | None
    warp: _WarpModel | None
    stars: _StarField | None


def _needs_stars(image_type: str) -> bool:
    return image_type in ("stack", "stack.wt", "stack.mask", "warp", "warp.wt", "warp.mask")


def _span(coords: _IntArray) -> _Span:
    return int(coords[0]), int(coords[-1]) + 1


@functools.lru_cache(maxsize=1024)
def _sky_variance_by_count(m: _StackModel) -> _FloatArray:
    """Per-pixel sky variance of a stack pixel covered by n exposures (NaN for n = 0)."""
    n = np.arange(m.n_total + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = (m.sigma_full**2 * m.n_total) / n
    out[0] = np.nan
    out.setflags(write=False)
    return out


def _render_stack_block(job: _Job, X: _IntArray, Y: _IntArray) -> npt.NDArray[np.int16]:
    m = job.stack
    assert m is not None
    kind = job.ref.image_type
    exposures = _projcell_exposures(job.seed, m.projcell, m.band)
    ones = (1.0,) * len(exposures)
    if kind == "stack.exp":
        (exp,) = _stack_coverage(exposures, _span(X), _span(Y), (m.exp_times,))
        return quantize_to_disk(exp, m.exp_bzero, m.exp_bscale)
    if kind == "stack.expwt":
        (expwt,) = _stack_coverage(exposures, _span(X), _span(Y), (m.exp_weights,))
        return quantize_to_disk(expwt, m.expwt_bzero, m.expwt_bscale)
    (n_local,) = _stack_coverage(exposures, _span(X), _span(Y), (ones,))
    count = n_local.astype(np.intp)  # exact small integers
    if kind == "stack.num":
        return count.astype(np.int16)
    assert job.stars is not None
    stars = _paint(job.stars, int(X[0]), int(Y[0]), (Y.size, X.size))
    if kind == "stack.mask":
        mask = np.where(count == 0, np.int16(MaskBit.BLANK), np.int16(0))
        mask |= np.where(stars > m.flux_sat, np.int16(MaskBit.SAT), np.int16(0))
        return mask
    # variance: the sources' photon noise plus the sky noise of the exposures covering the
    # pixel (NaN where none does)
    var = np.maximum(stars, 0.0)
    var *= m.poisson_k
    var += np.take(_sky_variance_by_count(m), count)
    if kind == "stack.wt":
        v = asinh_encode_flux(var, m.wt_bsoften, m.wt_boffset)
        return quantize_to_disk(v, m.wt_bzero, m.wt_bscale)
    noise = np.sqrt(var, out=var)
    noise *= _gauss_grid(m.noise_key, X, Y)
    flux = m.boffset + stars
    flux += noise
    v = asinh_encode_flux(flux, m.bsoften, m.boffset)
    return quantize_to_disk(v, m.bzero, m.bscale)


def _render_warp_block(job: _Job, X: _IntArray, Y: _IntArray) -> npt.NDArray[np.int16]:
    m = job.warp
    assert m is not None and job.stars is not None
    kind = job.ref.image_type
    cov, dead = _warp_coverage(m.exposure, _span(X), _span(Y))
    X0, X1, Y0, Y1 = int(X[0]), int(X[-1]) + 1, int(Y[0]), int(Y[-1]) + 1
    stars = _paint(job.stars, X0, Y0, (Y.size, X.size))
    sky_x = m.grad_amp[0] * np.sin(2 * math.pi * X / m.grad_period[0] + m.grad_phase[0])
    sky_y = m.grad_amp[1] * np.sin(2 * math.pi * Y / m.grad_period[1] + m.grad_phase[1])
    model = (m.sky + sky_y[:, None] + sky_x[None, :]) + stars
    sat = model > _SATURATION_COUNTS
    crs = _cosmic_rays(m.cr_key, X0, X1, Y0, Y1)
    if kind == "warp.mask":
        mask = np.where(cov, np.int16(0), np.int16(MaskBit.BLANK))
        for rows, cols, part in dead:
            mask[rows, cols] |= np.where(part, np.int16(MaskBit.FLAT), np.int16(0))
        mask |= np.where(sat & cov, np.int16(MaskBit.SAT), np.int16(0))
        for cr_x, cr_y, _ in crs:
            r, c = cr_y - Y0, cr_x - X0
            mask[r, c] |= np.where(cov[r, c], np.int16(MaskBit.CR), np.int16(0))
        return mask
    # variance: sky plus the sources' photon noise (gain 1)
    var = np.maximum(stars, 0.0)
    var += m.sigma_sky**2
    if kind == "warp.wt":
        var[~cov] = np.nan
        return quantize_to_disk(var, m.wt_bzero, m.wt_bscale)
    noise = np.sqrt(var, out=var)
    noise *= _gauss_grid(m.noise_key, X, Y)
    flux = model
    flux += noise
    for cr_x, cr_y, amp in crs:
        flux[cr_y - Y0, cr_x - X0] += amp
    np.minimum(flux, _SATURATION_COUNTS, out=flux)
    flux[sat] = _SATURATION_COUNTS
    flux[~cov] = np.nan
    return quantize_to_disk(flux, m.bzero, m.bscale)


# --------------------------------------------------------------------------------------
# public entry points (called by SyntheticSky)
# --------------------------------------------------------------------------------------


def _job(sky: SyntheticSky, ref: ImageRef, box: tuple[int, int, int, int] | None) -> _Job:
    sky._check(ref)
    frame = _projcell_frame(ref.skycell.projcell)
    off_x, off_y = frame.offset(ref.skycell.subcell)
    stack = warp = None
    if ref.is_warp:
        warp = _warp_model(sky.seed, sky._exposure_of(ref))
    else:
        stack = _stack_model(sky.seed, ref.skycell.projcell, ref.band)
    stars = None
    if box is not None and _needs_stars(ref.image_type):
        X0, X1, Y0, Y1 = box
        if warp is not None:
            stars = _star_field(
                sky.seed,
                frame.projcell,
                ref.band,
                warp.exposure.t_mid_utc,
                warp.zeropoint,
                warp.sigma_psf,
                X0,
                X1,
                Y0,
                Y1,
            )
        else:
            assert stack is not None
            stars = _star_field(
                sky.seed,
                frame.projcell,
                ref.band,
                None,
                stack.zeropoint,
                stack.sigma_psf,
                X0,
                X1,
                Y0,
                Y1,
            )
    return _Job(sky.seed, ref, off_x, off_y, stack, warp, stars)


def _check_slice(s: slice, n: int, what: str) -> tuple[int, int]:
    if not isinstance(s, slice) or s.step not in (None, 1):
        raise InvalidParameterError(f"{what} must be a slice with step 1, got {s!r}")
    start = 0 if s.start is None else int(s.start)
    stop = n if s.stop is None else int(s.stop)
    if not 0 <= start <= stop <= n:
        raise InvalidParameterError(f"{what} {s!r} is not within 0..{n}")
    return start, stop


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _render(
    sky: SyntheticSky, ref: ImageRef, r0: int, r1: int, c0: int, c1: int, parallel: bool
) -> npt.NDArray[np.int16]:
    frame = _projcell_frame(ref.skycell.projcell)
    off_x, off_y = frame.offset(ref.skycell.subcell)
    out = np.empty((r1 - r0, c1 - c0), dtype=np.int16)
    if out.size == 0:
        sky._check(ref)
        return out
    job = _job(sky, ref, (c0 + off_x, c1 + off_x, r0 + off_y, r1 + off_y))
    X = np.arange(c0, c1, dtype=np.int64) + off_x
    render = _render_warp_block if ref.is_warp else _render_stack_block

    def block(a: int) -> None:
        b = min(a + _BLOCK_ROWS, r1)
        Y = np.arange(a, b, dtype=np.int64) + off_y
        sub = job
        if job.stars is not None:
            touching = job.stars.touching(int(X[0]), int(X[-1]) + 1, int(Y[0]), int(Y[-1]) + 1)
            sub = _Job(job.seed, ref, off_x, off_y, job.stack, job.warp, job.stars.subset(touching))
        out[a - r0 : b - r0] = render(sub, X, Y)

    starts = range(r0, r1, _BLOCK_ROWS)
    workers = min(len(starts), _cpu_count(), 8)
    if parallel and workers > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ps1dask-render") as pool:
            for fut in [pool.submit(block, a) for a in starts]:
                fut.result()
    else:
        for a in starts:
            block(a)
    return out


def _render_disk(
    sky: SyntheticSky, ref: ImageRef, rows: slice, cols: slice
) -> npt.NDArray[np.int16]:
    frame = _projcell_frame(ref.skycell.projcell)
    r0, r1 = _check_slice(rows, frame.naxis2, "rows")
    c0, c1 = _check_slice(cols, frame.naxis1, "cols")
    big = (r1 - r0) * (c1 - c0) >= 4 * _BLOCK_ROWS * frame.naxis1
    return _render(sky, ref, r0, r1, c0, c1, parallel=big)


def _render_whole(sky: SyntheticSky, ref: ImageRef) -> npt.NDArray[np.int16]:
    frame = _projcell_frame(ref.skycell.projcell)
    return _render(sky, ref, 0, frame.naxis2, 0, frame.naxis1, parallel=True)


# --------------------------------------------------------------------------------------
# headers
# --------------------------------------------------------------------------------------

_MASK_NAMES = (
    ("FLAT", 0x2),
    ("DARK", 0x4),
    ("BLANK", 0x8),
    ("CTE", 0x10),
    ("SAT", 0x20),
    ("LOW", 0x40),
    ("SUSPECT", 0x80),
    ("CR", 0x100),
    ("SPIKE", 0x200),
    ("GHOST", 0x400),
    ("STREAK", 0x800),
    ("STARCORE", 0x1000),
    ("CONV.BAD", 0x2000),
    ("CONV.POOR", 0x4000),
)


def _hierarch(header: fits.Header, key: str, value: object, comment: str = "") -> None:
    header.append(fits.Card(f"HIERARCH {key}", value, comment))


@functools.lru_cache(maxsize=512)
def _header_cached(seed: int, ref: ImageRef) -> fits.Header:
    from ps1dask.emulator.sky import SyntheticSky
    from ps1dask.tessellation import skycell_geometry_of

    sky = SyntheticSky(seed)
    sky._check(ref)
    geo = skycell_geometry_of(ref.skycell)
    kind = ref.image_type
    h = fits.Header()
    h["BITPIX"] = (16, "array data type")
    h["NAXIS"] = (2, "number of array dimensions")
    h["NAXIS1"] = geo.naxis1
    h["NAXIS2"] = geo.naxis2
    scaled = kind not in ("stack.mask", "stack.num", "warp.mask")
    scales: tuple[float, float] | None
    asinh: tuple[float, float] | None
    if ref.is_warp:
        w = _warp_model(seed, sky._exposure_of(ref))
        scales = (w.wt_bzero, w.wt_bscale) if kind == "warp.wt" else (w.bzero, w.bscale)
        asinh = None
    else:
        s = _stack_model(seed, ref.skycell.projcell, ref.band)
        scales = {
            "stack": (s.bzero, s.bscale),
            "stack.wt": (s.wt_bzero, s.wt_bscale),
            "stack.exp": (s.exp_bzero, s.exp_bscale),
            "stack.expwt": (s.expwt_bzero, s.expwt_bscale),
        }.get(kind)
        asinh = {"stack": (s.bsoften, s.boffset), "stack.wt": (s.wt_bsoften, s.wt_boffset)}.get(
            kind
        )
    if scaled:
        assert scales is not None
        h["BSCALE"] = (scales[1], "Scaling: TRUE = BZERO + BSCALE * DISK")
        h["BZERO"] = (scales[0], "Scaling: TRUE = BZERO + BSCALE * DISK")
        if kind not in ("stack.exp", "stack.expwt"):
            h["BLANK"] = (_BLANK, "Value of undefined pixels")
    if asinh is not None:
        h["BSOFTEN"] = (asinh[0], "Scaling: LINEAR = 2 * BSOFTEN * sinh(TRUE/a)")
        h["BOFFSET"] = (asinh[1], "Scaling: UNCOMP = BOFFSET + LINEAR")
    h["CTYPE1"] = ("RA---TAN", "WCS projection")
    h["CTYPE2"] = ("DEC--TAN", "WCS projection")
    h["CRVAL1"] = (float(geo.crval1), "WCS reference value")
    h["CRVAL2"] = (float(geo.crval2), "WCS reference value")
    h["CRPIX1"] = (float(geo.crpix1), "WCS reference pixel")
    h["CRPIX2"] = (float(geo.crpix2), "WCS reference pixel")
    h["CDELT1"] = (HEADER_CDELT_DEG, "degrees per pixel")
    h["CDELT2"] = (HEADER_CDELT_DEG, "degrees per pixel")
    h["PC001001"] = (-1.0, "WCS transformation matrix")
    h["PC001002"] = (0.0, "WCS transformation matrix")
    h["PC002001"] = (0.0, "WCS transformation matrix")
    h["PC002002"] = (1.0, "WCS transformation matrix")
    h["PSCAMERA"] = ("GPC1", "Camera name")
    h["PSFORMAT"] = ("SKYCELL", "Camera format")
    h["SKYCELL"] = (str(ref.skycell), "Skycell of the tessellation")
    h["TESS_ID"] = ("RINGS.V3", "Tessellation")
    h["FILTER"] = (f"{ref.band}.00000", "Filter")
    _hierarch(h, "FPA.TELESCOPE", "PS1", "Telescope")
    _hierarch(h, "FPA.INSTRUMENT", "GPC1", "Instrument")
    _hierarch(h, "FPA.FILTER", f"{ref.band}.00000", "Filter used")
    if ref.is_warp:
        ep = sky._exposure_of(ref).epoch
        h["EXPTIME"] = (float(ep.exptime), "Exposure time (s)")
        h["MJD-OBS"] = (float(ep.mjd_obs_tai), "MJD at start of exposure")
        h["AIRMASS"] = (float(ep.airmass), "Airmass at start of exposure")
        _hierarch(h, "FPA.ZP", float(ep.fpa_zp), "Magnitude zero point")
        _hierarch(h, "FPA.OBJECT", "3PI", "Object of exposure")
        _hierarch(h, "FPA.EXPOSURE", ep.exposure_name, "Exposure name")
        h["PSF_FWHM"] = (float(ep.seeing_fwhm_arcsec), "PSF FWHM (arcsec)")
    else:
        s = _stack_model(seed, ref.skycell.projcell, ref.band)
        h["EXPTIME"] = (float(s.exptime), "Total exposure time (s)")
        h["NINPUTS"] = (s.n_total, "Number of input warps")
        h["STK_TYPE"] = ("DEEP_STACK", "Type of stack")
        h["PSF_FWHM"] = (float(s.fwhm), "PSF FWHM (arcsec)")
    if kind.endswith(".mask"):
        for i, (name, bit) in enumerate(_MASK_NAMES):
            h[f"MSKNAM{i:02d}"] = (name, "Bit name")
            h[f"MSKVAL{i:02d}"] = (bit, "Bit value")
    h["COMMENT"] = f"Synthetic image of the ps1dask PS1 emulator (seed {seed}); not real data."
    return h


def _image_header(sky: SyntheticSky, ref: ImageRef) -> fits.Header:
    """The image HDU's header as astropy shows a CompImageHDU's ``.header`` (a copy)."""
    return _header_cached(sky.seed, ref).copy()
