"""Warp times as MJD days, whether xarray decoded them to datetimes or not.

Stores keep ``warp_mjd`` as float days with CF units ``days since 1858-11-17 00:00:00``
(the MJD epoch), so ``xarray`` decodes it to ``datetime64`` (UTC); stores made before
ps1dask wrote those units (``units: d``), and raw Zarr reads, give the float days. Code
that computes with times takes either through :func:`mjd_days`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MJD_EPOCH", "MJD_UNITS", "mjd_days"]

#: The MJD epoch (MJD 0), as numpy datetime64.
MJD_EPOCH = np.datetime64("1858-11-17T00:00:00", "ns")
#: CF units of MJD days: xarray decodes variables with these units to datetime64.
MJD_UNITS = "days since 1858-11-17 00:00:00"

_NS_PER_DAY = 86_400 * 10**9


def mjd_days(values: Any) -> npt.NDArray[np.float64]:
    """MJD (days, float64) of datetimes or of MJD numbers; NaT and NaN give NaN.

    Parameters
    ----------
    values
        An array (or xarray ``DataArray``, or scalar) of ``datetime64`` (as xarray decodes
        ``warp_mjd``) or of numbers already in MJD days.

    Returns
    -------
    numpy.ndarray
        float64 MJD days, same shape (0-d for a scalar).
    """
    array = np.asarray(getattr(values, "values", values))
    if np.issubdtype(array.dtype, np.datetime64):
        ns = array.astype("datetime64[ns]")
        # integer nanoseconds since the epoch, split so that float64 keeps sub-ms precision
        delta = (ns - MJD_EPOCH).astype(np.int64)
        days, rest = np.divmod(delta, _NS_PER_DAY)
        out = days.astype(np.float64) + rest.astype(np.float64) / _NS_PER_DAY
        return np.where(np.isnat(ns), np.nan, out)
    return np.asarray(array, dtype=np.float64)
