"""Where a sky position falls in the PS1 RINGS.V3 tessellation (pure, no network).

>>> import ps1dask
>>> ps1dask.locate(83.63321, 22.01446).skycell[0]
'skycell.1784.059'
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
from astropy.wcs import WCS

from ps1dask.exceptions import InvalidPositionError, InvalidSkycellError
from ps1dask.tessellation._core import (
    FIRST_FOOTPRINT_PROJCELL,
    HEADER_CDELT_DEG,
    PIXEL_SCALE_DEG,
    SKYCELL_PAD,
    Grid,
    SkycellGeometry,
    deproject,
    load_grid,
    locate_arrays,
    project,
    skycell_center_radec,
    skycell_geometry,
)
from ps1dask.wire import SKYCELL_ID_EXPECTED, SKYCELL_ID_RE

__all__ = [
    "FIRST_FOOTPRINT_PROJCELL",
    "HEADER_CDELT_DEG",
    "LOCATE_BLOCK",
    "PIXEL_SCALE_DEG",
    "SKYCELL_PAD",
    "Grid",
    "SkycellGeometry",
    "SkycellId",
    "SkycellLike",
    "deproject",
    "load_grid",
    "locate",
    "locate_arrays",
    "locate_columns",
    "project",
    "skycell_center",
    "skycell_geometry",
    "skycell_geometry_of",
    "skycell_names",
    "skycell_wcs",
]


class SkycellId(NamedTuple):
    """A PS1 skycell, ``projcell.subcell``; ``str()`` gives ``skycell.PPPP.SSS``.

    Parameters
    ----------
    projcell : int
        The projection cell number.
    subcell : int
        The sub-cell number within the projection cell.
    """

    projcell: int
    subcell: int

    def __str__(self) -> str:
        return f"skycell.{self.projcell:04d}.{self.subcell:03d}"

    @property
    def short(self) -> str:
        """``PPPP.SSS``, the form ``ps1filenames.py?skycell=`` takes."""
        return f"{self.projcell:04d}.{self.subcell:03d}"

    @classmethod
    def parse(cls, cell: SkycellLike) -> SkycellId:
        """Accept ``"skycell.1405.053"``, ``"1405.053"``, ``(1405, 53)`` or a SkycellId.

        Raises :class:`~ps1dask.exceptions.InvalidSkycellError` for anything that is not a
        skycell of the tessellation.
        """
        if isinstance(cell, str):
            match = SKYCELL_ID_RE.match(cell)
            if not match:
                raise InvalidSkycellError(f"{cell!r} is not a skycell id ({SKYCELL_ID_EXPECTED})")
            projcell, subcell = int(match["projcell"]), int(match["subcell"])
        else:
            try:
                projcell, subcell = (int(v) for v in cell)
            except (TypeError, ValueError):
                raise InvalidSkycellError(
                    f"{cell!r} is not a skycell id (expected a string or (projcell, subcell))"
                ) from None
        try:
            skycell_geometry(projcell, subcell)
        except ValueError as err:
            raise InvalidSkycellError(f"{cell!r}: {err}") from None
        return cls(projcell, subcell)


SkycellLike = str | SkycellId | tuple[int, int]


def skycell_geometry_of(cell: SkycellLike) -> SkycellGeometry:
    """Tangent point, CRPIX and image size of a skycell."""
    sid = SkycellId.parse(cell)
    return skycell_geometry(sid.projcell, sid.subcell)


def skycell_center(cell: SkycellLike) -> tuple[float, float]:
    """(ra, dec) in degrees of a skycell's centre, exactly as ``ps1filenames.py`` reports it.

    >>> skycell_center("1405.053")
    (332.60045165718776, 2.1998090575691633)

    The RA is in [0, 360): cells west of a tangent point at RA 0 (e.g. ``1322.098``, at
    358.598) have their centre's RA taken modulo 360.

    Parameters
    ----------
    cell : str, SkycellId or tuple of int
        The skycell: ``"skycell.PPPP.SSS"``, ``"PPPP.SSS"`` or ``(projcell, subcell)``.

    Returns
    -------
    tuple of float
        RA and Dec of the centre, degrees.
    """
    return skycell_center_radec(skycell_geometry_of(cell))


def skycell_wcs(cell: SkycellLike) -> WCS:
    """Celestial WCS of the whole skycell image (FK5 J2000 TAN, 0.25 arcsec pixels).

    ``pixel_shape`` is ``(naxis1, naxis2)`` of that zone's images, and 1-based world-to-pixel
    conversions (``all_world2pix(..., 1)``) agree with :func:`locate`.

    Parameters
    ----------
    cell : str, SkycellId or tuple of int
        The skycell: ``"skycell.PPPP.SSS"``, ``"PPPP.SSS"`` or ``(projcell, subcell)``.

    Returns
    -------
    astropy.wcs.WCS
        The skycell image's WCS.
    """
    geo = skycell_geometry_of(cell)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [geo.crval1, geo.crval2]
    wcs.wcs.crpix = [geo.crpix1, geo.crpix2]
    wcs.wcs.cd = [[-PIXEL_SCALE_DEG, 0.0], [0.0, PIXEL_SCALE_DEG]]
    if geo.crval2 == 90.0:
        # The tessellation's TAN has y pointing "north" along the tangent point's meridian
        # (LONPOLE 180); FITS would default to LONPOLE 0 for a tangent point at the pole.
        wcs.wcs.lonpole = 180.0
    wcs.wcs.radesys = "FK5"
    wcs.wcs.equinox = 2000.0
    wcs.pixel_shape = (geo.naxis1, geo.naxis2)
    return wcs


def _as_degrees(name: str, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    try:
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise InvalidPositionError(f"{name} must be numbers in degrees: {err}") from None
    if arr.ndim != 1:
        raise InvalidPositionError(
            f"{name} must be a scalar or a 1-d sequence, got shape {arr.shape}"
        )
    return arr


#: Positions located at a time: a block's temporary arrays stay in the CPU caches, which
#: makes 10^7 positions two to three times faster than whole-array numpy (and the results
#: are the same: every step is elementwise).
LOCATE_BLOCK = 1 << 15


def skycell_names(
    projcell: npt.NDArray[np.int64], subcell: npt.NDArray[np.int64]
) -> npt.NDArray[np.object_]:
    """``skycell.PPPP.SSS`` per position ('' where projcell < 0), formatting each cell once.

    The result shares one ``str`` per cell (10^7 positions: 80 MB of pointers). Positions
    grouped by skycell (a plan's store order) are formatted once per run, in one pass.
    """
    codes = projcell * 1000 + subcell
    starts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    if codes.size and starts.size < codes.size // 4:
        starts = np.concatenate(([0], starts))
        lengths = np.diff(np.append(starts, codes.size))
        return np.repeat(_cell_names(codes[starts]), lengths)
    unique, inverse = np.unique(codes, return_inverse=True)
    return _cell_names(unique)[inverse.reshape(-1)]


def _cell_names(codes: npt.NDArray[np.int64]) -> npt.NDArray[np.object_]:
    return np.array(
        [f"skycell.{c // 1000:04d}.{c % 1000:03d}" if c >= 0 else "" for c in codes.tolist()],
        dtype=object,
    )


def locate_columns(ra: npt.ArrayLike, dec: npt.ArrayLike) -> dict[str, npt.NDArray[Any]]:
    """The columns of :func:`locate` as numpy arrays, without ``skycell`` (no DataFrame and no
    Python string per position, for millions of positions; :func:`skycell_names` gives the
    names). Same arguments, checks and values."""
    ra_arr = _as_degrees("ra", ra)
    dec_arr = _as_degrees("dec", dec)
    if ra_arr.shape != dec_arr.shape:
        raise InvalidPositionError(
            f"ra and dec have different lengths ({ra_arr.size} and {dec_arr.size})"
        )
    bad = ~np.isfinite(ra_arr) | ~np.isfinite(dec_arr) | (np.abs(dec_arr) > 90.0)
    if np.any(bad):
        idx = np.flatnonzero(bad)
        shown = ", ".join(f"{i} (ra={ra_arr[i]!r}, dec={dec_arr[i]!r})" for i in idx[:10])
        more = f" and {idx.size - 10} more" if idx.size > 10 else ""
        raise InvalidPositionError(
            f"invalid position at index {shown}{more}: coordinates must be finite degrees "
            "with |dec| <= 90",
            rows=idx.tolist(),
        )
    n = ra_arr.size
    columns = {
        "projcell": np.empty(n, dtype=np.int64),
        "subcell": np.empty(n, dtype=np.int64),
        "x": np.empty(n, dtype=np.float64),
        "y": np.empty(n, dtype=np.float64),
        "in_footprint": np.empty(n, dtype=bool),
    }
    for start in range(0, n, LOCATE_BLOCK):
        block = slice(start, start + LOCATE_BLOCK)
        loc = locate_arrays(ra_arr[block], dec_arr[block])
        projcell = np.where(loc.covered, loc.projcell, -1)
        columns["projcell"][block] = projcell
        columns["subcell"][block] = np.where(loc.covered, loc.subcell, -1)
        columns["x"][block] = np.where(loc.covered, loc.x, np.nan)
        columns["y"][block] = np.where(loc.covered, loc.y, np.nan)
        columns["in_footprint"][block] = loc.covered & (projcell >= FIRST_FOOTPRINT_PROJCELL)
    return columns


def locate(ra: npt.ArrayLike, dec: npt.ArrayLike) -> pd.DataFrame:
    """Find the PS1 skycell of each position, with no network access.

    Parameters
    ----------
    ra, dec : float or array-like
        J2000 coordinates in degrees. RA is taken modulo 360.

    Returns
    -------
    pandas.DataFrame
        One row per position, in input order: ``projcell`` (int), ``subcell`` (int),
        ``skycell`` (``skycell.PPPP.SSS``), ``x``, ``y`` (1-based FITS pixel of the position in
        that skycell image) and ``in_footprint`` (the PS1 3pi survey has images there,
        projcell >= 635). Positions south of the tessellation table (dec <= -39.99) get
        projcell and subcell -1, an empty skycell, NaN pixels and ``in_footprint`` False.

    Raises
    ------
    InvalidPositionError
        (a ``ValueError``) if a coordinate is NaN/inf or |dec| > 90, naming the index.
    """
    columns = locate_columns(ra, dec)
    skycell = skycell_names(columns["projcell"], columns["subcell"])
    return pd.DataFrame(
        {
            "projcell": columns["projcell"],
            "subcell": columns["subcell"],
            "skycell": skycell,
            "x": columns["x"],
            "y": columns["y"],
            "in_footprint": columns["in_footprint"],
        }
    )
