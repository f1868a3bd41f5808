"""A real multi-process cluster: `dask scheduler` and two `dask worker` processes started
from the command line on loopback, `ps1dask cutouts --scheduler` as a separate process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import distributed
import pytest
from _dask_cli import scheduler_cmd, start_logged, worker_cmd
from _jobs import (
    assert_same_store,
    cutout_job,
    cutouts_cmd,
    free_port,
    kill_when_stored,
    ok_positions,
    positions_in_one_skycell,
    wait_for,
)

from ps1dask.client import RequestThrottle
from ps1dask.execution.runner import _executing_keys

FILTERS = "gr"
SIZE = 24
UNIT = 4
#: The same dask config a deployment sets (deploy/): lease timeout through the environment.
CLUSTER_ENV = {
    "DASK_DISTRIBUTED__SCHEDULER__LOCKS__LEASE_TIMEOUT": "30s",
}


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group we started: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    """tcp address of a scheduler with two worker processes, all started from the CLI."""
    logs = tmp_path_factory.mktemp("cluster-logs")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, **CLUSTER_ENV}
    procs: list[subprocess.Popen] = []

    try:
        procs.append(start_logged(scheduler_cmd(port), logs / "scheduler.log", env))
        for i in (1, 2):
            worker = worker_cmd(address, f"w{i}", "--nworkers", "1")
            procs.append(start_logged(worker, logs / f"worker{i}.log", env))
        deadline = time.monotonic() + 90
        client = None
        while client is None:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a cluster process died:\n" + _tail(logs))
            try:
                client = distributed.Client(address, timeout=2, set_as_default=False)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("scheduler did not come up:\n" + _tail(logs)) from None
                time.sleep(0.3)
        try:
            client.wait_for_workers(2, timeout=max(deadline - time.monotonic(), 1))
            workers = client.scheduler_info()["workers"]
            assert sorted(w["name"] for w in workers.values()) == ["w1", "w2"]
            assert all(w["host"] == "127.0.0.1" for w in workers.values())
            yield address, client
        finally:
            client.close()
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _tail(logs: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n" + p.read_text(errors="replace")[-2000:]
        for p in sorted(logs.glob("*.log"))
    )


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


def _cutouts_cmd(csv: Path, store: Path, address: str, url: str) -> list[str]:
    return cutouts_cmd(
        csv,
        store,
        url,
        "--unit-size",
        str(UNIT),
        "--scheduler",
        address,
        filters=FILTERS,
        size=SIZE,
    )


@pytest.mark.timeout(240)
def test_cli_job_on_a_command_line_cluster(cli_cluster, emu, dask_client, tmp_path):
    address, client = cli_cluster
    table = positions_in_one_skycell(40, seed=21)
    csv = tmp_path / "positions.csv"
    table.to_csv(csv, index=False)
    store = tmp_path / "cluster.zarr"
    emu.configure(latency=0.05)
    env = {**os.environ, **CLUSTER_ENV}
    name = RequestThrottle(url=emu.url).name
    leases_before = _leases_taken(client, name)
    counts_before = _worker_lease_counts(client, name)
    proc = subprocess.run(
        _cutouts_cmd(csv, store, address, emu.url),
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ok {2 * len(table)}" in proc.stdout
    metrics = emu.metrics()
    assert metrics["requests_by_endpoint"]["/cgi-bin/fitscut.cgi"] == 2 * len(table)
    assert metrics["max_in_flight"] <= 10
    assert metrics["refused_over_limit"] == 0

    # the work ran on the command-line workers, each request under a lease of the
    # cluster-wide semaphore (just granted, or handed over by another thread of its worker),
    # and both workers fetched (units go to both at submission)
    granted, taken = _settled_leases(client, name, leases_before, counts_before)
    assert taken["acquired"] + taken["handed_off"] == 2 * len(table)
    assert taken["acquired"] >= 1
    assert granted == taken["acquired"] + taken["returned_unused"]
    peaks = client.run(
        lambda: __import__("ps1dask.client.throttle", fromlist=["_PEAK"])._PEAK.get(name, 0)
    )
    assert len(peaks) == 2 and all(p > 0 for p in peaks.values()), peaks
    semaphores = client.run_on_scheduler(
        lambda dask_scheduler: sorted(dask_scheduler.extensions["semaphores"].max_leases.items())
    )
    assert (name, 10) in [tuple(s) for s in semaphores]

    # the same pixels as a run on the session LocalCluster
    emu.configure(latency=0.0)
    reference = tmp_path / "reference.zarr"
    cutout_job(csv, reference, emu.url, dask_client, filters=FILTERS, size=SIZE, unit=UNIT)
    assert_same_store(reference, store)


@pytest.mark.timeout(180)
def test_killed_client_resumes_on_the_surviving_cluster(cli_cluster, emu, dask_client, tmp_path):
    """Kill `ps1dask cutouts` mid-job while the cluster lives on; the rerun resumes, units
    left running on the workers finish cleanly, and the store equals an uninterrupted run."""
    address, client = cli_cluster
    table = positions_in_one_skycell(48, seed=22)
    csv = tmp_path / "positions.csv"
    table.to_csv(csv, index=False)
    store = tmp_path / "killed.zarr"
    emu.configure(latency=0.2)
    env = {**os.environ, **CLUSTER_ENV}
    proc = subprocess.Popen(
        _cutouts_cmd(csv, store, address, emu.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    kill_when_stored(proc, store, 2 * UNIT)
    # The scheduler forgets the dead client's units; those already running go on (Dask
    # cannot stop them) and may store their positions before or during the rerun.
    wait_for(lambda: not _job_tasks_on_scheduler(client), "the scheduler to drop the job")
    # units of a ps1dask job the workers still run, cancelled ones included (read first)
    running = sum(len(keys) for keys in client.run(_executing_keys, "ps1dask-").values())
    stored = ok_positions(store)
    assert 0 < stored < len(table), "killed too late or too early"

    emu.configure(latency=0.0)
    emu.reset_metrics()
    rerun = subprocess.run(
        _cutouts_cmd(csv, store, address, emu.url),
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    refetched = emu.metrics()["requests_by_endpoint"].get("/cgi-bin/fitscut.cgi", 0)
    # what was stored is not fetched again; of the rest, only units still running at the
    # kill may have been stored by the time the rerun read the statuses
    missing = 2 * (len(table) - stored)
    assert missing - 2 * UNIT * running <= refetched <= missing, (refetched, missing, running)
    reference = tmp_path / "reference.zarr"
    cutout_job(csv, reference, emu.url, dask_client, filters=FILTERS, size=SIZE, unit=UNIT)
    assert_same_store(reference, store)


def _job_tasks_on_scheduler(client: distributed.Client) -> int:
    return client.run_on_scheduler(
        lambda dask_scheduler: sum(str(k).startswith("ps1dask-") for k in dask_scheduler.tasks)
    )


def _worker_lease_counts(client: distributed.Client, name: str) -> dict[str, int]:
    """How the worker processes took their slots of ``name`` (``throttle.lease_counts``)."""
    per_worker = client.run(
        lambda name=name: __import__(
            "ps1dask.client.throttle", fromlist=["lease_counts"]
        ).lease_counts(name)
    )
    return {k: sum(c[k] for c in per_worker.values()) for k in next(iter(per_worker.values()))}


def _settled_leases(
    client: distributed.Client, name: str, leases_before: int, counts_before: dict[str, int]
) -> tuple[int, dict[str, int]]:
    """(scheduler grants, the workers' lease counts) since the given ones, once no acquire
    waits and every grant reached its worker (a grant that arrives after its waiters were
    served goes back unused)."""
    for _ in range(400):
        granted = _leases_taken(client, name) - leases_before
        counts = _worker_lease_counts(client, name)
        taken = {k: counts[k] - counts_before[k] for k in counts}
        pending = client.run_on_scheduler(
            lambda dask_scheduler, name=name: int(
                dask_scheduler.extensions["semaphores"].metrics["pending"].get(name, 0)
            )
        )
        if pending == 0 and taken["acquired"] + taken["returned_unused"] == granted:
            break
        time.sleep(0.05)
    return granted, taken


def _leases_taken(client: distributed.Client, name: str) -> int:
    """Leases the scheduler's semaphore ``name`` has granted so far."""
    return client.run_on_scheduler(
        lambda dask_scheduler, name=name: int(
            dask_scheduler.extensions["semaphores"].metrics["acquire_total"].get(name, 0)
        )
    )
