"""Numerics of the PS1 RINGS.V3 tessellation: vectorised, pure numpy, no I/O.

All angles are in degrees.  Pixel offsets are measured from a projection cell's
tangent point, x growing to the west and y to the north, in units of the PS1
skycell pixel (``PIXEL_SCALE_DEG``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
import numpy.typing as npt

#: Pixel scale of the tessellation: exactly 0.25 arcsec (deg). The service computes skycell
#: centres with this exact value (it reproduces them to the last digit).
PIXEL_SCALE_DEG = 0.25 / 3600.0
#: The same scale as the skycell FITS headers write it (CDELT1/2, single-precision rounded).
HEADER_CDELT_DEG = 6.94444461259988e-05
#: Overlap padding of a skycell: 240 pixels on each side.
SKYCELL_PAD = 480
#: First projection cell with PS1 3pi data (zone 15).
FIRST_FOOTPRINT_PROJCELL = 635

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Grid:
    """The official tessellation table (``ps1grid.csv``), one array per column."""

    zone: IntArray
    projcell: IntArray
    nband: IntArray
    dec: FloatArray
    dec_min: FloatArray
    dec_max: FloatArray
    xcell: IntArray
    ycell: IntArray
    crpix1: FloatArray
    crpix2: FloatArray

    def __len__(self) -> int:
        return len(self.zone)


@functools.cache
def load_grid() -> Grid:
    """Load the tessellation table shipped as package data (cached)."""
    text = resources.files("ps1dask.data").joinpath("ps1grid.csv").read_text()
    rows = np.loadtxt(text.splitlines(), delimiter=",", skiprows=1, dtype=np.float64)
    as_int = lambda col: rows[:, col].astype(np.int64)
    return Grid(
        zone=as_int(0),
        projcell=as_int(1),
        nband=as_int(2),
        dec=rows[:, 3],
        dec_min=rows[:, 4],
        dec_max=rows[:, 5],
        xcell=as_int(6),
        ycell=as_int(7),
        crpix1=rows[:, 8],
        crpix2=rows[:, 9],
    )


def zone_rows(dec: FloatArray) -> IntArray:
    """Row of the grid table holding each declination: DEC_MIN < dec <= DEC_MAX.

    Declinations south of the first zone give row 0 (check with ``dec > dec_min``).
    """
    grid = load_grid()
    rows = np.searchsorted(grid.dec_max, dec, side="left")
    return np.minimum(rows, len(grid) - 1).astype(np.int64)


def projcell_index(ra: FloatArray, rows: IntArray) -> IntArray:
    """Index ``ira`` of the projection cell within its zone (round half to even)."""
    nband = load_grid().nband[rows]
    return (np.rint(np.mod(ra, 360.0) * nband / 360.0).astype(np.int64)) % nband


def tangent_point(rows: IntArray, ira: IntArray) -> tuple[FloatArray, FloatArray]:
    """CRVAL1, CRVAL2 of the projection cell ``ira`` of zone row ``rows``."""
    grid = load_grid()
    return ira * 360.0 / grid.nband[rows], grid.dec[rows]


def project(
    ra: FloatArray,
    dec: FloatArray,
    ra0: float | FloatArray,
    dec0: float | FloatArray,
    scale: float = PIXEL_SCALE_DEG,
) -> tuple[FloatArray, FloatArray]:
    """Gnomonic projection of (ra, dec) about (ra0, dec0) to pixel offsets (x west, y north).

    ``scale`` is the pixel size in degrees (the exact 0.25 arcsec by default).
    """
    dra = np.deg2rad((np.asarray(ra) - ra0 + 180.0) % 360.0 - 180.0)
    d = np.deg2rad(dec)
    d0 = np.deg2rad(dec0)
    sin_d, cos_d = np.sin(d), np.cos(d)
    sin_d0, cos_d0 = np.sin(d0), np.cos(d0)
    cos_dra = np.cos(dra)
    cos_c = sin_d0 * sin_d + cos_d0 * cos_d * cos_dra
    xi = cos_d * np.sin(dra) / cos_c
    eta = (cos_d0 * sin_d - sin_d0 * cos_d * cos_dra) / cos_c
    scale_rad = np.deg2rad(scale)
    return -xi / scale_rad, eta / scale_rad


def deproject(
    x: FloatArray, y: FloatArray, ra0: float | FloatArray, dec0: float | FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Inverse of :func:`project`: pixel offsets about (ra0, dec0) to (ra, dec) in degrees,
    RA in [0, 360)."""
    scale = np.deg2rad(PIXEL_SCALE_DEG)
    xi = -np.asarray(x, dtype=np.float64) * scale
    eta = np.asarray(y, dtype=np.float64) * scale
    d0 = np.deg2rad(dec0)
    denom = np.cos(d0) - eta * np.sin(d0)
    ra = wrap_ra(ra0 + np.rad2deg(np.arctan2(xi, denom)))
    dec = np.rad2deg(np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, denom)))
    return ra, dec


def wrap_ra(ra: npt.ArrayLike) -> FloatArray:
    """RA (degrees) wrapped to [0, 360).

    West of a tangent point at RA 0 the deprojection gives small negative RAs; every RA
    ps1dask returns or stores is in [0, 360). ``np.mod`` alone can round a tiny negative
    value up to exactly 360.0, which is mapped to 0.
    """
    out = np.mod(np.asarray(ra, dtype=np.float64), 360.0)
    return np.where(out >= 360.0, 0.0, out)


def subcell_indices(x: FloatArray, y: FloatArray, rows: IntArray) -> tuple[IntArray, IntArray]:
    """Column k and row j (0..9) of the skycell holding each pixel offset."""
    grid = load_grid()
    px = grid.xcell[rows] - SKYCELL_PAD
    py = grid.ycell[rows] - SKYCELL_PAD
    k = np.clip(np.rint(4.5 + x / px), 0, 9).astype(np.int64)
    j = np.clip(np.rint(4.5 + y / py), 0, 9).astype(np.int64)
    return k, j


def skycell_crpix(rows: IntArray, k: IntArray, j: IntArray) -> tuple[FloatArray, FloatArray]:
    """CRPIX1, CRPIX2 of skycell (k, j) of the zone in ``rows``."""
    grid = load_grid()
    px = grid.xcell[rows] - SKYCELL_PAD
    py = grid.ycell[rows] - SKYCELL_PAD
    return grid.crpix1[rows] + px * (5 - k), grid.crpix2[rows] + py * (5 - j)


def _edge_distance(x: FloatArray, y: FloatArray, row: int) -> FloatArray:
    """Distance in pixels from an offset to the edge of the full projection cell."""
    grid = load_grid()
    n = 10 * (int(grid.xcell[row]) - SKYCELL_PAD) + SKYCELL_PAD
    m = 10 * (int(grid.ycell[row]) - SKYCELL_PAD) + SKYCELL_PAD
    return np.minimum.reduce([x + n // 2, n // 2 - 1 - x, y + m // 2, m // 2 - 1 - y])


@dataclass(frozen=True)
class Located:
    """Vectorised result of :func:`locate_arrays` (one element per input position)."""

    row: IntArray
    projcell: IntArray
    subcell: IntArray
    x: FloatArray  #: 1-based FITS pixel in the skycell image
    y: FloatArray
    covered: npt.NDArray[np.bool_]  #: inside the tessellation table (dec > its southern edge)


def locate_arrays(ra: FloatArray, dec: FloatArray) -> Located:
    """Skycell and pixel of each position. Inputs must be finite with |dec| <= 90."""
    grid = load_grid()
    ra = np.mod(np.asarray(ra, dtype=np.float64), 360.0)
    dec = np.asarray(dec, dtype=np.float64)
    rows = zone_rows(dec)
    ira = projcell_index(ra, rows)
    ra0, dec0 = tangent_point(rows, ira)
    x, y = project(ra, dec, ra0, dec0)

    polar_row_44 = int(np.flatnonzero(grid.zone == 44)[0])
    polar_row_45 = int(np.flatnonzero(grid.zone == 45)[0])
    polar = rows >= polar_row_44
    if np.any(polar):
        # Near the pole the zone-44 cells and the single zone-45 cell overlap widely: keep
        # whichever cell the position sits deeper inside.
        idx = np.flatnonzero(polar)
        ra_p, dec_p = ra[idx], dec[idx]
        r44 = np.full(idx.size, polar_row_44)
        ira44 = projcell_index(ra_p, r44)
        c44 = tangent_point(r44, ira44)
        x44, y44 = project(ra_p, dec_p, *c44)
        x45, y45 = project(ra_p, dec_p, np.zeros(idx.size), np.full(idx.size, 90.0))
        use45 = _edge_distance(x44, y44, polar_row_44) < _edge_distance(x45, y45, polar_row_45)
        rows[idx] = np.where(use45, polar_row_45, polar_row_44)
        ira[idx] = np.where(use45, 0, ira44)
        x[idx] = np.where(use45, x45, x44)
        y[idx] = np.where(use45, y45, y44)

    k, j = subcell_indices(x, y, rows)
    crpix1, crpix2 = skycell_crpix(rows, k, j)
    return Located(
        row=rows,
        projcell=grid.projcell[rows] + ira,
        subcell=10 * j + k,
        x=x + crpix1,
        y=y + crpix2,
        covered=dec > grid.dec_min[0],
    )


def row_of_projcell(projcell: int) -> int:
    """Grid row of a projection cell number; raises ``ValueError`` if there is none."""
    grid = load_grid()
    row = int(np.searchsorted(grid.projcell, projcell, side="right")) - 1
    if row < 0 or projcell >= grid.projcell[row] + grid.nband[row]:
        raise ValueError(f"no projection cell {projcell} in the PS1 tessellation (487..2643)")
    return row


@dataclass(frozen=True)
class SkycellGeometry:
    """Everything needed to build a skycell's WCS (1-based CRPIX, as in its FITS header)."""

    projcell: int
    subcell: int
    zone: int
    crval1: float
    crval2: float
    crpix1: float
    crpix2: float
    naxis1: int
    naxis2: int


def skycell_geometry(projcell: int, subcell: int) -> SkycellGeometry:
    """Geometry of skycell ``projcell.subcell``; ``ValueError`` for an invalid cell."""
    if not 0 <= subcell <= 99:
        raise ValueError(f"subcell {subcell} is not in 0..99")
    grid = load_grid()
    row = row_of_projcell(projcell)
    ira = projcell - int(grid.projcell[row])
    rows = np.array([row])
    crpix1, crpix2 = skycell_crpix(rows, np.array([subcell % 10]), np.array([subcell // 10]))
    return SkycellGeometry(
        projcell=projcell,
        subcell=subcell,
        zone=int(grid.zone[row]),
        crval1=ira * 360.0 / float(grid.nband[row]),
        crval2=float(grid.dec[row]),
        crpix1=float(crpix1[0]),
        crpix2=float(crpix2[0]),
        naxis1=int(grid.xcell[row]),
        naxis2=int(grid.ycell[row]),
    )


def skycell_center_radec(geometry: SkycellGeometry) -> tuple[float, float]:
    """Centre as ``ps1filenames.py?skycell=`` reports it (see ``docs/ps1-service.md`` section 1)."""
    dx = 0.5 * (geometry.naxis1 - 1) - geometry.crpix1
    dy = 0.5 * (geometry.naxis2 - 1) - geometry.crpix2
    ra, dec = deproject(np.array(dx), np.array(dy), geometry.crval1, geometry.crval2)
    return float(ra), float(dec)
