"""The global request limit when the cluster falls apart (issue 10).

(a) A real `dask scheduler` and two `dask worker` processes run `ps1dask cutouts`; the
    scheduler is killed with SIGKILL mid-job. No scheduler holds leases any more, so from a
    few seconds after its death no request may reach the service: the workers must neither
    fall back to a process-local semaphore nor go on requesting.
(b) Only the main process of `ps1dask cutouts` on its own LocalCluster is killed (what the
    OOM killer or a crashed notebook kernel does, not the process group). Its worker
    processes must exit within seconds and stop requesting, and a rerun at once must complete
    within the limit and give the store of an uninterrupted run.

The emulator's request counter is the witness: requests that reach it are counted whatever
the client did. The emulator runs in this process; every other process is one we started
(killed by PID, never by name).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import distributed
import psutil
import pytest
from _dask_cli import scheduler_cmd, start_logged, worker_cmd
from _jobs import (
    assert_same_store,
    cutout_job,
    cutouts_cmd,
    emulator_knobs,
    free_port,
    positions_in_one_skycell,
    wait_for,
)

#: Seconds after a kill from which no request may arrive at the service.
QUIET_AFTER = 5.0


def _cutouts_cmd(csv: Path, store: Path, url: str, *where: str, size: int, unit: int) -> list[str]:
    return cutouts_cmd(csv, store, url, "--unit-size", str(unit), *where, size=size)


def _requests(emu: object) -> int:
    return int(emu.metrics()["requests_total"])  # type: ignore[attr-defined]


def _requests_after(emu: object, killed_at: float, until: float) -> tuple[int, int]:
    """(requests counted QUIET_AFTER s after the kill, requests counted ``until`` s after)."""
    time.sleep(max(killed_at + QUIET_AFTER - time.monotonic(), 0.0))
    first = _requests(emu)
    time.sleep(max(killed_at + until - time.monotonic(), 0.0))
    return first, _requests(emu)


@contextlib.contextmanager
def _reaped(procs: list[psutil.Process]) -> Iterator[None]:
    """On the way out, SIGKILL whichever of ``procs`` (PIDs we recorded) still run."""
    try:
        yield
    finally:
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=10)


@pytest.fixture()
def emu(job_emulator):
    with emulator_knobs(job_emulator, latency=0.0):
        job_emulator.reset_metrics()
        yield job_emulator


# --------------------------------------------------------------------------- (a)


@pytest.mark.timeout(180)
def test_no_request_after_the_scheduler_dies(emu, tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    started: list[subprocess.Popen] = []
    scheduler = start_logged(scheduler_cmd(port), tmp_path / "scheduler.log")
    started.append(scheduler)
    tracked = [psutil.Process(scheduler.pid)]
    with _reaped(tracked):
        for i in (1, 2):
            worker = start_logged(worker_cmd(address, f"w{i}"), tmp_path / f"worker{i}.log")
            started.append(worker)
            tracked.append(psutil.Process(worker.pid))
        with distributed.Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=90)
        # the nannies' worker processes too: they are ours to clean up
        tracked.extend(c for p in list(tracked) for c in p.children(recursive=True))

        table = positions_in_one_skycell(400, seed=31)
        csv = tmp_path / "positions.csv"
        table.to_csv(csv, index=False)
        total = 2 * len(table)
        with emulator_knobs(emu, latency=0.2):
            emu.reset_metrics()
            job = start_logged(
                _cutouts_cmd(
                    csv, tmp_path / "s.zarr", emu.url, "--scheduler", address, size=64, unit=64
                ),
                tmp_path / "job.log",
            )
            tracked.append(psutil.Process(job.pid))
            wait_for(lambda: _requests(emu) >= 150, "150 requests served", 120, job)
            os.kill(scheduler.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            at_kill = _requests(emu)
            scheduler.wait(timeout=10)
            quiet_from, quiet_to = _requests_after(emu, killed_at, until=10.0)
            metrics = emu.metrics()
        assert at_kill < total - 100, "the job was nearly done when the scheduler died"
        assert quiet_to == quiet_from, (
            f"{quiet_to - quiet_from} requests arrived {QUIET_AFTER:g} to 10 s after the "
            f"scheduler died ({quiet_from - at_kill} in the first {QUIET_AFTER:g} s)"
        )
        assert metrics["max_in_flight"] <= 10, metrics
        assert metrics["refused_over_limit"] == 0, metrics
        # the job says what happened, without a traceback
        job.wait(timeout=90)
        print(f"job exited {time.monotonic() - killed_at:.1f} s after the kill")
        log = (tmp_path / "job.log").read_text()
        assert job.returncode == 1, log[-3000:]
        assert "error: stopped" in log and "Traceback" not in log, log[-3000:]


# --------------------------------------------------------------------------- (b)

B_SIZE = 48
B_UNIT = 16
B_POSITIONS = 96


@pytest.fixture(scope="module")
def b_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("main-kill")
    table = positions_in_one_skycell(B_POSITIONS, seed=32)
    csv = root / "positions.csv"
    table.to_csv(csv, index=False)
    return csv


@pytest.fixture(scope="module")
def b_reference(b_table, job_emulator, dask_client):
    """The store of an uninterrupted run."""
    store = b_table.parent / "reference.zarr"
    cutout_job(b_table, store, job_emulator.url, dask_client, size=B_SIZE, unit=B_UNIT)
    return store


def _children(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _in_session(proc: subprocess.Popen) -> list[psutil.Process]:
    """The processes left in ``proc``'s session (it was started in a new one), ``proc``
    excepted: its descendants, also those orphaned by its death."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.pid != proc.pid and os.getsid(p.pid) == proc.pid:
                found.append(p)
    return found


#: When to kill: a condition on (children of the main process, requests served).
KILL_MOMENTS = {
    # worker processes are being spawned, no request has been sent yet
    "start-up": lambda children, served: len(children) >= 1 and served == 0,
    "early": lambda children, served: served >= 10,
    "mid-job": lambda children, served: served >= B_POSITIONS,  # half of 2 filters
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("moment", list(KILL_MOMENTS))
def test_killing_only_the_main_process(moment, emu, b_table, b_reference, tmp_path):
    store = tmp_path / "s.zarr"
    cmd = _cutouts_cmd(b_table, store, emu.url, "--workers", "2", size=B_SIZE, unit=B_UNIT)
    tracked: list[psutil.Process] = []
    with _reaped(tracked), emulator_knobs(emu, latency=0.1):
        emu.reset_metrics()
        job = start_logged(cmd, tmp_path / "job.log")
        tracked.append(psutil.Process(job.pid))
        condition = KILL_MOMENTS[moment]
        children: list[psutil.Process] = []

        def ready() -> bool:
            children[:] = _children(job)
            return condition(children, _requests(emu))

        wait_for(ready, f"the {moment} kill moment", 120, job)
        tracked.extend(children)
        os.kill(job.pid, signal.SIGKILL)  # the main process only, not its group
        killed_at = time.monotonic()
        emu.reset_metrics()  # max_in_flight from the kill on
        job.wait(timeout=10)
        # also any child spawned between the listing and the kill
        children.extend(p for p in _in_session(job) if p not in children)
        tracked.extend(children)
        assert children, "no child process to watch"

        _, alive = psutil.wait_procs(children, timeout=max(killed_at + 15 - time.monotonic(), 0))
        assert not alive, f"still running 15 s after the main process died: {alive}"
        quiet_from, quiet_to = _requests_after(emu, killed_at, until=QUIET_AFTER + 1)
        assert quiet_to == quiet_from, (
            f"{quiet_to - quiet_from} requests arrived {QUIET_AFTER:g} s after the kill"
        )

        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=150, check=False)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        metrics = emu.metrics()
        assert metrics["max_in_flight"] <= 10, metrics
        assert metrics["refused_over_limit"] == 0, metrics
    assert_same_store(b_reference, store)


# --------------------------------------------------------------------------- the watch

#: A child that runs ps1dask's parent watch on the PID given, says so, and waits.
_WATCHING_CHILD = (
    "import sys, time\n"
    "from ps1dask.execution.localcluster import watch_parent\n"
    "watch_parent(int(sys.argv[1]), 0.1)\n"
    "print('watching', flush=True)\n"
    "time.sleep(120)\n"
)
#: A parent that starts that child, prints its PID once it watches, and waits to be killed.
_PARENT = (
    "import os, subprocess, sys, time\n"
    f"child = subprocess.Popen([sys.executable, '-c', {_WATCHING_CHILD!r}, str(os.getpid())],"
    " stdout=subprocess.PIPE, text=True)\n"
    "assert child.stdout.readline().strip() == 'watching'\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.mark.timeout(120)
def test_parent_watch_exits_the_orphan():
    """The watch each worker process of ps1dask's LocalCluster runs, on its own
    (distributed's pipe-based parent check plays no part here)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    tracked = [psutil.Process(parent.pid)]
    with _reaped(tracked):
        child = psutil.Process(int(parent.stdout.readline()))
        tracked.append(child)
        assert child.is_running() and child.ppid() == parent.pid
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        _, alive = psutil.wait_procs([child], timeout=5)
        assert not alive, "the child outlived its parent by 5 s"


def _watch_in_this_worker() -> tuple[str | None, bool]:
    import threading

    from ps1dask.execution.localcluster import PARENT_PID_ENV

    names = {t.name for t in threading.enumerate()}
    return os.environ.get(PARENT_PID_ENV), "ps1dask-parent-watch" in names


@pytest.mark.timeout(120)
def test_local_cluster_workers_watch_this_process():
    from ps1dask.execution.localcluster import start_local_cluster

    with (
        start_local_cluster(1, 1, dashboard_address=None) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        found = client.run(_watch_in_this_worker)
    assert list(found.values()) == [(str(os.getpid()), True)]


def _profiles_in_this_worker(dask_worker: distributed.Worker) -> bool:
    return "profile" in dask_worker.periodic_callbacks


@pytest.mark.timeout(120)
@pytest.mark.parametrize("profile", [False, True])
def test_local_cluster_worker_profiler_follows_the_setting(profile):
    """Dask's worker profiler, whose hour of history made soak-job workers grow, is off in
    the clusters ps1dask starts unless ``ps1dask.cluster.worker-profile`` turns it on."""
    import dask.config

    from ps1dask.execution.localcluster import start_local_cluster

    with (
        dask.config.set({"ps1dask.cluster.worker-profile": profile}),
        start_local_cluster(1, 1, dashboard_address=None) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        found = client.run(_profiles_in_this_worker)
    assert list(found.values()) == [profile]


# --------------------------------------------------------------------------- the throttle


@pytest.mark.timeout(120)
def test_pinned_throttle_refuses_once_the_scheduler_is_gone(emu):
    """In-process: a throttle pinned to a worker's context takes slots from its scheduler,
    and once that scheduler is gone refuses (SchedulerLostError, nothing sent) -- also a
    thread that was waiting for a slot -- instead of falling back to a local semaphore."""
    import threading

    from ps1dask.client import PS1Service, RequestThrottle
    from ps1dask.client.throttle import ClusterContext
    from ps1dask.exceptions import SchedulerLostError

    filename = PS1Service(emu.url).list_images(83.63321, 22.01446, filters="g")["filename"][0]
    with distributed.LocalCluster(
        n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        worker = next(iter(cluster.workers.values()))
        throttle = RequestThrottle(2, name="test-lost-pinned", url=emu.url)
        pinned = throttle.bind(ClusterContext.of_worker(worker))
        assert pinned.context is not None and throttle.context is None
        assert pinned.kind == "distributed"
        service = PS1Service(emu.url, throttle=pinned)
        assert service.cutout_fits(filename, 83.63321, 22.01446, 16).data.shape == (16, 16)

        outcome: list[BaseException | None] = []

        def wait_for_a_slot() -> None:
            try:
                with pinned.slot():
                    outcome.append(None)
            except BaseException as err:  # noqa: BLE001 - the test inspects what it was
                outcome.append(err)

        with pinned.slot(), pinned.slot():  # both slots held: the thread waits
            waiter = threading.Thread(target=wait_for_a_slot)
            waiter.start()
            time.sleep(0.3)
            assert not outcome
            cluster.sync(cluster.scheduler.close)
            waiter.join(timeout=60)
        assert len(outcome) == 1 and isinstance(outcome[0], SchedulerLostError), outcome

        before = _requests(emu)
        with pytest.raises(SchedulerLostError, match="no request sent"):
            service.cutout_fits(filename, 83.63321, 22.01446, 16)
        with pytest.raises(SchedulerLostError):
            pinned.backend()
        assert _requests(emu) == before
