"""Run per-position rendering over a store in parallel with Dask (bag of position chunks).

Tasks get the store's *path* and a list of position indices (input order), open the
store themselves (cached per process) and return plain Python results, so the same code
runs on the threaded scheduler (no client: the default), on a ``distributed.Client``, or
synchronously. Matplotlib is not thread-safe: :data:`PLOT_LOCK` serialises figure drawing
within a process (worker processes of a cluster still draw in parallel).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xarray as xr

from ps1dask.progress import compute_progress

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from ps1dask.storage.location import StoreLike

#: Serialises matplotlib drawing within one process.
PLOT_LOCK = threading.Lock()

_OPEN_LOCK = threading.Lock()
_OPEN: dict[tuple[str, float], xr.Dataset] = {}


def open_cached(path: StoreLike) -> xr.Dataset:
    """:func:`ps1dask.open_store` (input order), cached per process while the store's
    metadata is unchanged (for an object store: per URL, for the life of the process)."""
    from ps1dask.storage import open_store
    from ps1dask.storage.location import StoreLocation

    where = StoreLocation.of(path)
    meta = Path(where.url) / "zarr.json"
    stamp = meta.stat().st_mtime if where.is_local and meta.exists() else 0.0
    key = (where.url, stamp)
    with _OPEN_LOCK:
        ds = _OPEN.get(key)
        if ds is None:
            ds = open_store(where)
            _OPEN.clear()  # one store at a time is what callers use
            _OPEN[key] = ds
        return ds


def chunked(indices: Sequence[int], size: int) -> list[list[int]]:
    """``indices`` in consecutive lists of at most ``size``."""
    size = max(1, int(size))
    items = [int(i) for i in indices]
    return [items[k : k + size] for k in range(0, len(items), size)]


def map_positions(
    func: Callable[[xr.Dataset, int, int], Any],
    store: StoreLike,
    indices: Sequence[int],
    *,
    preload: Sequence[str] = (),
    client: Any = None,
    num_workers: int | None = None,
    partition_size: int | None = None,
) -> list[Any]:
    """``func(sub, k, i)`` for every position ``i`` of ``indices``, in parallel over chunks.

    Each task selects its chunk of positions ``sub = ds.isel(position=chunk)`` (``k`` is
    the index of ``i`` in ``sub``), reading the ``preload`` variables of the whole chunk
    at once (one read per Zarr chunk instead of one per position); other variables stay
    lazy (read per position by ``func``).

    ``client``: a ``distributed.Client`` (or a scheduler address) to run on; ``None`` runs
    on dask's threaded scheduler with ``num_workers`` threads (default: the CPU count);
    ``"sync"`` runs in this thread (debugging); those two show a progress bar (see
    :mod:`ps1dask.progress`). Results come back in the order of
    ``indices``. ``func`` must be picklable (a module-level function or a
    :func:`functools.partial` of one) to run on a cluster.
    """
    import dask.bag as db

    indices = [int(i) for i in indices]
    if not indices:
        return []
    workers = num_workers or os.cpu_count() or 2
    if partition_size is None:
        partition_size = max(1, min(32, -(-len(indices) // (2 * workers))))
    parts = chunked(indices, partition_size)
    from ps1dask.storage.location import StoreLocation

    path = StoreLocation.of(store)  # picklable, with its storage options
    bag = db.from_sequence(parts, npartitions=len(parts)).map(
        _run_chunk, func, path, tuple(preload)
    )
    if client is None:
        with compute_progress("ps1dask"):
            chunks = bag.compute(scheduler="threads", num_workers=workers)
    elif client == "sync":
        with compute_progress("ps1dask"):
            chunks = bag.compute(scheduler="synchronous")
    elif isinstance(client, str):
        import distributed

        with distributed.Client(client) as c:
            chunks = c.compute(bag, sync=True)
    else:
        chunks = client.compute(bag, sync=True)
    return [item for chunk in chunks for item in chunk]


#: Largest variable (bytes, for a task's chunk of positions) read whole before rendering.
PRELOAD_MAX_BYTES = 256 << 20


def _run_chunk(
    indices: list[int],
    func: Callable[[xr.Dataset, int, int], Any],
    path: StoreLike,
    preload: tuple[str, ...],
) -> list[Any]:
    sub = open_cached(path).isel(position=indices)
    # large arrays (mosaics) stay lazy: pictures read them block-averaged, chunk by chunk
    names = [v for v in preload if v in sub.variables and sub[v].nbytes <= PRELOAD_MAX_BYTES]
    if names:
        loaded = sub[names].compute(scheduler="synchronous")
        sub = sub.assign({v: loaded[v] for v in names})
    return [func(sub, k, i) for k, i in enumerate(indices)]
