"""Forced-photometry light curves of the warps in a store.

``lightcurves(store)`` gives a lazy dask DataFrame, one row per (position, filter, epoch);
:mod:`ps1dask.lightcurves._core` is the photometry over in-memory arrays, and
:mod:`ps1dask.lightcurves.synthetic` writes stores of known truth for tests.
"""

from ps1dask.lightcurves._core import (
    BAD_FLAGS,
    ERR_MODEL_SKY_POISSON,
    ERR_MODEL_VARIANCE,
    FLAG_COLUMN,
    UJY_ZEROPOINT,
    LCFlag,
    PhotometryColumns,
    flag_column,
    flag_names,
    fluxes_to_mags,
    forced_photometry,
    position_in_cutout,
    psf_fwhm_from_data,
    stack_gain,
    with_current_columns,
)
from ps1dask.lightcurves.store import (
    LIGHTCURVE_COLUMNS,
    STACK_COLUMNS,
    lightcurves,
    lightcurves_frame,
    read_lightcurves,
    read_partition,
    stack_gains,
)

__all__ = [
    "BAD_FLAGS",
    "ERR_MODEL_SKY_POISSON",
    "ERR_MODEL_VARIANCE",
    "FLAG_COLUMN",
    "LIGHTCURVE_COLUMNS",
    "STACK_COLUMNS",
    "UJY_ZEROPOINT",
    "LCFlag",
    "PhotometryColumns",
    "flag_column",
    "flag_names",
    "fluxes_to_mags",
    "forced_photometry",
    "lightcurves",
    "lightcurves_frame",
    "position_in_cutout",
    "psf_fwhm_from_data",
    "read_lightcurves",
    "read_partition",
    "stack_gain",
    "stack_gains",
    "with_current_columns",
]
