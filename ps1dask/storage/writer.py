"""Writing one work unit's chunks (run inside tasks; never touches metadata)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import zarr

from ps1dask.exceptions import InvalidStoreError
from ps1dask.storage.arrays import quiet_zarr_warnings, zarr_array
from ps1dask.storage.layout import created_parts
from ps1dask.storage.location import StoreLike, StoreLocation


def write_unit_chunks(
    path: StoreLike,
    start: int,
    stop: int,
    images: Mapping[str, np.ndarray],
    status: np.ndarray,
    meta: Mapping[str, np.ndarray],
) -> None:
    """Write positions ``[start, stop)`` (plan order) of every array the unit owns.

    ``[start, stop)`` must cover whole chunks (the planner guarantees it). Images are written
    first (with ``meta``, the per-filter variables of ``STACK_FILTER_VARIABLES``) and the
    status last, so a unit killed midway still reads as pending and is redone.
    """
    _write_chunks(path, start, stop, {**images, **meta}, "stack_status", status)


def write_warp_chunks(
    path: StoreLike,
    start: int,
    stop: int,
    images: Mapping[str, np.ndarray],
    meta: Mapping[str, np.ndarray],
    status: np.ndarray,
) -> None:
    """Write positions ``[start, stop)`` of the warp arrays; the status last (see above)."""
    _write_chunks(path, start, stop, {**images, **meta}, "warp_status", status)


def _write_chunks(
    path: StoreLike,
    start: int,
    stop: int,
    arrays: Mapping[str, np.ndarray],
    status_name: str,
    status: np.ndarray,
) -> None:
    """Write ``arrays`` at positions ``[start, stop)``, then the part's status array: the
    status goes last so that a unit killed midway still reads as pending."""
    where = StoreLocation.of(path)
    with quiet_zarr_warnings(), where.errors("write"):
        # One read of the root's consolidated metadata opens every array: on an object
        # store, opening each array by itself costs a round trip (its zarr.json) per array
        # per unit. Nothing is cached between units, so a store made anew (resume=False)
        # is never written with the metadata of the one it replaced.
        group = zarr.open_group(where.zarr_store(), mode="r+", zarr_format=3)
        part = status_name.split("_")[0]
        if part not in created_parts(group.attrs):
            # a creation that failed or was interrupted: never write into it
            raise InvalidStoreError(
                f"{where}: its {part} part was not created (creation failed or interrupted); "
                "rerun the job to make it anew"
            )
        for name, data in arrays.items():
            array = _writer(zarr_array(group, name))
            array[start:stop] = data.astype(array.dtype, copy=False)
        _writer(zarr_array(group, status_name))[start:stop] = status.astype("uint8")


def _writer(array: zarr.Array) -> zarr.Array:
    """The array, set to write every chunk given: zarr would otherwise compare each chunk
    with the fill value first, to skip chunks that are all fill (rare here: a unit's chunks
    hold its cutouts). For float chunks that comparison is NaN tests of the whole chunk into
    new arrays as large as it: 13% of the page faults of the workers of a dense job
    (``ps1dask bench dense``, range). The values read back are the same."""
    return array.with_config({"write_empty_chunks": True})
