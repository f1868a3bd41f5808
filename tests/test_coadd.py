"""Warp stacking: time bins, the clipped weighted mean, and coadds written into the store."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

import ps1dask
from ps1dask.cli import main
from ps1dask.coadd import (
    COADD_VARIABLES,
    DEFAULT_COADD_ZEROPOINT,
    coadd_photometry,
    coadd_warps,
    combine_epochs,
    epoch_bins,
    parse_bins,
)
from ps1dask.conventions import MaskBit
from ps1dask.exceptions import InvalidParameterError
from ps1dask.lightcurves.synthetic import make_synthetic_store
from ps1dask.photometry import gaussian_pixel_psf, measure_apertures

# -- bins ---------------------------------------------------------------------------------


def test_epoch_bins():
    t = np.array([55000.1, 55000.2, 55030.0, 55100.0, 55101.0, 55400.0, np.nan, np.nan])
    assert (epoch_bins(t) == [0, 0, 0, 0, 0, 0, -1, -1]).all()
    # a gap of more than 60 days starts a season (55030 -> 55100 is 70 days)
    assert (epoch_bins(t, bins="season") == [0, 0, 0, 1, 1, 2, -1, -1]).all()
    # fixed width, aligned on MJD 0: [54990, 55020), [55020, 55050), [55080, 55110), ...
    assert (epoch_bins(t, bins=30.0) == [0, 0, 1, 2, 2, 3, -1, -1]).all()
    # unusable epochs take no part (and do not open bins)
    use = np.array([True, True, False, True, True, True, False, False])
    assert (epoch_bins(t, use, bins="season") == [0, 0, -1, 1, 1, 2, -1, -1]).all()
    # unsorted input is binned by time
    assert (epoch_bins(t[[5, 0, 3]], bins="season") == [2, 0, 1]).all()
    assert parse_bins("all") is None and parse_bins("season") == "season" and parse_bins("7") == 7.0
    for bad in ("weekly", -3, 0, float("nan")):
        with pytest.raises(ValueError):
            parse_bins(bad)


# -- the combination ------------------------------------------------------------------


def test_combine_is_the_inverse_variance_mean_with_exact_errors():
    rng = np.random.default_rng(0)
    e, h, w = 12, 30, 30
    sig = rng.uniform(5.0, 15.0, e)
    truth = 100.0
    flux = truth + rng.normal(size=(e, h, w)) * sig[:, None, None]
    var = np.broadcast_to(sig[:, None, None] ** 2, flux.shape)
    co = combine_epochs(flux, var, clip_sigma=None)
    expected_var = 1.0 / np.sum(1.0 / sig**2)
    np.testing.assert_allclose(co.variance, expected_var, rtol=1e-5)
    pull = (co.flux - truth) / np.sqrt(co.variance)
    assert abs(pull.mean()) < 0.1 and 0.9 < pull.std() < 1.1
    assert (co.ninputs == e).all() and co.n_epochs == e
    # zero-point rescaling: warps at another zero point come out in common units
    scale = 10 ** (0.4 * rng.uniform(-0.3, 0.3, e))
    co2 = combine_epochs(
        flux / scale[:, None, None], var / scale[:, None, None] ** 2, scale=scale, clip_sigma=None
    )
    np.testing.assert_allclose(co2.flux, co.flux, rtol=1e-4)
    # without a variance image each warp's scatter is its variance
    co3 = combine_epochs(flux, None, clip_sigma=None)
    np.testing.assert_allclose(np.median(co3.variance), expected_var, rtol=0.15)


def test_masks_and_outliers():
    rng = np.random.default_rng(1)
    e, h, w = 9, 20, 20
    flux = 50.0 + rng.normal(size=(e, h, w)) * 5.0
    var = np.full(flux.shape, 25.0)
    mask = np.zeros(flux.shape, np.uint16)
    flux[2, 5, 5] += 1e4  # a cosmic ray nobody masked
    flux[3, 6, 6] = 1e5  # a masked one
    mask[3, 6, 6] = MaskBit.CR
    flux[4, :, 10] = np.nan  # a detector gap
    mask[5, :, :] = MaskBit.BLANK  # a blank warp
    flux[5] = np.nan
    co = combine_epochs(flux, var, mask)
    assert abs(co.flux[5, 5] - 50.0) < 10 and abs(co.flux[6, 6] - 50.0) < 10
    assert co.ninputs[5, 5] == e - 2 and co.ninputs[6, 6] == e - 2
    assert co.ninputs[0, 10] == e - 2 and co.ninputs[0, 0] == e - 1
    assert co.n_epochs == e - 1
    # everything masked: NaN, no inputs
    co = combine_epochs(flux[5:6], var[5:6], mask[5:6])
    assert np.isnan(co.flux).all() and (co.ninputs == 0).all()


def _bright_star_epochs(rng, e=25, size=41, flux=2e5):
    sig = rng.uniform(0.8, 1.8, e) / 2.3548 / 0.25  # seeing 0.8-1.8 arcsec
    psf = gaussian_pixel_psf((size, size), (size // 2, size // 2), sig)
    model = flux * psf
    var = 100.0 + model
    img = model + rng.normal(size=model.shape) * np.sqrt(var)
    return img, var, sig


def test_bright_stars_keep_their_flux_when_the_seeing_changes():
    """Per-pixel clipping would eat the cores of good-seeing epochs; PSF-matched rejection
    (and the plain clip's generous fraction) keep the flux, image weights avoid the bias of
    per-pixel weights that include the star's photon noise."""
    rng = np.random.default_rng(2)
    img, var, sig = _bright_star_epochs(rng)
    truth = 2e5

    def ap_flux(co):
        m = measure_apertures(co.flux[None], co.variance[None], radius=12.0, annulus=(14.0, 19.0))
        return m.flux[0], m.flux_err[0]

    for kwargs in ({"psf_sigma": sig}, {"clip_sigma": None}):
        f, err = ap_flux(combine_epochs(img, var, **kwargs))
        assert abs(f - truth) < 4 * err + 1e-4 * truth, kwargs
    f, _ = ap_flux(combine_epochs(img, var))  # no PSF widths: the plain clip, within 0.5%
    assert abs(f - truth) < 0.005 * truth
    f, _ = ap_flux(combine_epochs(img, var, weighting="pixel", clip_sigma=None))
    assert f < 0.99 * truth
    with pytest.raises(ValueError):
        combine_epochs(img, var, weighting="nope")


# -- into the store ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("coadd") / "syn.zarr"
    truth = make_synthetic_store(
        path,
        n_positions=12,
        filters="gr",
        n_epochs=24,
        size=48,
        chunk=4,
        epoch_chunk=8,
        seed=21,
        kinds=("constant", "periodic"),
        mag_range=(15.5, 18.5),
    )
    return path, truth


def test_coadd_into_store_agrees_with_stack(store):
    path, truth = store
    summary = coadd_warps(path)
    assert summary.n_bins == 1 and summary.tasks == 3 and summary.n_coadds == 24
    ds = ps1dask.open_store(path)
    assert ds.coadd_flux.dims == ("position", "filter", "coadd_bin", "y", "x")
    assert ds.coadd_flux.shape == (12, 2, 1, 48, 48)
    assert ds.coadd_flux.encoding["chunks"][0] == 4
    np.testing.assert_array_equal(ds.coadd_zeropoint.values, ds.stack_zeropoint.values)
    n_ok = ((ds.warp_status == 1) & (ds.epoch < ds.n_epochs)).sum("epoch").values
    assert (ds.coadd_nepochs.values[:, :, 0] == n_ok).all()
    assert (ds.coadd_ninputs.values[:, :, 0].max(axis=(2, 3)) <= n_ok).all()
    mjd = ds.warp_mjd.where(ds.warp_status == 1)
    np.testing.assert_allclose(ds.coadd_mjd_start.values[:, :, 0], mjd.min("epoch").values)
    np.testing.assert_allclose(ds.coadd_mjd_end.values[:, :, 0], mjd.max("epoch").values)
    # the all-epoch coadd and the stack cutout agree (large aperture: PSFs differ)
    phot = coadd_photometry(path, radius=10.0, annulus=(14.0, 20.0), aperture_correction=False)
    assert len(phot) == 24
    const = phot[phot.id.isin(truth.sources.id[truth.sources.kind == "constant"])]
    ratio = const.flux / const.stack_flux
    assert abs(ratio.median() - 1.0) < 0.01
    pull = (const.flux - const.stack_flux) / np.hypot(const.flux_err, const.stack_flux_err)
    assert np.abs(pull).max() < 6


def test_season_bins_rerun_replaces_and_distributed_tasks(store, dask_client):
    path, _ = store
    summary = coadd_warps(path, bins="season", client=dask_client)
    ds = ps1dask.open_store(path)
    assert ds.sizes["coadd_bin"] == summary.n_bins >= 3
    t0, t1 = ds.coadd_mjd_start.values, ds.coadd_mjd_end.values
    used = ds.coadd_nepochs.values > 0
    assert (t1[used] >= t0[used]).all()
    # seasons are more than 60 days apart, in time order
    gap = t0[:, :, 1:] - t1[:, :, :-1]
    assert (gap[used[:, :, 1:]] > 60).all()
    assert np.isnan(ds.coadd_flux.values[~used]).all()
    # a rerun with one bin shrinks the coadd_bin dimension: the arrays were replaced
    coadd_warps(path, bins=None, zeropoint="fixed")
    ds = ps1dask.open_store(path)
    assert ds.sizes["coadd_bin"] == 1
    assert (ds.coadd_zeropoint.values == DEFAULT_COADD_ZEROPOINT).all()
    assert set(COADD_VARIABLES) - {"coadd_bin"} <= set(ds.data_vars)
    # still a valid consolidated store
    xr.open_zarr(str(path))
    assert "coadd_flux" in zarr.open_group(str(path), mode="r")


def test_coadd_refuses_bad_input(tmp_path, store):
    path, _ = store
    with pytest.raises(InvalidParameterError):
        coadd_warps(path, bins="weekly")
    with pytest.raises(InvalidParameterError):
        coadd_warps(path, weighting="median")
    with pytest.raises(FileNotFoundError):
        coadd_warps(tmp_path / "none.zarr")
    xr.Dataset({"x": ("position", np.zeros(3))}).to_zarr(tmp_path / "empty.zarr", zarr_format=3)
    with pytest.raises(InvalidParameterError, match="no warps"):
        coadd_warps(tmp_path / "empty.zarr")


def test_cli_coadd(store, capsys):
    path, _ = store
    assert main(["coadd", str(path), "--bins", "200"]) == 0
    out = capsys.readouterr().out
    assert "200 d" in out and "coadds" in out
    ds = ps1dask.open_store(path)
    assert ds.coadd_flux.attrs["coadd_bins"] == "200 d"
    assert main(["coadd", str(path) + "-missing"]) == 1
