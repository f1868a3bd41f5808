"""Dataframe-style analysis of light curves: per-object statistics and a variability search.

Works on the table of :func:`ps1dask.lightcurves.lightcurves` (pandas or dask)::

    lc = ps1dask.lightcurves("field.zarr")            # dask DataFrame, lazy
    stats = ps1dask.analysis.lightcurve_stats(lc).compute()
    cands = ps1dask.analysis.variability_candidates(stats, sigma=5)
    one = lc[lc.id == cands.id.iloc[0]].compute()
    print(ps1dask.analysis.best_period(one))          # Lomb-Scargle
    print(ps1dask.analysis.fit_transient(one))        # peak time of an outburst

Fluxes are microjansky; rows whose ``lc_flags`` have any of ``exclude_flags`` (default
:data:`ps1dask.lightcurves.BAD_FLAGS`) or no finite flux and positive error are left out.
Tables of earlier versions, whose flag column is ``flags``, work too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ps1dask.exceptions import InvalidParameterError
from ps1dask.lightcurves import BAD_FLAGS, UJY_ZEROPOINT, flag_column

__all__ = [
    "STATS_COLUMNS",
    "PeriodResult",
    "TransientFit",
    "best_period",
    "fit_transient",
    "good_rows",
    "lightcurve_stats",
    "variability_candidates",
]

#: Columns of :func:`lightcurve_stats` (besides the grouping keys) and their dtypes.
STATS_COLUMNS: dict[str, str] = {
    "ra": "float64",
    "dec": "float64",
    "n": "int64",  #: usable epochs
    "n_flagged": "int64",  #: rows left out (flags, NaN flux)
    "mean_flux": "float64",  #: inverse-variance weighted mean (uJy)
    "mean_flux_err": "float64",
    "mean_mag": "float64",  #: AB magnitude of mean_flux
    "chi2_dof": "float64",  #: chi2 per degree of freedom of the constant mean_flux
    "chi2_sigma": "float64",  #: chi2 excess as a one-sided Gaussian significance
    "amplitude": "float64",  #: max - min flux (uJy)
    "amplitude_robust": "float64",  #: 95th - 5th percentile of flux (uJy)
    "max_dev_sigma": "float64",  #: max |flux - mean_flux| / flux_err
    "mjd_first": "float64",
    "mjd_last": "float64",
}


def good_rows(lc: Any, exclude_flags: int = BAD_FLAGS) -> Any:
    """Boolean Series: rows with a usable flux (finite, positive error, no excluded flag)."""
    ok = np.isfinite(lc["flux"]) & np.isfinite(lc["flux_err"]) & (lc["flux_err"] > 0)
    column = flag_column(lc)
    if column is not None and exclude_flags:
        ok = ok & ((lc[column] & int(exclude_flags)) == 0)
    return ok


def _chi2_sigma(chi2: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """One-sided Gaussian significance of chi2 with ``dof`` degrees of freedom."""
    from scipy.special import ndtri_exp
    from scipy.stats import chi2 as chi2_dist

    out = np.full(np.shape(chi2), np.nan)
    ok = (dof > 0) & np.isfinite(chi2)
    if ok.any():
        logp = chi2_dist.logsf(chi2[ok], dof[ok])
        out[ok] = -ndtri_exp(np.minimum(logp, -1e-300))
    return out


def _stats_frame(
    lc: pd.DataFrame, by: list[str], exclude_flags: int, error_floor: float
) -> pd.DataFrame:
    """Per-group statistics of one pandas frame (every row of a group must be in it)."""
    cols = list(by) + list(STATS_COLUMNS)
    if len(lc) == 0:
        return pd.DataFrame(
            {
                c: pd.Series([], dtype=STATS_COLUMNS.get(c, lc[c].dtype if c in lc else "object"))
                for c in cols
            }
        )
    ok = good_rows(lc, exclude_flags).to_numpy(dtype=bool)
    keys = lc[by]
    total = keys.groupby(by, sort=True, observed=True).size().rename("n_rows")
    first = (
        lc.groupby(by, sort=True, observed=True)[["ra", "dec"]].first()
        if {"ra", "dec"} <= set(lc.columns)
        else pd.DataFrame(index=total.index, data={"ra": np.nan, "dec": np.nan})
    )
    g = lc.loc[
        ok, list(by) + ["flux", "flux_err"] + (["mjd"] if "mjd" in lc.columns else [])
    ].copy()
    f = g["flux"].to_numpy(np.float64)
    e = g["flux_err"].to_numpy(np.float64)
    if error_floor:
        e = np.hypot(e, error_floor * np.abs(f))
    g["_w"] = 1.0 / e**2
    g["_wf"] = g["_w"] * f
    g["_e"] = e
    gb = g.groupby(by, sort=True, observed=True)
    sums = gb[["_w", "_wf"]].sum()
    n = gb.size().rename("n")
    mean = sums["_wf"] / sums["_w"]
    g["_mean"] = gb["_wf"].transform("sum") / gb["_w"].transform("sum")
    g["_chi"] = (g["flux"] - g["_mean"]) / g["_e"]
    g["_chi2"] = g["_chi"] ** 2
    g["_absdev"] = g["_chi"].abs()
    chi2 = g.groupby(by, sort=True, observed=True)["_chi2"].sum()
    out = pd.DataFrame(index=total.index)
    out["ra"] = first["ra"]
    out["dec"] = first["dec"]
    out["n"] = n.reindex(out.index).fillna(0).astype("int64")
    out["n_flagged"] = (total - out["n"]).astype("int64")
    out["mean_flux"] = mean.reindex(out.index)
    out["mean_flux_err"] = (1.0 / np.sqrt(sums["_w"])).reindex(out.index)
    with np.errstate(divide="ignore", invalid="ignore"):
        mf = out["mean_flux"].to_numpy(np.float64)
        out["mean_mag"] = np.where(
            mf > 0, UJY_ZEROPOINT - 2.5 * np.log10(np.where(mf > 0, mf, 1.0)), np.nan
        )
    dof = (out["n"] - 1).to_numpy(np.float64)
    c2 = chi2.reindex(out.index).to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["chi2_dof"] = np.where(dof > 0, c2 / np.where(dof > 0, dof, 1.0), np.nan)
    out["chi2_sigma"] = _chi2_sigma(c2, dof)
    fl = gb["flux"]
    out["amplitude"] = (fl.max() - fl.min()).reindex(out.index)
    out["amplitude_robust"] = (fl.quantile(0.95) - fl.quantile(0.05)).reindex(out.index)
    out["max_dev_sigma"] = (
        g.groupby(by, sort=True, observed=True)["_absdev"].max().reindex(out.index)
    )
    if "mjd" in g.columns:
        out["mjd_first"] = gb["mjd"].min().reindex(out.index)
        out["mjd_last"] = gb["mjd"].max().reindex(out.index)
    else:
        out["mjd_first"] = np.nan
        out["mjd_last"] = np.nan
    out = out.reset_index()
    return out.astype({c: t for c, t in STATS_COLUMNS.items()})[cols]


def lightcurve_stats(
    lc: Any,
    *,
    by: Sequence[str] = ("id", "filter"),
    exclude_flags: int = BAD_FLAGS,
    error_floor: float = 0.0,
    partitioned: bool = True,
) -> Any:
    """Summary statistics per object and filter of a light-curve table.

    One row per ``by`` group (default ``id, filter``) with the columns of
    :data:`STATS_COLUMNS`: number of usable epochs ``n`` (and ``n_flagged`` left out),
    the inverse-variance weighted mean flux and its error (microjansky) and AB magnitude,
    ``chi2_dof`` of that constant (about 1 for a constant source with right errors) and its
    significance ``chi2_sigma``, ``amplitude`` (max - min flux), ``amplitude_robust`` (95th -
    5th percentile), ``max_dev_sigma`` (largest |flux - mean| / error), the time span.

    ``error_floor`` adds a fractional error in quadrature (systematics, e.g. 0.005).

    ``lc`` pandas: computed at once. ``lc`` dask: lazy, and with ``partitioned=True`` (right
    for :func:`ps1dask.lightcurves.lightcurves` output and anything row-filtered from it,
    whose partitions hold every row of their positions) computed partition by partition
    with no shuffle; for other dask frames pass ``partitioned=False`` (the rows are first
    shuffled so each object lands in one partition).

    Parameters
    ----------
    lc : pandas.DataFrame or dask.dataframe.DataFrame
        A light-curve table (columns ``flux``, ``flux_err`` in microjansky, ``flags``, the
        ``by`` columns, optionally ``mjd``).
    by : sequence of str
        The columns whose distinct values make one row of the result.
    exclude_flags : int
        Rows with any of these flag bits are left out (counted in ``n_flagged``).
    error_floor : float
        Fractional error added in quadrature (dimensionless, e.g. 0.005).
    partitioned : bool
        Dask only: whether each partition already holds every row of its groups.

    Returns
    -------
    pandas.DataFrame or dask.dataframe.DataFrame
        One row per group with the columns of :data:`STATS_COLUMNS` (lazy for dask input).
    """
    by = list(by)
    missing = [c for c in [*by, "flux", "flux_err"] if c not in lc.columns]
    if missing:
        raise InvalidParameterError(f"light-curve table has no {missing} column(s)")
    if isinstance(lc, pd.DataFrame):
        return _stats_frame(lc, by, int(exclude_flags), float(error_floor))
    meta = _stats_frame(lc._meta, by, int(exclude_flags), float(error_floor))
    frame = lc if partitioned else lc.shuffle(on=by[0])
    return frame.map_partitions(
        _stats_frame,
        by,
        int(exclude_flags),
        float(error_floor),
        meta=meta,
        enforce_metadata=False,
    )


def variability_candidates(
    stats: pd.DataFrame,
    sigma: float = 5.0,
    *,
    min_n: int = 5,
    max_dev_sigma: float | None = None,
) -> pd.DataFrame:
    """Rows of :func:`lightcurve_stats` whose flux is not constant at ``sigma`` significance.

    A row is a candidate when it has at least ``min_n`` usable epochs and its chi2 against
    a constant is beyond ``sigma`` (one-sided Gaussian equivalent, ``chi2_sigma``); with
    ``max_dev_sigma`` also when a single epoch deviates by more than that many errors.
    Sorted by significance, most variable first. Works on dask too (lazy filter).

    Parameters
    ----------
    stats : pandas.DataFrame or dask.dataframe.DataFrame
        Output of :func:`lightcurve_stats`.
    sigma : float
        Least ``chi2_sigma`` (Gaussian-equivalent sigmas) of a candidate.
    min_n : int
        Least number of usable epochs.
    max_dev_sigma : float, optional
        Also a candidate when one epoch deviates by more than this many errors.

    Returns
    -------
    pandas.DataFrame or dask.dataframe.DataFrame
        The candidate rows, most significant first (lazy and unsorted for dask input).
    """
    sel = (stats["n"] >= int(min_n)) & (stats["chi2_sigma"] >= float(sigma))
    if max_dev_sigma is not None:
        sel = sel | ((stats["n"] >= int(min_n)) & (stats["max_dev_sigma"] >= float(max_dev_sigma)))
    out = stats[sel]
    if isinstance(out, pd.DataFrame):
        return out.sort_values("chi2_sigma", ascending=False, kind="stable").reset_index(drop=True)
    return out


def _one_object(
    lc: pd.DataFrame, filter: str | Sequence[str] | None, exclude_flags: int
) -> pd.DataFrame:
    if not isinstance(lc, pd.DataFrame):
        lc = lc.compute()
    if "id" in lc.columns and lc["id"].nunique() > 1:
        raise InvalidParameterError(
            f"expected the light curve of one object, got {lc['id'].nunique()} ids "
            "(select one: lc[lc['id'] == ...])"
        )
    if filter is not None:
        wanted = [filter] if isinstance(filter, str) and len(filter) == 1 else list(filter)
        lc = lc[lc["filter"].isin(wanted)]
    return lc[good_rows(lc, exclude_flags).to_numpy(bool)]


@dataclass(frozen=True)
class PeriodResult:
    """The best Lomb-Scargle period of a light curve."""

    period: float  #: days
    power: float
    false_alarm_probability: float  #: Baluev's estimate (single band only; NaN otherwise)
    n_points: int
    filters: str
    method: str
    frequency: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    periodogram: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


def best_period(
    lc: pd.DataFrame,
    filter: str | Sequence[str] | None = None,
    *,
    min_period: float = 0.1,
    max_period: float | None = None,
    samples_per_peak: float = 5.0,
    exclude_flags: int = BAD_FLAGS,
) -> PeriodResult:
    """The period (days) of highest Lomb-Scargle power in one object's light curve.

    ``filter`` None uses every filter: astropy's ``LombScargleMultiband`` (a shared period,
    each band its own mean, amplitude and phase) when there are several, ``LombScargle``
    for one. Fluxes (microjansky) with their errors; frequencies from ``1/max_period``
    (default the time span) to ``1/min_period``, ``samples_per_peak`` per peak width.

    Parameters
    ----------
    lc : pandas.DataFrame
        The light curve of one object (columns ``mjd``, ``flux``, ``flux_err``, ``filter``,
        ``flags``).
    filter : str or sequence of str, optional
        The filter(s) to use; None for all.
    min_period : float
        Shortest period searched, days.
    max_period : float, optional
        Longest period searched, days (default the time span).
    samples_per_peak : float
        Frequency grid points per periodogram peak width.
    exclude_flags : int
        Rows with any of these flag bits are left out.

    Returns
    -------
    PeriodResult
        The best period (days), its power, false-alarm probability and the periodogram.
    """
    from astropy.timeseries import LombScargle, LombScargleMultiband

    data = _one_object(lc, filter, exclude_flags)
    if len(data) < 5:
        raise InvalidParameterError(f"only {len(data)} usable epochs: too few for a period search")
    t = data["mjd"].to_numpy(np.float64)
    y = data["flux"].to_numpy(np.float64)
    dy = data["flux_err"].to_numpy(np.float64)
    bands = data["filter"].astype(str).to_numpy()
    span = float(t.max() - t.min())
    if span <= 0:
        raise InvalidParameterError("all epochs at the same time: no period search possible")
    f_min = 1.0 / float(max_period if max_period else span)
    f_max = 1.0 / float(min_period)
    df = 1.0 / (float(samples_per_peak) * span)
    freq = np.arange(f_min, f_max, df)
    used = "".join(sorted(set(bands), key="grizy".find))
    if len(set(bands)) > 1:
        model = LombScargleMultiband(t, y, bands, dy)
        power = model.power(freq, method="fast")
        fap = float("nan")
        method = "LombScargleMultiband"
    else:
        model = LombScargle(t, y, dy)
        power = model.power(freq)
        best = float(np.nanmax(power))
        fap = float(
            model.false_alarm_probability(best, minimum_frequency=f_min, maximum_frequency=f_max)
        )
        method = "LombScargle"
    k = int(np.nanargmax(power))
    return PeriodResult(
        period=float(1.0 / freq[k]),
        power=float(power[k]),
        false_alarm_probability=fap,
        n_points=len(t),
        filters=used,
        method=method,
        frequency=freq,
        periodogram=np.asarray(power),
    )


@dataclass(frozen=True)
class TransientFit:
    """An outburst fitted to one object's multi-band light curve (fluxes in microjansky)."""

    peak_mjd: float
    rise_days: float  #: Gaussian rise time (sigma, days)
    decline_mag_per_day: float
    peak_flux: dict[str, float]  #: outburst flux at peak per filter (above the baseline)
    baseline: dict[str, float]  #: quiescent flux per filter
    chi2: float
    n_points: int
    max_flux_mjd: float  #: time of the brightest epoch (model free)
    #: peak times whose best grid fit is within delta chi2 = 1 of the grid's best (rough)
    peak_interval: tuple[float, float]


def _shape(dt: np.ndarray, rise: np.ndarray, decline: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.where(
            dt < 0, np.exp(-0.5 * (dt / rise) ** 2), 10.0 ** (-0.4 * decline * np.maximum(dt, 0.0))
        )


def fit_transient(
    lc: pd.DataFrame,
    filter: str | Sequence[str] | None = None,
    *,
    rise_days: Sequence[float] | None = None,
    decline_mag_per_day: Sequence[float] | None = None,
    exclude_flags: int = BAD_FLAGS,
) -> TransientFit:
    """Fit a one-outburst template to one object's light curve: the time of peak.

    Template per filter ``b``: ``baseline_b + peak_b * shape(t - peak_mjd)`` with ``shape``
    a Gaussian rise of width ``rise_days`` before the peak and a linear-in-magnitude decline
    of ``decline_mag_per_day`` after it (a common empirical form). The baselines and peaks
    enter linearly and are solved exactly; ``peak_mjd``, ``rise_days`` and the decline are
    searched on a grid (0.25 d in ``peak_mjd``; ``rise_days`` and ``decline_mag_per_day``
    give the grids of the others) for the least chi2, then polished together (Nelder-Mead).
    Needs epochs on both sides of the peak to pin it: with a rise never observed, or a
    single night near the peak, the fit is free to slide (see ``peak_interval``) and the
    time of the brightest epoch, ``max_flux_mjd``, is the better estimate.

    Parameters
    ----------
    lc : pandas.DataFrame
        The light curve of one object (columns ``mjd``, ``flux``, ``flux_err``, ``filter``,
        ``flags``).
    filter : str or sequence of str, optional
        The filter(s) to fit; None for all.
    rise_days : sequence of float, optional
        Grid of Gaussian rise widths searched, days.
    decline_mag_per_day : sequence of float, optional
        Grid of decline rates searched, magnitudes per day.
    exclude_flags : int
        Rows with any of these flag bits are left out.

    Returns
    -------
    TransientFit
        The time of peak (UTC MJD) with its interval, per-filter baselines and peaks
        (microjansky), and the fit's chi2.
    """
    data = _one_object(lc, filter, exclude_flags)
    if len(data) < 4:
        raise InvalidParameterError(f"only {len(data)} usable epochs: too few to fit an outburst")
    t = data["mjd"].to_numpy(np.float64)
    y = data["flux"].to_numpy(np.float64)
    w = 1.0 / data["flux_err"].to_numpy(np.float64) ** 2
    bands = data["filter"].astype(str).to_numpy()
    names = sorted(set(bands), key="grizy".find)
    onehot = np.stack([bands == b for b in names]).astype(np.float64)  # (B, N)
    rises = np.asarray(rise_days if rise_days is not None else np.geomspace(0.5, 30.0, 24))
    declines = np.asarray(
        decline_mag_per_day if decline_mag_per_day is not None else np.geomspace(0.005, 0.5, 16)
    )
    # the brightest epoch: largest excess over its own filter's median, in sigma
    med = np.array([np.median(y[bands == b]) for b in names]) @ onehot
    t_max = float(t[int(np.argmax((y - med) * np.sqrt(w)))])

    def solve(
        t0: np.ndarray, rise: np.ndarray, decline: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """chi2 of every (t0, rise, decline) and the linear parameters, vectorised."""
        T, R, D = np.meshgrid(t0, rise, decline, indexing="ij")
        s = _shape(t[None, :] - T.reshape(-1, 1), R.reshape(-1, 1), D.reshape(-1, 1))  # (M, N)
        # per band: minimise sum w (y - a - b s)^2 -> 2x2 normal equations
        sw = onehot @ w  # (B,)
        sy = onehot @ (w * y)
        ws = s * w[None, :]
        ss = ws @ onehot.T  # (M, B)
        sss = (ws * s) @ onehot.T
        ssy = (ws * y[None, :]) @ onehot.T
        det = sw[None, :] * sss - ss**2
        with np.errstate(divide="ignore", invalid="ignore"):
            b = np.where(det > 0, (sw[None, :] * ssy - ss * sy[None, :]) / det, 0.0)
            a = np.where(sw[None, :] > 0, (sy[None, :] - b * ss) / sw[None, :], 0.0)
        model = a @ onehot + (b @ onehot) * s
        chi2 = ((y[None, :] - model) ** 2 * w[None, :]).sum(axis=1)
        chi2 = np.where(np.all(b >= 0, axis=1), chi2, np.inf)  # outbursts are brightenings
        return chi2.reshape(T.shape), np.stack([a, b], axis=-1).reshape(*T.shape, len(names), 2)

    # the peak lies at most a rise time or so before, or a little after, the brightest epoch
    lo = max(float(t.min()) - 30.0, t_max - 3.0 * float(np.max(rises)))
    hi = min(float(t.max()) + 5.0, t_max + 10.0)
    coarse = np.arange(lo, hi, 0.25)
    step = max(1, int(2e6 // max(rises.size * declines.size * t.size, 1)))  # bounded memory
    per_t0 = np.concatenate(
        [
            solve(coarse[i : i + step], rises, declines)[0].reshape(-1, rises.size * declines.size)
            for i in range(0, coarse.size, step)
        ]
    )
    best_rd = np.argmin(per_t0, axis=1)
    best_c2 = per_t0[np.arange(coarse.size), best_rd]
    if not np.isfinite(best_c2).any():
        raise InvalidParameterError("no outburst fits this light curve (no brightening)")
    # start points: the best grid points of up to 3 distinct peak times (the chi2 surface
    # can have several minima when the peak falls between epochs)
    starts: list[np.ndarray] = []
    for i in np.argsort(best_c2):
        if not np.isfinite(best_c2[i]) or len(starts) == 3:
            break
        if any(abs(coarse[i] - st[0]) < 1.0 for st in starts):
            continue
        ri, di = np.unravel_index(int(best_rd[i]), (rises.size, declines.size))
        starts.append(np.array([coarse[i], math.log(rises[ri]), math.log(declines[di])]))

    # polish the three non-linear parameters together (the linear ones solved exactly)
    from scipy.optimize import minimize

    def chi2_at(x: np.ndarray) -> float:
        c2, _ = solve(np.array([x[0]]), np.array([math.exp(x[1])]), np.array([math.exp(x[2])]))
        return float(c2.ravel()[0])

    x, best_chi2 = starts[0], chi2_at(starts[0])
    for st in starts:
        res = minimize(
            chi2_at,
            st,
            method="Nelder-Mead",
            options={"xatol": 1e-3, "fatol": 1e-3, "maxiter": 400},
        )
        if np.isfinite(res.fun) and res.fun < best_chi2:
            x, best_chi2 = res.x, float(res.fun)
    c2_best, lin = solve(np.array([x[0]]), np.array([math.exp(x[1])]), np.array([math.exp(x[2])]))
    ab = lin[0, 0, 0]
    # how well the data pin the peak: peak times within delta chi2 = 1 of the best
    within = coarse[best_c2 <= np.min(best_c2) + 1.0]  # the grid's own profile
    lo_t = float(min(within.min(), x[0])) if within.size else float(x[0])
    hi_t = float(max(within.max(), x[0])) if within.size else float(x[0])
    return TransientFit(
        peak_mjd=float(x[0]),
        rise_days=float(math.exp(x[1])),
        decline_mag_per_day=float(math.exp(x[2])),
        peak_flux={b: float(ab[i, 1]) for i, b in enumerate(names)},
        baseline={b: float(ab[i, 0]) for i, b in enumerate(names)},
        chi2=float(c2_best.ravel()[0]),
        n_points=len(t),
        max_flux_mjd=t_max,
        peak_interval=(lo_t, hi_t),
    )
