"""Forced aperture photometry on linear cutouts (pure numerics, photutils geometry).

Two entry points share one implementation:

- :func:`measure_apertures` measures a whole stack of same-shaped images (epochs, filters,
  positions) at once: the aperture and annulus masks come from photutils (exact overlap for
  the aperture, pixel centres for the annulus) and are applied to every image with numpy;
  the background is the sigma-clipped median of the annulus (:func:`clipped_stats`: astropy's
  ``sigma_clip`` rule, vectorised over the stack);
- :func:`measure_aperture` is the one-image form (returns an :class:`ApertureMeasurement`).

Conventions: positions are 0-based ``(x, y)`` pixel coordinates with pixel centres on
integers (photutils); NaN pixels, pixels flagged in ``bad`` and pixels whose mask has any of
``bad_bits`` are excluded.

Error model. With a variance image, the summed variance of the aperture pixels (it holds
the sky and the source's photon noise). Without one, the annulus scatter for every aperture
pixel (the sky) plus, given a ``gain`` (electrons per count), the source's photon noise
``max(sum w**2 (d - b), 0) / gain``: the sky scatter alone underestimates the error of
bright sources several times. Both add the uncertainty of the background
(``pi/2 * sigma_sky**2 / n_sky`` per pixel for a median).

Optional PSF correction: given the Gaussian PSF width of each image, the flux measured in
the *unmasked* part of the aperture is divided by the fraction of a point source's light
that part holds (pixel-integrated Gaussian). That turns aperture fluxes taken in different
seeing, or with a few masked pixels, into total point-source fluxes; it is exact for
Gaussian PSFs and a good approximation for real PS1 PSFs inside ~3 FWHM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import dask.config
import numpy as np
import numpy.typing as npt
from photutils.aperture import CircularAnnulus, CircularAperture
from scipy.special import erf

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.conventions.maskbits import DEFAULT_BAD_BITS

FloatArray = npt.NDArray[np.float64]

#: FWHM / sigma of a Gaussian.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Fewest unclipped annulus pixels for a background estimate (else background 0, flagged).
MIN_SKY_PIXELS = 5


def default_aperture() -> tuple[float, tuple[float, float]]:
    """The configured aperture: ``(radius, (inner, outer))`` in pixels of 0.25 arcsec.

    From ``ps1dask.photometry.radius`` and ``ps1dask.photometry.annulus`` (ps1dask.yaml,
    6 and 12..20 px by default); every measurement of the package uses it unless given
    explicit radii, so one star gets one flux everywhere.
    """
    radius = float(dask.config.get("ps1dask.photometry.radius"))
    inner, outer = (float(v) for v in dask.config.get("ps1dask.photometry.annulus"))
    _check_radii(radius, (inner, outer))
    return radius, (inner, outer)


def resolve_aperture(
    radius: float | None, annulus: tuple[float, float] | None
) -> tuple[float, tuple[float, float]]:
    """``radius`` and ``annulus`` with ``None`` replaced by :func:`default_aperture`'s."""
    if radius is None or annulus is None:
        r_default, a_default = default_aperture()
        radius = r_default if radius is None else radius
        annulus = a_default if annulus is None else annulus
    return float(radius), (float(annulus[0]), float(annulus[1]))


@dataclass(frozen=True)
class ApertureMeasurement:
    """Background-subtracted flux in a circular aperture (image units, e.g. counts)."""

    flux: float
    flux_err: float
    background: float  #: per pixel, from the annulus (sigma-clipped median)
    n_masked: int  #: pixels inside the aperture that were NaN or flagged
    area: float  #: unmasked aperture area (pixels)


@dataclass(frozen=True)
class ApertureGeometry:
    """A circular aperture and background annulus on a ``shape`` image (photutils masks)."""

    shape: tuple[int, int]
    position: tuple[float, float]  #: 0-based (x, y)
    radius: float
    annulus: tuple[float, float]
    weights: FloatArray  #: (h, w) exact fractional overlap of the aperture with each pixel
    ring: npt.NDArray[np.bool_]  #: (h, w) annulus pixels (pixel centre inside)

    @property
    def area(self) -> float:
        return float(self.weights.sum())


def _check_radii(radius: float, annulus: tuple[float, float]) -> None:
    r_in, r_out = float(annulus[0]), float(annulus[1])
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"aperture radius must be positive, got {radius!r}")
    if not (radius <= r_in < r_out and math.isfinite(r_out)):
        raise ValueError(
            f"annulus {annulus!r} must satisfy radius ({radius}) <= inner < outer radius"
        )


def aperture_geometry(
    shape: tuple[int, int],
    position: tuple[float, float],
    radius: float,
    annulus: tuple[float, float],
) -> ApertureGeometry:
    """Aperture weights and annulus of a position on an image of ``shape`` (h, w)."""
    _check_radii(radius, annulus)
    ny, nx = int(shape[0]), int(shape[1])
    pos = (float(position[0]), float(position[1]))
    weights = CircularAperture(pos, r=float(radius)).to_mask(method="exact").to_image((ny, nx))
    ring = CircularAnnulus(pos, r_in=float(annulus[0]), r_out=float(annulus[1]))
    ring_img = ring.to_mask(method="center").to_image((ny, nx))
    return ApertureGeometry(
        shape=(ny, nx),
        position=pos,
        radius=float(radius),
        annulus=(float(annulus[0]), float(annulus[1])),
        weights=np.zeros((ny, nx)) if weights is None else np.asarray(weights, dtype=np.float64),
        ring=np.zeros((ny, nx), bool) if ring_img is None else np.asarray(ring_img) > 0,
    )


def gaussian_pixel_psf(
    shape: tuple[int, int], position: tuple[npt.ArrayLike, npt.ArrayLike], sigma: npt.ArrayLike
) -> FloatArray:
    """Pixel-integrated unit-flux Gaussian PSFs, one per ``sigma`` (pixels): ``(n, h, w)``.

    ``position`` is the 0-based (x, y) centre, one for all or one per ``sigma``.
    """
    s = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    n = s.size
    px = np.broadcast_to(np.asarray(position[0], dtype=np.float64), (n,))[:, None]
    py = np.broadcast_to(np.asarray(position[1], dtype=np.float64), (n,))[:, None]
    ny, nx = shape
    inv = 1.0 / (math.sqrt(2.0) * s[:, None])
    xe = np.arange(nx + 1, dtype=np.float64)[None, :] - 0.5 - px
    ye = np.arange(ny + 1, dtype=np.float64)[None, :] - 0.5 - py
    gx = 0.5 * np.diff(erf(xe * inv), axis=1)
    gy = 0.5 * np.diff(erf(ye * inv), axis=1)
    return gy[:, :, None] * gx[:, None, :]


@dataclass(frozen=True)
class ApertureResults:
    """Per-image results of :func:`measure_apertures` (arrays of length n, image units)."""

    flux: FloatArray  #: background-subtracted, PSF-corrected where ``apcorr`` is finite
    flux_err: FloatArray
    background: FloatArray  #: per pixel (NaN -> 0 was used where ``n_sky`` < MIN_SKY_PIXELS)
    sky_sigma: FloatArray  #: per-pixel scatter in the annulus (clipped std)
    n_sky: npt.NDArray[np.int32]  #: unclipped annulus pixels used
    n_masked: npt.NDArray[np.int32]  #: aperture pixels (any overlap) excluded
    area: FloatArray  #: unmasked aperture area (pixels)
    apcorr: FloatArray  #: factor applied (1 / PSF fraction in the unmasked aperture), NaN if none
    mask_bits: npt.NDArray[np.int64]  #: OR of the mask values of the aperture's pixels
    n_valid: npt.NDArray[np.int32]  #: finite, unflagged aperture pixels


def clipped_stats(
    values: npt.ArrayLike, sigma: float = 3.0, maxiters: int = 5
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int32]]:
    """Sigma-clipped (median, std, count) of each row of ``values`` (NaN = missing).

    The same clipping as ``astropy.stats.sigma_clip(values, sigma, maxiters, axis=1)``
    (centre the median, scale the population std, values beyond ``sigma`` std rejected,
    iterated to convergence), computed on sorted rows with prefix sums so a whole stack of
    annuli is clipped at once. The std returned is the sample std (ddof 1) of the survivors.
    Rows with no finite value give NaN and count 0.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None]
    n, m = v.shape
    s = np.sort(v, axis=1)  # NaN last
    n_fin = np.sum(np.isfinite(s), axis=1)
    rows = np.arange(n)
    # centre each row before the prefix sums (numerical safety for large offsets)
    mid = np.where(n_fin > 0, s[rows, np.maximum((n_fin - 1) // 2, 0)], 0.0)
    c = np.where(np.isfinite(s), s - mid[:, None], 0.0)
    cs = np.concatenate([np.zeros((n, 1)), np.cumsum(c, axis=1)], axis=1)
    cs2 = np.concatenate([np.zeros((n, 1)), np.cumsum(c * c, axis=1)], axis=1)
    lo = np.zeros(n, np.int64)
    hi = n_fin.astype(np.int64)
    filled = np.where(np.isfinite(s), s, np.inf)
    for _ in range(max(int(maxiters), 1)):
        cnt = hi - lo
        has = cnt > 0
        i1 = np.clip(lo + (cnt - 1) // 2, 0, m - 1)
        i2 = np.clip(lo + cnt // 2, 0, m - 1)
        med = 0.5 * (s[rows, i1] + s[rows, i2])
        safe = np.maximum(cnt, 1)
        mean = (cs[rows, hi] - cs[rows, lo]) / safe
        var = np.maximum((cs2[rows, hi] - cs2[rows, lo]) / safe - mean**2, 0.0)
        std = np.sqrt(var)
        lower = (med - sigma * std)[:, None]
        upper = (med + sigma * std)[:, None]
        new_lo = np.sum(filled < lower, axis=1)
        new_hi = np.sum(filled <= upper, axis=1)
        new_lo = np.where(has, np.maximum(new_lo, lo), lo)  # clipped values stay clipped
        new_hi = np.where(has, np.minimum(new_hi, hi), hi)
        if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
            break
        lo, hi = new_lo, new_hi
    cnt = hi - lo
    has = cnt > 0
    i1 = np.clip(lo + (cnt - 1) // 2, 0, m - 1)
    i2 = np.clip(lo + cnt // 2, 0, m - 1)
    med = np.where(has, 0.5 * (s[rows, i1] + s[rows, i2]), np.nan)
    safe = np.maximum(cnt, 1)
    mean = (cs[rows, hi] - cs[rows, lo]) / safe
    var = np.maximum((cs2[rows, hi] - cs2[rows, lo]) / safe - mean**2, 0.0)
    std = np.where(cnt > 1, np.sqrt(var * cnt / np.maximum(cnt - 1, 1)), np.nan)
    return med, std, cnt.astype(np.int32)


def measure_apertures(
    images: npt.ArrayLike,
    variances: npt.ArrayLike | None = None,
    *,
    geometry: ApertureGeometry | Sequence[ApertureGeometry] | None = None,
    position: tuple[float, float] | None = None,
    radius: float | None = None,
    annulus: tuple[float, float] | None = None,
    mask: npt.ArrayLike | None = None,
    bad_bits: int = DEFAULT_BAD_BITS,
    bad: npt.ArrayLike | None = None,
    psf_sigma: npt.ArrayLike | None = None,
    gain: npt.ArrayLike | None = None,
) -> ApertureResults:
    """Forced photometry of ``n`` same-shaped images ``(n, h, w)``.

    ``geometry`` (from :func:`aperture_geometry`) is one aperture for every image, or a
    sequence of ``n`` (one per image, e.g. several positions measured at once); without it
    one is made from ``position`` (default the centre pixel ``(w//2, h//2)``), ``radius``
    and ``annulus`` (pixels; default the configured :func:`default_aperture`). ``mask`` holds PS1 mask bits (pixels with any of ``bad_bits`` are
    excluded); ``bad`` is an extra boolean mask. ``psf_sigma`` (pixels, one per image, NaN
    for unknown) turns on the PSF correction for those images. ``gain`` (electrons per
    image count, one for all or one per image) adds the source's photon noise to errors
    taken from the annulus scatter (no ``variances``); NaN gives a NaN error.
    """
    data = np.asarray(images, dtype=np.float64)
    if data.ndim == 2:
        data = data[None]
    n, ny, nx = data.shape
    if geometry is None:
        if position is None:
            position = (nx // 2, ny // 2)  # fitscut puts the target on pixel W//2 (0-based)
        geometry = aperture_geometry((ny, nx), position, *resolve_aperture(radius, annulus))
    geoms = [geometry] if isinstance(geometry, ApertureGeometry) else list(geometry)
    if len(geoms) not in (1, n):
        raise ValueError(f"{len(geoms)} geometries for {n} images")
    for g in geoms:
        if g.shape != (ny, nx):
            raise ValueError(f"geometry is for {g.shape} images, got {(ny, nx)}")
    excluded = ~np.isfinite(data)
    var = None
    if variances is not None:
        var = np.asarray(variances, dtype=np.float64).reshape(data.shape)
        excluded |= ~np.isfinite(var)
    mask_arr = None
    if mask is not None:
        mask_arr = np.asarray(mask).reshape(data.shape)
        if mask_arr.dtype.kind not in "iu":
            mask_arr = mask_arr.astype(np.int64)
        bits = np.asarray(int(bad_bits) & int(np.iinfo(mask_arr.dtype).max), dtype=mask_arr.dtype)
        excluded |= (mask_arr & bits) != 0
    if bad is not None:
        excluded |= np.asarray(bad, dtype=bool).reshape(data.shape)

    # background: sigma-clipped median and std of the annulus, per image
    if len(geoms) == 1:
        ring = geoms[0].ring
        ring_vals = np.where(excluded[:, ring], np.nan, data[:, ring])
        ring_var = None if var is None else np.where(excluded[:, ring], np.nan, var[:, ring])
    else:
        # only the pixels of the union of the annuli (they differ by sub-pixel shifts)
        rings = np.stack([g.ring for g in geoms])
        union = rings.any(axis=0)
        keep = rings[:, union] & ~excluded[:, union]
        ring_vals = np.where(keep, data[:, union], np.nan)
        ring_var = None if var is None else np.where(keep, var[:, union], np.nan)
    background, sky_sigma, n_sky = clipped_stats(ring_vals, 3.0, 5)
    no_sky = n_sky < MIN_SKY_PIXELS
    background = np.where(no_sky, 0.0, background)
    sky_sigma = np.where(no_sky, np.nan, sky_sigma)

    # aperture sums over the bounding box of the apertures only
    wsum = np.sum([g.weights for g in geoms], axis=0)
    rows = np.flatnonzero(wsum.any(axis=1))
    cols = np.flatnonzero(wsum.any(axis=0))
    if rows.size == 0:
        nan = np.full(n, np.nan)
        zeros = np.zeros(n, np.int32)
        return ApertureResults(
            nan,
            nan,
            background,
            sky_sigma,
            n_sky,
            zeros,
            np.zeros(n),
            nan,
            np.zeros(n, np.int64),
            zeros,
        )
    ys, xs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    wb = np.stack([g.weights[ys, xs] for g in geoms])  # (1 or n, hb, wb)
    good = ~excluded[:, ys, xs]
    wg = wb * good
    sub = np.where(good, data[:, ys, xs] - background[:, None, None], 0.0)
    flux = np.einsum("nij,nij->n", wg, sub)
    area = wg.sum(axis=(1, 2))
    inside = wb > 0
    n_masked = np.sum(~good & inside, axis=(1, 2)).astype(np.int32)
    n_valid = np.sum(good & inside, axis=(1, 2)).astype(np.int32)
    w2 = wg * wb
    if var is not None:
        var_sum = np.einsum("nij,nij->n", w2, np.where(good, var[:, ys, xs], 0.0))
        # background scatter: measured, or the variance image's median in the annulus
        fallback = np.full(n, np.nan)
        need = ~np.isfinite(sky_sigma)
        if ring_var is not None and need.any():
            fallback[need] = np.sqrt(clipped_stats(ring_var[need], 1e9, 1)[0])
        sky_for_bg = np.where(np.isfinite(sky_sigma), sky_sigma, fallback)
    else:
        var_sum = np.sum(w2, axis=(1, 2)) * sky_sigma**2
        if gain is not None:
            gains = np.broadcast_to(np.asarray(gain, dtype=np.float64), (n,))
            source = np.maximum(np.einsum("nij,nij->n", w2, sub), 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                var_sum = var_sum + np.where(gains > 0, source / gains, np.nan)
        sky_for_bg = sky_sigma
    bg_var = area**2 * sky_for_bg**2 * (np.pi / 2.0) / np.maximum(n_sky, 1)
    flux_err = np.sqrt(var_sum + np.where(np.isfinite(bg_var), bg_var, 0.0))
    flux = np.where(n_valid > 0, flux, np.nan)
    flux_err = np.where(n_valid > 0, flux_err, np.nan)

    apcorr = np.full(n, np.nan)
    if psf_sigma is not None:
        sig = np.broadcast_to(np.asarray(psf_sigma, dtype=np.float64), (n,))
        known = np.isfinite(sig) & (sig > 0)
        if known.any():
            centres = np.array([g.position for g in geoms], dtype=np.float64)
            centres = np.broadcast_to(centres, (n, 2))[known]
            psf = gaussian_pixel_psf(
                wb.shape[1:], (centres[:, 0] - cols[0], centres[:, 1] - rows[0]), sig[known]
            )
            frac = np.einsum("nij,nij->n", wg[known], psf)
            with np.errstate(divide="ignore"):
                apcorr[known] = np.where(frac > 0, 1.0 / np.where(frac > 0, frac, 1.0), np.nan)
            corr = np.where(np.isfinite(apcorr), apcorr, 1.0)
            flux = flux * corr
            flux_err = flux_err * corr

    mask_bits = np.zeros(n, np.int64)
    if mask_arr is not None:
        mb = np.where(inside, mask_arr[:, ys, xs], 0).astype(np.int64)
        mask_bits = np.bitwise_or.reduce(mb.reshape(n, -1), axis=1)
    return ApertureResults(
        flux=flux,
        flux_err=flux_err,
        background=background,
        sky_sigma=sky_sigma,
        n_sky=n_sky,
        n_masked=n_masked,
        area=area,
        apcorr=apcorr,
        mask_bits=mask_bits,
        n_valid=n_valid,
    )


def measure_aperture(
    image: npt.ArrayLike,
    variance: npt.ArrayLike | None = None,
    *,
    position: tuple[float, float] | None = None,
    radius: float | None = None,
    annulus: tuple[float, float] | None = None,
    bad: npt.ArrayLike | None = None,
    gain: float | None = None,
) -> ApertureMeasurement:
    """Forced photometry at ``position`` (0-based x, y; default the cutout's centre pixel).

    ``radius`` and ``annulus`` are in pixels (default the configured
    :func:`default_aperture`). The local background is the sigma-clipped median in the
    annulus. The error adds the aperture's summed variance (from ``variance`` when given,
    else from the annulus scatter plus, with ``gain`` in electrons per count, the source's
    photon noise) and the background's uncertainty. NaN pixels and ``bad`` pixels are
    excluded; their count inside the aperture is reported.
    """
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"expected one 2-D image, got shape {data.shape}")
    res = measure_apertures(
        data[None],
        None if variance is None else np.asarray(variance)[None],
        position=position,
        radius=radius,
        annulus=annulus,
        bad=None if bad is None else np.asarray(bad, dtype=bool)[None],
        gain=gain,
    )
    return ApertureMeasurement(
        flux=float(res.flux[0]),
        flux_err=float(res.flux_err[0]),
        background=float(res.background[0]),
        n_masked=int(res.n_masked[0]),
        area=float(res.area[0]),
    )


def aperture_flux(
    image: npt.ArrayLike,
    variance: npt.ArrayLike | None = None,
    *,
    radius: float | None = None,
    annulus: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """``(flux, flux_err)`` at the cutout centre: :func:`measure_aperture` in short."""
    m = measure_aperture(image, variance, radius=radius, annulus=annulus)
    return m.flux, m.flux_err
