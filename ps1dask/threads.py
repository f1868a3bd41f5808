"""Threads that live as long as their process, for the leases' semaphore acquires.

Why
---
A Dask worker's statistical profiler (on by default: ``distributed.worker.profile``) calls
``sys._current_frames()`` on the worker's event loop every 10 ms while tasks run. On
CPython 3.11 that call holds the interpreter's thread-list lock while it may run the
cyclic GC, and a thread that starts or exits needs the same lock: when the collection
releases the GIL (a finalizer that waits on I/O), the event loop can deadlock against that
thread (CPython issue gh-106883; 3.12 runs the GC elsewhere), and every
``distributed.Semaphore`` call of the process then waits forever. (The deadlock full test
runs actually hit was another path of the same lock: see ``ps1dask.client.retry``.) A lease
pool that started a thread per semaphore acquire started and ended one thread per request
sent through the scheduler; on :class:`DaemonThreads` the acquires reuse idle threads.

Work units keep a thread pool each (``ps1dask.fetch.engine``): threads that outlive their
unit were tried, and kept about 0.4 GB more per worker process at its peak in
``bench dense`` (1.45 against 1.08 GB).

How
---
:class:`DaemonThreads` runs callables on daemon threads, starting one only when none is
idle (there is no cap, so a callable never queues behind others that wait on it). The
threads are daemons: a callable blocked for good (an acquire the scheduler never answers)
cannot hold up the interpreter's exit.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

__all__ = ["DaemonThreads", "shared_threads"]

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


def shared_threads(name: str) -> DaemonThreads:
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
