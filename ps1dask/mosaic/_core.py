"""Geometry of mosaics: the output grid, the skycells that cover it, and who owns each pixel.

Pure numpy and astropy WCS arithmetic, no I/O. Conventions (see ``docs/ps1-service.md``):

- The output grid of a mosaic is the projection cell of its position: the tangent point, the
  0.25 arcsec pixels (the headers' single-precision ``CDELT``, as every skycell file of the
  projection cell writes it) and the pixel lattice of the position's own skycell, shifted so
  that the box is the one ``fitscut`` would cut (:func:`ps1dask.conventions.cutout_origin`).
  A mosaic that fits in its skycell is therefore the plain cutout, pixel for pixel.
- Skycells of the same projection cell share that lattice: output pixel ``(row, col)`` is
  pixel ``(row + dy, col + dx)`` (0-based) of the skycell, with integer ``dx, dy``.
- Skycells of other projection cells have their own tangent plane: their pixels are resampled
  onto the output grid (done by :mod:`ps1dask.mosaic.assemble`, not here).
- PS1's unique-area rule: each output pixel comes from the skycell in which it lies farthest
  from the edge (the distance from the pixel's centre to the nearest image edge, in that
  skycell's pixels). Ties go to the skycell listed first (the position's own projection cell
  first). Inside one projection cell this splits every 480-pixel overlap down its middle.

Everything is computed for a block of output rows and columns at a time, so memory stays
bounded by the block whatever the size of the mosaic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from astropy.wcs import WCS

from ps1dask.conventions.cutrule import cutout_origin
from ps1dask.tessellation import HEADER_CDELT_DEG, SKYCELL_PAD, skycell_geometry
from ps1dask.tessellation._core import locate_arrays, project

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: Largest mosaic side: 1 degree at 0.25 arcsec per pixel.
MAX_MOSAIC_SIZE = 14400
#: Provenance value of an output pixel no skycell covers.
NO_SOURCE = -1
#: Spacing (pixels) of the sky points sampled to find the projection cells a box touches.
_SAMPLE_STEP = 256


def tan_wcs(
    crval1: float, crval2: float, crpix1: float, crpix2: float, shape: tuple[int, int]
) -> WCS:
    """The TAN WCS of a PS1 grid (FK5, x west, y north, header ``CDELT``), 1-based CRPIX.

    ``shape`` is (ny, nx). The polar projection cell (tangent point at dec +90) gets
    ``LONPOLE = 180``, the tessellation's convention there.
    """
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [crval1, crval2]
    wcs.wcs.crpix = [crpix1, crpix2]
    wcs.wcs.cd = [[-HEADER_CDELT_DEG, 0.0], [0.0, HEADER_CDELT_DEG]]
    if crval2 == 90.0:
        wcs.wcs.lonpole = 180.0
    wcs.wcs.radesys = "FK5"
    wcs.wcs.equinox = 2000.0
    wcs.pixel_shape = (int(shape[1]), int(shape[0]))
    return wcs


@dataclass(frozen=True)
class MosaicSource:
    """One skycell that may contribute to a mosaic.

    ``dx``, ``dy`` (same projection cell only): output 0-based pixel (col, row) is skycell
    0-based pixel (col + dx, row + dy). ``crpix1``/``crpix2`` are the skycell's own (1-based,
    as in its header).
    """

    projcell: int
    subcell: int
    crval1: float
    crval2: float
    crpix1: float
    crpix2: float
    naxis1: int
    naxis2: int
    same_grid: bool
    dx: int = 0
    dy: int = 0

    @property
    def code(self) -> int:
        """``projcell * 1000 + subcell``: how the provenance array names the skycell."""
        return self.projcell * 1000 + self.subcell

    @property
    def skycell(self) -> str:
        return f"skycell.{self.projcell:04d}.{self.subcell:03d}"

    def wcs(self, x0: int = 0, y0: int = 0, shape: tuple[int, int] | None = None) -> WCS:
        """WCS of the skycell's pixels from 0-based (x0, y0) on (a region of ``shape``)."""
        return tan_wcs(
            self.crval1,
            self.crval2,
            self.crpix1 - x0,
            self.crpix2 - y0,
            shape or (self.naxis2, self.naxis1),
        )


@dataclass(frozen=True)
class MosaicGrid:
    """The output grid of one mosaic: a ``width x height`` box of a projection cell's lattice.

    ``crpix1``/``crpix2`` are the output's own 1-based CRPIX (what the store keeps per
    position); ``x0``, ``y0`` the box origin in the position's own skycell (0-based).
    """

    projcell: int
    subcell: int
    crval1: float
    crval2: float
    crpix1: float
    crpix2: float
    width: int
    height: int
    x0: int
    y0: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def wcs(self, rows: slice | None = None, cols: slice | None = None) -> WCS:
        """WCS of the whole output, or of its block ``[rows, cols]``."""
        r0 = 0 if rows is None else rows.start
        c0 = 0 if cols is None else cols.start
        h = self.height - r0 if rows is None else rows.stop - rows.start
        w = self.width - c0 if cols is None else cols.stop - cols.start
        return tan_wcs(self.crval1, self.crval2, self.crpix1 - c0, self.crpix2 - r0, (h, w))


def mosaic_grid(ra: float, dec: float, width: int, height: int) -> MosaicGrid:
    """The output grid of a ``width x height`` mosaic centred on (ra, dec) (degrees).

    The box is the fitscut box in the position's own skycell (:func:`ps1dask.locate`), with
    the pixel position computed from the header's scale as fitscut computes it.
    """
    loc = locate_arrays(np.array([float(ra)]), np.array([float(dec)]))
    projcell, subcell = int(loc.projcell[0]), int(loc.subcell[0])
    geo = skycell_geometry(projcell, subcell)
    x, y = project(
        np.array([float(ra)]), np.array([float(dec)]), geo.crval1, geo.crval2, HEADER_CDELT_DEG
    )
    xc, yc = x + geo.crpix1, y + geo.crpix2
    x0, y0 = cutout_origin(xc, yc, width, height)
    return MosaicGrid(
        projcell=projcell,
        subcell=subcell,
        crval1=geo.crval1,
        crval2=geo.crval2,
        crpix1=geo.crpix1 - int(x0[0]),
        crpix2=geo.crpix2 - int(y0[0]),
        width=int(width),
        height=int(height),
        x0=int(x0[0]),
        y0=int(y0[0]),
    )


def _box_outline(grid: MosaicGrid, step: int = _SAMPLE_STEP) -> tuple[FloatArray, FloatArray]:
    """0-based output pixel coordinates sampled over the whole box (edges included)."""
    xs = np.unique(np.r_[np.arange(0, grid.width, step), grid.width - 1]).astype(np.float64)
    ys = np.unique(np.r_[np.arange(0, grid.height, step), grid.height - 1]).astype(np.float64)
    # the pixel corners too: a skycell reaching only the box's outer half-pixel still counts
    xs = np.unique(np.r_[xs, -0.5, grid.width - 0.5])
    ys = np.unique(np.r_[ys, -0.5, grid.height - 0.5])
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel(), gy.ravel()


def output_to_source(
    grid: MosaicGrid, source: MosaicSource, cols: FloatArray, rows: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """0-based pixel coordinates in ``source`` of output 0-based pixels (cols, rows).

    Exact integer shifts within the projection cell; the exact map between the two tangent
    planes otherwise (:func:`tangent_homography`; NaN where a point is behind the source's
    tangent plane).
    """
    if source.same_grid:
        return cols + source.dx, rows + source.dy
    return apply_homography(tangent_homography(grid, source), cols, rows)


def _tangent_basis(ra0: float, dec0: float) -> FloatArray:
    """Columns: the unit vectors east, north and of the tangent point at (ra0, dec0) (deg)."""
    a, d = math.radians(ra0), math.radians(dec0)
    east = [-math.sin(a), math.cos(a), 0.0]
    north = [-math.sin(d) * math.cos(a), -math.sin(d) * math.sin(a), math.cos(d)]
    centre = [math.cos(d) * math.cos(a), math.cos(d) * math.sin(a), math.sin(d)]
    return np.array([east, north, centre], dtype=np.float64).T


def tangent_homography(grid: MosaicGrid, source: MosaicSource) -> FloatArray:
    """The 3x3 matrix taking output 0-based pixels (col, row, 1) to ``source``'s 0-based
    pixels (homogeneous: divide by the third component).

    Two gnomonic (TAN) projections are central projections from the centre of the sphere,
    so the map from one tangent plane to another is a projective one, exactly: pixel ->
    standard coordinates (xi, eta) in radians -> direction (xi e_east + eta e_north +
    e_centre) -> the other plane's standard coordinates -> its pixels. The same as
    transforming through the sky with both WCSs (``LONPOLE = 180``, the default of TAN and
    what :func:`tan_wcs` sets at the pole), but ~100 times cheaper: the mosaic computes it
    for every resampled pixel. A third component <= 0 means the point is behind the
    source's tangent plane (more than 90 degrees from its tangent point).
    """
    k = math.radians(HEADER_CDELT_DEG)  # radians per pixel; x runs west (CD1_1 < 0)
    to_plane = np.array(
        [[-k, 0.0, k * (grid.crpix1 - 1.0)], [0.0, k, -k * (grid.crpix2 - 1.0)], [0.0, 0.0, 1.0]]
    )
    to_pixel = np.array(
        [[-1.0 / k, 0.0, source.crpix1 - 1.0], [0.0, 1.0 / k, source.crpix2 - 1.0], [0, 0, 1.0]]
    )
    rotation = _tangent_basis(source.crval1, source.crval2).T @ _tangent_basis(
        grid.crval1, grid.crval2
    )
    return np.asarray(to_pixel @ rotation @ to_plane, dtype=np.float64)


def shifted_homography(
    matrix: FloatArray, dcol: float, drow: float, dx: float, dy: float
) -> FloatArray:
    """``matrix`` for output pixels counted from (dcol, drow) and source pixels from
    (dx, dy): the map of an output block onto a piece cut from the source."""
    before = np.array([[1.0, 0.0, dcol], [0.0, 1.0, drow], [0.0, 0.0, 1.0]])
    after = np.array([[1.0, 0.0, -dx], [0.0, 1.0, -dy], [0.0, 0.0, 1.0]])
    return np.asarray(after @ matrix @ before, dtype=np.float64)


def apply_homography(
    matrix: FloatArray, cols: FloatArray, rows: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """``matrix`` applied to 0-based pixels (cols, rows) (broadcast together): (x, y), NaN
    where the third component is <= 0 (behind the target plane)."""
    m = matrix
    # (row terms first: with a column and a row vector, only the sums are full-size)
    w = m[2, 0] * cols + (m[2, 1] * rows + m[2, 2])
    behind = w <= 0.0
    with np.errstate(divide="ignore"):
        np.divide(1.0, w, out=w)
    w[behind] = np.nan
    x = m[0, 0] * cols + (m[0, 1] * rows + m[0, 2])
    x *= w
    y = m[1, 0] * cols + (m[1, 1] * rows + m[1, 2])
    y *= w
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def edge_depth(source: MosaicSource, sx: FloatArray, sy: FloatArray) -> FloatArray:
    """Distance (pixels) from a pixel centre at 0-based (sx, sy) to the nearest edge of the
    skycell image; negative outside it, -inf where unknown (NaN coordinates)."""
    d = np.minimum(
        np.minimum(sx + 0.5, source.naxis1 - 0.5 - sx),
        np.minimum(sy + 0.5, source.naxis2 - 0.5 - sy),
    )
    return np.where(np.isfinite(d), d, -np.inf)


def _projcell_sources(
    grid: MosaicGrid, projcell: int, cols: FloatArray, rows: FloatArray
) -> list[MosaicSource]:
    """The skycells of ``projcell`` whose images reach the sampled output points."""
    ref = skycell_geometry(projcell, 0)
    px, py = ref.naxis1 - SKYCELL_PAD, ref.naxis2 - SKYCELL_PAD
    same = projcell == grid.projcell
    own = skycell_geometry(grid.projcell, grid.subcell)
    probe = MosaicSource(
        projcell, 0, ref.crval1, ref.crval2, ref.crpix1, ref.crpix2, ref.naxis1, ref.naxis2, False
    )
    if same:
        # skycell 000's 0-based pixel of each output pixel: an exact shift
        sx = cols + grid.x0 + (ref.crpix1 - own.crpix1)
        sy = rows + grid.y0 + (ref.crpix2 - own.crpix2)
    else:
        sx, sy = output_to_source(grid, probe, cols, rows)
    ok = np.isfinite(sx) & np.isfinite(sy)
    if not ok.any():
        return []
    # skycell (k, j) holds 0-based pixel (sx - k px, sy - j py) of its own image
    xlo, xhi = float(sx[ok].min()), float(sx[ok].max())
    ylo, yhi = float(sy[ok].min()), float(sy[ok].max())
    k_lo = max(0, math.ceil((xlo - ref.naxis1 + 1) / px))
    k_hi = min(9, math.floor(xhi / px) + 1)
    j_lo = max(0, math.ceil((ylo - ref.naxis2 + 1) / py))
    j_hi = min(9, math.floor(yhi / py) + 1)
    out = []
    for j in range(j_lo, j_hi + 1):
        for k in range(k_lo, k_hi + 1):
            geo = skycell_geometry(projcell, 10 * j + k)
            dx = dy = 0
            if same:
                # integers: both CRPIX differ from the zone's by multiples of px, py
                dx = round(grid.x0 + geo.crpix1 - own.crpix1)
                dy = round(grid.y0 + geo.crpix2 - own.crpix2)
            out.append(
                MosaicSource(
                    projcell,
                    10 * j + k,
                    geo.crval1,
                    geo.crval2,
                    geo.crpix1,
                    geo.crpix2,
                    geo.naxis1,
                    geo.naxis2,
                    same,
                    dx,
                    dy,
                )
            )
    return out


def mosaic_sources(grid: MosaicGrid) -> list[MosaicSource]:
    """Every skycell that may own a pixel of the mosaic: the position's projection cell
    first, then the other projection cells the box reaches (in projcell order).

    The other projection cells are those :func:`ps1dask.locate` finds at points sampled
    every 256 pixels over the box (and at its corners); of each, the skycells whose images
    overlap the box. Skycells that end up owning no pixel are harmless (they fetch nothing).
    """
    cols, rows = _box_outline(grid)
    ra, dec = grid.wcs().wcs_pix2world(cols, rows, 0)
    loc = locate_arrays(np.mod(ra, 360.0), np.clip(dec, -90.0, 90.0))
    others = sorted(set(loc.projcell[loc.covered].tolist()) - {grid.projcell})
    sources: list[MosaicSource] = []
    for projcell in [grid.projcell, *others]:
        candidates = _projcell_sources(grid, int(projcell), cols, rows)
        for src in candidates:
            sx, sy = output_to_source(grid, src, cols, rows)
            if np.any(edge_depth(src, sx, sy) > -_SAMPLE_STEP):
                sources.append(src)
    return sources


def ownership(
    grid: MosaicGrid, sources: list[MosaicSource], rows: slice, cols: slice
) -> npt.NDArray[np.int16]:
    """Index into ``sources`` of the skycell that owns each output pixel of ``[rows, cols]``
    (:data:`NO_SOURCE` where none covers it): the one where the pixel lies farthest from
    the edge, exactly (ties to the first listed). Memory: a few arrays of the block's size.

    Across a projection-cell edge an owner's pixels need not be one piece: along the line
    where two skycells of one cell split their overlap (both ~240 px deep), a skycell of the
    other cell can lie deeper, and owns a wedge there, cut off from the rest of its pixels
    within a block. Such pixels are still the ones it holds farthest from its edges.
    """
    r = np.arange(rows.start, rows.stop, dtype=np.float64)
    c = np.arange(cols.start, cols.stop, dtype=np.float64)
    shape = (r.size, c.size)
    best = np.zeros(shape, dtype=np.float32)  # only positive depths own (centre inside)
    owner = np.full(shape, NO_SOURCE, dtype=np.int16)
    for index, src in enumerate(sources):
        # only the part of the block the source's image reaches: depths elsewhere are <= 0
        window = _image_window(grid, src, r, c)
        if window is None:
            continue
        wr, wc = window
        if src.same_grid:
            # separable: the depth along x and along y, combined by broadcasting
            sx, sy = c[wc] + src.dx, r[wr] + src.dy
            dxs = np.minimum(sx + 0.5, src.naxis1 - 0.5 - sx).astype(np.float32)
            dys = np.minimum(sy + 0.5, src.naxis2 - 0.5 - sy).astype(np.float32)
            depth = np.minimum(dys[:, None], dxs[None, :])
        else:
            depth = _resampled_depth(grid, src, r[wr], c[wc])
        better = depth > best[wr, wc]
        owner[wr, wc][better] = np.int16(index)
        best[wr, wc][better] = depth[better]
    return owner


def _image_window(
    grid: MosaicGrid, source: MosaicSource, r: FloatArray, c: FloatArray
) -> tuple[slice, slice] | None:
    """(rows, cols) slices of the block ``r x c`` (output pixel indices, ascending) that hold
    every pixel whose centre lies inside ``source``'s image; None if there are none.

    Within the projection cell the image is a rectangle of the grid; otherwise its outline
    maps onto the output plane as a quadrilateral (the plane-to-plane map is projective: it
    keeps straight lines), bounded by its corners, when the image is wholly in front of the
    output plane (else the whole block).
    """
    if source.same_grid:
        xlo, xhi = -0.5 - source.dx, source.naxis1 - 0.5 - source.dx
        ylo, yhi = -0.5 - source.dy, source.naxis2 - 0.5 - source.dy
    else:
        inverse = np.asarray(np.linalg.inv(tangent_homography(grid, source)), dtype=np.float64)
        corners_x = np.array([-0.5, source.naxis1 - 0.5, source.naxis1 - 0.5, -0.5])
        corners_y = np.array([-0.5, -0.5, source.naxis2 - 0.5, source.naxis2 - 0.5])
        ox, oy = apply_homography(inverse, corners_x, corners_y)
        if not (np.isfinite(ox).all() and np.isfinite(oy).all()):
            return slice(0, r.size), slice(0, c.size)
        # a pixel's worth of slack: rounding never loses a pixel whose centre is inside
        xlo, xhi = float(ox.min()) - 1.0, float(ox.max()) + 1.0
        ylo, yhi = float(oy.min()) - 1.0, float(oy.max()) + 1.0
    c0, c1 = np.searchsorted(c, xlo, "right"), np.searchsorted(c, xhi, "left")
    r0, r1 = np.searchsorted(r, ylo, "right"), np.searchsorted(r, yhi, "left")
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))


#: Rows of a block whose source coordinates are computed at once (bounds the temporaries).
_DEPTH_STRIP_ROWS = 256


def _resampled_depth(
    grid: MosaicGrid, source: MosaicSource, r: FloatArray, c: FloatArray
) -> npt.NDArray[np.float32]:
    """:func:`edge_depth` in ``source`` (of another projection cell) of the output block
    ``r x c`` (2-d, float32, -inf behind its plane), a strip of rows at a time."""
    matrix = tangent_homography(grid, source)
    depth = np.empty((r.size, c.size), dtype=np.float32)
    for a in range(0, r.size, _DEPTH_STRIP_ROWS):
        rows = r[a : a + _DEPTH_STRIP_ROWS, None]
        sx, sy = apply_homography(matrix, c[None, :], rows)
        depth[a : a + rows.shape[0]] = edge_depth(source, sx, sy)
    return depth


def owned_box(owner: npt.NDArray[np.int16], index: int) -> tuple[slice, slice] | None:
    """Bounding (rows, cols) slices, within ``owner``, of the pixels ``index`` owns."""
    mask = owner == index
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def source_box(
    grid: MosaicGrid, source: MosaicSource, rows: slice, cols: slice, margin: int
) -> tuple[int, int, int, int] | None:
    """(x0, y0, width, height) of the region of ``source`` (0-based, clipped to its image)
    that the output block ``[rows, cols]`` needs, with ``margin`` pixels more on each side
    (resampling kernels reach beyond the pixels they fill); None if nothing.

    Within the projection cell the region is the block itself, shifted, and not clipped
    (``margin`` unused): its pixels off the image are blank, as in a cutout.
    """
    if source.same_grid:
        x0, y0 = cols.start + source.dx, rows.start + source.dy
        x1, y1 = cols.stop + source.dx, rows.stop + source.dy
        if x1 <= 0 or y1 <= 0 or x0 >= source.naxis1 or y0 >= source.naxis2:
            return None
        return int(x0), int(y0), int(x1 - x0), int(y1 - y0)
    else:
        n = 17
        t = np.linspace(0.0, 1.0, n)
        ca, cb = cols.start - 0.5, cols.stop - 0.5
        ra_, rb = rows.start - 0.5, rows.stop - 0.5
        bc = np.r_[ca + (cb - ca) * t, np.full(n, cb), ca + (cb - ca) * t, np.full(n, ca)]
        br = np.r_[np.full(n, ra_), ra_ + (rb - ra_) * t, np.full(n, rb), ra_ + (rb - ra_) * t]
        sx, sy = output_to_source(grid, source, bc, br)
        if not (np.isfinite(sx).all() and np.isfinite(sy).all()):
            return None
        x0 = math.floor(float(sx.min()) + 0.5) - margin
        y0 = math.floor(float(sy.min()) + 0.5) - margin
        x1 = math.floor(float(sx.max()) + 0.5) + 1 + margin
        y1 = math.floor(float(sy.max()) + 0.5) + 1 + margin
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, source.naxis1), min(y1, source.naxis2)
    if x0 >= x1 or y0 >= y1:
        return None
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)
