"""Sizes a store may declare: checked from its metadata before anything is read.

``xarray.open_zarr`` loads dimension coordinates at once and builds a chunk graph of every
array: a tiny (broken or hostile) store declaring 10^12 positions or a billion chunks would
exhaust memory or hang long before any pixel is read. Every store ps1dask writes stays far
below these caps.
"""

from __future__ import annotations

import math

import zarr

from ps1dask.exceptions import InvalidStoreError
from ps1dask.mosaic._core import MAX_MOSAIC_SIZE
from ps1dask.storage.location import StoreLike, StoreLocation

#: Largest length of each dimension (``position``: ten times the largest job we plan for).
DIMENSION_CAPS = {
    "position": 10**8,
    "filter": 5,
    "epoch": 100_000,
    "coadd_bin": 100_000,
    "y": MAX_MOSAIC_SIZE,  # mosaics; plain cutouts stop at 6000
    "x": MAX_MOSAIC_SIZE,
}
#: Cap of any other dimension.
OTHER_DIMENSION_CAP = 10**8
#: Most chunks of one array (10^7 positions in chunks of 1 position).
MAX_CHUNKS = 10**7


def check_store_limits(path: StoreLike) -> None:
    """Raise :class:`InvalidStoreError` unless every array of the store at ``path`` declares
    sane sizes: each dimension within its cap and of one length in every array, at most
    :data:`MAX_CHUNKS` chunks per array, and every dimension coordinate's last chunk written
    (the job writes coordinates whole when it creates the store)."""
    where = StoreLocation.of(path)
    with where.errors("read"):
        group = zarr.open_group(where.zarr_store(), mode="r")
    lengths: dict[str, tuple[int, str]] = {}
    for name, array in group.arrays():
        # zarr v2 arrays name no dimensions: never a ps1dask store, refused just below
        dims = getattr(array.metadata, "dimension_names", None) or ()
        if len(dims) != len(array.shape):
            raise InvalidStoreError(
                f"store {path}: array {name!r} has {len(array.shape)} dimensions but names "
                f"{len(dims)} ({dims}); not a ps1dask store, or damaged"
            )
        for dim, n in zip(dims, array.shape):
            cap = DIMENSION_CAPS.get(str(dim), OTHER_DIMENSION_CAP)
            if n > cap:
                raise InvalidStoreError(
                    f"store {path}: array {name!r} declares {n} along {dim!r}, more than any "
                    f"ps1dask store holds ({cap}); it is damaged or not a ps1dask store"
                )
            seen = lengths.setdefault(str(dim), (n, name))
            if seen[0] != n:
                raise InvalidStoreError(
                    f"store {path}: {dim!r} has {seen[0]} elements in {seen[1]!r} but {n} in "
                    f"{name!r}; the store is damaged"
                )
        grid = array.cdata_shape
        if math.prod(grid) > MAX_CHUNKS:
            raise InvalidStoreError(
                f"store {path}: array {name!r} is cut into {math.prod(grid)} chunks (grid "
                f"{grid}), more than {MAX_CHUNKS}; it is damaged or not a ps1dask store"
            )
        # Zarr does not write a chunk that holds only the fill value, so a missing chunk is
        # proof of damage only where that cannot be: the dimension coordinates of our stores
        # hold distinct labels (input rows, filters, bin numbers), so of the last two chunks
        # one at least is written, and a last chunk of two or more labels always is (a lone
        # label 0, e.g. one coadd bin, is not).
        if dims != (name,) or array.shape[0] == 0:
            continue
        in_last_chunk = array.shape[0] - (grid[0] - 1) * array.chunks[0]
        tail = [grid[0] - 1] if in_last_chunk >= 2 else [grid[0] - 1, grid[0] - 2]
        if min(tail) >= 0:
            keys = [array.metadata.encode_chunk_key((k,)) for k in tail]
            last = keys[0]
            if not any(where.has(f"{name}/{key}") for key in keys):
                raise InvalidStoreError(
                    f"store {path}: coordinate {name!r} declares {array.shape[0]} elements but "
                    f"its last chunk ({name}/{last}) is missing; the store is damaged or was "
                    "not made by ps1dask"
                )
