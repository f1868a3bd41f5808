"""Warp stacking into the store: the client creates the arrays, one task per position chunk.

Arrays written (``coadd_bin`` is a new dimension, as long as the most bins any
(position, filter) has; bins past a pair's own count are NaN / 0):

- ``coadd_flux`` (position, filter, coadd_bin, y, x) float32, counts of ``coadd_zeropoint``;
- ``coadd_variance`` (same) float32, counts**2;
- ``coadd_ninputs`` (same) uint16, warps that entered each pixel after masks and clipping;
- ``coadd_mjd_start``, ``coadd_mjd_end`` (position, filter, coadd_bin) float64: UTC
  mid-exposure MJD of the first and last warp of the bin (NaN for unused bins);
- ``coadd_nepochs`` (position, filter, coadd_bin) int16: warps in the bin;
- ``coadd_zeropoint`` (position, filter) float32: AB mag = -2.5 log10(coadd_flux) + zp.

Rerunning :func:`coadd_warps` replaces all of them (the bins may change).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.coadd._core import (
    DEFAULT_COADD_ZEROPOINT,
    combine_epochs,
    epoch_bins,
    parse_bins,
)
from ps1dask.conventions import DEFAULT_BAD_BITS
from ps1dask.exceptions import InvalidParameterError
from ps1dask.photometry import FWHM_PER_SIGMA
from ps1dask.progress import compute_progress
from ps1dask.storage.arrays import float_attr, open_store_group, read_array, zarr_array
from ps1dask.storage.layout import quiet_zarr_warnings
from ps1dask.storage.location import StoreLike, StoreLocation
from ps1dask.tessellation import HEADER_CDELT_DEG, PIXEL_SCALE_DEG

PIXEL_ARCSEC = PIXEL_SCALE_DEG * 3600.0

logger = logging.getLogger("ps1dask.coadd")

#: Every array a coadd run writes (removed first by a rerun).
COADD_VARIABLES = (
    "coadd_flux",
    "coadd_variance",
    "coadd_ninputs",
    "coadd_mjd_start",
    "coadd_mjd_end",
    "coadd_nepochs",
    "coadd_zeropoint",
    "coadd_bin",
)
_OK = 1
#: Default memory budget of one task's warp reads (bytes).
DEFAULT_MEMORY_BYTES = 256 << 20


@dataclass(frozen=True)
class CoaddSpec:
    """What every coadd task needs (small, picklable)."""

    path: StoreLocation
    bins: None | str | float
    n_bins: int
    clip_sigma: float | None
    clip_fraction: float | None
    bad_bits: int
    weighting: str
    memory_bytes: int
    has_variance: bool
    has_mask: bool
    has_psf: bool
    use_stack_zeropoint: bool


@dataclass
class CoaddSummary:
    """What :func:`coadd_warps` did."""

    store: str
    bins: str
    n_bins: int
    n_positions: int
    n_coadds: int  #: (position, filter, bin) coadds with at least one input pixel
    tasks: int
    seconds: float
    zeropoint: str
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"store      {self.store}\n"
            f"bins       {self.bins} ({self.n_bins} per position and filter at most)\n"
            f"coadds     {self.n_coadds} from {self.n_positions} positions, {self.tasks} tasks\n"
            f"zeropoint  {self.zeropoint}\n"
            f"time       {self.seconds:.1f} s"
        )


def _chunk_bins(path: StoreLocation, start: int, stop: int, bins: Any) -> int:
    """Most bins any (position, filter) of positions [start, stop) has."""
    g = open_store_group(path)
    with quiet_zarr_warnings():
        mjd = read_array(g, "warp_mjd", slice(start, stop))
        status = read_array(g, "warp_status", slice(start, stop)) if "warp_status" in g else None
        n_ep = read_array(g, "n_epochs", slice(start, stop))
    best = 0
    for p in range(mjd.shape[0]):
        for f in range(mjd.shape[1]):
            k = int(n_ep[p, f])
            if k <= 0:
                continue
            use = None if status is None else status[p, f, :k] == _OK
            labels = epoch_bins(mjd[p, f, :k], use, bins)
            best = max(best, int(labels.max()) + 1)
    return best


def coadd_chunk(bounds: tuple[int, int], spec: CoaddSpec) -> dict[str, Any]:
    """Compute and write the coadds of positions [start, stop) (whole chunks): the task."""
    start, stop = int(bounds[0]), int(bounds[1])
    g = open_store_group(spec.path)
    with quiet_zarr_warnings():
        flux_arr = zarr_array(g, "warp_flux")
        var_arr = zarr_array(g, "warp_variance") if spec.has_variance else None
        mask_arr = zarr_array(g, "warp_mask") if spec.has_mask else None
        pos = slice(start, stop)
        n_ep = read_array(g, "n_epochs", pos).astype(np.int64)
        mjd = read_array(g, "warp_mjd", pos)
        zp = read_array(g, "warp_zeropoint", pos).astype(np.float64)
        status = read_array(g, "warp_status", pos) if "warp_status" in g else None
        psf = read_array(g, "warp_psf_fwhm", pos).astype(np.float64) if spec.has_psf else None
        zp_common = np.full(n_ep.shape, DEFAULT_COADD_ZEROPOINT)
        if spec.use_stack_zeropoint:
            szp = read_array(g, "stack_zeropoint", pos).astype(np.float64)
            sst = read_array(g, "stack_status", pos) if "stack_status" in g else np.ones_like(n_ep)
            zp_common = np.where(np.isfinite(szp) & (sst == _OK), szp, DEFAULT_COADD_ZEROPOINT)
    n = stop - start
    nf = n_ep.shape[1]
    _, _, _, h, w = flux_arr.shape
    nb = spec.n_bins
    out_flux = np.full((n, nf, nb, h, w), np.nan, np.float32)
    out_var = np.full((n, nf, nb, h, w), np.nan, np.float32)
    out_n = np.zeros((n, nf, nb, h, w), np.uint16)
    out_t0 = np.full((n, nf, nb), np.nan)
    out_t1 = np.full((n, nf, nb), np.nan)
    out_ne = np.zeros((n, nf, nb), np.int16)
    n_coadds = 0
    per_image = h * w * (4 + (4 if var_arr is not None else 0) + (2 if mask_arr is not None else 0))
    for f in range(nf):
        e_max = int(n_ep[:, f].max(initial=0))
        if e_max == 0:
            continue
        # positions read together: as many as the memory budget allows (at least one)
        group = int(np.clip(spec.memory_bytes // max(per_image * e_max * 4, 1), 1, n))
        for p0 in range(0, n, group):
            p1 = min(p0 + group, n)
            ps = slice(start + p0, start + p1)
            with quiet_zarr_warnings():
                fl = np.asarray(flux_arr[ps, f, :e_max])
                va = None if var_arr is None else np.asarray(var_arr[ps, f, :e_max])
                ma = None if mask_arr is None else np.asarray(mask_arr[ps, f, :e_max])
            for q in range(p1 - p0):
                p = p0 + q
                k = int(n_ep[p, f])
                if k <= 0:
                    continue
                use = np.isfinite(zp[p, f, :k])
                if status is not None:
                    use &= status[p, f, :k] == _OK
                labels = epoch_bins(mjd[p, f, :k], use, spec.bins)
                for b in range(int(labels.max(initial=-1)) + 1):
                    sel = np.flatnonzero(labels == b)
                    scale = 10.0 ** (0.4 * (zp_common[p, f] - zp[p, f, sel]))
                    co = combine_epochs(
                        fl[q, sel],
                        None if va is None else va[q, sel],
                        None if ma is None else ma[q, sel],
                        scale=scale,
                        psf_sigma=None
                        if psf is None
                        else psf[p, f, sel] / FWHM_PER_SIGMA / PIXEL_ARCSEC,
                        bad_bits=spec.bad_bits,
                        clip_sigma=spec.clip_sigma,
                        clip_fraction=spec.clip_fraction,
                        weighting=spec.weighting,
                    )
                    out_flux[p, f, b], out_var[p, f, b], out_n[p, f, b] = (
                        co.flux,
                        co.variance,
                        co.ninputs,
                    )
                    out_t0[p, f, b] = float(np.nanmin(mjd[p, f, sel]))
                    out_t1[p, f, b] = float(np.nanmax(mjd[p, f, sel]))
                    out_ne[p, f, b] = sel.size
                    n_coadds += int(co.n_epochs > 0)
            del fl, va, ma
    with quiet_zarr_warnings():
        root = spec.path.zarr_store()
        for name, data in (
            ("coadd_flux", out_flux),
            ("coadd_variance", out_var),
            ("coadd_ninputs", out_n),
            ("coadd_mjd_start", out_t0),
            ("coadd_mjd_end", out_t1),
            ("coadd_nepochs", out_ne),
            ("coadd_zeropoint", zp_common.astype(np.float32)),
        ):
            zarr.open_array(root, path=name, mode="r+")[start:stop] = data
    return {"start": start, "stop": stop, "n_coadds": n_coadds}


def _remove_coadd_arrays(path: StoreLocation) -> None:
    g = open_store_group(path, mode="r+")
    existing = set(g.array_keys())
    for name in COADD_VARIABLES:
        if name in existing:
            del g[name]


def _create_arrays(
    path: StoreLocation,
    n_pos: int,
    nf: int,
    nb: int,
    h: int,
    w: int,
    chunk: int,
    attrs: dict[str, Any],
) -> None:
    import dask.array as da
    import xarray as xr

    img = ("position", "filter", "coadd_bin", "y", "x")
    per = ("position", "filter", "coadd_bin")
    ichunks = (chunk, 1, 1, h, w)
    pchunks = (chunk, nf, max(nb, 1))
    nb_ = max(nb, 1) if nb else 0

    def full(shape: tuple[int, ...], fill: Any, dtype: str, chunks: tuple[int, ...]) -> Any:
        return da.full(shape, fill, dtype=dtype, chunks=chunks)

    data_vars = {
        "coadd_flux": (
            img,
            full((n_pos, nf, nb_, h, w), np.nan, "float32", ichunks),
            {"units": "count", "long_name": "coadd of warps (counts of coadd_zeropoint)", **attrs},
        ),
        "coadd_variance": (
            img,
            full((n_pos, nf, nb_, h, w), np.nan, "float32", ichunks),
            {"units": "count2", "long_name": "variance of coadd_flux"},
        ),
        "coadd_ninputs": (
            img,
            full((n_pos, nf, nb_, h, w), 0, "uint16", ichunks),
            {"units": "1", "long_name": "warps entering each pixel (after masks and clipping)"},
        ),
        "coadd_mjd_start": (
            per,
            full((n_pos, nf, nb_), np.nan, "float64", pchunks),
            {"units": "d", "long_name": "UTC mid-exposure MJD of the bin's first warp"},
        ),
        "coadd_mjd_end": (
            per,
            full((n_pos, nf, nb_), np.nan, "float64", pchunks),
            {"units": "d", "long_name": "UTC mid-exposure MJD of the bin's last warp"},
        ),
        "coadd_nepochs": (
            per,
            full((n_pos, nf, nb_), 0, "int16", pchunks),
            {"units": "1", "long_name": "warps in the bin"},
        ),
        "coadd_zeropoint": (
            ("position", "filter"),
            full((n_pos, nf), np.nan, "float32", (chunk, nf)),
            {
                "units": "mag",
                "long_name": "AB zero point: mag = -2.5 log10(coadd_flux) + coadd_zeropoint",
            },
        ),
    }
    ds = xr.Dataset(data_vars, coords={"coadd_bin": ("coadd_bin", np.arange(nb_, dtype=np.int64))})
    # to_zarr(mode="a") replaces the root attrs by the dataset's: keep the store's own
    # (WCS scale, requests, conventions), or readers of the store lose them
    ds.attrs.update(dict(open_store_group(path).attrs))
    encoding = {
        "coadd_flux": {"chunks": ichunks, "fill_value": np.nan},
        "coadd_variance": {"chunks": ichunks, "fill_value": np.nan},
        "coadd_ninputs": {"chunks": ichunks, "fill_value": 0},
        "coadd_mjd_start": {"chunks": pchunks, "fill_value": np.nan},
        "coadd_mjd_end": {"chunks": pchunks, "fill_value": np.nan},
        "coadd_nepochs": {"chunks": pchunks, "fill_value": 0},
        "coadd_zeropoint": {"chunks": (chunk, nf), "fill_value": np.nan},
    }
    with quiet_zarr_warnings():
        ds.to_zarr(
            path.zarr_store(),
            mode="a",
            compute=False,
            zarr_format=3,
            consolidated=True,
            encoding=encoding,
        )


def coadd_warps(
    store: StoreLike,
    *,
    bins: None | str | float = None,
    clip_sigma: float | None = 3.0,
    clip_fraction: float | None = None,
    bad_bits: int = DEFAULT_BAD_BITS,
    weighting: str = "image",
    zeropoint: str = "stack",
    client: Any = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    storage_options: Mapping[str, Any] | None = None,
) -> CoaddSummary:
    """Stack the warps of every (position, filter) of a store, per time bin, into the store.

    One task per position chunk of the store writes only its own chunks; the arrays (and the
    ``coadd_bin`` dimension, sized by a first pass over the epoch times) are created by the
    client. Rerunning replaces every coadd array. See :mod:`ps1dask.coadd.store` for the
    variables written.

    Parameters
    ----------
    store
        A ps1dask store holding warps (``ps1dask.warps``).
    bins
        ``None`` (or ``"all"``): one coadd of every epoch; ``"season"``: a new bin wherever
        consecutive epochs are more than 60 days apart; a number: bins of that many days
        (``[k * width, (k + 1) * width)`` in UTC MJD, aligned on MJD 0; empty bins skipped).
        Only warps with status ok enter (blank and failed ones never do).
    clip_sigma, clip_fraction
        Outlier rejection across epochs, per pixel (see :mod:`ps1dask.coadd._core`): PSF
        matched when the store has ``warp_psf_fwhm`` (``clip_fraction`` default 0.1), on
        the original pixels otherwise (default 1.0); ``clip_sigma=None`` turns it off.
    bad_bits
        Mask bits (``warp_mask``) of pixels left out.
    weighting
        ``"image"`` (one inverse-variance weight per warp; default, keeps star fluxes) or
        ``"pixel"`` (1 / variance per pixel).
    zeropoint
        The common zero point every warp is rescaled to. ``"stack"`` (default): the stack's
        zero point of that position and filter when the store has a stack for it (so
        ``coadd_flux`` and ``stack_flux`` share units pixel for pixel), else 25 (AB mag of
        one count = 25, i.e. ``25 + 2.5 log10(1 s)``). ``"fixed"``: always 25.
    client
        A ``distributed.Client`` (or scheduler address) to run the tasks on; default the
        current client if there is one, else dask's threaded scheduler in this process.
    memory_bytes
        Budget for the warps one task holds at once, bytes (positions are read in groups).
    storage_options : dict, optional
        For a store URL (``s3://...``): fsspec's options, as :func:`ps1dask.open_store`
        takes them. The coadds are written into the same store.

    Returns
    -------
    CoaddSummary
        The store, bins, number of coadds and tasks, zero point and time taken.
    """
    import dask

    t0 = time.perf_counter()
    root = StoreLocation.of(store, storage_options)
    path = store if isinstance(store, str | os.PathLike) else root
    if not root.exists():
        raise FileNotFoundError(f"no store at {path}")
    try:
        bins = parse_bins(bins)
    except ValueError as err:
        raise InvalidParameterError(str(err)) from None
    if weighting not in ("image", "pixel"):
        raise InvalidParameterError(f"weighting {weighting!r}: use 'image' or 'pixel'")
    if zeropoint not in ("stack", "fixed"):
        raise InvalidParameterError(f"zeropoint {zeropoint!r}: use 'stack' or 'fixed'")
    if clip_sigma is not None and not clip_sigma > 0:
        raise InvalidParameterError(f"clip_sigma must be positive or None, got {clip_sigma!r}")
    g = open_store_group(root)
    names = set(g.array_keys())
    needed = {"warp_flux", "warp_mjd", "warp_zeropoint", "n_epochs"}
    if needed - names:
        raise InvalidParameterError(
            f"{path} holds no warps (missing {sorted(needed - names)}); fetch them first with "
            "ps1dask.warps"
        )
    flux = zarr_array(g, "warp_flux")
    n_pos, nf, _, h, w = flux.shape
    chunk = int(flux.chunks[0])
    bounds = [(a, min(a + chunk, n_pos)) for a in range(0, n_pos, chunk)]
    use_stack = zeropoint == "stack" and "stack_zeropoint" in names
    spec = CoaddSpec(
        path=root,
        bins=bins,
        n_bins=0,
        clip_sigma=clip_sigma,
        clip_fraction=None if clip_fraction is None else float(clip_fraction),
        bad_bits=int(bad_bits),
        weighting=weighting,
        memory_bytes=int(memory_bytes),
        has_variance="warp_variance" in names,
        has_mask="warp_mask" in names,
        has_psf="warp_psf_fwhm" in names,
        use_stack_zeropoint=use_stack,
    )

    def run(func: Any, items: list[Any], **kw: Any) -> list[Any]:
        tasks = [dask.delayed(func, pure=False)(b, **kw) for b in items]
        if isinstance(client, str):  # a scheduler address
            import distributed

            with distributed.Client(client) as remote:
                return list(dask.compute(*tasks, scheduler=remote))
        if client is not None:
            return list(dask.compute(*tasks, scheduler=client))
        try:
            import distributed

            current = distributed.get_client()
        except (ImportError, ValueError):
            current = None
        if current is not None:
            return list(dask.compute(*tasks, scheduler=current))
        with compute_progress("coadd"):
            return list(dask.compute(*tasks, scheduler="threads"))

    # pass 1: the number of bins (the coadd_bin dimension)
    counts = run(lambda b, **kw: _chunk_bins(root, b[0], b[1], bins), bounds)
    n_bins = int(max(counts, default=0))
    spec = CoaddSpec(**{**spec.__dict__, "n_bins": n_bins})
    bins_label = "all" if bins is None else ("season" if bins == "season" else f"{bins:g} d")
    _remove_coadd_arrays(root)
    _create_arrays(
        root,
        n_pos,
        nf,
        n_bins,
        h,
        w,
        chunk,
        attrs={
            "coadd_bins": bins_label,
            "coadd_clip_sigma": "none" if clip_sigma is None else float(clip_sigma),
            "coadd_clip_fraction": "default" if clip_fraction is None else float(clip_fraction),
            "coadd_rejection": "PSF-matched" if "warp_psf_fwhm" in names else "original pixels",
            "coadd_weighting": weighting,
            "coadd_bad_bits": int(bad_bits),
            "coadd_zeropoint_rule": "stack zero point where a stack exists, else 25"
            if use_stack
            else "25",
        },
    )
    results = run(coadd_chunk, bounds, spec=spec) if n_bins > 0 else []
    with quiet_zarr_warnings():
        zarr.consolidate_metadata(root.zarr_store())
    return CoaddSummary(
        store=str(path),
        bins=bins_label,
        n_bins=n_bins,
        n_positions=n_pos,
        n_coadds=int(sum(r["n_coadds"] for r in results)),
        tasks=len(results),
        seconds=time.perf_counter() - t0,
        zeropoint="stack zero point (else 25)" if use_stack else "25",
    )


def coadd_photometry(
    store: StoreLike,
    *,
    radius: float | None = None,
    annulus: tuple[float, float] | None = None,
    bad_bits: int = DEFAULT_BAD_BITS,
    aperture_correction: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> Any:
    """Forced photometry of the coadds (and the stacks, same aperture) at every position.

    One row per (position, filter, coadd_bin) that has a coadd: ``id, position, ra, dec,
    filter, coadd_bin, mjd_start, mjd_end, n_epochs, flux, flux_err`` (microjansky, errors
    from the coadd variance), ``lc_flags`` (:class:`~ps1dask.lightcurves.LCFlag`) and,
    when the store has stacks, ``stack_flux, stack_flux_err`` (errors as in
    :func:`ps1dask.lightcurves.lightcurves`: the stack variance, else sky + photon noise).
    Per-season coadds give deeper, coarser light curves than single warps. With
    ``aperture_correction`` the PSF width is estimated from the brighter positions of the
    partition (coadds mix the seeing of their warps), as
    :func:`ps1dask.lightcurves.lightcurves` does for stacks. ``radius`` and ``annulus`` are
    pixels (default the configured aperture, :func:`ps1dask.photometry.default_aperture`).

    Parameters
    ----------
    store : str or os.PathLike
        A ps1dask store holding coadds (:func:`coadd_warps`).
    radius : float, optional
        Aperture radius, pixels.
    annulus : tuple of float, optional
        Inner and outer radii of the sky annulus, pixels.
    bad_bits : int
        Mask bits of pixels left out.
    aperture_correction : bool
        Whether to correct the fluxes to total with the estimated PSF width.
    storage_options : dict, optional
        For a store URL: fsspec's options, as :func:`ps1dask.open_store` takes them.

    Returns
    -------
    pandas.DataFrame
        One row per coadd (coadd tables are small: one row per bin), columns as above.
    """
    import dask.config
    import pandas as pd

    from ps1dask.lightcurves import (
        forced_photometry,
        position_in_cutout,
        psf_fwhm_from_data,
        stack_gains,
    )
    from ps1dask.photometry import aperture_geometry, resolve_aperture

    radius, annulus = resolve_aperture(radius, annulus)
    warp_gain = float(dask.config.get("ps1dask.photometry.warp-gain"))

    where = StoreLocation.of(store, storage_options)
    path = store if isinstance(store, str | os.PathLike) else where
    g = open_store_group(where)
    names = set(g.array_keys())
    if "coadd_flux" not in names:
        raise InvalidParameterError(f"{path} has no coadds; run ps1dask.coadd_warps first")
    with quiet_zarr_warnings():
        arr = zarr_array(g, "coadd_flux")
        n_pos, nf, nb, h, w = arr.shape
        chunk = int(arr.chunks[0])
        filters = [str(f) for f in read_array(g, "filter")]
        scale = float_attr(g, "pixel_scale_deg", HEADER_CDELT_DEG)
    rows = []
    for start in range(0, n_pos, chunk):
        stop = min(start + chunk, n_pos)
        pos = slice(start, stop)
        with quiet_zarr_warnings():
            ids = read_array(g, "id", pos).astype(object)
            prow = read_array(g, "position", pos)
            ra, dec = read_array(g, "ra", pos), read_array(g, "dec", pos)
            x, y = position_in_cutout(
                ra,
                dec,
                read_array(g, "crval1", pos),
                read_array(g, "crval2", pos),
                read_array(g, "crpix1", pos),
                read_array(g, "crpix2", pos),
                scale,
            )
            flux = read_array(g, "coadd_flux", pos)
            var = read_array(g, "coadd_variance", pos)
            nin = read_array(g, "coadd_ninputs", pos)
            zp = read_array(g, "coadd_zeropoint", pos).astype(np.float64)
            t0 = read_array(g, "coadd_mjd_start", pos)
            t1 = read_array(g, "coadd_mjd_end", pos)
            ne = read_array(g, "coadd_nepochs", pos)
            has_stack = {"stack_flux", "stack_zeropoint", "stack_status"} <= names
            if has_stack:
                sflux = read_array(g, "stack_flux", pos)
                svar = read_array(g, "stack_variance", pos) if "stack_variance" in names else None
                smask = read_array(g, "stack_mask", pos) if "stack_mask" in names else None
                szp = read_array(g, "stack_zeropoint", pos).astype(np.float64)
                sst = read_array(g, "stack_status", pos)
                sgain = stack_gains(g, pos, range(nf), warp_gain)
        n = stop - start
        geos = [
            aperture_geometry((h, w), (float(x[p]), float(y[p])), radius, annulus) for p in range(n)
        ]
        for f in range(nf):
            for b in range(nb):
                pp = np.flatnonzero(ne[:, f, b] > 0)
                if pp.size == 0:
                    continue
                imgs = flux[pp, f, b]
                vv = np.where(nin[pp, f, b] > 0, var[pp, f, b], np.nan)
                geo = [geos[i] for i in pp]
                fwhm = None
                if aperture_correction:
                    fwhm = psf_fwhm_from_data(
                        imgs, vv, None, geometry=geo, exposure=np.zeros(pp.size)
                    )
                cols = forced_photometry(
                    imgs,
                    vv,
                    None,
                    geometry=geo,
                    zeropoint=zp[pp, f],
                    psf_fwhm=fwhm,
                    bad_bits=bad_bits,
                    aperture_correction=aperture_correction,
                )
                s_f = np.full(pp.size, np.nan)
                s_e = np.full(pp.size, np.nan)
                if has_stack:
                    ok = (sst[pp, f] == _OK) & np.isfinite(szp[pp, f])
                    if ok.any():
                        q = pp[ok]
                        sfw = None
                        if aperture_correction:
                            sfw = psf_fwhm_from_data(
                                sflux[q, f],
                                None if svar is None else svar[q, f],
                                None if smask is None else smask[q, f],
                                geometry=[geos[i] for i in q],
                                exposure=np.zeros(q.size),
                                bad_bits=bad_bits,
                            )
                        sc = forced_photometry(
                            sflux[q, f],
                            None if svar is None else svar[q, f],
                            None if smask is None else smask[q, f],
                            geometry=[geos[i] for i in q],
                            zeropoint=szp[q, f],
                            psf_fwhm=sfw,
                            bad_bits=bad_bits,
                            aperture_correction=aperture_correction,
                            gain=sgain[q, f],
                        )
                        s_f[ok], s_e[ok] = sc.flux, sc.flux_err
                for j, p in enumerate(pp):
                    rows.append(
                        (
                            ids[p],
                            int(prow[p]),
                            ra[p],
                            dec[p],
                            filters[f],
                            b,
                            t0[p, f, b],
                            t1[p, f, b],
                            int(ne[p, f, b]),
                            cols.flux[j],
                            cols.flux_err[j],
                            int(cols.flags[j]),
                            s_f[j],
                            s_e[j],
                        )
                    )
    columns = [
        "id",
        "position",
        "ra",
        "dec",
        "filter",
        "coadd_bin",
        "mjd_start",
        "mjd_end",
        "n_epochs",
        "flux",
        "flux_err",
        "lc_flags",
        "stack_flux",
        "stack_flux_err",
    ]
    out = pd.DataFrame(rows, columns=columns)
    return out.sort_values(["position", "filter", "coadd_bin"], kind="stable").reset_index(
        drop=True
    )
