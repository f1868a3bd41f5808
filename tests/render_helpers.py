"""Stores for the rendering, gallery and viewer tests (made once per test session).

* a stack store made by ``ps1dask.cutouts`` from the emulator: filters g, i, y; 64 pixel
  cutouts centred on known emulator stars of skycell 1405.053 (a red one first), plus one
  position outside the PS1 footprint;
* a copy of it with warps added in the store's warp layout (``warp_flux`` (position,
  filter, epoch, y, x) NaN-padded, ``warp_mjd``, ``warp_status``, ``warp_zeropoint``,
  ``n_epochs``): each warp is the stack plus noise, with the central star's flux varying as
  a known sinusoid, and one blank epoch, so that light curves have something to show.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

import ps1dask
from ps1dask.storage import STATUS, quiet_zarr_warnings

#: Emulator stars (seed 0) in skycell 1405.053: (name, ra, dec, g, i, y).
STARS = [
    ("red", 332.70519, 2.16612, 19.26, 16.56, 15.93),
    ("orange", 332.6752, 2.27896, 17.54, 15.73, 15.42),
    ("white", 332.61741, 2.34971, 18.01, 17.75, 17.69),
    ("bright", 332.60795, 2.08618, 13.88, 13.17, 13.05),
    ("faint", 332.69945, 2.09932, 19.29, 18.57, 18.44),
]
OUTSIDE = ("south", 10.0, -60.0)  # below the PS1 3pi footprint
FILTERS = "giy"
SIZE = 64
#: Variability injected into the warps of every position's central star.
PERIOD_DAYS = 3.7
AMPLITUDE = 0.5  # fraction of the stack flux of the star
N_EPOCHS = (12, 9, 10)  # per filter g, i, y
BLANK_EPOCH = 2  # in every filter: status blank, all NaN

_lock = threading.Lock()
_cache: dict[str, Path] = {}


def positions_table() -> pd.DataFrame:
    rows = [(n, ra, dec) for n, ra, dec, *_ in STARS] + [OUTSIDE]
    return pd.DataFrame(rows, columns=["name", "ra", "dec"])


def stack_store(base: Path, emulator, client) -> Path:
    with _lock:
        if "stack" not in _cache:
            path = base / "stars.zarr"
            summary = ps1dask.cutouts(
                positions_table(),
                path,
                filters=FILTERS,
                size=SIZE,
                strategy="cutout",
                service=emulator.url,
                client=client,
                progress=False,
            )
            assert summary.statuses == {"ok": 3 * len(STARS), "outside_footprint": 3}, summary
            _cache["stack"] = path
        return _cache["stack"]


def warp_mjds(n: int, band_index: int) -> np.ndarray:
    rng = np.random.default_rng(100 + band_index)
    return np.sort(56000.0 + rng.uniform(0.0, 60.0, n))


def injected_amplitude(stack_image: np.ndarray) -> float:
    """Amplitude (counts) of the sinusoid added to the central star of a stack cutout."""
    h, w = stack_image.shape
    cy, cx = h // 2, w // 2
    sky = np.nanmedian(stack_image)
    return float(AMPLITUDE * np.nansum((stack_image - sky)[cy - 6 : cy + 7, cx - 6 : cx + 7]))


def add_warps(src: Path, dst: Path) -> Path:
    """Copy a stack store and add synthetic warps in the store layout (plan order)."""
    shutil.copytree(src, dst)
    with quiet_zarr_warnings():
        ds = xr.open_zarr(str(dst))  # plan order, as on disk
    flux = ds["stack_flux"].values.astype(np.float64)
    status = ds["stack_status"].values
    n, nf, h, w = flux.shape
    ne = max(N_EPOCHS)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = h // 2, w // 2
    psf = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 2.0**2))
    warp = np.full((n, nf, ne, h, w), np.nan, dtype=np.float32)
    mjd = np.full((n, nf, ne), np.nan)
    wstatus = np.zeros((n, nf, ne), dtype=np.uint8)
    zp = np.full((n, nf, ne), np.nan, dtype=np.float32)
    n_epochs = np.zeros((n, nf), dtype=np.int32)
    stack_zp = ds["stack_zeropoint"].values
    for f in range(nf):
        times = warp_mjds(N_EPOCHS[f], f)
        for p in range(n):
            if status[p, f] != STATUS["ok"]:
                continue
            n_epochs[p, f] = N_EPOCHS[f]
            image = flux[p, f]
            sky = np.nanmedian(image)
            amplitude = injected_amplitude(image)
            norm = psf / psf.sum()
            for k, t in enumerate(times):
                mjd[p, f, k] = t
                if k == BLANK_EPOCH:
                    wstatus[p, f, k] = STATUS["blank"]
                    continue
                wstatus[p, f, k] = STATUS["ok"]
                zp[p, f, k] = stack_zp[p, f]
                delta = amplitude * np.sin(2 * np.pi * (t - 56000.0) / PERIOD_DAYS)
                mad = np.nanmedian(np.abs(image - sky))
                noise = rng.normal(0.0, 0.5 * 1.4826 * mad + 1e-3, size=(h, w))
                warp[p, f, k] = image + delta * norm + noise
                warp[p, f, k][:, : 3 + k % 3] = np.nan  # a detector gap at the edge
    chunks = ds["stack_flux"].encoding.get("chunks") or (n, nf, h, w)
    pc = int(chunks[0])
    new = xr.Dataset(
        {
            "warp_flux": (
                ("position", "filter", "epoch", "y", "x"),
                warp,
                {"units": "count", "long_name": "warp flux, linear"},
            ),
            "warp_mjd": (
                ("position", "filter", "epoch"),
                mjd,
                {"units": "d", "long_name": "MJD (UTC) of mid-exposure"},
            ),
            "warp_status": (("position", "filter", "epoch"), wstatus),
            "warp_zeropoint": (("position", "filter", "epoch"), zp, {"units": "mag"}),
            "n_epochs": (("position", "filter"), n_epochs),
        }
    )
    encoding = {
        "warp_flux": {"chunks": (pc, nf, ne, h, w)},
        "warp_mjd": {"chunks": (pc, nf, ne)},
        "warp_status": {"chunks": (pc, nf, ne)},
        "warp_zeropoint": {"chunks": (pc, nf, ne)},
        "n_epochs": {"chunks": (pc, nf)},
    }
    with quiet_zarr_warnings():
        new.to_zarr(str(dst), mode="a", consolidated=True, encoding=encoding)
    return dst


def warp_store(base: Path, emulator, client) -> Path:
    src = stack_store(base, emulator, client)
    with _lock:
        if "warp" not in _cache:
            _cache["warp"] = add_warps(src, base / "stars-warps.zarr")
        return _cache["warp"]


def warp_only_store(base: Path, emulator, client) -> Path:
    """The warp store without its stack part (as the warp job alone writes it)."""
    src = warp_store(base, emulator, client)
    with _lock:
        if "warp_only" not in _cache:
            dst = base / "warps-only.zarr"
            with quiet_zarr_warnings():
                ds = xr.open_zarr(str(src)).load()
                stack = [v for v in ds.variables if str(v).startswith("stack_")]
                ds = ds.drop_vars(stack)
                for v in ds.variables.values():
                    v.encoding.clear()
                ds.to_zarr(str(dst), mode="w-", consolidated=True, zarr_format=3)
            _cache["warp_only"] = dst
        return _cache["warp_only"]
