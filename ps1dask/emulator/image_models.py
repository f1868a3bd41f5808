"""Per-image models of the emulator's stacks and warps: depth, PSF, sky, scaling keywords.

Every header-visible number is rounded so that it survives FITS text exactly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ps1dask.emulator.service_rules import asinh_value, stack_zero_point, warp_zero_point
from ps1dask.emulator.survey import (
    BAND_INDEX,
    FPA_ZP_NOMINAL,
    SATURATION_COUNTS,
    SEEING_MEDIAN,
    STACK_DEPTH,
    STACK_DEPTH_NREF,
    TAG_CR,
    TAG_STACK,
    TAG_WARP,
    WARP_DEPTH,
    WARP_EXPTIME,
    Exposure,
    hash_ints,
    projcell_exposures,
)
from ps1dask.tessellation import PIXEL_SCALE_DEG

_IntArray = npt.NDArray[np.int64]
_FloatArray = npt.NDArray[np.float64]
_BoolArray = npt.NDArray[np.bool_]

#: BLANK of the int16 images.
BLANK = -32768
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_PIXEL_ARCSEC = PIXEL_SCALE_DEG * 3600.0

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
    return 10.0 ** (0.4 * (25.0 - FPA_ZP_NOMINAL[band]))


@dataclass(frozen=True)
class StackModel:
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
def stack_model(seed: int, projcell: int, band: str) -> StackModel:
    exposures = projcell_exposures(seed, projcell, band)
    n = len(exposures)
    times = tuple(e.epoch.exptime for e in exposures)
    total = float(sum(times))
    zp = stack_zero_point(total)
    rng = np.random.Generator(
        np.random.PCG64(hash_ints(seed, TAG_STACK, projcell, BAND_INDEX[band]))
    )
    u = rng.random(4)
    fwhm = round(1.1 + 0.2 * float(u[0]), 3)
    sig = _sigma_px(fwhm)
    depth = STACK_DEPTH[band] + 1.25 * math.log10(n / STACK_DEPTH_NREF)
    f5 = 10.0 ** (0.4 * (zp - depth))
    sigma_full = f5 / (5.0 * math.sqrt(4.0 * math.pi) * sig)
    bsoften = _r12(sigma_full)
    boffset = _r12(0.5 + 3.5 * float(u[1]))
    k = _poisson_k(band)
    flux_sat = SATURATION_COUNTS * k * n
    v_lo = float(asinh_value(boffset - 40.0 * bsoften, bsoften, boffset))
    v_hi = float(asinh_value(boffset + 1.05 * flux_sat, bsoften, boffset))
    bzero, bscale = _scale_for(v_lo, v_hi)
    wt_bsoften, wt_boffset = _r12(sigma_full**2), 0.0
    var_max = sigma_full**2 * n + k * 1.05 * flux_sat
    wt_bzero, wt_bscale = _scale_for(0.0, float(asinh_value(var_max, wt_bsoften, wt_boffset)))
    weights = []
    for e in exposures:
        rel = (
            10.0 ** (0.8 * (e.epoch.fpa_zp - FPA_ZP_NOMINAL[band]))
            * (SEEING_MEDIAN[band] / e.epoch.seeing_fwhm_arcsec) ** 2
        )
        weights.append(round(e.epoch.exptime * rel * 256.0) / 256.0)
    exp_bzero, exp_bscale = _scale_for(0.0, total)
    expwt_bzero, expwt_bscale = _scale_for(0.0, max(float(sum(weights)), 1.0))
    return StackModel(
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
        noise_key=hash_ints(seed, TAG_STACK, projcell, BAND_INDEX[band], 1),
    )


@dataclass(frozen=True)
class WarpModel:
    exposure: Exposure
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
    t = WARP_EXPTIME[band]
    zp = warp_zero_point(FPA_ZP_NOMINAL[band], t)
    f5 = 10.0 ** (0.4 * (zp - WARP_DEPTH[band]))
    return f5 / (5.0 * math.sqrt(4.0 * math.pi) * _sigma_px(SEEING_MEDIAN[band]))


@functools.lru_cache(maxsize=8192)
def warp_model(seed: int, exposure: Exposure) -> WarpModel:
    ep = exposure.epoch
    bidx = BAND_INDEX[exposure.band]
    sig_sky = _warp_sky_sigma(exposure.band)
    rng = np.random.Generator(
        np.random.PCG64(hash_ints(seed, TAG_WARP, exposure.projcell, bidx, ep.index))
    )
    u = rng.random(8)
    sky = 0.3 * sig_sky * (u[0] - 0.5)
    bzero, bscale = _scale_for(-40.0 * sig_sky, SATURATION_COUNTS)
    wt_bzero, wt_bscale = _scale_for(0.0, sig_sky**2 + 1.05 * SATURATION_COUNTS)
    return WarpModel(
        exposure=exposure,
        zeropoint=warp_zero_point(ep.fpa_zp, ep.exptime),
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
        noise_key=hash_ints(seed, TAG_WARP, exposure.projcell, bidx, ep.index, 1),
        cr_key=hash_ints(seed, TAG_CR, exposure.projcell, bidx, ep.index),
    )
