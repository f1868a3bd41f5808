"""A store created while the job's first units already fetch (issue 15).

Creating a store (its arrays, the per-position metadata, the initial statuses) takes the
client a few tenths of a second, and units need it only to write. So a new store is created
on a client thread while the units are submitted and fetch; a unit waits for the creation,
by a ``distributed.Event`` named for the job, only before writing its chunks. The client
sets the event when the creation is over, done or failed; a unit then writes only into a
store whose part is marked created (:func:`ps1dask.storage.layout.created_parts`, checked by
the chunk writer), and a failed creation fails the job with its own error. Nothing is
written before the store is complete, so a job killed during the creation leaves an
unfinished store that the rerun makes anew, and resume, idempotence and the status-last
rule are those of a store created first.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import dask.config
import distributed
from distributed.worker import thread_state

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.exceptions import JobAbortedError

__all__ = ["StoreCreation", "wait_for_store"]

#: Events this worker process has seen set (a unit after the first asks nobody).
_seen: set[str] = set()
_seen_lock = threading.Lock()


class StoreCreation:
    """Runs ``create`` on a client thread (from :meth:`start`) and sets the job's event
    when it is over.

    ``event`` is the name units wait on (:func:`wait_for_store`); :meth:`result` waits for
    the creation and raises what it raised.
    """

    def __init__(self, create: Callable[[], None], dask_client: distributed.Client) -> None:
        self.event = f"ps1dask-store-ready-{uuid.uuid4().hex}"
        self._client = dask_client
        self._create = create
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ps1dask-create-store", daemon=True)
        self._started = threading.Lock()

    def start(self) -> None:
        """Start the creation (once). Called once the units are submitted: the creation's
        Python work (encoding, zarr) would otherwise delay the submission, hence the first
        requests, while the units need the store only much later, to write. A job that
        probes the service first (``auto``) starts it before the probe, which mostly waits."""
        if self._started.acquire(blocking=False):
            self._thread.start()

    def _run(self) -> None:
        try:
            self._create()
        except BaseException as err:  # noqa: BLE001 - re-raised by result()
            self._error = err
        finally:
            # done or failed: the waiting units go on (and find the marker or not)
            with contextlib.suppress(OSError, distributed.TimeoutError):
                distributed.Event(self.event, client=self._client).set()

    def result(self) -> None:
        """Wait for the creation (started now if it was not); raise its error if it failed."""
        self.start()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Forget the event on the scheduler (after the job's units are over)."""
        with contextlib.suppress(OSError, distributed.TimeoutError):
            distributed.Event(self.event, client=self._client).clear()


@contextlib.contextmanager
def store_created(
    create: Callable[[], None] | None, dask_client: distributed.Client
) -> Iterator[StoreCreation | None]:
    """The creation of a new store (None: nothing to create) around the run of its units;
    on the way out, waits for it and raises its error first (the units' failures follow
    from it)."""
    if create is None:
        yield None
        return
    creation = StoreCreation(create, dask_client)
    try:
        yield creation
    except BaseException:
        creation.result()  # the creation's own error, if any, is the cause to report
        raise
    else:
        creation.result()
    finally:
        creation.close()


def _cancelled() -> bool:
    """Whether the Dask task running on this thread was cancelled (its client gone)."""
    try:
        worker = distributed.get_worker()
    except ValueError:
        return False
    key = getattr(thread_state, "key", None)
    if key is None:  # not on a task's thread: nothing to tell
        return False
    state = worker.state.tasks.get(key)
    return state is None or state.state in ("cancelled", "released", "forgotten")


def wait_for_store(event: str | None) -> None:
    """Before a unit writes: wait until the job's store creation is over (``event`` None:
    the store existed before the units). Gives up, as an aborted unit, if the task is
    cancelled meanwhile or after ``ps1dask.store.creation-timeout`` seconds."""
    if event is None or event in _seen:
        return
    timeout = float(dask.config.get("ps1dask.store.creation-timeout"))
    deadline = time.monotonic() + timeout
    ready = distributed.Event(event)
    while not ready.wait(timeout=1.0):
        if _cancelled():
            raise JobAbortedError("the job stopped while its store was being created")
        if time.monotonic() > deadline:
            raise JobAbortedError(
                f"the store was not created within {timeout:g} s "
                "(ps1dask.store.creation-timeout); rerun the job"
            )
    with _seen_lock:
        _seen.add(event)
