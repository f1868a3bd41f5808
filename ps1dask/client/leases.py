"""Scheduler leases of one ``distributed.Semaphore``, shared by the threads of one process.

Why
---
A request slot on a cluster is a lease of the scheduler's semaphore. Taking one and giving it
back through the scheduler costs a round trip each way, and between one request's answer and
the next request the slot sits idle: the releasing thread's ``Semaphore.release()`` reaches
the scheduler, which wakes some waiting ``acquire()``, whose grant travels back to its
process, which wakes its thread (about 9 ms a request, measured with ``ps1dask bench
sparse``). When another thread of the *same* process is already waiting for a slot, the
lease can go straight to it instead: it stays leased at the scheduler, and no round trip
separates the two requests.

How
---
:class:`LeasePool` holds the leases its process owns from one Semaphore; a :class:`Lease`
is lent to one thread at a time (its *token*). :meth:`LeasePool.take` lends a free lease
if there is one, else the thread waits on a condition; whenever the scheduler acquires
under way do not cover the waiting threads (and the process holds fewer than the
semaphore's ``max_leases``), a helper thread starts one more ``Semaphore.acquire()``. A
granted lease enters the pool and wakes a waiter; a lease granted when no thread waits any
more goes straight back to the scheduler. :meth:`LeasePool.give_back` hands a lease to a
waiting thread of this process if one has no lease yet and the lease has been handed over
fewer than ``max_handoffs`` times in a row; otherwise it releases it to the scheduler, so
that other processes and other jobs waiting there get their turn.

Invariant: every lease lent is a distinct lease this process holds at the scheduler
(``lent + free == held``, and ``held`` never exceeds what the scheduler granted). A lease
whose context is lost (see ``ClusterContext.lost`` in ``throttle.py``) is dropped with the
pool's ``forget`` (not released through a lost scheduler), and never lent again: the
taker checks its context before use, a waiter re-checks it at least every
:data:`WAIT_CHECK_S` seconds, and a failed acquire is re-raised in one waiting thread.

The Semaphore acquires run on the process's long-lived daemon threads
(:func:`ps1dask.threads.shared_threads`), one per acquire under way (at most ``max_leases``
per pool): an acquire the scheduler never answers cannot hold up the interpreter's exit,
and no thread starts or exits per request (see :mod:`ps1dask.threads` for why that
matters).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ps1dask.threads import shared_threads

__all__ = ["WAIT_CHECK_S", "Lease", "LeaseContext", "LeaseCounts", "LeasePool", "LeaseSemaphore"]

logger = logging.getLogger("ps1dask.client")

#: Longest wait (seconds) before a thread waiting for a lease re-checks its context: a
#: worker that closed or lost its scheduler stops its waiting threads within this time even
#: if no acquire under way reports it.
WAIT_CHECK_S = 0.25


class LeaseContext(Protocol):
    """Where the leases come from (``throttle.ClusterContext``)."""

    def lost(self) -> str | None: ...

    def check_alive(self) -> None: ...


class LeaseSemaphore(Protocol):
    """What the pool uses of ``distributed.Semaphore``."""

    max_leases: int
    name: str

    def acquire(self) -> Any: ...

    def release(self) -> Any: ...


@dataclass
class LeaseCounts:
    """How the slots of one semaphore name were obtained in this process (thread-safe).

    ``acquired``: slots on a lease just granted by the scheduler; ``handed_off``: slots on a
    lease handed over by another thread of this process; ``returned_unused``: leases the
    scheduler granted when no thread waited any more, returned unused. So
    ``acquired + handed_off`` is the slots taken (requests sent), and
    ``acquired + returned_unused`` the scheduler's grants to this process.
    """

    acquired: int = 0
    handed_off: int = 0
    returned_unused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, acquired: int = 0, handed_off: int = 0, returned_unused: int = 0) -> None:
        with self._lock:
            self.acquired += acquired
            self.handed_off += handed_off
            self.returned_unused += returned_unused

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "acquired": self.acquired,
                "handed_off": self.handed_off,
                "returned_unused": self.returned_unused,
            }


@dataclass(eq=False)
class Lease:
    """One scheduler lease held by this process, lent to one thread at a time."""

    pool: LeasePool
    #: Consecutive hand-offs from thread to thread since the scheduler granted it.
    handoffs: int = 0


class LeasePool:
    """The leases one process holds from one Semaphore, lent to its threads (module doc).

    Parameters
    ----------
    semaphore
        The ``distributed.Semaphore`` (or a stand-in with ``acquire``, ``release``,
        ``max_leases`` and ``name``).
    forget
        Drops one lease of ``semaphore`` locally without telling its (lost) scheduler.
    counts
        Where slots and returned grants are counted (shared by the pools of one name).
    """

    def __init__(
        self,
        semaphore: LeaseSemaphore,
        forget: Callable[[Any], None],
        counts: LeaseCounts | None = None,
    ) -> None:
        self.semaphore = semaphore
        self.counts = counts if counts is not None else LeaseCounts()
        self._forget = forget
        self._limit = int(semaphore.max_leases)
        self._cond = threading.Condition(threading.Lock())
        self._free: deque[Lease] = deque()
        self._errors: deque[BaseException] = deque()
        self._waiters = 0  # threads in take() without a lease
        self._pending = 0  # Semaphore.acquire() calls under way
        self._held = 0  # leases held at the scheduler: lent + free
        self._lent = 0

    # -- observation (tests) -------------------------------------------------------------

    def state(self) -> dict[str, int]:
        """Leases ``held`` at the scheduler, ``lent`` to threads, ``free``; ``waiters``,
        ``pending`` acquires."""
        with self._cond:
            return {
                "held": self._held,
                "lent": self._lent,
                "free": len(self._free),
                "waiters": self._waiters,
                "pending": self._pending,
            }

    # -- lending -------------------------------------------------------------------------

    def take(self, context: LeaseContext) -> Lease:
        """A lease for the calling thread (blocks until one is free).

        Raises what ``context.check_alive()`` raises once the context is lost, or the error
        of a failed ``Semaphore.acquire()``.
        """
        surplus: list[Lease] = []
        with self._cond:
            if self._free:
                lease = self._lend_locked()
            else:
                self._waiters += 1
                try:
                    while True:
                        if self._free:
                            lease = self._lend_locked()
                            break
                        if self._errors:
                            raise self._errors.popleft()
                        self._start_acquires_locked(context)
                        self._cond.wait(WAIT_CHECK_S)
                        if not self._free:
                            context.check_alive()
                finally:
                    self._waiters -= 1
                    if self._waiters == 0:
                        self._errors.clear()
                    surplus = self._surplus_locked()
        self._return(surplus, context)
        if context.lost() is not None:
            # Handed over (or granted) just before the scheduler was lost or the worker
            # began closing: not used, and not released through a lost scheduler.
            self._drop(lease)
            context.check_alive()
        return lease

    def give_back(self, lease: Lease, context: LeaseContext, max_handoffs: int) -> None:
        """Return a lease taken with :meth:`take`: to a waiting thread of this process (at
        most ``max_handoffs`` times in a row), else to the scheduler."""
        if context.lost() is not None:
            self._drop(lease)
            with self._cond:
                self._cond.notify_all()  # waiters: check your context now
            return
        with self._cond:
            self._lent -= 1
            handed = self._waiters > len(self._free) and lease.handoffs < max_handoffs
            if handed:
                lease.handoffs += 1
                self._free.append(lease)
                self._cond.notify()
            else:
                self._held -= 1
        if handed:
            # Let the woken thread have the GIL now: this thread goes on to decode its answer
            # and would otherwise keep the GIL for up to sys.getswitchinterval() (5 ms) while
            # the slot waits (measured: hand-off median 2 ms -> 0.15 ms in bench sparse).
            time.sleep(0)
            return
        self._release_to_scheduler()
        with self._cond:
            # Waiters left without a lease (the hand-off cap was reached): ask the scheduler
            # again, behind whoever already waits there.
            self._start_acquires_locked(context)

    # -- internals -----------------------------------------------------------------------

    def _lend_locked(self) -> Lease:
        lease = self._free.popleft()
        self._lent += 1
        if lease.handoffs:
            self.counts.add(handed_off=1)
        else:
            self.counts.add(acquired=1)
        return lease

    def _start_acquires_locked(self, context: LeaseContext) -> None:
        # Cover every thread waiting without a lease, but never ask for more leases than
        # the semaphore has.
        wanted = min(self._waiters - len(self._free), self._limit - self._held)
        while self._pending < wanted:
            self._pending += 1
            shared_threads("ps1dask-lease").submit(functools.partial(self._acquire_one, context))

    def _acquire_one(self, context: LeaseContext) -> None:
        """On a helper thread: one ``Semaphore.acquire()`` on behalf of the waiters."""
        try:
            granted = self.semaphore.acquire()
            if granted is not True:
                raise RuntimeError(f"could not acquire request semaphore {self.semaphore.name!r}")
        except BaseException as err:  # noqa: BLE001 - handed to a waiting thread to raise
            with self._cond:
                self._pending -= 1
                if self._waiters > len(self._errors):
                    self._errors.append(err)
                self._cond.notify()
            return
        lost = context.lost()
        with self._cond:
            self._pending -= 1
            if lost is None and self._waiters > len(self._free):
                self._held += 1
                self._free.append(Lease(self))
                self._cond.notify()
                return
        if lost is not None:
            self._forget(self.semaphore)
            with self._cond:
                self._cond.notify_all()
            return
        self.counts.add(returned_unused=1)
        self._release_to_scheduler()

    def _surplus_locked(self) -> list[Lease]:
        # Free leases no waiting thread will take (waiters gave up): back to the scheduler.
        surplus = []
        while len(self._free) > self._waiters:
            surplus.append(self._free.pop())
            self._held -= 1
        return surplus

    def _return(self, leases: list[Lease], context: LeaseContext) -> None:
        for _ in leases:
            if context.lost() is not None:
                self._forget(self.semaphore)
            else:
                self._release_to_scheduler()

    def _drop(self, lease: Lease) -> None:
        with self._cond:
            self._lent -= 1
            self._held -= 1
        self._forget(self.semaphore)

    def _release_to_scheduler(self) -> None:
        name = self.semaphore.name
        try:
            released = self.semaphore.release()
        except Exception:
            logger.exception("releasing a lease of %r failed; it will time out", name)
            released = False
        if released is False:
            logger.warning("lease of %r was not released at once; it will time out", name)
