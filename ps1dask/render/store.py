"""Pictures of the cutouts in a ps1dask store (a Dataset from :func:`ps1dask.open_store`).

``position`` is an index along the dataset's position axis as it is (input order for
:func:`ps1dask.open_store`), as for ``ds.ps1.wcs(i)``. Stack cutouts are read from
``stack_flux``; with ``epoch=k`` the ``k``-th warp of that filter from ``warp_flux``.
Only the pixels of the picture asked for are computed (lazily opened stores stay lazy);
reads use dask's synchronous scheduler, so these functions are safe to call from worker
threads (the viewer's executor, dask tasks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from ps1dask.conventions.filenames import FILTERS
from ps1dask.exceptions import InvalidParameterError, InvalidStoreError
from ps1dask.render.display import (
    COLOUR_METHODS,
    ByteArray,
    Display,
    composite,
    encode,
    grey,
    parse_colour_filters,
    to_pil,
)
from ps1dask.storage.layout import STATUS, STATUS_NAMES


def load(obj: xr.DataArray | xr.Dataset) -> Any:
    """Compute a (small) selection with dask's synchronous scheduler (thread-safe)."""
    return obj.compute(scheduler="synchronous")


def store_filters(ds: xr.Dataset) -> str:
    """The filters of a store, in its order (e.g. ``"giy"``): distinct letters of ``grizy``
    (they name pictures, pages and buttons), else :class:`InvalidStoreError`."""
    names = [str(f) for f in ds["filter"].values]
    if not all(f in FILTERS and len(f) == 1 for f in names) or len(set(names)) != len(names):
        shown = ", ".join(repr(f[:20]) for f in names[:6])
        raise InvalidStoreError(
            f"the store's filters ({shown}) are not distinct PS1 filters (letters of "
            f"{FILTERS}); it is damaged or not a ps1dask store"
        )
    return "".join(names)


def picture_format(fmt: str) -> str:
    """``jpg`` or ``png`` (``jpeg`` and upper case accepted); anything else is refused."""
    out = str(fmt).lower()
    out = "jpg" if out == "jpeg" else out
    if out not in ("jpg", "png"):
        raise InvalidParameterError(f"format {fmt!r}: use jpg or png")
    return out


def picture_filters(
    ds: xr.Dataset, filters: str | None, colour: Any, no_colour: bool, method: str
) -> tuple[str, tuple[str | None, ...] | None]:
    """The filters to draw one by one and the (red, green, blue) filters of the colour
    picture (None without colour) of a store; unknown filters or methods are refused."""
    if method not in COLOUR_METHODS:
        raise InvalidParameterError(f"colour method {method!r}: expected one of {COLOUR_METHODS}")
    available = store_filters(ds)
    chosen = available if not filters else "".join(filters.split(","))
    missing = [f for f in chosen if f not in available]
    if missing:
        raise InvalidParameterError(
            f"filters {''.join(missing)} are not in the store (it has {available})"
        )
    rgb = None
    if not no_colour and len(available) >= 2:
        rgb = tuple(parse_colour_filters(colour, available))
    return chosen, rgb


def has_warps(ds: xr.Dataset) -> bool:
    """True if the store holds warp pixels (``warp_flux``) with at least one epoch."""
    return "warp_flux" in ds.variables and int(ds.sizes.get("epoch", 0)) > 0


def has_stacks(ds: xr.Dataset) -> bool:
    """True if the store holds stack pixels (``stack_flux``); a store made by the warp job
    alone has none, and its pictures use the median of the good warps instead."""
    return "stack_flux" in ds.variables


def status_codes(ds: xr.Dataset) -> npt.NDArray[np.uint8]:
    """Status (position, filter) of what the pictures show: ``stack_status``, or for a
    store without stacks a summary of the warps (``ok`` if any warp is, ``no_data`` if
    there is none, else the status of most of them)."""
    if "stack_status" in ds.variables:
        return np.asarray(load(ds["stack_status"]).values, dtype=np.uint8)
    if "warp_status" not in ds.variables:
        return np.full(
            (ds.sizes["position"], ds.sizes["filter"]), STATUS["no_data"], dtype=np.uint8
        )
    warp = np.asarray(load(ds["warp_status"]).values, dtype=np.uint8)
    codes = np.arange(1, max(STATUS.values()) + 1)
    counts = (warp[..., None] == codes).sum(axis=2)  # (position, filter, code)
    out = (codes[np.argmax(counts, axis=-1)]).astype(np.uint8)
    out[counts[..., STATUS["ok"] - 1] > 0] = STATUS["ok"]
    none = counts.sum(axis=-1) == 0
    pending = (warp == STATUS["pending"]).any(axis=-1)
    if "n_epochs" in ds.variables:
        pending &= np.asarray(load(ds["n_epochs"]).values) > 0
    out[none] = np.where(pending[none], STATUS["pending"], STATUS["no_data"])
    return out


def _position_index(ds: xr.Dataset, position: int) -> int:
    n = int(ds.sizes["position"])
    i = int(position)
    if not -n <= i < n:
        raise InvalidParameterError(f"position {position} is not in 0..{n - 1}")
    return i % n


def _filter_index(ds: xr.Dataset, band: str) -> int:
    filters = store_filters(ds)
    if band not in filters or len(band) != 1:
        raise InvalidParameterError(f"filter {band!r} is not in the store's filters {filters!r}")
    return filters.index(band)


def warp_median(
    ds: xr.Dataset, position: int, band: str
) -> tuple[npt.NDArray[np.float64], float | None]:
    """Median of the good warps of one position and filter, on the scale of their median
    zero point (the picture of a store without stacks), and that zero point."""
    i = _position_index(ds, position)
    f = _filter_index(ds, band)
    names = [v for v in ("warp_flux", "warp_status", "warp_zeropoint") if v in ds.variables]
    sub = load(ds[names].isel(position=i, filter=f))
    flux = np.asarray(sub["warp_flux"].values, dtype=np.float64)
    good = (
        (sub["warp_status"].values == STATUS["ok"])
        if "warp_status" in sub
        else np.ones(len(flux), bool)
    )
    if not good.any():
        return np.full(flux.shape[1:], np.nan), None
    flux = flux[good]
    zp_ref = None
    if "warp_zeropoint" in sub:
        zps = np.asarray(sub["warp_zeropoint"].values, dtype=np.float64)[good]
        if np.isfinite(zps).all():
            zp_ref = float(np.median(zps))
            flux = flux * (10.0 ** (-0.4 * (zps - zp_ref)))[:, None, None]
    out = np.full(flux.shape[1:], np.nan)
    seen = np.isfinite(flux).any(axis=0)  # (no warnings.catch_warnings: not thread-safe)
    out[seen] = np.nanmedian(flux[:, seen], axis=0)
    return out, zp_ref


#: Longest side of the pixels a picture is made from: larger cutouts (mosaics, up to 14400
#: pixels) are shown block-averaged, read chunk by chunk, so a picture never loads them whole.
DISPLAY_MAX_SIDE = 2048


def _plane(image: xr.DataArray, max_side: int | None) -> npt.NDArray[np.float64]:
    """One 2-d image, block-averaged (NaN-aware) by the smallest integer factor that brings
    its longest side to ``max_side`` or less."""
    factor = 1
    if max_side:
        factor = max(1, math.ceil(max(image.sizes["y"], image.sizes["x"]) / int(max_side)))
    if factor > 1:
        image = image.coarsen(y=factor, x=factor, boundary="pad").mean()  # NaN-skipping
    return np.asarray(load(image).values, dtype=np.float64)


def cutout_pixels(
    ds: xr.Dataset,
    position: int,
    band: str,
    *,
    epoch: int | None = None,
    max_side: int | None = None,
) -> npt.NDArray[np.float64]:
    """Linear pixels (FITS row order, NaN off-image) of one stack cutout, or of warp
    ``epoch`` (0-based, of that position and filter) with ``epoch`` given. A store
    without stacks gives the median of the good warps for ``epoch=None``. With
    ``max_side``, a stack cutout larger than that (a mosaic) is block-averaged down to it
    (for display)."""
    i = _position_index(ds, position)
    f = _filter_index(ds, band)
    if epoch is None:
        if not has_stacks(ds):
            if has_warps(ds):
                return warp_median(ds, i, band)[0]
            raise InvalidParameterError("this store has neither stacks nor warps")
        return _plane(ds["stack_flux"][i, f], max_side)
    if not has_warps(ds):
        raise InvalidParameterError("this store has no warps (no warp_flux)")
    ne = int(ds.sizes["epoch"])
    k = int(epoch)
    if not 0 <= k < ne:
        raise InvalidParameterError(f"epoch {epoch} is not in 0..{ne - 1}")
    return np.asarray(load(ds["warp_flux"][i, f, k]).values, dtype=np.float64)


@dataclass(frozen=True)
class CutoutInfo:
    """What the labels of a picture say about a position."""

    index: int
    id: str
    ra: float
    dec: float
    skycell: str
    status: dict[str, str]  #: filter -> stack status name
    n_epochs: dict[str, int]  #: filter -> number of warps (empty without warps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "ra": self.ra,
            "dec": self.dec,
            "skycell": self.skycell,
            "status": self.status,
            "n_epochs": self.n_epochs,
        }


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


def position_table(
    ds: xr.Dataset, positions: Sequence[int] | slice | None = None
) -> list[CutoutInfo]:
    """:class:`CutoutInfo` of the given positions (all by default), reading only metadata."""
    n = int(ds.sizes["position"])
    if positions is None:
        idx = np.arange(n)
    elif isinstance(positions, slice):
        idx = np.arange(n)[positions]
    else:
        idx = np.asarray([_position_index(ds, p) for p in positions], dtype=np.int64)
    names = ["id", "ra", "dec", "skycell", "stack_status"]
    if "stack_status" not in ds.variables:
        names.append("warp_status")
    if "n_epochs" in ds.variables:
        names.append("n_epochs")
    sub = load(ds[[v for v in names if v in ds.variables]].isel(position=idx))
    codes = status_codes(sub)
    filters = store_filters(ds)
    out = []
    for row, i in enumerate(idx):
        status = {f: STATUS_NAMES.get(int(codes[row, k]), "unknown") for k, f in enumerate(filters)}
        epochs = (
            {f: int(sub["n_epochs"].values[row, k]) for k, f in enumerate(filters)}
            if "n_epochs" in sub
            else {}
        )
        out.append(
            CutoutInfo(
                index=int(i),
                id=_text(sub["id"].values[row]) if "id" in sub else str(int(i)),
                ra=float(sub["ra"].values[row]) if "ra" in sub else math.nan,
                dec=float(sub["dec"].values[row]) if "dec" in sub else math.nan,
                skycell=_text(sub["skycell"].values[row]) if "skycell" in sub else "",
                status=status,
                n_epochs=epochs,
            )
        )
    return out


def cutout_image(
    ds: xr.Dataset,
    position: int,
    band: str,
    display: Display | None = None,
    *,
    epoch: int | None = None,
    north_up: bool = True,
    size: int | None = None,
    **settings: Any,
) -> ByteArray:
    """8-bit grey picture ``(H, W)`` of one cutout (see :func:`ps1dask.render.grey`)."""
    pixels = cutout_pixels(ds, position, band, epoch=epoch, max_side=DISPLAY_MAX_SIDE)
    return grey(pixels, display, north_up=north_up, size=size, **settings)


def colour_image(
    ds: xr.Dataset,
    position: int,
    filters: str | Sequence[str] | None = None,
    display: Display | None = None,
    *,
    method: str = "lupton",
    epoch: int | None = None,
    north_up: bool = True,
    size: int | None = None,
    **settings: Any,
) -> ByteArray:
    """8-bit RGB picture ``(H, W, 3)`` of one position from three filters.

    ``filters`` = red, green, blue (e.g. ``"yig"``); default the reddest, middle and bluest
    of the store's filters (y/i/g for grizy, as the service). ``method`` ``"lupton"``
    (colours true to the bands' flux ratios, calibrated with ``stack_zeropoint``) or
    ``"fitscut"`` (the service's per-band scaling). ``epoch`` uses each filter's ``k``-th
    warp instead (warps of different filters are not simultaneous).
    """
    rgb = parse_colour_filters(filters, store_filters(ds))
    i = _position_index(ds, position)
    planes: list[npt.NDArray[np.float64] | None] = []
    zps: list[float | None] = []
    zp_var = "stack_zeropoint" if epoch is None else "warp_zeropoint"
    for band in rgb:
        if band is None:
            planes.append(None)
            zps.append(None)
            continue
        zp = None
        if epoch is None and not has_stacks(ds) and has_warps(ds):
            pixels, zp = warp_median(ds, i, band)
            planes.append(pixels)
            zps.append(zp)
            continue
        planes.append(cutout_pixels(ds, i, band, epoch=epoch, max_side=DISPLAY_MAX_SIDE))
        if zp_var in ds.variables:
            f = _filter_index(ds, band)
            sel = ds[zp_var][i, f] if epoch is None else ds[zp_var][i, f, int(epoch)]
            zp = float(load(sel).values)
        zps.append(zp)
    red, green, blue = planes
    return composite(
        red,
        green,
        blue,
        display,
        method=method,
        zeropoints=zps,
        north_up=north_up,
        size=size,
        **settings,
    )


def cutout_bytes(
    ds: xr.Dataset,
    position: int,
    band: str,
    display: Display | None = None,
    *,
    fmt: str = "png",
    epoch: int | None = None,
    size: int | None = None,
    quality: int = 90,
    **settings: Any,
) -> bytes:
    """PNG (default) or JPEG bytes of :func:`cutout_image`."""
    return encode(
        cutout_image(ds, position, band, display, epoch=epoch, size=size, **settings), fmt, quality
    )


def colour_bytes(
    ds: xr.Dataset,
    position: int,
    filters: str | Sequence[str] | None = None,
    display: Display | None = None,
    *,
    fmt: str = "png",
    method: str = "lupton",
    epoch: int | None = None,
    size: int | None = None,
    quality: int = 90,
    **settings: Any,
) -> bytes:
    """PNG (default) or JPEG bytes of :func:`colour_image`."""
    img = colour_image(
        ds, position, filters, display, method=method, epoch=epoch, size=size, **settings
    )
    return encode(img, fmt, quality)


def cutout_pil(
    ds: xr.Dataset, position: int, band: str, display: Display | None = None, **kwargs: Any
) -> Any:
    """:func:`cutout_image` as a :class:`PIL.Image.Image`."""
    return to_pil(cutout_image(ds, position, band, display, **kwargs))


def colour_pil(
    ds: xr.Dataset,
    position: int,
    filters: str | Sequence[str] | None = None,
    display: Display | None = None,
    **kwargs: Any,
) -> Any:
    """:func:`colour_image` as a :class:`PIL.Image.Image`."""
    return to_pil(colour_image(ds, position, filters, display, **kwargs))
