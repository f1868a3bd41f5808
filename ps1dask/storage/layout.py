"""The Zarr v3 store layout: variable names, statuses, chunking, creation and checks.

One store holds one job. The ``position`` axis is in *plan order* (positions grouped by
skycell, so that each work unit owns whole chunks and no chunk has two writers); its
coordinate ``position`` is the 0-based row of the input table, and :func:`open_store`
returns the dataset sorted back to input order. Only the client creates the store and
writes per-position metadata; tasks write their own chunks of image, status and zero-point
arrays (see :mod:`ps1dask.storage.writer`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from ps1dask.exceptions import InvalidParameterError, PS1DaskError

#: Per-(position, filter) status flags, CF style (``flag_values`` / ``flag_meanings``).
STATUS = {
    "pending": 0,
    "ok": 1,
    "outside_footprint": 2,
    "no_data": 3,
    "failed": 4,
    "blank": 5,
}
STATUS_NAMES = {v: k for k, v in STATUS.items()}
#: A unit whose statuses are all final is never fetched again (``failed`` is retried).
FINAL_STATUSES = frozenset({STATUS["ok"], STATUS["outside_footprint"], STATUS["no_data"], STATUS["blank"]})

#: Image type -> (store variable, dtype, units, description).
STACK_VARIABLES: dict[str, tuple[str, str, str, str]] = {
    "stack": ("stack_flux", "float32", "count", "stack flux, linear (asinh scaling removed)"),
    "stack.wt": ("stack_variance", "float32", "count2", "variance of stack_flux"),
    "stack.mask": ("stack_mask", "uint16", "1", "PS1 mask bits (0 = good; off-image = BLANK 0x8)"),
    "stack.exp": ("stack_exptime", "float32", "s", "exposure time map"),
    "stack.num": ("stack_ninputs", "float32", "1", "number of warps stacked"),
    "stack.expwt": ("stack_expweight", "float32", "s", "weighted exposure time map"),
}

#: Mask value written for pixels off the skycell image (the BLANK bit).
MASK_OFF_IMAGE = 0x8


class StoreMismatchError(PS1DaskError, ValueError):
    """An existing store was made for a different request."""


@dataclass(frozen=True)
class StackRequest:
    """What a stack job asks for; stored in the store's attrs to make reruns safe."""

    filters: str
    width: int
    height: int
    types: tuple[str, ...]
    n_positions: int
    positions_digest: str
    service_url: str

    def describe(self) -> str:
        return (
            f"filters={self.filters} size={self.width}x{self.height} types={','.join(self.types)} "
            f"positions={self.n_positions}"
        )


def positions_digest(ids: Sequence[str], ra: np.ndarray, dec: np.ndarray) -> str:
    """A digest of the position table (ids and coordinates to 1e-9 deg)."""
    h = hashlib.sha256()
    h.update("\x00".join(map(str, ids)).encode())
    h.update(np.round(np.asarray(ra, dtype=np.float64), 9).tobytes())
    h.update(np.round(np.asarray(dec, dtype=np.float64), 9).tobytes())
    return h.hexdigest()[:32]


def position_chunk_size(n_filters: int, width: int, height: int, target_bytes: int = 16 << 20) -> int:
    """Positions per chunk so a chunk of ``stack_flux`` is about ``target_bytes``."""
    per_position = max(1, n_filters * width * height * 4)
    return int(np.clip(target_bytes // per_position, 1, 256))


@dataclass
class StorePositions:
    """Per-position metadata in plan order, written once by the client."""

    input_row: np.ndarray
    id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    skycell: np.ndarray
    crval1: np.ndarray
    crval2: np.ndarray
    crpix1: np.ndarray
    crpix2: np.ndarray
    cutout_x0: np.ndarray
    cutout_y0: np.ndarray
    extra_attrs: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def quiet_zarr_warnings() -> Iterator[None]:
    """Silence zarr's notices about string dtypes (the zarr-extensions "string" type)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        warnings.filterwarnings("ignore", message=".*Consolidated metadata.*")
        yield


def create_stack_store(
    path: str | Path,
    request: StackRequest,
    positions: StorePositions,
    chunk: int,
    initial_status: np.ndarray,
    attrs: Mapping[str, Any],
) -> None:
    """Create the store: metadata, per-position variables and empty image arrays (client only)."""
    from ps1dask import __version__

    n = request.n_positions
    nf = len(request.filters)
    h, w = request.height, request.width
    pos_chunks = (chunk,)
    data_vars: dict[str, Any] = {}
    encoding: dict[str, dict[str, Any]] = {}
    for image_type in request.types:
        name, dtype, units, desc = STACK_VARIABLES[image_type]
        fill = MASK_OFF_IMAGE if dtype == "uint16" else np.nan
        data_vars[name] = xr.Variable(
            ("position", "filter", "y", "x"),
            da.full((n, nf, h, w), fill, dtype=dtype, chunks=(chunk, nf, h, w)),
            attrs={"units": units, "long_name": desc},
        )
        encoding[name] = {"chunks": (chunk, nf, h, w), "fill_value": fill}
    data_vars["stack_status"] = xr.Variable(
        ("position", "filter"),
        da.from_array(initial_status.astype("uint8"), chunks=(chunk, nf)),
        attrs={
            "flag_values": list(STATUS.values()),
            "flag_meanings": " ".join(STATUS),
            "long_name": "outcome per position and filter",
        },
    )
    encoding["stack_status"] = {"chunks": (chunk, nf), "fill_value": 0}
    data_vars["stack_zeropoint"] = xr.Variable(
        ("position", "filter"),
        da.full((n, nf), np.nan, dtype="float32", chunks=(chunk, nf)),
        attrs={
            "units": "mag",
            "long_name": "AB zero point: mag = -2.5 log10(stack_flux) + stack_zeropoint",
        },
    )
    encoding["stack_zeropoint"] = {"chunks": (chunk, nf), "fill_value": np.nan}

    per_position = {
        "id": (positions.id.astype(object), "position id (input id column or row number)", None),
        "ra": (positions.ra, "J2000 right ascension", "deg"),
        "dec": (positions.dec, "J2000 declination", "deg"),
        "skycell": (positions.skycell.astype(object), "PS1 skycell (skycell.PPPP.SSS)", None),
        "crval1": (positions.crval1, "cutout WCS CRVAL1 (TAN tangent point RA)", "deg"),
        "crval2": (positions.crval2, "cutout WCS CRVAL2 (TAN tangent point Dec)", "deg"),
        "crpix1": (positions.crpix1, "cutout WCS CRPIX1 (1-based)", "pixel"),
        "crpix2": (positions.crpix2, "cutout WCS CRPIX2 (1-based)", "pixel"),
        "cutout_x0": (positions.cutout_x0.astype("int32"), "0-based skycell column of cutout x=0", "pixel"),
        "cutout_y0": (positions.cutout_y0.astype("int32"), "0-based skycell row of cutout y=0", "pixel"),
    }
    coords: dict[str, Any] = {
        "filter": ("filter", list(request.filters), {"long_name": "PS1 filter"}),
        "position": (
            "position",
            positions.input_row.astype("int64"),
            {"long_name": "0-based row of the input position table"},
        ),
    }
    for name, (values, desc, units) in per_position.items():
        var_attrs = {"long_name": desc} | ({"units": units} if units else {})
        data_vars[name] = xr.Variable(("position",), values, attrs=var_attrs)
        encoding[name] = {"chunks": pos_chunks}
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(
        {
            "title": "Pan-STARRS1 cutouts made by ps1dask",
            "ps1dask_version": __version__,
            "created": now,
            "service_url": request.service_url,
            "cutout_width": w,
            "cutout_height": h,
            "pixel_scale_deg": 6.94444461259988e-05,
            "wcs_ctype": "RA---TAN,DEC--TAN",
            "wcs_note": "cutout WCS: CRVAL/CRPIX per position, CD = diag(-pixel_scale_deg, "
            "pixel_scale_deg), RADESYS FK5; ds.ps1.wcs(i) builds it",
            "position_order": "plan order (grouped by skycell); the 'position' coordinate is "
            "the input table row, and ps1dask.open_store() sorts back to input order",
            "ps1dask_request": json.dumps(asdict(request), sort_keys=True),
            **attrs,
        }
    )
    with quiet_zarr_warnings():
        ds.to_zarr(str(path), mode="w-", compute=False, zarr_format=3, consolidated=True, encoding=encoding)
        # statuses of positions the client already knows (outside the footprint) are data:
        # write them now, before any task runs.
        status = zarr.open_array(str(path), path="stack_status", mode="r+")
        status[:] = initial_status.astype("uint8")
        # to_zarr(compute=False) already wrote the numpy-backed coordinates and per-position
        # variables, so tasks only ever write their own chunks of the dask-backed arrays.


def read_request(path: str | Path) -> StackRequest | None:
    """The request a store was made for, or None if there is no ps1dask store there."""
    try:
        group = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        return None
    raw = group.attrs.get("ps1dask_request")
    if raw is None:
        raise StoreMismatchError(f"{path} exists but is not a ps1dask store; choose another path")
    data = json.loads(raw)
    data["types"] = tuple(data["types"])
    return StackRequest(**data)


def check_compatible(path: str | Path, request: StackRequest) -> bool:
    """True if a compatible store exists (resume), False if none; raise if it differs."""
    existing = read_request(path)
    if existing is None:
        return False
    if existing != request:
        diffs = [
            f"{k}: store has {getattr(existing, k)!r}, request has {getattr(request, k)!r}"
            for k in asdict(request)
            if getattr(existing, k) != getattr(request, k)
        ]
        raise StoreMismatchError(
            f"{path} was made for a different request ({'; '.join(diffs)}). "
            "Use another output path, or resume=False / --no-resume to overwrite it."
        )
    return True


def remove_store(path: str | Path) -> None:
    """Delete a store directory (only if it looks like a Zarr store)."""
    p = Path(path)
    if not p.exists():
        return
    if not (p / "zarr.json").exists():
        raise InvalidParameterError(f"refusing to delete {p}: it is not a Zarr store")
    shutil.rmtree(p)


def read_status(path: str | Path) -> np.ndarray:
    """The (position, filter) status array in plan order."""
    return np.asarray(zarr.open_array(str(path), path="stack_status", mode="r")[:])
