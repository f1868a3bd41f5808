"""ps1dask: bulk Pan-STARRS1 image extraction on Dask.

Positions in, one Zarr store of linear-flux cutouts with correct WCS out, never more than
10 simultaneous requests to the STScI PS1 image service. Start with :func:`locate` (where a
position falls in the PS1 tessellation) and :class:`~ps1dask.client.PS1Service` (the
service client); :mod:`ps1dask.emulator` is an offline stand-in for the service.
"""

from importlib.metadata import PackageNotFoundError, version

from ps1dask import config as _config  # noqa: F401  (registers the dask.config defaults)
from ps1dask.analysis import best_period, fit_transient, lightcurve_stats, variability_candidates
from ps1dask.coadd import coadd_photometry, coadd_warps
from ps1dask.jobs import JobSummary, cutouts, warps
from ps1dask.lightcurves import lightcurves
from ps1dask.positions import PositionTable, read_positions
from ps1dask.storage import open_store
from ps1dask.tessellation import SkycellId, locate, skycell_center, skycell_wcs

try:
    __version__ = version("ps1dask")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "JobSummary",
    "PositionTable",
    "SkycellId",
    "__version__",
    "best_period",
    "coadd_photometry",
    "coadd_warps",
    "cutouts",
    "fit_transient",
    "lightcurve_stats",
    "lightcurves",
    "locate",
    "open_store",
    "read_positions",
    "skycell_center",
    "skycell_wcs",
    "variability_candidates",
    "warps",
]
