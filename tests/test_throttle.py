"""The global request limit: process-local semaphore, and distributed.Semaphore by name."""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import dask.config
import pytest

from ps1dask.client import PS1Service, RequestThrottle
from ps1dask.exceptions import InvalidParameterError, LeaseTimeoutWarning

CRAB = (83.63321, 22.01446)
CLUSTER_HTTP = {
    "ps1dask.http.attempts": 6,
    "ps1dask.http.backoff-initial": 0.02,
    "ps1dask.http.backoff-max": 0.1,
    "ps1dask.http.connect-timeout": 5,
    "ps1dask.http.read-timeout": 10,
}


def _peak_concurrency(
    throttle: RequestThrottle, threads: int, hold: float = 0.03, rounds: int = 3
) -> int:
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    barrier = threading.Barrier(threads)

    def work(_):
        barrier.wait()
        for _ in range(rounds):
            with throttle.slot():
                with lock:
                    state["now"] += 1
                    state["peak"] = max(state["peak"], state["now"])
                time.sleep(hold)
                with lock:
                    state["now"] -= 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return state["peak"]


# --------------------------------------------------------------------------- local


def test_local_limit_is_exact():
    throttle = RequestThrottle(3, name="test-local-3", url="http://127.0.0.1:9")
    assert throttle.kind == "local"
    throttle.reset_peak()
    assert _peak_concurrency(throttle, threads=12) == 3
    assert throttle.peak_in_use == 3 and throttle.in_use == 0
    assert throttle.cluster_in_use() == 0


def test_local_semaphore_is_shared_by_name_in_the_process():
    a = RequestThrottle(2, name="test-shared-2", url="http://127.0.0.1:9")
    b = pickle.loads(pickle.dumps(a))
    assert a.backend()[1] is b.backend()[1]
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def work(i):
        with (a if i % 2 else b).slot():
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            time.sleep(0.03)
            with lock:
                state["now"] -= 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(16)))
    assert state["peak"] == 2


def test_one_limit_per_name_at_a_time():
    url = "http://127.0.0.1:9"
    four = RequestThrottle(4, name="test-limit-change", url=url)
    two = RequestThrottle(2, name="test-limit-change", url=url)
    with four.slot(), pytest.raises(InvalidParameterError):
        two.backend()
    assert _peak_concurrency(two, threads=6) == 2  # idle: the new limit replaces the old
    assert _peak_concurrency(four, threads=8) == 4


def test_slot_released_on_error():
    throttle = RequestThrottle(1, name="test-error-1", url="http://127.0.0.1:9")
    for _ in range(3):
        with pytest.raises(RuntimeError), throttle.slot():
            raise RuntimeError("boom")
    assert throttle.in_use == 0
    _kind, semaphore = throttle.backend()
    assert semaphore.acquire(blocking=False)  # the only slot is free: nothing leaked
    semaphore.release()
    with throttle.slot():
        assert throttle.in_use == 1


def test_stsci_limit_and_arguments():
    with pytest.raises(InvalidParameterError):
        RequestThrottle(11, url="https://ps1images.stsci.edu")
    with (
        dask.config.set({"ps1dask.http.max-concurrency": 11}),
        pytest.raises(InvalidParameterError),
    ):
        RequestThrottle(url="https://ps1images.stsci.edu")
    with dask.config.set({"ps1dask.http.max-concurrency": 20}):
        assert RequestThrottle(url="http://127.0.0.1:9").max_concurrency == 20
    assert RequestThrottle(url="https://ps1images.stsci.edu").max_concurrency == 10
    with pytest.raises(InvalidParameterError):
        RequestThrottle(0, url="http://127.0.0.1:9")
    with pytest.raises(InvalidParameterError):
        RequestThrottle(2, url="http://127.0.0.1:9", mode="distributed").backend()


def test_throttle_pickles_to_name_and_limit_only():
    throttle = RequestThrottle(7, name="test-pickle", url="http://127.0.0.1:9")
    with throttle.slot():
        pass
    blob = pickle.dumps(throttle)
    assert len(blob) < 300
    assert b"Semaphore" not in blob and b"distributed" not in blob and b"threading" not in blob
    back = pickle.loads(blob)
    assert (back.max_concurrency, back.name, back.url, back.mode) == (
        7,
        "test-pickle",
        "http://127.0.0.1:9",
        "auto",
    )


# --------------------------------------------------------------------------- distributed


@pytest.fixture(scope="module")
def cluster_client():
    import cloudpickle
    from distributed import Client, LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=4,
            dashboard_address=None,
            worker_dashboard_address=None,
        )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster_emulator():
    from ps1dask.emulator import Emulator

    with Emulator(seed=0, latency=0.1) as emu:
        yield emu


def _fetch_many(service: PS1Service, filename: str, threads: int, per_thread: int) -> dict:
    """A task: several threads of its own, each fetching cutouts through one service."""
    from distributed import get_worker

    task_service = service.with_stats()
    kinds = set()

    def run(i):
        kinds.add(task_service.throttle.kind)
        for j in range(per_thread):
            hdu = task_service.cutout_fits(filename, *CRAB, size=32 + (i + j) % 3)
            assert hdu.data is not None

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(threads)))
    from ps1dask.client import throttle as throttle_module

    return {
        "pid": os.getpid(),
        "worker": get_worker().address,
        "kind_in_task": task_service.throttle.kind,
        "kinds_in_threads": sorted(kinds),
        "semaphores": [list(key) for key in throttle_module._DISTRIBUTED_SEMAPHORES],
        "stats": task_service.stats.snapshot(),
        "pickled_throttle": pickle.dumps(task_service.throttle),
    }


def test_cluster_wide_limit_with_semaphore_by_name(cluster_client, cluster_emulator):
    emu = cluster_emulator
    with dask.config.set(CLUSTER_HTTP), PS1Service(emu.url) as probe:
        filename = probe.list_images(*CRAB, filters="g")["filename"].iloc[0]
    emu.reset_metrics()
    name = "test-cluster-ps1dask-http"
    with dask.config.set({**CLUSTER_HTTP, "ps1dask.http.semaphore-name": name}):
        service = PS1Service(emu.url)
    assert service.throttle.kind == "distributed"  # a Client is current here
    service_blob = pickle.dumps(service)
    assert b"Semaphore" not in service_blob and len(service_blob) < 2000

    def semaphore_state(dask_scheduler, name=name):
        ext = dask_scheduler.extensions["semaphores"]
        return ext.max_leases.get(name), int(ext.metrics["acquire_total"].get(name, 0))

    futures = [
        cluster_client.submit(_fetch_many, service, filename, 4, 3, pure=False) for _ in range(8)
    ]
    results = cluster_client.gather(futures)

    metrics = emu.metrics()
    total_requests = sum(r["stats"]["requests"] for r in results)
    assert total_requests == 8 * 4 * 3 == metrics["requests_total"]
    assert metrics["max_in_flight"] <= 10, metrics
    assert metrics["refused_over_limit"] == 0
    # 32 requesters shared one semaphore of 10 slots on the scheduler, a lease per request
    assert cluster_client.run_on_scheduler(semaphore_state) == (10, total_requests)
    # Every task (and every thread it started) used the cluster semaphore, obtained by name
    # inside the worker process; nothing but name and limit travelled with the task.
    assert {r["kind_in_task"] for r in results} == {"distributed"}
    assert {k for r in results for k in r["kinds_in_threads"]} == {"distributed"}
    assert len({r["pid"] for r in results}) == 2 and os.getpid() not in {r["pid"] for r in results}
    for r in results:
        assert [key[1] for key in r["semaphores"]] == [name]
        blob = r["pickled_throttle"]
        assert b"Semaphore" not in blob and len(blob) < 300
        back = pickle.loads(blob)
        assert (back.name, back.max_concurrency) == (name, 10)

    def semaphore_state(dask_scheduler, name=name):
        ext = dask_scheduler.extensions["semaphores"]
        return ext.max_leases.get(name), len(ext.leases.get(name, {}))

    assert cluster_client.run_on_scheduler(semaphore_state) == (10, 0)
    assert service.throttle.cluster_in_use() == 0


def test_cluster_limit_is_configurable(cluster_client, cluster_emulator):
    emu = cluster_emulator
    with dask.config.set(CLUSTER_HTTP), PS1Service(emu.url) as probe:
        filename = probe.list_images(*CRAB, filters="g")["filename"].iloc[0]
    emu.reset_metrics()
    with dask.config.set(
        {
            **CLUSTER_HTTP,
            "ps1dask.http.max-concurrency": 3,
            "ps1dask.http.semaphore-name": "test-cluster-limit-3",
        }
    ):
        service = PS1Service(emu.url)
    futures = [
        cluster_client.submit(_fetch_many, service, filename, 2, 2, pure=False) for _ in range(6)
    ]
    cluster_client.gather(futures)
    metrics = emu.metrics()
    assert metrics["requests_total"] == 24
    assert 2 <= metrics["max_in_flight"] <= 3


def test_lease_timeout_check(cluster_client):
    url = "http://127.0.0.1:9"
    throttle = RequestThrottle(2, name="test-lease-check", url=url)
    with dask.config.set({"distributed.scheduler.locks.lease-timeout": "30s"}):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            throttle.check_lease_timeout(10, 25)
        assert [w.category for w in caught] == [LeaseTimeoutWarning]
        assert "lease-timeout" in str(caught[0].message)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            throttle.check_lease_timeout(5, 20)  # 25 s < 30 s: fine
        with (
            dask.config.set({"ps1dask.http.lease-check": "raise"}),
            pytest.raises(InvalidParameterError),
        ):
            throttle.check_lease_timeout(10, 60)
        strict = {"ps1dask.http.read-timeout": 60, "ps1dask.http.lease-check": "raise"}
        with dask.config.set(strict), pytest.raises(InvalidParameterError):
            PS1Service(url)
    # Without distributed there is no lease to outlive.
    RequestThrottle(2, name="test-lease-check", url=url, mode="local").check_lease_timeout(10, 60)
