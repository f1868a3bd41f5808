"""Light curves from a store: one dask DataFrame partition per position chunk.

Each partition opens the store with zarr, reads only a small stamp around the position (the
aperture and annulus) of every warp of its positions, one chunk-aligned block of epochs at a
time (so memory stays bounded however many epochs there are), and measures them with
:func:`ps1dask.lightcurves._core.forced_photometry`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.config
import numpy as np
import pandas as pd
import zarr

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.conventions import DEFAULT_BAD_BITS
from ps1dask.exceptions import InvalidParameterError
from ps1dask.lightcurves._core import (
    ERR_MODEL_SKY_POISSON,
    ERR_MODEL_VARIANCE,
    LCFlag,
    PhotometryColumns,
    forced_photometry,
    position_in_cutout,
    psf_fwhm_from_data,
    stack_gain,
    stamp_bounds,
    stamp_half_size,
    with_current_columns,
)
from ps1dask.photometry import aperture_geometry, resolve_aperture
from ps1dask.storage.arrays import float_attr, open_store_group, read_array, zarr_array
from ps1dask.storage.location import StoreLike, StoreLocation
from ps1dask.tessellation import PIXEL_SCALE_DEG

#: Columns of a light-curve table, in order, with their dtypes.
LIGHTCURVE_COLUMNS: dict[str, str] = {
    "id": "str",
    "position": "int64",
    "ra": "float64",
    "dec": "float64",
    "filter": "str",
    "epoch": "int16",
    "mjd": "float64",
    "mjd_obs_tai": "float64",
    "exptime": "float32",
    "zeropoint": "float32",
    "flux": "float64",
    "flux_err": "float64",
    "mag": "float64",
    "mag_err": "float64",
    "background": "float64",
    "n_masked": "int32",
    "coverage": "float32",
    "status": "uint8",
    "lc_flags": "int32",
    "err_model": "str",
    "psf_fwhm": "float32",
    "apcorr": "float32",
}
STACK_COLUMNS: dict[str, str] = {
    "stack_flux": "float64",
    "stack_flux_err": "float64",
    "stack_err_model": "str",
}
#: Images measured together (bounds the photometry's working memory).
_BATCH_IMAGES = 256


@dataclass(frozen=True)
class _Spec:
    """Everything a partition needs (small and picklable)."""

    path: StoreLocation
    filter_index: tuple[int, ...]
    filter_names: tuple[str, ...]
    radius: float
    annulus: tuple[float, float]
    bad_bits: int
    min_coverage: float
    aperture_correction: bool
    estimate_psf: bool
    width: int
    height: int
    scale_deg: float
    epoch_chunk: int
    has: frozenset[str]
    include_stack: bool
    gain: float  #: electrons per warp count (errors without a variance image)

    @property
    def columns(self) -> dict[str, str]:
        return LIGHTCURVE_COLUMNS | (STACK_COLUMNS if self.include_stack else {})


def _empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in columns.items()})


def _psf_sigma_ok(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values) & (values > 0), values, np.nan)


def stack_gains(
    g: zarr.Group, positions: slice, filter_index: Sequence[int], warp_gain: float
) -> np.ndarray:
    """Electrons per stack count ``(n_positions, n_filters)`` from the store's warps
    (:func:`~ps1dask.lightcurves._core.stack_gain`; NaN without warp zero points)."""
    names = set(g.array_keys())
    fidx = list(filter_index)
    if not {"warp_zeropoint", "warp_exptime"} <= names:
        n = len(range(*positions.indices(int(zarr_array(g, "id").shape[0]))))
        return np.full((n, len(fidx)), np.nan)
    zp = read_array(g, "warp_zeropoint", positions)[:, fidx]
    t = read_array(g, "warp_exptime", positions)[:, fidx]
    return stack_gain(zp, t, warp_gain)


def _stack_photometry(
    spec: _Spec,
    g: zarr.Group,
    start: int,
    stop: int,
    geometries: list[Any],
    ys: slice,
    xs: slice,
) -> tuple[np.ndarray, np.ndarray]:
    """(flux, flux_err) in microjansky of the stacks, ``(n_positions, n_filters)``."""
    n = stop - start
    nf = len(spec.filter_index)
    flux = np.full((n, nf), np.nan)
    err = np.full((n, nf), np.nan)
    fidx = list(spec.filter_index)
    gains = stack_gains(g, slice(start, stop), fidx, spec.gain)
    zp = read_array(g, "stack_zeropoint", slice(start, stop))[:, fidx]
    status = read_array(g, "stack_status", slice(start, stop))[:, fidx]
    psf = (
        read_array(g, "stack_psf_fwhm", slice(start, stop))[:, fidx]
        if "stack_psf_fwhm" in spec.has
        else np.full((n, nf), np.nan)
    )
    for k, fi in enumerate(spec.filter_index):
        if not (status[:, k] == 1).any():
            continue
        img = read_array(g, "stack_flux", slice(start, stop), fi, ys, xs)
        var = (
            read_array(g, "stack_variance", slice(start, stop), fi, ys, xs)
            if "stack_variance" in spec.has
            else None
        )
        msk = (
            read_array(g, "stack_mask", slice(start, stop), fi, ys, xs)
            if "stack_mask" in spec.has
            else None
        )
        pp = np.flatnonzero((status[:, k] == 1) & np.isfinite(zp[:, k]))
        if pp.size == 0:
            continue
        fwhm = _psf_sigma_ok(psf[pp, k])
        if spec.aperture_correction and spec.estimate_psf and np.isnan(fwhm).any():
            # stacks of one filter in one partition (neighbouring skycells) share one estimate
            est = psf_fwhm_from_data(
                img[pp],
                None if var is None else var[pp],
                None if msk is None else msk[pp],
                geometry=[geometries[i] for i in pp],
                exposure=np.zeros(pp.size),
                bad_bits=spec.bad_bits,
            )
            fwhm = np.where(np.isnan(fwhm), est, fwhm)
        cols = forced_photometry(
            img[pp],
            None if var is None else var[pp],
            None if msk is None else msk[pp],
            geometry=[geometries[i] for i in pp],
            zeropoint=zp[pp, k],
            psf_fwhm=fwhm,
            bad_bits=spec.bad_bits,
            aperture_correction=spec.aperture_correction,
            gain=gains[pp, k],
        )
        flux[pp, k], err[pp, k] = cols.flux, cols.flux_err
    return flux, err


def _measure_batch(
    spec: _Spec,
    out: dict[str, list[np.ndarray]],
    k: int,
    pp: np.ndarray,
    ee: np.ndarray,
    e0: int,
    img: np.ndarray,
    var: np.ndarray | None,
    msk: np.ndarray | None,
    geometries: list[Any],
    per_epoch: dict[str, np.ndarray],
    psf_all: np.ndarray,
    exposure_key: np.ndarray,
) -> None:
    """Measure the images (pp, ee) of one block of filter ``k``; append the columns to ``out``."""
    eg = ee + e0
    geo = [geometries[i] for i in pp]
    st = per_epoch["warp_status"][pp, k, eg] if "warp_status" in per_epoch else None
    fwhm = _psf_sigma_ok(psf_all[pp, k, eg])
    estimated = np.zeros(pp.size, bool)
    if spec.aperture_correction and spec.estimate_psf and np.isnan(fwhm).any():
        est = psf_fwhm_from_data(
            img[pp, ee],
            None if var is None else var[pp, ee],
            None if msk is None else msk[pp, ee],
            geometry=geo,
            exposure=exposure_key[pp, k, eg],
            status=st,
            bad_bits=spec.bad_bits,
        )
        estimated = np.isnan(fwhm) & np.isfinite(est)
        fwhm = np.where(estimated, est, fwhm)
    cols: PhotometryColumns = forced_photometry(
        img[pp, ee],
        None if var is None else var[pp, ee],
        None if msk is None else msk[pp, ee],
        geometry=geo,
        zeropoint=per_epoch["warp_zeropoint"][pp, k, eg],
        status=st,
        coverage=per_epoch["warp_coverage"][pp, k, eg] if "warp_coverage" in per_epoch else None,
        psf_fwhm=fwhm,
        bad_bits=spec.bad_bits,
        min_coverage=spec.min_coverage,
        aperture_correction=spec.aperture_correction,
        gain=spec.gain,
    )
    out["p"].append(pp)
    out["f"].append(np.full(pp.size, k))
    out["e"].append(eg)
    for name in ("flux", "flux_err", "mag", "mag_err", "background", "n_masked", "apcorr"):
        out[name].append(getattr(cols, name))
    measured = np.isfinite(cols.apcorr)
    out["flags"].append(
        cols.flags | np.where(estimated & measured, int(LCFlag.PSF_ESTIMATED), 0).astype(np.int32)
    )
    out["fwhm"].append(np.where(np.isfinite(fwhm), fwhm, np.nan))


def read_partition(bounds: tuple[int, int], spec: _Spec) -> pd.DataFrame:
    """The light-curve rows of positions ``[start, stop)`` (store plan order)."""
    start, stop = int(bounds[0]), int(bounds[1])
    if stop <= start:
        return _empty_frame(spec.columns)
    g = open_store_group(spec.path)
    n = stop - start
    pos = slice(start, stop)
    ids = read_array(g, "id", pos).astype(object)
    rows = read_array(g, "position", pos).astype(np.int64)
    ra, dec = read_array(g, "ra", pos), read_array(g, "dec", pos)
    if {"crval1", "crval2", "crpix1", "crpix2"} <= spec.has:
        x, y = position_in_cutout(
            ra,
            dec,
            read_array(g, "crval1", pos),
            read_array(g, "crval2", pos),
            read_array(g, "crpix1", pos),
            read_array(g, "crpix2", pos),
            spec.scale_deg,
        )
    else:  # no WCS stored: the fitscut centre pixel
        x, y = np.full(n, float(spec.width // 2)), np.full(n, float(spec.height // 2))
    # positions without a WCS (outside the footprint: no pixels either) measure the centre
    x = np.where(np.isfinite(x), x, float(spec.width // 2))
    y = np.where(np.isfinite(y), y, float(spec.height // 2))
    half = stamp_half_size(spec.annulus)
    x_lo, x_hi = stamp_bounds(spec.width, spec.width // 2, half)
    y_lo, y_hi = stamp_bounds(spec.height, spec.height // 2, half)
    xs, ys = slice(x_lo, x_hi), slice(y_lo, y_hi)
    shape = (y_hi - y_lo, x_hi - x_lo)
    geometries = [
        aperture_geometry(
            shape, (float(x[p]) - x_lo, float(y[p]) - y_lo), spec.radius, spec.annulus
        )
        for p in range(n)
    ]

    fidx = list(spec.filter_index)
    n_ep = read_array(g, "n_epochs", pos)[:, fidx].astype(np.int64)
    per_epoch: dict[str, np.ndarray] = {}
    for name in (
        "warp_mjd",
        "warp_mjd_obs_tai",
        "warp_exptime",
        "warp_zeropoint",
        "warp_coverage",
        "warp_status",
        "warp_psf_fwhm",
    ):
        if name in spec.has:
            per_epoch[name] = read_array(g, name, pos)[:, fidx]
    n_epochs_axis = per_epoch["warp_zeropoint"].shape[2]
    missing = np.full((n, len(fidx), n_epochs_axis), np.nan)
    psf_all = per_epoch.get("warp_psf_fwhm", missing)
    # exposures are told apart by their start time (whole seconds)
    t_key = per_epoch.get("warp_mjd_obs_tai", per_epoch.get("warp_mjd", missing))
    exposure_key = np.round(t_key * 86400.0)

    out: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "p",
            "f",
            "e",
            "flux",
            "flux_err",
            "mag",
            "mag_err",
            "background",
            "n_masked",
            "apcorr",
            "flags",
            "fwhm",
        )
    }
    for k, fi in enumerate(spec.filter_index):
        e_max = int(n_ep[:, k].max(initial=0))
        for e0 in range(0, e_max, spec.epoch_chunk):
            e1 = min(e0 + spec.epoch_chunk, e_max)
            img = read_array(g, "warp_flux", pos, fi, slice(e0, e1), ys, xs)
            var = (
                read_array(g, "warp_variance", pos, fi, slice(e0, e1), ys, xs)
                if "warp_variance" in spec.has
                else None
            )
            msk = (
                read_array(g, "warp_mask", pos, fi, slice(e0, e1), ys, xs)
                if "warp_mask" in spec.has
                else None
            )
            # every (position, epoch) of the block below n_epochs, measured in batches taken
            # epoch by epoch (the positions sharing an exposure share a PSF estimate)
            e_all, p_all = np.nonzero(np.arange(e0, e1)[:, None] < n_ep[None, :, k])
            for b0 in range(0, p_all.size, _BATCH_IMAGES):
                pp, ee = p_all[b0 : b0 + _BATCH_IMAGES], e_all[b0 : b0 + _BATCH_IMAGES]
                _measure_batch(
                    spec,
                    out,
                    k,
                    pp,
                    ee,
                    e0,
                    img,
                    var,
                    msk,
                    geometries,
                    per_epoch,
                    psf_all,
                    exposure_key,
                )
            del img, var, msk
    if not out["p"]:
        return _empty_frame(spec.columns)
    cat = {k: np.concatenate(v) for k, v in out.items()}
    order = np.lexsort((cat["e"], cat["f"], cat["p"]))
    cat = {k: v[order] for k, v in cat.items()}
    p, f, e = cat["p"], cat["f"], cat["e"]

    def epoch_col(name: str, fill: float = np.nan) -> np.ndarray:
        arr = per_epoch.get(name)
        return np.full(p.size, fill) if arr is None else arr[p, f, e]

    names = np.asarray(spec.filter_names, dtype=object)
    frame: dict[str, Any] = {
        "id": ids[p],
        "position": rows[p],
        "ra": ra[p],
        "dec": dec[p],
        "filter": names[f],
        "epoch": e,
        "mjd": epoch_col("warp_mjd"),
        "mjd_obs_tai": epoch_col("warp_mjd_obs_tai"),
        "exptime": epoch_col("warp_exptime"),
        "zeropoint": epoch_col("warp_zeropoint"),
        "flux": cat["flux"],
        "flux_err": cat["flux_err"],
        "mag": cat["mag"],
        "mag_err": cat["mag_err"],
        "background": cat["background"],
        "n_masked": cat["n_masked"],
        "coverage": epoch_col("warp_coverage"),
        "status": epoch_col("warp_status", 1),
        "lc_flags": cat["flags"],
        "err_model": (ERR_MODEL_VARIANCE if "warp_variance" in spec.has else ERR_MODEL_SKY_POISSON),
        "psf_fwhm": cat["fwhm"],
        "apcorr": cat["apcorr"],
    }
    if spec.include_stack:
        sflux, serr = _stack_photometry(spec, g, start, stop, geometries, ys, xs)
        frame["stack_flux"] = sflux[p, f]
        frame["stack_flux_err"] = serr[p, f]
        frame["stack_err_model"] = (
            ERR_MODEL_VARIANCE if "stack_variance" in spec.has else ERR_MODEL_SKY_POISSON
        )
    df = pd.DataFrame(frame)
    return df.astype(spec.columns)


def _store_spec(
    store: StoreLike,
    *,
    radius: float | None,
    annulus: tuple[float, float] | None,
    filters: str | Sequence[str] | None,
    bad_bits: int,
    include_stack: bool,
    aperture_correction: bool | str,
    estimate_psf: bool,
    min_coverage: float,
    gain: float | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[_Spec, int, int]:
    where = StoreLocation.of(store, storage_options)
    path = store if isinstance(store, str | os.PathLike) else where
    if not where.exists():
        raise FileNotFoundError(f"no store at {path}")
    g = open_store_group(where)
    names = set(g.array_keys())
    if "warp_flux" not in names:
        raise InvalidParameterError(
            f"{path} holds no warps (no warp_flux array); fetch them first with ps1dask.warps"
        )
    needed = {"n_epochs", "warp_zeropoint", "id", "ra", "dec", "position", "filter"}
    if needed - names:
        raise InvalidParameterError(f"{path} is missing {sorted(needed - names)}")
    radius, annulus = resolve_aperture(radius, annulus)
    r_in, r_out = annulus
    gain = float(dask.config.get("ps1dask.photometry.warp-gain") if gain is None else gain)
    if not (np.isfinite(gain) and gain > 0):
        raise InvalidParameterError(
            f"gain {gain}: electrons per warp count must be a positive number "
            "(ps1dask.photometry.warp-gain)"
        )
    if not (0 < float(radius) <= r_in < r_out):
        raise InvalidParameterError(
            f"radius {radius} and annulus {annulus}: need 0 < radius <= inner < outer (pixels)"
        )
    store_filters = [str(f) for f in read_array(g, "filter")]
    if filters is None:
        chosen = store_filters
    else:
        chosen = list(filters)
        unknown = [f for f in chosen if f not in store_filters]
        if unknown:
            raise InvalidParameterError(
                f"filters {unknown} are not in the store (it has {''.join(store_filters)})"
            )
    flux = zarr_array(g, "warp_flux")
    n_pos, _, _, height, width = flux.shape
    if 2 * stamp_half_size((r_in, r_out)) + 1 > min(width, height) + 4:
        raise InvalidParameterError(
            f"annulus outer radius {r_out} px does not fit in the {width}x{height} cutouts"
        )
    has_stack = {"stack_flux", "stack_zeropoint", "stack_status"} <= names
    scale = float_attr(g, "pixel_scale_deg", PIXEL_SCALE_DEG)
    spec = _Spec(
        path=where,
        filter_index=tuple(store_filters.index(f) for f in chosen),
        filter_names=tuple(chosen),
        radius=float(radius),
        annulus=(r_in, r_out),
        bad_bits=int(bad_bits),
        min_coverage=float(min_coverage),
        aperture_correction=bool(aperture_correction),
        estimate_psf=bool(estimate_psf),
        width=int(width),
        height=int(height),
        scale_deg=scale,
        epoch_chunk=int(flux.chunks[2]),
        has=frozenset(names),
        include_stack=bool(include_stack) and has_stack,
        gain=gain,
    )
    return spec, int(n_pos), int(flux.chunks[0])


def lightcurves(
    store: StoreLike,
    *,
    radius: float | None = None,
    annulus: tuple[float, float] | None = None,
    filters: str | Sequence[str] | None = None,
    bad_bits: int = DEFAULT_BAD_BITS,
    include_stack: bool = True,
    aperture_correction: bool = True,
    estimate_psf: bool = True,
    min_coverage: float = 0.5,
    positions_per_partition: int | None = None,
    gain: float | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Any:
    """Forced-photometry light curves of every position of a store, as a lazy dask DataFrame.

    One row per (position, filter, epoch) with ``epoch < n_epochs`` (padding epochs are
    skipped; blank and failed warps give a row with NaN flux and a flag). Columns:

    ``id, position`` (input row), ``ra, dec, filter, epoch`` (index along the store's epoch
    axis, time-sorted), ``mjd`` (UTC, mid-exposure), ``mjd_obs_tai`` (MJD-OBS: TAI, start of
    exposure), ``exptime`` (s), ``zeropoint`` (AB, of the warp's counts), ``flux, flux_err``
    (microjansky), ``mag, mag_err`` (AB; NaN when flux <= 0), ``background`` (the subtracted
    local sky, microjansky per pixel), ``n_masked`` (aperture pixels excluded: NaN or
    ``bad_bits``), ``coverage`` (the store's warp_coverage), ``status`` (the warp's store
    status), ``lc_flags`` (:class:`~ps1dask.lightcurves.LCFlag` bits, 0 = clean; rows with
    :data:`~ps1dask.lightcurves.BAD_FLAGS` should be dropped), ``err_model`` (how
    ``flux_err`` was made, below), ``psf_fwhm`` (arcsec, NaN if unknown), ``apcorr`` (PSF
    correction applied, NaN if none) and, when the store has stacks, ``stack_flux,
    stack_flux_err`` (microjansky, same aperture on the stack cutout) and
    ``stack_err_model``.

    Photometry: a circular aperture of ``radius`` pixels (0.25 arcsec each) centred on the
    exact sub-pixel position (from the stored cutout WCS), background the sigma-clipped
    median of the ``annulus`` (inner, outer radii in pixels); both default to the
    configured aperture (``ps1dask.photometry.radius`` / ``.annulus``: 6 and 12..20 px).

    Error model (``err_model`` column): ``"variance"`` when the store has
    ``warp_variance`` (fetched with ``types=("warp", "warp.wt", ...)``): the summed variance
    image of the aperture pixels plus the background's uncertainty. Otherwise
    ``"sky+poisson"``: the sky from the annulus scatter (sigma-clipped std per pixel) plus
    the source's photon noise, its background-subtracted counts divided by ``gain``
    electrons per count (default ``ps1dask.photometry.warp-gain``, 1.0: PS1 warps keep the
    detector's counts, GPC1 gains are about 1 e-/count), plus the background's
    uncertainty. Stacks likewise (``stack_err_model``; a stack count is
    ``gain * 10**(0.4 (FPA.ZP - 25))`` electrons, FPA.ZP the median of the position's
    warps, NaN error where no warp gives it). Errors never come from the sky scatter alone.

    With ``aperture_correction`` (default) fluxes are divided by the fraction of a Gaussian
    PSF falling in the unmasked aperture pixels: total point-source fluxes, comparable
    across seeing and with masked pixels. The PSF width is the store's ``warp_psf_fwhm``
    (``stack_psf_fwhm``) where it has one, else (``estimate_psf``) a Gaussian fit to the
    positions of signal-to-noise >= 30 in the same exposure (flag PSF_ESTIMATED; for
    stacks, all the partition's stacks of a filter); where neither exists the flux is the
    plain aperture flux (flag NO_APCORR).

    Partitions: one per position chunk of the store (or ``positions_per_partition``
    positions, rounded to whole chunks), in the store's plan order, each holding *every* row
    of its positions, sorted by position, filter, epoch. So per-object work needs no
    shuffle::

        lc = ps1dask.lightcurves("field.zarr")
        per_object = lc.map_partitions(lambda df: df.groupby(["id", "filter"]).apply(f))

    ``lc.groupby("id").apply(f)`` also works (dask shuffles first); ``lc.set_index("id")``
    sorts the whole table by id (a full shuffle: worth it only for repeated lookups by id,
    e.g. ``lc.loc["star42"]``). The divisions are unknown. Write it out with
    ``lc.to_parquet(...)``; :func:`ps1dask.analysis.lightcurve_stats` summarises it.

    Clean rows: ``lc[(lc.lc_flags & int(BAD_FLAGS)) == 0]`` (``int(...)`` the flag, which
    pandas would otherwise take for a sequence). Tables written by earlier versions call
    the column ``flags``; :func:`read_lightcurves` renames it.

    Parameters
    ----------
    store : str or os.PathLike
        A ps1dask store holding warps (:func:`ps1dask.warps`): a directory or a URL
        (``s3://bucket/field.zarr``, ...). Only read: the table is computed lazily, and
        written wherever the caller puts it (``lc.to_parquet(...)``).
    radius : float, optional
        Aperture radius, pixels (default ``ps1dask.photometry.radius``).
    annulus : tuple of float, optional
        Inner and outer radii of the sky annulus, pixels (default
        ``ps1dask.photometry.annulus``).
    filters : str or sequence of str, optional
        Filters to measure (default all the store's).
    bad_bits : int
        Mask bits of pixels left out of the aperture and the sky.
    include_stack : bool
        Also measure the stack cutout (``stack_flux`` columns) when the store has stacks.
    aperture_correction : bool
        Divide fluxes by the PSF fraction in the aperture (total point-source fluxes).
    estimate_psf : bool
        Estimate the PSF width from bright positions where the store has none.
    min_coverage : float
        Warps whose ``coverage`` (usable pixel fraction near the position) is below this get
        the LOW_COVERAGE flag.
    positions_per_partition : int, optional
        Positions per partition (rounded to whole store chunks; default one chunk).
    gain : float, optional
        Electrons per warp count of the photon noise (default
        ``ps1dask.photometry.warp-gain``).
    storage_options : dict, optional
        For a store URL: fsspec's options (``endpoint_url``, ``key``, ``secret``, ``anon``,
        ...), as :func:`ps1dask.open_store` takes them.

    Returns
    -------
    dask.dataframe.DataFrame
        The light curves, lazy, with the columns above.
    """
    import dask.dataframe as dd

    parts = _partition_args(
        store,
        radius=radius,
        annulus=annulus,
        filters=filters,
        bad_bits=bad_bits,
        include_stack=include_stack,
        aperture_correction=aperture_correction,
        estimate_psf=estimate_psf,
        min_coverage=min_coverage,
        positions_per_partition=positions_per_partition,
        gain=gain,
        storage_options=storage_options,
    )
    spec = parts[0][1]
    return dd.from_map(
        read_partition,
        [b for b, _ in parts],
        spec=spec,
        meta=_empty_frame(spec.columns),
        label="ps1dask-lightcurves",
        enforce_metadata=False,
    )


def read_lightcurves(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A light-curve table written by ``ps1dask lightcurves`` (Parquet or CSV) as pandas,
    with the current column names (``flags`` of earlier versions becomes ``lc_flags``)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no light-curve table at {p}")
    table = pd.read_csv(p, dtype={"id": str}) if p.suffix.lower() == ".csv" else pd.read_parquet(p)
    return with_current_columns(table)


def lightcurves_frame(store: StoreLike, **options: Any) -> pd.DataFrame:
    """:func:`lightcurves` computed in this process, as one pandas DataFrame (small stores)."""
    frames = [read_partition(b, spec) for b, spec in _partition_args(store, **options)]
    return pd.concat(frames, ignore_index=True)


def _partition_args(store: StoreLike, **options: Any) -> list[tuple[tuple[int, int], _Spec]]:
    per = options.pop("positions_per_partition", None)
    spec, n_pos, chunk = _store_spec(
        store,
        radius=options.pop("radius", None),
        annulus=options.pop("annulus", None),
        filters=options.pop("filters", None),
        bad_bits=options.pop("bad_bits", DEFAULT_BAD_BITS),
        include_stack=options.pop("include_stack", True),
        aperture_correction=options.pop("aperture_correction", True),
        estimate_psf=options.pop("estimate_psf", True),
        min_coverage=options.pop("min_coverage", 0.5),
        gain=options.pop("gain", None),
        storage_options=options.pop("storage_options", None),
    )
    if options:
        raise TypeError(f"unexpected options {sorted(options)}")
    step = chunk if not per else max(1, int(np.ceil(int(per) / chunk))) * chunk
    bounds = [(a, min(a + step, n_pos)) for a in range(0, n_pos, step)] or [(0, 0)]
    return [(b, spec) for b in bounds]
