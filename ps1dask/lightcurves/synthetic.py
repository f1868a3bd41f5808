"""Synthetic warp stores with known truth, for tests, benchmarks and trying pipelines offline.

:func:`make_synthetic_store` writes a Zarr v3 store with the layout of a ps1dask store
(stacks and warps, see :mod:`ps1dask.storage`) holding one star per position at the cutout
position, of known AB magnitude and variability, observed at known epochs with Gaussian PSFs
of known width, sky and photon noise of known variance, cosmic rays, detector gaps, blank
and padding epochs. Nothing here touches the network, and the emulator is not needed: the
store is built directly with xarray.

Variability (as in the emulator, :mod:`ps1dask.emulator.sky`):

- ``constant``: ``flux = F``;
- ``periodic``: ``flux = F (1 + a sin(2 pi (t - 55000) / period + phase))`` (``a`` the
  fractional flux semi-amplitude);
- ``transient``: ``flux = F + F_peak * shape(t - peak_mjd)``, ``shape`` a Gaussian rise
  (``rise_days``) and an exponential (in magnitudes, ``decline_mag_per_day``) decline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ps1dask.conventions import (
    MaskBit,
    counts_to_microjansky,
    mid_exposure_mjd_utc,
    stack_zeropoint,
    warp_zeropoint,
)
from ps1dask.photometry import FWHM_PER_SIGMA, gaussian_pixel_psf
from ps1dask.storage.layout import quiet_zarr_warnings
from ps1dask.tessellation import PIXEL_SCALE_DEG, project

__all__ = ["SyntheticTruth", "make_synthetic_store", "true_flux_ujy"]

_PHASE_EPOCH_MJD = 55000.0
_PIXEL_ARCSEC = PIXEL_SCALE_DEG * 3600.0
_KINDS = ("constant", "periodic", "transient")
_STATUS_OK, _STATUS_FAILED, _STATUS_BLANK = 1, 4, 5


def true_flux_ujy(source: dict[str, Any] | pd.Series, band: str, mjd: Any) -> np.ndarray:
    """True flux (microjansky) of a synthetic source in ``band`` at UTC MJD(s) ``mjd``."""
    t = np.asarray(mjd, dtype=np.float64)
    mean = 3631e6 * 10.0 ** (-0.4 * float(source[f"mag_{band}"]))
    kind = source["kind"]
    if kind == "periodic":
        phase = 2 * np.pi * (t - _PHASE_EPOCH_MJD) / float(source["period"]) + float(
            source["phase"]
        )
        return mean * (1.0 + float(source["amplitude"]) * np.sin(phase))
    if kind == "transient":
        dt = t - float(source["peak_mjd"])
        with np.errstate(over="ignore"):
            shape = np.where(
                dt < 0,
                np.exp(-0.5 * (dt / float(source["rise_days"])) ** 2),
                10.0 ** (-0.4 * float(source["decline_mag_per_day"]) * np.maximum(dt, 0.0)),
            )
        peak = 3631e6 * 10.0 ** (-0.4 * float(source[f"peak_mag_{band}"]))
        return mean + peak * shape
    return np.full(t.shape, mean)


@dataclass
class SyntheticTruth:
    """What a synthetic store holds: one row per source and one per (source, filter, epoch)."""

    path: Path
    sources: pd.DataFrame  #: id, ra, dec, kind, mag_<f>, period, amplitude, phase, peak_mjd...
    epochs: pd.DataFrame  #: id, filter, epoch, mjd, ..., status, true_flux (uJy)
    filters: str
    size: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def source(self, source_id: str) -> pd.Series:
        return self.sources.set_index("id").loc[source_id].rename(source_id)

    def flux(self, source_id: str, band: str, mjd: Any) -> np.ndarray:
        """True flux (microjansky) of a source at UTC MJD(s)."""
        s = self.sources.set_index("id").loc[source_id]
        return true_flux_ujy(s, band, mjd)


def _epoch_times(rng: np.random.Generator, n: int, n_seasons: int) -> np.ndarray:
    seasons = rng.choice(n_seasons, size=n)
    t = 55000.0 + 365.25 * seasons + rng.uniform(0.0, 150.0, n) + rng.uniform(0.2, 0.5, n)
    return np.sort(t)


def make_synthetic_store(
    path: str | Path,
    *,
    n_positions: int = 8,
    filters: str = "gr",
    n_epochs: int = 20,
    size: int = 48,
    chunk: int = 4,
    epoch_chunk: int | None = 8,
    seed: int = 0,
    kinds: tuple[str, ...] | list[str] | None = None,
    mag_range: tuple[float, float] = (16.0, 19.0),
    sky_sigma: float = 15.0,
    exptime: float = 40.0,
    n_seasons: int = 4,
    blank_fraction: float = 0.05,
    failed_fraction: float = 0.0,
    gap_fraction: float = 0.1,
    cr_fraction: float = 0.3,
    padding: bool = True,
    stack: bool = True,
    variance: bool = True,
    mask: bool = True,
    psf_fwhm: bool = True,
    periodic_amplitude: tuple[float, float] = (0.2, 0.5),
    periods: tuple[float, float] = (0.3, 20.0),
) -> SyntheticTruth:
    """Write a synthetic warp (and stack) store at ``path`` and return its truth.

    Every (position, filter) has ``n_epochs`` epochs (fewer, at random, when ``padding``:
    the rest are NaN padding); ``blank_fraction`` of them are blank (status 5, all NaN),
    ``failed_fraction`` failed (status 4), ``gap_fraction`` have a detector gap (NaN columns,
    mask BLANK) crossing the aperture and ``cr_fraction`` a cosmic ray near the position
    (mask CR). ``kinds`` cycles over the positions (default constant, periodic, transient).
    Positions are stored in a shuffled "plan order" (the ``position`` coordinate is the
    input row), as the jobs do. Warp arrays are chunked ``(chunk, 1, epoch_chunk, H, W)``.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    kinds = tuple(kinds or _KINDS)
    bad = [k for k in kinds if k not in _KINDS]
    if bad:
        raise ValueError(f"unknown kinds {bad}; choose from {_KINDS}")
    nf, n, E, H, W = len(filters), int(n_positions), int(n_epochs), int(size), int(size)

    # -- sources -------------------------------------------------------------------------
    ra0, dec0 = 150.0, 2.0
    ids = np.array([f"src{i:04d}" for i in range(n)], dtype=object)
    ra = ra0 + rng.uniform(-0.2, 0.2, n)
    dec = dec0 + rng.uniform(-0.2, 0.2, n)
    kind = np.array([kinds[i % len(kinds)] for i in range(n)], dtype=object)
    mag_r = rng.uniform(*mag_range, n)
    colour = rng.uniform(0.2, 0.8, n)
    offsets = {
        "g": colour,
        "r": 0.0 * colour,
        "i": -0.4 * colour,
        "z": -0.55 * colour,
        "y": -0.65 * colour,
    }
    src: dict[str, Any] = {"id": ids, "ra": ra, "dec": dec, "kind": kind}
    for b in filters:
        src[f"mag_{b}"] = mag_r + offsets[b]
    log_p0, log_p1 = np.log(periods)
    src["period"] = np.where(
        kind == "periodic", np.exp(rng.uniform(float(log_p0), float(log_p1), n)), np.nan
    )
    src["amplitude"] = np.where(kind == "periodic", rng.uniform(*periodic_amplitude, n), np.nan)
    src["phase"] = np.where(kind == "periodic", rng.uniform(0, 2 * np.pi, n), np.nan)
    src["rise_days"] = np.where(kind == "transient", rng.uniform(2.0, 6.0, n), np.nan)
    src["decline_mag_per_day"] = np.where(kind == "transient", rng.uniform(0.03, 0.08, n), np.nan)
    peak_mag = mag_r - rng.uniform(1.0, 2.5, n)
    for b in filters:
        src[f"peak_mag_{b}"] = np.where(kind == "transient", peak_mag + offsets[b] * 0.3, np.nan)
    src["peak_mjd"] = np.full(n, np.nan)

    # -- epochs per (position, filter) --------------------------------------------------
    n_ep = np.full((n, nf), E, dtype=np.int16)
    if padding and E > 3:
        n_ep = (E - rng.integers(0, max(E // 4, 1) + 1, (n, nf))).astype(np.int16)
    mjd_obs_tai = np.full((n, nf, E), np.nan)
    for p in range(n):
        for f in range(nf):
            k = int(n_ep[p, f])
            mjd_obs_tai[p, f, :k] = np.round(_epoch_times(rng, k, n_seasons), 8)
    exp = np.where(np.isfinite(mjd_obs_tai), np.float32(exptime), np.nan).astype(np.float32)
    mjd = np.full((n, nf, E), np.nan)
    fin = np.isfinite(mjd_obs_tai)
    mjd[fin] = mid_exposure_mjd_utc(mjd_obs_tai[fin], exptime)
    # transients peak near one of their own epochs (so that warps catch them)
    for row in np.flatnonzero(kind == "transient"):
        t = mjd[row][np.isfinite(mjd[row])]
        src["peak_mjd"][row] = float(rng.choice(t)) + rng.uniform(-3.0, 3.0) if t.size else 55100.0
    sources = pd.DataFrame(src)

    fpa_zp = 24.7 + rng.normal(0.0, 0.05, (n, nf, E))
    zp = np.where(fin, fpa_zp + 2.5 * np.log10(exptime), np.nan).astype(np.float32)
    assert np.allclose(zp[fin], [warp_zeropoint(z, exptime) for z in fpa_zp[fin]], atol=1e-5)
    fwhm = np.where(fin, rng.uniform(0.8, 1.8, (n, nf, E)), np.nan).astype(np.float32)
    u = rng.random((n, nf, E))
    status = np.where(fin, _STATUS_OK, 0).astype(np.uint8)
    status[fin & (u < blank_fraction)] = _STATUS_BLANK
    status[fin & (u >= blank_fraction) & (u < blank_fraction + failed_fraction)] = _STATUS_FAILED

    # -- positions on the cutout grid ---------------------------------------------------
    crval1, crval2 = np.full(n, ra0), np.full(n, dec0)
    x, y = project(ra, dec, crval1, crval2, PIXEL_SCALE_DEG)
    frac_x, frac_y = rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n)
    xc, yc = W // 2 + frac_x, H // 2 + frac_y  # 0-based pixel of the position
    crpix1, crpix2 = xc + 1.0 - x, yc + 1.0 - y

    # -- pixels -------------------------------------------------------------------------
    shape = (n, nf, E, H, W)
    flux = np.full(shape, np.nan, np.float32)
    var = np.full(shape, np.nan, np.float32)
    msk = np.full(shape, int(MaskBit.BLANK), np.uint16)
    coverage = np.where(fin, 0.0, np.nan).astype(np.float32)
    true_flux = np.full((n, nf, E), np.nan)
    yy, xx = np.mgrid[0:H, 0:W]
    for p in range(n):
        s = sources.iloc[p]
        near = (xx - xc[p]) ** 2 + (yy - yc[p]) ** 2 <= 100.0
        for f, b in enumerate(filters):
            k = int(n_ep[p, f])
            if k == 0:
                continue
            tf = true_flux_ujy(s, b, mjd[p, f, :k])
            true_flux[p, f, :k] = tf
            ujy_per_count = counts_to_microjansky(1.0, zp[p, f, :k].astype(np.float64))
            counts = tf / ujy_per_count
            sig = fwhm[p, f, :k].astype(np.float64) / FWHM_PER_SIGMA / _PIXEL_ARCSEC
            psf = gaussian_pixel_psf((H, W), (xc[p], yc[p]), sig)
            model = counts[:, None, None] * psf
            sky = rng.normal(0.0, 0.2 * sky_sigma, k)[:, None, None]
            v = sky_sigma**2 + np.maximum(model, 0.0)
            img = sky + model + rng.normal(size=(k, H, W)) * np.sqrt(v)
            m = np.zeros((k, H, W), np.uint16)
            for e in range(k):
                st = status[p, f, e]
                if st != _STATUS_OK:
                    img[e] = np.nan
                    v[e] = np.nan
                    m[e] = int(MaskBit.BLANK)
                    continue
                if rng.random() < gap_fraction:  # a detector gap across the aperture
                    g0 = round(xc[p]) + int(rng.integers(-5, 4))
                    img[e, :, g0 : g0 + 3] = np.nan
                    v[e, :, g0 : g0 + 3] = np.nan
                    m[e, :, g0 : g0 + 3] = int(MaskBit.BLANK)
                if rng.random() < cr_fraction:  # a cosmic ray near the position
                    cy = round(yc[p]) + int(rng.integers(-6, 7))
                    cx = round(xc[p]) + int(rng.integers(-6, 7))
                    img[e, cy, cx] += 80.0 * sky_sigma
                    m[e, cy, cx] |= int(MaskBit.CR)
                usable = np.isfinite(img[e]) & (m[e] & int(MaskBit.BLANK | MaskBit.CR) == 0)
                coverage[p, f, e] = float(usable[near].mean())
            flux[p, f, :k] = img.astype(np.float32)
            var[p, f, :k] = v.astype(np.float32)
            msk[p, f, :k] = m
    # padding epochs are all NaN / BLANK, status 0 (already)

    data_vars: dict[str, Any] = {}
    enc: dict[str, dict[str, Any]] = {}
    ec = E if not epoch_chunk else min(int(epoch_chunk), E)
    wchunks = (chunk, 1, ec, H, W)
    data_vars["warp_flux"] = (
        ("position", "filter", "epoch", "y", "x"),
        flux,
        {"units": "count", "long_name": "warp flux, linear"},
    )
    enc["warp_flux"] = {"chunks": wchunks}
    if variance:
        data_vars["warp_variance"] = (
            ("position", "filter", "epoch", "y", "x"),
            var,
            {"units": "count2"},
        )
        enc["warp_variance"] = {"chunks": wchunks}
    if mask:
        data_vars["warp_mask"] = (("position", "filter", "epoch", "y", "x"), msk, {"units": "1"})
        enc["warp_mask"] = {"chunks": wchunks}
    pfe = ("position", "filter", "epoch")
    listed = np.round(mjd_obs_tai, 5)
    per_epoch = {
        "warp_mjd": (mjd, {"units": "d", "long_name": "UTC MJD at mid-exposure"}),
        "warp_mjd_obs_tai": (mjd_obs_tai, {"units": "d", "long_name": "MJD-OBS (TAI, start)"}),
        "warp_mjd_listed": (listed, {"units": "d"}),
        "warp_exptime": (exp, {"units": "s"}),
        "warp_zeropoint": (zp, {"units": "mag"}),
        "warp_coverage": (coverage, {"units": "1"}),
        "warp_status": (status, {"long_name": "outcome per warp"}),
    }
    if psf_fwhm:
        per_epoch["warp_psf_fwhm"] = (fwhm, {"units": "arcsec", "long_name": "PSF FWHM"})
    for name, (arr, attrs) in per_epoch.items():
        data_vars[name] = (pfe, arr, attrs)
        enc[name] = {"chunks": (chunk, nf, E)}
    data_vars["n_epochs"] = (("position", "filter"), n_ep)
    enc["n_epochs"] = {"chunks": (chunk, nf)}

    if stack:
        total_exp = np.nansum(np.where(np.isfinite(mjd), exptime, 0.0), axis=2)
        szp = np.array(
            [[stack_zeropoint(max(t, exptime)) for t in row] for row in total_exp], dtype=np.float32
        )
        sflux = np.zeros((n, nf, H, W), np.float32)
        svar = np.zeros((n, nf, H, W), np.float32)
        s_sig = 1.2 / FWHM_PER_SIGMA / _PIXEL_ARCSEC
        stack_sky = sky_sigma * 3.0  # counts of the (much larger) stack zero point
        for p in range(n):
            s = sources.iloc[p]
            psf = gaussian_pixel_psf((H, W), (xc[p], yc[p]), [s_sig])[0]
            for f, b in enumerate(filters):
                # stacks show the mean flux (a transient's quiescent baseline)
                mean_ujy = 3631e6 * 10.0 ** (-0.4 * float(s[f"mag_{b}"]))
                counts = mean_ujy / float(counts_to_microjansky(1.0, float(szp[p, f])))
                model = counts * psf
                k_gain = 10.0 ** (0.4 * (float(szp[p, f]) - 25.0)) / max(total_exp[p, f], 1.0)
                v = stack_sky**2 + np.maximum(model, 0.0) * k_gain
                sflux[p, f] = model + rng.normal(size=(H, W)) * np.sqrt(v)
                svar[p, f] = v
        sv = ("position", "filter", "y", "x")
        data_vars["stack_flux"] = (sv, sflux, {"units": "count"})
        data_vars["stack_variance"] = (sv, svar, {"units": "count2"})
        data_vars["stack_mask"] = (sv, np.zeros((n, nf, H, W), np.uint16), {"units": "1"})
        data_vars["stack_zeropoint"] = (("position", "filter"), szp, {"units": "mag"})
        data_vars["stack_status"] = (("position", "filter"), np.ones((n, nf), np.uint8))
        data_vars["stack_psf_fwhm"] = (
            ("position", "filter"),
            np.full((n, nf), 1.2, np.float32),
            {"units": "arcsec"},
        )
        for name in ("stack_flux", "stack_variance", "stack_mask"):
            enc[name] = {"chunks": (chunk, nf, H, W)}
        for name in ("stack_zeropoint", "stack_status", "stack_psf_fwhm"):
            enc[name] = {"chunks": (chunk, nf)}

    per_position = {
        "id": ids,
        "ra": ra,
        "dec": dec,
        "skycell": np.array(["skycell.1400.000"] * n, dtype=object),
        "crval1": crval1,
        "crval2": crval2,
        "crpix1": crpix1,
        "crpix2": crpix2,
        "cutout_x0": np.zeros(n, np.int32),
        "cutout_y0": np.zeros(n, np.int32),
    }
    for name, arr in per_position.items():
        data_vars[name] = (("position",), arr)
        enc[name] = {"chunks": (chunk,)}
    # plan order: a fixed shuffle of the input rows
    plan = rng.permutation(n)
    ds = xr.Dataset(
        data_vars,
        coords={"position": np.arange(n, dtype=np.int64), "filter": list(filters)},
    ).isel(position=plan)
    ds.attrs.update(
        title="synthetic ps1dask store (ps1dask.lightcurves.synthetic)",
        pixel_scale_deg=PIXEL_SCALE_DEG,
        cutout_width=W,
        cutout_height=H,
    )
    with quiet_zarr_warnings():
        ds.to_zarr(str(path), mode="w", zarr_format=3, consolidated=True, encoding=enc)

    rows = []
    for p in range(n):
        for f, b in enumerate(filters):
            for e in range(int(n_ep[p, f])):
                rows.append(
                    (
                        ids[p],
                        b,
                        e,
                        mjd[p, f, e],
                        mjd_obs_tai[p, f, e],
                        float(zp[p, f, e]),
                        float(fwhm[p, f, e]),
                        int(status[p, f, e]),
                        true_flux[p, f, e],
                    )
                )
    epochs = pd.DataFrame(
        rows,
        columns=[
            "id",
            "filter",
            "epoch",
            "mjd",
            "mjd_obs_tai",
            "zeropoint",
            "psf_fwhm",
            "status",
            "true_flux",
        ],
    )
    sources["frac_x"], sources["frac_y"] = frac_x, frac_y
    return SyntheticTruth(path=path, sources=sources, epochs=epochs, filters=filters, size=size)
