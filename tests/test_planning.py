"""Planning (pure): ordering, chunk-aligned work units, fitscut boxes, cost model."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ps1dask.conventions import cutout_box, position_pixel
from ps1dask.exceptions import InvalidParameterError
from ps1dask.planning import ServiceProfile, choose_strategy, fitscut_boxes, plan_stack_job
from ps1dask.planning.cost import row_runs, strategy_costs
from ps1dask.positions import read_positions
from ps1dask.storage import STATUS
from ps1dask.tessellation import HEADER_CDELT_DEG, locate, skycell_wcs

URL = "http://127.0.0.1:1"


def _table(n: int, seed: int = 1, dense: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    if dense:
        ra, dec = rng.uniform(150.0, 151.0, n), rng.uniform(2.0, 3.0, n)
    else:
        ra = rng.uniform(0, 360, n)
        dec = np.degrees(np.arcsin(rng.uniform(-0.7, 1.0, n)))
    return pd.DataFrame({"ra": ra, "dec": dec, "name": [f"obj{i}" for i in range(n)]})


def _header(projcell: int, subcell: int) -> dict:
    w = skycell_wcs((projcell, subcell))
    return {
        "CRVAL1": float(w.wcs.crval[0]),
        "CRVAL2": float(w.wcs.crval[1]),
        "CRPIX1": float(w.wcs.crpix[0]),
        "CRPIX2": float(w.wcs.crpix[1]),
        "CDELT1": HEADER_CDELT_DEG,
        "CDELT2": HEADER_CDELT_DEG,
        "PC001001": -1.0,
        "PC001002": 0.0,
        "PC002001": 0.0,
        "PC002002": 1.0,
    }


def test_boxes_equal_the_per_header_rule():
    df = _table(300)
    loc = locate(df.ra, df.dec)
    ok = loc.projcell.to_numpy() >= 0
    ra, dec = df.ra.to_numpy()[ok], df.dec.to_numpy()[ok]
    pc, sc = loc.projcell.to_numpy()[ok], loc.subcell.to_numpy()[ok]
    *_, x0, y0 = fitscut_boxes(ra, dec, pc, sc, 240, 120)
    for i in range(len(ra)):
        xc, yc = position_pixel(_header(int(pc[i]), int(sc[i])), ra[i], dec[i])
        box = cutout_box(xc, yc, (240, 120))
        assert (box.x0, box.y0) == (x0[i], y0[i])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 400), st.integers(1, 64), st.booleans())
def test_units_own_whole_chunks_and_cover_the_footprint(n, unit_size, dense):
    plan = plan_stack_job(
        read_positions(_table(n, seed=n, dense=dense)),
        filters="gr",
        size=64,
        service_url=URL,
        max_unit_positions=unit_size,
    )
    chunk = plan.chunk
    covered = np.zeros(n, dtype=bool)
    for unit in plan.units:
        assert unit.start % chunk == 0
        assert unit.stop % chunk == 0 or unit.stop == n
        assert unit.n_positions <= max(unit_size, chunk)
        assert not covered[unit.start : unit.stop].any()  # one writer per chunk
        covered[unit.start : unit.stop] = True
    inside = plan.initial_status[:, 0] != STATUS["outside_footprint"]
    assert covered[inside].all()  # every footprint position has a unit
    # store order is grouped by skycell and maps back to every input row exactly once
    assert sorted(plan.order.tolist()) == list(range(n))
    keys = [s for s in plan.positions.skycell[inside]]
    assert keys == sorted(keys)


def test_outside_positions_get_a_status_and_no_unit():
    df = pd.DataFrame({"ra": [10.0, 20.0, 150.2], "dec": [-60.0, -35.0, 2.5]})
    plan = plan_stack_job(read_positions(df), filters="g", size=32, service_url=URL)
    assert plan.n_outside == 2
    assert (plan.initial_status[plan.order != 2] == STATUS["outside_footprint"]).all()
    assert sum(u.fetch.sum() for u in plan.units) == 1


def test_warp_types_are_refused_with_advice():
    with pytest.raises(InvalidParameterError, match="warps"):
        plan_stack_job(read_positions(_table(3)), types=("warp",), service_url=URL)


def test_task_count_grows_with_units_not_positions():
    # (time and memory for 10^6 positions are measured by `ps1dask bench scale`)
    plan = plan_stack_job(read_positions(_table(100_000, seed=3)), service_url=URL)
    assert len(plan.units) <= 100_000 // 10
    assert sum(u.n_positions for u in plan.units) + plan.n_outside >= 100_000 - plan.chunk


# --- cost model ----------------------------------------------------------------------


def test_row_runs_merge_and_clip():
    assert row_runs([0, 10, 500], 100, 6000, max_gap=0) == [(0, 110), (500, 600)]
    assert row_runs([-50, 5990], 100, 6000) == [(0, 50), (5990, 6000)]


def test_cost_model_picks_cutouts_when_sparse_and_files_when_dense():
    profile = ServiceProfile(
        latency_s=0.2,
        bandwidth_bps=200e6,
        concurrency=10,
        cores=2,
        file_bytes=60e6,
        image_rows=6243,
        image_cols=6240,
    )
    assert choose_strategy(1, 240, 240, [(1000, 1240)], profile) == "cutout"
    dense_runs = [(0, 6243)]
    assert choose_strategy(300, 240, 240, dense_runs, profile) in ("skycell", "range")
    costs = strategy_costs(300, 240, 240, dense_runs, profile)
    assert costs["cutout"] > 5 * min(costs["skycell"], costs["range"])
    # a cached file makes the skycell strategy the cheapest of the local ones
    assert choose_strategy(300, 240, 240, dense_runs, profile, cached=True) == "skycell"


def test_range_is_charged_a_file_index_once_per_process_not_once_per_group():
    """The range strategy sends one request for a file's headers and tile index, and only in
    a process that has not read that file's index yet (it keeps the indexes it read): a
    group of a file already indexed costs its runs of rows alone."""
    p = ServiceProfile(
        latency_s=0.2,
        bandwidth_bps=1e9,
        concurrency=10,
        cores=2,
        file_bytes=60e6,
        image_rows=6000,
        image_cols=6000,
        decode_pixels_per_s=1e18,  # no CPU terms: the requests alone
        receive_bytes_per_s=1e18,
    )
    runs = [(0, 240), (1000, 1240)]  # two runs of rows: two requests, 480 rows of 10 kB
    first = strategy_costs(10, 240, 240, runs, p)["range"]
    again = strategy_costs(10, 240, 240, runs, p, indexed=True)["range"]
    assert again == pytest.approx((2 * 0.2 + 480 * 10e3 / 1e9) / 10)
    assert first == pytest.approx((3 * 0.2 + 480 * 10e3 / 1e9) / 10)  # + one index request
    # Where a whole file costs little more than a request (a fast network, free CPU), a
    # file not indexed yet goes to skycell (one request and the file) and an indexed one to
    # range (one request and its rows): the index request decides.
    fast = dataclasses.replace(p, bandwidth_bps=10e9)
    one_run = [(0, 1000)]
    costs = strategy_costs(30, 240, 240, one_run, fast)
    assert costs["skycell"] == pytest.approx((0.2 + 60e6 / 10e9) / 10)  # 0.0206 s
    assert costs["range"] == pytest.approx((2 * 0.2 + 1000 * 10e3 / 10e9) / 10)  # 0.0401 s
    assert choose_strategy(30, 240, 240, one_run, fast) == "skycell"
    assert strategy_costs(30, 240, 240, one_run, fast, indexed=True)["range"] == pytest.approx(
        (0.2 + 1000 * 10e3 / 10e9) / 10  # 0.0201 s
    )
    assert choose_strategy(30, 240, 240, one_run, fast, indexed=True) == "range"


def test_cost_model_counts_receiving_whole_files_on_fast_networks():
    """On loopback or a LAN the slots barely see a 60 MB file, but the cores still receive
    it: a couple of cutouts in a skycell stay server cutouts."""
    fast = ServiceProfile(
        latency_s=0.2,
        cutout_latency_s=0.2,
        bandwidth_bps=10e9,
        concurrency=10,
        cores=4,
        file_bytes=60e6,
        image_rows=6250,
        image_cols=6248,
    )
    assert choose_strategy(2, 240, 240, [(0, 480)], fast) == "cutout"
    assert choose_strategy(16, 240, 240, [(0, 3840)], fast) == "skycell"
    costs = strategy_costs(2, 240, 240, [(0, 480)], fast)
    free_cpu = strategy_costs(
        2, 240, 240, [(0, 480)], dataclasses.replace(fast, receive_bytes_per_s=1e15)
    )
    assert costs["skycell"] - free_cpu["skycell"] == pytest.approx(60e6 / 400e6 / 4)


def test_unit_work_counts_the_rows_each_skycell_spans_and_the_cutout_pixels():
    from ps1dask.planning import unit_work_pixels
    from ps1dask.planning.plan import CUTOUT_PIXEL_COST

    plan = plan_stack_job(
        read_positions(_table(300, dense=True)), filters="r", size=50, service_url=URL
    )
    for unit in plan.units:
        rows = 0
        for _, m in unit.skycell_groups():
            # rows any box touches, plus gaps of <= 64 rows between them (read through, as
            # the cost model does)
            touched = sorted({r for y in unit.y0[m].tolist() for r in range(y, y + 50)})
            touched = [r for r in touched if 0 <= r < 6250]
            gaps = [b - a - 1 for a, b in itertools.pairwise(touched)]
            rows += len(touched) + sum(g for g in gaps if g <= 64)
        expected = rows * 6250 + int(unit.fetch.sum()) * 50 * 50 * CUTOUT_PIXEL_COST
        assert unit_work_pixels(unit, 50, 50) == expected
    # one box alone: its own height of rows, and its pixels
    one = plan.units[0]
    single = dataclasses.replace(one, fetch=np.arange(one.n_positions) == 0)
    assert unit_work_pixels(single, 50, 50) == 50 * 6250 + 2500 * 4.0


def test_a_warp_unit_counts_its_unit_once_per_listed_warp_file():
    from ps1dask.fetch.warp import WarpUnit
    from ps1dask.planning import ServiceProfile, unit_work_pixels

    plan = plan_stack_job(
        read_positions(_table(300, dense=True)), filters="r", size=50, service_url=URL
    )
    unit = max(plan.units, key=lambda u: len(u.skycell_groups()))
    cells = [cell for cell, _ in unit.skycell_groups()]
    profile = ServiceProfile()
    epochs = {
        (*cell, band): np.arange(3 + i + k, dtype=float)
        for i, cell in enumerate(cells)
        for k, band in enumerate("gr")
    }
    per_cell = {
        cell: unit_work_pixels(
            dataclasses.replace(
                unit,
                fetch=unit.fetch
                & (unit.projcell * 1000 + unit.subcell == cell[0] * 1000 + cell[1]),
            ),
            50,
            50,
            profile,
        )
        for cell in cells
    }
    expected = sum(per_cell[cell] * ((3 + i) + (4 + i)) for i, cell in enumerate(cells))
    assert WarpUnit(unit, epochs).work_pixels(50, 50, profile) == pytest.approx(expected)
    assert unit.work_pixels(50, 50, profile) == pytest.approx(sum(per_cell.values()))
    # a skycell with no warp listed costs nothing
    assert WarpUnit(unit, {}).work_pixels(50, 50, profile) == 0.0
