"""The CPU accounting the S3 benchmarks print: per process, serial parts, scaling bound."""

from __future__ import annotations

import os
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ps1dask.bench.process_cpu import (
    JobAccount,
    job_account,
    process_cpu_seconds,
    scaling_bound,
    thread_cpu_seconds,
)


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _burn_then_pid(seconds: float) -> int:
    _burn(seconds)
    return os.getpid()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_thread_cpu_seconds_sees_this_process_threads():
    before_all = thread_cpu_seconds(os.getpid(), "")
    before = process_cpu_seconds(os.getpid())
    _burn(0.3)
    after_all = thread_cpu_seconds(os.getpid(), "")
    assert after_all - before_all >= 0.25
    # no live thread of ours is named like the S3 runtime's unless obstore made it
    assert thread_cpu_seconds(os.getpid(), "no-such-thread-name") == 0.0
    assert process_cpu_seconds(os.getpid()) - before >= 0.25


@given(
    st.floats(0.1, 100.0),
    st.floats(0.0, 10.0),
    st.lists(st.floats(0.0, 100.0), min_size=1, max_size=4),
    st.floats(0.0, 10.0),
    st.integers(1, 64),
)
def test_account_totals_and_bound(wall, client, workers, emulator, cores):
    one = JobAccount(cores=cores, wall=wall, client=client, workers=workers, emulator=emulator)
    assert one.total == pytest.approx(client + sum(workers) + emulator)
    assert one.available == pytest.approx(cores * wall)
    assert one.busy_cores == pytest.approx(one.total / wall)
    if one.total > 0:
        # a second run needing the same CPU cannot beat one run's time by more than
        # the cores it could keep busy but did not
        assert scaling_bound(one, one) == pytest.approx(cores / one.busy_cores)
    assert "CPU-s" in one.describe()


def test_job_account_measures_workers_and_serial_parts(dask_client):
    with job_account(dask_client, os.getpid()) as account:
        time.sleep(0.3)  # the "planning" before any unit
        futures = [dask_client.submit(_burn_then_pid, 0.4, pure=False) for _ in range(2)]
        pids = {f.result() for f in futures}
    workers = set(dask_client.run(os.getpid).values())
    assert pids <= workers and len(account.workers) == len(workers)
    assert account.units == 2
    assert sum(account.workers) >= 0.7  # the two tasks' CPU, wherever they ran
    assert 0.25 <= account.before_first_unit < account.wall
    assert 0.0 <= account.after_last_unit < account.wall
    assert account.emulator == pytest.approx(account.client, abs=0.5)  # the same process here


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_pinning_a_process_pins_every_thread_and_its_later_threads():
    import subprocess

    from ps1dask.bench.process_cpu import pin_process_to_core

    core = max(os.sched_getaffinity(0))
    code = (
        "import os, sys, threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "print('up', flush=True); sys.stdin.readline()\n"
        "t = threading.Thread(target=time.sleep, args=(30,), daemon=True); t.start()\n"
        "print(sorted(os.sched_getaffinity(t.native_id)), flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "up"
        assert pin_process_to_core(child.pid, core) == 2  # the main thread and the sleeper
        tids = os.listdir(f"/proc/{child.pid}/task")
        assert all(os.sched_getaffinity(int(t)) == {core} for t in tids)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == str([core])  # a thread started after
    finally:
        child.kill()
        child.wait()
