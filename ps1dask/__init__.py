"""ps1dask: bulk Pan-STARRS1 image extraction on Dask.

Positions in, one Zarr store of linear-flux cutouts with correct WCS out, never more than
10 simultaneous requests to the STScI PS1 image service. Start with :func:`locate` (where a
position falls in the PS1 tessellation) and :class:`~ps1dask.client.PS1Service` (the
service client); :mod:`ps1dask.emulator` is an offline stand-in for the service.

The public names below are imported on first use (PEP 562), so that ``import ps1dask`` and
the command line's ``--help`` stay fast: Dask, astropy, xarray and zarr load only when a
function that needs them is used. The dask.config defaults (``ps1dask.yaml``) are
registered by :mod:`ps1dask.config`, which every module reading them imports.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# public name -> the module defining it
_LAZY = {
    "best_period": "ps1dask.analysis",
    "fit_transient": "ps1dask.analysis",
    "lightcurve_stats": "ps1dask.analysis",
    "variability_candidates": "ps1dask.analysis",
    "coadd_photometry": "ps1dask.coadd",
    "coadd_warps": "ps1dask.coadd",
    "JobHandle": "ps1dask.jobs",
    "JobSummary": "ps1dask.jobs",
    "cutouts": "ps1dask.jobs",
    "warps": "ps1dask.jobs",
    "lightcurves": "ps1dask.lightcurves",
    "PositionTable": "ps1dask.positions",
    "read_positions": "ps1dask.positions",
    "open_store": "ps1dask.storage",
    "SkycellId": "ps1dask.tessellation",
    "locate": "ps1dask.tessellation",
    "skycell_center": "ps1dask.tessellation",
    "skycell_wcs": "ps1dask.tessellation",
}

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports these
    from ps1dask.analysis import (
        best_period,
        fit_transient,
        lightcurve_stats,
        variability_candidates,
    )
    from ps1dask.coadd import coadd_photometry, coadd_warps
    from ps1dask.jobs import JobHandle, JobSummary, cutouts, warps
    from ps1dask.lightcurves import lightcurves
    from ps1dask.positions import PositionTable, read_positions
    from ps1dask.storage import open_store
    from ps1dask.tessellation import SkycellId, locate, skycell_center, skycell_wcs


if "dask.config" in sys.modules:  # Dask is loaded anyway: register the defaults at once
    importlib.import_module("ps1dask.config")


def _version() -> str:
    # importlib.metadata alone takes a tenth of a second to import: only when asked
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ps1dask")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = globals()[name] = _version()
        return value
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'ps1dask' has no attribute {name!r}")
    importlib.import_module("ps1dask.config")  # the dask.config defaults, before any use
    module = importlib.import_module(module_name)
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


class _Package(types.ModuleType):
    """``ps1dask`` itself: keeps ``ps1dask.lightcurves`` the function.

    Importing the subpackage ``ps1dask.lightcurves`` (by whatever route) makes the import
    system bind it as an attribute of ``ps1dask``, which would hide the function of the same
    name: bind the function instead, as the eager imports of earlier versions did.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "lightcurves" and isinstance(value, types.ModuleType):
            value = value.lightcurves
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "JobHandle",
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
