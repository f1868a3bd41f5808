"""Long-lived daemon threads (ps1dask.threads): reuse, no cap, and no lease thread started or
ended per request on a cluster's workers (CPython gh-106883)."""

from __future__ import annotations

import threading
import time

import pytest

from ps1dask.threads import DaemonThreads, shared_threads
from tests._jobs import cutout_job, emulator_knobs, positions_in_one_skycell


def test_threads_are_started_once_and_reused():
    threads = DaemonThreads("t")
    for _ in range(5):
        done = [threading.Event() for _ in range(3)]
        for event in done:
            threads.submit(lambda event=event: (time.sleep(0.01), event.set()))
        assert all(event.wait(5) for event in done)
        time.sleep(0.02)  # the threads are idle again
    assert threads.started == 3
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("t_"))


def test_a_failing_call_leaves_its_thread_serving():
    threads = DaemonThreads("t")
    threads.submit(lambda: {}["missing"])
    time.sleep(0.05)
    done = threading.Event()
    threads.submit(done.set)
    assert done.wait(5)
    assert threads.started == 1


def test_a_call_never_waits_behind_one_that_waits_for_it():
    threads = DaemonThreads("t")
    ready = threading.Event()
    done = threading.Event()
    threads.submit(lambda: done.set() if ready.wait(5) else None)
    threads.submit(ready.set)
    assert done.wait(5)
    assert threads.started == 2


def test_shared_threads_are_one_per_name():
    assert shared_threads("ps1dask-test") is shared_threads("ps1dask-test")
    assert shared_threads("ps1dask-test") is not shared_threads("ps1dask-test-other")


def _lease_threads() -> set[tuple[str, int]]:
    return {
        (t.name, t.ident or 0) for t in threading.enumerate() if t.name.startswith("ps1dask-lease")
    }


def _count_thread_starts(on: bool) -> int:
    """In a worker: count ``Thread.start`` calls of lease threads from now on (``on``), or
    stop counting and return the count."""
    cls = threading.Thread
    if on:
        original = cls.start
        counter = {"starts": 0}

        def start(self: threading.Thread) -> None:
            if self.name.startswith("ps1dask-lease"):
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
def test_a_job_on_a_cluster_starts_no_lease_thread_per_request(job_emulator, dask_client, tmp_path):
    """Dask's worker profiler can deadlock a worker's event loop against a thread that starts
    or ends (CPython 3.11, gh-106883): the lease acquires reuse long-lived threads."""
    table = positions_in_one_skycell(24, seed=51)
    url = job_emulator.url
    with emulator_knobs(job_emulator, latency=0.02):
        cutout_job(table, tmp_path / "a.zarr", url, dask_client, filters="gr", size=16, unit=2)
        before = dask_client.run(_lease_threads)
        dask_client.run(_count_thread_starts, True)
        try:
            summary = cutout_job(
                table, tmp_path / "b.zarr", url, dask_client, filters="gr", size=16, unit=2
            )
        finally:
            starts = dask_client.run(_count_thread_starts, False)
        after = dask_client.run(_lease_threads)
    assert summary.units_run == 12
    for worker, threads in before.items():
        assert threads <= after[worker], f"threads of {worker} ended: {threads - after[worker]}"
    # a thread per lease acquire: one per request sent through the scheduler (48)
    assert sum(starts.values()) <= 8, starts
