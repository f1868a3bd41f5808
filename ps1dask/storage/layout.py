"""The Zarr v3 store layout: variable names, statuses, chunking, creation and checks.

One store holds one job. The ``position`` axis is in *plan order* (positions grouped by
skycell, so that each work unit owns whole chunks and no chunk has two writers); its
coordinate ``position`` is the 0-based row of the input table, and :func:`open_store`
returns the dataset sorted back to input order. Only the client creates the store and
writes per-position metadata; tasks write their own chunks of image, status and zero-point
arrays (see :mod:`ps1dask.storage.writer`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dask.array as da
import dask.config
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xarray as xr
import zarr
from zarr.codecs import BloscCodec
from zarr.codecs.blosc import BloscCname, BloscShuffle

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.exceptions import InvalidParameterError, StoreMismatchError, UnfinishedStoreError
from ps1dask.storage.arrays import quiet_zarr_warnings, zarr_array
from ps1dask.storage.location import StoreLike, StoreLocation
from ps1dask.storage.times import MJD_UNITS

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
FINAL_STATUSES = frozenset(
    {STATUS["ok"], STATUS["outside_footprint"], STATUS["no_data"], STATUS["blank"]}
)

#: The CF version whose attributes the store follows (units, time, flags, coordinates).
CF_CONVENTIONS = "CF-1.10"

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


#: Warp image type -> (store variable, dtype, units, description).
WARP_VARIABLES: dict[str, tuple[str, str, str, str]] = {
    "warp": ("warp_flux", "float32", "count", "single-epoch warp flux, linear"),
    "warp.wt": ("warp_variance", "float32", "count2", "variance of warp_flux"),
    "warp.mask": ("warp_mask", "uint16", "1", "PS1 mask bits (0 = good; off-image = BLANK 0x8)"),
}


@dataclass(frozen=True)
class WarpRequest:
    """What a warp job asks for; stored in the store's attrs to make reruns safe."""

    filters: str
    width: int
    height: int
    types: tuple[str, ...]
    n_positions: int
    positions_digest: str
    service_url: str
    mjd_range: tuple[float, float] | None


def positions_digest(
    ids: Sequence[str] | np.ndarray | pa.Array, ra: np.ndarray, dec: np.ndarray
) -> str:
    """A digest of the position table (ids and coordinates to 1e-9 deg)."""
    h = hashlib.sha256()
    if isinstance(ids, pa.Array) and ids.type in (pa.string(), pa.large_string()):
        # the same bytes as below, joined by Arrow 2^20 ids at a time (10^7 ids: no Python str)
        for start in range(0, len(ids), 1 << 20):
            piece = ids.slice(start, 1 << 20)
            one_list = pa.ListArray.from_arrays(pa.array([0, len(piece)], pa.int32()), piece)
            joined = pc.binary_join(one_list, pa.scalar("\x00", piece.type))[0].as_buffer()
            h.update(b"\x00" if start else b"")
            h.update(joined if joined is not None else b"")
    else:
        h.update("\x00".join(map(str, ids)).encode())
    h.update(np.round(np.asarray(ra, dtype=np.float64), 9).tobytes())
    h.update(np.round(np.asarray(dec, dtype=np.float64), 9).tobytes())
    return h.hexdigest()[:32]


def position_chunk_size(
    n_filters: int, width: int, height: int, target_bytes: int = 16 << 20
) -> int:
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


def _position_variables(
    positions: StorePositions, filters: str, chunk: int
) -> tuple[dict[str, xr.Variable], dict[str, Any], dict[str, dict[str, Any]]]:
    """Per-position variables and coordinates shared by every part of a store."""
    per_position = {
        "ra": (positions.ra, "J2000 right ascension", "deg"),
        "dec": (positions.dec, "J2000 declination", "deg"),
        "skycell": (positions.skycell.astype(object), "PS1 skycell (skycell.PPPP.SSS)", None),
        "crval1": (positions.crval1, "cutout WCS CRVAL1 (TAN tangent point RA)", "deg"),
        "crval2": (positions.crval2, "cutout WCS CRVAL2 (TAN tangent point Dec)", "deg"),
        "crpix1": (positions.crpix1, "cutout WCS CRPIX1 (1-based)", "pixel"),
        "crpix2": (positions.crpix2, "cutout WCS CRPIX2 (1-based)", "pixel"),
        "cutout_x0": (
            positions.cutout_x0.astype("int32"),
            "0-based skycell column of cutout x=0",
            "pixel",
        ),
        "cutout_y0": (
            positions.cutout_y0.astype("int32"),
            "0-based skycell row of cutout y=0",
            "pixel",
        ),
    }
    coords: dict[str, Any] = {
        "filter": ("filter", list(filters), {"long_name": "PS1 filter"}),
        "position": (
            "position",
            positions.input_row.astype("int64"),
            {"long_name": "0-based row of the input position table"},
        ),
        # a coordinate, so that ds.set_xindex("id") makes ds.sel(id=...) work
        "id": (
            "position",
            np.asarray(positions.id, dtype=object),  # the plan's ids are Arrow strings
            {"long_name": "position id (input id column or row number)"},
        ),
    }
    data_vars: dict[str, xr.Variable] = {}
    encoding: dict[str, dict[str, Any]] = {"id": {"chunks": (chunk,)}}
    for name, (values, desc, units) in per_position.items():
        var_attrs = {"long_name": desc} | ({"units": units} if units else {})
        data_vars[name] = xr.Variable(("position",), values, attrs=var_attrs)
        encoding[name] = {"chunks": (chunk,)}
    return data_vars, coords, encoding


def store_variable(
    dims: tuple[str, ...],
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: str,
    fill: Any,
    attrs: dict[str, Any],
    *,
    pixels: bool = False,
) -> tuple[xr.Variable, dict[str, Any]]:
    """A lazily-filled array variable and its zarr encoding (nothing is computed).

    ``pixels`` arrays (cutout images) get ``ps1dask.store.pixel-compressor``; the small
    per-position arrays keep Zarr's default.
    """
    encoding: dict[str, Any] = {"chunks": chunks, "fill_value": fill}
    if pixels:
        encoding["compressors"] = [pixel_compressor()]
    return xr.Variable(
        dims, da.full(shape, fill, dtype=dtype, chunks=chunks), attrs=attrs
    ), encoding


def pixel_compressor() -> BloscCodec:
    """The Blosc codec of pixel arrays, from ``ps1dask.store.pixel-compressor``."""
    settings = dict(dask.config.get("ps1dask.store.pixel-compressor"))
    if set(settings) != {"cname", "clevel", "shuffle"}:
        raise InvalidParameterError(
            f"ps1dask.store.pixel-compressor must have exactly cname, clevel and shuffle "
            f"(got {sorted(settings)})"
        )
    try:
        return BloscCodec(
            cname=BloscCname(str(settings["cname"])),
            clevel=int(settings["clevel"]),
            shuffle=BloscShuffle(str(settings["shuffle"])),
        )
    except (ValueError, TypeError) as exc:
        raise InvalidParameterError(f"ps1dask.store.pixel-compressor: {exc}") from exc


def status_attrs(what: str) -> dict[str, Any]:
    return {
        "standard_name": "status_flag",
        "flag_values": list(STATUS.values()),
        "flag_meanings": " ".join(STATUS),
        "long_name": what,
    }


#: The attrs key of each part's request.
PART_ATTRS = {"stack": "ps1dask_request", "warp": "ps1dask_warp_request"}


def _store_base(request: Any) -> dict[str, Any]:
    """What every part of one store must share: the positions, filters and cutout size."""
    return {
        "n_positions": request.n_positions,
        "positions_digest": request.positions_digest,
        "filters": request.filters,
        "width": request.width,
        "height": request.height,
        "service_url": request.service_url,
    }


def _creation_step(step: str) -> None:
    """Called after each step of :func:`write_store_part` (``root``, ``arrays``,
    ``initial``, ``consolidated``): a no-op, where tests interrupt a creation."""


def created_parts(attrs: Mapping[str, Any]) -> set[str]:
    """The parts of a store whose creation finished: their request is in the root's attrs.

    The request is written last (after the part's arrays, its initial values and the
    consolidated metadata, in the same write as the latter's root ``zarr.json``), so it is
    the creation marker: a part without it was interrupted while being made, and nothing
    was fetched into it (units write only into created parts).
    """
    return {part for part, key in PART_ATTRS.items() if isinstance(attrs.get(key), str)}


def check_store_finished(path: StoreLike) -> None:
    """Raise :class:`UnfinishedStoreError` if the ps1dask store at ``path`` has no created
    part (:func:`created_parts`): its arrays, if any, hold only initial values. Stores
    without ``ps1dask_base`` (coadds, stores of other tools) are not judged here."""
    where = StoreLocation.of(path)
    with quiet_zarr_warnings(), where.errors("read"):
        # the root's own zarr.json: the marker is written there last
        attrs = zarr.open_group(where.zarr_store(), mode="r", use_consolidated=False).attrs
    if "ps1dask_base" in attrs and not created_parts(attrs):
        raise UnfinishedStoreError(
            f"store {where}: its creation never finished (the job that made it stopped "
            "before any cutout was written): rerun that job, which makes it anew"
        )


def write_store_part(
    path: StoreLike,
    part: str,
    request: Any,
    positions: StorePositions,
    chunk: int,
    data_vars: dict[str, xr.Variable],
    encoding: dict[str, dict[str, Any]],
    initial: Mapping[str, np.ndarray],
    *,
    extra_attrs: Mapping[str, Any] | None = None,
) -> None:
    """Create the store with this part, or add the part to a store of the same positions.

    Client only. Tasks later write only their own chunks of the dask-backed (lazy) arrays;
    ``initial`` values (e.g. statuses known before any fetch) are written here.

    Atomic as seen by a rerun: the root ``zarr.json`` (with ``ps1dask_base``) is written
    first, then the arrays and initial values, then the consolidated metadata, and last the
    part's request (the marker of :func:`created_parts`, with ``extra_attrs``). A store
    interrupted anywhere before that is made again: one without any created part is
    deleted and recreated, leftover arrays of an unfinished part are replaced. A created
    part is never rewritten here (the job resumes it, or refuses a changed request).
    """
    from ps1dask import __version__

    base = _store_base(request)
    root = StoreLocation.of(path)
    store = root.zarr_store()
    marker = {PART_ATTRS[part]: json.dumps(asdict(request), sort_keys=True), **(extra_attrs or {})}
    with quiet_zarr_warnings(), root.errors("write"):
        # not the consolidated metadata: it lists no array of an unfinished part
        group = zarr.open_group(store, mode="r", use_consolidated=False) if root.exists() else None
        if group is not None and "ps1dask_base" in group.attrs and not created_parts(group.attrs):
            # a creation interrupted before any part was finished: nothing was fetched
            # into it, so it is made anew (its request may even differ)
            root.remove()
            group = None
        if group is not None:
            raw_base = group.attrs.get("ps1dask_base")
            existing = json.loads(raw_base) if isinstance(raw_base, str) and raw_base else None
            if existing != base:
                raise StoreMismatchError(
                    f"{root} holds cutouts of other positions, filters or size ({existing}); "
                    f"adding {part}s needs the same ({base}). Use another store."
                )
            have_chunk = zarr_array(group, "ra").chunks[0]
            if have_chunk != chunk:
                raise StoreMismatchError(
                    f"{root} is chunked by {have_chunk} positions, not {chunk}"
                )
            # arrays of this part left by an interrupted creation (maybe of another shape)
            _remove_arrays(store, list(data_vars))
            ds = xr.Dataset(data_vars)
            # the existing attrs, without this part's marker (xarray replaces all attrs)
            ds.attrs.update({k: v for k, v in group.attrs.items() if k != PART_ATTRS[part]})
        else:
            position_vars, coords, pos_encoding = _position_variables(
                positions, request.filters, chunk
            )
            ds = xr.Dataset({**data_vars, **position_vars}, coords=coords)
            encoding = {**encoding, **pos_encoding}
            now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
            ds.attrs.update(
                {
                    "Conventions": CF_CONVENTIONS,
                    "title": "Pan-STARRS1 cutouts made by ps1dask",
                    "ps1dask_version": __version__,
                    "created": now,
                    "service_url": request.service_url,
                    "cutout_width": request.width,
                    "cutout_height": request.height,
                    "pixel_scale_deg": 6.94444461259988e-05,
                    "wcs_ctype": "RA---TAN,DEC--TAN",
                    "wcs_note": "cutout WCS: CRVAL/CRPIX per position, CD = diag(-pixel_scale_deg, "
                    "pixel_scale_deg), RADESYS FK5; ds.ps1.wcs(i) builds it",
                    "position_order": "plan order (grouped by skycell); the 'position' coordinate "
                    "is the input table row, and ps1dask.open_store() sorts back to input order",
                    "ps1dask_base": json.dumps(base, sort_keys=True),
                }
            )
            # the root first, with ps1dask_base: whatever is interrupted after it is
            # recognised as an unfinished ps1dask store on the rerun
            zarr.create_group(store, attributes=dict(ds.attrs), zarr_format=3)
        _creation_step("root")
        ds.to_zarr(
            store, mode="a", compute=False, zarr_format=3, consolidated=False, encoding=encoding
        )
        _creation_step("arrays")
        for name, values in initial.items():
            zarr.open_array(store, path=name, mode="r+")[:] = values
        _creation_step("initial")
        _mark_created(store, marker)


def _remove_arrays(store: Any, names: Sequence[str]) -> None:
    """Delete whatever is under the arrays ``names`` of the root group (metadata and chunks;
    nothing if absent)."""
    group = zarr.open_group(store, mode="r+", use_consolidated=False)
    for name in names:
        del group[name]


def _mark_created(store: Any, marker: Mapping[str, Any]) -> None:
    """Consolidate the metadata, then add ``marker`` to the root's attrs: one write of the
    root ``zarr.json`` that keeps the consolidated metadata, so a part marked as created
    always has it."""
    zarr.consolidate_metadata(store)
    _creation_step("consolidated")
    group = zarr.open_group(store, mode="r+")
    group.attrs.update(dict(marker))


#: Per-(position, filter) stack variables besides the status: name -> (dtype, fill, attrs).
#: The store creates, the stack fetcher fills (``StackUnitFetcher.on_cutout``) and the tasks
#: write every entry; adding a stored column is one entry here plus its value there.
STACK_FILTER_VARIABLES: dict[str, tuple[str, Any, dict[str, Any]]] = {
    "stack_zeropoint": (
        "float32",
        np.nan,
        {
            "units": "mag",
            "long_name": "AB zero point: mag = -2.5 log10(stack_flux) + stack_zeropoint",
        },
    ),
}


def empty_per_cell(
    variables: Mapping[str, tuple[str, Any, dict[str, Any]]], shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Arrays of ``shape`` for every variable of a table, filled with its fill value."""
    return {name: np.full(shape, fill, dtype=dtype) for name, (dtype, fill, _) in variables.items()}


def create_stack_store(
    path: StoreLike,
    request: StackRequest,
    positions: StorePositions,
    chunk: int,
    initial_status: np.ndarray,
) -> None:
    """Create the stack part of a store (and the store itself if needed). Client only."""
    n, nf = request.n_positions, len(request.filters)
    h, w = request.height, request.width
    data_vars: dict[str, xr.Variable] = {}
    encoding: dict[str, dict[str, Any]] = {}
    for image_type in request.types:
        name, dtype, units, desc = STACK_VARIABLES[image_type]
        fill = MASK_OFF_IMAGE if dtype == "uint16" else np.nan
        data_vars[name], encoding[name] = store_variable(
            ("position", "filter", "y", "x"),
            (n, nf, h, w),
            (chunk, nf, h, w),
            dtype,
            fill,
            {"units": units, "long_name": desc},
            pixels=True,
        )
    data_vars["stack_status"], encoding["stack_status"] = store_variable(
        ("position", "filter"),
        (n, nf),
        (chunk, nf),
        "uint8",
        0,
        status_attrs("outcome per position and filter"),
    )
    for name, (dtype, fill, attrs) in STACK_FILTER_VARIABLES.items():
        data_vars[name], encoding[name] = store_variable(
            ("position", "filter"), (n, nf), (chunk, nf), dtype, fill, attrs
        )
    write_store_part(
        path,
        "stack",
        request,
        positions,
        chunk,
        data_vars,
        encoding,
        {"stack_status": initial_status.astype("uint8")},
    )


def warp_epoch_chunk(
    chunk: int, n_epochs: int, width: int, height: int, target_bytes: int = 16 << 20
) -> int:
    """Epochs per chunk of the warp image arrays (one filter per chunk) for ~target_bytes."""
    per_epoch = max(1, chunk * width * height * 4)
    return int(np.clip(target_bytes // per_epoch, 1, max(n_epochs, 1)))


#: Per-epoch warp variables: name -> (dtype, fill, attrs).
WARP_EPOCH_VARIABLES: dict[str, tuple[str, Any, dict[str, Any]]] = {
    "warp_mjd": (
        "float64",
        np.nan,
        {
            # CF time: xarray decodes it to datetime64 (UTC); stored as MJD float days
            "units": MJD_UNITS,
            "calendar": "proleptic_gregorian",
            "standard_name": "time",
            "long_name": "MJD (UTC) at mid-exposure",
            "comment": "UTC(MJD-OBS + EXPTIME/2): PS1 MJD-OBS is TAI at the start of the exposure; "
            "TAI-UTC from ERFA's leap-second table (34 s before 2012-07-01, 35 s after). "
            "Stored as MJD days; ps1dask.storage.mjd_days() turns decoded datetimes back into "
            "MJD. warp_mjd_obs_tai keeps the TAI start as plain MJD days (CF has no TAI "
            "calendar that xarray decodes)",
        },
    ),
    "warp_mjd_obs_tai": (
        "float64",
        np.nan,
        {"units": "d", "long_name": "MJD-OBS of the warp header (TAI, exposure start)"},
    ),
    "warp_exptime": ("float32", np.nan, {"units": "s", "long_name": "exposure time"}),
    "warp_zeropoint": (
        "float32",
        np.nan,
        {
            "units": "mag",
            "long_name": "AB zero point: mag = -2.5 log10(warp_flux) + warp_zeropoint (FPA.ZP + 2.5 log10 EXPTIME)",
        },
    ),
    "warp_coverage": (
        "float32",
        np.nan,
        {"units": "1", "long_name": "fraction of usable pixels within 10 px of the position"},
    ),
    "warp_psf_fwhm": (
        "float32",
        np.nan,
        {"units": "arcsec", "long_name": "PSF FWHM from the warp header (NaN if absent)"},
    ),
}


def create_warp_store(
    path: StoreLike,
    request: WarpRequest,
    positions: StorePositions,
    chunk: int,
    listed_mjd: np.ndarray,
    n_epochs: np.ndarray,
) -> None:
    """Create the warp part of a store (and the store itself if needed). Client only.

    ``listed_mjd`` (position, filter, epoch) holds the listed MJD of each warp (NaN padding),
    ``n_epochs`` (position, filter) how many there are: both known from the image lists.
    """
    n, nf, ne = listed_mjd.shape
    h, w = request.height, request.width
    ec = warp_epoch_chunk(chunk, ne, w, h)
    data_vars: dict[str, xr.Variable] = {}
    encoding: dict[str, dict[str, Any]] = {}
    for image_type in request.types:
        name, dtype, units, desc = WARP_VARIABLES[image_type]
        fill = MASK_OFF_IMAGE if dtype == "uint16" else np.nan
        data_vars[name], encoding[name] = store_variable(
            ("position", "filter", "epoch", "y", "x"),
            (n, nf, ne, h, w),
            (chunk, 1, ec, h, w),
            dtype,
            fill,
            {"units": units, "long_name": desc},
            pixels=True,
        )
    per_epoch = (("position", "filter", "epoch"), (n, nf, ne), (chunk, nf, ne))
    for name, (dtype, fill, attrs) in WARP_EPOCH_VARIABLES.items():
        data_vars[name], encoding[name] = store_variable(*per_epoch, dtype, fill, attrs)
    data_vars["warp_status"], encoding["warp_status"] = store_variable(
        *per_epoch, "uint8", 0, status_attrs("outcome per position, filter and epoch (0 also pads)")
    )
    data_vars["warp_mjd_listed"], encoding["warp_mjd_listed"] = store_variable(
        *per_epoch,
        "float64",
        np.nan,
        {"units": "d", "long_name": "MJD of the warp's file name (service listing)"},
    )
    data_vars["n_epochs"], encoding["n_epochs"] = store_variable(
        ("position", "filter"),
        (n, nf),
        (chunk, nf),
        "int16",
        0,
        {"long_name": "number of warp epochs"},
    )
    write_store_part(
        path,
        "warp",
        request,
        positions,
        chunk,
        data_vars,
        encoding,
        {"warp_mjd_listed": listed_mjd, "n_epochs": n_epochs.astype("int16")},
    )


def read_request(path: StoreLike, part: str = "stack") -> Any:
    """The request a store's part was made for; None if there is no store or no such part."""
    root = StoreLocation.of(path)
    if not root.exists():
        return None
    with root.errors("read"):
        group = zarr.open_group(root.zarr_store(), mode="r")
    if "ps1dask_base" not in group.attrs:
        raise StoreMismatchError(f"{root} exists but is not a ps1dask store; choose another path")
    raw = group.attrs.get(PART_ATTRS[part])
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise StoreMismatchError(f"{root}: attribute {PART_ATTRS[part]} is not a ps1dask request")
    data = json.loads(raw)
    data["types"] = tuple(data["types"])
    if data.get("mjd_range") is not None:
        data["mjd_range"] = tuple(data["mjd_range"])
    cls = StackRequest if part == "stack" else WarpRequest
    return cls(**data)


def check_compatible(path: StoreLike, request: Any, part: str = "stack") -> bool:
    """True if the store already has this part for the same request (resume); False if it
    has no such part yet; raise :class:`StoreMismatchError` if the part differs."""
    existing = read_request(path, part)
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


def remove_store(path: StoreLike) -> None:
    """Delete a store (only if it looks like a Zarr store)."""
    StoreLocation.of(path).remove()


def store_chunk(path: StoreLike) -> int | None:
    """Positions per chunk of an existing ps1dask store (None if there is none)."""
    root = StoreLocation.of(path)
    if not root.exists() or not root.has("ra/zarr.json"):
        return None
    with quiet_zarr_warnings(), root.errors("read"):
        if not created_parts(zarr.open_group(root.zarr_store(), mode="r").attrs):
            return None  # an unfinished creation: made anew with the plan's chunking
    return int(zarr.open_array(root.zarr_store(), path="ra", mode="r").chunks[0])


def read_array_of(path: StoreLike, name: str) -> np.ndarray:
    """The whole array ``name`` of the store at ``path`` (client-side reads of statuses,
    epoch counts, listings)."""
    root = StoreLocation.of(path)
    with quiet_zarr_warnings(), root.errors("read"):
        return np.asarray(zarr.open_array(root.zarr_store(), path=name, mode="r")[:])


def read_status(path: StoreLike) -> np.ndarray:
    """The (position, filter) status array in plan order."""
    return read_array_of(path, "stack_status")
