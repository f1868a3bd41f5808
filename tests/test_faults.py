"""Fault survival: a faulty service, dying workers, a service that keeps refusing.

Every job here must end with the very store a fault-free run makes (nothing lost, nothing
made up), never more than 10 requests in flight at the emulator, and a service that keeps
answering 503 must make the job back off and stop with a clear message, leaving a store that
a later rerun completes.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time

import dask.config
import distributed
import numpy as np
import pytest
import zarr
from _jobs import (
    assert_same_store,
    cutout_job,
    cutouts_args,
    emulator_knobs,
    ok_positions,
    positions_in_one_skycell,
    service,
    tree_digest,
)
from conftest import local_cluster_client

from ps1dask.client import PS1Service
from ps1dask.conventions import image_filename
from ps1dask.execution import JobAbortedError
from ps1dask.storage import STATUS
from ps1dask.tessellation import SkycellId

FILTERS = "gr"
SIZE = 24
UNIT = 4
#: Figures measured by these tests, printed at the end of the module (pytest -s shows them).
FIGURES: dict[str, object] = {}


@pytest.fixture(scope="module")
def dask_client():
    """A cluster of this module's own: its failures and kills must not reach other tests."""
    with local_cluster_client() as client:
        yield client


@pytest.fixture(scope="module")
def table():
    return positions_in_one_skycell(24, seed=11)


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


@pytest.fixture(scope="module")
def reference(job_emulator, dask_client, table, tmp_path_factory):
    """The fault-free store every faulty run must reproduce."""
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    store = tmp_path_factory.mktemp("faults") / "reference.zarr"
    summary = _run(table, store, job_emulator.url, dask_client)
    assert summary.statuses == {"ok": len(FILTERS) * len(table)}
    return store


@pytest.fixture(scope="module", autouse=True)
def _report_figures():
    yield
    if FIGURES:
        print("\nfault-survival figures:")
        for key, value in FIGURES.items():
            print(f"  {key}: {value}")


def _run(table, store, url_or_service, client, **kw):
    return cutout_job(
        table, store, url_or_service, client, filters=FILTERS, size=SIZE, unit=UNIT, **kw
    )


@pytest.mark.parametrize(
    ("kind", "rate"),
    [("503", 0.2), ("429", 0.15), ("reset", 0.1), ("truncate", 0.1), ("stall", 0.05)],
)
def test_each_fault_kind_loses_nothing(kind, rate, emu, dask_client, table, reference, tmp_path):
    n = len(FILTERS) * len(table)
    store = tmp_path / f"{kind}.zarr"
    # A read timeout far above any answer's time, even on a loaded machine, and below the
    # stall: then each injected fault, and nothing else, costs one retry.
    svc = service(emu.url, **{"ps1dask.http.read-timeout": 3})
    with emulator_knobs(
        emu,
        fault_rate=rate,
        fault_kinds=(kind,),
        retry_after=0.1,
        stall_seconds=6,
        seed=len(kind) * 7 + int(rate * 100),
    ):
        summary = _run(table, store, svc, dask_client)
    metrics = emu.metrics()
    assert summary.statuses == {"ok": n}, (kind, summary)
    assert_same_store(reference, store)
    assert metrics["faults_by_kind"].get(kind, 0) > 0, metrics  # the faults did happen
    assert metrics["max_in_flight"] <= 10
    assert metrics["refused_over_limit"] == 0
    # each fault costs its request exactly one retry, and nothing else is retried
    assert summary.requests["retries"] == metrics["faults_injected"], (summary.requests, metrics)
    assert metrics["requests_total"] == n + metrics["faults_injected"]
    FIGURES[f"{kind} at {rate:.0%}"] = (
        f"{n} cutouts identical to the fault-free run, {metrics['faults_injected']} faults "
        f"injected, {metrics['requests_total']} requests, max in flight {metrics['max_in_flight']}"
    )


@pytest.mark.parametrize("strategy", ["range", "skycell"])
def test_mixed_faults_every_strategy(strategy, emu, dask_client, table, reference, tmp_path):
    """Whole-file downloads and Range reads survive resets, truncations and stalls too."""
    n = len(FILTERS) * len(table)
    store = tmp_path / f"{strategy}.zarr"
    # the emulator renders a whole skycell file on its first request, which takes longer
    # than the short read timeout used here: render them before the faults begin
    warm = PS1Service(emu.url)
    for band in FILTERS:
        warm.file_size(image_filename(SkycellId(1405, 53), band))
    emu.reset_metrics()
    svc = service(emu.url)
    # seed 49 faults the first two requests (reset, truncate): the whole-file downloads
    seed = {"range": 5, "skycell": 49}[strategy]
    with emulator_knobs(emu, fault_rate=0.2, retry_after=0.1, stall_seconds=1.5, seed=seed):
        summary = _run(
            table, store, svc, dask_client, strategy=strategy, cache_dir=tmp_path / "cache"
        )
    metrics = emu.metrics()
    assert summary.statuses == {"ok": n}, summary
    assert_same_store(reference, store)
    assert metrics["faults_injected"] > 0
    assert metrics["max_in_flight"] <= 10 and metrics["refused_over_limit"] == 0
    FIGURES[f"all kinds at 20%, strategy {strategy}"] = (
        f"{n} cutouts identical, faults {metrics['faults_by_kind']}, "
        f"{metrics['requests_total']} requests, max in flight {metrics['max_in_flight']}"
    )


# --- dying workers ----------------------------------------------------------------------


def _worker_pids(client: distributed.Client) -> dict[str, int]:
    return client.run(os.getpid)


def _wait(predicate, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


@pytest.fixture(scope="module")
def big_table():
    return positions_in_one_skycell(100, seed=12)


@pytest.fixture(scope="module")
def big_reference(job_emulator, dask_client, big_table, tmp_path_factory):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    store = tmp_path_factory.mktemp("faults") / "big-reference.zarr"
    summary = _run(big_table, store, job_emulator.url, dask_client)
    assert summary.statuses == {"ok": len(FILTERS) * len(big_table)}
    return store


@pytest.mark.timeout(180)
def test_killed_workers_lose_and_duplicate_nothing(emu, big_table, big_reference, tmp_path):
    """SIGKILL a worker mid-job, let its nanny restart it, then kill both: the job completes
    with the reference store, reruns only the units that were running, and the leases of the
    dead workers expire without more than 10 requests in flight."""
    table, reference = big_table, big_reference
    n = len(FILTERS) * len(table)
    store = tmp_path / "killed.zarr"
    lease = {
        "distributed.scheduler.locks.lease-timeout": "2s",
        "distributed.scheduler.locks.lease-validation-interval": "200ms",
    }
    # The nannies pass this config to the workers (and to the ones they restart).
    with dask.config.set(lease), local_cluster_client() as client:
        try:
            # request timeouts below the 2 s lease timeout, as the lease check demands
            svc = service(
                emu.url, **{"ps1dask.http.connect-timeout": 0.5, "ps1dask.http.read-timeout": 1}
            )
            client.run(importlib.import_module, "ps1dask.execution.tasks")  # warm the imports
            emu.configure(latency=0.2)
            emu.reset_metrics()
            result: list[object] = []
            runner = threading.Thread(
                target=lambda: result.append(_safe(_run, table, store, svc, client)), daemon=True
            )
            runner.start()
            kills = []
            t_start = time.monotonic()
            first = _worker_pids(client)
            _wait(lambda: ok_positions(store) >= UNIT, 60, "a first unit")
            _victim, pid = min(first.items())
            os.kill(pid, signal.SIGKILL)
            kills.append(pid)

            # the nanny restarts it: a new pid under two workers again
            _wait(lambda: _restarted(client, first), 60, "the nanny to restart the worker", 0.2)
            assert runner.is_alive(), "the job ended before the second kill: make it longer"
            # then both at once (the restarted one too): every copy of anything a worker
            # held is gone, and the job must still complete
            second = _worker_pids(client)
            for other in second.values():
                os.kill(other, signal.SIGKILL)
                kills.append(other)
            runner.join(180)
            seconds = time.monotonic() - t_start
            assert not runner.is_alive()
            summary = result[0]
            assert not isinstance(summary, BaseException), summary
            metrics = emu.metrics()
            # times the scheduler gave each unit to a worker (again after a death)
            assignments = client.run_on_scheduler(_unit_assignments)
        finally:
            emu.configure(latency=0.0)
    assert summary.statuses == {"ok": n}, summary
    assert_same_store(reference, store)
    assert summary.units_run == len(table) // UNIT + (len(table) % UNIT > 0)
    fitscut = metrics["requests_by_endpoint"]["/cgi-bin/fitscut.cgi"]
    per_unit = UNIT * len(FILTERS)
    # Every unit ran once to completion; a unit given again to a worker after a death may
    # have fetched up to all its cutouts before (and a finished but uncollected unit is
    # run again); no unit already collected is fetched again. The retries of the completed
    # runs (the short test timeouts) are counted apart: they are not redone work.
    assert sorted(assignments) == sorted(f"{u}" for u in range(summary.units_run)), assignments
    redone = sum(assignments.values()) - summary.units_run
    retried = int(summary.requests.get("retries", 0))
    assert n <= fitscut <= n + redone * per_unit + retried, (fitscut, n, redone, retried)
    assert metrics["max_in_flight"] <= 10
    assert metrics["refused_over_limit"] == 0
    FIGURES["worker kills"] = (
        f"{len(kills)} worker processes SIGKILLed mid-job (one, then both incl. the restarted one): "
        f"{n} cutouts complete and identical in {seconds:.1f} s, {redone} units and "
        f"{fitscut - n} requests redone, "
        f"max in flight {metrics['max_in_flight']}"
    )


def _unit_assignments(dask_scheduler) -> dict[str, int]:
    """Per work unit (index), how many times the scheduler sent it to a worker."""
    counts: dict[str, int] = {}
    for entry in dask_scheduler.transition_log:
        key, finish = str(entry[0]), entry[2]
        if key.startswith("ps1dask-run_stack_unit-") and finish == "processing":
            unit = key.rsplit("-", 1)[1]
            counts[unit] = counts.get(unit, 0) + 1
    return counts


def _safe(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except BaseException as err:  # noqa: BLE001 - handed to the test thread
        return err


def _restarted(client: distributed.Client, before: dict[str, int]) -> bool:
    try:
        now = _worker_pids(client)
    except Exception:  # noqa: BLE001 - a worker is coming up
        return False
    return len(now) == 2 and set(now.values()) != set(before.values())


# --- a service that keeps refusing ----------------------------------------------------------


@pytest.mark.timeout(120)
def test_persistent_503_backs_off_stops_and_resumes(emu, dask_client, table, reference, tmp_path):
    store = tmp_path / "refused.zarr"
    n = len(FILTERS) * len(table)
    attempts, retry_after = 3, 0.5
    svc = service(emu.url, **{"ps1dask.http.attempts": attempts})
    with emulator_knobs(emu, fault_rate=1.0, fault_kinds=("503",), retry_after=retry_after):
        t0 = time.monotonic()
        with pytest.raises(JobAbortedError, match="kept refusing requests") as info:
            _run(table, store, svc, dask_client)
        elapsed = time.monotonic() - t0
        metrics = emu.metrics()
        time.sleep(0.5)
        late = emu.metrics()["requests_total"] - metrics["requests_total"]
    message = str(info.value)
    assert "503" in message and "Rerun" in message and str(store) in message
    requests = metrics["requests_total"]
    # never a hot loop: every cutout gives up after `attempts` tries, each retry waits at
    # least Retry-After, and nothing runs on after the error
    assert requests <= attempts * n
    assert elapsed >= (attempts - 1) * retry_after
    # at most `concurrent` requesters (workers x threads x cutouts of a unit), each waiting
    # at least Retry-After between two of its requests
    concurrent = 2 * 2 * UNIT * len(FILTERS)
    assert requests <= concurrent * (1 + elapsed / retry_after), (requests, elapsed)
    rate = requests / elapsed
    assert late == 0, "requests went on after cutouts() stopped"
    assert metrics["max_in_flight"] <= 10
    # consistent: statuses are pending or failed, images of unfinished units untouched
    status = np.asarray(zarr.open_array(str(store), path="stack_status", mode="r")[:])
    assert set(np.unique(status).tolist()) <= {STATUS["pending"], STATUS["failed"]}
    flux = np.asarray(zarr.open_array(str(store), path="stack_flux", mode="r")[:])
    assert np.isnan(flux).all()
    before = tree_digest(store)
    meta = {k: v for k, v in before.items() if k.endswith("zarr.json")}

    # the service recovers: the same call resumes and completes
    emu.reset_metrics()
    summary = _run(table, store, service(emu.url), dask_client)
    assert summary.statuses == {"ok": n}
    assert_same_store(reference, store)
    after = tree_digest(store)
    assert {k: after[k] for k in meta} == meta  # metadata untouched by the resume
    FIGURES["persistent 503"] = (
        f"stopped after {elapsed:.1f} s and {requests} requests ({rate:.0f}/s, at most "
        f"{attempts} per cutout); rerun completed {n} cutouts"
    )


def test_persistent_503_cli_exit_code_and_message(emu, dask_client, table, tmp_path, capsys):
    csv = tmp_path / "positions.csv"
    table.to_csv(csv, index=False)
    store = tmp_path / "cli.zarr"
    args = cutouts_args(
        csv,
        store,
        emu.url,
        "--unit-size",
        str(UNIT),
        "--scheduler",
        dask_client.scheduler.address,
        filters=FILTERS,
        size=SIZE,
    )
    from ps1dask.cli import main

    with (
        dask.config.set({**_fast(), "ps1dask.http.attempts": 2}),
        emulator_knobs(emu, fault_rate=1.0, fault_kinds=("429",), retry_after=0.2),
    ):
        code = main(args)
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()  # the dashboard link of the given scheduler first
    assert lines[-1].startswith("ps1dask cutouts: error: stopped: the service kept refusing")
    assert all(line.startswith("Dask dashboard:") for line in lines[:-1]), err
    assert "Traceback" not in err
    with dask.config.set(_fast()):
        assert main(args) == 0
    status = np.asarray(zarr.open_array(str(store), path="stack_status", mode="r")[:])
    assert (status == STATUS["ok"]).all()


def _fast() -> dict[str, object]:
    from _jobs import FAST_HTTP

    return dict(FAST_HTTP)
