"""Pixels of the emulator's images, any region bit-identical to the whole file.

Every value is a function of the pixel's *global* coordinates in its projection cell's grid
(:class:`~ps1dask.emulator.survey.ProjcellFrame`), never of the region asked for:

- noise: a counter-based hash of (seed, projcell, filter, image, X, Y), turned into a
  Gaussian by Box-Muller (:mod:`~ps1dask.emulator.noise`);
- stars: pixel-integrated Gaussian PSFs truncated at ``ceil(5 sigma)`` pixels from the star's
  centre pixel and normalised so the stamp holds the whole flux; a region adds, in source-id
  order, every star whose stamp reaches it, so each pixel sums the same terms in the same
  order whatever the region;
- warp coverage: separable detector gap patterns, dead cells and field-of-view edges, all in
  integer arithmetic; stack exposure/number maps are exact sums of it
  (:mod:`~ps1dask.emulator.coverage`).

Per-image constants come from :mod:`~ps1dask.emulator.image_models`, headers from
:mod:`~ps1dask.emulator.headers`.

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

import numpy as np
import numpy.typing as npt
from scipy.special import erf

from ps1dask.emulator.coverage import Span, stack_coverage, warp_coverage
from ps1dask.emulator.image_models import StackModel, WarpModel, stack_model, warp_model
from ps1dask.emulator.noise import gauss_grid
from ps1dask.emulator.service_rules import MASK_BITS, asinh_value, counts_of_magnitude, to_disk
from ps1dask.emulator.stars import C_MAG, star_mags_at, stars_for_global_box
from ps1dask.emulator.survey import (
    BAND_INDEX,
    SATURATION_COUNTS,
    ImageRef,
    check_image,
    exposure_of,
    hash_ints,
    projcell_exposures,
    projcell_frame,
)
from ps1dask.exceptions import InvalidParameterError
from ps1dask.tessellation import PIXEL_SCALE_DEG

_IntArray = npt.NDArray[np.int64]
_FloatArray = npt.NDArray[np.float64]
_BoolArray = npt.NDArray[np.bool_]

BLANK = -32768
_BLANK_BIT, _SAT_BIT = MASK_BITS["BLANK"], MASK_BITS["SAT"]
_FLAT_BIT, _CR_BIT = MASK_BITS["FLAT"], MASK_BITS["CR"]
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_PIXEL_ARCSEC = PIXEL_SCALE_DEG * 3600.0
_PSF_TRUNCATION_SIGMA = 5.0
#: Rows per block when rendering large regions (bounded memory, parallel blocks).
_BLOCK_ROWS = 128
_CR_BLOCK = 1024
_CR_PER_BLOCK = 6.0

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
    table, gx, gy = stars_for_global_box(
        seed, projcell, X0 - half - 1.0, X1 + half + 1.0, Y0 - half - 1.0, Y1 + half + 1.0
    )
    ic = np.floor(gx + 0.5).astype(np.int64)
    jc = np.floor(gy + 0.5).astype(np.int64)
    keep = (ic + half >= X0) & (ic - half < X1) & (jc + half >= Y0) & (jc - half < Y1)
    table, gx, gy, ic, jc = table[keep], gx[keep], gy[keep], ic[keep], jc[keep]
    if mjd_utc is None:
        mags = table[:, C_MAG + BAND_INDEX[band]]
    else:
        mags = star_mags_at(table, band, mjd_utc)
    flux = counts_of_magnitude(mags, zeropoint)
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
    rng = np.random.Generator(np.random.PCG64(hash_ints(key, bx, by)))
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
    stack: StackModel | None
    warp: WarpModel | None
    stars: _StarField | None


def _needs_stars(image_type: str) -> bool:
    return image_type in ("stack", "stack.wt", "stack.mask", "warp", "warp.wt", "warp.mask")


def _span(coords: _IntArray) -> Span:
    return int(coords[0]), int(coords[-1]) + 1


@functools.lru_cache(maxsize=1024)
def _sky_variance_by_count(m: StackModel) -> _FloatArray:
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
    exposures = projcell_exposures(job.seed, m.projcell, m.band)
    ones = (1.0,) * len(exposures)
    if kind == "stack.exp":
        (exp,) = stack_coverage(exposures, _span(X), _span(Y), (m.exp_times,))
        return to_disk(exp, m.exp_bzero, m.exp_bscale)
    if kind == "stack.expwt":
        (expwt,) = stack_coverage(exposures, _span(X), _span(Y), (m.exp_weights,))
        return to_disk(expwt, m.expwt_bzero, m.expwt_bscale)
    (n_local,) = stack_coverage(exposures, _span(X), _span(Y), (ones,))
    count = n_local.astype(np.intp)  # exact small integers
    if kind == "stack.num":
        return count.astype(np.int16)
    assert job.stars is not None
    stars = _paint(job.stars, int(X[0]), int(Y[0]), (Y.size, X.size))
    if kind == "stack.mask":
        mask = np.where(count == 0, np.int16(_BLANK_BIT), np.int16(0))
        mask |= np.where(stars > m.flux_sat, np.int16(_SAT_BIT), np.int16(0))
        return mask
    # variance: the sources' photon noise plus the sky noise of the exposures covering the
    # pixel (NaN where none does)
    var = np.maximum(stars, 0.0)
    var *= m.poisson_k
    var += np.take(_sky_variance_by_count(m), count)
    if kind == "stack.wt":
        v = asinh_value(var, m.wt_bsoften, m.wt_boffset)
        return to_disk(v, m.wt_bzero, m.wt_bscale)
    noise = np.sqrt(var, out=var)
    noise *= gauss_grid(m.noise_key, X, Y)
    flux = m.boffset + stars
    flux += noise
    v = asinh_value(flux, m.bsoften, m.boffset)
    return to_disk(v, m.bzero, m.bscale)


def _render_warp_block(job: _Job, X: _IntArray, Y: _IntArray) -> npt.NDArray[np.int16]:
    m = job.warp
    assert m is not None and job.stars is not None
    kind = job.ref.image_type
    cov, dead = warp_coverage(m.exposure, _span(X), _span(Y))
    X0, X1, Y0, Y1 = int(X[0]), int(X[-1]) + 1, int(Y[0]), int(Y[-1]) + 1
    stars = _paint(job.stars, X0, Y0, (Y.size, X.size))
    sky_x = m.grad_amp[0] * np.sin(2 * math.pi * X / m.grad_period[0] + m.grad_phase[0])
    sky_y = m.grad_amp[1] * np.sin(2 * math.pi * Y / m.grad_period[1] + m.grad_phase[1])
    model = (m.sky + sky_y[:, None] + sky_x[None, :]) + stars
    sat = model > SATURATION_COUNTS
    crs = _cosmic_rays(m.cr_key, X0, X1, Y0, Y1)
    if kind == "warp.mask":
        mask = np.where(cov, np.int16(0), np.int16(_BLANK_BIT))
        for rows, cols, part in dead:
            mask[rows, cols] |= np.where(part, np.int16(_FLAT_BIT), np.int16(0))
        mask |= np.where(sat & cov, np.int16(_SAT_BIT), np.int16(0))
        for cr_x, cr_y, _ in crs:
            r, c = cr_y - Y0, cr_x - X0
            mask[r, c] |= np.where(cov[r, c], np.int16(_CR_BIT), np.int16(0))
        return mask
    # variance: sky plus the sources' photon noise (gain 1)
    var = np.maximum(stars, 0.0)
    var += m.sigma_sky**2
    if kind == "warp.wt":
        var[~cov] = np.nan
        return to_disk(var, m.wt_bzero, m.wt_bscale)
    noise = np.sqrt(var, out=var)
    noise *= gauss_grid(m.noise_key, X, Y)
    flux = model
    flux += noise
    for cr_x, cr_y, amp in crs:
        flux[cr_y - Y0, cr_x - X0] += amp
    np.minimum(flux, SATURATION_COUNTS, out=flux)
    flux[sat] = SATURATION_COUNTS
    flux[~cov] = np.nan
    return to_disk(flux, m.bzero, m.bscale)


# --------------------------------------------------------------------------------------
# public entry points (called by SyntheticSky and the whole-file writer)
# --------------------------------------------------------------------------------------


def _job(seed: int, ref: ImageRef, box: tuple[int, int, int, int] | None) -> _Job:
    check_image(seed, ref)
    frame = projcell_frame(ref.skycell.projcell)
    off_x, off_y = frame.offset(ref.skycell.subcell)
    stack = warp = None
    if ref.is_warp:
        warp = warp_model(seed, exposure_of(seed, ref))
    else:
        stack = stack_model(seed, ref.skycell.projcell, ref.band)
    stars = None
    if box is not None and _needs_stars(ref.image_type):
        X0, X1, Y0, Y1 = box
        if warp is not None:
            stars = _star_field(
                seed,
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
                seed,
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
    return _Job(seed, ref, off_x, off_y, stack, warp, stars)


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
    seed: int, ref: ImageRef, r0: int, r1: int, c0: int, c1: int, parallel: bool
) -> npt.NDArray[np.int16]:
    frame = projcell_frame(ref.skycell.projcell)
    off_x, off_y = frame.offset(ref.skycell.subcell)
    out = np.empty((r1 - r0, c1 - c0), dtype=np.int16)
    if out.size == 0:
        check_image(seed, ref)
        return out
    job = _job(seed, ref, (c0 + off_x, c1 + off_x, r0 + off_y, r1 + off_y))
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


def render_disk(seed: int, ref: ImageRef, rows: slice, cols: slice) -> npt.NDArray[np.int16]:
    """Stored int16 pixels of a region (0-based row and column slices) of one image."""
    frame = projcell_frame(ref.skycell.projcell)
    r0, r1 = _check_slice(rows, frame.naxis2, "rows")
    c0, c1 = _check_slice(cols, frame.naxis1, "cols")
    big = (r1 - r0) * (c1 - c0) >= 4 * _BLOCK_ROWS * frame.naxis1
    return _render(seed, ref, r0, r1, c0, c1, parallel=big)


def render_whole(seed: int, ref: ImageRef) -> npt.NDArray[np.int16]:
    """Stored int16 pixels of one whole image."""
    frame = projcell_frame(ref.skycell.projcell)
    return _render(seed, ref, 0, frame.naxis2, 0, frame.naxis1, parallel=True)
