"""Typed access to a store's Zarr arrays: ``zarr.Group[name]`` may be an array or a group,
and every reader of a ps1dask store wants the array (so a group there is a damaged store)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr

from ps1dask.exceptions import InvalidStoreError

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from ps1dask.storage.location import StoreLike


@contextlib.contextmanager
def quiet_zarr_warnings() -> Iterator[None]:
    """Silence zarr's notices about string dtypes (the zarr-extensions "string" type)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        warnings.filterwarnings("ignore", message=".*Consolidated metadata.*")
        yield


def open_store_group(path: StoreLike, mode: Literal["r", "r+"] = "r") -> zarr.Group:
    """The root group of the store at ``path`` (a path, URL or
    :class:`~ps1dask.storage.location.StoreLocation`; zarr's format warnings silenced)."""
    from ps1dask.storage.location import StoreLocation

    where = StoreLocation.of(path)
    with quiet_zarr_warnings(), where.errors("open"):
        return zarr.open_group(where.zarr_store(), mode=mode)


def zarr_array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of ``group``; :class:`InvalidStoreError` if it is a group."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise InvalidStoreError(f"{name!r} in the store is a group, not an array: damaged store")
    return node


def read_array(group: zarr.Group, name: str, *index: Any) -> np.ndarray:
    """The values of array ``name`` at ``index`` (all of it without one) as a NumPy array."""
    with quiet_zarr_warnings():
        return np.asarray(zarr_array(group, name)[index if index else ...])


def float_attr(group: zarr.Group, key: str, default: float) -> float:
    """The number stored as attribute ``key`` of ``group`` (``default`` without one)."""
    value = group.attrs.get(key, default)
    if not isinstance(value, int | float):
        raise InvalidStoreError(f"store attribute {key!r} is {value!r}, not a number")
    return float(value)
