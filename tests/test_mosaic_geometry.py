"""The pure geometry of mosaics: output grid, contributing skycells, unique-area ownership."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from ps1dask.conventions import CutoutBox
from ps1dask.mosaic import (
    NO_SOURCE,
    edge_depth,
    mosaic_grid,
    mosaic_sources,
    output_to_source,
    owned_box,
    ownership,
    source_box,
)
from ps1dask.planning.plan import fitscut_boxes
from ps1dask.tessellation import skycell_center, skycell_wcs

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_contiguous(owner: np.ndarray) -> None:
    """Each owner's pixels form one 4-connected region (no seams of alternating owners)."""
    for index in np.unique(owner):
        if index == NO_SOURCE:
            continue
        _, n = ndimage.label(owner == index)
        assert n == 1, f"owner {index} has {n} separate regions"


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
    _check_contiguous(owner)
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
    _check_contiguous(owner)
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
    # the deepest, but for stray pixels at four-cell junctions (see _without_islands)
    assert (got >= depths.max(axis=0) - 1.0).all()


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
    _check_contiguous(owner)
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
    _check_contiguous(owner)
    projcells = {sources[i].projcell for i in np.unique(owner)}
    assert 2643 in projcells and len(projcells) == 2


@pytest.mark.parametrize("dec", [89.9, 90.0])
def test_at_the_pole(dec):
    grid = mosaic_grid(10.0, dec, 2000, 2000)
    assert grid.projcell == 2643
    sources = mosaic_sources(grid)
    owner = ownership(grid, sources, slice(0, 2000), slice(0, 2000))
    assert (owner != NO_SOURCE).all()
    _check_contiguous(owner)


def test_header_wcs_of_a_piece_matches_the_source_wcs():
    """The WCS of a piece cut at (x0, y0) is the skycell's shifted (as the cutout header)."""
    ra, dec = skycell_center("1405.053")
    grid = mosaic_grid(ra, dec, 100, 100)
    src = mosaic_sources(grid)[0]
    w = src.wcs(10, 20, (5, 5))
    assert w.wcs.crpix[0] == pytest.approx(src.crpix1 - 10)
    assert w.wcs.crpix[1] == pytest.approx(src.crpix2 - 20)
