"""Decoded rows shared by the units of a process: right rows, each decoded once, bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ps1dask.fetch.decoded_rows import DecodedRows, _subtract, gather

N_ROWS, N_COLS = 300, 7
TRUTH = np.arange(N_ROWS * N_COLS, dtype=np.int32).reshape(N_ROWS, N_COLS)


class CountingDecoder:
    """Decodes rows of TRUTH and counts how often each row was decoded."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.per_row = np.zeros(N_ROWS, dtype=np.int64)
        self.calls: list[tuple[int, int]] = []
        self.delay = delay
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, a: int, b: int) -> np.ndarray:
        time.sleep(self.delay)
        if self.fail_on is not None and a <= self.fail_on < b:
            raise OSError(f"rows {a}..{b} could not be read")
        with self._lock:
            self.per_row[a:b] += 1
            self.calls.append((a, b))
        return TRUTH[a:b].copy()


runs = st.lists(
    st.tuples(st.integers(0, N_ROWS - 1), st.integers(1, 120)).map(
        lambda t: (t[0], min(N_ROWS, t[0] + t[1]))
    ),
    min_size=1,
    max_size=12,
)


def _run_at_once(ask: Callable[[int], None], n: int) -> None:
    """``ask(0) .. ask(n - 1)`` on threads of their own, all at once; waits for them."""
    threads = [threading.Thread(target=ask, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


@settings(max_examples=60, deadline=None)
@given(runs=runs)
def test_each_row_is_decoded_once_and_pieces_give_the_rows(runs):
    rows = DecodedRows(max_bytes=1 << 30)
    decode = CountingDecoder()
    for a, b in runs:
        pieces = rows.rows("file", a, b, decode)
        assert [p[0] for p in pieces] == sorted(p[0] for p in pieces)
        assert pieces[0][0] == a and pieces[-1][1] == b
        np.testing.assert_array_equal(gather(pieces, a, b), TRUTH[a:b])
        # any sub-run too (what a cutout takes from its run)
        mid = (a + b) // 2
        np.testing.assert_array_equal(gather(pieces, mid, b), TRUTH[mid:b])
    wanted = np.zeros(N_ROWS, dtype=bool)
    for a, b in runs:
        wanted[a:b] = True
    np.testing.assert_array_equal(decode.per_row, wanted.astype(np.int64))
    assert rows.rows_decoded == int(wanted.sum())


@settings(max_examples=40, deadline=None)
@given(runs=runs, budget_rows=st.integers(0, 200))
def test_a_small_budget_changes_what_is_kept_never_the_rows(runs, budget_rows):
    row_bytes = N_COLS * TRUTH.itemsize
    rows = DecodedRows(max_bytes=budget_rows * row_bytes)
    decode = CountingDecoder()
    for a, b in runs:
        np.testing.assert_array_equal(gather(rows.rows("f", a, b, decode), a, b), TRUTH[a:b])
        # what is kept stays within the budget, or is one piece larger than the budget
        largest = max((y - x) * row_bytes for x, y in decode.calls)
        assert rows.nbytes <= max(rows.max_bytes, largest)


def test_files_are_kept_apart():
    rows = DecodedRows(max_bytes=1 << 30)
    one, other = CountingDecoder(), CountingDecoder()
    rows.rows(("svc", "a.fits"), 0, 50, one)
    rows.rows(("svc", "b.fits"), 0, 50, other)
    rows.rows(("s3", "a.fits"), 0, 50, other)
    assert one.per_row[:50].tolist() == [1] * 50
    assert other.per_row[:50].tolist() == [2] * 50


def test_threads_wait_for_rows_being_decoded_rather_than_decode_them_again():
    rows = DecodedRows(max_bytes=1 << 30)
    decode = CountingDecoder(delay=0.05)
    asks = [(0, 120), (60, 180), (100, 220), (0, 220), (150, 300), (10, 20)] * 3
    got: dict[int, np.ndarray] = {}

    def ask(k: int) -> None:
        a, b = asks[k]
        got[k] = gather(rows.rows("f", a, b, decode), a, b)

    _run_at_once(ask, len(asks))
    assert len(got) == len(asks)
    for k, (a, b) in enumerate(asks):
        np.testing.assert_array_equal(got[k], TRUTH[a:b])
    assert decode.per_row.max() == 1 and decode.per_row.min() == 1


def test_a_failed_decode_raises_in_its_thread_and_others_retry_it():
    rows = DecodedRows(max_bytes=1 << 30)
    failing = CountingDecoder(delay=0.05, fail_on=5)
    working = CountingDecoder()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            rows.rows("f", 0, 100, failing)
        except OSError as err:
            errors.append(err)

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.01)  # the second asks while the first still decodes (and then fails)
    pieces = rows.rows("f", 10, 140, working)
    t.join(10)
    assert len(errors) == 1 and "could not be read" in str(errors[0])
    np.testing.assert_array_equal(gather(pieces, 10, 140), TRUTH[10:140])
    with pytest.raises(OSError, match="could not be read"):
        rows.rows("f", 0, 60, failing)  # rows 0..10 were never kept: decoded again, fail


@settings(max_examples=60, deadline=None)
@given(calls=st.lists(runs.map(lambda r: sorted(set(r))), min_size=1, max_size=5))
def test_prepare_is_told_exactly_the_rows_about_to_be_decoded(calls):
    """What a source that fetches ahead (S3) is asked for: each row once, before its
    decoding, and never a row this process already has."""
    rows = DecodedRows(max_bytes=1 << 30)
    decode = CountingDecoder()
    prepared = np.zeros(N_ROWS, dtype=np.int64)

    def prepare(claimed: list[tuple[int, int]]) -> None:
        for a, b in claimed:
            assert decode.per_row[a:b].sum() == 0  # told before it is decoded
            prepared[a:b] += 1

    for asked in calls:
        disjoint = [r for k, r in enumerate(asked) if all(r[0] >= q[1] for q in asked[:k])]
        found = rows.runs("f", disjoint, decode, prepare=prepare)
        for (a, b), pieces in zip(disjoint, found):
            np.testing.assert_array_equal(gather(pieces, a, b), TRUTH[a:b])
    np.testing.assert_array_equal(prepared, decode.per_row)
    assert prepared.max() <= 1


def test_threads_prepare_each_row_once():
    rows = DecodedRows(max_bytes=1 << 30)
    decode = CountingDecoder(delay=0.02)
    prepared = np.zeros(N_ROWS, dtype=np.int64)
    lock = threading.Lock()

    def prepare(claimed: list[tuple[int, int]]) -> None:
        time.sleep(0.03)  # a fetch's latency: others must not fetch these rows meanwhile
        with lock:
            for a, b in claimed:
                prepared[a:b] += 1

    asks = [[(0, 40), (60, 120)], [(30, 90)], [(100, 220)], [(0, 300)], [(200, 260)]] * 2
    got: dict[int, list[np.ndarray]] = {}

    def ask(k: int) -> None:
        found = rows.runs("f", asks[k], decode, prepare=prepare)
        got[k] = [gather(p, a, b) for (a, b), p in zip(asks[k], found)]

    _run_at_once(ask, len(asks))
    assert len(got) == len(asks)
    for k, runs_asked in enumerate(asks):
        for (a, b), values in zip(runs_asked, got[k]):
            np.testing.assert_array_equal(values, TRUTH[a:b])
    assert prepared.tolist() == [1] * N_ROWS
    assert decode.per_row.tolist() == [1] * N_ROWS


@given(
    start=st.integers(0, 50),
    length=st.integers(0, 50),
    taken=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 30)), max_size=6),
)
def test_subtract_leaves_exactly_the_rows_not_taken(start, length, taken):
    stop = start + length
    spans = [(a, a + n) for a, n in taken]
    free = _subtract(start, stop, spans)
    mask = np.zeros(200, dtype=bool)
    mask[start:stop] = True
    for a, b in spans:
        mask[a:b] = False
    got = np.zeros(200, dtype=bool)
    for a, b in free:
        assert a < b
        got[a:b] = True
    np.testing.assert_array_equal(got, mask)


def test_rows_are_shared_only_while_a_job_runs():
    from ps1dask.fetch.decoded_rows import begin_sharing, end_sharing, shared_rows

    assert shared_rows() is None
    begin_sharing()
    begin_sharing()  # two jobs on one cluster
    first = shared_rows()
    assert first is not None
    first.rows("f", 0, 10, CountingDecoder())
    end_sharing()
    assert shared_rows() is first  # the other job still runs
    end_sharing()
    assert shared_rows() is None
    begin_sharing()
    try:
        again = shared_rows()
        assert again is not None and again is not first and again.nbytes == 0
    finally:
        end_sharing()


# --- through a job: neighbouring units read each row once per worker process ------------


@pytest.fixture
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


def _boxes_of_one_skycell(emu, n: int, *, dec_spread: float, seed: int):
    """``n`` positions in skycell 1405.053 (RA within 0.1 deg of its centre, Dec within
    ``dec_spread``) and the name of its r stack, rendered (as the real service has it on
    disk)."""
    import pandas as pd
    import requests

    from ps1dask.conventions import image_filename
    from ps1dask.tessellation import SkycellId, skycell_center

    ra0, dec0 = skycell_center("1405.053")
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "ra": ra0 + rng.uniform(-0.1, 0.1, n),
            "dec": dec0 + rng.uniform(-dec_spread, dec_spread, n),
        }
    )
    filename = image_filename(SkycellId.parse("1405.053"), "r")
    requests.head(emu.url + filename, timeout=600).raise_for_status()
    return table, filename


@pytest.mark.parametrize("strategy", ["range", "s3"])
def test_a_dense_job_reads_each_row_once_per_worker(strategy, emu, dask_client, tmp_path):
    import requests
    import zarr

    import ps1dask
    from ps1dask.fetch.tiles import CompressedImageIndex
    from ps1dask.planning.cost import row_runs

    size, n = 64, 80
    # 80 boxes on nearly the same rows, 4 per unit: 20 units that need the same row tiles
    table, filename = _boxes_of_one_skycell(emu, n, dec_spread=0.002, seed=5)
    emu.reset_metrics()
    store = tmp_path / "dense.zarr"
    summary = ps1dask.cutouts(
        table,
        store,
        filters="r",
        size=size,
        strategy=strategy,
        service=emu.url,
        s3_endpoint=emu.url if strategy == "s3" else None,
        client=dask_client,
        progress=False,
        max_unit_positions=4,
    )
    assert summary.statuses == {"ok": n}, summary.errors
    metrics = emu.metrics()
    # s3: the rows' spans are all fetched before decoding, but only those of rows no
    # thread of the process has or is decoding
    sent = metrics["s3"]["bytes_sent"] if strategy == "s3" else metrics["bytes_sent"]

    def read(a: int, b: int) -> bytes:
        answer = requests.get(emu.url + filename, headers={"Range": f"bytes={a}-{b - 1}"})
        answer.raise_for_status()
        return answer.content

    index = CompressedImageIndex.read(read)
    group = zarr.open_group(str(store), mode="r")
    y0 = np.asarray(group["cutout_y0"][:])
    rows_bytes = sum(
        int(index.tile_sizes[a:b].sum()) for a, b in row_runs(y0, size, index.naxis2, size)
    )
    units_bytes = sum(  # what the units read when each decoded its own rows
        int(index.tile_sizes[a:b].sum())
        for k in range(0, n, 4)
        for a, b in row_runs(y0[k : k + 4], size, index.naxis2, size)
    )
    headers = index.heap_start + 65536  # the header and tile index each process reads
    workers = len(dask_client.scheduler_info()["workers"])
    assert units_bytes > 2 * workers * (rows_bytes + headers)  # the test can fail
    assert sent <= workers * (rows_bytes + headers), (sent, rows_bytes, headers, units_bytes)


def test_range_reads_the_jobs_pieces_of_rows_once_per_worker(emu, dask_client, tmp_path):
    """A dense ``range`` job sends one Range request per piece of needed rows and worker
    process, not one per unit; the pixels are those of reading each unit's own rows."""
    import dask.config
    import zarr
    from _jobs import assert_same_store

    import ps1dask
    from ps1dask.planning.cost import row_runs

    size, n, piece_rows = 64, 80, 512
    # 80 boxes over about 1,500 rows of one skycell, 4 per unit: 20 units
    table, _ = _boxes_of_one_skycell(emu, n, dec_spread=0.05, seed=6)
    workers = len(dask_client.scheduler_info()["workers"])
    range_requests = {}
    for rows in (1, piece_rows):  # pieces of one row: each unit reads its own rows
        emu.reset_metrics()
        with dask.config.set({"ps1dask.http.range-piece-rows": rows}):
            summary = ps1dask.cutouts(
                table,
                tmp_path / f"pieces-{rows}.zarr",
                filters="r",
                size=size,
                strategy="range",
                service=emu.url,
                client=dask_client,
                progress=False,
                max_unit_positions=4,
            )
        assert summary.statuses == {"ok": n}, summary.errors
        range_requests[rows] = emu.metrics()["range_requests"]
    assert_same_store(tmp_path / "pieces-1.zarr", tmp_path / f"pieces-{piece_rows}.zarr")

    y0 = np.asarray(zarr.open_group(str(tmp_path / "pieces-1.zarr"), mode="r")["cutout_y0"][:])
    runs = row_runs(y0, size, 1 << 30, max_gap=size)
    n_pieces = sum((b - 1) // piece_rows - a // piece_rows + 1 for a, b in runs)
    # besides its tiles, each worker process reads the file's header and tile index once
    # (one request, or none when it kept them from an earlier job)
    most = workers * (n_pieces + 1)
    assert 2 <= n_pieces and most < range_requests[1] - workers  # the test can fail
    assert range_requests[piece_rows] <= most, (range_requests, n_pieces)
