"""The Zarr store: layout, chunk writes by tasks, and opening as xarray."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import xarray as xr

from ps1dask.exceptions import StoreMismatchError
from ps1dask.storage import accessor as _accessor  # noqa: F401  (registers ds.ps1)
from ps1dask.storage.layout import (
    FINAL_STATUSES,
    STACK_FILTER_VARIABLES,
    STACK_VARIABLES,
    STATUS,
    STATUS_NAMES,
    WARP_VARIABLES,
    StackRequest,
    WarpRequest,
    check_compatible,
    check_store_finished,
    create_stack_store,
    create_warp_store,
    quiet_zarr_warnings,
    read_request,
    read_status,
    store_chunk,
)
from ps1dask.storage.limits import check_store_limits
from ps1dask.storage.location import StoreLike, StoreLocation
from ps1dask.storage.times import mjd_days
from ps1dask.storage.writer import write_unit_chunks, write_warp_chunks


def open_store(
    path: StoreLike,
    *,
    input_order: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """Open a ps1dask store lazily as an :class:`xarray.Dataset`.

    With ``input_order`` (default) positions come in the order of the input table (the
    ``position`` coordinate, its row number); otherwise in the store's plan order (grouped
    by skycell, the order of its chunks: the fastest for whole-store scans). Plain
    ``xarray.open_zarr(path)`` opens the same store in plan order.

    ``id`` is a coordinate along ``position`` (``ds.set_xindex("id")`` then
    ``ds.sel(id="M1")``), and ``warp_mjd`` decodes to ``datetime64`` (UTC, mid-exposure);
    :func:`mjd_days` gives MJD days back.

    Parameters
    ----------
    path : str or Path
        The store's directory, or its URL (``s3://bucket/field.zarr``, ``gs://``,
        ``az://``, ``memory://``, ``file://``).
    input_order : bool
        Positions in the input table's order (else the store's plan order).
    storage_options : dict, optional
        For a URL: fsspec's options, as pandas and xarray take them (``endpoint_url``,
        ``key``, ``secret``, ``anon``, ``client_kwargs``, ...); S3 credentials may also come
        from the standard ``AWS_*`` environment variables.

    Returns
    -------
    xarray.Dataset
        The store, lazy (dask-backed).

    Raises
    ------
    UnfinishedStoreError
        The job that made the store stopped while creating it: rerun the job.
    InvalidStoreError
        The store declares sizes no ps1dask store has (damaged or hostile).
    """
    where = StoreLocation.of(path, storage_options)
    if not where.exists():
        raise FileNotFoundError(f"no store at {path}")
    with quiet_zarr_warnings():
        check_store_finished(where)
        check_store_limits(where)
        with where.errors("read"):
            ds = xr.open_zarr(where.zarr_store())
    if "id" in ds.data_vars:  # stores made before ids were a coordinate
        ds = ds.set_coords("id")
    if input_order:
        ds = ds.sortby("position")
    return ds


__all__ = [
    "FINAL_STATUSES",
    "STACK_FILTER_VARIABLES",
    "STACK_VARIABLES",
    "STATUS",
    "STATUS_NAMES",
    "WARP_VARIABLES",
    "StackRequest",
    "StoreLocation",
    "StoreMismatchError",
    "WarpRequest",
    "check_compatible",
    "create_stack_store",
    "create_warp_store",
    "mjd_days",
    "open_store",
    "quiet_zarr_warnings",
    "read_request",
    "read_status",
    "store_chunk",
    "write_unit_chunks",
    "write_warp_chunks",
]
