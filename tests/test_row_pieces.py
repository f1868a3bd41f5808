"""The rows a ``range`` read claims for each box: the job's pieces of an image (pure)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ps1dask.planning.cost import row_runs
from ps1dask.planning.row_pieces import job_row_pieces, piece_rows_for

ROW_BYTES = 6250 * 4  # a decoded row of 6,250 int32 values

BIG = 1 << 30  # more rows than any image: row_runs then clips nothing


def reference_claim(y0: list[int], k: int, height: int, piece_rows: int) -> tuple[int, int]:
    """Box ``k``'s claim from the definition: the job's runs of the box's image (row_runs,
    merged within a box height) cut at multiples of ``piece_rows``; the smallest union of
    those pieces that holds the box."""
    runs = row_runs(y0, height, BIG, max_gap=height)
    a, b = y0[k], y0[k] + height
    ((start, stop),) = [(s, e) for s, e in runs if s <= a and b <= e]
    bounds = {start, stop, *range(-(-start // piece_rows) * piece_rows, stop, piece_rows)}
    return max(x for x in bounds if x <= a), min(x for x in bounds if x >= b)


def test_examples():
    # image 1: boxes at rows 0 and 100 form one run [0, 220); the box at 1990 its own
    # run [1990, 2110), cut at 2048 (the box touches both pieces); image 2 apart
    lo, hi = job_row_pieces([1, 1, 1, 2], [0, 100, 1990, 5], 120, 1024)
    assert lo.tolist() == [0, 0, 1990, 5]
    assert hi.tolist() == [220, 220, 2110, 125]
    y0 = np.arange(0, 2000, 100)
    lo, hi = job_row_pieces(np.full(len(y0), 7), y0, 120, 1024)
    # one run [0, 2020): pieces [0, 1024) and [1024, 2020); the box at 1000 touches both
    claims = dict(zip(y0.tolist(), zip(lo.tolist(), hi.tolist())))
    assert claims[0] == claims[900] == (0, 1024)
    assert claims[1000] == (0, 2020)
    assert claims[1100] == claims[1900] == (1024, 2020)


@given(
    boxes=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3000)), min_size=1, max_size=40),
    height=st.integers(1, 300),
    piece_rows=st.integers(1, 1500),
    shuffle_seed=st.integers(0, 2**32 - 1),
)
def test_claims_are_the_job_pieces_a_box_touches(boxes, height, piece_rows, shuffle_seed):
    rng = np.random.default_rng(shuffle_seed)
    boxes = [boxes[i] for i in rng.permutation(len(boxes))]  # any order, not only the plan's
    image = np.array([b[0] for b in boxes])
    y0 = np.array([b[1] for b in boxes])
    lo, hi = job_row_pieces(image, y0, height, piece_rows)
    for k in range(len(boxes)):
        same = [int(y) for y in y0[image == image[k]]]
        expected = reference_claim(same, same.index(int(y0[k])), height, piece_rows)
        assert (int(lo[k]), int(hi[k])) == expected
        assert lo[k] <= y0[k] and y0[k] + height <= hi[k]


@given(
    y0=st.lists(st.integers(0, 5000), min_size=2, max_size=60),
    height=st.integers(1, 200),
    piece_rows=st.integers(16, 2048),
)
def test_claims_of_one_image_coincide_or_share_only_whole_pieces(y0, height, piece_rows):
    # so that a row is decoded once per process: two units never claim parts of one piece
    lo, hi = job_row_pieces(np.zeros(len(y0)), y0, height, piece_rows)
    ends = {*lo.tolist(), *hi.tolist()}
    for a, b in zip(lo.tolist(), hi.tolist()):
        assert not any(a < e < b and e % piece_rows for e in ends)


def test_a_piece_of_one_row_is_the_box_itself():
    y0 = np.array([0, 50, 400])
    lo, hi = job_row_pieces(np.zeros(3), y0, 64, 1)
    assert lo.tolist() == y0.tolist() and hi.tolist() == (y0 + 64).tolist()


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="piece_rows"):
        job_row_pieces([0], [0], 10, 0)
    with pytest.raises(ValueError, match="one length"):
        job_row_pieces([0, 1], [0], 10, 16)
    lo, hi = job_row_pieces([], [], 10, 16)
    assert lo.size == hi.size == 0


def test_pieces_shrink_to_fit_the_decoded_rows_budget():
    budget = 512 << 20
    assert piece_rows_for(5, 1024, budget, ROW_BYTES) == 1024  # grizy stacks: 5 x 25 MB pieces
    rows = piece_rows_for(25, 1024, budget, ROW_BYTES)  # 5 filters x 5 image types
    assert 100 < rows < 1024
    assert 25 * rows * ROW_BYTES <= budget // 2 < 25 * (rows + 1) * ROW_BYTES
    assert piece_rows_for(10_000, 1024, budget, ROW_BYTES) == 1


def test_only_stack_plans_carry_pieces():
    import pandas as pd

    from ps1dask.planning import plan_stack_job
    from ps1dask.planning.plan import plan_positions
    from ps1dask.positions import read_positions
    from ps1dask.tessellation import skycell_center

    ra0, dec0 = skycell_center("1405.053")
    table = pd.DataFrame({"ra": ra0 + np.linspace(-0.1, 0.1, 40), "dec": np.full(40, dec0)})
    stack = plan_stack_job(read_positions(table), filters="r", size=64, service_url="x")
    unit = stack.units[0]
    assert unit.read_lo is not None and unit.read_hi is not None
    assert (unit.read_lo <= unit.y0).all() and (unit.y0 + 64 <= unit.read_hi).all()
    plain = plan_positions(read_positions(table), 64, 64, chunk=8)  # warps, mosaics
    assert all(u.read_lo is None and u.read_hi is None for u in plain.units)
