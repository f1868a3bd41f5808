"""Per-object light-curve statistics, the variability search, periods and transient peaks."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from ps1dask.analysis import (
    STATS_COLUMNS,
    best_period,
    fit_transient,
    good_rows,
    lightcurve_stats,
    variability_candidates,
)
from ps1dask.exceptions import InvalidParameterError
from ps1dask.lightcurves import LCFlag


def _times(rng: np.random.Generator, n: int, seasons: int = 4) -> np.ndarray:
    """PS1-like sampling: seasons of ~5 months, visits in TTI pairs 20 minutes apart."""
    nights = 55000.0 + 365.25 * rng.integers(0, seasons, n // 2) + rng.uniform(0, 150, n // 2)
    return np.sort(np.concatenate([nights, nights + 20.0 / 1440.0]))


def _frame(
    ident: str,
    t: np.ndarray,
    band: np.ndarray,
    true: np.ndarray,
    err: np.ndarray,
    rng: np.random.Generator,
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ident,
            "ra": 10.0,
            "dec": 20.0,
            "filter": band,
            "mjd": t,
            "flux": true + rng.normal(0.0, err),
            "flux_err": err,
            "lc_flags": 0,
            "true": true,
        }
    )


def constant_stars(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n):
        k = int(rng.integers(10, 31))
        t = _times(rng, 2 * (k // 2))
        band = rng.choice(["g", "r"], t.size)
        flux = np.where(band == "g", 1.0, 1.4) * 10 ** rng.uniform(1, 3)
        err = np.sqrt(4.0 + 0.01 * flux) * rng.uniform(0.8, 1.2, t.size)
        parts.append(_frame(f"c{i:04d}", t, band, flux, err, rng))
    return pd.concat(parts, ignore_index=True)


def test_constant_stars_have_unit_chi2_and_no_false_variables():
    lc = constant_stars(600)
    stats = lightcurve_stats(lc)
    assert list(stats.columns) == ["id", "filter", *STATS_COLUMNS]
    assert len(stats) == lc.groupby(["id", "filter"]).ngroups
    assert abs(stats.chi2_dof.median() - 1.0) < 0.1
    assert abs(stats.chi2_dof.mean() - 1.0) < 0.1
    # weighted means agree with the truth within their errors
    truth = lc.groupby(["id", "filter"]).true.first().to_numpy()
    pull = (stats.mean_flux.to_numpy() - truth) / stats.mean_flux_err.to_numpy()
    assert abs(pull.mean()) < 0.15 and 0.85 < pull.std() < 1.15
    flagged = variability_candidates(stats, sigma=5)
    assert len(flagged) / len(stats) < 0.01
    assert (stats.n == lc.groupby(["id", "filter"]).size().to_numpy()).all()
    assert (stats.amplitude >= stats.amplitude_robust).all()


def test_variables_are_found_and_flags_respected():
    rng = np.random.default_rng(3)
    lc = constant_stars(50, seed=4)
    t = _times(rng, 30)
    band = np.array(["r"] * t.size)
    err = np.full(t.size, 5.0)
    periodic = _frame("per", t, band, 500.0 * (1 + 0.1 * np.sin(2 * np.pi * t / 3.3)), err, rng)
    outburst = 100.0 + np.where(np.abs(t - t[12]) < 0.1, 300.0, 0.0)
    transient = _frame("tr", t, band, outburst, err, rng)
    # a wild epoch flagged BLANK|SATURATED must not count
    spoiled = _frame("spoiled", t, band, np.full(t.size, 200.0), err, rng)
    spoiled.loc[3, "flux"] = 5000.0
    spoiled.loc[3, "lc_flags"] = int(LCFlag.SATURATED)
    spoiled.loc[4, "flux"] = np.nan
    spoiled.loc[4, "lc_flags"] = int(LCFlag.BLANK)
    lc = pd.concat([lc, periodic, transient, spoiled], ignore_index=True)
    stats = lightcurve_stats(lc)
    cands = variability_candidates(stats, sigma=5)
    assert {"per", "tr"} <= set(cands.id)
    assert "spoiled" not in set(cands.id)
    row = stats.set_index("id").loc["spoiled"]
    assert row.n == t.size - 2 and row.n_flagged == 2
    assert cands.chi2_sigma.is_monotonic_decreasing
    # every flag kept: the saturated epoch shows up
    loose = lightcurve_stats(lc, exclude_flags=0)
    assert loose.set_index("id").loc["spoiled"].max_dev_sigma > 100
    assert good_rows(spoiled).sum() == t.size - 2
    # tables of earlier versions name the column "flags" (a pandas attribute): still honoured
    legacy = lc.rename(columns={"lc_flags": "flags"})
    pd.testing.assert_frame_equal(lightcurve_stats(legacy), stats)
    assert good_rows(spoiled.rename(columns={"lc_flags": "flags"})).sum() == t.size - 2


def test_dask_stats_equal_pandas_with_and_without_shuffle():
    lc = constant_stars(40, seed=5)
    want = lightcurve_stats(lc).sort_values(["id", "filter"]).reset_index(drop=True)
    # partitions hold whole objects (as ps1dask.lightcurves gives them)
    ids = sorted(lc.id.unique())
    parts = [lc[lc.id.isin(ids[i : i + 7])] for i in range(0, len(ids), 7)]
    ddf = dd.concat([dd.from_pandas(p, npartitions=1) for p in parts])
    got = lightcurve_stats(ddf).compute().sort_values(["id", "filter"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    # objects split across partitions: partitioned=False shuffles first
    mixed = dd.from_pandas(lc.sample(frac=1.0, random_state=1), npartitions=4)
    got = lightcurve_stats(mixed, partitioned=False).compute()
    got = got.sort_values(["id", "filter"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=False, rtol=1e-9)
    lazy = variability_candidates(lightcurve_stats(ddf), sigma=5)
    assert isinstance(lazy, dd.DataFrame)


@pytest.mark.parametrize("period", [0.37, 3.3, 27.0])
def test_periods_are_recovered(period):
    rng = np.random.default_rng(int(period * 100))
    t = _times(rng, 60)
    band = rng.choice(["g", "r", "i"], t.size)
    mean = np.select([band == "g", band == "r"], [300.0, 500.0], 650.0)
    true = mean * (1.0 + 0.15 * np.sin(2 * np.pi * t / period + 1.0))
    lc = _frame("v", t, band, true, np.sqrt(25.0 + 0.02 * true), rng)
    multi = best_period(lc)
    assert multi.method == "LombScargleMultiband" and multi.filters == "gri"
    assert abs(multi.period - period) / period < 0.01
    single = best_period(lc, filter="r")
    assert single.method == "LombScargle" and single.filters == "r"
    if abs(single.period - period) / period < 0.01:
        assert single.false_alarm_probability < 1e-3


def test_transient_peak_within_a_day():
    rng = np.random.default_rng(11)
    for peak, rise, decline in ((55120.3, 3.0, 0.05), (55300.8, 6.0, 0.03), (55500.5, 2.0, 0.08)):
        # a season sampled every ~3 days, alternating filters
        t = np.sort(peak - 60.0 + np.cumsum(rng.uniform(1.5, 4.5, 45)))
        band = np.where(np.arange(t.size) % 2 == 0, "g", "r")
        dt = t - peak
        shape = np.where(
            dt < 0, np.exp(-0.5 * (dt / rise) ** 2), 10 ** (-0.4 * decline * np.maximum(dt, 0))
        )
        true = np.where(band == "g", 20.0, 30.0) + np.where(band == "g", 400.0, 300.0) * shape
        lc = _frame("t", t, band, true, np.sqrt(9.0 + 0.02 * true), rng)
        fit = fit_transient(lc)
        assert abs(fit.peak_mjd - peak) < 1.0, (peak, fit)
        assert abs(fit.max_flux_mjd - peak) < 5.0
        assert fit.peak_flux["g"] > fit.peak_flux["r"] > 0


def test_one_object_helpers_refuse_bad_input():
    lc = constant_stars(2)
    with pytest.raises(InvalidParameterError, match="one object"):
        best_period(lc)
    with pytest.raises(InvalidParameterError, match="too few"):
        best_period(lc[lc.id == "c0000"].head(3))
    with pytest.raises(InvalidParameterError, match="no"):
        lightcurve_stats(lc.drop(columns=["flux_err"]))
    empty = lightcurve_stats(lc.iloc[:0])
    assert len(empty) == 0 and list(empty.columns) == ["id", "filter", *STATS_COLUMNS]
