"""The global request limit: process-local semaphore, and distributed.Semaphore by name."""

from __future__ import annotations

import os
import pickle
import random
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import dask.config
import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from ps1dask.client import PS1Service, RequestThrottle
from ps1dask.client.leases import LeaseCounts, LeasePool
from ps1dask.client.throttle import lease_handoffs
from ps1dask.exceptions import InvalidParameterError, LeaseTimeoutWarning, SchedulerLostError

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


# --------------------------------------------------------------------------- lease pool


class _FakeScheduler:
    """The scheduler's lease table of one semaphore name: ``limit`` leases in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.cond = threading.Condition()
        self.held: dict[int, int] = {}  # leases per process (fake semaphore)
        self.acquire_total = 0
        self.forgotten = 0

    def total(self) -> int:
        return sum(self.held.values())


class _FakeSemaphore:
    """Stands in for one process's ``distributed.Semaphore`` (not our HTTP layer): acquire
    blocks until the shared table has a free lease, release frees one."""

    def __init__(self, scheduler: _FakeScheduler, process: int) -> None:
        self.scheduler = scheduler
        self.process = process
        self.max_leases = scheduler.limit
        self.name = "fake"
        scheduler.held[process] = 0

    def acquire(self) -> bool:
        table = self.scheduler
        with table.cond:
            while table.total() >= table.limit:
                table.cond.wait()
            table.held[self.process] += 1
            table.acquire_total += 1
        return True

    def release(self) -> bool:
        table = self.scheduler
        with table.cond:
            assert table.held[self.process] > 0, "released a lease this process does not hold"
            table.held[self.process] -= 1
            table.cond.notify_all()
        return True


def _forget_fake_lease(sem: _FakeSemaphore) -> None:
    # The lease stays in the table (a real scheduler expires it after its lease timeout).
    with sem.scheduler.cond:
        sem.scheduler.forgotten += 1


class _FakeContext:
    def __init__(self) -> None:
        self.why: str | None = None

    def lost(self) -> str | None:
        return self.why

    def check_alive(self) -> None:
        if self.why is not None:
            raise SchedulerLostError(self.why)


def _settle(pool: LeasePool) -> dict[str, int]:
    """The pool's state once no acquire is under way (grants nobody waits for go back)."""
    for _ in range(2000):
        state = pool.state()
        if state["pending"] == 0:
            return state
        time.sleep(0.005)
    return pool.state()


def _run_pools(
    limit: int, processes: int, threads: int, takes: int, handoffs: int, seed: int
) -> tuple[_FakeScheduler, list[LeasePool], dict]:
    """``processes`` pools on one table, ``threads`` threads each taking ``takes`` slots
    with random hold times; checks tokens <= leases held <= limit at every slot taken."""
    table = _FakeScheduler(limit)
    pools = [
        LeasePool(_FakeSemaphore(table, p), _forget_fake_lease, LeaseCounts())
        for p in range(processes)
    ]
    context = _FakeContext()
    check = threading.Lock()
    seen = {"in_use": [0] * processes, "peak": 0, "max_handoffs": 0, "slots": 0}
    violations: list[str] = []

    def work(job: tuple[int, int]) -> None:
        p, t = job
        rng = random.Random(seed * 1000 + p * 100 + t)
        pool = pools[p]
        for _ in range(takes):
            lease = pool.take(context)
            with check, table.cond:
                seen["in_use"][p] += 1
                seen["slots"] += 1
                seen["peak"] = max(seen["peak"], sum(seen["in_use"]))
                seen["max_handoffs"] = max(seen["max_handoffs"], lease.handoffs)
                if not seen["in_use"][p] <= table.held[p]:
                    violations.append(f"process {p}: {seen['in_use'][p]} > {table.held[p]}")
                if not table.total() <= limit:
                    violations.append(f"table holds {table.total()} > {limit}")
            time.sleep(rng.choice((0.0, 0.0005, 0.001, 0.003)))
            with check:
                seen["in_use"][p] -= 1
            pool.give_back(lease, context, handoffs)

    jobs = [(p, t) for p in range(processes) for t in range(threads)]
    with ThreadPoolExecutor(len(jobs)) as executor:
        list(executor.map(work, jobs))
    assert violations == []
    return table, pools, seen


def _check_pools_end(table: _FakeScheduler, pools: list[LeasePool], slots: int) -> None:
    for pool in pools:
        assert _settle(pool) == {"held": 0, "lent": 0, "free": 0, "waiters": 0, "pending": 0}
    assert table.total() == 0 and table.forgotten == 0  # every lease back on the table
    counts = [pool.counts.snapshot() for pool in pools]
    # every slot was a lease just granted or one handed over; every grant was used or returned
    assert sum(c["acquired"] + c["handed_off"] for c in counts) == slots
    assert sum(c["acquired"] + c["returned_unused"] for c in counts) == table.acquire_total
    assert all(c["acquired"] >= 1 for c in counts)


def test_lease_pool_hands_leases_over_within_the_limit():
    table, pools, seen = _run_pools(limit=4, processes=2, threads=6, takes=25, handoffs=5, seed=1)
    _check_pools_end(table, pools, slots=2 * 6 * 25)
    assert seen["slots"] == 300 and seen["peak"] == 4
    counts = [pool.counts.snapshot() for pool in pools]
    # 12 threads on 4 leases: releases find threads of their own process waiting
    assert sum(c["handed_off"] for c in counts) > 0
    assert 1 <= seen["max_handoffs"] <= 5
    assert table.acquire_total < 300


def test_lease_pool_without_handoffs_takes_every_slot_from_the_scheduler():
    table, pools, seen = _run_pools(limit=3, processes=2, threads=4, takes=10, handoffs=0, seed=2)
    _check_pools_end(table, pools, slots=80)
    assert seen["max_handoffs"] == 0
    assert all(pool.counts.snapshot()["handed_off"] == 0 for pool in pools)
    assert sum(pool.counts.snapshot()["acquired"] for pool in pools) == 80


@settings(max_examples=15, deadline=None)
@given(
    limit=st.integers(1, 4),
    processes=st.integers(1, 3),
    threads=st.integers(1, 5),
    handoffs=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_lease_pool_invariant(limit, processes, threads, handoffs, seed):
    table, pools, seen = _run_pools(limit, processes, threads, 6, handoffs, seed)
    _check_pools_end(table, pools, slots=processes * threads * 6)
    assert seen["peak"] <= limit and seen["max_handoffs"] <= handoffs


def test_lease_pool_drops_leases_of_a_lost_context():
    """A lease handed over after the context was lost is forgotten, not used or released;
    a thread waiting for one raises."""
    table = _FakeScheduler(1)
    pool = LeasePool(_FakeSemaphore(table, 0), _forget_fake_lease, LeaseCounts())
    context = _FakeContext()
    lease = pool.take(context)
    outcome: list[BaseException | None] = []

    def wait_for_a_lease() -> None:
        try:
            pool.give_back(pool.take(context), context, 5)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - the test inspects what it was
            outcome.append(err)

    waiter = threading.Thread(target=wait_for_a_lease, daemon=True)
    waiter.start()
    for _ in range(2000):  # until the thread waits
        if pool.state()["waiters"] == 1:
            break
        time.sleep(0.005)
    # the process holds the semaphore's only lease: no acquire is started for the waiter
    assert pool.state() == {"held": 1, "lent": 1, "free": 0, "waiters": 1, "pending": 0}
    context.why = "the scheduler is gone"
    pool.give_back(lease, context, 5)  # lost: forgotten, not handed over nor released
    waiter.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], SchedulerLostError), outcome
    assert table.forgotten == 1 and table.held[0] == 1  # left to the lease timeout
    state = pool.state()
    assert (state["held"], state["lent"], state["free"], state["waiters"]) == (0, 0, 0, 0)
    assert pool.counts.snapshot() == {"acquired": 1, "handed_off": 0, "returned_unused": 0}


def test_lease_handoffs_setting():
    assert lease_handoffs() == 20  # the package default (ps1dask.yaml)
    with dask.config.set({"ps1dask.http.lease-handoffs": 0}):
        assert lease_handoffs() == 0
    for bad in (-1, 2.5, "many"):
        with (
            dask.config.set({"ps1dask.http.lease-handoffs": bad}),
            pytest.raises(InvalidParameterError, match="ps1dask.http.lease-handoffs"),
        ):
            lease_handoffs()


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


def _fetch_many(
    service: PS1Service, filename: str, threads: int, per_thread: int, settings: dict | None = None
) -> dict:
    """A task: several threads of its own, each fetching cutouts through one service
    (under the dask ``settings`` given, in the worker process)."""
    from distributed import get_worker

    task_service = service.with_stats()
    kinds = set()

    def run(i):
        kinds.add(task_service.throttle.kind)
        for j in range(per_thread):
            hdu = task_service.cutout_fits(filename, *CRAB, size=32 + (i + j) % 3)
            assert hdu.data is not None

    with dask.config.set(settings or {}), ThreadPoolExecutor(threads) as pool:
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


def _worker_lease_counts(client, name: str) -> dict[str, int]:
    """``throttle.lease_counts(name)`` summed over the worker processes."""
    per_worker = client.run(
        lambda name=name: __import__(
            "ps1dask.client.throttle", fromlist=["lease_counts"]
        ).lease_counts(name)
    )
    assert len(per_worker) == 2
    return {k: sum(c[k] for c in per_worker.values()) for k in next(iter(per_worker.values()))}


def _scheduler_acquires(client, name: str) -> tuple[int | None, int, int]:
    """The semaphore's limit, its grants so far and the acquires waiting on the scheduler."""

    def state(dask_scheduler, name=name):
        ext = dask_scheduler.extensions["semaphores"]
        return (
            ext.max_leases.get(name),
            int(ext.metrics["acquire_total"].get(name, 0)),
            int(ext.metrics["pending"].get(name, 0)),
        )

    return client.run_on_scheduler(state)


def _scheduler_leases(client, name: str) -> tuple[int | None, int]:
    def state(dask_scheduler, name=name):
        ext = dask_scheduler.extensions["semaphores"]
        return ext.max_leases.get(name), len(ext.leases.get(name, {}))

    return client.run_on_scheduler(state)


def _settled_lease_counts(client, name: str) -> tuple[int | None, int, dict[str, int]]:
    """(limit, scheduler grants, the workers' lease counts) once no acquire waits and every
    grant reached its worker: one that arrives after its waiters were served goes back
    unused."""
    for _ in range(400):
        limit, acquires, pending = _scheduler_acquires(client, name)
        counts = _worker_lease_counts(client, name)
        if pending == 0 and counts["acquired"] + counts["returned_unused"] == acquires:
            break
        time.sleep(0.05)
    return limit, acquires, counts


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

    futures = [
        cluster_client.submit(_fetch_many, service, filename, 4, 3, pure=False) for _ in range(8)
    ]
    results = cluster_client.gather(futures)

    metrics = emu.metrics()
    total_requests = sum(r["stats"]["requests"] for r in results)
    assert total_requests == 8 * 4 * 3 == metrics["requests_total"]
    assert metrics["max_in_flight"] <= 10, metrics
    assert metrics["refused_over_limit"] == 0
    # 32 requesters shared one semaphore of 10 slots on the scheduler: every request ran
    # under a lease of it, just granted or handed over by another thread of its process
    limit, acquires, counts = _settled_lease_counts(cluster_client, name)
    assert limit == 10
    assert counts["acquired"] + counts["handed_off"] == total_requests
    assert counts["acquired"] >= 1
    assert counts["acquired"] + counts["returned_unused"] == acquires
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

    assert _scheduler_leases(cluster_client, name) == (10, 0)
    assert service.throttle.cluster_in_use() == 0


@pytest.mark.parametrize("handoffs", [0, 3])
def test_cluster_slots_handed_over_within_a_process(cluster_client, cluster_emulator, handoffs):
    """Threads of one worker hand leases to each other (at most ``lease-handoffs`` times in
    a row); 0 takes every slot from the scheduler. The limit holds either way, and every
    lease is back on the scheduler afterwards."""
    emu = cluster_emulator
    with dask.config.set(CLUSTER_HTTP), PS1Service(emu.url) as probe:
        filename = probe.list_images(*CRAB, filters="g")["filename"].iloc[0]
    name = f"test-cluster-handoffs-{handoffs}"
    with dask.config.set({**CLUSTER_HTTP, "ps1dask.http.semaphore-name": name}):
        service = PS1Service(emu.url)
    emu.reset_metrics()
    settings = {"ps1dask.http.lease-handoffs": handoffs}
    futures = [
        cluster_client.submit(_fetch_many, service, filename, 8, 4, settings, pure=False)
        for _ in range(4)
    ]
    results = cluster_client.gather(futures)
    requests = sum(r["stats"]["requests"] for r in results)
    metrics = emu.metrics()
    assert requests == 4 * 8 * 4 == metrics["requests_total"]
    assert metrics["max_in_flight"] <= 10, metrics
    assert metrics["refused_over_limit"] == 0
    limit, acquires, counts = _settled_lease_counts(cluster_client, name)
    assert limit == 10 and counts["acquired"] >= 1
    assert counts["acquired"] + counts["handed_off"] == requests
    assert counts["acquired"] + counts["returned_unused"] == acquires
    if handoffs == 0:
        assert counts == {"acquired": requests, "handed_off": 0, "returned_unused": 0}
    else:
        # 32 threads on 10 slots: freed slots find threads of their process waiting
        assert counts["handed_off"] > 0
        # a lease goes back to the scheduler after at most 3 hand-offs in a row
        assert counts["acquired"] * 3 >= counts["handed_off"]
    assert _scheduler_leases(cluster_client, name) == (10, 0)


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


def _registered_semaphores() -> dict[str, int]:
    from ps1dask.client import throttle

    return {
        key[1]: sem.max_leases
        for key, sem in throttle._DISTRIBUTED_SEMAPHORES.items()
        if sem._registered
    }


def test_workers_register_the_semaphore_ahead_of_their_first_slot(cluster_client):
    """A job's cluster registers its throttle's semaphore on every worker in the background:
    the first slot of a task then finds it (no register round trip while slots wait)."""
    name = "test-register-ahead"
    throttle = RequestThrottle(4, name=name, url="http://127.0.0.1:9")
    assert all(name not in got for got in cluster_client.run(_registered_semaphores).values())
    throttle.register_on_workers(cluster_client)  # returns at once
    deadline = time.monotonic() + 30
    while True:
        got = cluster_client.run(_registered_semaphores)
        if all(regs.get(name) == 4 for regs in got.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(got) == 2 and all(regs.get(name) == 4 for regs in got.values()), got
    known = cluster_client.run_on_scheduler(
        lambda dask_scheduler: dask_scheduler.extensions["semaphores"].max_leases.get(name)
    )
    assert known == 4
    # a local throttle has nothing to register
    RequestThrottle(
        4, name="test-register-local", url="http://127.0.0.1:9", mode="local"
    ).register_on_workers(cluster_client)
    got = cluster_client.run(_registered_semaphores)
    assert all("test-register-local" not in regs for regs in got.values())


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
