"""Forced-photometry light curves: the photometry, the store reader, the CLI, and end to end
against the emulator (warps job -> light curves -> truth; coadds -> stacks)."""

from __future__ import annotations

import math
import tracemalloc

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from astropy.stats import sigma_clip
from hypothesis import given, settings
from hypothesis import strategies as st
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry

import ps1dask
from ps1dask.analysis import best_period, fit_transient, lightcurve_stats, variability_candidates
from ps1dask.cli import main
from ps1dask.coadd import coadd_photometry, coadd_warps
from ps1dask.conventions import counts_to_microjansky
from ps1dask.exceptions import InvalidParameterError
from ps1dask.lightcurves import (
    BAD_FLAGS,
    LIGHTCURVE_COLUMNS,
    STACK_COLUMNS,
    LCFlag,
    flag_names,
    forced_photometry,
    lightcurves,
    lightcurves_frame,
    read_lightcurves,
)
from ps1dask.lightcurves.store import _partition_args, read_partition
from ps1dask.lightcurves.synthetic import make_synthetic_store
from ps1dask.photometry import (
    aperture_geometry,
    clipped_stats,
    gaussian_pixel_psf,
    measure_aperture,
    measure_apertures,
)

# -- photometry -------------------------------------------------------------------------


def test_clipped_stats_is_astropys_sigma_clip():
    rng = np.random.default_rng(0)
    v = rng.normal(0, 1, (200, 300))
    v[rng.random(v.shape) < 0.05] += 30.0 * rng.random()
    v[rng.random(v.shape) < 0.1] = np.nan
    v[3] = np.nan
    med, std, cnt = clipped_stats(v)
    ref = sigma_clip(np.ma.masked_invalid(v), sigma=3.0, maxiters=5, axis=1)
    np.testing.assert_allclose(med, np.ma.median(ref, axis=1).filled(np.nan), atol=1e-12)
    np.testing.assert_allclose(std, ref.std(axis=1, ddof=1).filled(np.nan), atol=1e-12)
    assert (cnt == ref.count(axis=1)).all() and cnt[3] == 0 and np.isnan(med[3])


def test_aperture_sums_are_photutils():
    rng = np.random.default_rng(1)
    img = rng.normal(5.0, 2.0, (3, 41, 41))
    pos = [(20.3, 19.6), (20.0, 20.0), (19.55, 20.45)]
    geos = [aperture_geometry((41, 41), p, 6.0, (12.0, 18.0)) for p in pos]
    res = measure_apertures(img, geometry=geos)
    for i, p in enumerate(pos):
        ring = CircularAnnulus(p, 12.0, 18.0).to_mask(method="center").get_values(img[i])
        bkg = float(np.ma.median(sigma_clip(ring, sigma=3.0, maxiters=5)))
        ref = aperture_photometry(img[i] - bkg, CircularAperture(p, 6.0), method="exact")
        assert res.flux[i] == pytest.approx(float(ref["aperture_sum"][0]), abs=1e-9)
        assert res.area[i] == pytest.approx(math.pi * 36.0, rel=1e-9)
        one = measure_apertures(img[i], geometry=geos[i])  # per-image and shared agree
        assert one.flux[0] == pytest.approx(res.flux[i], abs=1e-9)
    single = measure_aperture(img[1], position=pos[1], radius=6.0, annulus=(12.0, 18.0))
    assert single.flux == pytest.approx(res.flux[1]) and single.n_masked == 0


def test_source_photon_noise_makes_pulls_unit_without_a_variance_image():
    # a 1 e-/count star on a flat sky: the sky scatter alone underestimates its error
    rng = np.random.default_rng(12)
    n, size, sky_sigma = 600, 48, 8.0
    psf = gaussian_pixel_psf((size, size), (24.3, 23.8), 2.0)[0]
    model = 40000.0 * psf
    noise = rng.normal(size=(n, size, size)) * np.sqrt(sky_sigma**2 + model)
    images = model + noise
    want = measure_apertures(model[None], radius=6.0, annulus=(12.0, 20.0)).flux[0]
    with_gain = measure_apertures(images, radius=6.0, annulus=(12.0, 20.0), gain=1.0)
    sky_only = measure_apertures(images, radius=6.0, annulus=(12.0, 20.0))
    assert 0.9 < np.std((with_gain.flux - want) / with_gain.flux_err) < 1.1
    assert np.std((sky_only.flux - want) / sky_only.flux_err) > 1.5
    # a gain twice as large halves the source term
    half = measure_apertures(images, radius=6.0, annulus=(12.0, 20.0), gain=2.0)
    source_1 = with_gain.flux_err**2 - sky_only.flux_err**2
    source_2 = half.flux_err**2 - sky_only.flux_err**2
    np.testing.assert_allclose(source_2, source_1 / 2.0, rtol=1e-9)
    # forced photometry refuses to make sky-only errors
    geo = aperture_geometry((size, size), (24.3, 23.8), 6.0, (12.0, 20.0))
    with pytest.raises(ValueError, match="variances or a gain"):
        forced_photometry(images[:2], None, None, geometry=geo, zeropoint=25.0)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0.0, 1e6),
    st.floats(0.1, 10.0),
    st.floats(1.0, 30.0),
    st.integers(0, 2**31 - 1),
)
def test_source_term_is_the_counts_over_the_gain(amplitude, gain, sky_sigma, seed):
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, sky_sigma, (1, 40, 40))
    img += amplitude * gaussian_pixel_psf((40, 40), (20.0, 20.0), 1.8)
    geo = aperture_geometry((40, 40), (20.0, 20.0), 6.0, (12.0, 19.0))
    plain = measure_apertures(img, geometry=geo)
    with_gain = measure_apertures(img, geometry=geo, gain=gain)
    sub = np.where(np.isfinite(img[0]), img[0] - plain.background[0], 0.0)
    source = max(float(np.sum(geo.weights**2 * sub)), 0.0) / gain
    np.testing.assert_allclose(
        with_gain.flux_err[0] ** 2, plain.flux_err[0] ** 2 + source, rtol=1e-9, atol=1e-9
    )
    assert with_gain.flux[0] == plain.flux[0]  # the flux itself does not change


def test_psf_correction_gives_total_flux_in_any_seeing_and_with_masked_pixels():
    rng = np.random.default_rng(2)
    n, size = 400, 45
    pos = (22.2, 21.7)
    sig = rng.uniform(1.3, 3.2, n)
    flux = 8000.0
    model = flux * gaussian_pixel_psf((size, size), pos, sig)
    var = 144.0 + model
    img = model + rng.normal(size=model.shape) * np.sqrt(var)
    bad = np.zeros(img.shape, bool)
    bad[::3, :, 20:22] = True  # a 2-column gap next to the centre in a third of them
    geo = aperture_geometry((size, size), pos, 6.0, (12.0, 20.0))
    plain = measure_apertures(img, var, geometry=geo, bad=bad)
    corr = measure_apertures(img, var, geometry=geo, bad=bad, psf_sigma=sig)
    assert np.median(plain.flux) < 0.97 * flux  # the aperture misses the wings
    pull = (corr.flux - flux) / corr.flux_err
    assert abs(pull.mean()) < 0.15 and 0.85 < pull.std() < 1.15
    assert (corr.n_masked[::3] > 0).all() and (corr.n_masked[1::3] == 0).all()
    assert (corr.apcorr >= 1.0).all()


# -- from a synthetic store ------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("lc") / "syn.zarr"
    truth = make_synthetic_store(
        path,
        n_positions=14,
        filters="gr",
        n_epochs=24,
        size=48,
        chunk=4,
        epoch_chunk=8,
        seed=3,
        mag_range=(15.5, 19.5),
        blank_fraction=0.08,
        failed_fraction=0.03,
    )
    return path, truth


def _with_truth(lc: pd.DataFrame, truth) -> pd.DataFrame:
    keys = truth.epochs[["id", "filter", "epoch", "mjd", "true_flux", "psf_fwhm"]]
    return lc.merge(keys, on=["id", "filter", "epoch"], suffixes=("", "_truth"), validate="1:1")


def test_lightcurves_of_a_synthetic_store(synthetic):
    path, truth = synthetic
    lc = lightcurves(path)
    assert isinstance(lc, dd.DataFrame)
    assert lc.npartitions == 4  # one per position chunk
    assert list(lc.columns) == [*LIGHTCURVE_COLUMNS, *STACK_COLUMNS]
    df = lc.compute()
    assert len(df) == len(truth.epochs)  # every (position, filter, epoch < n_epochs), no padding
    m = _with_truth(df, truth)
    np.testing.assert_array_equal(m.mjd, m.mjd_truth)  # UTC mid-exposure, as stored
    # blank and failed warps: a row each, flagged, no flux
    blank = m.status == 5
    failed = m.status == 4
    assert blank.any() and failed.any()
    assert ((m["lc_flags"][blank] & int(LCFlag.BLANK)) > 0).all() and m.flux[blank].isna().all()
    assert ((m["lc_flags"][failed] & int(LCFlag.FAILED)) > 0).all() and m.flux[failed].isna().all()
    # usable rows: fluxes match the truth within their errors
    good = m[(m["lc_flags"] & int(BAD_FLAGS)) == 0]
    assert len(good) > 0.75 * len(m)
    pull = (good.flux - good.true_flux) / good.flux_err
    assert abs(pull.mean()) < 0.15 and 0.85 < pull.std() < 1.2
    assert ((good["lc_flags"] & int(LCFlag.MASKED)) > 0).any()  # gaps and cosmic rays were handled
    np.testing.assert_allclose(good.mag, 23.9 - 2.5 * np.log10(good.flux), atol=1e-3)
    assert (good.psf_fwhm == good.psf_fwhm_truth).all() and (good.apcorr >= 1).all()
    # the stack in the same units and aperture: the mean flux of each source
    src = truth.sources.set_index("id")
    mean = [3631e6 * 10 ** (-0.4 * src.loc[i, f"mag_{b}"]) for i, b in zip(m.id, m["filter"])]
    spull = (m.stack_flux - np.array(mean)) / m.stack_flux_err
    assert abs(spull.mean()) < 0.5 and spull.abs().max() < 5


def test_partitions_hold_whole_positions_in_order(synthetic):
    path, _ = synthetic
    lc = lightcurves(path, filters="r", include_stack=False, positions_per_partition=8)
    assert lc.npartitions == 2 and "stack_flux" not in lc.columns
    parts = [lc.get_partition(i).compute() for i in range(lc.npartitions)]
    ids = [set(p.id) for p in parts]
    assert not ids[0] & ids[1]
    for p in parts:
        assert (p["filter"] == "r").all()
        # sorted by position (store order), filter, epoch
        first = p.groupby("id", sort=False).head(1).index
        assert p.groupby("id", sort=False).epoch.apply(lambda e: e.is_monotonic_increasing).all()
        assert len(first) == p.id.nunique()
    # per-object work without a shuffle
    per = lc.map_partitions(lambda d: d.groupby("id").size(), meta=("n", "int64")).compute()
    assert per.index.is_unique
    assert dask.compute(lc.id.nunique())[0] == 14


def test_without_variance_mask_or_psf_widths(tmp_path):
    truth = make_synthetic_store(
        tmp_path / "bare.zarr",
        n_positions=8,
        filters="i",
        n_epochs=16,
        size=48,
        chunk=8,
        seed=9,
        variance=False,
        mask=False,
        psf_fwhm=False,
        stack=False,
        kinds=("constant",),
        mag_range=(15.0, 17.5),
        cr_fraction=0.0,
    )
    df = lightcurves_frame(tmp_path / "bare.zarr")
    assert "stack_flux" not in df.columns
    m = _with_truth(df, truth)
    good = m[(m["lc_flags"] & int(BAD_FLAGS)) == 0]
    # the PSF widths were estimated from the pixels, close to the truth
    assert ((good["lc_flags"] & int(LCFlag.PSF_ESTIMATED)) > 0).all()
    assert (good.psf_fwhm - good.psf_fwhm_truth).abs().median() < 0.05
    ratio = good.flux / good.true_flux
    assert abs(ratio.median() - 1.0) < 0.01
    # no variance image: errors from the annulus scatter plus the stars' photon noise (the
    # synthetic warps, like PS1's, have 1 electron per count), and every row says so
    assert (df["err_model"] == "sky+poisson").all()
    pull = (good.flux - good.true_flux) / good.flux_err
    assert 0.85 < pull.std() < 1.2
    sky_only = _with_truth(lightcurves_frame(tmp_path / "bare.zarr", gain=1e12), truth)
    sky_only = sky_only[(sky_only["lc_flags"] & int(BAD_FLAGS)) == 0]
    assert ((sky_only.flux - sky_only.true_flux) / sky_only.flux_err).std() > 1.5
    # no PSF correction at all: plain aperture fluxes, flagged, biased low in bad seeing
    raw = _with_truth(lightcurves_frame(tmp_path / "bare.zarr", aperture_correction=False), truth)
    ok = raw[raw.status == 1]
    assert ((ok["lc_flags"] & int(LCFlag.NO_APCORR)) > 0).all() and ok.apcorr.isna().all()
    assert (ok.flux / ok.true_flux).median() < 0.99


@pytest.mark.parametrize("variance", [True, False], ids=["variance-plane", "annulus-scatter"])
def test_pulls_are_unit_normal_when_the_sky_dominates(tmp_path, variance):
    """Faint constant sources (the sky's variance in the aperture is many times the source's
    counts): the errors, from the variance plane or from the annulus scatter alike, must
    describe the real scatter, so the pulls against the truth have a spread within 10% of 1
    and no bias."""
    truth = make_synthetic_store(
        tmp_path / "faint.zarr",
        n_positions=16,
        filters="r",
        n_epochs=30,
        size=48,
        chunk=8,
        seed=21,
        kinds=("constant",),
        mag_range=(20.5, 21.5),
        variance=variance,
        blank_fraction=0.0,
        gap_fraction=0.0,
        cr_fraction=0.0,
        padding=False,
    )
    m = _with_truth(lightcurves_frame(tmp_path / "faint.zarr", include_stack=False), truth)
    assert len(m) == 16 * 30 and (m.status == 1).all() and m.flux.notna().all()
    # sky-dominated indeed: the source's own photon variance is a small part of the total
    ujy_per_count = counts_to_microjansky(1.0, m.zeropoint.to_numpy(np.float64))
    source_variance = m.true_flux * ujy_per_count  # microjansky**2
    assert (source_variance / m.flux_err**2).max() < 0.25
    pull = (m.flux - m.true_flux) / m.flux_err
    assert abs(pull.std() - 1.0) < 0.1, pull.describe()
    assert abs(pull.mean()) < 0.15, pull.describe()  # 3 sigma of the mean of 480 pulls


def test_memory_per_partition_does_not_grow_with_epochs(tmp_path):
    peaks = {}
    for e in (8, 48):
        path = tmp_path / f"m{e}.zarr"
        make_synthetic_store(
            path,
            n_positions=8,
            filters="r",
            n_epochs=e,
            size=64,
            chunk=8,
            epoch_chunk=8,
            seed=e,
            padding=False,
            stack=False,
        )
        ((bounds, spec),) = _partition_args(path)
        read_partition(bounds, spec)
        tracemalloc.start()
        frame = read_partition(bounds, spec)
        peaks[e] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(frame) == 8 * e
    assert peaks[48] < 1.6 * peaks[8], peaks


def test_bad_requests_are_refused(tmp_path, synthetic):
    path, _ = synthetic
    with pytest.raises(InvalidParameterError, match="annulus"):
        lightcurves(path, radius=6.0, annulus=(5.0, 10.0))
    with pytest.raises(InvalidParameterError, match="fit"):
        lightcurves(path, radius=6.0, annulus=(12.0, 40.0))
    with pytest.raises(InvalidParameterError, match="not in the store"):
        lightcurves(path, filters="z")
    with pytest.raises(FileNotFoundError):
        lightcurves(tmp_path / "nothing.zarr")
    import xarray as xr

    xr.Dataset({"ra": ("position", np.zeros(2))}).to_zarr(tmp_path / "stacks.zarr", zarr_format=3)
    with pytest.raises(InvalidParameterError, match="no warps"):
        lightcurves(tmp_path / "stacks.zarr")
    assert flag_names(int(LCFlag.BLANK | LCFlag.MASKED)) == ["BLANK", "MASKED"]


def test_cli_lightcurves(synthetic, tmp_path, capsys):
    path, truth = synthetic
    out = tmp_path / "lc.parquet"
    assert (
        main(["lightcurves", str(path), "-o", str(out), "--radius", "5", "--annulus", "10,18"]) == 0
    )
    said = capsys.readouterr().out
    assert f"{len(truth.epochs):,} epochs of 28 light curves (14 positions)" in said
    back = pd.read_parquet(out)
    assert len(back) == len(truth.epochs) and set(LIGHTCURVE_COLUMNS) <= set(back.columns)
    assert main(["lightcurves", str(path), "-o", str(tmp_path / "lc.csv"), "--no-stack"]) == 0
    assert "stack_flux" not in pd.read_csv(tmp_path / "lc.csv").columns
    assert main(["lightcurves", str(path), "-o", str(tmp_path / "lc.txt")]) == 1
    with pytest.raises(SystemExit):
        main(["lightcurves", str(path), "-o", str(out), "--annulus", "12"])
    # the error model is named per row and in the summary (this store has warp_variance)
    assert "errors: variance" in said and (back["err_model"] == "variance").all()
    assert (back["stack_err_model"] == "variance").all()
    assert main(["lightcurves", str(path), "-o", str(tmp_path / "g.csv"), "--gain", "0"]) == 1
    assert "gain" in capsys.readouterr().err.lower()
    # tables written before the rename (column "flags") read back with the current names
    legacy = tmp_path / "legacy.parquet"
    back.rename(columns={"lc_flags": "flags"}).to_parquet(legacy)
    again = read_lightcurves(legacy)
    assert "lc_flags" in again.columns and "flags" not in again.columns
    pd.testing.assert_series_equal(again["lc_flags"], back["lc_flags"])
    csv = read_lightcurves(tmp_path / "lc.csv")
    assert "lc_flags" in csv.columns and csv["id"].map(type).eq(str).all()


# -- end to end against the emulator ----------------------------------------------------

CELL = "1405.053"


def _isolated(src: dict, others: list[dict], band: str = "r", radius: float = 6.0) -> bool:
    cosd = math.cos(math.radians(src["dec"]))
    for o in others:
        if o["id"] == src["id"]:
            continue
        d = math.hypot((o["ra"] - src["ra"]) * cosd, o["dec"] - src["dec"]) * 3600.0
        if (
            d < radius
            and o[f"mag_{band}"]
            < max(src[f"mag_{band}"], src["variability"].get("peak_mag", 99)) + 4.5
        ):
            return False
    return True


def _pick_sources(sky) -> dict[str, list[dict]]:
    """Truth picks near skycell 1405.053: isolated constant stars of that skycell, and the
    brightest isolated periodic variables and transients caught near their peak nearby."""
    from ps1dask.tessellation import locate, skycell_center

    ra0, dec0 = skycell_center(CELL)
    srcs = sky.sources(ra0, dec0, 3000.0)
    cells = locate(
        np.array([s["ra"] for s in srcs]), np.array([s["dec"] for s in srcs])
    ).skycell.to_numpy()
    picks: dict[str, list[dict]] = {"constant": [], "periodic": [], "transient": []}
    for s, cell in sorted(zip(srcs, cells), key=lambda sc: sc[0]["mag_r"]):
        s["skycell"] = cell.replace("skycell.", "")
        kind = s["variability"]["kind"]
        if not _isolated(s, srcs):
            continue
        if kind == "constant" and cell == f"skycell.{CELL}" and 15.0 < s["mag_r"] < 19.0:
            picks["constant"].append(s)
        elif kind == "periodic" and s["mag_r"] < 18.5 and s["variability"]["amplitude"] > 0.15:
            picks["periodic"].append(s)
        elif kind == "transient" and s["variability"]["peak_mag"] < 18.5:
            v = s["variability"]
            near = [
                abs(e.mjd_mid_utc - v["peak_mjd"])
                for b in "gr"
                for e in sky.warp_epochs(s["skycell"], b)
            ]
            if min(near) < 0.5:
                picks["transient"].append(s)
    return {
        "constant": picks["constant"][:8],
        "periodic": picks["periodic"][:2],
        "transient": picks["transient"][:2],
    }


@pytest.fixture(scope="module")
def emulator_store(job_emulator, dask_client, tmp_path_factory):
    emu = job_emulator
    emu.configure(latency=0.0, fault_rate=0.0)
    emu.reset_metrics()
    picks = _pick_sources(emu.sky)
    assert len(picks["constant"]) >= 6 and picks["periodic"] and picks["transient"], picks
    chosen = [s for group in picks.values() for s in group]
    table = pd.DataFrame(
        {
            "name": [str(s["id"]) for s in chosen],
            "ra": [s["ra"] for s in chosen],
            "dec": [s["dec"] for s in chosen],
        }
    )
    path = tmp_path_factory.mktemp("e2e") / "field.zarr"
    common = {
        "filters": "gr",
        "size": 48,
        "service": emu.url,
        "client": dask_client,
        "strategy": "cutout",
        "progress": False,
    }
    ps1dask.cutouts(table, path, types=("stack", "stack.wt", "stack.mask"), **common)
    summary = ps1dask.warps(table, path, types=("warp", "warp.wt", "warp.mask"), **common)
    assert summary.statuses.get("failed", 0) == 0
    assert emu.metrics()["max_in_flight"] <= 10
    lc = lightcurves(path).compute()
    truth = {str(s["id"]): s for s in chosen}
    lc["true_flux"] = [
        3631e6 * 10 ** (-0.4 * emu.sky.true_mag(truth[i], b, t))
        for i, b, t in zip(lc.id, lc["filter"], lc.mjd)
    ]
    return path, lc, picks, emu.sky


def test_e2e_warp_times_are_the_truth_epochs(emulator_store):
    _, lc, picks, sky = emulator_store
    for s in [picks["constant"][0], *picks["periodic"], *picks["transient"]]:
        for band in "gr":
            got = lc[(lc.id == str(s["id"])) & (lc["filter"] == band)].sort_values("epoch")
            want = [e.mjd_mid_utc for e in sky.warp_epochs(s["skycell"], band)]
            np.testing.assert_allclose(got.mjd.to_numpy(), want, rtol=0, atol=1e-8)


def test_e2e_light_curves_match_the_truth(emulator_store):
    _, lc, picks, _ = emulator_store
    good = lc[(lc["lc_flags"] & int(BAD_FLAGS)) == 0]
    assert len(good) > 0.8 * (lc.status == 1).sum()
    assert (lc.flux[lc.status == 5].isna()).all()
    pull = (good.flux - good.true_flux) / good.flux_err
    chi2 = (pull**2).groupby([good.id, good["filter"]]).mean()
    assert 0.7 < float((pull**2).mean()) < 1.4, chi2
    assert chi2.max() < 3.0, chi2
    # constant stars look constant; the variables do not
    stats = lightcurve_stats(lc)
    constant = {str(s["id"]) for s in picks["constant"]}
    const = stats[stats.id.isin(constant)]
    assert 0.6 < const.chi2_dof.median() < 1.5
    cands = set(variability_candidates(stats, sigma=5).id)
    assert not cands & constant
    assert {str(s["id"]) for s in picks["periodic"]} <= cands
    # the stack in the same aperture agrees with the mean of the warps
    ratio = (
        const.set_index(["id", "filter"]).mean_flux
        / lc.groupby(["id", "filter"]).stack_flux.first()
    )
    assert abs(ratio.dropna().median() - 1.0) < 0.02


def test_e2e_periods_and_transient_peaks(emulator_store):
    _, lc, picks, _ = emulator_store
    for s in picks["periodic"]:
        got = best_period(lc[lc.id == str(s["id"])])
        assert abs(got.period - s["variability"]["period"]) / s["variability"]["period"] < 0.01
    for s in picks["transient"]:
        one = lc[lc.id == str(s["id"])]
        fit = fit_transient(one)
        # caught near the peak: the brightest epoch is within a day of it
        assert abs(fit.max_flux_mjd - s["variability"]["peak_mjd"]) < 1.0
        assert max(fit.peak_flux.values()) > 0


def test_e2e_all_epoch_coadd_agrees_with_the_stack(emulator_store, dask_client):
    path, _, picks, _ = emulator_store
    summary = coadd_warps(path, client=dask_client)
    assert summary.n_bins == 1
    phot = coadd_photometry(path, radius=10.0, annulus=(14.0, 20.0), aperture_correction=False)
    stars = phot[phot.id.isin({str(s["id"]) for s in picks["constant"]})]
    assert len(stars) >= 12
    ratio = stars.flux / stars.stack_flux
    assert abs(ratio.median() - 1.0) < 0.02, ratio.describe()


# -- the default commands (warp pixels only, no variance image) -------------------------


def _default_command_picks(sky) -> tuple[list[dict], list[dict]]:
    """Isolated constant stars of 15.5-18 mag r around skycell 1405.053 (up to 40) and the
    brightest isolated periodic variables of large amplitude (up to 3), from the truth."""
    from ps1dask.tessellation import skycell_center

    ra0, dec0 = skycell_center(CELL)
    srcs = sky.sources(ra0, dec0, 3000.0)
    constant, variable = [], []
    for s in sorted(srcs, key=lambda s: s["mag_r"]):
        kind = s["variability"]["kind"]
        if not _isolated(s, srcs):
            continue
        if kind == "constant" and 15.5 < s["mag_r"] < 18.0:
            constant.append(s)
        elif kind == "periodic" and s["mag_r"] < 18.0 and s["variability"]["amplitude"] > 0.15:
            variable.append(s)
    return constant[:40], variable[:3]


@pytest.fixture(scope="module")
def default_command_lightcurves(job_emulator, dask_client, tmp_path_factory):
    """``ps1dask warps POS -o S --filters r`` then ``ps1dask lightcurves S -o lc.parquet``,
    through the real CLI: the store holds warp pixels only (no warp.wt, no warp.mask)."""
    emu = job_emulator
    emu.configure(latency=0.0, fault_rate=0.0)
    constant, variable = _default_command_picks(emu.sky)
    assert len(constant) >= 30 and variable, (len(constant), len(variable))
    work = tmp_path_factory.mktemp("default-commands")
    positions = work / "positions.csv"
    pd.DataFrame(
        {
            "id": [str(s["id"]) for s in constant + variable],
            "ra": [s["ra"] for s in constant + variable],
            "dec": [s["dec"] for s in constant + variable],
        }
    ).to_csv(positions, index=False)
    store, out = work / "S.zarr", work / "lc.parquet"
    common = ["--service", emu.url, "--scheduler", dask_client.scheduler.address]
    assert main(["warps", str(positions), "-o", str(store), "--filters", "r", *common]) == 0
    assert set(ps1dask.open_store(store).data_vars) >= {"warp_flux"}
    assert "warp_variance" not in ps1dask.open_store(store).data_vars
    assert main(["lightcurves", str(store), "-o", str(out)]) == 0
    return pd.read_parquet(out), constant, variable


def test_default_commands_give_right_errors_without_variance(default_command_lightcurves):
    lc, constant, variable = default_command_lightcurves
    good = lc[(lc["lc_flags"] & int(BAD_FLAGS)) == 0]
    # every row says how its error was made: here the sky scatter plus the source's photons
    assert (good["err_model"] == "sky+poisson").all()
    stats = lightcurve_stats(lc)
    const = stats[stats.id.isin({str(s["id"]) for s in constant})]
    assert len(const) >= 30 and (const.n >= 8).all()
    assert 0.7 < const.chi2_dof.median() < 1.5, const.chi2_dof.describe()
    assert (const.chi2_dof > 5).mean() <= 0.05, const.sort_values("chi2_dof").tail()
    # the variables are still found, the constant stars are not
    cands = set(variability_candidates(stats, sigma=5).id)
    assert {str(s["id"]) for s in variable} <= cands
    assert len(cands & set(const.id)) <= 0.05 * len(const)
