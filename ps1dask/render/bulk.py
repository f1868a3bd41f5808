"""Bulk JPEG/PNG export of a store: ``ps1dask images STORE -o DIR``.

One file per position and filter (``<id>_<filter>.jpg``), one colour composite per
position (``<id>_colour.jpg``), optionally one per warp epoch (``<id>_<filter>_e<NNN>.jpg``),
and ``index.csv`` listing every picture (position, id, ra, dec, skycell, filter, epoch,
status, file). Ids are made safe for file names (other characters become ``_``); where two
positions would get the same name, the position number is appended. Positions whose status
is not ``ok`` get a row in the index and no file.

The pictures are made in parallel with Dask: tasks of consecutive positions in the store's
chunk order, on the threaded scheduler by default or on a cluster (``client``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ps1dask.exceptions import InvalidParameterError
from ps1dask.render.display import Display, encode, grey
from ps1dask.render.parallel import map_positions
from ps1dask.render.store import (
    _text,
    colour_image,
    cutout_image,
    has_warps,
    load,
    picture_filters,
    picture_format,
    status_codes,
    store_filters,
)
from ps1dask.storage import mjd_days, open_store, quiet_zarr_warnings
from ps1dask.storage.fits_export import safe_file_stem
from ps1dask.storage.layout import STATUS, STATUS_NAMES

#: Columns of the index (``index.csv``).
INDEX_COLUMNS = (
    "position",
    "id",
    "ra",
    "dec",
    "skycell",
    "filter",
    "epoch",
    "mjd",
    "status",
    "file",
)


@dataclass(frozen=True)
class ExportOptions:
    """What to write (picklable: sent to the Dask tasks)."""

    outdir: str
    names: dict[int, str]  #: position -> file name stem
    filters: str
    colour: tuple[str | None, ...] | None
    method: str = "lupton"
    display: Display = field(default_factory=Display)
    fmt: str = "jpg"
    size: int | None = None
    warps: bool = False
    quality: int = 90


def safe_names(ids: list[str]) -> list[str]:
    """File-name stems for ids: unsafe characters to ``_``, duplicates get ``-<position>``."""
    stems = [safe_file_stem(s, "position") for s in ids]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else f"{s}-{i}" for i, s in enumerate(stems)]


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def export_position(sub: xr.Dataset, k: int, i: int, opts: ExportOptions) -> list[tuple[Any, ...]]:
    """Write the pictures of position ``k`` of ``sub`` (position ``i`` of the store);
    return its rows of the index."""
    out = Path(opts.outdir)
    stem = opts.names[i]
    filters = store_filters(sub)
    meta_names = ("id", "ra", "dec", "skycell", "stack_status", "warp_status", "n_epochs")
    row = load(sub[[v for v in meta_names if v in sub.variables]].isel(position=[k]))
    pid = _text(row["id"].values[0]) if "id" in row else str(i)
    ra = float(row["ra"].values[0]) if "ra" in row else np.nan
    dec = float(row["dec"].values[0]) if "dec" in row else np.nan
    cell = _text(row["skycell"].values[0]) if "skycell" in row else ""
    codes = status_codes(row)[0]
    status = {f: int(codes[n]) for n, f in enumerate(filters)}
    rows: list[tuple[Any, ...]] = []

    def add(band: str, epoch: int | None, mjd: float, code: int, name: str | None) -> None:
        rows.append(
            (
                i,
                pid,
                ra,
                dec,
                cell,
                band,
                -1 if epoch is None else epoch,
                mjd,
                STATUS_NAMES.get(code, "unknown"),
                name or "",
            )
        )

    ext = opts.fmt
    for band in opts.filters:
        code = status[band]
        name = None
        if code == STATUS["ok"]:
            name = f"{stem}_{band}.{ext}"
            img = cutout_image(sub, k, band, opts.display, size=opts.size)
            _write(out / name, encode(img, opts.fmt, opts.quality))
        add(band, None, np.nan, code, name)
    if opts.colour is not None:
        bands = [b for b in opts.colour if b is not None]
        ok = all(status[b] == STATUS["ok"] for b in bands)
        label = "".join(b or "-" for b in opts.colour)
        name = None
        if ok:
            name = f"{stem}_colour.{ext}"
            img = colour_image(sub, k, bands, opts.display, method=opts.method, size=opts.size)
            _write(out / name, encode(img, opts.fmt, opts.quality))
        worst = max((status[b] for b in bands), key=lambda c: c != STATUS["ok"])
        add(f"colour:{label}", None, np.nan, STATUS["ok"] if ok else worst, name)
    if opts.warps and has_warps(sub):
        names = [
            v for v in ("warp_flux", "warp_mjd", "warp_status", "n_epochs") if v in sub.variables
        ]
        meta = load(sub[names].isel(position=k))  # one read of this position's warps
        ne = int(sub.sizes["epoch"])
        for band in opts.filters:
            f = filters.index(band)
            n = int(meta["n_epochs"].values[f]) if "n_epochs" in meta else ne
            for e in range(min(n, ne)):
                code = (
                    int(meta["warp_status"].values[f, e]) if "warp_status" in meta else STATUS["ok"]
                )
                mjd = (
                    float(mjd_days(meta["warp_mjd"].values[f, e])) if "warp_mjd" in meta else np.nan
                )
                name = None
                if code == STATUS["ok"]:
                    name = f"{stem}_{band}_e{e:03d}.{ext}"
                    img = grey(meta["warp_flux"].values[f, e], opts.display, size=opts.size)
                    _write(out / name, encode(img, opts.fmt, opts.quality))
                add(band, e, mjd, code, name)
    return rows


def _export_task(sub: xr.Dataset, k: int, i: int, opts: ExportOptions) -> list[tuple[Any, ...]]:
    return export_position(sub, k, i, opts)


def write_images(
    store: str | Path,
    outdir: str | Path,
    *,
    fmt: str = "jpg",
    filters: str | None = None,
    colour: str | None = None,
    no_colour: bool = False,
    method: str = "lupton",
    display: Display | None = None,
    size: int | None = None,
    warps: bool = False,
    quality: int = 90,
    client: Any = None,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Write JPEG/PNG pictures of every position of ``store`` into ``outdir``.

    Parameters
    ----------
    store : str or Path
        The ps1dask store.
    outdir : str or Path
        Directory the pictures and ``index.csv`` are written to.
    fmt : str
        ``"jpg"`` or ``"png"``.
    filters : str, optional
        Grey pictures of these filters (default all of the store's).
    colour : str, optional
        Red, green and blue filters of the composite (default reddest/middle/bluest).
    no_colour : bool
        No colour composite.
    method : str
        Colour method, ``"lupton"`` or ``"fitscut"``.
    display : Display, optional
        Stretch settings.
    size : int, optional
        Resample to this longest side, pixels.
    warps : bool
        Also a picture of every good warp epoch.
    quality : int
        JPEG quality (Pillow's scale, 1 to 95).
    client : distributed.Client or str, optional
        A Dask client or scheduler address (default: the threaded scheduler).
    num_workers : int, optional
        Threads of the threaded scheduler when there is no client.

    Returns
    -------
    pandas.DataFrame
        The index of the pictures (also written as ``outdir/index.csv``).
    """
    fmt = picture_format(fmt)
    ds = open_store(store)
    chosen, rgb = picture_filters(ds, filters, colour, no_colour, method)
    if warps and not has_warps(ds):
        raise InvalidParameterError(f"{store} has no warps (no warp_flux); drop --warps")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    ids = (
        [_text(v) for v in load(ds["id"]).values]
        if "id" in ds.variables
        else [str(i) for i in range(ds.sizes["position"])]
    )
    opts = ExportOptions(
        outdir=str(out.resolve()),
        names=dict(enumerate(safe_names(ids))),
        filters=chosen,
        colour=rgb,
        method=method,
        display=display or Display(),
        fmt=fmt,
        size=size,
        warps=bool(warps),
        quality=int(quality),
    )
    # visit positions in the store's chunk (plan) order: each task reads few chunks
    with quiet_zarr_warnings():
        plan_rows = open_store(store, input_order=False)["position"].values
    order = [int(r) for r in plan_rows]
    results = map_positions(
        functools.partial(_export_task, opts=opts),
        store,
        order,
        preload=(
            "id",
            "ra",
            "dec",
            "skycell",
            "stack_status",
            "stack_flux",
            "stack_zeropoint",
            "warp_status",
            "n_epochs",
        ),
        client=client,
        num_workers=num_workers,
    )
    rows = [r for part in results for r in part]
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    index = index.sort_values(["position", "epoch", "filter"], kind="stable").reset_index(drop=True)
    index.to_csv(out / "index.csv", index=False)
    return index
