"""Where a benchmark job's CPU went, per process, and its serial parts: what bounds scaling.

A job on a LocalCluster runs in several processes: this one (the client's planning and
store set-up, and the cluster's scheduler and nannies, which a LocalCluster runs here), one
per worker, and the emulator standing in for the service or the bucket. On a machine of a
few cores they share the same cores, so a job's wall time is at least its CPU seconds
divided by the cores; and the time before the first work unit starts and after the last one
ends is spent once, however many workers there are. :func:`job_account` measures both for
one job, so that a benchmark can print, next to a rate, why it is not higher.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

#: OS thread-name prefix of the Rust runtime threads obstore reads S3 with (``tokio``'s
#: default name, truncated by the kernel to 15 characters).
RUNTIME_THREAD_PREFIX = "tokio-"


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads, dead or alive)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def thread_cpu_seconds(pid: int, prefix: str) -> float:
    """CPU seconds of the live threads of ``pid`` whose OS name starts with ``prefix``
    (Linux ``/proc``; 0.0 where it is not available)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = (task / "comm").read_text().strip()
            if not name.startswith(prefix):
                continue
            # fields after the ")" that ends the name: utime and stime are fields 14 and 15
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
            total += int(stat[11]) + int(stat[12])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return total / tick


@dataclass
class JobAccount:
    """CPU seconds of each process during one job, and its wall time and serial parts."""

    cores: int
    wall: float = 0.0
    client: float = 0.0
    workers: list[float] = field(default_factory=list)
    #: of each worker's CPU, its S3 runtime threads' (obstore's Rust HTTP client)
    workers_runtime: list[float] = field(default_factory=list)
    emulator: float = 0.0
    units: int = 0
    #: from the job's start to the first unit's start (planning, store, probe, submission)
    before_first_unit: float = 0.0
    #: from the last unit's end to the job's return
    after_last_unit: float = 0.0

    @property
    def total(self) -> float:
        return self.client + sum(self.workers) + self.emulator

    @property
    def available(self) -> float:
        """CPU seconds the machine had during the job."""
        return self.cores * self.wall

    @property
    def busy_cores(self) -> float:
        return self.total / self.wall if self.wall > 0 else 0.0

    def describe(self) -> str:
        """One line: CPU-s of each process, of the available, and the serial parts."""
        workers = " + ".join(f"{w:.1f}" for w in self.workers)
        runtime = sum(self.workers_runtime)
        return (
            f"CPU-s: client+scheduler {self.client:.1f}, worker(s) {workers} (of which "
            f"obstore runtime threads {runtime:.1f}), emulator {self.emulator:.1f} = "
            f"{self.total:.1f} of {self.available:.1f} available ({self.cores} cores x "
            f"{self.wall:.1f} s): {self.busy_cores:.2f} cores busy; serial: "
            f"{self.before_first_unit:.2f} s before the first of {self.units} units, "
            f"{self.after_last_unit:.2f} s after the last"
        )


def scaling_bound(one: JobAccount, more: JobAccount) -> float:
    """The most ``more`` could gain over ``one`` on this machine's cores: ``one``'s wall
    time over the least time ``more``'s CPU seconds take on all cores."""
    return one.wall * more.cores / more.total if more.total > 0 else float("inf")


@contextlib.contextmanager
def job_account(client: Any, emulator_pid: int | None) -> Iterator[JobAccount]:
    """Measure the job run inside the block on Dask ``client`` (a LocalCluster whose workers
    run on this machine). The account is filled when the block ends."""
    import distributed

    account = JobAccount(cores=psutil.cpu_count() or 1)
    pids = sorted(set(client.run(os.getpid).values()))
    here = os.getpid()

    def snapshot() -> tuple[float, list[float], list[float], float]:
        return (
            process_cpu_seconds(here),
            [process_cpu_seconds(p) for p in pids],
            [thread_cpu_seconds(p, RUNTIME_THREAD_PREFIX) for p in pids],
            process_cpu_seconds(emulator_pid) if emulator_pid is not None else 0.0,
        )

    c0, w0, r0, e0 = snapshot()
    with distributed.get_task_stream(client) as stream:
        t0 = time.time()
        yield account
        t1 = time.time()
    c1, w1, r1, e1 = snapshot()
    computes = [
        (ss["start"], ss["stop"])
        for task in stream.data
        for ss in task.get("startstops", ())
        if ss.get("action") == "compute"
    ]
    account.wall = t1 - t0
    account.client = c1 - c0
    account.workers = [b - a for a, b in zip(w0, w1)]
    account.workers_runtime = [b - a for a, b in zip(r0, r1)]
    account.emulator = e1 - e0
    account.units = len(stream.data)
    if computes:
        account.before_first_unit = max(0.0, min(s for s, _ in computes) - t0)
        account.after_last_unit = max(0.0, t1 - max(e for _, e in computes))


def pin_process_to_core(pid: int, core: int) -> int:
    """Pin every thread of process ``pid`` to CPU ``core`` (Linux; threads it starts later
    inherit the pin from their creator). Returns how many threads were pinned."""
    pinned = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            os.sched_setaffinity(int(task.name), {core})
            pinned += 1
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
    return pinned


def pin_workers_to_cores(client: Any) -> dict[int, int] | None:
    """Give each worker process of ``client``'s LocalCluster a core of its own, as a
    cluster whose workers are one-CPU pods or jobs: worker ``i`` runs only on the ``i``-th
    CPU this process may use. ``None`` (nothing pinned) when there are fewer CPUs than
    workers or no CPU affinity on this platform; else {worker pid: core}."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    pids = sorted(set(client.run(os.getpid).values()))
    if len(pids) > len(cores):
        return None
    placement = dict(zip(pids, cores))
    for pid, core in placement.items():
        if pin_process_to_core(pid, core) == 0:
            return None
    return placement


# --- what the cores themselves allow -------------------------------------------------------

_ROWS: list[bytes] = []
_ROW_PIXELS = 6243  # a PS1 skycell row
_RICE_BLOCK = 32


def _prepare_rows() -> None:
    """Rice-code rows of sky-like noise once per process (outside any timing)."""
    import numpy as np
    from imagecodecs import rcomp_encode

    rng = np.random.default_rng(0)
    rows = rng.normal(0.0, 30.0, (256, _ROW_PIXELS)).astype(np.int32)
    _ROWS[:] = [bytes(rcomp_encode(row, nblock=_RICE_BLOCK)) for row in rows]


def _decode_for(seconds: float) -> int:
    """Rows decoded in ``seconds`` of wall time, one after the other."""
    import numpy as np
    from imagecodecs import rcomp_decode

    out = np.empty(_ROW_PIXELS, np.int32)
    done = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for row in _ROWS:
            rcomp_decode(row, shape=out.shape, dtype=np.int32, nblock=_RICE_BLOCK, out=out)
        done += len(_ROWS)
    return done


def core_scaling(processes: int | None = None, seconds: float = 1.0) -> float:
    """How much more tile decoding ``processes`` processes (default: one per core) do at
    once than one process alone, in ``seconds`` each: the most any job can scale on this
    machine's cores, before Python, Dask or I/O take their share."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    n = processes or psutil.cpu_count() or 1
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    with ProcessPoolExecutor(n, mp_context=context, initializer=_prepare_rows) as pool:
        list(pool.map(_decode_for, [0.05] * n))  # every process started and warm
        alone = pool.submit(_decode_for, seconds).result()
        together = sum(pool.map(_decode_for, [seconds] * n))
    return together / alone if alone else float("nan")
