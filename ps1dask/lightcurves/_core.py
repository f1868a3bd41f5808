"""Light-curve photometry over in-memory arrays (pure: no I/O).

:func:`forced_photometry` measures every epoch of one position and filter (or any stack of
same-shaped images at one position) and returns calibrated columns: fluxes in microjansky,
AB magnitudes, quality flags. :mod:`ps1dask.lightcurves.store` feeds it from a store.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ps1dask.conventions import DEFAULT_BAD_BITS, MaskBit, counts_to_microjansky
from ps1dask.photometry import (
    FWHM_PER_SIGMA,
    ApertureGeometry,
    clipped_stats,
    gaussian_pixel_psf,
    measure_apertures,
)
from ps1dask.tessellation import PIXEL_SCALE_DEG, project

FloatArray = npt.NDArray[np.float64]

#: AB magnitude of 1 microjansky: mag = UJY_ZEROPOINT - 2.5 log10(flux / uJy) (= 23.9).
UJY_ZEROPOINT = 2.5 * math.log10(3631e6)
#: 2.5 / ln(10): mag_err = MAG_ERR_FACTOR * flux_err / flux.
MAG_ERR_FACTOR = 2.5 / math.log(10.0)
#: Pixel scale of PS1 skycells (arcsec).
PIXEL_ARCSEC = PIXEL_SCALE_DEG * 3600.0
#: A PSF correction above this (less than 70% of a point source's light measured) is flagged.
MAX_APCORR = 1.0 / 0.7

# warp/stack status codes (ps1dask.storage.STATUS)
_OK = 1
_NOT_MEASURED = (0, 4)  # pending, failed


#: The quality-flag column of light-curve tables (named ``flags`` before: pandas owns that
#: name, ``DataFrame.flags``, so ``lc.flags & BAD_FLAGS`` failed).
FLAG_COLUMN = "lc_flags"
#: Its name in tables written by earlier versions (still read: :func:`flag_column`).
LEGACY_FLAG_COLUMN = "flags"

#: ``err_model`` of rows whose errors come from the variance image (warp.wt / stack.wt).
ERR_MODEL_VARIANCE = "variance"
#: ``err_model`` of rows without a variance image: the annulus sky scatter plus the
#: source's photon noise from the counts and the gain (``ps1dask.photometry.warp-gain``).
ERR_MODEL_SKY_POISSON = "sky+poisson"


def flag_column(table: Any) -> str | None:
    """The quality-flag column of a light-curve table: ``lc_flags``, or ``flags`` in
    tables written by earlier versions; None if it has neither."""
    columns = getattr(table, "columns", ())
    for name in (FLAG_COLUMN, LEGACY_FLAG_COLUMN):
        if name in columns:
            return name
    return None


def with_current_columns(table: Any) -> Any:
    """``table`` with a legacy ``flags`` column renamed ``lc_flags`` (pandas or dask)."""
    if FLAG_COLUMN not in table.columns and LEGACY_FLAG_COLUMN in table.columns:
        return table.rename(columns={LEGACY_FLAG_COLUMN: FLAG_COLUMN})
    return table


class LCFlag(enum.IntFlag):
    """Quality flags of a light-curve row (``lc_flags`` column; 0 = clean).

    ``BAD_FLAGS`` are the ones that make a flux unusable; the others are informational.
    """

    #: No pixels at the position: blank warp (status blank / no_data / outside_footprint)
    #: or no valid pixel in the aperture. Flux is NaN.
    BLANK = 1 << 0
    #: The warp was never fetched (status pending or failed). Flux is NaN.
    FAILED = 1 << 1
    #: Some aperture pixels are NaN or carry ``bad_bits`` (``n_masked`` > 0); the flux is
    #: PSF-corrected for them when the PSF width is known.
    MASKED = 1 << 2
    #: ``coverage`` (usable pixel fraction within 10 px) below ``min_coverage``.
    LOW_COVERAGE = 1 << 3
    #: A saturated pixel (mask bit SAT) in the aperture.
    SATURATED = 1 << 4
    #: Fewer than 5 usable annulus pixels: background taken as 0.
    NO_BACKGROUND = 1 << 5
    #: No PSF width known: the flux is the aperture flux, not corrected to a total flux.
    NO_APCORR = 1 << 6
    #: The flux is unreliable: the PSF correction exceeds 1/0.7, or aperture pixels are
    #: masked and no PSF correction could be made for them.
    UNRELIABLE = 1 << 7
    #: Informational mask bits (outside ``bad_bits``, e.g. GHOST, STREAK, SPIKE, SUSPECT,
    #: CR when not excluded) are set in the aperture.
    SUSPECT_PIXELS = 1 << 8
    #: The store has no PSF width for this warp: the one used was estimated from the pixels
    #: (Gaussian fits of the brighter positions observed in the same exposure).
    PSF_ESTIMATED = 1 << 9


#: Rows with any of these flags should not be used (``lightcurve_stats`` drops them).
BAD_FLAGS = (
    LCFlag.BLANK | LCFlag.FAILED | LCFlag.SATURATED | LCFlag.NO_BACKGROUND | LCFlag.UNRELIABLE
)


def flag_names(value: int) -> list[str]:
    """Names of the flags set in ``value``, e.g. ``5`` -> ``['BLANK', 'MASKED']``."""
    return [f.name for f in LCFlag if f.name is not None and int(value) & f.value]


def stack_gain(
    warp_zeropoint: npt.ArrayLike, warp_exptime: npt.ArrayLike, warp_gain: float
) -> FloatArray:
    """Electrons per stack count, from the warps of the same position and filter.

    Warp counts (``warp_gain`` electrons each) have the AB zero point FPA.ZP + 2.5 log10
    EXPTIME; stack counts 25 + 2.5 log10 EXPTIME (total): one stack count is
    ``warp_gain * 10**(0.4 (FPA.ZP - 25))`` electrons, whatever the stack's depth. FPA.ZP is
    the median over the last axis (epochs) of the finite warps; NaN where there is none.
    """
    zp = np.asarray(warp_zeropoint, dtype=np.float64)
    t = np.asarray(warp_exptime, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        fpa = zp - 2.5 * np.log10(np.where(t > 0, t, np.nan))
    out = np.full(fpa.shape[:-1], np.nan)
    has = np.isfinite(fpa).any(axis=-1)
    if has.any():
        out[has] = float(warp_gain) * 10.0 ** (0.4 * (np.nanmedian(fpa[has], axis=-1) - 25.0))
    return out


def position_in_cutout(
    ra: npt.ArrayLike,
    dec: npt.ArrayLike,
    crval1: npt.ArrayLike,
    crval2: npt.ArrayLike,
    crpix1: npt.ArrayLike,
    crpix2: npt.ArrayLike,
    scale_deg: float = PIXEL_SCALE_DEG,
) -> tuple[FloatArray, FloatArray]:
    """0-based (x, y) of (ra, dec) in cutouts with the stored TAN WCS (sub-pixel exact).

    The fitscut rule puts the position within half a pixel of ``(W//2, H//2)``; this is its
    exact place, which forced photometry centres on.
    """
    x, y = project(
        np.asarray(ra, np.float64),
        np.asarray(dec, np.float64),
        np.asarray(crval1, np.float64),
        np.asarray(crval2, np.float64),
        scale_deg,
    )
    return x + np.asarray(crpix1, np.float64) - 1.0, y + np.asarray(crpix2, np.float64) - 1.0


def stamp_bounds(size: int, centre: int, half: int) -> tuple[int, int]:
    """``[lo, hi)`` of a ``2 half + 1`` stamp around pixel ``centre``, clipped to ``[0, size)``."""
    return max(centre - half, 0), min(centre + half + 1, size)


def stamp_half_size(annulus: tuple[float, float]) -> int:
    """Half-size of the stamp that holds the annulus for any sub-pixel centre."""
    return math.ceil(float(annulus[1])) + 2


def fluxes_to_mags(flux: npt.ArrayLike, flux_err: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(AB mag, mag error) of fluxes in microjansky (NaN where flux <= 0 or not finite)."""
    f = np.asarray(flux, dtype=np.float64)
    e = np.asarray(flux_err, dtype=np.float64)
    pos = np.isfinite(f) & (f > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(pos, UJY_ZEROPOINT - 2.5 * np.log10(np.where(pos, f, 1.0)), np.nan)
        mag_err = np.where(pos, MAG_ERR_FACTOR * e / np.where(pos, f, 1.0), np.nan)
    return mag, mag_err


#: PSF widths (sigma, pixels) tried by :func:`estimate_psf_sigma`: FWHM 0.35 to 2.8 arcsec.
_SIGMA_GRID = np.geomspace(0.6, 4.8, 48)
#: Fewest signal-to-noise for a position to take part in a PSF estimate.
PSF_MIN_SNR = 30.0


def estimate_psf_sigma(
    images: npt.ArrayLike,
    variances: npt.ArrayLike | None,
    usable: npt.ArrayLike,
    centres: npt.ArrayLike,
    background: npt.ArrayLike,
    sky_sigma: npt.ArrayLike | None = None,
    *,
    fit_radius: float = 8.0,
    min_snr: float = PSF_MIN_SNR,
) -> tuple[FloatArray, FloatArray]:
    """Gaussian PSF width (sigma, pixels) of each image from the source at its centre.

    Fits ``A * psf_sigma`` (pixel-integrated Gaussian, centre fixed) to the
    background-subtracted pixels within ``fit_radius``, for every sigma of a grid (the
    amplitude solved exactly), refined by a parabola in log sigma. Pixel weights are the
    inverse ``variances``, else ``1 / sky_sigma**2`` per image. Returns (sigma, snr);
    sigma is NaN where the source's signal-to-noise is below ``min_snr`` (too faint to
    tell) or the best fit lies on the edge of the grid.
    """
    data = np.asarray(images, dtype=np.float64)
    n, ny, nx = data.shape
    good = np.asarray(usable, bool)
    cen = np.asarray(centres, dtype=np.float64).reshape(n, 2)
    half = math.ceil(fit_radius) + 1
    cx, cy = nx // 2, ny // 2
    xs = slice(max(cx - half, 0), min(cx + half + 1, nx))
    ys = slice(max(cy - half, 0), min(cy + half + 1, ny))
    d = data[:, ys, xs] - np.asarray(background, np.float64).reshape(n)[:, None, None]
    yy, xx = np.mgrid[ys, xs]
    inside = (xx[None] - cen[:, 0, None, None]) ** 2 + (
        yy[None] - cen[:, 1, None, None]
    ) ** 2 <= fit_radius**2
    ok = good[:, ys, xs] & inside & np.isfinite(d)
    if variances is not None:
        v = np.asarray(variances, dtype=np.float64)[:, ys, xs]
        ok &= np.isfinite(v) & (v > 0)
        w = np.where(ok, 1.0 / np.where(ok, v, 1.0), 0.0)
    else:
        sky = np.broadcast_to(
            np.asarray(np.nan if sky_sigma is None else sky_sigma, np.float64), (n,)
        )
        inv = np.where(np.isfinite(sky) & (sky > 0), 1.0 / np.where(sky > 0, sky, 1.0) ** 2, 0.0)
        w = ok * inv[:, None, None]
    d = np.where(ok, d, 0.0)
    sig = np.full(n, np.nan)
    snr = np.zeros(n)
    chi2 = np.empty((n, _SIGMA_GRID.size))
    amp = np.empty((n, _SIGMA_GRID.size))
    for j, s in enumerate(_SIGMA_GRID):
        psf = gaussian_pixel_psf(
            (d.shape[1], d.shape[2]), (cen[:, 0] - xs.start, cen[:, 1] - ys.start), np.full(n, s)
        )
        wpp = np.einsum("nij,nij->n", w * psf, psf)
        wpd = np.einsum("nij,nij->n", w * psf, d)
        with np.errstate(divide="ignore", invalid="ignore"):
            amp[:, j] = wpd / wpp
            chi2[:, j] = -(wpd**2) / wpp  # + sum w d^2, the same for every sigma
            snr_j = np.where(wpp > 0, wpd / np.sqrt(wpp), 0.0)
        snr = snr_j if j == 0 else np.maximum(snr, snr_j)
    chi2 = np.where(np.isfinite(chi2), chi2, np.inf)
    k = np.argmin(chi2, axis=1)
    interior = (k > 0) & (k < _SIGMA_GRID.size - 1) & np.isfinite(chi2[np.arange(n), k])
    idx = np.flatnonzero(interior & (snr >= min_snr))
    if idx.size:
        kk = k[idx]
        y0, y1, y2 = chi2[idx, kk - 1], chi2[idx, kk], chi2[idx, kk + 1]
        denom = y0 - 2 * y1 + y2
        step = np.log(_SIGMA_GRID[1] / _SIGMA_GRID[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(denom > 0, 0.5 * (y0 - y2) / denom, 0.0)
        sig[idx] = np.exp(np.log(_SIGMA_GRID[kk]) + np.clip(off, -0.5, 0.5) * step)
    return sig, snr


def combine_exposure_sigma(
    sigma: npt.ArrayLike, snr: npt.ArrayLike, keys: npt.ArrayLike
) -> FloatArray:
    """One PSF width per exposure: the median of its images' estimates, given to every image.

    ``keys`` identify exposures (e.g. rounded MJD-OBS, one filter at a time); images whose
    exposure has no estimate get NaN.
    """
    s = np.asarray(sigma, np.float64)
    key = np.asarray(keys)
    out = np.full(s.shape, np.nan)
    ok = np.isfinite(s) & np.isfinite(key.astype(np.float64))
    if not ok.any():
        return out
    uniq, inv = np.unique(key[ok], return_inverse=True)
    med = np.array([np.median(s[ok][inv == u]) for u in range(uniq.size)])
    pos = np.searchsorted(uniq, key)
    hit = (pos < uniq.size) & (uniq[np.minimum(pos, uniq.size - 1)] == key)
    out[hit] = med[pos[hit]]
    return out


def psf_fwhm_from_data(
    images: npt.ArrayLike,
    variances: npt.ArrayLike | None,
    masks: npt.ArrayLike | None,
    *,
    geometry: Sequence[ApertureGeometry],
    exposure: npt.ArrayLike,
    status: npt.ArrayLike | None = None,
    bad_bits: int = DEFAULT_BAD_BITS,
    min_snr: float = PSF_MIN_SNR,
) -> FloatArray:
    """PSF FWHM (arcsec) of each image, estimated from the brighter positions of its exposure.

    Every image whose position holds a source of signal-to-noise >= ``min_snr`` gets a
    Gaussian fit (:func:`estimate_psf_sigma`); the images of one ``exposure`` key (e.g. the
    MJD-OBS) share the median of their estimates. NaN where no estimate exists.
    """
    data = np.asarray(images, dtype=np.float64)
    n = data.shape[0]
    usable = np.isfinite(data)
    if variances is not None:
        v = np.asarray(variances, dtype=np.float64)
        usable &= np.isfinite(v) & (v > 0)
    if masks is not None:
        usable &= (np.asarray(masks).astype(np.int64) & int(bad_bits)) == 0
    if status is not None:
        usable &= (np.asarray(status) == _OK)[:, None, None]
    rings = np.stack([g.ring for g in geometry])
    ring_vals = np.where(rings & usable, data, np.nan).reshape(n, -1)
    background, sky, n_sky = clipped_stats(ring_vals)
    background = np.where(n_sky >= 5, background, np.nan)
    centres = np.array([g.position for g in geometry], dtype=np.float64)
    sigma, snr = estimate_psf_sigma(
        data,
        variances,
        usable & np.isfinite(background)[:, None, None],
        centres,
        np.nan_to_num(background),
        sky,
        min_snr=min_snr,
    )
    per_exposure = combine_exposure_sigma(sigma, snr, exposure)
    return per_exposure * FWHM_PER_SIGMA * PIXEL_ARCSEC


@dataclass(frozen=True)
class PhotometryColumns:
    """Calibrated forced photometry of n images (arrays of length n)."""

    flux: FloatArray  #: microjansky
    flux_err: FloatArray  #: microjansky
    mag: FloatArray  #: AB
    mag_err: FloatArray
    background: FloatArray  #: microjansky per pixel (subtracted)
    n_masked: npt.NDArray[np.int32]
    apcorr: FloatArray  #: PSF correction factor applied (NaN: none)
    flags: npt.NDArray[np.int32]
    #: how flux_err was made: ERR_MODEL_VARIANCE or ERR_MODEL_SKY_POISSON
    err_model: str = ERR_MODEL_SKY_POISSON


def forced_photometry(
    images: npt.ArrayLike,
    variances: npt.ArrayLike | None,
    masks: npt.ArrayLike | None,
    *,
    geometry: ApertureGeometry | Sequence[ApertureGeometry],
    zeropoint: npt.ArrayLike,
    status: npt.ArrayLike | None = None,
    coverage: npt.ArrayLike | None = None,
    psf_fwhm: npt.ArrayLike | None = None,
    bad_bits: int = DEFAULT_BAD_BITS,
    min_coverage: float = 0.5,
    aperture_correction: bool = True,
    gain: npt.ArrayLike | None = None,
) -> PhotometryColumns:
    """Forced aperture photometry of ``(n, h, w)`` images at ``geometry``'s position(s).

    ``geometry`` is one aperture for all images or one per image.

    ``zeropoint`` (AB, per image) converts counts to microjansky; ``status`` (store codes,
    default all ok) marks images never fetched or blank; ``coverage`` feeds the
    LOW_COVERAGE flag; ``psf_fwhm`` (arcsec, per image, NaN = unknown) drives the PSF
    correction when ``aperture_correction``. See :class:`LCFlag` for the flags.

    Errors: from ``variances`` when given; else the annulus sky scatter plus the source's
    photon noise with ``gain`` electrons per count (per image). One of the two is required:
    errors from the sky scatter alone would be several times too small for bright stars.
    """
    if variances is None and gain is None:
        raise ValueError("forced_photometry needs variances or a gain (electrons per count)")
    data = np.asarray(images, dtype=np.float32)
    n = data.shape[0]
    zp = np.broadcast_to(np.asarray(zeropoint, dtype=np.float64), (n,))
    st = np.ones(n, np.uint8) if status is None else np.broadcast_to(np.asarray(status), (n,))
    measured = st == _OK
    sigma = None
    if aperture_correction and psf_fwhm is not None:
        sigma = (
            np.broadcast_to(np.asarray(psf_fwhm, dtype=np.float64), (n,))
            / FWHM_PER_SIGMA
            / PIXEL_ARCSEC
        )
    res = measure_apertures(
        data,
        variances,
        geometry=geometry,
        mask=masks,
        bad_bits=bad_bits,
        psf_sigma=sigma,
        gain=None if variances is not None else gain,
    )
    scale = counts_to_microjansky(1.0, zp)
    flux = np.where(measured, res.flux * scale, np.nan)
    flux_err = np.where(measured, res.flux_err * scale, np.nan)
    background = np.where(measured, res.background * scale, np.nan)
    mag, mag_err = fluxes_to_mags(flux, flux_err)

    flags = np.zeros(n, np.int32)
    blank = ~np.isin(st, (_OK, *_NOT_MEASURED)) | (measured & (res.n_valid == 0))
    flags |= np.where(blank, int(LCFlag.BLANK), 0).astype(np.int32)
    flags |= np.where(np.isin(st, _NOT_MEASURED), int(LCFlag.FAILED), 0).astype(np.int32)
    ok = measured & ~blank
    masked = ok & (res.n_masked > 0)
    flags |= np.where(masked, int(LCFlag.MASKED), 0).astype(np.int32)
    if coverage is not None:
        cov = np.broadcast_to(np.asarray(coverage, dtype=np.float64), (n,))
        flags |= np.where(ok & (cov < min_coverage), int(LCFlag.LOW_COVERAGE), 0).astype(np.int32)
    flags |= np.where(
        ok & ((res.mask_bits & int(MaskBit.SAT)) != 0), int(LCFlag.SATURATED), 0
    ).astype(np.int32)
    flags |= np.where(ok & (res.n_sky < 5), int(LCFlag.NO_BACKGROUND), 0).astype(np.int32)
    corrected = np.isfinite(res.apcorr)
    flags |= np.where(ok & ~corrected, int(LCFlag.NO_APCORR), 0).astype(np.int32)
    unreliable = (corrected & (res.apcorr > MAX_APCORR)) | (masked & ~corrected)
    flags |= np.where(ok & unreliable, int(LCFlag.UNRELIABLE), 0).astype(np.int32)
    info_bits = ~int(bad_bits) & ~int(MaskBit.BLANK) & 0xFFFF
    flags |= np.where(
        ok & ((res.mask_bits & info_bits) != 0), int(LCFlag.SUSPECT_PIXELS), 0
    ).astype(np.int32)
    return PhotometryColumns(
        flux=flux,
        flux_err=flux_err,
        mag=mag,
        mag_err=mag_err,
        background=background,
        n_masked=np.where(ok, res.n_masked, 0).astype(np.int32),
        apcorr=np.where(ok, res.apcorr, np.nan),
        flags=flags,
        err_model=ERR_MODEL_VARIANCE if variances is not None else ERR_MODEL_SKY_POISSON,
    )
