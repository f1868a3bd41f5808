"""Long-lived threads for the work units (ps1dask.threads): lanes, limits, errors, reuse, and
no thread started or ended per unit on a cluster's workers (CPython gh-106883)."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ps1dask.threads import DaemonThreads, Lane, run_in_lanes, shared_threads
from tests._jobs import cutout_job, emulator_knobs, positions_in_one_skycell


class _Gauge:
    """Counts tasks at once, per lane, and the highest count seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.ran: list[tuple[int, int]] = []

    def task(self, lane: int, i: int, hold: float = 0.0):
        def run() -> None:
            with self.lock:
                self.now[lane] = self.now.get(lane, 0) + 1
                self.peak[lane] = max(self.peak.get(lane, 0), self.now[lane])
                self.ran.append((lane, i))
            time.sleep(hold)
            with self.lock:
                self.now[lane] -= 1

        return run


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 12), st.integers(1, 5)), min_size=1, max_size=4),
)
def test_every_task_runs_once_and_no_lane_exceeds_its_limit(lanes):
    gauge = _Gauge()
    threads = DaemonThreads("test-lanes")
    run_in_lanes(
        [
            Lane([gauge.task(k, i, hold=0.002) for i in range(n)], limit)
            for k, (n, limit) in enumerate(lanes)
        ],
        threads,
    )
    assert sorted(gauge.ran) == sorted((k, i) for k, (n, _) in enumerate(lanes) for i in range(n))
    for k, (n, limit) in enumerate(lanes):
        assert gauge.peak.get(k, 0) <= limit
        # each lane's tasks start in their order
        assert [i for lane, i in gauge.ran if lane == k] == list(range(n))


def test_a_lane_runs_its_limit_at_once():
    gauge = _Gauge()
    run_in_lanes([Lane([gauge.task(0, i, hold=0.05) for i in range(8)], 4)], DaemonThreads("t"))
    assert gauge.peak[0] == 4


def test_the_first_error_stops_further_starts_and_waits_for_those_running():
    started: list[int] = []
    finished: list[int] = []
    lock = threading.Lock()

    def task(i: int):
        def run() -> None:
            with lock:
                started.append(i)
            if i == 2:
                raise KeyError("task 2")
            time.sleep(0.05)
            with lock:
                finished.append(i)

        return run

    with pytest.raises(KeyError, match="task 2"):
        run_in_lanes([Lane([task(i) for i in range(40)], 3)], DaemonThreads("t"))
    snapshot = (list(started), list(finished))
    time.sleep(0.2)
    # nothing runs on after the error is raised, and nothing started after it was seen
    assert (started, finished) == snapshot
    assert len(started) < 10
    assert sorted(finished) == sorted(i for i in started if i != 2)


def test_threads_are_started_once_and_reused():
    threads = DaemonThreads("t")
    for _ in range(5):
        run_in_lanes([Lane([time.sleep for _ in range(0)], 1)], threads)
        run_in_lanes([Lane([lambda: time.sleep(0.01) for _ in range(12)], 3)], threads)
    assert threads.started == 3
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("t_"))


def test_a_call_never_waits_behind_one_that_waits_for_it():
    threads = DaemonThreads("t")
    ready = threading.Event()
    done = threading.Event()
    threads.submit(lambda: done.set() if ready.wait(5) else None)
    threads.submit(ready.set)
    assert done.wait(5)
    assert threads.started == 2


def test_a_lane_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="limit must be >= 1"):
        Lane([], 0)


def test_shared_threads_are_one_per_name():
    assert shared_threads("ps1dask-test") is shared_threads("ps1dask-test")
    assert shared_threads("ps1dask-test") is not shared_threads("ps1dask-test-other")


def _ps1dask_threads() -> set[tuple[str, int]]:
    return {(t.name, t.ident or 0) for t in threading.enumerate() if t.name.startswith("ps1dask-")}


def _count_thread_starts(on: bool) -> int:
    """In a worker: count ``Thread.start`` calls from now on (``on``), or stop counting and
    return the count."""
    cls = threading.Thread
    if on:
        original = cls.start
        counter = {"starts": 0}

        def start(self: threading.Thread) -> None:
            counter["starts"] += 1
            original(self)

        cls._test_counting = (original, counter)  # type: ignore[attr-defined]
        cls.start = start  # type: ignore[method-assign]
        return 0
    original, counter = cls._test_counting  # type: ignore[attr-defined]
    cls.start = original  # type: ignore[method-assign]
    del cls._test_counting  # type: ignore[attr-defined]
    return int(counter["starts"])


@pytest.mark.timeout(240)
def test_a_job_on_a_cluster_ends_no_thread_and_starts_few(job_emulator, dask_client, tmp_path):
    """Dask's worker profiler can deadlock a worker's event loop against a thread that starts
    or ends (CPython 3.11, gh-106883): a job's units run on threads that outlive them."""
    table = positions_in_one_skycell(24, seed=51)
    url = job_emulator.url
    with emulator_knobs(job_emulator, latency=0.02):
        cutout_job(table, tmp_path / "a.zarr", url, dask_client, filters="gr", size=16, unit=2)
        before = dask_client.run(_ps1dask_threads)
        dask_client.run(_count_thread_starts, True)
        try:
            summary = cutout_job(
                table, tmp_path / "b.zarr", url, dask_client, filters="gr", size=16, unit=2
            )
        finally:
            starts = dask_client.run(_count_thread_starts, False)
        after = dask_client.run(_ps1dask_threads)
    assert summary.units_run == 12
    for worker, threads in before.items():
        assert threads <= after[worker], f"threads of {worker} ended: {threads - after[worker]}"
    # a pool per unit started up to 10 threads for each of the ~6 units a worker ran, and a
    # thread per lease acquire
    assert sum(starts.values()) <= 8, starts
