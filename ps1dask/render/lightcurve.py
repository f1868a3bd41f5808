"""A quick light curve of one position from the warp pixels of a store (for pictures).

Forced aperture photometry at the cutout centre of every good warp epoch
(:func:`ps1dask.photometry.measure_aperture`), in microjansky where the store has warp zero
points (else in counts). This is what the gallery and the viewer plot; for science use
:func:`ps1dask.lightcurves`, which measures every position on the cluster.
"""

from __future__ import annotations

import math

import dask.config
import numpy as np
import pandas as pd
import xarray as xr

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.conventions.maskbits import bad_pixels
from ps1dask.conventions.photometry import counts_to_microjansky
from ps1dask.lightcurves import ERR_MODEL_SKY_POISSON, ERR_MODEL_VARIANCE
from ps1dask.photometry import default_aperture, measure_aperture
from ps1dask.render.store import _position_index, has_warps, load, store_filters
from ps1dask.storage.layout import STATUS
from ps1dask.storage.times import mjd_days

#: Columns of :func:`aperture_lightcurve` (those the plot helpers need come first).
LIGHTCURVE_COLUMNS = (
    "filter",
    "mjd",
    "flux",
    "flux_err",
    "id",
    "epoch",
    "background",
    "n_masked",
    "err_model",
)


def aperture_radii(height: int, width: int) -> tuple[float, tuple[float, float]]:
    """Aperture radius and sky annulus (pixels) that fit in a cutout: the configured
    aperture (:func:`ps1dask.photometry.default_aperture`, the one light curves use), shrunk
    proportionally in cutouts too small for its annulus."""
    radius, (inner, outer_default) = default_aperture()
    half = min(int(height), int(width)) / 2.0
    outer = min(outer_default, max(half - 1.0, 3.0))
    scale = outer / outer_default
    return radius * scale, (inner * scale, outer)


def aperture_lightcurve(
    ds: xr.Dataset,
    position: int,
    *,
    radius: float | None = None,
    annulus: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Light curve of one position: columns filter, mjd (UTC), flux, flux_err, id, epoch
    (index along the store's epoch axis), background, n_masked, err_model (as in
    :func:`ps1dask.lightcurves.lightcurves`: ``variance`` from warp_variance, else
    ``sky+poisson``, the annulus scatter plus the source's photon noise with
    ``ps1dask.photometry.warp-gain``); one row per warp with status ``ok``; ``df.attrs["flux_unit"]`` is ``"uJy"`` or ``"count"``. Empty (with the
    columns) for stores without warps."""
    empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in LIGHTCURVE_COLUMNS})
    empty["filter"] = empty["filter"].astype(object)
    empty["id"] = empty["id"].astype(object)
    empty["err_model"] = empty["err_model"].astype(object)
    if not has_warps(ds):
        empty.attrs["flux_unit"] = "count"
        return empty
    i = _position_index(ds, position)
    names = [
        v
        for v in (
            "warp_flux",
            "warp_variance",
            "warp_mask",
            "warp_mjd",
            "warp_status",
            "warp_zeropoint",
            "n_epochs",
            "id",
        )
        if v in ds.variables
    ]
    sub = load(ds[names].isel(position=i))
    flux = sub["warp_flux"].values
    nf, ne, h, w = flux.shape
    r_default, ann_default = aperture_radii(h, w)
    radius = float(radius or r_default)
    annulus = annulus or ann_default
    mjd = mjd_days(sub["warp_mjd"]) if "warp_mjd" in sub else np.full((nf, ne), np.nan)
    status = sub["warp_status"].values if "warp_status" in sub else np.full((nf, ne), STATUS["ok"])
    n_epochs = sub["n_epochs"].values if "n_epochs" in sub else np.full(nf, ne)
    zps = sub["warp_zeropoint"].values if "warp_zeropoint" in sub else None
    pid = sub["id"].values.item() if "id" in sub else str(i)
    pid = pid.decode() if isinstance(pid, bytes) else str(pid)
    gain = float(dask.config.get("ps1dask.photometry.warp-gain"))
    all_zp = zps is not None and bool(np.all(np.isfinite(zps[(status == STATUS["ok"])])))
    rows = []
    for f, band in enumerate(store_filters(ds)):
        for k in range(min(int(n_epochs[f]), ne)):
            if int(status[f, k]) != STATUS["ok"] or not math.isfinite(float(mjd[f, k])):
                continue
            image = flux[f, k]
            if not np.isfinite(image).any():
                continue
            var = sub["warp_variance"].values[f, k] if "warp_variance" in sub else None
            bad = bad_pixels(sub["warp_mask"].values[f, k]) if "warp_mask" in sub else None
            m = measure_aperture(
                image,
                var,
                radius=radius,
                annulus=annulus,
                bad=bad,
                gain=None if var is not None else gain,
            )
            value, err = m.flux, m.flux_err
            if all_zp and zps is not None:
                value = float(counts_to_microjansky(value, zps[f, k]))
                err = float(counts_to_microjansky(err, zps[f, k]))
            model = ERR_MODEL_VARIANCE if var is not None else ERR_MODEL_SKY_POISSON
            rows.append(
                (band, float(mjd[f, k]), value, err, pid, k, m.background, m.n_masked, model)
            )
    if not rows:
        empty.attrs["flux_unit"] = "uJy" if zps is not None else "count"
        return empty
    df = pd.DataFrame(rows, columns=list(LIGHTCURVE_COLUMNS))
    df = df.sort_values(["filter", "mjd"], kind="stable").reset_index(drop=True)
    df.attrs["flux_unit"] = "uJy" if all_zp else "count"
    return df
