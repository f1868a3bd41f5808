"""FITS and astropy objects out of a store: one cutout (position, filter[, epoch]) at a time.

The store keeps per position the cutout's WCS (CRVAL, CRPIX; one pixel scale), per
(position, filter) the zero point and status, and per warp epoch the times: enough to give
back what the service would have sent, with linear flux, the repaired WCS and the times in
the FITS standard's keywords, plus where the pixels came from.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ps1dask.conventions import image_filename
from ps1dask.conventions.maskbits import DEFAULT_BAD_BITS
from ps1dask.exceptions import InvalidParameterError
from ps1dask.storage.layout import STACK_VARIABLES, STATUS, STATUS_NAMES, WARP_VARIABLES
from ps1dask.storage.times import mjd_days

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from astropy.io import fits
    from astropy.nddata import CCDData
    from astropy.wcs import WCS

__all__ = ["cutout_ccddata", "cutout_filename", "cutout_fits", "cutout_wcs"]


def cutout_wcs(ds: xr.Dataset, row: xr.Dataset) -> WCS:
    """Celestial WCS (FK5 J2000 TAN, 1-based CRPIX) of the cutout of one position row."""
    from astropy.wcs import WCS

    scale = float(ds.attrs["pixel_scale_deg"])
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [float(row["crval1"]), float(row["crval2"])]
    wcs.wcs.crpix = [float(row["crpix1"]), float(row["crpix2"])]
    wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    if float(row["crval2"]) == 90.0:  # the polar projection cell
        wcs.wcs.lonpole = 180.0
    wcs.wcs.radesys = "FK5"
    wcs.wcs.equinox = 2000.0
    wcs.pixel_shape = (int(ds.sizes["x"]), int(ds.sizes["y"]))
    return wcs


def _select(
    ds: xr.Dataset, position: int, band: str, epoch: int | None
) -> tuple[xr.Dataset, str, dict[str, tuple[str, str, str, str]]]:
    """The (position, filter[, epoch]) slice of ``ds``, its part and the part's variables."""
    if "position" not in ds.dims or "position" not in ds.coords:
        raise InvalidParameterError("not a ps1dask store: it has no 'position' coordinate")
    labels = ds["position"].values
    if position not in labels:
        raise InvalidParameterError(
            f"position={position!r}: no such position label (the 'position' coordinate is the "
            f"0-based input row; this store has {len(labels)} of them, "
            f"{int(labels.min())}..{int(labels.max())})"
        )
    filters = [str(f) for f in ds["filter"].values]
    if band not in filters:
        raise InvalidParameterError(f"filter={band!r}: this store has filters {filters}")
    part, variables = ("stack", STACK_VARIABLES) if epoch is None else ("warp", WARP_VARIABLES)
    flux = variables[part][0]
    if flux not in ds:
        raise InvalidParameterError(
            f"this store has no {part} cutouts ({flux})"
            + ("; pass epoch=... for warps" if part == "stack" else "")
        )
    sub = ds.sel(position=position, filter=band)
    if epoch is not None:
        n_epochs = int(sub["n_epochs"]) if "n_epochs" in sub else int(ds.sizes["epoch"])
        if not 0 <= int(epoch) < n_epochs:
            raise InvalidParameterError(
                f"epoch={epoch}: position {position} has {n_epochs} {band} warp epochs "
                f"(0..{n_epochs - 1})"
            )
        sub = sub.isel(epoch=int(epoch))
    status = int(sub[f"{part}_status"]) if f"{part}_status" in sub else STATUS["ok"]
    if status != STATUS["ok"]:
        raise InvalidParameterError(
            f"position {position}, filter {band}"
            + (f", epoch {epoch}" if epoch is not None else "")
            + f": status {STATUS_NAMES.get(status, status)}, no pixels to export"
        )
    return sub.load(), part, variables


def _text(value: Any) -> str:
    value = value.item() if isinstance(value, np.ndarray | np.generic) else value
    return value.decode() if isinstance(value, bytes) else str(value)


#: Characters a file name stem keeps; any run of others becomes one ``_``.
_UNSAFE_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_file_stem(text: str, fallback: str) -> str:
    """``text`` made safe as a file name stem (no path separators, no leading dot), or
    ``fallback`` when nothing is left. Shared by the FITS export and the picture export."""
    return _UNSAFE_IN_FILE_NAMES.sub("_", text).strip("._") or fallback


def cutout_filename(ds: xr.Dataset, position: int, band: str, epoch: int | None = None) -> str:
    """File name of a cutout: ``<id>_<the service's file name>`` (``/`` etc. replaced).

    E.g. ``M1_rings.v3.skycell.1784.059.stk.r.unconv.fits`` or
    ``M1_rings.v3.skycell.1784.059.wrp.r.55245_28741.fits``.

    Parameters
    ----------
    ds : xarray.Dataset
        A store opened with :func:`ps1dask.open_store`.
    position : int
        The position's label (the ``position`` coordinate: its 0-based input row).
    band : str
        The filter, one of the store's.
    epoch : int, optional
        The warp epoch (index along ``epoch``); None for the stack.

    Returns
    -------
    str
        The file name.
    """
    sub = ds.sel(position=position, filter=band)
    ident = safe_file_stem(_text(sub["id"].values), str(position))
    return f"{ident}_{_source_path(sub, band, epoch).rsplit('/', 1)[-1]}"


def _source_path(sub: xr.Dataset, band: str, epoch: int | None) -> str:
    """The service path of the image the cutout was cut from."""
    from ps1dask.tessellation import SkycellId

    cell = SkycellId.parse(_text(sub["skycell"].values))
    if epoch is None:
        return image_filename(cell, band, "stack")
    listed = sub["warp_mjd_listed"]
    listed = listed.isel(epoch=int(epoch)) if "epoch" in listed.dims else listed
    return image_filename(cell, band, "warp", float(listed))


def cutout_fits(ds: xr.Dataset, position: int, band: str, epoch: int | None = None) -> fits.HDUList:
    """One cutout of a store as FITS: flux in the primary HDU, other stored images after.

    See :meth:`ps1dask.storage.accessor.PS1Accessor.to_fits`.

    Parameters
    ----------
    ds : xarray.Dataset
        A store opened with :func:`ps1dask.open_store`.
    position : int
        The position's label (the ``position`` coordinate: its 0-based input row).
    band : str
        The filter, one of the store's.
    epoch : int, optional
        The warp epoch (index along ``epoch``); None for the stack.

    Returns
    -------
    astropy.io.fits.HDUList
        Flux in the primary HDU with the cutout's WCS, other stored images after.
    """
    from astropy.io import fits

    from ps1dask import __version__

    sub, part, variables = _select(ds, position, band, epoch)
    header = cutout_wcs(ds, sub).to_header()
    header["BUNIT"] = (variables[part][2], "linear flux (PS1 asinh scaling removed)")
    zp_name = f"{part}_zeropoint"
    if zp_name in sub and np.isfinite(float(sub[zp_name])):
        header["PHOTZP"] = (float(sub[zp_name]), "AB mag = -2.5 log10(flux) + PHOTZP")
        header["PHOTSYS"] = ("AB", "photometric system of PHOTZP")
    header["FILTER"] = (band, "PS1 filter")
    header["OBJECT"] = (_text(sub["id"].values), "position id (ps1dask store)")
    header["RA_OBJ"] = (float(sub["ra"]), "[deg] J2000 RA of the requested position")
    header["DEC_OBJ"] = (float(sub["dec"]), "[deg] J2000 Dec of the requested position")
    header["POSROW"] = (int(position), "0-based row of the input position table")
    header["SKYCELL"] = (_text(sub["skycell"].values), "PS1 skycell cut from")
    if epoch is not None:
        header["EPOCH"] = (int(epoch), "index along the store's epoch axis")
        tai = float(sub["warp_mjd_obs_tai"]) if "warp_mjd_obs_tai" in sub else np.nan
        exptime = float(sub["warp_exptime"]) if "warp_exptime" in sub else np.nan
        if np.isfinite(tai):
            from astropy.time import Time

            header["TIMESYS"] = ("TAI", "time scale of MJD-OBS, MJD-AVG, DATE-*")
            header["MJD-OBS"] = (tai, "[d] start of exposure (TAI), as PS1 warps")
            header["DATE-OBS"] = (Time(tai, format="mjd", scale="tai").isot, "start (TAI)")
            if np.isfinite(exptime):
                mid = tai + exptime / 2.0 / 86400.0
                header["MJD-AVG"] = (mid, "[d] mid-exposure (TAI)")
                header["DATE-AVG"] = (Time(mid, format="mjd", scale="tai").isot, "mid (TAI)")
        if np.isfinite(exptime):
            header["EXPTIME"] = (exptime, "[s] exposure time")
        if "warp_mjd" in sub:
            utc = float(mjd_days(sub["warp_mjd"]))
            if np.isfinite(utc):
                header["MJD-UTC"] = (utc, "[d] mid-exposure (UTC), as warp_mjd")
    header["ORIGIN"] = ("ps1dask", "exported from a ps1dask store")
    header["CREATOR"] = (f"ps1dask {__version__}", "software that wrote this file")
    header["DATE"] = (
        _dt.datetime.now(_dt.UTC).replace(microsecond=0, tzinfo=None).isoformat(),
        "file written (UTC)",
    )
    service = str(ds.attrs.get("service_url", ""))
    source = _source_path(sub, band, epoch)
    header["SERVICE"] = (service, "PS1 image service")
    header["IMAGE"] = (source.rsplit("/", 1)[-1], "cut from")
    header.add_history(f"cut from {service}{source} by ps1dask {__version__}")
    hdus: list[Any] = []
    for image_type, (name, _dtype, units, desc) in variables.items():
        if name not in sub:
            continue
        data = np.asarray(sub[name].values)
        if not hdus:
            hdus.append(fits.PrimaryHDU(data=data, header=header))
            continue
        ext = cutout_wcs(ds, sub).to_header()
        ext["EXTNAME"] = (image_type, desc[:47])
        ext["BUNIT"] = units
        hdus.append(fits.ImageHDU(data=data, header=ext))
    return fits.HDUList(hdus)


def cutout_ccddata(ds: xr.Dataset, position: int, band: str, epoch: int | None = None) -> CCDData:
    """One cutout as an astropy ``CCDData`` (an ``NDData``): flux with WCS and unit.

    See :meth:`ps1dask.storage.accessor.PS1Accessor.cutout2d`.
    """
    import astropy.units as u
    from astropy.nddata import CCDData, VarianceUncertainty

    hdul = cutout_fits(ds, position, band, epoch)
    primary = hdul[0]
    extra = {hdu.name.lower(): hdu for hdu in hdul[1:]}
    kind = "stack" if epoch is None else "warp"
    variance = extra.get(f"{kind}.wt")
    mask = extra.get(f"{kind}.mask")
    return CCDData(
        primary.data,
        unit=u.Unit(primary.header["BUNIT"], format="fits"),
        wcs=cutout_wcs(ds, ds.sel(position=position)),
        meta=primary.header,
        uncertainty=(
            VarianceUncertainty(variance.data, unit=u.Unit(variance.header["BUNIT"], format="fits"))
            if variance is not None
            else None
        ),
        mask=(
            (mask.data.astype(np.int64) & int(DEFAULT_BAD_BITS)) != 0 if mask is not None else None
        ),
    )
