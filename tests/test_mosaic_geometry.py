"""The pure geometry of mosaics: output grid, contributing skycells, unique-area ownership."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from ps1dask.conventions import CutoutBox
from ps1dask.mosaic import (
    NO_SOURCE,
    apply_homography,
    edge_depth,
    mosaic_grid,
    mosaic_sources,
    output_to_source,
    owned_box,
    ownership,
    source_box,
    tangent_homography,
)
from ps1dask.mosaic._core import _image_window
from ps1dask.mosaic.assemble import _reproject, _reproject_adaptive_wcs
from ps1dask.planning.plan import fitscut_boxes
from ps1dask.tessellation import skycell_center, skycell_wcs

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_deepest(grid, sources, owner: np.ndarray, rows: slice, cols: slice, step: int) -> None:
    """PS1's unique-area rule, exactly, on every ``step``-th pixel of the block: the owner is
    the skycell where the pixel lies deepest (float64 depths, computed here pixel by pixel;
    ties within float32 rounding may go either way), and covers it."""
    r = np.arange(rows.start, rows.stop, step, dtype=np.float64)
    c = np.arange(cols.start, cols.stop, step, dtype=np.float64)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    depths = np.stack([edge_depth(s, *output_to_source(grid, s, cc, rr)) for s in sources])
    chosen = owner[::step, ::step]
    best = depths.max(axis=0)
    covered = best > 0
    assert ((chosen != NO_SOURCE) == covered).all()
    got = np.take_along_axis(depths, np.maximum(chosen, 0)[None], axis=0)[0]
    assert (np.abs(got - best)[covered] <= 1e-3).all(), "a pixel not from its deepest skycell"


def test_small_mosaic_is_the_plain_cutout():
    """A box inside one skycell: one owner, the fitscut box of the position's own skycell."""
    ra, dec = skycell_center("1405.053")
    grid = mosaic_grid(ra, dec, 300, 200)
    # the planner's fitscut box (header CDELT, as the service computes it)
    *_, bx, by = fitscut_boxes(
        np.array([ra]), np.array([dec]), np.array([1405]), np.array([53]), 300, 200
    )
    box = CutoutBox(int(bx[0]), int(by[0]), 300, 200)
    assert (grid.projcell, grid.subcell) == (1405, 53)
    assert (grid.x0, grid.y0) == (box.x0, box.y0)
    sources = mosaic_sources(grid)
    owner = ownership(grid, sources, slice(0, 200), slice(0, 300))
    assert {sources[i].skycell for i in np.unique(owner)} == {"skycell.1405.053"}
    # the output WCS is the skycell's WCS shifted by the box origin
    sky = skycell_wcs("1405.053")
    out = grid.wcs()
    world = out.pixel_to_world_values(np.array([0.0, 299.0]), np.array([0.0, 199.0]))
    x, y = sky.world_to_pixel_values(*world)
    np.testing.assert_allclose(x, [box.x0, box.x0 + 299], atol=1e-6)
    np.testing.assert_allclose(y, [box.y0, box.y0 + 199], atol=1e-6)


def _boundary_position(projcell: int, subcell_a: int, subcell_b: int) -> tuple[float, float]:
    """A sky position half way between the centres of two skycells."""
    a, b = (
        skycell_center(f"{projcell}.{subcell_a:03d}"),
        skycell_center(f"{projcell}.{subcell_b:03d}"),
    )
    return 0.5 * (a[0] + b[0]), 0.5 * (a[1] + b[1])


def test_two_skycells_of_one_projcell_split_the_overlap_down_the_middle():
    ra, dec = _boundary_position(1405, 53, 54)
    grid = mosaic_grid(ra, dec, 1200, 400)
    sources = mosaic_sources(grid)
    assert all(s.projcell == 1405 and s.same_grid for s in sources)
    owner = ownership(grid, sources, slice(0, 400), slice(0, 1200))
    owners = {sources[i].skycell for i in np.unique(owner)}
    assert owners == {"skycell.1405.053", "skycell.1405.054"}
    _check_deepest(grid, sources, owner, slice(0, 400), slice(0, 1200), 1)
    # the split column: where the two skycells are equally deep (overlap of 480: 240 each)
    row = owner[200]
    changes = np.flatnonzero(np.diff(row))
    assert changes.size == 1
    col = int(changes[0]) + 1  # first column of the right-hand owner
    left, right = sources[row[col - 1]], sources[row[col]]
    for src, c in ((left, col - 1), (right, col)):
        sx, sy = output_to_source(grid, src, np.array([float(c)]), np.array([200.0]))
        assert edge_depth(src, sx, sy)[0] >= 239.5
    # exact integer offsets: each source's WCS and the output WCS agree pixel for pixel
    out = grid.wcs()
    for src in sources:
        sky = skycell_wcs(src.skycell)
        world = out.pixel_to_world_values(np.array([10.0, 1100.0]), np.array([5.0, 390.0]))
        x, y = sky.world_to_pixel_values(*world)
        # (skycell_wcs has the exact 0.25"; the grid the headers' CDELT: 1e-8 relative)
        np.testing.assert_allclose(x, np.array([10.0, 1100.0]) + src.dx, atol=2e-3)
        np.testing.assert_allclose(y, np.array([5.0, 390.0]) + src.dy, atol=2e-3)


@FAST
@given(
    ra=st.floats(0.0, 359.999),
    dec=st.floats(-30.0, 89.5),
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
)
def test_every_pixel_has_one_owner_that_covers_it(ra, dec, width, height):
    grid = mosaic_grid(ra, dec, width, height)
    sources = mosaic_sources(grid)
    # sample a block of the box (bounded for speed)
    rows = slice(0, min(height, 600))
    cols = slice(max(0, width - 600), width)
    owner = ownership(grid, sources, rows, cols)
    assert (owner != NO_SOURCE).all(), "a pixel of the footprint without owner"
    _check_deepest(grid, sources, owner, rows, cols, 7)
    # the owner covers the pixel, and no other candidate lies deeper
    r = np.arange(rows.start, rows.stop, max(1, (rows.stop - rows.start) // 7), dtype=float)
    c = np.arange(cols.start, cols.stop, max(1, (cols.stop - cols.start) // 7), dtype=float)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    depths = np.stack(
        [edge_depth(s, *output_to_source(grid, s, cc.ravel(), rr.ravel())) for s in sources]
    )
    chosen = owner[(rr.ravel() - rows.start).astype(int), (cc.ravel() - cols.start).astype(int)]
    got = depths[chosen, np.arange(chosen.size)]
    assert (got > 0).all()
    assert (got >= depths.max(axis=0) - 1e-3).all()


@FAST
@given(ra=st.floats(0.0, 359.999), dec=st.floats(-30.0, 88.0))
def test_same_projcell_offsets_reproduce_the_skycell_wcs(ra, dec):
    grid = mosaic_grid(ra, dec, 4000, 4000)
    out = grid.wcs()
    for src in mosaic_sources(grid):
        if not src.same_grid:
            continue
        sky = skycell_wcs(src.skycell)
        world = out.pixel_to_world_values(np.array([0.0, 3999.0]), np.array([0.0, 3999.0]))
        x, y = sky.world_to_pixel_values(*world)
        # the tessellation's exact 0.25" vs the headers' CDELT: < 1e-3 px over the cell
        np.testing.assert_allclose(x, np.array([0.0, 3999.0]) + src.dx, atol=2e-3)
        np.testing.assert_allclose(y, np.array([0.0, 3999.0]) + src.dy, atol=2e-3)


def test_projcell_edge_takes_the_neighbour_cell():
    """A box across a projection-cell edge (ra 330 in zone 1405's band) draws on both."""
    grid = mosaic_grid(330.0, 2.0, 3000, 1000)
    sources = mosaic_sources(grid)
    owner = ownership(grid, sources, slice(0, 1000), slice(0, 3000))
    projcells = {sources[i].projcell for i in np.unique(owner)}
    assert projcells == {1404, 1405}
    _check_deepest(grid, sources, owner, slice(0, 1000), slice(0, 3000), 3)
    other = [i for i in np.unique(owner) if not sources[i].same_grid]
    for i in other:
        rows, cols = owned_box(owner, int(i))
        box = source_box(grid, sources[i], rows, cols, margin=8)
        assert box is not None
        x0, y0, w, h = box
        assert 0 <= x0 and x0 + w <= sources[i].naxis1 and 0 <= y0 and y0 + h <= sources[i].naxis2


def test_pole_cell_mosaic():
    """20 arcmin (4800 px) at dec 87.8: the polar cell (2643) and a zone-44 neighbour."""
    grid = mosaic_grid(45.0, 87.8, 4800, 4800)
    assert grid.projcell == 2643
    sources = mosaic_sources(grid)
    owner = ownership(grid, sources, slice(0, 4800), slice(0, 4800))
    assert (owner != NO_SOURCE).all()
    _check_deepest(grid, sources, owner, slice(0, 4800), slice(0, 4800), 5)
    projcells = {sources[i].projcell for i in np.unique(owner)}
    assert 2643 in projcells and len(projcells) == 2


@pytest.mark.parametrize("dec", [89.9, 90.0])
def test_at_the_pole(dec):
    grid = mosaic_grid(10.0, dec, 2000, 2000)
    assert grid.projcell == 2643
    sources = mosaic_sources(grid)
    owner = ownership(grid, sources, slice(0, 2000), slice(0, 2000))
    assert (owner != NO_SOURCE).all()
    _check_deepest(grid, sources, owner, slice(0, 2000), slice(0, 2000), 3)


def test_header_wcs_of_a_piece_matches_the_source_wcs():
    """The WCS of a piece cut at (x0, y0) is the skycell's shifted (as the cutout header)."""
    ra, dec = skycell_center("1405.053")
    grid = mosaic_grid(ra, dec, 100, 100)
    src = mosaic_sources(grid)[0]
    w = src.wcs(10, 20, (5, 5))
    assert w.wcs.crpix[0] == pytest.approx(src.crpix1 - 10)
    assert w.wcs.crpix[1] == pytest.approx(src.crpix2 - 20)


@FAST
@given(
    ra=st.floats(0.0, 359.999),
    dec=st.floats(-30.0, 90.0),
    fx=st.floats(0.0, 1.0),
    fy=st.floats(0.0, 1.0),
)
def test_plane_to_plane_homography_is_the_wcs_transform_through_the_sky(ra, dec, fx, fy):
    """The exact map between two tangent planes equals astropy's two WCS transforms (polar
    cell included, as the output or as the source)."""
    grid = mosaic_grid(ra, dec, 14400, 14400)
    others = [s for s in mosaic_sources(grid) if not s.same_grid]
    cols = np.r_[np.linspace(-0.5, 14399.5, 9), fx * 14400]
    rows = np.r_[np.linspace(14399.5, -0.5, 9), fy * 14400]
    for src in others:
        sx, sy = output_to_source(grid, src, cols, rows)
        world = grid.wcs().wcs_pix2world(cols, rows, 0)
        ex, ey = src.wcs().wcs_world2pix(*world, 0)
        np.testing.assert_allclose(sx, ex, atol=1e-6)
        np.testing.assert_allclose(sy, ey, atol=1e-6)
        # the inverse matrix takes them back
        inverse = np.linalg.inv(tangent_homography(grid, src))
        bx, by = apply_homography(inverse, sx, sy)
        np.testing.assert_allclose(bx, cols, atol=1e-6)
        np.testing.assert_allclose(by, rows, atol=1e-6)


def test_unique_area_rule_is_exact_where_four_skycells_of_two_projcells_meet():
    """The band of the bench mosaic holding the junction of 1482.050/060 and 1483.059/069:
    every pixel (every 3rd, over the whole band) comes from its deepest skycell, including
    the wedge 1482.060 holds inside the other cell along 1483's overlap split."""
    grid = mosaic_grid(285.1685, 6.4, 7200, 7200)
    sources = mosaic_sources(grid)
    rows, cols = slice(2048, 4096), slice(0, 7200)
    owner = ownership(grid, sources, rows, cols)
    _check_deepest(grid, sources, owner, rows, cols, 3)
    wedge = sources.index(next(s for s in sources if s.skycell == "skycell.1482.060"))
    _, pieces = ndimage.label(owner == wedge)
    assert pieces == 2  # its main part and the wedge


def test_points_behind_the_source_plane_have_no_coordinates():
    """Pixels more than 90 degrees from a source's tangent point map to NaN, not to a
    mirror image."""
    grid = mosaic_grid(0.0, 0.0, 100, 100)
    src = mosaic_sources(grid)[0]
    far = dataclasses.replace(src, crval1=180.0, crval2=0.0, same_grid=False)
    sx, sy = output_to_source(grid, far, np.array([0.0, 50.0]), np.array([0.0, 50.0]))
    assert np.isnan(sx).all() and np.isnan(sy).all()
    assert (edge_depth(far, sx, sy) == -np.inf).all()


@FAST
@given(ra=st.floats(0.0, 359.999), dec=st.floats(-30.0, 89.5))
def test_image_window_holds_every_pixel_inside_the_image(ra, dec):
    """Ownership looks at a source only where its image reaches: no pixel whose centre lies
    inside the image is outside that window."""
    grid = mosaic_grid(ra, dec, 6000, 6000)
    r = np.arange(0, 6000, 37, dtype=np.float64)
    c = np.arange(0, 6000, 41, dtype=np.float64)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    for src in mosaic_sources(grid):
        inside = edge_depth(src, *output_to_source(grid, src, cc, rr)) > 0
        window = _image_window(grid, src, r, c)
        if window is None:
            assert not inside.any()
            continue
        outside = np.ones(inside.shape, dtype=bool)
        outside[window] = False
        assert not (inside & outside).any()


def _other_projcell_piece():
    """A block of the bench mosaic wholly inside a skycell of the other projection cell, the
    box of that skycell it needs, and seeded noise with blanks as its pixels."""
    grid = mosaic_grid(285.1685, 6.4, 7200, 7200)
    src = next(s for s in mosaic_sources(grid) if not s.same_grid)
    for r0 in range(0, 7200, 300):
        for c0 in range(0, 7200, 400):
            rows, cols = slice(r0, r0 + 300), slice(c0, c0 + 400)
            box = source_box(grid, src, rows, cols, 8)
            if box is not None and box[2] >= 410 and box[3] >= 310:
                rng = np.random.default_rng(3)
                pixels = (rng.normal(size=(box[3], box[2])) + 10).astype(np.float32)
                pixels[5:9, 7:30] = np.nan
                pixels[100:103, 200:260] = 500.0  # a bright streak: interpolation must follow
                return grid, src, box, rows, cols, pixels
    raise AssertionError("no block of the other projection cell")


def test_resampling_equals_reproject_adaptive_with_the_two_wcs():
    """Flux: reproject's adaptive kernel on the exact plane-to-plane map gives what
    reproject_adaptive gives with the two WCSs; masks: reproject_interp's nearest pixel."""
    from reproject import reproject_interp

    grid, src, box, rows, cols, pixels = _other_projcell_piece()
    fast = _reproject(pixels, src, box, grid, rows, cols, "stack")
    public = _reproject_adaptive_wcs(pixels, src, box, grid, rows, cols)
    assert np.isfinite(fast).all() and np.isfinite(public).all()
    np.testing.assert_allclose(fast, public, rtol=1e-5, atol=1e-5)
    assert fast.max() > 100  # the streak came through
    x0, y0, w, h = box
    nearest = reproject_interp(
        (pixels, src.wcs(x0, y0, (h, w))),
        grid.wcs(rows, cols),
        shape_out=fast.shape,
        order="nearest-neighbor",
        return_footprint=False,
    )
    ours = _reproject(pixels, src, box, grid, rows, cols, "stack.mask")
    np.testing.assert_array_equal(ours, nearest.astype(np.float32))
