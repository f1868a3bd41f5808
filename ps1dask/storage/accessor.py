"""``ds.ps1``: PS1 helpers on any Dataset opened from a ps1dask store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from ps1dask.storage.layout import STATUS_NAMES

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from astropy.io import fits
    from astropy.nddata import CCDData
    from astropy.wcs import WCS


@xr.register_dataset_accessor("ps1")
class PS1Accessor:
    """PS1 helpers: ``ds.ps1.wcs(i)``, ``ds.ps1.to_fits(...)``, ``ds.ps1.cutout2d(...)``."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def wcs(self, i: int) -> WCS:
        """Celestial WCS (FK5 TAN, 1-based CRPIX as in FITS) of the cutout at index ``i``.

        ``i`` indexes the dataset's position axis as it is now (after any sorting or
        selection), e.g. ``ds.ps1.wcs(0)`` for the first row shown.
        """
        from ps1dask.storage.fits_export import cutout_wcs

        return cutout_wcs(self._ds, self._ds.isel(position=int(i)))

    def to_fits(self, position: int, filter: str, epoch: int | None = None) -> fits.HDUList:
        """One cutout as FITS, as the service would send it, with ps1dask's repairs.

        Parameters
        ----------
        position : int
            The ``position`` label: the 0-based row of the input table (not an index into
            the dataset as sorted now).
        filter : str
            One of the store's filters (``"g"``, ...).
        epoch : int, optional
            An index along ``epoch`` for a warp cutout (``0 .. n_epochs - 1``); without it,
            the stack cutout.

        Returns
        -------
        astropy.io.fits.HDUList
            Primary HDU: the flux (float32, linear counts, ``BUNIT``), the full celestial WCS
            (TAN, FK5 J2000, 1-based CRPIX), ``PHOTZP`` (AB zero point: mag = -2.5 log10(flux)
            + PHOTZP), ``FILTER``, ``OBJECT`` (the id), ``RA_OBJ``/``DEC_OBJ``, ``SKYCELL``,
            for warps ``MJD-OBS``/``DATE-OBS`` (TAI, exposure start, ``TIMESYS = 'TAI'``),
            ``MJD-AVG``/``DATE-AVG`` (TAI, mid-exposure), ``MJD-UTC`` (UTC mid-exposure, the
            store's ``warp_mjd``), ``EXPTIME``; and provenance (``ORIGIN``, ``CREATOR``,
            ``SERVICE``, ``IMAGE`` = the service file cut from, ``HISTORY``). One image
            extension per other stored image (``EXTNAME`` = the image type, e.g.
            ``stack.wt`` variance, ``stack.mask`` mask bits), with the same WCS.

        Raises
        ------
        InvalidParameterError
            Unknown position label, filter or epoch, or a cutout whose status is not ``ok``.
        """
        from ps1dask.storage.fits_export import cutout_fits

        return cutout_fits(self._ds, int(position), str(filter), epoch)

    def cutout2d(self, position: int, filter: str, epoch: int | None = None) -> CCDData:
        """One cutout as an astropy ``CCDData`` (an ``NDData``) with WCS and unit.

        Parameters
        ----------
        position : int
            The ``position`` label (0-based input row).
        filter : str
            One of the store's filters.
        epoch : int, optional
            Index along ``epoch`` for a warp cutout; the stack cutout without it.

        Returns
        -------
        astropy.nddata.CCDData
            ``data`` (flux), ``unit`` (count), ``wcs``, ``uncertainty`` (a
            ``VarianceUncertainty`` when the variance image is stored), ``mask`` (True where
            :data:`ps1dask.conventions.maskbits.DEFAULT_BAD_BITS` are set, when the mask is
            stored) and ``meta`` (the header of :meth:`to_fits`). Works with
            ``astropy.nddata.Cutout2D``, photutils and ``CCDData.write``.
        """
        from ps1dask.storage.fits_export import cutout_ccddata

        return cutout_ccddata(self._ds, int(position), str(filter), epoch)

    def status_names(self, var: str = "stack_status") -> xr.DataArray:
        """The status flags as strings (``ok``, ``outside_footprint``, ...)."""
        codes = self._ds[var]
        lookup = np.vectorize(lambda c: STATUS_NAMES.get(int(c), "unknown"), otypes=[object])
        return xr.apply_ufunc(lookup, codes, dask="parallelized", output_dtypes=[object])
