"""PS1 zero points, AB magnitudes, flux units and the warp time system (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import erfa
import numpy as np
import numpy.typing as npt

#: Stacks: AB mag = -2.5 log10(flux) + 25 + 2.5 log10(EXPTIME).
STACK_ZEROPOINT_BASE = 25.0
#: AB zero point in Jansky.
AB_ZEROPOINT_JY = 3631.0

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


def stack_zeropoint(exptime: float) -> float:
    """AB zero point (mag for 1 count) of a stack with total exposure ``exptime`` seconds."""
    return STACK_ZEROPOINT_BASE + 2.5 * float(np.log10(exptime))


def warp_zeropoint(fpa_zp: float, exptime: float) -> float:
    """AB zero point of a warp from its ``FPA.ZP`` keyword and EXPTIME (s)."""
    return float(fpa_zp) + 2.5 * float(np.log10(exptime))


def header_zeropoint(header: Mapping[str, Any]) -> float:
    """Zero point of an image from its header: warps carry FPA.ZP, stacks do not."""
    exptime = float(header["EXPTIME"])
    if "FPA.ZP" in header:
        return warp_zeropoint(float(header["FPA.ZP"]), exptime)
    return stack_zeropoint(exptime)


def flux_to_abmag(flux: ArrayLike, zeropoint: ArrayLike) -> FloatArray:
    """Counts to AB magnitude (NaN for non-positive flux)."""
    f = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, -2.5 * np.log10(f) + np.asarray(zeropoint), np.nan)


def abmag_to_flux(mag: ArrayLike, zeropoint: ArrayLike) -> FloatArray:
    """AB magnitude to counts for an image of the given zero point."""
    return np.power(10.0, -0.4 * (np.asarray(mag, dtype=np.float64) - np.asarray(zeropoint)))


def counts_to_microjansky(flux: ArrayLike, zeropoint: ArrayLike) -> FloatArray:
    """Counts to microjansky: ``3631e6 * 10**(-0.4 * zeropoint) * flux``."""
    scale = AB_ZEROPOINT_JY * 1e6 * np.power(10.0, -0.4 * np.asarray(zeropoint, dtype=np.float64))
    return np.asarray(flux, dtype=np.float64) * scale


def tai_to_utc_mjd(mjd_tai: ArrayLike) -> FloatArray:
    """Convert MJD in TAI to MJD in UTC (leap seconds from ERFA's built-in table)."""
    mjd = np.atleast_1d(np.asarray(mjd_tai, dtype=np.float64))
    day = np.floor(mjd)
    u1, u2 = erfa.taiutc(np.full_like(mjd, 2400000.5) + day, mjd - day)
    return (u1 - 2400000.5) + u2


def utc_to_tai_mjd(mjd_utc: ArrayLike) -> FloatArray:
    """Convert MJD in UTC to MJD in TAI."""
    mjd = np.atleast_1d(np.asarray(mjd_utc, dtype=np.float64))
    day = np.floor(mjd)
    t1, t2 = erfa.utctai(np.full_like(mjd, 2400000.5) + day, mjd - day)
    return (t1 - 2400000.5) + t2


def mid_exposure_mjd_utc(mjd_obs_tai: ArrayLike, exptime: ArrayLike) -> FloatArray:
    """UTC MJD at mid-exposure from PS1's MJD-OBS (TAI, start of exposure) and EXPTIME (s)."""
    mid_tai = np.asarray(mjd_obs_tai, dtype=np.float64) + np.asarray(exptime) / 2.0 / 86400.0
    return tai_to_utc_mjd(mid_tai)
