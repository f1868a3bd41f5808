"""Tessellation: reference values, an independent held-out check, and properties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as st

import ps1dask
from ps1dask.exceptions import InvalidPositionError, InvalidSkycellError
from ps1dask.tessellation import SkycellId, load_grid, locate, skycell_center, skycell_wcs

OFFICIAL_GRID = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ps1grid.csv"
SHIPPED_GRID = Path(ps1dask.__file__).parent / "data" / "ps1grid.csv"
GRID_CSV = pd.read_csv(OFFICIAL_GRID if OFFICIAL_GRID.exists() else SHIPPED_GRID)


# --- reference values (real service output, docs/ps1-service.md) ------------------------


def test_reference_skycell_center_exact():
    ra, dec = skycell_center("1405.053")
    assert abs(ra - 332.60045165718776) < 1e-9
    assert abs(dec - 2.1998090575691633) < 1e-9


def test_reference_crab_skycell():
    row = locate(83.63321, 22.01446).iloc[0]
    assert row.skycell == "skycell.1784.059"
    assert (row.projcell, row.subcell) == (1784, 59)
    assert bool(row.in_footprint)


def test_reference_header_values():
    wcs = skycell_wcs("skycell.1405.053")
    assert tuple(wcs.wcs.crval) == (332.0, 2.0)
    assert tuple(wcs.wcs.crpix) == (11760.0, 242.0)
    assert wcs.pixel_shape == (6240, 6243)


def test_shipped_grid_equals_official_table():
    grid = load_grid()
    assert len(grid) == 33
    assert grid.projcell[0] == 487 and grid.projcell[-1] == 2643
    np.testing.assert_array_equal(grid.xcell, GRID_CSV.XCELL.to_numpy())
    np.testing.assert_array_equal(grid.dec_max, GRID_CSV.DEC_MAX.to_numpy())
    np.testing.assert_array_equal(grid.crpix1, GRID_CSV.CRPIX1.to_numpy())


def test_cell_id_forms_agree():
    a = skycell_center("skycell.1405.053")
    assert skycell_center("1405.053") == a
    assert skycell_center((1405, 53)) == a
    assert skycell_center(SkycellId(1405, 53)) == a
    assert str(SkycellId.parse("1405.53")) == "skycell.1405.053"


@pytest.mark.parametrize(
    "bad", ["1405", "skycell.9999.001", "1405.100", "abc", (486, 0), (2643, 100)]
)
def test_invalid_skycells(bad):
    with pytest.raises(InvalidSkycellError):
        skycell_center(bad)


# --- independent implementation for a held-out set --------------------------------------
# Written from the tessellation's definition with different machinery: astropy/wcslib for
# the projection, explicit loops for zones, and a brute-force search of all 100 skycells of
# the projection cell for the one whose centre region holds the point (the one where the
# position is farthest from the edge).


def _independent_locate(ra: float, dec: float) -> tuple[int, int, float, float]:
    rows = GRID_CSV.to_dict("records")
    zone_row = next(i for i, r in enumerate(rows) if r["DEC_MIN"] < dec <= r["DEC_MAX"])

    def cell_in_zone(i: int) -> tuple[int, WCS, dict]:
        r = rows[i]
        n = int(r["NBAND"])
        centers = np.arange(n) * 360.0 / n
        diff = np.abs(((ra % 360.0) - centers + 180.0) % 360.0 - 180.0)
        ira = int(np.argmin(diff))
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [centers[ira], r["DEC"]]
        w.wcs.crpix = [0.0, 0.0]
        w.wcs.cdelt = [-0.25 / 3600, 0.25 / 3600]
        if r["DEC"] == 90.0:
            w.wcs.lonpole = 180.0  # "y to the north" along the tangent meridian
        return int(r["PROJCELL"]) + ira, w, r

    candidates = [zone_row]
    if rows[zone_row]["ZONE"] >= 44:
        candidates = [len(rows) - 2, len(rows) - 1]
    best = None
    for i in candidates:
        projcell, w, r = cell_in_zone(i)
        x, y = (float(v) for v in w.wcs_world2pix(ra, dec, 1))  # offsets: CRPIX is 0
        nx = 10 * (r["XCELL"] - 480) + 480
        ny = 10 * (r["YCELL"] - 480) + 480
        depth = min(x + nx // 2, nx // 2 - 1 - x, y + ny // 2, ny // 2 - 1 - y)
        if best is None or depth > best[0]:
            best = (depth, projcell, x, y, r)
    _, projcell, x, y, r = best
    px, py = r["XCELL"] - 480, r["YCELL"] - 480
    # brute force: the skycell whose centre is nearest along each axis
    scores = []
    for sub in range(100):
        k, j = sub % 10, sub // 10
        cx, cy = (k - 4.5) * px, (j - 4.5) * py
        scores.append(max(abs(x - cx) / px, abs(y - cy) / py))
    sub = int(np.argmin(scores))
    k, j = sub % 10, sub // 10
    return projcell, sub, x + r["CRPIX1"] + px * (5 - k), y + r["CRPIX2"] + py * (5 - j)


def test_held_out_positions_match_independent_implementation():
    rng = np.random.default_rng(20261124)
    n = 3000
    ra = rng.uniform(-10, 370, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-39.9)), 1.0, n)))
    # stress the hard places: zone edges, RA wrap, the pole
    grid = load_grid()
    edges = rng.choice(grid.dec_max[:-1], 300) + rng.normal(0, 1e-3, 300)
    ra = np.concatenate(
        [ra, rng.uniform(0, 360, 300), rng.normal(0, 0.3, 200), rng.uniform(0, 360, 200)]
    )
    dec = np.concatenate([dec, edges, rng.uniform(-30, 80, 200), rng.uniform(84, 89.999, 200)])
    got = locate(ra, dec)
    mismatches = []
    for i in range(len(ra)):
        projcell, subcell, x, y = _independent_locate(ra[i], dec[i])
        row = got.iloc[i]
        same_cell = (row.projcell, row.subcell) == (projcell, subcell)
        if not same_cell or abs(row.x - x) > 1e-5 or abs(row.y - y) > 1e-5:
            mismatches.append(
                (i, ra[i], dec[i], row.skycell, projcell, subcell, row.x - x, row.y - y)
            )
    assert not mismatches, mismatches[:5]


# --- properties ------------------------------------------------------------------------

finite_ra = st.floats(-720.0, 720.0, allow_nan=False)
footprint_dec = st.floats(-31.9, 90.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(finite_ra, footprint_dec)
def test_pixel_roundtrips_through_skycell_wcs(ra, dec):
    row = locate(ra, dec).iloc[0]
    wcs = skycell_wcs((int(row.projcell), int(row.subcell)))
    x, y = wcs.all_world2pix(ra % 360.0, dec, 1)
    assert abs(float(x) - row.x) < 1e-6 and abs(float(y) - row.y) < 1e-6
    back_ra, back_dec = wcs.all_pix2world(row.x, row.y, 1)
    sep = np.hypot(
        ((float(back_ra) - ra + 180) % 360 - 180) * np.cos(np.radians(dec)), float(back_dec) - dec
    )
    assert sep < 1e-9


@settings(max_examples=300, deadline=None)
@given(finite_ra, footprint_dec)
def test_position_is_inside_its_skycell_image(ra, dec):
    row = locate(ra, dec).iloc[0]
    w, h = skycell_wcs((int(row.projcell), int(row.subcell))).pixel_shape
    assert 0.5 <= row.x <= w + 0.5 and 0.5 <= row.y <= h + 0.5
    assert bool(row.in_footprint) == (row.projcell >= 635)


@settings(max_examples=200, deadline=None)
@given(finite_ra, st.floats(-39.9, 90.0, allow_nan=False), st.integers(-3, 3))
def test_ra_is_taken_modulo_360(ra, dec, turns):
    a = locate(ra, dec)
    b = locate(ra + 360.0 * turns, dec)
    if a.skycell[0] == b.skycell[0]:
        assert abs(a.x[0] - b.x[0]) < 1e-6
    else:
        # only possible exactly on a skycell boundary, where the last bit of ra % 360 decides
        cells = [skycell_wcs((int(r.projcell[0]), int(r.subcell[0]))) for r in (a, b)]
        for cell, (x, y) in zip(cells, [(a.x[0], a.y[0]), (b.x[0], b.y[0])]):
            back = cell.all_pix2world(x, y, 1)
            assert (
                abs(((float(back[0]) - ra + 180) % 360) - 180) < 1e-9
                and abs(float(back[1]) - dec) < 1e-9
            )


def test_every_inner_skycell_centre_locates_to_itself():
    # Edge skycells of a projection cell overlap the neighbouring projection cell, whose
    # cells may be the better ("farthest from the edge") choice; inner ones never are.
    grid = load_grid()
    cells = [
        (int(grid.projcell[r]) + ira, 10 * j + k)
        for r in range(len(grid))
        for ira in range(0, int(grid.nband[r]), max(1, int(grid.nband[r]) // 7))
        for j in range(2, 8)
        for k in range(2, 8)
    ]
    centres = np.array([skycell_center(c) for c in cells])
    got = locate(centres[:, 0], centres[:, 1])
    got_cells = list(zip(got.projcell, got.subcell))
    wrong = [(c, g) for c, g in zip(cells, got_cells) if c != g]
    assert not wrong, wrong[:5]


def test_frame_shape_and_dtypes():
    df = locate([10.0, 200.0, 0.0], [5.0, -45.0, -35.0])
    assert list(df.columns) == ["projcell", "subcell", "skycell", "x", "y", "in_footprint"]
    assert df.projcell.dtype == np.int64
    assert df.skycell[1] == "" and df.projcell[1] == -1 and np.isnan(df.x[1])
    assert not df.in_footprint[1]
    # zone 14 is in the tessellation but PS1 3pi has no images there
    assert df.projcell[2] < 635 and not df.in_footprint[2]


@pytest.mark.parametrize(
    "ra,dec,index",
    [([1.0, np.nan], [1.0, 2.0], 1), ([1.0, 2.0, 3.0], [0.0, 0.0, 91.0], 2), ([np.inf], [0.0], 0)],
)
def test_bad_positions_name_their_index(ra, dec, index):
    with pytest.raises(InvalidPositionError, match=rf"index {index}") as info:
        locate(ra, dec)
    assert info.value.rows == [index]
    assert isinstance(info.value, ValueError)


def test_scalar_and_public_api():
    assert ps1dask.locate(332.6, 2.2).skycell[0] == "skycell.1405.053"


# --- RA in [0, 360) across RA 0 ----------------------------------------------------------


def _cells_straddling_ra0() -> list[int]:
    """Projection cells whose area reaches both sides of RA 0, from the tessellation table:
    in every zone the cell with its tangent point at RA 0 and its eastern neighbour (the last
    of the zone, whose overlap reaches past RA 360) and the single polar cell."""
    grid = load_grid()
    cells = []
    for r in range(len(grid)):
        first, n = int(grid.projcell[r]), int(grid.nband[r])
        cells.extend({first, first + n - 1})
    return cells


def test_straddling_cells_cover_every_zone_and_the_pole():
    cells = _cells_straddling_ra0()
    assert 2643 in cells and 1322 in cells  # the pole cell; the issue's example
    assert len(cells) == 2 * (len(load_grid()) - 1) + 1


@pytest.mark.parametrize("projcell", _cells_straddling_ra0())
def test_skycell_centres_across_ra0_are_in_0_360(projcell):
    wrapped = 0
    for subcell in range(100):
        ra, dec = skycell_center((projcell, subcell))
        assert 0.0 <= ra < 360.0, (projcell, subcell, ra)
        # the same point as astropy's WCS of the skycell (astropy wraps RA to [0, 360))
        wcs = skycell_wcs((projcell, subcell))
        n1, n2 = wcs.pixel_shape
        want_ra, want_dec = (float(v) for v in wcs.all_pix2world(0.5 * (n1 - 1), 0.5 * (n2 - 1), 1))
        dra = (ra - want_ra + 180.0) % 360.0 - 180.0
        assert abs(dra) * np.cos(np.radians(dec)) < 1e-9 and abs(dec - want_dec) < 1e-9
        wrapped += ra > 180.0 and wcs.wcs.crval[0] == 0.0
    if skycell_wcs((projcell, 0)).wcs.crval[0] == 0.0 and projcell != 2643:
        assert wrapped >= 40  # the western half of a cell at RA 0 lies just below RA 360


def test_issue_example_centre_west_of_ra0():
    ra, dec = skycell_center("skycell.1322.098")
    assert abs(ra - (360.0 - 1.402)) < 1e-3 and 0.0 <= ra < 360.0
    # a position there locates back to that skycell
    assert locate(ra, dec).skycell[0] == "skycell.1322.098"
    assert locate(ra - 360.0, dec).skycell[0] == "skycell.1322.098"


@settings(max_examples=300, deadline=None)
@given(st.floats(-0.5, 0.5, allow_nan=False), footprint_dec)
def test_deprojection_near_ra0_is_in_0_360(dra, dec):
    from ps1dask.tessellation._core import deproject, project

    row = locate(dra, dec).iloc[0]
    geo = ps1dask.tessellation.skycell_geometry_of((int(row.projcell), int(row.subcell)))
    x, y = project(np.array([dra]), np.array([dec]), geo.crval1, geo.crval2)
    ra, back_dec = deproject(x, y, geo.crval1, geo.crval2)
    assert 0.0 <= float(ra[0]) < 360.0
    sep = ((float(ra[0]) - dra + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec))
    assert abs(sep) < 1e-9 and abs(float(back_dec[0]) - dec) < 1e-9


@given(st.floats(-1e4, 1e4, allow_nan=False))
def test_wrap_ra_property(ra):
    from ps1dask.tessellation._core import wrap_ra

    w = float(wrap_ra(ra))
    assert 0.0 <= w < 360.0
    assert abs((w - ra + 180.0) % 360.0 - 180.0) < 1e-9
