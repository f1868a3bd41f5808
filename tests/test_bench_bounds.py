"""The bounds the benchmarks print: what they count is what the job needs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ps1dask.bench.bounds import decode_bound, files_of_plan, slot_bound_seconds
from ps1dask.planning import plan_stack_job
from ps1dask.planning.cost import row_runs
from ps1dask.positions import read_positions


@given(st.integers(0, 10**6), st.floats(0.0, 10.0))
def test_slot_bound_is_ten_requests_per_latency(n, latency):
    assert slot_bound_seconds(n, latency) == pytest.approx(n * latency / 10)


def test_files_of_plan_lists_each_box_once_per_band():
    rng = np.random.default_rng(5)
    table = pd.DataFrame({"ra": rng.uniform(180.0, 180.5, 50), "dec": rng.uniform(10.0, 10.5, 50)})
    plan = plan_stack_job(read_positions(table), filters="gr", size=64, service_url="http://x")
    files = files_of_plan(plan.units, "gr")
    assert sum(len(v) for v in files.values()) == 2 * 50
    assert {name.split(".stk.")[1][0] for name in files} == {"g", "r"}
    assert all(name.startswith("/rings.v3.skycell/") for name in files)


def test_decode_bound_decodes_the_union_of_needed_rows_once(job_emulator):
    job_emulator.reset_metrics()
    name = "/rings.v3.skycell/1784/059/rings.v3.skycell.1784.059.stk.r.unconv.fits"
    y0s = [100, 130, 3000, 4000]  # two overlapping boxes, two far ones
    bound = decode_bound(job_emulator.url, {name: y0s}, width=64, height=64, chunk=2, processes=1)
    expected_rows = sum(b - a for a, b in row_runs(y0s, 64, 5000, max_gap=64))
    assert bound.rows_decoded == expected_rows == (194 - 100) + 64 + 64
    assert (bound.n_files, bound.n_cutouts) == (1, 4)
    assert bound.seconds == bound.fetch_decode_s + bound.write_s > 0
    # only Range reads of that one file: header/index plus one read per run at most
    metrics = job_emulator.metrics()
    assert 2 <= metrics["requests_total"] <= 3 + 3
