"""Threads that live as long as their process, for the work units' concurrent requests.

Why
---
A Dask worker's statistical profiler (on by default: ``distributed.worker.profile``) calls
``sys._current_frames()`` on the worker's event loop every 10 ms while tasks run. On
CPython 3.11 that call holds the interpreter's thread-list lock while it may run the
cyclic GC, and a thread that starts or exits needs the same lock: when the collection
releases the GIL (a finalizer that waits on I/O), the event loop can deadlock against that
thread (CPython issue gh-106883; 3.12 runs the GC elsewhere), and every
``distributed.Semaphore`` call of the process then waits forever. (The deadlock full test
runs actually hit was another path of the same lock: see ``ps1dask.client.retry``.) Work
units that started a pool of threads each, and a thread per semaphore acquire, started and
ended about a hundred threads per job and worker; here the threads are started once per
process, kept idle between units, and never exit.

How
---
:class:`DaemonThreads` runs callables on daemon threads, starting one only when none is
idle (there is no cap, so a callable never queues behind others that wait on it).
:func:`run_in_lanes` runs batches of tasks on the process's shared threads, each batch
(*lane*) with its own limit of tasks at once, as one ``ThreadPoolExecutor`` per batch did.
The threads are daemons: a task blocked for good (an acquire the scheduler never answers)
cannot hold up the interpreter's exit.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["DaemonThreads", "Lane", "run_in_lanes", "shared_threads"]

logger = logging.getLogger("ps1dask")


class DaemonThreads:
    """Daemon threads named ``{name}_{i}`` that run submitted callables and then wait for
    the next one; a thread is started only when none is idle."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0

    @property
    def started(self) -> int:
        """Threads started so far (they never exit)."""
        with self._lock:
            return self._started

    def submit(self, call: Callable[[], object]) -> None:
        """Run ``call`` on an idle thread, or on a new one if none is idle. What it raises
        is logged: callers that need its outcome catch it inside ``call``."""
        with self._lock:
            if self._idle:
                self._idle -= 1  # this thread is spoken for: it takes the call queued now
                start = False
            else:
                self._started += 1
                start = True
                index = self._started - 1
        if start:
            threading.Thread(target=self._serve, name=f"{self.name}_{index}", daemon=True).start()
        self._queue.put(call)

    def _serve(self) -> None:
        while True:
            call = self._queue.get()
            try:
                call()
            except BaseException:  # a thread of the pool must outlive its calls
                logger.exception("a task on %s threads failed", self.name)
            with self._lock:
                self._idle += 1


_SHARED: dict[str, DaemonThreads] = {}
_SHARED_LOCK = threading.Lock()


def shared_threads(name: str = "ps1dask-work") -> DaemonThreads:
    """This process's :class:`DaemonThreads` of that name (made on first use)."""
    with _SHARED_LOCK:
        threads = _SHARED.get(name)
        if threads is None:
            threads = _SHARED[name] = DaemonThreads(name)
        return threads


def _forget_after_fork() -> None:
    # a forked child has none of its parent's threads: it starts its own on first use
    global _SHARED_LOCK
    _SHARED.clear()
    _SHARED_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


@dataclass
class Lane:
    """Tasks run in order with at most ``limit`` at once (``limit`` >= 1); ``pending`` are
    those not started yet."""

    tasks: Sequence[Callable[[], object]]
    limit: int
    pending: deque[Callable[[], object]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"a lane's limit must be >= 1, got {self.limit}")
        self.pending = deque(self.tasks)


def run_in_lanes(lanes: Sequence[Lane], threads: DaemonThreads | None = None) -> None:
    """Run every lane's tasks on ``threads`` (default: :func:`shared_threads`), all lanes
    at once, and return when all are done.

    The first task to fail stops the start of further tasks (of every lane); the tasks
    already running finish, and then its error is raised. If the calling thread is
    interrupted while it waits, the same happens before the interruption goes on."""
    threads = threads if threads is not None else shared_threads()
    done = threading.Condition()
    errors: list[BaseException] = []
    state = {"running": 0, "stop": False}

    def runner(lane: Lane) -> None:
        try:
            while True:
                with done:
                    if state["stop"] or not lane.pending:
                        return
                    task = lane.pending.popleft()
                try:
                    task()
                except BaseException as err:  # noqa: BLE001 - raised by the caller
                    with done:
                        errors.append(err)
                        state["stop"] = True
        finally:
            with done:
                state["running"] -= 1
                done.notify_all()

    with done:
        for lane in lanes:
            n = min(lane.limit, len(lane.pending))
            state["running"] += n
            for _ in range(n):
                threads.submit(functools.partial(runner, lane))
        try:
            while state["running"] and not state["stop"]:
                done.wait()
        finally:
            state["stop"] = True
            while state["running"]:
                done.wait()
    if errors:
        raise errors[0]
