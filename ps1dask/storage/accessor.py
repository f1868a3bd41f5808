"""``ds.ps1``: PS1 helpers on any Dataset opened from a ps1dask store."""

from __future__ import annotations

import numpy as np
import xarray as xr
from astropy.wcs import WCS

from ps1dask.storage.layout import STATUS_NAMES


@xr.register_dataset_accessor("ps1")
class PS1Accessor:
    """PS1 helpers: ``ds.ps1.wcs(i)``, ``ds.ps1.status_names()``."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def wcs(self, i: int) -> WCS:
        """Celestial WCS (FK5 TAN, 1-based CRPIX as in FITS) of the cutout at index ``i``.

        ``i`` indexes the dataset's position axis as it is now (after any sorting or
        selection), e.g. ``ds.ps1.wcs(0)`` for the first row shown.
        """
        ds = self._ds
        row = ds.isel(position=int(i))
        scale = float(ds.attrs["pixel_scale_deg"])
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = [float(row.crval1), float(row.crval2)]
        wcs.wcs.crpix = [float(row.crpix1), float(row.crpix2)]
        wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
        if float(row.crval2) == 90.0:
            wcs.wcs.lonpole = 180.0
        wcs.wcs.radesys = "FK5"
        wcs.wcs.equinox = 2000.0
        wcs.pixel_shape = (int(ds.sizes["x"]), int(ds.sizes["y"]))
        return wcs

    def status_names(self, var: str = "stack_status") -> xr.DataArray:
        """The status flags as strings (``ok``, ``outside_footprint``, ...)."""
        codes = self._ds[var]
        lookup = np.vectorize(lambda c: STATUS_NAMES.get(int(c), "unknown"), otypes=[object])
        return xr.apply_ufunc(lookup, codes, dask="parallelized", output_dtypes=[object])
