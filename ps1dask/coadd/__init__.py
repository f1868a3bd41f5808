"""Warp stacking: coadds of a store's warps per (position, filter), over all epochs or in
time bins, inverse-variance weighted with masks and outlier rejection, written to the store.

``coadd_warps(store, bins=None | "season" | days)``; :mod:`ps1dask.coadd._core` holds the
pure combination and binning.
"""

from ps1dask.coadd._core import (
    DEFAULT_COADD_ZEROPOINT,
    SEASON_GAP_DAYS,
    Coadd,
    combine_epochs,
    epoch_bins,
    parse_bins,
)
from ps1dask.coadd.store import COADD_VARIABLES, CoaddSummary, coadd_photometry, coadd_warps

__all__ = [
    "COADD_VARIABLES",
    "DEFAULT_COADD_ZEROPOINT",
    "SEASON_GAP_DAYS",
    "Coadd",
    "CoaddSummary",
    "coadd_photometry",
    "coadd_warps",
    "combine_epochs",
    "epoch_bins",
    "parse_bins",
]
